"""Face pipeline of CAHFW-Net: face detection, face crop and masked context, dataset.

This module is the one place that turns an RGB frame and a face box into the two network
inputs, for training (:class:`CAHFWDataset`), evaluation and the ROS node
(:func:`faces_and_contexts` + :func:`normalize_nchw`), so the three never drift apart.

Conventions:

* Images are (H, W, 3) uint8 RGB, C-contiguous or not.
* Boxes are x1, y1, x2, y2 in continuous pixel coordinates (pixel column i spans [i, i + 1)),
  so the pixels of a box are ``image[floor(y1):ceil(y2), floor(x1):ceil(x2)]``
  (:func:`box_to_pixels`). dlib's inclusive rectangles (left, top, right, bottom) become
  ``[left, top, right + 1, bottom + 1]``.
* The face input is the box crop (optionally enlarged by ``face_scale`` around its centre,
  clipped to the image) resized to ``size x size``; the context input is the whole frame with
  the pixels of the face box (never enlarged) set to zero, resized to ``size x size`` (the
  aspect ratio is not kept, as in the paper, which feeds 224x224 for both).
* Several faces in one frame give one sample per face; each sample's context zeroes only its
  own face, the other people being part of its context.
* A record without a face box (the CAER-S reader's no-face policy keeps ``face_box=None``) uses
  :func:`fallback_face_box`: a square of side 0.4 min(H, W), horizontally centred, its centre at
  35% of the height. TV frames (CAER-S) usually frame the speaker there, and the context still
  loses the most likely face region instead of keeping a face the network should not see.
"""

from __future__ import annotations

import importlib
import importlib.util
import math
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from emotion_perception.data.geometry import IMAGENET_MEAN, IMAGENET_STD
from emotion_perception.data.imageio import read_rgb
from emotion_perception.data.records import AnnotationError, FaceRecord

FACE_METHODS: tuple[str, ...] = ("cnn", "hog")
CNN_MODEL_FILE = "mmod_human_face_detector.dat"


# --------------------------------------------------------------------------- checks


def check_image(image_rgb: np.ndarray, name: str = "image_rgb") -> np.ndarray:
    """Return ``image_rgb`` if it is an (H, W, 3) uint8 array; a clear TypeError/ValueError otherwise."""
    if not isinstance(image_rgb, np.ndarray):
        raise TypeError(f"{name}: expected a numpy array, got {type(image_rgb).__name__}")
    if image_rgb.dtype != np.uint8:
        raise TypeError(f"{name}: expected dtype uint8 (RGB 0..255), got {image_rgb.dtype}")
    if image_rgb.ndim != 3 or image_rgb.shape[2] != 3:
        raise ValueError(f"{name}: expected shape (H, W, 3) RGB, got {image_rgb.shape}")
    if image_rgb.shape[0] == 0 or image_rgb.shape[1] == 0:
        raise ValueError(f"{name}: empty image of shape {image_rgb.shape}")
    return image_rgb


def box_to_pixels(box: Sequence[float] | np.ndarray, width: int, height: int) -> tuple[int, int, int, int]:
    """Integer pixel bounds (x1, y1, x2, y2), exclusive ends, of a box clipped to the image.

    Raises ValueError when the box is not 4 finite numbers or covers no pixel of the image.
    """
    values = np.asarray(box, dtype=np.float64).reshape(-1)
    if values.shape != (4,) or not np.all(np.isfinite(values)):
        raise ValueError(f"face box: expected 4 finite numbers x1, y1, x2, y2, got {np.asarray(box).tolist()}")
    x1 = min(max(math.floor(values[0]), 0), width)
    y1 = min(max(math.floor(values[1]), 0), height)
    x2 = min(max(math.ceil(values[2]), 0), width)
    y2 = min(max(math.ceil(values[3]), 0), height)
    if x2 <= x1 or y2 <= y1:
        raise ValueError(
            f"face box {values.tolist()} covers no pixel of the {width}x{height} image"
        )
    return x1, y1, x2, y2


def enlarge_box(box: Sequence[float] | np.ndarray, scale: float, width: int, height: int) -> np.ndarray:
    """The box scaled by ``scale`` about its centre, clipped to the image, (4,) float32."""
    if not scale > 0:
        raise ValueError(f"face_scale: must be > 0, got {scale}")
    x1, y1, x2, y2 = np.asarray(box, dtype=np.float64).reshape(4)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    half_w, half_h = (x2 - x1) * scale / 2, (y2 - y1) * scale / 2
    return np.array(
        [max(cx - half_w, 0.0), max(cy - half_h, 0.0), min(cx + half_w, width), min(cy + half_h, height)],
        dtype=np.float32,
    )


def fallback_face_box(width: int, height: int) -> np.ndarray:
    """Box used when no face was found: centred square, side 0.4 min(W, H), centre at 0.35 H."""
    side = 0.4 * min(width, height)
    cx, cy = width / 2, 0.35 * height
    return np.array([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2], dtype=np.float32)


# --------------------------------------------------------------------------- detection


def cnn_model_path() -> Path:
    """Path of dlib's MMOD CNN face detector shipped by the ``face_recognition_models`` package.

    The package is located without being imported: its ``__init__`` imports ``pkg_resources``,
    which new Python installations no longer have.
    """
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            "the CNN face detector needs the 'face_recognition_models' package (extra 'faces' of "
            "emotion_perception); install it or use FaceDetector(method='hog')"
        )
    for folder in spec.submodule_search_locations:
        path = Path(folder) / "models" / CNN_MODEL_FILE
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"{CNN_MODEL_FILE}: dlib CNN face model not found under {list(spec.submodule_search_locations)}"
    )


def _import_dlib():
    try:
        return importlib.import_module("dlib")
    except ImportError as err:
        raise ImportError(
            "face detection needs dlib (pip package 'dlib-bin', extra 'faces' of emotion_perception)"
        ) from err


class FaceDetector:
    """dlib face detector: the MMOD CNN (accurate, slow on CPU) or HOG + linear SVM (fast).

    ``upsample`` is how many times dlib doubles the image before detecting (each doubling finds
    faces half as large and costs about 4x). ``min_score`` drops weaker detections (dlib's
    default operating point is 0 for both detectors).
    """

    def __init__(self, method: str = "cnn", upsample: int = 1, min_score: float = 0.0) -> None:
        if method not in FACE_METHODS:
            raise ValueError(f"FaceDetector.method: {method!r} is not one of {FACE_METHODS}")
        if not isinstance(upsample, int) or upsample < 0:
            raise ValueError(f"FaceDetector.upsample: expected an integer >= 0, got {upsample!r}")
        self.method = method
        self.upsample = upsample
        self.min_score = float(min_score)
        dlib = _import_dlib()
        if method == "cnn":
            self._detector = dlib.cnn_face_detection_model_v1(str(cnn_model_path()))
        else:
            self._detector = dlib.get_frontal_face_detector()

    def detect(self, image_rgb: np.ndarray) -> np.ndarray:
        """(K, 5) float32 [x1, y1, x2, y2, score] clipped to the image, highest score first."""
        image_rgb = np.ascontiguousarray(check_image(image_rgb))
        height, width = image_rgb.shape[:2]
        if self.method == "cnn":
            found = self._detector(image_rgb, self.upsample)
            rows = [(d.rect.left(), d.rect.top(), d.rect.right(), d.rect.bottom(), d.confidence) for d in found]
        else:
            rects, scores, _ = self._detector.run(image_rgb, self.upsample, self.min_score)
            rows = [(r.left(), r.top(), r.right(), r.bottom(), s) for r, s in zip(rects, scores)]
        if not rows:
            return np.zeros((0, 5), dtype=np.float32)
        boxes = np.array(rows, dtype=np.float64)
        boxes[:, 2:4] += 1.0  # dlib's right/bottom are inclusive pixel indices
        boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, width)
        boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, height)
        keep = (boxes[:, 4] >= self.min_score) & (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        boxes = boxes[keep]
        return boxes[np.argsort(-boxes[:, 4], kind="stable")].astype(np.float32)


# --------------------------------------------------------------------------- face and context


def _resize(image: np.ndarray, size: int) -> np.ndarray:
    # Area averaging when shrinking avoids aliasing; bilinear when enlarging small faces.
    shrinking = image.shape[0] * image.shape[1] > size * size
    return cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)


def mask_face(image_rgb: np.ndarray, box: Sequence[float] | np.ndarray) -> np.ndarray:
    """A copy of the image with the pixels of the face box (see :func:`box_to_pixels`) set to 0."""
    image_rgb = check_image(image_rgb)
    x1, y1, x2, y2 = box_to_pixels(box, image_rgb.shape[1], image_rgb.shape[0])
    masked = image_rgb.copy()
    masked[y1:y2, x1:x2] = 0
    return masked


def face_and_context(
    image_rgb: np.ndarray, box: Sequence[float] | np.ndarray, size: int = 224, face_scale: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """CAHFW-Net inputs of one face: (face (size, size, 3) uint8, context (size, size, 3) uint8).

    face: the box enlarged by ``face_scale`` about its centre, clipped, cropped and resized.
    context: the whole image with the (unenlarged) face box zeroed, resized.
    """
    image_rgb = check_image(image_rgb)
    if not isinstance(size, int) or size < 1:
        raise ValueError(f"size: expected a positive integer, got {size!r}")
    height, width = image_rgb.shape[:2]
    box_to_pixels(box, width, height)  # validates the box before anything is built
    x1, y1, x2, y2 = box_to_pixels(enlarge_box(box, face_scale, width, height), width, height)
    face = _resize(image_rgb[y1:y2, x1:x2], size)
    context = _resize(mask_face(image_rgb, box), size)
    return face, context


def faces_and_contexts(
    image_rgb: np.ndarray, boxes: np.ndarray, size: int = 224, face_scale: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """One sample per face: (K, size, size, 3) uint8 faces and contexts for (K, >=4) boxes."""
    boxes = np.asarray(boxes, dtype=np.float32)
    if boxes.ndim != 2 or boxes.shape[1] < 4:
        raise ValueError(f"boxes: expected shape (K, 4) or (K, 5), got {boxes.shape}")
    if len(boxes) == 0:
        empty = np.zeros((0, size, size, 3), dtype=np.uint8)
        return empty, empty.copy()
    pairs = [face_and_context(image_rgb, box[:4], size, face_scale) for box in boxes]
    return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])


def normalize_nchw(images: np.ndarray) -> np.ndarray:
    """(S, S, 3) or (K, S, S, 3) uint8 RGB -> (K, 3, S, S) float32 with ImageNet mean/std."""
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise TypeError(f"images: expected dtype uint8, got {images.dtype}")
    if images.ndim == 3:
        images = images[None]
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images: expected shape (S, S, 3) or (K, S, S, 3), got {images.shape}")
    mean = np.asarray(IMAGENET_MEAN, dtype=np.float32)
    std = np.asarray(IMAGENET_STD, dtype=np.float32)
    scaled = (images.astype(np.float32) / 255.0 - mean) / std
    return np.ascontiguousarray(scaled.transpose(0, 3, 1, 2))


# --------------------------------------------------------------------------- dataset


def colour_jitter(image_rgb: np.ndarray, rng: np.random.Generator, strength: float = 0.2) -> np.ndarray:
    """Random brightness, contrast and saturation factors in [1 - strength, 1 + strength]."""
    image = image_rgb.astype(np.float32)
    brightness, contrast, saturation = rng.uniform(1 - strength, 1 + strength, size=3)
    image = image * brightness
    image = (image - image.mean()) * contrast + image.mean()
    grey = image @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    image = (image - grey[..., None]) * saturation + grey[..., None]
    return np.clip(image + 0.5, 0, 255).astype(np.uint8)


def flip_box(box: np.ndarray, width: int) -> np.ndarray:
    """The box of a horizontally mirrored image."""
    x1, y1, x2, y2 = np.asarray(box, dtype=np.float32).reshape(4)
    return np.array([width - x2, y1, width - x1, y2], dtype=np.float32)


class CAHFWDataset(Dataset):
    """FaceRecords -> (face (3, S, S) float32, context (3, S, S) float32, label int64 scalar).

    Training adds a horizontal flip (p = 0.5) and colour jitter, both applied to the frame
    before the split so face and context stay consistent. Augmentations come from
    ``np.random.default_rng([seed, epoch, index])``, as BENet's (``data/datasets.py``): a sample
    is a function of (seed, epoch, index), whatever the worker count, the rank or a resume
    part-way through an epoch. Call ``set_epoch`` before each epoch for fresh draws (with
    non-persistent workers, which copy the dataset when an epoch's iterator is created).
    """

    def __init__(
        self,
        records: Sequence[FaceRecord],
        size: int,
        train: bool,
        seed: int = 0,
        num_classes: int | None = None,
        face_scale: float = 1.0,
    ) -> None:
        self.records = list(records)
        self.size = int(size)
        self.train = bool(train)
        self.seed = int(seed)
        self.epoch = 0
        self.face_scale = float(face_scale)
        expected = "a class index >= 0" if num_classes is None else f"a class index in 0..{num_classes - 1}"
        for record in self.records:
            label = record.label
            is_index = isinstance(label, (int, np.integer)) and not isinstance(label, bool)
            if not is_index or label < 0 or (num_classes is not None and label >= num_classes):
                raise AnnotationError(record.path, "label", f"expected {expected}, got {label!r}")

    def __len__(self) -> int:
        return len(self.records)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def sample_arrays(self, index: int) -> tuple[np.ndarray, np.ndarray, int]:
        """(face, context) uint8 (S, S, 3) and label of one record, augmented when training."""
        record = self.records[index]
        try:
            image = read_rgb(record.path)
        except FileNotFoundError as err:
            raise AnnotationError(record.path, "path", "image file missing or not a readable image") from err
        height, width = image.shape[:2]
        box = fallback_face_box(width, height) if record.face_box is None else np.asarray(record.face_box, np.float32)
        if self.train:
            rng = np.random.default_rng([self.seed, self.epoch, index])
            if rng.random() < 0.5:
                image = np.ascontiguousarray(image[:, ::-1])
                box = flip_box(box, width)
            image = colour_jitter(image, rng)
        try:
            face, context = face_and_context(image, box, self.size, self.face_scale)
        except ValueError as err:
            raise AnnotationError(record.path, "face_box", str(err)) from err
        return face, context, int(record.label)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        face, context, label = self.sample_arrays(index)
        return (
            torch.from_numpy(normalize_nchw(face)[0]),
            torch.from_numpy(normalize_nchw(context)[0]),
            torch.tensor(label, dtype=torch.int64),
        )
