"""Residual blocks (HRNet's BasicBlock and Bottleneck) with BENet's optional attention.

Attention sits after the block's last batch norm and before the residual addition. Both blocks
build their own projection shortcut when the stride or the channel count changes.
"""

from __future__ import annotations

import torch
from torch import nn

from emotion_perception.nets.attention import AttentionBlock


def conv3x3(in_channels: int, out_channels: int, stride: int = 1, bias: bool = False) -> nn.Conv2d:
    """3x3 convolution, padding 1, no bias by default (followed by batch norm)."""
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=bias)


def conv1x1(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    """1x1 convolution, no bias (always followed by batch norm here)."""
    return nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)


def _shortcut(in_channels: int, out_channels: int, stride: int, bn_momentum: float) -> nn.Module:
    if stride == 1 and in_channels == out_channels:
        return nn.Identity()
    return nn.Sequential(
        conv1x1(in_channels, out_channels, stride),
        nn.BatchNorm2d(out_channels, momentum=bn_momentum),
    )


def _attention(channels: int, enabled: bool, reduction: int, bias: bool) -> nn.Module:
    return AttentionBlock(channels, reduction, bias) if enabled else nn.Identity()


class BasicBlock(nn.Module):
    """Two 3x3 convs (ResNet/HRNet basic block); output has ``channels`` channels."""

    def __init__(
        self,
        in_channels: int,
        channels: int,
        stride: int = 1,
        attention: bool = True,
        attention_reduction: int = 2,
        bn_momentum: float = 0.1,
        attention_bias: bool = True,
    ) -> None:
        super().__init__()
        self.out_channels = channels
        self.conv1 = conv3x3(in_channels, channels, stride)
        self.bn1 = nn.BatchNorm2d(channels, momentum=bn_momentum)
        self.conv2 = conv3x3(channels, channels)
        self.bn2 = nn.BatchNorm2d(channels, momentum=bn_momentum)
        self.attention = _attention(channels, attention, attention_reduction, attention_bias)
        self.shortcut = _shortcut(in_channels, channels, stride, bn_momentum)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.attention(self.bn2(self.conv2(out)))
        return self.relu(out + self.shortcut(x))


class Bottleneck(nn.Module):
    """1x1 -> 3x3 -> 1x1 block; output has ``planes * expansion`` channels.

    HRNet's layer1 uses expansion 4; BENet's person-centric/background heads use expansion 1.
    """

    def __init__(
        self,
        in_channels: int,
        planes: int,
        expansion: int = 4,
        stride: int = 1,
        attention: bool = True,
        attention_reduction: int = 2,
        bn_momentum: float = 0.1,
        attention_bias: bool = True,
    ) -> None:
        super().__init__()
        out_channels = planes * expansion
        self.out_channels = out_channels
        self.conv1 = conv1x1(in_channels, planes)
        self.bn1 = nn.BatchNorm2d(planes, momentum=bn_momentum)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes, momentum=bn_momentum)
        self.conv3 = conv1x1(planes, out_channels)
        self.bn3 = nn.BatchNorm2d(out_channels, momentum=bn_momentum)
        self.attention = _attention(out_channels, attention, attention_reduction, attention_bias)
        self.shortcut = _shortcut(in_channels, out_channels, stride, bn_momentum)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.attention(self.bn3(self.conv3(out)))
        return self.relu(out + self.shortcut(x))
