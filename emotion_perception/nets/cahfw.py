"""CAHFW-Net: context-aware hybrid feature weighting network (Zhou et al., IJERPH 2023).

Two inputs, both (B, 3, S, S) float32 RGB normalised with ImageNet mean/std: the face crop
``I_F`` and the context image ``I_C`` (whole frame with the face box zeroed), built by
:func:`emotion_perception.data.faces.face_and_context`. Output: (B, num_classes) logits over
``CAER_CATEGORIES``.

Blocks (``w`` = width multiplier, ``C = 256 w`` the feature width):

* SE, separate encoding: face and context encoders, 5 blocks of 3x3/s1/p1 conv + BN + ReLU
  with 32, 64, 128, 256, 256 (x w) filters, 2x2 max-pool after blocks 1-4 (stride 16 overall).
  The context encoder is followed by the attention highlight module: 3x3 convs to 256, 128
  (BN + ReLU) and 1 channel, softmax over the H*W positions, multiplied into the context map.
* CA, cross attention: Q, K, V are 3x3 convs (C filters) flattened to (C, H*W);
  ``Y = softmax(Q K^T / sqrt(H*W)) V`` (channel-to-channel attention), reshaped, then
  3x3 conv + BN + ReLU. Pair 1: Q, V from the face, K from the context. Pair 2: Q, V from the
  context, K from pair 1's (recalibrated) face.
* ER, element recalibration (Eq. 13-14): with Z the (C, N = H*W) map,
  ``G = softmax(Z (W Z)^T) Z`` where W is a kernel-1 Conv1d (C -> C), so that ``Z (W Z)^T`` is a
  C x C channel affinity softmax-normalised per row; the output is ``Z * G`` (element-wise),
  reshaped to (C, H, W).
* AA, adaptive attention with hybrid feature weighting (paper eqs. 18-21): global average
  pooling of the shallow pair (face, context encoder outputs) and of the deep pair (outputs of
  pairs 1 and 2). Each stream has a Conv1d(128 w) -> ReLU -> Conv1d(1) scoring branch; a
  softmax over the two streams of a pair gives its weights. Shallow features are multiplied by
  the deep pair's weights and deep features by the shallow pair's weights.
* DF, deep fusion (Eq. 22-25): grouped per stream as written, the weighted shallow and deep
  face vectors are concatenated (2C) and go through Linear(2C -> 128 w) + ReLU + Dropout(0.5),
  the context vectors through their own; the two results are concatenated (256 w) and
  classified by Conv1d(256 w -> 128 w) + ReLU + Dropout(0.5) -> Conv1d(128 w -> K).

Choices where the paper leaves room (kept consistent across variants):

* Convolutions keep their bias even when a BN follows (the paper does not say otherwise),
  except the highlight module's last conv: a softmax over positions follows it, so a bias
  there would have no effect and no gradient.
* The highlight softmax is multiplied by H*W so that a uniform attention map is the identity;
  the paper's plain softmax differs only by that constant factor, which the following layers
  could absorb, but at 14x14 it would shrink the context features 196-fold before the Q/K/V
  convs of the interaction pairs, which have no BN to restore the scale.
* Dropout sits after the two 2C -> 128 linears of DF and between the two classifier Conv1ds
  (Eq. 25). Conv1d layers act on (B, channels, 1) tensors, i.e. they are per-vector linear maps.
* Variant ``SE+AF`` is the CAER-Net-S-style baseline: SE encoders, GAP, each stream weighted by
  its own softmax score (plain adaptive fusion), concatenation (2C) and the head
  Conv1d(2C -> 128 w) + ReLU + Dropout(0.5) -> Conv1d(128 w -> K).
* Variant ``SE+CA+AA`` drops ER: pair 2 takes K from pair 1's cross-attention output.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from emotion_perception.data.categories import NUM_CAER
from emotion_perception.nets.factory import register_model

VARIANTS: tuple[str, ...] = ("SE+AF", "SE+CA+AA", "SE+CA+ER+AA")

# Encoder widths of the paper (before the width multiplier).
ENCODER_WIDTHS: tuple[int, ...] = (32, 64, 128, 256, 256)
HIGHLIGHT_WIDTHS: tuple[int, int] = (256, 128)
FUSION_HIDDEN = 128


@dataclass(frozen=True)
class CAHFWConfig:
    """Architecture of one CAHFW-Net preset."""

    variant: str = "SE+CA+ER+AA"  # ablation variant, one of VARIANTS
    num_classes: int = NUM_CAER  # classifier outputs (7 CAER-S emotions)
    input_size: int = 224  # side of the square face and context inputs; a multiple of 16
    width: float = 1.0  # multiplier on every conv / linear width (1.0 = the paper)
    dropout: float = 0.5  # dropout after the DF linears (and in the SE+AF head)

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise ValueError(f"CAHFWConfig.variant: {self.variant!r} is not one of {VARIANTS}")
        if self.num_classes < 1:
            raise ValueError(f"CAHFWConfig.num_classes: must be >= 1, got {self.num_classes}")
        if self.input_size < 16 or self.input_size % 16:
            raise ValueError(f"CAHFWConfig.input_size: must be a positive multiple of 16, got {self.input_size}")
        if not self.width > 0:
            raise ValueError(f"CAHFWConfig.width: must be > 0, got {self.width}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"CAHFWConfig.dropout: must be in [0, 1), got {self.dropout}")

    def scaled(self, channels: int) -> int:
        """A paper width scaled by the multiplier (at least 1 channel)."""
        return max(1, int(round(channels * self.width)))


# "paper": the published network. "small": half widths at 112x112 input (about 1/4 of the
# parameters and 1/16 of the FLOPs), for CPU training and CPU-only robots. "tiny": 1/8 widths at
# 32x32, only for tests.
CAHFW_PRESETS: dict[str, CAHFWConfig] = {
    "paper": CAHFWConfig(),
    "small": CAHFWConfig(input_size=112, width=0.5),
    "tiny": CAHFWConfig(input_size=32, width=0.125),
}


def conv_bn_relu(in_channels: int, out_channels: int) -> nn.Sequential:
    """3x3 stride-1 padding-1 conv (with bias) + BN + ReLU."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class Encoder(nn.Module):
    """Five conv blocks; blocks 1-4 end with a 2x2 max-pool (output stride 16)."""

    def __init__(self, widths: tuple[int, ...]) -> None:
        super().__init__()
        blocks = []
        in_channels = 3
        for index, out_channels in enumerate(widths):
            block = conv_bn_relu(in_channels, out_channels)
            if index < len(widths) - 1:
                block.append(nn.MaxPool2d(2))
            blocks.append(block)
            in_channels = out_channels
        self.blocks = nn.Sequential(*blocks)
        self.out_channels = in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x)


class HighlightAttention(nn.Module):
    """Attention-based highlight of the context map: a softmax over positions re-weights it."""

    def __init__(self, channels: int, hidden: tuple[int, int]) -> None:
        super().__init__()
        self.score = nn.Sequential(
            conv_bn_relu(channels, hidden[0]),
            conv_bn_relu(hidden[0], hidden[1]),
            # No bias: the softmax over positions is shift invariant, a bias would never learn.
            nn.Conv2d(hidden[1], 1, 3, padding=1, bias=False),
        )

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, H, W) softmax over the H*W positions (sums to 1 per image)."""
        scores = self.score(x)
        return torch.softmax(scores.flatten(2), dim=-1).view_as(scores)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        positions = x.shape[-2] * x.shape[-1]
        return x * (self.attention(x) * positions)


class CrossAttention(nn.Module):
    """Channel-to-channel cross attention: Y = softmax(Q K^T / sqrt(H*W)) V, then conv-BN-ReLU."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.query = nn.Conv2d(channels, channels, 3, padding=1)
        self.key = nn.Conv2d(channels, channels, 3, padding=1)
        self.value = nn.Conv2d(channels, channels, 3, padding=1)
        self.out = conv_bn_relu(channels, channels)

    def forward(self, query_source: torch.Tensor, key_source: torch.Tensor) -> torch.Tensor:
        """Q and V come from ``query_source``, K from ``key_source`` (same shape)."""
        q = self.query(query_source).flatten(2)  # (B, C, N)
        k = self.key(key_source).flatten(2)
        v = self.value(query_source).flatten(2)
        # With channels as the sequence axis and H*W as the embedding axis, the default scale of
        # scaled_dot_product_attention is exactly the paper's 1/sqrt(D), D = H*W.
        y = F.scaled_dot_product_attention(q, k, v).view_as(query_source)
        return self.out(y)


class ElementRecalibration(nn.Module):
    """Eq. 13-14: ``G = softmax(Z (W Z)^T) Z`` and ``R = Z * G`` (element-wise), with Z the
    (C, N = H*W) map and W a kernel-1 Conv1d (C -> C).

    ``Z (W Z)^T`` is the C x C "Gram-like" channel affinity (entry (c, d) = z_c . (W z)_d, summed
    over positions), softmax-normalised over d: each channel of G is a convex combination of
    the channels of Z, so G keeps Z's scale.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channel_map = nn.Conv1d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = x.flatten(2)  # (B, C, N)
        affinity = torch.bmm(z, self.channel_map(z).transpose(1, 2))  # (B, C, C)
        g = torch.bmm(torch.softmax(affinity, dim=-1), z)  # (B, C, N)
        return (z * g).view_as(x)


class StreamScore(nn.Module):
    """Scalar score of one pooled stream: Conv1d(C -> hidden) + ReLU + Conv1d(hidden -> 1)."""

    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(nn.Conv1d(channels, hidden, 1), nn.ReLU(inplace=True), nn.Conv1d(hidden, 1, 1))

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        """(B, C) -> (B, 1)."""
        return self.layers(pooled.unsqueeze(-1)).squeeze(-1)


class PairWeights(nn.Module):
    """Softmax weights over the two streams (face, context) of a pair, one scorer per stream."""

    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        self.face = StreamScore(channels, hidden)
        self.context = StreamScore(channels, hidden)

    def forward(self, face: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """(B, C), (B, C) pooled -> (B, 2) weights (face, context) summing to 1."""
        return torch.softmax(torch.cat([self.face(face), self.context(context)], dim=1), dim=1)


def weighted_pair(face: torch.Tensor, context: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Concatenate (B, C) face and context vectors scaled by (B, 2) weights -> (B, 2C)."""
    return torch.cat([face * weights[:, 0:1], context * weights[:, 1:2]], dim=1)


class HybridWeighting(nn.Module):
    """Adaptive attention with hybrid feature weighting (paper eqs. 18-21).

    Reading of Eq. 20-21 (the pairing of weights and features): the weights computed from one
    level weight the other level's features, stream by stream: the shallow face and context
    vectors by the deep pair's softmax (beta), the deep ones by the shallow pair's (alpha). The
    crossing is what makes the weighting "hybrid"; weighting each level by its own scores is the
    plain adaptive fusion of the SE+AF baseline.
    """

    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        self.shallow_weights = PairWeights(channels, hidden)
        self.deep_weights = PairWeights(channels, hidden)

    def forward(
        self, shallow: tuple[torch.Tensor, torch.Tensor], deep: tuple[torch.Tensor, torch.Tensor]
    ) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
        """Pooled (face, context) pairs -> weighted ((shallow face, context), (deep face, context))."""
        alpha = self.shallow_weights(*shallow)
        beta = self.deep_weights(*deep)
        (shallow_face, shallow_context), (deep_face, deep_context) = shallow, deep
        return ((shallow_face * beta[:, 0:1], shallow_context * beta[:, 1:2]),
                (deep_face * alpha[:, 0:1], deep_context * alpha[:, 1:2]))


class DeepFusion(nn.Module):
    """Eq. 22-25: per stream, the shallow and deep vectors concatenated (2C) -> Linear(hidden) +
    ReLU + Dropout; the two streams concatenated -> Conv1d(hidden) + ReLU + Dropout -> Conv1d(K)."""

    def __init__(self, channels: int, hidden: int, num_classes: int, dropout: float) -> None:
        super().__init__()
        self.face = nn.Sequential(nn.Linear(2 * channels, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout))
        self.context = nn.Sequential(nn.Linear(2 * channels, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout))
        self.head = nn.Sequential(
            nn.Conv1d(2 * hidden, hidden, 1), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Conv1d(hidden, num_classes, 1),
        )

    def forward(
        self, shallow: tuple[torch.Tensor, torch.Tensor], deep: tuple[torch.Tensor, torch.Tensor]
    ) -> torch.Tensor:
        (shallow_face, shallow_context), (deep_face, deep_context) = shallow, deep
        fused = torch.cat([self.face(torch.cat([shallow_face, deep_face], dim=1)),
                           self.context(torch.cat([shallow_context, deep_context], dim=1))], dim=1)
        return self.head(fused.unsqueeze(-1)).squeeze(-1)


class AdaptiveFusion(nn.Module):
    """CAER-Net-S adaptive fusion: each stream weighted by its own softmax score, Conv1d head."""

    def __init__(self, channels: int, hidden: int, num_classes: int, dropout: float) -> None:
        super().__init__()
        self.weights = PairWeights(channels, hidden)
        self.head = nn.Sequential(
            nn.Conv1d(2 * channels, hidden, 1),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Conv1d(hidden, num_classes, 1),
        )

    def forward(self, face: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        fused = weighted_pair(face, context, self.weights(face, context))
        return self.head(fused.unsqueeze(-1)).squeeze(-1)


class InteractionPair(nn.Module):
    """Cross attention optionally followed by element recalibration."""

    def __init__(self, channels: int, recalibrate: bool) -> None:
        super().__init__()
        self.cross = CrossAttention(channels)
        self.recalibration = ElementRecalibration(channels) if recalibrate else nn.Identity()

    def forward(self, query_source: torch.Tensor, key_source: torch.Tensor) -> torch.Tensor:
        return self.recalibration(self.cross(query_source, key_source))


class CAHFWNet(nn.Module):
    """CAHFW-Net and its ablation variants; ``forward(face, context) -> (B, num_classes) logits``."""

    def __init__(self, config: CAHFWConfig) -> None:
        super().__init__()
        self.config = config
        widths = tuple(config.scaled(c) for c in ENCODER_WIDTHS)
        channels = widths[-1]
        hidden = config.scaled(FUSION_HIDDEN)
        self.face_encoder = Encoder(widths)
        self.context_encoder = Encoder(widths)
        highlight_hidden = (config.scaled(HIGHLIGHT_WIDTHS[0]), config.scaled(HIGHLIGHT_WIDTHS[1]))
        self.highlight = HighlightAttention(channels, highlight_hidden)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fusion: AdaptiveFusion | DeepFusion
        if config.variant == "SE+AF":
            self.fusion = AdaptiveFusion(channels, hidden, config.num_classes, config.dropout)
        else:
            recalibrate = config.variant == "SE+CA+ER+AA"
            self.pair1 = InteractionPair(channels, recalibrate)
            self.pair2 = InteractionPair(channels, recalibrate)
            self.hybrid = HybridWeighting(channels, hidden)
            self.fusion = DeepFusion(channels, hidden, config.num_classes, config.dropout)

    def forward(self, face: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        face_map = self.face_encoder(face)
        context_map = self.highlight(self.context_encoder(context))
        face_vec = self.pool(face_map).flatten(1)
        context_vec = self.pool(context_map).flatten(1)
        if self.config.variant == "SE+AF":
            return self.fusion(face_vec, context_vec)
        deep_face = self.pair1(face_map, context_map)
        deep_context = self.pair2(context_map, deep_face)
        shallow, deep = self.hybrid(
            (face_vec, context_vec), (self.pool(deep_face).flatten(1), self.pool(deep_context).flatten(1))
        )
        return self.fusion(shallow, deep)

    def example_inputs(
        self, batch: int = 1, input_size: tuple[int, int] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Random (face, context) inputs, (H, W) = ``input_size`` or the preset's square size."""
        device = next(self.parameters()).device
        height, width = input_size if input_size is not None else (self.config.input_size,) * 2
        generator = torch.Generator().manual_seed(0)
        face = torch.randn(batch, 3, height, width, generator=generator)
        context = torch.randn(batch, 3, height, width, generator=generator)
        return face.to(device), context.to(device)


# Build through the one factory: create_model("cahfw", preset, **overrides).
register_model("cahfw", CAHFWConfig, CAHFW_PRESETS, CAHFWNet, default_preset="paper")
