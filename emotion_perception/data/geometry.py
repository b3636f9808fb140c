"""Box and letterbox geometry shared by training transforms and runtime preprocessing.

Conventions (the same as :mod:`emotion_perception.data.faces`): boxes are ``x1, y1, x2, y2`` in
continuous pixel coordinates, pixel column ``i`` spanning ``[i, i + 1)``; the pixels of a box
are ``image[floor(y1):ceil(y2), floor(x1):ceil(x2)]`` (:func:`box_pixel_bounds`).
Homographies are 3x3 float64 matrices acting on column vectors ``(x, y, 1)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# The ImageNet statistics every network input is normalised with, ``(pixel / 255 - mean) / std``
# in RGB order: the one definition (transforms, face pipeline, model cards all read these).
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
# The mean colour in RGB 0..255 (124, 116, 104): padding and masks filled with it normalise to
# ~0, so the network sees "no signal" there rather than a black or grey object.
IMAGENET_MEAN_RGB: tuple[int, int, int] = (round(255 * IMAGENET_MEAN[0]), round(255 * IMAGENET_MEAN[1]),
                                           round(255 * IMAGENET_MEAN[2]))


@dataclass(frozen=True)
class LetterboxParams:
    """How an image was letterboxed: ``x_out = x_in * scale + pad_x`` (same for y).

    input_width/height: size of the image before letterboxing;
    output_width/height: size of the letterboxed canvas (multiples of the stride).
    """

    scale: float
    pad_x: int
    pad_y: int
    input_width: int
    input_height: int
    output_width: int
    output_height: int

    def matrix(self) -> np.ndarray:
        """3x3 homography from input to output pixels."""
        return np.array(
            [[self.scale, 0.0, self.pad_x], [0.0, self.scale, self.pad_y], [0.0, 0.0, 1.0]], dtype=np.float64
        )


def _round_up(value: int, stride: int) -> int:
    return int(math.ceil(value / stride) * stride)


def letterbox_params(width: int, height: int, size: int | tuple[int, int], stride: int = 32) -> LetterboxParams:
    """Letterbox geometry of a ``width x height`` image fitted into ``size``.

    ``size`` is an int (square ``size x size`` canvas) or ``(width, height)``; canvas sides are
    rounded up to a multiple of ``stride`` (the network's total downsampling). The image keeps
    its aspect ratio, is scaled to fit and is centred; the rest is padding.
    """
    if width <= 0 or height <= 0:
        raise ValueError(f"letterbox: image size must be positive, got {width}x{height}")
    if stride <= 0:
        raise ValueError(f"letterbox: stride must be positive, got {stride}")
    out_w, out_h = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    if out_w <= 0 or out_h <= 0:
        raise ValueError(f"letterbox: size must be positive, got {size}")
    out_w, out_h = _round_up(out_w, stride), _round_up(out_h, stride)
    scale = min(out_w / width, out_h / height)
    new_w = min(out_w, max(1, int(round(width * scale))))
    new_h = min(out_h, max(1, int(round(height * scale))))
    return LetterboxParams(
        scale=float(scale),
        pad_x=(out_w - new_w) // 2,
        pad_y=(out_h - new_h) // 2,
        input_width=int(width),
        input_height=int(height),
        output_width=out_w,
        output_height=out_h,
    )


def letterbox(
    image: np.ndarray,
    size: int | tuple[int, int],
    stride: int = 32,
    pad_value: tuple[int, int, int] = IMAGENET_MEAN_RGB,
) -> tuple[np.ndarray, LetterboxParams]:
    """Resize ``image`` (H, W, C) keeping its aspect ratio and pad it to ``size``; see :func:`letterbox_params`."""
    if image.ndim not in (2, 3) or image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"letterbox: expected a non-empty (H, W[, C]) image, got shape {image.shape}")
    height, width = image.shape[:2]
    params = letterbox_params(width, height, size, stride)
    new_w = min(params.output_width, max(1, int(round(width * params.scale))))
    new_h = min(params.output_height, max(1, int(round(height * params.scale))))
    if (new_w, new_h) != (width, height):
        # Imported here, not at the top: the runtime (predictor, preprocess) imports this module,
        # and a GPU machine with only PyTorch and numpy must still load models without OpenCV
        # (bench gpu-check's model rows); only an actual resize needs it.
        import cv2

        # INTER_AREA averages when shrinking (no aliasing); linear is the better upsampler.
        interpolation = cv2.INTER_AREA if params.scale < 1.0 else cv2.INTER_LINEAR
        resized = cv2.resize(image, (new_w, new_h), interpolation=interpolation)
    else:
        resized = image
    shape = (params.output_height, params.output_width) + image.shape[2:]
    fill = pad_value if image.ndim == 3 else pad_value[0]
    canvas = np.empty(shape, dtype=image.dtype)
    canvas[...] = fill
    canvas[params.pad_y : params.pad_y + new_h, params.pad_x : params.pad_x + new_w] = resized
    return canvas, params


def boxes_to_letterbox(boxes: np.ndarray, params: LetterboxParams) -> np.ndarray:
    """Map (N, 4) boxes from input pixels to letterboxed pixels."""
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    out = boxes * params.scale
    out[:, [0, 2]] += params.pad_x
    out[:, [1, 3]] += params.pad_y
    return out.astype(np.float32)


def boxes_from_letterbox(boxes: np.ndarray, params: LetterboxParams) -> np.ndarray:
    """Map (N, 4) boxes from letterboxed pixels back to input pixels (clipped to the input image)."""
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4).copy()
    boxes[:, [0, 2]] -= params.pad_x
    boxes[:, [1, 3]] -= params.pad_y
    boxes /= params.scale
    return clip_boxes(boxes, params.input_width, params.input_height)


def clip_boxes(boxes: np.ndarray, width: float, height: float) -> np.ndarray:
    """Clip (N, 4) boxes to the image: x against ``width``, y against ``height``."""
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4).copy()
    boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, width)
    boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, height)
    return boxes


def box_areas(boxes: np.ndarray) -> np.ndarray:
    """(N,) areas of (N, 4) boxes; degenerate boxes have area 0."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return (boxes[:, 2] - boxes[:, 0]).clip(min=0) * (boxes[:, 3] - boxes[:, 1]).clip(min=0)


def box_centres(boxes: np.ndarray) -> np.ndarray:
    """(N, 2) centres of (N, 4) boxes."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return np.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2], axis=1)


def box_pixel_bounds(box: np.ndarray, width: int, height: int) -> tuple[int, int, int, int]:
    """Integer pixel bounds (x1, y1, x2, y2), exclusive ends, of the pixels a box touches, clipped.

    The result may be empty (x2 <= x1 or y2 <= y1) for a box outside the image.
    """
    x1 = min(max(math.floor(float(box[0])), 0), width)
    y1 = min(max(math.floor(float(box[1])), 0), height)
    x2 = min(max(math.ceil(float(box[2])), 0), width)
    y2 = min(max(math.ceil(float(box[3])), 0), height)
    return x1, y1, x2, y2


def boxes_mask(boxes: np.ndarray, width: int, height: int) -> np.ndarray:
    """(H, W) bool mask of the pixels touched by any of the boxes."""
    mask = np.zeros((height, width), dtype=bool)
    for box in np.asarray(boxes, dtype=np.float64).reshape(-1, 4):
        x1, y1, x2, y2 = box_pixel_bounds(box, width, height)
        mask[y1:y2, x1:x2] = True
    return mask


def union_coverage(boxes: np.ndarray, width: int, height: int) -> float:
    """Fraction of the image area covered by the union of the boxes (boxes clipped to the image).

    Computed exactly on the grid of the box edges (coordinate compression), so fractional box
    coordinates count fractionally and overlaps count once.
    """
    boxes = clip_boxes(boxes, width, height).astype(np.float64)
    boxes = boxes[box_areas(boxes) > 0]
    if len(boxes) == 0:
        return 0.0
    xs = np.unique(boxes[:, [0, 2]])
    ys = np.unique(boxes[:, [1, 3]])
    cell_w, cell_h = np.diff(xs), np.diff(ys)
    covered = np.zeros((len(ys) - 1, len(xs) - 1), dtype=bool)
    for x1, y1, x2, y2 in boxes:
        i1, i2 = np.searchsorted(xs, [x1, x2])
        j1, j2 = np.searchsorted(ys, [y1, y2])
        covered[j1:j2, i1:i2] = True
    area = float((covered * cell_h[:, None] * cell_w[None, :]).sum())
    return area / float(width * height)


def transform_boxes(boxes: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Axis-aligned boxes enclosing the four corners of each box mapped by a 3x3 homography."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if len(boxes) == 0:
        return np.zeros((0, 4), dtype=np.float32)
    x1, y1, x2, y2 = boxes.T
    corners = np.stack(
        [np.stack([x1, y1], 1), np.stack([x2, y1], 1), np.stack([x2, y2], 1), np.stack([x1, y2], 1)], axis=1
    )  # (N, 4, 2)
    homogeneous = np.concatenate([corners, np.ones(corners.shape[:2] + (1,))], axis=2) @ matrix.T
    mapped = homogeneous[..., :2] / homogeneous[..., 2:3]
    return np.concatenate([mapped.min(axis=1), mapped.max(axis=1)], axis=1).astype(np.float32)


def transform_points(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """(N, 2) points mapped by a 3x3 homography."""
    points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    homogeneous = np.concatenate([points, np.ones((len(points), 1))], axis=1) @ matrix.T
    return homogeneous[:, :2] / homogeneous[:, 2:3]
