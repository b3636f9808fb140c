"""Image -> network input: resize keeping the aspect ratio, pad to the stride, normalise.

The letterbox geometry is :func:`emotion_perception.data.geometry.letterbox_params`, the one
shared with training, and so is the resize: every backend is fed exactly the training
preprocessing (cv2 area resize to uint8, ImageNet-mean padding, then normalisation).

* :func:`preprocess_numpy` normalises with numpy, for ONNX Runtime on CPU;
* :func:`preprocess_torch` uploads the same uint8 canvas and normalises on the model's device,
  for the PyTorch and GPU backends. The two agree to float rounding (1e-6).

Canvas size: with ``input_size`` (H, W) the image is letterboxed into exactly that canvas;
without, the longer side is scaled to the model's training size and each side padded only to
the next multiple of the stride (fewer pixels than a square canvas for 4:3 or 16:9 frames, same
object scale; BENet is fully convolutional).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from emotion_perception.data.geometry import LetterboxParams, letterbox, letterbox_params
from emotion_perception.export.model_card import InputNormalisation, ModelCard


def check_image(image_rgb: Any) -> np.ndarray:
    """``image_rgb`` as an (H, W, 3) uint8 array; TypeError / ValueError saying what is wrong."""
    if not isinstance(image_rgb, np.ndarray):
        raise TypeError(f"image_rgb: expected a numpy array (H, W, 3) uint8 RGB, got {type(image_rgb).__name__}")
    if image_rgb.dtype != np.uint8:
        raise TypeError(f"image_rgb: expected dtype uint8 (RGB 0..255), got {image_rgb.dtype}")
    if image_rgb.ndim != 3 or image_rgb.shape[2] != 3 or image_rgb.shape[0] == 0 or image_rgb.shape[1] == 0:
        raise ValueError(f"image_rgb: expected shape (H, W, 3) RGB, got {image_rgb.shape}")
    return image_rgb


def canvas_geometry(
    image_height: int, image_width: int, card: ModelCard, input_size: Sequence[int] | None = None
) -> LetterboxParams:
    """Letterbox parameters of an image for the model described by ``card`` (see module docstring)."""
    stride = card.stride
    if input_size is not None:
        height, width = (int(s) for s in input_size)
        if height <= 0 or width <= 0 or height % stride or width % stride:
            raise ValueError(f"input_size must be (H, W) positive multiples of {stride}, got {tuple(input_size)}")
        if not card.dynamic_size and (height, width) != tuple(card.input_size):
            raise ValueError(f"this model takes a fixed {tuple(card.input_size)} input, "
                             f"got input_size {tuple(input_size)}")
        return letterbox_params(image_width, image_height, (width, height), stride)
    if not card.dynamic_size:
        height, width = card.input_size
        return letterbox_params(image_width, image_height, (width, height), stride)
    longest = max(card.input_size)
    scale = longest / max(image_height, image_width)
    # At least two strides per side keeps every resolution of the network non-empty.
    width = max(2 * stride, int(round(image_width * scale)))
    height = max(2 * stride, int(round(image_height * scale)))
    return letterbox_params(image_width, image_height, (width, height), stride)


def resized_size(params: LetterboxParams) -> tuple[int, int]:
    """(width, height) of the image inside the canvas (as data.geometry.letterbox computes it)."""
    width = min(params.output_width, max(1, int(round(params.input_width * params.scale))))
    height = min(params.output_height, max(1, int(round(params.input_height * params.scale))))
    return width, height


def letterbox_row(params: LetterboxParams) -> np.ndarray:
    """(1, 3) float32 ``(scale, pad_x, pad_y)`` as the decoding stage takes it."""
    return np.array([[params.scale, params.pad_x, params.pad_y]], dtype=np.float32)


def normalise_numpy(images_uint8: np.ndarray, normalisation: InputNormalisation) -> np.ndarray:
    """(H, W, 3) or (N, H, W, 3) uint8 RGB -> (N, 3, H, W) float32 normalised."""
    images = images_uint8[None] if images_uint8.ndim == 3 else images_uint8
    mean = np.asarray(normalisation.mean, np.float32)
    std = np.asarray(normalisation.std, np.float32)
    scaled = (images.astype(np.float32) * np.float32(normalisation.pixel_scale) - mean) / std
    return np.ascontiguousarray(scaled.transpose(0, 3, 1, 2))


def preprocess_numpy(image_rgb: np.ndarray, params: LetterboxParams, normalisation: InputNormalisation) -> np.ndarray:
    """(1, 3, H, W) float32 network input, with cv2 resizing (see module docstring)."""
    # stride 1: the canvas size is already final (a multiple of the model's stride).
    canvas, used = letterbox(check_image(image_rgb), (params.output_width, params.output_height), stride=1)
    if used != params:
        raise AssertionError(f"letterbox geometry mismatch: {used} != {params}")
    return normalise_numpy(canvas, normalisation)


def preprocess_torch(
    image_rgb: np.ndarray, params: LetterboxParams, normalisation: InputNormalisation, device: Any
) -> Any:
    """(1, 3, H, W) float32 network input on ``device``: the training letterbox (cv2 area
    resize, uint8) on the host, the normalisation on the device.

    The resize stays the training one on purpose: a torch (antialiased bilinear) resize on the
    device fed a 320x240 image up to 26 grey levels away from what ONNX Runtime and training
    see, and moved the published scores by 2.8e-3. Uploading the uint8 canvas costs a quarter of
    uploading float32, and the cv2 resize of a camera frame about a millisecond.
    """
    import torch

    canvas, used = letterbox(check_image(image_rgb), (params.output_width, params.output_height), stride=1)
    if used != params:
        raise AssertionError(f"letterbox geometry mismatch: {used} != {params}")
    x = torch.from_numpy(np.ascontiguousarray(canvas)).to(device, non_blocking=True)
    x = x.permute(2, 0, 1).unsqueeze(0).float()
    mean = torch.tensor(normalisation.mean, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(normalisation.std, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
    return (x * float(np.float32(normalisation.pixel_scale)) - mean) / std


# --------------------------------------------------------------------------- face crops (expression)


def pad_to_square(crop: np.ndarray) -> np.ndarray:
    """Zero-pad the shorter side of an (H, W, C) crop to a square, as face-api does: of the
    ``d = |H - W|`` padding pixels, ``round(d / 2)`` (half up) go after the image, the rest before."""
    height, width = crop.shape[:2]
    if height == width:
        return crop
    difference = abs(height - width)
    after = int(math.floor(difference / 2 + 0.5))
    before = difference - after
    pads = ((0, 0), (before, after), (0, 0)) if height > width else ((before, after), (0, 0), (0, 0))
    return np.pad(crop, pads + ((0, 0),) * (crop.ndim - 3))


def resize_bilinear_legacy(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """TensorFlow's ``resize_bilinear(align_corners=False, half_pixel_centers=False)`` in float:
    source coordinate = destination index x (input / output), neighbours floor and
    min(ceil, size - 1). This is what face-api feeds its networks; cv2's bilinear samples pixel
    centres instead and would shift the crop by up to half a pixel."""
    src = image.astype(np.float64)
    in_h, in_w = src.shape[:2]

    def axis(out_size: int, in_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        position = np.arange(out_size, dtype=np.float64) * (in_size / out_size)
        low = np.floor(position).astype(np.int64)
        high = np.minimum(np.ceil(position).astype(np.int64), in_size - 1)
        return low, high, position - low

    top, bottom, row_frac = axis(height, in_h)
    left, right, col_frac = axis(width, in_w)
    col_frac = col_frac[None, :, None]
    upper = src[top][:, left] + (src[top][:, right] - src[top][:, left]) * col_frac
    lower = src[bottom][:, left] + (src[bottom][:, right] - src[bottom][:, left]) * col_frac
    return (upper + (lower - upper) * row_frac[:, None, None]).astype(np.float32)


def face_crops(image_rgb: np.ndarray, boxes: np.ndarray, size: int) -> np.ndarray:
    """(K, size, size, 3) float32 face inputs: each box's pixels (floor / ceil of its
    corners, clipped), zero-padded to a square, resized with :func:`resize_bilinear_legacy`."""
    image_rgb = check_image(image_rgb)
    height, width = image_rgb.shape[:2]
    crops = np.zeros((len(boxes), size, size, 3), dtype=np.float32)
    for index, box in enumerate(np.asarray(boxes, dtype=np.float64).reshape(-1, 4)):
        x1, y1 = max(int(math.floor(box[0])), 0), max(int(math.floor(box[1])), 0)
        x2, y2 = min(int(math.ceil(box[2])), width), min(int(math.ceil(box[3])), height)
        if x2 <= x1 or y2 <= y1:
            continue  # an empty box: a black crop (the detector never returns one)
        crops[index] = resize_bilinear_legacy(pad_to_square(image_rgb[y1:y2, x1:x2]), size, size)
    return crops
