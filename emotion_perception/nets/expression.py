"""A real face-expression model: the FaceExpressionNet of face-api, in PyTorch.

The weights ship in the npm package ``@vladmandic/face-api`` (MIT; ``model/
face_expression_model.bin`` + its tfjs weights manifest, uint8-quantised). The architecture,
written here from face-api's published description and source (facts, not code), is:

* input: a face crop padded to a square (zeros, centred) and resized to 112x112 with
  TensorFlow's legacy bilinear resize (the predictor does that, ``runtime/preprocess.py``),
  RGB, minus the mean (122.782, 117.001, 104.298), divided by 255 (the model card's
  normalisation, so every backend is fed the same way);
* four "dense blocks" of four convolutions each (32, 64, 128, 256 channels): the first
  convolution of a block has stride 2 (a plain 3x3 conv in block 0, depthwise-separable in the
  others), the next three are depthwise-separable 3x3 convs of stride 1; every convolution's
  input is the ReLU of the sum of the block's previous outputs (dense connections);
* 7x7 average pooling (the 7x7 map becomes 1x1), a fully connected layer 256 -> 7, softmax.

TensorFlow's ``same`` padding is asymmetric for stride 2 on even sizes (one pixel at the bottom
and right only); it is reproduced exactly (``_same_padding``), otherwise the port would be off
by a pixel shift. The 7 face-api classes are reordered to the CAER-S names at conversion, so
the logits come out in ``CAER_CATEGORIES`` order and a dialogue stack sees one vocabulary.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from emotion_perception.data.categories import CAER_CATEGORIES
from emotion_perception.nets.factory import register_model

# face-api's output order and the CAER-S name of each class.
FACE_API_CLASSES: tuple[str, ...] = ("neutral", "happy", "sad", "angry", "fearful", "disgusted", "surprised")
FACE_API_TO_CAER: dict[str, str] = {
    "neutral": "Neutral", "happy": "Happy", "sad": "Sad", "angry": "Anger",
    "fearful": "Fear", "disgusted": "Disgust", "surprised": "Surprise",
}
FACE_API_MEAN_RGB: tuple[float, float, float] = (122.782, 117.001, 104.298)


@dataclass(frozen=True)
class ExpressionNetConfig:
    input_size: int = 112
    num_classes: int = 7
    channels: tuple[int, ...] = (32, 64, 128, 256)


EXPRESSION_PRESETS = {"face_api": ExpressionNetConfig()}


def _same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow 'same' padding (before, after) along one axis."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class SameConv(nn.Module):
    """A 3x3 convolution (plain or depthwise-separable) with TensorFlow 'same' padding."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, separable: bool) -> None:
        super().__init__()
        self.stride = stride
        self.separable = separable
        if separable:
            self.depthwise = nn.Conv2d(in_channels, in_channels, 3, stride, groups=in_channels, bias=False)
            self.pointwise = nn.Conv2d(in_channels, out_channels, 1, bias=True)
        else:
            self.conv = nn.Conv2d(in_channels, out_channels, 3, stride, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        top, bottom = _same_padding(x.shape[2], 3, self.stride)
        left, right = _same_padding(x.shape[3], 3, self.stride)
        x = F.pad(x, (left, right, top, bottom))
        if self.separable:
            return self.pointwise(self.depthwise(x))
        return self.conv(x)


class DenseBlock4(nn.Module):
    """Four convolutions; each one's input is the ReLU of the sum of the previous outputs."""

    def __init__(self, in_channels: int, out_channels: int, first: bool) -> None:
        super().__init__()
        self.conv0 = SameConv(in_channels, out_channels, stride=2, separable=not first)
        self.conv1 = SameConv(out_channels, out_channels, stride=1, separable=True)
        self.conv2 = SameConv(out_channels, out_channels, stride=1, separable=True)
        self.conv3 = SameConv(out_channels, out_channels, stride=1, separable=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out1 = F.relu(self.conv0(x))
        out2 = self.conv1(out1)
        out3 = self.conv2(F.relu(out1 + out2))
        out4 = self.conv3(F.relu(out1 + out2 + out3))
        return F.relu(out1 + out2 + out3 + out4)


class FaceExpressionNet(nn.Module):
    """(B, 3, 112, 112) normalised face crops -> (B, 7) logits in CAER_CATEGORIES order."""

    def __init__(self, config: ExpressionNetConfig) -> None:
        super().__init__()
        self.config = config
        channels = (3,) + tuple(config.channels)
        self.blocks = nn.ModuleList(
            DenseBlock4(channels[i], channels[i + 1], first=(i == 0)) for i in range(len(config.channels))
        )
        self.fc = nn.Linear(channels[-1], config.num_classes)

    def forward(self, face: torch.Tensor) -> torch.Tensor:
        x = face
        for block in self.blocks:
            x = block(x)
        # face-api: avgPool 7x7, stride 2, 'valid' on the 7x7 map = the mean over the map.
        x = F.avg_pool2d(x, kernel_size=7, stride=2)
        return self.fc(x.flatten(1))

    def example_inputs(self, batch: int = 1, input_size: tuple[int, int] | None = None) -> tuple[torch.Tensor]:
        device = next(self.parameters()).device
        height, width = input_size if input_size is not None else (self.config.input_size,) * 2
        generator = torch.Generator().manual_seed(0)
        return (torch.randn(batch, 3, height, width, generator=generator).to(device),)


register_model("expression", ExpressionNetConfig, EXPRESSION_PRESETS, FaceExpressionNet, default_preset="face_api")


# --------------------------------------------------------------------------- face-api weights


class TfjsWeightsError(ValueError):
    """A tfjs weights manifest / binary that does not hold the expected model."""


def decode_tfjs_weights(manifest: list[dict[str, Any]] | str, data: bytes) -> dict[str, np.ndarray]:
    """The float32 arrays of a tfjs weights manifest and its concatenated binary.

    Weights are stored in manifest order; a quantised one (``quantization``: uint8 / uint16
    with ``scale`` and ``min``) decodes to ``q * scale + min``.
    """
    groups: list[dict[str, Any]] = json.loads(manifest) if isinstance(manifest, str) else manifest
    specs = [spec for group in groups for spec in group["weights"]]
    arrays: dict[str, np.ndarray] = {}
    offset = 0
    for spec in specs:
        shape = tuple(int(s) for s in spec["shape"])
        count = int(np.prod(shape)) if shape else 1
        quant = spec.get("quantization")
        if quant:
            dtype = {"uint8": np.uint8, "uint16": np.uint16}.get(quant["dtype"])
            if dtype is None:
                raise TfjsWeightsError(f"{spec['name']}: unsupported quantisation {quant['dtype']!r}")
            size = count * np.dtype(dtype).itemsize
            raw = np.frombuffer(data, dtype=dtype, count=count, offset=offset) if offset + size <= len(data) else None
            if raw is None:
                raise TfjsWeightsError(f"{spec['name']}: binary ends at byte {len(data)}, need {offset + size}")
            values = raw.astype(np.float64) * float(quant["scale"]) + float(quant["min"])
        else:
            if spec.get("dtype", "float32") != "float32":
                raise TfjsWeightsError(f"{spec['name']}: unsupported dtype {spec.get('dtype')!r}")
            size = count * 4
            if offset + size > len(data):
                raise TfjsWeightsError(f"{spec['name']}: binary ends at byte {len(data)}, need {offset + size}")
            values = np.frombuffer(data, dtype="<f4", count=count, offset=offset).astype(np.float64)
        arrays[spec["name"]] = values.astype(np.float32).reshape(shape)
        offset += size
    if offset != len(data):
        raise TfjsWeightsError(f"binary has {len(data)} bytes, the manifest describes {offset}")
    return arrays


def state_dict_from_face_api(arrays: dict[str, np.ndarray], config: ExpressionNetConfig = ExpressionNetConfig()
                             ) -> dict[str, torch.Tensor]:
    """face-api's ``face_expression_model`` arrays -> a FaceExpressionNet state dict.

    tfjs layouts: conv filters (kh, kw, in, out), depthwise (kh, kw, in, 1), pointwise
    (1, 1, in, out), fc weights (in, out). The fc rows are reordered to CAER_CATEGORIES.
    """
    def take(name: str) -> np.ndarray:
        if name not in arrays:
            raise TfjsWeightsError(f"weight '{name}' is missing: not face-api's face_expression_model")
        return arrays[name]

    state: dict[str, torch.Tensor] = {}
    for block in range(len(config.channels)):
        for conv in range(4):
            prefix, ours = f"dense{block}/conv{conv}", f"blocks.{block}.conv{conv}"
            if block == 0 and conv == 0:
                state[f"{ours}.conv.weight"] = torch.from_numpy(take(f"{prefix}/filters").transpose(3, 2, 0, 1).copy())
                state[f"{ours}.conv.bias"] = torch.from_numpy(take(f"{prefix}/bias").copy())
                continue
            depthwise = take(f"{prefix}/depthwise_filter")  # (3, 3, C, 1)
            state[f"{ours}.depthwise.weight"] = torch.from_numpy(depthwise.transpose(2, 3, 0, 1).copy())
            pointwise = take(f"{prefix}/pointwise_filter")  # (1, 1, C, out)
            state[f"{ours}.pointwise.weight"] = torch.from_numpy(pointwise.transpose(3, 2, 0, 1).copy())
            state[f"{ours}.pointwise.bias"] = torch.from_numpy(take(f"{prefix}/bias").copy())
    order = [FACE_API_CLASSES.index(next(k for k, v in FACE_API_TO_CAER.items() if v == name))
             for name in CAER_CATEGORIES]
    weights, bias = take("fc/weights"), take("fc/bias")  # (256, 7), (7,)
    if weights.shape != (config.channels[-1], len(FACE_API_CLASSES)):
        raise TfjsWeightsError(f"fc/weights has shape {weights.shape}, expected ({config.channels[-1]}, 7)")
    state["fc.weight"] = torch.from_numpy(weights.T[order].copy())
    state["fc.bias"] = torch.from_numpy(bias[order].copy())
    model = FaceExpressionNet(config)
    expected = model.state_dict()
    for key, value in state.items():
        if key not in expected or tuple(expected[key].shape) != tuple(value.shape):
            raise TfjsWeightsError(f"{key}: shape {tuple(value.shape)} does not fit the network "
                                   f"({tuple(expected[key].shape) if key in expected else 'no such tensor'})")
    missing = sorted(set(expected) - set(state))
    if missing:
        raise TfjsWeightsError(f"no weights for {missing}")
    return state
