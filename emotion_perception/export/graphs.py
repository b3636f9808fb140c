"""The deployable graphs: modules with positional inputs and a tuple of named outputs.

The same modules are exported to ONNX and run by the PyTorch backend, so every backend sees
one input/output contract per model kind:

=========================  ======================  ==============================================
graph                      inputs                  outputs
=========================  ======================  ==============================================
BENet maps                 image (B,3,H,W)         heatmap_4, heatmap_2, size_4, size_2,
                                                   emotions_4, emotions_2[, vad_4, vad_2]
BENet with decode          image, letterbox (B,3)  boxes, scores, emotions, vad, valid
CAHFW-Net                  face, context (B,3,S,S) logits (B,7)
expression                 face (B,3,112,112)      logits (B,7)
=========================  ======================  ==============================================
"""

from __future__ import annotations

import copy
import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, cast

import torch
from torch import nn

from emotion_perception.data.categories import CAER_CATEGORIES, EMOTIC_CATEGORIES
from emotion_perception.export.model_card import InputNormalisation, ModelCard
from emotion_perception.nets.decode import INPUT_NAMES as DECODE_INPUT_NAMES
from emotion_perception.nets.decode import OUTPUT_NAMES as DECODE_OUTPUT_NAMES
from emotion_perception.nets.decode import BENetWithDecode, DecodeConfig
from emotion_perception.nets.expression import FACE_API_MEAN_RGB
from emotion_perception.nets.factory import get_entry

BENET_STRIDE = 32
MAP_KINDS = ("heatmap", "size", "emotions")
CAHFW_INPUT_NAMES = ("face", "context")
CAHFW_OUTPUT_NAMES = ("logits",)
EXPRESSION_INPUT_NAMES = ("face",)
EXPRESSION_OUTPUT_NAMES = ("logits",)
# face-api's input convention, (pixel - mean) / 255 (nets/expression.py).
EXPRESSION_NORMALISATION = InputNormalisation(
    mean=(FACE_API_MEAN_RGB[0] / 255.0, FACE_API_MEAN_RGB[1] / 255.0, FACE_API_MEAN_RGB[2] / 255.0),
    std=(1.0, 1.0, 1.0), pixel_scale=1.0 / 255.0)


class RegisteredModel(Protocol):
    """What every registered model exposes (nets/factory.py): its config and example inputs."""

    config: Any  # a frozen dataclass of the model's family (registry config_class)

    def example_inputs(
        self, batch: int = 1, input_size: tuple[int, int] | None = None
    ) -> tuple[torch.Tensor, ...]: ...


def model_name_of(model: nn.Module) -> str:
    """Registry name of a model instance ("benet" | "cahfw" | "expression")."""
    config = getattr(model, "config", None)
    for name in ("benet", "cahfw", "expression"):
        if isinstance(config, get_entry(name).config_class):
            return name
    raise TypeError(f"{type(model).__name__} is not a registered emotion model (BENet, CAHFW-Net, FaceExpressionNet)")


def benet_map_names(has_vad: bool) -> tuple[str, ...]:
    """Output names of the BENet maps graph, in order."""
    kinds = MAP_KINDS + (("vad",) if has_vad else ())
    return tuple(f"{kind}_{stride}" for kind in kinds for stride in (4, 2))


def benet_map_shapes(
    names: Sequence[str], num_emotions: int, batch: int, height: int, width: int
) -> dict[str, tuple[int, int, int, int]]:
    """Shapes of the BENet map outputs for an input of (batch, 3, height, width)."""
    channels = {"heatmap": 1, "size": 2, "emotions": num_emotions, "vad": 3}
    shapes = {}
    for name in names:
        kind, stride = name.rsplit("_", 1)
        shapes[name] = (batch, channels[kind], height // int(stride), width // int(stride))
    return shapes


class BENetMapsGraph(nn.Module):
    """BENet inference forward with its dict flattened to a tuple (order: :func:`benet_map_names`)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        config: Any = net.config  # BENetConfig (model_name_of checked it)
        self.output_names = benet_map_names(bool(config.vad_head))

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        outputs = self.net(image)
        return tuple(outputs[name] for name in self.output_names)


class HalfPrecisionNet(nn.Module):
    """Runs a network in float16 behind float32 inputs and outputs.

    Decoding stays in float32 (box arithmetic in image pixels needs more than fp16's 11 bits).
    """

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        # A copy: converting in place would silently change the caller's float32 model.
        self.net = copy.deepcopy(net).half()
        self.config = net.config

    def forward(self, *inputs: torch.Tensor) -> Any:
        outputs = self.net(*(x.half() for x in inputs))
        if isinstance(outputs, dict):
            return {key: value.float() for key, value in outputs.items()}
        if isinstance(outputs, tuple):
            return tuple(value.float() for value in outputs)
        return outputs.float()


class ExpressionGraph(nn.Module):
    """FaceExpressionNet with a one-element output tuple (``logits``)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, face: torch.Tensor) -> tuple[torch.Tensor]:
        return (self.net(face),)


class CAHFWGraph(nn.Module):
    """CAHFW-Net with a one-element output tuple (``logits``)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, face: torch.Tensor, context: torch.Tensor) -> tuple[torch.Tensor]:
        return (self.net(face, context),)


@dataclass
class DeployGraph:
    """A module ready for export or the PyTorch backend, with its I/O description."""

    module: nn.Module
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    dynamic_axes: dict[str, dict[int, str]]
    example_inputs: tuple[torch.Tensor, ...]


def _example_letterbox(batch: int, device: torch.device) -> torch.Tensor:
    # A plausible letterbox (scale 0.8, small pads) so decoding arithmetic is exercised.
    return torch.tensor([[0.8, 4.0, 12.0]], device=device).repeat(batch, 1)


def build_deploy_graph(
    model: nn.Module,
    with_decode: bool = False,
    decode_config: DecodeConfig | None = None,
    half: bool = False,
    batch: int = 1,
    input_size: tuple[int, int] | None = None,
) -> DeployGraph:
    """Wrap ``model`` (BENet or CAHFW-Net, eval mode) as a deployable graph.

    ``half`` runs the network in float16 behind float32 I/O (``precision fp16`` exports).
    """
    name = model_name_of(model)
    model = model.eval()
    # model_name_of found a registered config, so the model has the registry's interface.
    registered = cast(RegisteredModel, model)
    config = registered.config
    net: nn.Module = HalfPrecisionNet(model) if half else model
    device = next(model.parameters()).device
    if name == "cahfw":
        if with_decode:
            raise ValueError("--with-decode applies to BENet only (CAHFW-Net outputs class logits)")
        if input_size is not None and tuple(input_size) != (config.input_size,) * 2:
            raise ValueError(
                f"CAHFW-Net has a fixed input size {config.input_size}x{config.input_size}, "
                f"got {tuple(input_size)}"
            )
        axes = {n: {0: "batch"} for n in CAHFW_INPUT_NAMES + CAHFW_OUTPUT_NAMES}
        return DeployGraph(CAHFWGraph(net).eval(), CAHFW_INPUT_NAMES, CAHFW_OUTPUT_NAMES, axes,
                           registered.example_inputs(batch))
    if name == "expression":
        if with_decode:
            raise ValueError("--with-decode applies to BENet only (the expression model outputs class logits)")
        if input_size is not None and tuple(input_size) != (config.input_size,) * 2:
            raise ValueError(f"the expression model has a fixed input size {config.input_size}x"
                             f"{config.input_size}, got {tuple(input_size)}")
        axes = {n: {0: "batch"} for n in EXPRESSION_INPUT_NAMES + EXPRESSION_OUTPUT_NAMES}
        return DeployGraph(ExpressionGraph(net).eval(), EXPRESSION_INPUT_NAMES, EXPRESSION_OUTPUT_NAMES, axes,
                           registered.example_inputs(batch))
    size = tuple(config.input_size if input_size is None else input_size)
    if len(size) != 2 or any(s <= 0 or s % BENET_STRIDE for s in size):
        raise ValueError(f"BENet input size must be (H, W), multiples of {BENET_STRIDE}; got {size}")
    (image,) = registered.example_inputs(batch, size)
    image_axes = {0: "batch", 2: "height", 3: "width"}
    if with_decode:
        module = BENetWithDecode(net, decode_config or DecodeConfig()).eval()
        axes = {"image": image_axes, "letterbox": {0: "batch"}}
        axes.update({n: {0: "batch"} for n in DECODE_OUTPUT_NAMES})
        return DeployGraph(module, DECODE_INPUT_NAMES, DECODE_OUTPUT_NAMES, axes,
                           (image, _example_letterbox(batch, device)))
    maps = BENetMapsGraph(net).eval()
    axes = {"image": image_axes}
    for out in maps.output_names:
        stride = out.rsplit("_", 1)[1]
        axes[out] = {0: "batch", 2: f"height_{stride}", 3: f"width_{stride}"}
    return DeployGraph(maps, ("image",), maps.output_names, axes, (image,))


def matching_preset(name: str, config: Any) -> str | None:
    """The registry preset whose config equals ``config``, None if it is a custom one."""
    for preset, preset_config in get_entry(name).presets.items():
        if preset_config == config:
            return preset
    return None


def make_card(
    model: nn.Module,
    graph: DeployGraph,
    with_decode: bool,
    decode_config: DecodeConfig | None,
    precision: str,
    input_size: tuple[int, int] | None = None,
    opset: int | None = None,
    source: dict[str, Any] | None = None,
    trained_on: str = "unknown",
    label_thresholds: dict[str, float] | None = None,
) -> ModelCard:
    """The model card of an exported graph of ``model``."""
    name = model_name_of(model)
    config = cast(RegisteredModel, model).config
    if name == "benet":
        categories = EMOTIC_CATEGORIES if config.num_emotions == len(EMOTIC_CATEGORIES) else tuple(
            f"emotion_{i}" for i in range(config.num_emotions)
        )
        size = tuple(config.input_size if input_size is None else input_size)
        stride, dynamic, has_vad = BENET_STRIDE, True, bool(config.vad_head)
        normalisation = InputNormalisation()
    elif name == "expression":
        categories = CAER_CATEGORIES
        size = (config.input_size, config.input_size)
        stride, dynamic, has_vad = config.input_size, False, False
        normalisation = EXPRESSION_NORMALISATION
    else:
        categories = CAER_CATEGORIES if config.num_classes == len(CAER_CATEGORIES) else tuple(
            f"class_{i}" for i in range(config.num_classes)
        )
        size = (config.input_size, config.input_size)
        stride, dynamic, has_vad = config.input_size, False, False
        normalisation = InputNormalisation()
    decode = dataclasses.asdict(decode_config or DecodeConfig()) if with_decode else None
    return ModelCard(
        model_name=name,
        # Through JSON once so the card equals its own round trip (tuples become lists).
        config=json.loads(json.dumps(dataclasses.asdict(config))),
        categories=tuple(categories),
        input_names=graph.input_names,
        output_names=graph.output_names,
        input_size=(int(size[0]), int(size[1])),
        stride=stride,
        dynamic_size=dynamic,
        has_vad=has_vad,
        with_decode=with_decode,
        precision=precision,
        preset=matching_preset(name, config),
        decode=decode,
        opset=opset,
        source=dict(source or {}),
        normalisation=normalisation,
        trained_on=trained_on,
        label_thresholds=dict(label_thresholds) if label_thresholds else None,
    )
