"""Channel + spatial attention placed inside BENet's residual blocks.

BENet inserts this block after the last batch norm of every residual block and before the
residual addition (layer1 Bottlenecks, branch BasicBlocks and head blocks). Channel attention
comes first, spatial attention second, as in CBAM.
"""

from __future__ import annotations

import torch
from torch import nn


class ChannelAttention(nn.Module):
    """Reweights channels with one MLP shared by the global-average and global-max descriptors."""

    def __init__(self, channels: int, reduction: int = 2, bias: bool = True) -> None:
        super().__init__()
        self.channels = channels
        hidden = max(1, channels // reduction)
        # With biases, as the public BENet code (lib/models/BENet.py); ``bias=False`` is the
        # bias-free CBAM formula sigma(W1 relu(W0 avg) + W1 relu(W0 max)) of earlier checkpoints.
        self.mlp = nn.Sequential(
            nn.Linear(channels, hidden, bias=bias),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, channels, bias=bias),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        averaged = x.mean(dim=(2, 3))
        maximum = x.amax(dim=(2, 3))
        weights = torch.sigmoid(self.mlp(averaged) + self.mlp(maximum))
        return x * weights[:, :, None, None]


class SpatialAttention(nn.Module):
    """Reweights positions from the channel-max and channel-mean maps through a 1x1 conv."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat([x.amax(dim=1, keepdim=True), x.mean(dim=1, keepdim=True)], dim=1)
        return x * torch.sigmoid(self.conv(pooled))


class MeanAsConvSpatialAttention(nn.Module):
    """:class:`SpatialAttention` rewritten for inference runtimes, equal up to float rounding.

    The 2->1 convolution over [channel max, channel mean] is split into its two terms, and the
    mean term becomes one constant 1x1 convolution over the C channels (weights w_mean / C).
    On ONNX Runtime's CPU provider a channel-axis ReduceMean runs outside the blocked (NCHWc)
    convolution layout; a 1x1 convolution runs inside it (measured gain in docs/BENCHMARKS.md,
    "CPU floor"). The channel max stays a ReduceMax: no ONNX op computes it in NCHWc.
    """

    max_weight: torch.Tensor
    mean_weight: torch.Tensor

    def __init__(self, trained: SpatialAttention, channels: int) -> None:
        super().__init__()
        weight = trained.conv.weight.detach()  # (1, 2, 1, 1): [max, mean]
        self.register_buffer("max_weight", weight[:, :1].clone())
        self.register_buffer("mean_weight", (weight[:, 1:] / channels).expand(1, channels, 1, 1).clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logit = x.amax(dim=1, keepdim=True) * self.max_weight + nn.functional.conv2d(x, self.mean_weight)
        return x * torch.sigmoid(logit)


class AttentionBlock(nn.Module):
    """Channel attention followed by spatial attention; keeps the input shape."""

    def __init__(self, channels: int, reduction: int = 2, bias: bool = True) -> None:
        super().__init__()
        self.channel = ChannelAttention(channels, reduction, bias)
        self.spatial: nn.Module = SpatialAttention()  # MeanAsConvSpatialAttention in exports

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.spatial(self.channel(x))


def with_mean_as_conv(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose spatial attentions are :class:`MeanAsConvSpatialAttention`
    (for export; ``model`` itself is left as it is), or ``model`` itself when it has no spatial
    attention to rewrite (so ``with_mean_as_conv(m) is not m`` says whether anything was)."""
    import copy

    if not any(isinstance(block, AttentionBlock) and isinstance(block.spatial, SpatialAttention)
               for block in model.modules()):
        return model
    rewritten = copy.deepcopy(model)
    for block in rewritten.modules():
        if isinstance(block, AttentionBlock) and isinstance(block.spatial, SpatialAttention):
            block.spatial = MeanAsConvSpatialAttention(block.spatial, block.channel.channels)
    return rewritten
