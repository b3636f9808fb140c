"""BENet's training protocol: one pre-transformation per image, then box-consistent augmentations.

Pre-transformations (BENet, Cladiere et al. 2023), drawn per image with ``mode_probs``:

=================== =================================================================== ==================
mode                what it does                                                         allowed when
=================== =================================================================== ==================
``det``             raw image, all boxes (detection + bottom-up emotions)                always
``mask_subjects``   masks 1..N-1 annotated people (at random), the rest stay targets     N >= 2
``extract_subject`` crops one person whose box contains no other person's centre         such a person
                    (person-centric head; ``image_label`` = that person's labels)
``mask_all``        masks every annotated person (background head; ``image_label`` =    union of boxes
                    element-wise max of everyone's labels, ``boxes`` empty)             <= 40% of image
=================== =================================================================== ==================

A mode that is not allowed gives its probability to the allowed ones in proportion to theirs
(if none of the configured modes is allowed, ``det``). Masks fill the pixels a box touches with
the ImageNet mean colour (zero after normalisation).

Then, in one warp of the letterboxed canvas: horizontal flip, rotation/scale/translation and a
perspective jitter; boxes are the axis-aligned hull of their warped corners, clipped, and people
less than ``min_visible_fraction`` visible are dropped. Photometric augmentations (colour jitter,
blur, gaussian noise) follow on the ``size x size`` result. Everything is drawn from the numpy
Generator passed in, so a sample is a pure function of (image, annotations, generator state).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace

import cv2
import numpy as np

from emotion_perception.data.categories import NUM_EMOTIC
from emotion_perception.data.geometry import (
    IMAGENET_MEAN,
    IMAGENET_MEAN_RGB,
    IMAGENET_STD,
    LetterboxParams,
    box_areas,
    box_centres,
    box_pixel_bounds,
    boxes_to_letterbox,
    clip_boxes,
    letterbox,
    transform_boxes,
)

MODES: tuple[str, ...] = ("det", "mask_subjects", "extract_subject", "mask_all")


@dataclass
class BENetSample:
    """One network input with its targets (see docs/ARCHITECTURE.md, "BENet training sample").

    ``letterbox`` is set by the eval transform only: it maps boxes back to the original image.
    """

    image: np.ndarray
    boxes: np.ndarray
    labels: np.ndarray
    vad: np.ndarray
    mode: str
    image_label: np.ndarray
    letterbox: LetterboxParams | None = None


@dataclass(frozen=True)
class BENetTransformConfig:
    """Training transform of BENet; presets in ``TRANSFORM_PRESETS``."""

    size: int = 256  # square network input side (a multiple of stride)
    stride: int = 32  # network downsampling; the input side is rounded up to a multiple
    num_categories: int = NUM_EMOTIC
    # Probabilities of det, mask_subjects, extract_subject, mask_all (normalised on use).
    mode_probs: tuple[float, float, float, float] = (0.25, 0.25, 0.25, 0.25)
    # Pre-transformation rules of the public code (lib/dataset/transforms/transforms.py):
    mask_all_max_coverage: float = 0.4  # mask_all only when the boxes' summed area is at most this share of the image
    # extract_subject: others may overlap the subject's box by at most this share (summed)
    extract_max_overlap: float = 0.4
    mask_subject_prob: float = 0.5  # mask_subjects: each person but one is masked with this probability ...
    mask_min_visible: float = 0.6  # ... unless a kept person's box would keep less than this share visible
    mask_fill: tuple[int, int, int] = (0, 0, 0)  # masked pixels: black, as the public code
    # geometry (one homography on the letterboxed canvas)
    flip_prob: float = 0.5
    warp_prob: float = 0.8  # probability of the rotation/scale/translation/perspective warp
    scale_range: tuple[float, float] = (0.75, 1.25)
    rotation_deg: float = 10.0  # uniform in +-rotation_deg
    translate: float = 0.1  # uniform shift in +-translate * size per axis
    perspective: float = 0.04  # canvas corners move up to this fraction of size
    min_visible_fraction: float = 0.35  # drop people whose box keeps less of its area on the canvas
    min_box_size: float = 2.0  # ... or whose visible box is thinner than this (pixels)
    # photometric (on the size x size result)
    jitter_prob: float = 0.8
    brightness: float = 0.25  # value scaled by 1 +- brightness
    contrast: float = 0.25
    saturation: float = 0.3
    hue_deg: float = 8.0
    blur_prob: float = 0.2
    blur_sigma: tuple[float, float] = (0.4, 1.2)
    noise_prob: float = 0.3
    noise_std: tuple[float, float] = (2.0, 8.0)  # gaussian noise std in 0..255 units


TRANSFORM_PRESETS: dict[str, BENetTransformConfig] = {
    # The paper's protocol: all four pre-transformations, full augmentation.
    "benet": BENetTransformConfig(),
    # Lighter geometry for small/fast runs (synthetic data, CPU smoke training).
    "benet_light": BENetTransformConfig(rotation_deg=5.0, scale_range=(0.85, 1.15), translate=0.05,
                                        perspective=0.02, blur_prob=0.1, noise_prob=0.1),
    # Pre-transformations only (no augmentation): for debugging targets and for tests.
    "modes_only": BENetTransformConfig(flip_prob=0.0, warp_prob=0.0, jitter_prob=0.0, blur_prob=0.0,
                                       noise_prob=0.0),
    # Detection only, no augmentation (eval-like inputs through the training path).
    "det_only": BENetTransformConfig(mode_probs=(1.0, 0.0, 0.0, 0.0), flip_prob=0.0, warp_prob=0.0,
                                     jitter_prob=0.0, blur_prob=0.0, noise_prob=0.0),
}


def transform_preset(name: str, **overrides) -> BENetTransformConfig:
    """A named preset with field overrides (presets themselves are never mutated)."""
    if name not in TRANSFORM_PRESETS:
        raise KeyError(f"unknown BENet transform preset {name!r}; known: {sorted(TRANSFORM_PRESETS)}")
    known = {f.name for f in fields(BENetTransformConfig)}
    unknown = set(overrides) - known
    if unknown:
        raise TypeError(f"unknown BENetTransformConfig fields: {sorted(unknown)}")
    return replace(TRANSFORM_PRESETS[name], **overrides)


# --------------------------------------------------------------------------- pre-transformations


def _areas(boxes: np.ndarray) -> np.ndarray:
    return np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)


def _intersections(boxes: np.ndarray) -> np.ndarray:
    """(N, N) intersection areas of every pair of boxes."""
    x1 = np.maximum(boxes[:, None, 0], boxes[None, :, 0])
    y1 = np.maximum(boxes[:, None, 1], boxes[None, :, 1])
    x2 = np.minimum(boxes[:, None, 2], boxes[None, :, 2])
    y2 = np.minimum(boxes[:, None, 3], boxes[None, :, 3])
    return np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)


def extractable_subjects(boxes: np.ndarray, max_overlap: float = 0.4) -> np.ndarray:
    """Indices of people whose box the others overlap by at most ``max_overlap`` of its area in
    total (sum over the others of intersection / own area), the public ExtractSubject rule."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    areas = _areas(boxes)
    inter = _intersections(boxes)
    np.fill_diagonal(inter, 0.0)
    share = inter.sum(axis=1) / np.maximum(areas, 1e-9)
    big_enough = ((boxes[:, 2] - boxes[:, 0]) >= 2) & ((boxes[:, 3] - boxes[:, 1]) >= 2)
    return np.flatnonzero((share <= max_overlap) & big_enough)


def allowed_modes(boxes: np.ndarray, width: int, height: int, config: BENetTransformConfig) -> np.ndarray:
    """(4,) bool over ``MODES``: which pre-transformations this image admits (public rules:
    mask_subjects with any person, masking nobody when alone; extract_subject when a subject is
    overlapped by at most ``extract_max_overlap``; mask_all when the boxes' summed area is at most
    ``mask_all_max_coverage`` of the image)."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    n = len(boxes)
    summed = float(_areas(boxes).sum()) / max(width * height, 1)
    return np.array([
        True,
        n >= 1,
        n >= 1 and len(extractable_subjects(boxes, config.extract_max_overlap)) > 0,
        n >= 1 and summed <= config.mask_all_max_coverage,
    ])


def mode_probabilities(boxes: np.ndarray, width: int, height: int, config: BENetTransformConfig) -> np.ndarray:
    """(4,) probabilities of ``MODES`` for this image: a disallowed mode's probability is split
    equally over the allowed ones that have a probability (as the public code)."""
    probs = np.asarray(config.mode_probs, dtype=np.float64)
    if probs.shape != (4,) or np.any(probs < 0):
        raise ValueError(f"mode_probs must be 4 non-negative numbers, got {config.mode_probs}")
    allowed = allowed_modes(boxes, width, height, config)
    receivers = allowed & (probs > 0)
    if not receivers.any():
        return np.array([1.0, 0.0, 0.0, 0.0])
    freed = probs[~allowed].sum()
    out = np.where(receivers, probs + freed / receivers.sum(), 0.0)
    return out / out.sum()


def choose_mode(boxes: np.ndarray, width: int, height: int, config: BENetTransformConfig,
                rng: np.random.Generator) -> str:
    return MODES[int(rng.choice(len(MODES), p=mode_probabilities(boxes, width, height, config)))]


def random_masked_subjects(boxes: np.ndarray, rng: np.random.Generator, mask_prob: float = 0.5,
                           min_visible: float = 0.6) -> np.ndarray:
    """(N,) bool: who RandomMaskSubject masks, by the public rule.

    In a random order the first person is kept; each other one is masked with probability
    ``mask_prob`` unless the mask would hide a kept person's centre line (its box's x-range
    holds a kept centre's x, or its y-range a kept centre's y, or a kept box's ranges hold its
    centre) or leave a kept box less than ``min_visible`` of its area uncovered by masks. People
    not masked stay targets.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    n = len(boxes)
    masked = np.zeros(n, dtype=bool)
    if n <= 1:
        return masked
    centres = box_centres(boxes)
    areas = _areas(boxes)
    inter = _intersections(boxes)
    order = rng.permutation(n)
    kept = [int(order[0])]
    for person in (int(p) for p in order[1:]):
        if rng.random() >= mask_prob:
            kept.append(person)
            continue
        box, centre = boxes[person], centres[person]
        crosses = any(
            box[0] <= centres[k, 0] <= box[2] or box[1] <= centres[k, 1] <= box[3]
            or boxes[k, 0] <= centre[0] <= boxes[k, 2] or boxes[k, 1] <= centre[1] <= boxes[k, 3]
            for k in kept)
        # Covered share of each kept box by all masks so far plus this one (summed, as the public code).
        trial = masked.copy()
        trial[person] = True
        covered = inter[kept][:, trial].sum(axis=1) / np.maximum(areas[kept], 1e-9)
        if crosses or (1.0 - covered < min_visible).any():
            kept.append(person)
        else:
            masked[person] = True
    return masked


def mask_boxes(image: np.ndarray, boxes: np.ndarray, fill: tuple[int, int, int] = (0, 0, 0)) -> np.ndarray:
    """Copy of ``image`` with every pixel touched by one of ``boxes`` set to ``fill``."""
    out = image.copy()
    height, width = image.shape[:2]
    for box in np.asarray(boxes, dtype=np.float64).reshape(-1, 4):
        x1, y1, x2, y2 = box_pixel_bounds(box, width, height)
        out[y1:y2, x1:x2] = fill
    return out


@dataclass
class _Targets:
    image: np.ndarray
    boxes: np.ndarray
    labels: np.ndarray
    vad: np.ndarray
    image_label: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.float32))


def apply_pre_transform(mode: str, image: np.ndarray, boxes: np.ndarray, labels: np.ndarray, vad: np.ndarray,
                        rng: np.random.Generator, num_categories: int,
                        config: BENetTransformConfig | None = None) -> _Targets:
    """Apply one of ``MODES`` (assumed allowed) and return the image with the targets it keeps."""
    config = config or BENetTransformConfig()
    zeros = np.zeros(num_categories, dtype=np.float32)
    if mode == "det":
        return _Targets(image, boxes, labels, vad, zeros)
    if mode == "mask_subjects":
        masked = random_masked_subjects(boxes, rng, config.mask_subject_prob, config.mask_min_visible)
        keep = ~masked
        return _Targets(mask_boxes(image, boxes[masked], config.mask_fill), boxes[keep], labels[keep], vad[keep], zeros)
    if mode == "extract_subject":
        chosen = int(rng.choice(extractable_subjects(boxes, config.extract_max_overlap)))
        height, width = image.shape[:2]
        x1, y1, x2, y2 = box_pixel_bounds(boxes[chosen], width, height)
        crop = image[y1:y2, x1:x2].copy()
        box = boxes[chosen : chosen + 1] - np.array([x1, y1, x1, y1], dtype=np.float32)
        return _Targets(crop, clip_boxes(box, x2 - x1, y2 - y1), labels[chosen : chosen + 1],
                        vad[chosen : chosen + 1], labels[chosen].astype(np.float32).copy())
    if mode == "mask_all":
        return _Targets(mask_boxes(image, boxes, config.mask_fill), boxes[:0], labels[:0], vad[:0],
                        labels.max(axis=0).astype(np.float32))
    raise ValueError(f"unknown mode {mode!r}; expected one of {MODES}")


# --------------------------------------------------------------------------- augmentations


def random_homography(rng: np.random.Generator, config: BENetTransformConfig, size: int) -> np.ndarray:
    """3x3 canvas-to-canvas warp: flip, then rotation/scale/translation about the centre, then perspective."""
    matrix = np.eye(3)
    if rng.random() < config.flip_prob:
        matrix = np.array([[-1.0, 0.0, size], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]) @ matrix
    if rng.random() < config.warp_prob:
        angle = math.radians(rng.uniform(-config.rotation_deg, config.rotation_deg))
        scale = rng.uniform(*config.scale_range)
        shift = rng.uniform(-config.translate, config.translate, size=2) * size
        centre = size / 2.0
        cos, sin = math.cos(angle) * scale, math.sin(angle) * scale
        affine = np.array([
            [cos, -sin, centre - cos * centre + sin * centre + shift[0]],
            [sin, cos, centre - sin * centre - cos * centre + shift[1]],
            [0.0, 0.0, 1.0],
        ])
        matrix = affine @ matrix
        if config.perspective > 0:
            corners = np.array([[0, 0], [size, 0], [size, size], [0, size]], dtype=np.float32)
            moved = (corners
                     + rng.uniform(-config.perspective, config.perspective, size=(4, 2)).astype(np.float32) * size)
            matrix = cv2.getPerspectiveTransform(corners, moved).astype(np.float64) @ matrix
    return matrix


def _pixel_centre_matrix(matrix: np.ndarray) -> np.ndarray:
    """``matrix`` (continuous coordinates, pixel i spans [i, i+1], as boxes use) in OpenCV's
    convention, where pixel i's centre is at i: without the half-pixel conjugation a flip
    moves the image one pixel away from its boxes."""
    to_centres = np.array([[1.0, 0.0, -0.5], [0.0, 1.0, -0.5], [0.0, 0.0, 1.0]])
    return to_centres @ matrix @ np.linalg.inv(to_centres)


def photometric(image: np.ndarray, rng: np.random.Generator, config: BENetTransformConfig) -> np.ndarray:
    """Colour jitter, blur and gaussian noise (each with its probability) on a uint8 RGB image."""
    out = image
    if rng.random() < config.jitter_prob:
        hsv = cv2.cvtColor(out, cv2.COLOR_RGB2HSV).astype(np.float32)
        hsv[..., 0] = (hsv[..., 0] + rng.uniform(-config.hue_deg, config.hue_deg) / 2.0) % 180.0  # OpenCV hue is 0..179
        hsv[..., 1] *= rng.uniform(1 - config.saturation, 1 + config.saturation)
        hsv[..., 2] *= rng.uniform(1 - config.brightness, 1 + config.brightness)
        rgb = cv2.cvtColor(np.clip(hsv, 0, [179, 255, 255]).astype(np.uint8), cv2.COLOR_HSV2RGB).astype(np.float32)
        contrast = rng.uniform(1 - config.contrast, 1 + config.contrast)
        rgb = (rgb - rgb.mean()) * contrast + rgb.mean()
        out = np.clip(rgb, 0, 255).astype(np.uint8)
    if rng.random() < config.blur_prob:
        out = cv2.GaussianBlur(out, (0, 0), rng.uniform(*config.blur_sigma))
    if rng.random() < config.noise_prob:
        noise = rng.normal(0.0, rng.uniform(*config.noise_std), size=out.shape)
        out = np.clip(out.astype(np.float32) + noise, 0, 255).astype(np.uint8)
    return out


def _visible(warped: np.ndarray, size: int, config: BENetTransformConfig) -> tuple[np.ndarray, np.ndarray]:
    """Clipped boxes and the mask of those visible enough to stay targets."""
    clipped = clip_boxes(warped, size, size)
    full = box_areas(warped)
    fraction = np.where(full > 0, box_areas(clipped) / np.maximum(full, 1e-9), 0.0)
    sides_ok = ((clipped[:, 2] - clipped[:, 0]) >= config.min_box_size) & (
        (clipped[:, 3] - clipped[:, 1]) >= config.min_box_size)
    return clipped, (fraction >= config.min_visible_fraction) & sides_ok


def _check_inputs(image: np.ndarray, boxes: np.ndarray, labels: np.ndarray, vad: np.ndarray,
                  num_categories: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"BENet transform: expected an (H, W, 3) uint8 RGB image, got {image.dtype} {image.shape}")
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    n = len(boxes)
    labels = np.asarray(labels, dtype=np.float32).reshape(n, num_categories) if n else np.zeros(
        (0, num_categories), dtype=np.float32)
    vad = np.asarray(vad, dtype=np.float32).reshape(n, 3) if n else np.zeros((0, 3), dtype=np.float32)
    return boxes, labels, vad


class BENetTransform:
    """The training transform: ``transform(image, boxes, labels, vad, rng) -> BENetSample``."""

    def __init__(self, config: BENetTransformConfig | None = None) -> None:
        self.config = config if config is not None else BENetTransformConfig()
        if self.config.size % self.config.stride:
            raise ValueError(f"BENetTransformConfig.size {self.config.size} is not a multiple of stride "
                             f"{self.config.stride}")

    def __call__(self, image: np.ndarray, boxes: np.ndarray, labels: np.ndarray, vad: np.ndarray,
                 rng: np.random.Generator) -> BENetSample:
        config = self.config
        boxes, labels, vad = _check_inputs(image, boxes, labels, vad, config.num_categories)
        height, width = image.shape[:2]
        boxes = clip_boxes(boxes, width, height)
        mode = choose_mode(boxes, width, height, config, rng)
        targets = apply_pre_transform(mode, image, boxes, labels, vad, rng, config.num_categories, config)

        canvas, params = letterbox(targets.image, config.size, config.stride)
        size = params.output_width
        canvas_boxes = boxes_to_letterbox(targets.boxes, params)
        matrix = random_homography(rng, config, size)
        if not np.allclose(matrix, np.eye(3)):
            canvas = cv2.warpPerspective(canvas, _pixel_centre_matrix(matrix), (size, size), flags=cv2.INTER_LINEAR,
                                         borderMode=cv2.BORDER_CONSTANT, borderValue=IMAGENET_MEAN_RGB)
            canvas_boxes = transform_boxes(canvas_boxes, matrix)
        clipped, keep = _visible(canvas_boxes, size, config)
        if mode == "extract_subject":
            keep[:] = True  # the crop is the subject; its label is image_label whatever the warp did
        canvas = photometric(canvas, rng, config)
        return BENetSample(
            image=np.ascontiguousarray(canvas),
            boxes=clipped[keep].astype(np.float32),
            labels=targets.labels[keep].astype(np.float32),
            vad=targets.vad[keep].astype(np.float32),
            mode=mode,
            image_label=targets.image_label.astype(np.float32),
        )


class BENetEvalTransform:
    """Evaluation: letterbox only, ``mode="det"``; ``sample.letterbox`` maps boxes back."""

    def __init__(self, size: int = 256, stride: int = 32, num_categories: int = NUM_EMOTIC) -> None:
        self.size = size
        self.stride = stride
        self.num_categories = num_categories

    def __call__(self, image: np.ndarray, boxes: np.ndarray, labels: np.ndarray, vad: np.ndarray,
                 rng: np.random.Generator | None = None) -> BENetSample:
        boxes, labels, vad = _check_inputs(image, boxes, labels, vad, self.num_categories)
        height, width = image.shape[:2]
        canvas, params = letterbox(image, self.size, self.stride)
        return BENetSample(
            image=canvas,
            boxes=boxes_to_letterbox(clip_boxes(boxes, width, height), params),
            labels=labels,
            vad=vad,
            mode="det",
            image_label=np.zeros(self.num_categories, dtype=np.float32),
            letterbox=params,
        )


def normalize_image(images: np.ndarray) -> np.ndarray:
    """uint8 (..., H, W, 3) RGB -> float32 (..., 3, H, W) normalised with ImageNet mean/std."""
    mean = np.asarray(IMAGENET_MEAN, dtype=np.float32) * 255.0
    std = np.asarray(IMAGENET_STD, dtype=np.float32) * 255.0
    out = (images.astype(np.float32) - mean) / std
    return np.ascontiguousarray(np.moveaxis(out, -1, -3))
