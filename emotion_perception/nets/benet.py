"""BENet (Cladiere et al., ACIVS 2023): bottom-up, context-aware emotion recognition.

An HRNet backbone with attention in every residual block feeds three heads at 1/4 and 1/2
resolution (person-centre heatmap, box size, bottom-up emotion maps), plus two image-level
heads used only in training (person-centric, background). An optional valence/arousal/dominance
head (the paper's future work) shares the structure of the bottom-up heads.

Output contract: docs/ARCHITECTURE.md, section "BENet outputs".
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TypedDict, cast

import torch
from torch import nn

from emotion_perception.data.categories import NUM_EMOTIC
from emotion_perception.nets.blocks import BasicBlock, conv3x3
from emotion_perception.nets.factory import register_model
from emotion_perception.nets.hrnet import HRNetBackbone, HRNetClassificationHead

HEAD_MODES = ("inference", "all")
# Input height and width must be multiples of the coarsest branch's stride.
INPUT_MULTIPLE = 32


@dataclass(frozen=True)
class BENetConfig:
    """Architecture of one BENet variant (see BENET_PRESETS)."""

    num_emotions: int = NUM_EMOTIC  # channels of the emotion maps / image-level heads (EMOTIC: 26)
    input_size: tuple[int, int] = (512, 512)  # (height, width) the preset is trained and profiled at
    stem_channels: int = 64  # channels of the two stride-2 stem convs
    layer1_planes: int = 64  # Bottleneck planes of layer1 (its output has 4x as many channels)
    layer1_blocks: int = 4  # Bottlenecks in layer1
    widths: tuple[int, ...] = (32, 64, 128, 256)  # channels of the branches at strides 4, 8, 16, 32
    stage_modules: tuple[int, ...] = (2, 2, 2)  # HighResolutionModules in stages 2, 3, 4
    stage_blocks: tuple[int, ...] = (3, 3, 3)  # BasicBlocks per branch in each module of stages 2, 3, 4
    head_blocks: int = 3  # BasicBlocks of each dense head, at 1/4 and again at 1/2 resolution
    attention: bool = True  # channel + spatial attention in every residual block (off: plain HRNet blocks)
    attention_reduction: int = 2  # hidden width of the channel-attention MLP is C / reduction
    vad_head: bool = False  # continuous valence/arousal/dominance maps (beyond the paper)
    person_centric_head: bool = True  # image-level head trained on extract_subject images
    background_head: bool = True  # image-level head trained on mask_all images
    classifier_channels: int = 128  # 1x1 conv width after the classification heads' branch merge
    classifier_hidden: int = 64  # hidden width of the classification heads' MLP
    heatmap_prior_bias: float = -2.19  # CenterNet prior: sigmoid(-2.19) ~ 0.1 at start
    bn_momentum: float = 0.1  # batch-norm running-statistics momentum
    # As the public code (lib/models/BENet.py): biases in the attention MLPs, the dense heads'
    # final 3x3 convs and the image-level heads' downsampling / final convs (12,316 parameters
    # at the paper size); and the 1/2-resolution stage fed with the backbone's branch-0
    # features concatenated with the 1/4 output (HigherHRNet), not the 1/4 head features.
    published_biases: bool = True
    deconv_from_backbone: bool = True


    def __post_init__(self) -> None:
        if len(self.widths) < 2:
            raise ValueError(f"BENetConfig.widths needs at least 2 branches, got {self.widths}")
        if len(self.stage_modules) != len(self.widths) - 1 or len(self.stage_blocks) != len(self.widths) - 1:
            raise ValueError(
                f"BENetConfig: {len(self.widths)} widths need {len(self.widths) - 1} entries in stage_modules "
                f"and stage_blocks, got {self.stage_modules} and {self.stage_blocks}"
            )
        if 2 ** (len(self.widths) + 1) > INPUT_MULTIPLE:
            raise ValueError(f"BENetConfig.widths: at most {INPUT_MULTIPLE.bit_length() - 2} branches supported")
        if len(self.input_size) != 2 or any(s <= 0 or s % INPUT_MULTIPLE for s in self.input_size):
            raise ValueError(f"BENetConfig.input_size must be (H, W), multiples of {INPUT_MULTIPLE}; "
                             f"got {self.input_size}")
        if self.num_emotions < 1:
            raise ValueError(f"BENetConfig.num_emotions must be positive, got {self.num_emotions}")


# Checkpoints saved before a field existed were built with these values (factory.config_from_dict
# fills a missing field from here): the demo models of models/ predate both.
BENET_LEGACY_DEFAULTS = {"published_biases": False, "deconv_from_backbone": False}

BENET_PRESETS: dict[str, BENetConfig] = {
    # The paper's network (authors' configuration): HRNet-W32 widths, 2 modules per stage,
    # 3 BasicBlocks per branch, 3-block dense heads, trained at 512x512.
    # Measured (model-info): 19,495,730 parameters (the public model's 19,499,851 less its unused
    # 4,121-parameter fusion head), 16.54 M without the two training-only heads, 15.77 M
    # executed at inference (the last module's fusions into branches 1-3 only feed the
    # training-only heads, so inference skips them), 40.95 GMACs at 512x512.
    "paper": BENetConfig(),
    # CPU-only robots: HRNet-W18-small-v1-like backbone (widths 16/32/64/128, one module per
    # stage, 2 blocks per branch, one layer1 Bottleneck), a 32-channel stem, 1-block heads,
    # 256x256 input. Measured: 2.35 M parameters, 1.39 M executed at inference, 1.10 GMACs.
    "lite": BENetConfig(
        input_size=(256, 256),
        stem_channels=32,
        layer1_planes=32,
        layer1_blocks=1,
        widths=(16, 32, 64, 128),
        stage_modules=(1, 1, 1),
        stage_blocks=(2, 2, 2),
        head_blocks=1,
    ),
    # Unit tests only: every structural feature, a few thousand parameters.
    "tiny": BENetConfig(
        input_size=(64, 64),
        stem_channels=8,
        layer1_planes=4,
        layer1_blocks=1,
        widths=(8, 12, 16, 20),
        stage_modules=(1, 1, 1),
        stage_blocks=(1, 1, 1),
        head_blocks=1,
        vad_head=True,
        classifier_channels=16,
        classifier_hidden=8,
    ),
}


class DenseHead(nn.Module):
    """One dense head at 1/4 and 1/2 resolution (HigherHRNet-style deconvolution stage).

    1/4: blocks -> conv3x3 to (C+K)/2 -> BN -> ReLU -> conv1x1 to K.
    1/2: concat(backbone branch-0 features, 1/4 output) -> ConvTranspose 4x4/2 to C -> BN ->
    ReLU -> blocks -> the same final convs (``deconv_from_backbone``, the public code and
    HigherHRNet; False: the 1/4 head features instead of the backbone's, as earlier checkpoints).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        num_blocks: int,
        attention: bool,
        attention_reduction: int,
        bn_momentum: float,
        attention_bias: bool = True,
        conv_bias: bool = True,
        deconv_from_backbone: bool = True,
    ) -> None:
        super().__init__()
        self.deconv_from_backbone = deconv_from_backbone

        def blocks() -> nn.Sequential:
            return nn.Sequential(
                *(
                    BasicBlock(in_channels, in_channels, attention=attention,
                               attention_reduction=attention_reduction, bn_momentum=bn_momentum,
                               attention_bias=attention_bias)
                    for _ in range(num_blocks)
                )
            )

        def final() -> nn.Sequential:
            mid = (in_channels + out_channels) // 2
            return nn.Sequential(
                conv3x3(in_channels, mid, bias=conv_bias), nn.BatchNorm2d(mid, momentum=bn_momentum),
                nn.ReLU(inplace=True), nn.Conv2d(mid, out_channels, 1, bias=True),
            )

        self.blocks_4 = blocks()
        self.final_4 = final()
        self.deconv = nn.Sequential(
            nn.ConvTranspose2d(in_channels + out_channels, in_channels, 4, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(in_channels, momentum=bn_momentum),
            nn.ReLU(inplace=True),
        )
        self.blocks_2 = blocks()
        self.final_2 = final()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features_4 = self.blocks_4(x)
        out_4 = self.final_4(features_4)
        deconv_input = x if self.deconv_from_backbone else features_4
        features_2 = self.blocks_2(self.deconv(torch.cat([deconv_input, out_4], dim=1)))
        return out_4, self.final_2(features_2)


class _BlockOptions(TypedDict):
    """Residual-block keywords shared by the backbone and every head."""

    attention: bool
    attention_reduction: int
    bn_momentum: float
    attention_bias: bool


class _HeadOptions(TypedDict):
    """Extra keywords of the dense heads."""

    conv_bias: bool
    deconv_from_backbone: bool


class BENet(nn.Module):
    """BENet; ``forward(x, heads)`` returns the dict described in docs/ARCHITECTURE.md."""

    def __init__(self, config: BENetConfig) -> None:
        super().__init__()
        self.config = config
        common: _BlockOptions = {"attention": config.attention, "attention_reduction": config.attention_reduction,
                                 "bn_momentum": config.bn_momentum, "attention_bias": config.published_biases}
        head_options: _HeadOptions = {"conv_bias": config.published_biases,
                                      "deconv_from_backbone": config.deconv_from_backbone}
        self.backbone = HRNetBackbone(
            stem_channels=config.stem_channels,
            layer1_planes=config.layer1_planes,
            layer1_blocks=config.layer1_blocks,
            widths=config.widths,
            stage_modules=config.stage_modules,
            stage_blocks=config.stage_blocks,
            **common,
        )
        width = config.widths[0]
        self.heatmap_head = DenseHead(width, 1, config.head_blocks, **common, **head_options)
        self.size_head = DenseHead(width, 2, config.head_blocks, **common, **head_options)
        self.emotion_head = DenseHead(width, config.num_emotions, config.head_blocks, **common, **head_options)
        self.vad_head = DenseHead(width, 3, config.head_blocks, **common, **head_options) if config.vad_head else None

        def classification_head() -> HRNetClassificationHead:
            return HRNetClassificationHead(config.widths, config.classifier_channels, config.classifier_hidden,
                                           config.num_emotions, **common, conv_bias=config.published_biases)

        self.person_centric_head = classification_head() if config.person_centric_head else None
        self.background_head = classification_head() if config.background_head else None
        self._init_weights()

    def _init_weights(self) -> None:
        # From scratch (no ImageNet weights are shipped): He init for convs, unit BN.
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        # Regression convs (size, emotions, VAD) start near zero, so those maps start at their
        # bias. The heatmap's final conv keeps PyTorch's default init with the CenterNet prior
        # bias instead (as CenterNet does): at std 0.001 it passes the focal loss almost no
        # gradient, and a lite model trained 400 steps on CPU never raised a peak above the
        # prior; with the default init peaks rose to 0.37 within 40 steps.
        for head in (self.size_head, self.emotion_head, self.vad_head):
            if head is None:
                continue
            for last in (head.final_4[-1], head.final_2[-1]):
                nn.init.normal_(cast(nn.Conv2d, last).weight, std=0.001)  # DenseHead's final() ends with a Conv2d
        for last in (self.heatmap_head.final_4[-1], self.heatmap_head.final_2[-1]):
            final = cast(nn.Conv2d, last)
            final.reset_parameters()
            assert final.bias is not None  # built with bias=True
            nn.init.constant_(final.bias, self.config.heatmap_prior_bias)

    def forward(self, x: torch.Tensor, heads: str = "inference",
                routes: Mapping[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """``heads="inference"``: dense heads only; ``"all"``: also the image-level heads.

        ``routes`` (training; head name -> (B,) bool, ``train/targets.py`` HEAD_ROUTING): each
        head runs only on the images routed to it, as in the public code, so its BatchNorm
        statistics come from the images it trains on (the backbone still sees the whole batch).
        Its outputs then hold those rows only, in batch order; a head with no image routed to
        it is not run and has no outputs. Keys: "det" (heatmap and size heads), "bu", "vad",
        "pc", "bg".
        """
        if heads not in HEAD_MODES:
            raise ValueError(f"BENet.forward: heads must be one of {HEAD_MODES}, got {heads!r}")
        if not (torch.jit.is_tracing() or torch.compiler.is_compiling()):
            if x.dim() != 4 or x.shape[1] != 3:
                raise ValueError(f"BENet expects (B, 3, H, W) input, got {tuple(x.shape)}")
            if x.shape[2] % INPUT_MULTIPLE or x.shape[3] % INPUT_MULTIPLE:
                raise ValueError(f"BENet input height and width must be multiples of {INPUT_MULTIPLE}, "
                                 f"got {tuple(x.shape[2:])}")
        image_level = heads == "all" and (self.person_centric_head is not None or self.background_head is not None)
        features = self.backbone(x, all_branches=image_level)

        def routed(route: str) -> tuple[list[torch.Tensor], bool]:
            """The features of the images routed to ``route`` and whether there are any."""
            if routes is None:
                return features, True
            rows = routes[route].to(features[0].device)
            return [f[rows] for f in features], bool(rows.any())

        outputs: dict[str, torch.Tensor] = {}
        dense = [("det", "heatmap", self.heatmap_head), ("det", "size", self.size_head),
                 ("bu", "emotions", self.emotion_head), ("vad", "vad", self.vad_head)]
        for route, name, head in dense:
            if head is None:
                continue
            selected, any_rows = routed(route)
            if any_rows:
                outputs[f"{name}_4"], outputs[f"{name}_2"] = head(selected[0])
        if heads == "all":
            for route, name, classifier in (("pc", "person_centric", self.person_centric_head),
                                            ("bg", "background", self.background_head)):
                if classifier is None:
                    continue
                selected, any_rows = routed(route)
                if any_rows:
                    outputs[name] = classifier(selected)
        return outputs

    def example_inputs(self, batch: int = 1, input_size: tuple[int, int] | None = None) -> tuple[torch.Tensor]:
        """A random normalised image batch at the config's (or the given) size, on the model's device."""
        height, width = self.config.input_size if input_size is None else input_size
        device = next(self.parameters()).device
        return (torch.randn(batch, 3, height, width, device=device),)


def build_benet(config: BENetConfig) -> BENet:
    return BENet(config)


register_model("benet", BENetConfig, BENET_PRESETS, build_benet, default_preset="paper",
               legacy_defaults=BENET_LEGACY_DEFAULTS)
