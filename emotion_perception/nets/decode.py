"""From BENet's output maps to a fixed number of people per image, in torch ops that export to ONNX.

Conventions (docs/ARCHITECTURE.md, "Decoding"):
- map pixel (i, j) of a stride-s map covers input pixels [j*s, (j+1)*s) x [i*s, (i+1)*s); a
  person's centre pixel is floor(centre / s) and decodes back to (index + 0.5) * s;
- letterbox parameters (B, 3) = (scale, pad_x, pad_y) with input = original * scale + pad;
- size maps hold (width, height) in pixels of their own map.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

OUTPUT_NAMES = ("boxes", "scores", "emotions", "vad", "valid")
INPUT_NAMES = ("image", "letterbox")
# Stride of the decoding resolution (the 1/2 maps) relative to the network input.
DECODE_STRIDE = 2


@dataclass(frozen=True)
class DecodeConfig:
    """How peaks become people."""

    top_k: int = 15  # people returned per image (fixed output size)
    threshold: float = 0.1  # minimum centre score for ``valid``
    nms_kernel: int = 5  # max-pool window of the peak non-maximum suppression (odd)
    flip_test: bool = False  # average with the horizontally flipped image (BENetWithDecode only)

    def __post_init__(self) -> None:
        if self.top_k < 1:
            raise ValueError(f"DecodeConfig.top_k must be positive, got {self.top_k}")
        if self.nms_kernel < 1 or self.nms_kernel % 2 == 0:
            raise ValueError(f"DecodeConfig.nms_kernel must be odd and positive, got {self.nms_kernel}")


def _upsample(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)


def merge_resolutions(outputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Probability maps at 1/2 resolution: sigmoid, 1/4 maps upsampled and averaged with 1/2 maps.

    Returns ``heatmap`` (B,1,h,w), ``size`` (B,2,h,w) in 1/2-map pixels (non-negative),
    ``emotions`` (B,E,h,w) and, when the net has a VAD head, ``vad`` (B,3,h,w).
    """
    merged = {
        "heatmap": (_upsample(torch.sigmoid(outputs["heatmap_4"])) + torch.sigmoid(outputs["heatmap_2"])) / 2,
        # A 1/4-map pixel spans two 1/2-map pixels, hence the factor 2 before averaging.
        "size": (_upsample(F.relu(outputs["size_4"]) * 2.0) + F.relu(outputs["size_2"])) / 2,
        "emotions": (_upsample(torch.sigmoid(outputs["emotions_4"])) + torch.sigmoid(outputs["emotions_2"])) / 2,
    }
    if "vad_4" in outputs:
        merged["vad"] = (_upsample(torch.sigmoid(outputs["vad_4"])) + torch.sigmoid(outputs["vad_2"])) / 2
    return merged


def average_with_flipped(
    maps: Mapping[str, torch.Tensor], flipped_maps: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Average merged maps with those of the horizontally flipped image, flipped back.

    Widths and heights do not change under a horizontal flip, so size maps need no channel swap.
    """
    return {key: (value + flipped_maps[key].flip(-1)) / 2 for key, value in maps.items()}


def _gather(maps: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Values of (B,C,h,w) maps at flat pixel indices (B,K) -> (B,K,C)."""
    flat = maps.flatten(2)
    return flat.gather(2, index.unsqueeze(1).expand(-1, flat.shape[1], -1)).transpose(1, 2)


def decode_maps(
    maps: Mapping[str, torch.Tensor], letterbox: torch.Tensor, config: DecodeConfig = DecodeConfig()
) -> dict[str, torch.Tensor]:
    """Peaks of merged maps -> fixed-size people tensors in original-image pixels.

    ``letterbox`` (B, 3) holds (scale, pad_x, pad_y). Returns ``boxes`` (B,K,4) x1y1x2y2,
    ``scores`` (B,K) sorted descending, ``emotions`` (B,K,E), ``vad`` (B,K,3) (NaN without a
    VAD head) and ``valid`` (B,K) bool (score >= threshold). Rows beyond ``valid`` hold the
    next-best peaks and must be ignored.
    """
    heat = maps["heatmap"]
    pooled = F.max_pool2d(heat, config.nms_kernel, stride=1, padding=config.nms_kernel // 2)
    peaks = heat * (pooled == heat).to(heat.dtype)
    map_width = heat.shape[3]
    if not (torch.jit.is_tracing() or torch.compiler.is_compiling()) and config.top_k > heat.shape[2] * map_width:
        raise ValueError(f"DecodeConfig.top_k={config.top_k} exceeds the {heat.shape[2]}x{map_width} decoding map")
    scores, index = peaks.flatten(1).topk(config.top_k, dim=1)
    rows = torch.div(index, map_width, rounding_mode="floor")
    cols = index - rows * map_width

    size = _gather(maps["size"], index)  # (B,K,2) width, height in map pixels
    centre_x = (cols.to(heat.dtype) + 0.5) * DECODE_STRIDE
    centre_y = (rows.to(heat.dtype) + 0.5) * DECODE_STRIDE
    half_w = size[..., 0] * (DECODE_STRIDE / 2)
    half_h = size[..., 1] * (DECODE_STRIDE / 2)
    scale = letterbox[:, 0:1].to(heat.dtype)
    pad_x = letterbox[:, 1:2].to(heat.dtype)
    pad_y = letterbox[:, 2:3].to(heat.dtype)
    boxes = torch.stack(
        [
            (centre_x - half_w - pad_x) / scale,
            (centre_y - half_h - pad_y) / scale,
            (centre_x + half_w - pad_x) / scale,
            (centre_y + half_h - pad_y) / scale,
        ],
        dim=-1,
    )
    emotions = _gather(maps["emotions"], index)
    if "vad" in maps:
        vad = _gather(maps["vad"], index)
    else:
        vad = torch.full_like(size[..., :1].expand(-1, -1, 3), float("nan"))
    return {"boxes": boxes, "scores": scores, "emotions": emotions, "vad": vad, "valid": scores >= config.threshold}


def decode(
    outputs: Mapping[str, torch.Tensor],
    letterbox: torch.Tensor,
    config: DecodeConfig = DecodeConfig(),
    flipped_outputs: Mapping[str, torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """Decode raw BENet outputs (optionally with those of the flipped image); see decode_maps."""
    maps = merge_resolutions(outputs)
    if flipped_outputs is not None:
        maps = average_with_flipped(maps, merge_resolutions(flipped_outputs))
    return decode_maps(maps, letterbox, config)


def centre_pixels(
    boxes: torch.Tensor, stride: int, map_height: int, map_width: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(row, col) long tensors of the map pixel holding each box centre (boxes (N,4) input px).

    The one definition of "a person's centre pixel", shared by training targets and evaluation.
    """
    centre_x = (boxes[:, 0] + boxes[:, 2]) / 2
    centre_y = (boxes[:, 1] + boxes[:, 3]) / 2
    cols = torch.div(centre_x, stride, rounding_mode="floor").long().clamp(0, map_width - 1)
    rows = torch.div(centre_y, stride, rounding_mode="floor").long().clamp(0, map_height - 1)
    return rows, cols


def read_at_centres(
    outputs: Mapping[str, torch.Tensor],
    boxes: Sequence[torch.Tensor],
    flipped_outputs: Mapping[str, torch.Tensor] | None = None,
) -> dict[str, list[torch.Tensor]]:
    """Merged emotion (and VAD) probabilities at given boxes' centres, per image.

    For the protocol "emotions read at ground-truth centres": ``boxes[b]`` is (N_b, 4) in input
    pixels. Returns ``{"emotions": [(N_b, E)], "vad": [(N_b, 3)]}`` (VAD NaN without a VAD head).
    """
    maps = merge_resolutions(outputs)
    if flipped_outputs is not None:
        maps = average_with_flipped(maps, merge_resolutions(flipped_outputs))
    if len(boxes) != maps["heatmap"].shape[0]:
        raise ValueError(f"read_at_centres: {len(boxes)} box tensors for a batch of {maps['heatmap'].shape[0]}")
    height, width = maps["heatmap"].shape[2:]
    emotions, vads = [], []
    for image_index, image_boxes in enumerate(boxes):
        image_boxes = torch.as_tensor(image_boxes, dtype=torch.float32, device=maps["heatmap"].device).reshape(-1, 4)
        rows, cols = centre_pixels(image_boxes, DECODE_STRIDE, height, width)
        emotions.append(maps["emotions"][image_index][:, rows, cols].T)
        if "vad" in maps:
            vads.append(maps["vad"][image_index][:, rows, cols].T)
        else:
            vads.append(torch.full((len(rows), 3), float("nan"), device=image_boxes.device))
    return {"emotions": emotions, "vad": vads}


class BENetWithDecode(nn.Module):
    """BENet + decoding in one module: ``forward(image, letterbox)`` -> the OUTPUT_NAMES tuple.

    The deployment graph: export it with input names INPUT_NAMES and output names OUTPUT_NAMES.
    With ``config.flip_test`` the image and its mirror run as one batch of 2B.
    """

    def __init__(self, net: nn.Module, config: DecodeConfig = DecodeConfig()) -> None:
        super().__init__()
        self.net = net
        self.config = config

    def forward(self, image: torch.Tensor, letterbox: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if self.config.flip_test:
            batch = image.shape[0]
            both = self.net(torch.cat([image, image.flip(-1)], dim=0))
            outputs = {key: value[:batch] for key, value in both.items()}
            flipped = {key: value[batch:] for key, value in both.items()}
            decoded = decode(outputs, letterbox, self.config, flipped)
        else:
            decoded = decode(self.net(image), letterbox, self.config)
        return tuple(decoded[name] for name in OUTPUT_NAMES)
