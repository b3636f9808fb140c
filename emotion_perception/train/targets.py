"""Training targets of BENet's dense heads and the per-image head routing.

From the collated batch (per-image boxes/labels/vad in input pixels, the drawn ``mode`` and the
image-level label) build, for each output resolution, a Gaussian centre heatmap and the
per-person centre index, size, emotions and VAD that the losses read predictions at.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from emotion_perception.nets.decode import centre_pixels

# Output resolutions of BENet's dense heads, keyed like its outputs ("heatmap_4", "heatmap_2").
STRIDES = (4, 2)
MODES = ("det", "mask_subjects", "extract_subject", "mask_all")
# Which heads an image of each mode trains (docs/ARCHITECTURE.md, "Head routing"): one task per
# image, as in the paper (section 3.3) and the public code's collate (lib/dataset/build.py): a raw
# image trains the centre heatmap and size heads only, a masked-subjects image the bottom-up
# emotion maps only (and our VAD maps, an extension), an extracted subject the person-centric
# head, a fully masked image the background head.
# "det": heatmap + size, "bu": bottom-up emotions, "vad": VAD maps, "pc": person-centric, "bg": background.
HEAD_ROUTING: dict[str, frozenset[str]] = {
    "det": frozenset({"det"}),
    "mask_subjects": frozenset({"bu", "vad"}),
    "extract_subject": frozenset({"pc"}),
    "mask_all": frozenset({"bg"}),
}
HEADS = ("det", "bu", "pc", "bg", "vad")


@dataclass
class ResolutionTargets:
    """Targets of one output resolution; M = most people in an image of the batch."""

    heatmap: torch.Tensor  # (B, 1, h, w) Gaussian centre heatmap, exactly 1 at centre pixels
    index: torch.Tensor  # (B, M) long, flat index row * w + col of each person's centre pixel
    mask: torch.Tensor  # (B, M) bool, true for real people (false for padding)
    size: torch.Tensor  # (B, M, 2) box (width, height) in pixels of this map
    emotions: torch.Tensor  # (B, M, E) multi-hot
    vad: torch.Tensor  # (B, M, 3) in [0, 1], NaN where not annotated


@dataclass
class BENetTargets:
    """All targets of one batch."""

    by_stride: dict[int, ResolutionTargets]  # keyed by stride (4, 2)
    routes: dict[str, torch.Tensor]  # head ("det", "bu", "pc", "bg", "vad") -> (B,) bool: image trains it
    image_label: torch.Tensor  # (B, E) target of the person-centric / background heads

    def to(self, device: torch.device | str) -> BENetTargets:
        return BENetTargets(
            by_stride={
                s: ResolutionTargets(**{f.name: getattr(t, f.name).to(device) for f in dataclasses.fields(t)})
                for s, t in self.by_stride.items()
            },
            routes={k: v.to(device) for k, v in self.routes.items()},
            image_label=self.image_label.to(device),
        )


def gaussian_radius(height: float, width: float, min_overlap: float = 0.7) -> float:
    """CenterNet's radius rule: the smallest of the three corner-displacement radii.

    Keeps, like CenterNet (and hence the papers built on it), the closed forms
    r = (b + sqrt(b^2 - 4ac)) / 2 of its three quadratics.
    """
    a1, b1 = 1.0, height + width
    c1 = width * height * (1 - min_overlap) / (1 + min_overlap)
    r1 = (b1 + math.sqrt(b1 * b1 - 4 * a1 * c1)) / 2
    a2, b2 = 4.0, 2 * (height + width)
    c2 = (1 - min_overlap) * width * height
    r2 = (b2 + math.sqrt(b2 * b2 - 4 * a2 * c2)) / 2
    a3, b3 = 4 * min_overlap, -2 * min_overlap * (height + width)
    c3 = (min_overlap - 1) * width * height
    r3 = (b3 + math.sqrt(b3 * b3 - 4 * a3 * c3)) / 2
    return min(r1, r2, r3)


def draw_gaussian(heatmap: np.ndarray, row: int, col: int, radius: int, sigma: float | None = None) -> None:
    """Max-merge a Gaussian centred on pixel (row, col) into ``heatmap`` (h, w), cut at ``radius``;
    sigma (2r+1)/6 unless given (the public BENet's fixed sigma 2, radius 3 sigma + 1)."""
    sigma = (2 * radius + 1) / 6 if sigma is None else float(sigma)
    height, width = heatmap.shape
    top, bottom = max(0, row - radius), min(height, row + radius + 1)
    left, right = max(0, col - radius), min(width, col + radius + 1)
    dy = np.arange(top, bottom, dtype=np.float32)[:, None] - row
    dx = np.arange(left, right, dtype=np.float32)[None, :] - col
    gaussian = np.exp(-(dx * dx + dy * dy) / (2 * sigma * sigma))
    np.maximum(heatmap[top:bottom, left:right], gaussian, out=heatmap[top:bottom, left:right])


def _as_array(value: Any, columns: int, name: str, image_index: int) -> np.ndarray:
    array = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
    if array.size == 0:
        return np.zeros((0, columns), np.float32)
    if array.ndim != 2 or array.shape[1] != columns:
        raise ValueError(f"batch field '{name}'[{image_index}]: expected (N, {columns}), got {array.shape}")
    return array.astype(np.float32)


def build_targets(
    batch: Mapping[str, Any],
    num_emotions: int,
    strides: Sequence[int] = STRIDES,
    min_overlap: float = 0.7,
    sigma: float = 2.0,
) -> BENetTargets:
    """Targets of a collated batch (see docs/ARCHITECTURE.md, "BENet training sample").

    ``sigma`` > 0: every centre a Gaussian of that sigma (map pixels) at both resolutions, the
    public BENet configs' ``SIGMA: 2``; 0: CenterNet's size-adaptive radius (``min_overlap``).

    Reads ``image`` (B,3,H,W) for the input size, per-image ``boxes`` (N,4) input pixels,
    ``labels`` (N,E), ``vad`` (N,3) (optional), ``mode`` (B str) and ``image_label`` (B,E).
    """
    for key in ("image", "boxes", "labels", "mode", "image_label"):
        if key not in batch:
            raise ValueError(f"batch field '{key}': missing")
    input_height, input_width = int(batch["image"].shape[-2]), int(batch["image"].shape[-1])
    modes = list(batch["mode"])
    num_images = len(modes)
    if len(batch["boxes"]) != num_images or len(batch["labels"]) != num_images:
        raise ValueError(
            f"batch fields 'boxes'/'labels': {len(batch['boxes'])}/{len(batch['labels'])} entries "
            f"for {num_images} images"
        )
    for i, mode in enumerate(modes):
        if mode not in HEAD_ROUTING:
            raise ValueError(f"batch field 'mode'[{i}]: unknown mode {mode!r}; expected one of {MODES}")
    boxes = [_as_array(b, 4, "boxes", i) for i, b in enumerate(batch["boxes"])]
    labels = [_as_array(lab, num_emotions, "labels", i) for i, lab in enumerate(batch["labels"])]
    vads = (
        [_as_array(v, 3, "vad", i) for i, v in enumerate(batch["vad"])]
        if batch.get("vad") is not None
        else [np.full((len(b), 3), np.nan, np.float32) for b in boxes]
    )
    for i, (b, lab, v) in enumerate(zip(boxes, labels, vads)):
        if not (len(b) == len(lab) == len(v)):
            raise ValueError(f"batch fields 'boxes'/'labels'/'vad'[{i}]: {len(b)}/{len(lab)}/{len(v)} people disagree")
        if not np.isfinite(b).all() or (b[:, 2] < b[:, 0]).any() or (b[:, 3] < b[:, 1]).any():
            raise ValueError(f"batch field 'boxes'[{i}]: boxes must be finite x1y1x2y2 with x2 >= x1 and y2 >= y1")
    image_label = torch.as_tensor(np.asarray(batch["image_label"], dtype=np.float32)
                                  if not isinstance(batch["image_label"], torch.Tensor)
                                  else batch["image_label"].float().cpu())
    if tuple(image_label.shape) != (num_images, num_emotions):
        raise ValueError(f"batch field 'image_label': expected ({num_images}, {num_emotions}), "
                         f"got {tuple(image_label.shape)}")

    most_people = max((len(b) for b in boxes), default=0)
    by_stride = {}
    for stride in strides:
        if input_height % stride or input_width % stride:
            raise ValueError(f"input size {input_height}x{input_width} is not a multiple of stride {stride}")
        height, width = input_height // stride, input_width // stride
        heatmap = np.zeros((num_images, 1, height, width), np.float32)
        index = np.zeros((num_images, most_people), np.int64)
        mask = np.zeros((num_images, most_people), bool)
        size = np.zeros((num_images, most_people, 2), np.float32)
        emotions = np.zeros((num_images, most_people, num_emotions), np.float32)
        vad = np.full((num_images, most_people, 3), np.nan, np.float32)
        for image_index, image_boxes in enumerate(boxes):
            if not len(image_boxes):
                continue
            rows, cols = centre_pixels(torch.from_numpy(image_boxes), stride, height, width)
            box_width = (image_boxes[:, 2] - image_boxes[:, 0]) / stride
            box_height = (image_boxes[:, 3] - image_boxes[:, 1]) / stride
            for person, (row, col) in enumerate(zip(rows.tolist(), cols.tolist())):
                if sigma > 0:
                    draw_gaussian(heatmap[image_index, 0], row, col, int(3 * sigma + 1), sigma)
                else:
                    radius = max(0, int(gaussian_radius(math.ceil(box_height[person]), math.ceil(box_width[person]),
                                                        min_overlap)))
                    draw_gaussian(heatmap[image_index, 0], row, col, radius)
                index[image_index, person] = row * width + col
            count = len(image_boxes)
            mask[image_index, :count] = True
            size[image_index, :count, 0] = box_width
            size[image_index, :count, 1] = box_height
            emotions[image_index, :count] = labels[image_index]
            vad[image_index, :count] = vads[image_index]
        by_stride[stride] = ResolutionTargets(
            heatmap=torch.from_numpy(heatmap), index=torch.from_numpy(index), mask=torch.from_numpy(mask),
            size=torch.from_numpy(size), emotions=torch.from_numpy(emotions), vad=torch.from_numpy(vad),
        )
    routes = {head: torch.tensor([head in HEAD_ROUTING[m] for m in modes], dtype=torch.bool) for head in HEADS}
    return BENetTargets(by_stride=by_stride, routes=routes, image_label=image_label)
