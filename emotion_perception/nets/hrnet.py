"""HRNet backbone (stem, layer1, multi-resolution stages) and HRNet's classification head.

Written for BENet's needs: attention inside every residual block, a configurable number of
modules and blocks per stage, and a last module that can fuse into branch 0 only (the inference
path needs nothing else) or into every branch (the person-centric and background heads read all
four resolutions).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from emotion_perception.nets.blocks import BasicBlock, Bottleneck, conv1x1, conv3x3


def _conv_bn(in_channels: int, out_channels: int, stride: int, relu: bool, bn_momentum: float,
             bias: bool = False) -> nn.Sequential:
    layers: list[nn.Module] = [conv3x3(in_channels, out_channels, stride, bias=bias),
                               nn.BatchNorm2d(out_channels, momentum=bn_momentum)]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class UpsampleNearest(nn.Module):
    """Nearest-neighbour upsampling by an integer factor (exports to ONNX Resize)."""

    def __init__(self, factor: int) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, scale_factor=float(self.factor), mode="nearest")


class HighResolutionModule(nn.Module):
    """Parallel branches of BasicBlocks followed by HRNet's all-to-all fusion.

    Fusion into branch i sums: branch i itself; branches j > i through a 1x1 conv + BN and
    nearest upsampling by 2**(j-i); branches j < i through a chain of i-j stride-2 3x3 convs
    (ReLU between them, none after the last BN). The sum goes through ReLU.
    """

    def __init__(
        self,
        channels: Sequence[int],
        num_blocks: int,
        attention: bool,
        attention_reduction: int,
        bn_momentum: float,
        attention_bias: bool = True,
    ) -> None:
        super().__init__()
        self.channels = tuple(channels)
        self.branches = nn.ModuleList(
            nn.Sequential(
                *(
                    BasicBlock(c, c, attention=attention, attention_reduction=attention_reduction,
                               bn_momentum=bn_momentum, attention_bias=attention_bias)
                    for _ in range(num_blocks)
                )
            )
            for c in self.channels
        )
        self.fuse = nn.ModuleList(
            nn.ModuleList(self._fuse_path(source, target, bn_momentum) for source in range(len(self.channels)))
            for target in range(len(self.channels))
        )
        self.relu = nn.ReLU(inplace=True)

    def _fuse_path(self, source: int, target: int, bn_momentum: float) -> nn.Module:
        c_in, c_out = self.channels[source], self.channels[target]
        if source == target:
            return nn.Identity()
        if source > target:
            return nn.Sequential(
                conv1x1(c_in, c_out), nn.BatchNorm2d(c_out, momentum=bn_momentum),
                UpsampleNearest(2 ** (source - target)),
            )
        steps = target - source
        chain = [_conv_bn(c_in, c_in, 2, relu=True, bn_momentum=bn_momentum) for _ in range(steps - 1)]
        chain.append(_conv_bn(c_in, c_out, 2, relu=False, bn_momentum=bn_momentum))
        return nn.Sequential(*chain)

    def forward(self, features: list[torch.Tensor], num_outputs: int | None = None) -> list[torch.Tensor]:
        """Run the branches and fuse into the first ``num_outputs`` branches (all by default)."""
        branch_out = [branch(x) for branch, x in zip(self.branches, features)]
        count = len(self.channels) if num_outputs is None else num_outputs
        fused = []
        for target in range(count):
            paths = cast(nn.ModuleList, self.fuse[target])  # built as a ModuleList per target
            total = paths[0](branch_out[0])
            for source in range(1, len(branch_out)):
                total = total + paths[source](branch_out[source])
            fused.append(self.relu(total))
        return fused


class HRNetBackbone(nn.Module):
    """Stem (two stride-2 3x3 convs), layer1 (Bottlenecks) and stages 2..n of HRNet.

    Output: a list of branch features at strides 4, 8, 16, ... with ``widths`` channels.
    """

    def __init__(
        self,
        stem_channels: int,
        layer1_planes: int,
        layer1_blocks: int,
        widths: Sequence[int],
        stage_modules: Sequence[int],
        stage_blocks: Sequence[int],
        attention: bool,
        attention_reduction: int,
        bn_momentum: float,
        attention_bias: bool = True,
    ) -> None:
        super().__init__()
        widths = tuple(widths)
        if len(stage_modules) != len(widths) - 1 or len(stage_blocks) != len(widths) - 1:
            raise ValueError(
                f"HRNet with {len(widths)} branches needs {len(widths) - 1} stages, got "
                f"stage_modules={tuple(stage_modules)} and stage_blocks={tuple(stage_blocks)}"
            )
        self.widths = widths
        self.stem = nn.Sequential(
            _conv_bn(3, stem_channels, 2, relu=True, bn_momentum=bn_momentum),
            _conv_bn(stem_channels, stem_channels, 2, relu=True, bn_momentum=bn_momentum),
        )
        blocks = []
        in_channels = stem_channels
        for _ in range(layer1_blocks):
            block = Bottleneck(
                in_channels, layer1_planes, expansion=4, attention=attention,
                attention_reduction=attention_reduction, bn_momentum=bn_momentum, attention_bias=attention_bias,
            )
            blocks.append(block)
            in_channels = block.out_channels
        self.layer1 = nn.Sequential(*blocks)

        self.transitions = nn.ModuleList()
        self.stages = nn.ModuleList()
        previous: tuple[int, ...] = (in_channels,)
        for stage_index, (modules, num_blocks) in enumerate(zip(stage_modules, stage_blocks)):
            current = widths[: stage_index + 2]
            self.transitions.append(self._transition(previous, current, bn_momentum))
            self.stages.append(
                nn.ModuleList(
                    HighResolutionModule(current, num_blocks, attention, attention_reduction, bn_momentum,
                                         attention_bias)
                    for _ in range(modules)
                )
            )
            previous = current

    @staticmethod
    def _transition(previous: tuple[int, ...], current: tuple[int, ...], bn_momentum: float) -> nn.ModuleList:
        """Adapt existing branches' widths (3x3 conv) and open the new branch from the last one."""
        layers = nn.ModuleList()
        for index, width in enumerate(current):
            if index < len(previous):
                if previous[index] == width:
                    layers.append(nn.Identity())
                else:
                    layers.append(_conv_bn(previous[index], width, 1, relu=True, bn_momentum=bn_momentum))
            else:
                steps = index + 1 - len(previous)
                chain = [_conv_bn(previous[-1], previous[-1], 2, relu=True, bn_momentum=bn_momentum)
                         for _ in range(steps - 1)]
                chain.append(_conv_bn(previous[-1], width, 2, relu=True, bn_momentum=bn_momentum))
                layers.append(nn.Sequential(*chain))
        return layers

    def forward(self, x: torch.Tensor, all_branches: bool = True) -> list[torch.Tensor]:
        """Branch features; with ``all_branches=False`` only branch 0 is fused at the very end."""
        features = [self.layer1(self.stem(x))]
        last_stage = len(self.stages) - 1
        for stage_index, (transition_list, stage_list) in enumerate(zip(self.transitions, self.stages)):
            # Both are built as ModuleLists in __init__; iterating a ModuleList is typed as plain Module.
            transition = cast(nn.ModuleList, transition_list)
            stage = cast(nn.ModuleList, stage_list)
            features = [
                layer(features[index] if index < len(features) else features[-1])
                for index, layer in enumerate(transition)
            ]
            for module_index, module in enumerate(stage):
                is_last = stage_index == last_stage and module_index == len(stage) - 1
                features = module(features, None if (all_branches or not is_last) else 1)
        return features


class HRNetClassificationHead(nn.Module):
    """HRNet's image classification head, with a block of expansion 1 per branch.

    Each branch goes through one Bottleneck keeping its width; a chain of stride-2 3x3 convs
    carries the running sum from the finest branch to the coarsest; then 1x1 conv + BN + ReLU,
    global average pooling and an MLP to the outputs.
    """

    def __init__(
        self,
        widths: Sequence[int],
        channels: int,
        hidden: int,
        num_outputs: int,
        attention: bool,
        attention_reduction: int,
        bn_momentum: float,
        attention_bias: bool = True,
        conv_bias: bool = True,
    ) -> None:
        super().__init__()
        widths = tuple(widths)
        self.branch_blocks = nn.ModuleList(
            Bottleneck(w, w, expansion=1, attention=attention, attention_reduction=attention_reduction,
                       bn_momentum=bn_momentum, attention_bias=attention_bias)
            for w in widths
        )
        # conv_bias: the downsampling and final convs carry biases in the public BENet code.
        self.downsample = nn.ModuleList(
            _conv_bn(widths[i], widths[i + 1], 2, relu=True, bn_momentum=bn_momentum, bias=conv_bias)
            for i in range(len(widths) - 1)
        )
        self.final = nn.Sequential(
            nn.Conv2d(widths[-1], channels, 1, bias=conv_bias), nn.BatchNorm2d(channels, momentum=bn_momentum),
            nn.ReLU(inplace=True)
        )
        self.classifier = nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(inplace=True),
                                        nn.Linear(hidden, num_outputs))

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        y = self.branch_blocks[0](features[0])
        for index, down in enumerate(self.downsample):
            y = self.branch_blocks[index + 1](features[index + 1]) + down(y)
        y = self.final(y)
        return self.classifier(y.mean(dim=(2, 3)))
