"""MTCNN face detection (Zhang et al. 2016) in PyTorch, a CNN alternative to dlib's detectors.

:class:`MTCNNDetector` has the contract of :meth:`emotion_perception.data.faces.FaceDetector.detect`:
(H, W, 3) uint8 RGB in, (K, 5) float32 ``[x1, y1, x2, y2, score]`` out, continuous pixel
coordinates clipped to the image, highest score first. The score is ONet's face probability.

The cascade, as in the paper and its reference implementation:

1. image pyramid: scales ``m * factor**k`` with ``m = 12 / min_face_size`` while the short
   side stays >= 12 px; PNet on each level; cells with face probability >= ``thresholds[0]``
   become boxes (cell stride 2, size 12, mapped back to the original image); NMS 0.5 per level,
   then NMS 0.7 over all levels; box regression; boxes made square;
2. each box cropped (zeros outside the image), resized to 24x24, RNet; keep probability >=
   ``thresholds[1]``; NMS 0.7; regression; square;
3. crops at 48x48, ONet; keep probability >= ``thresholds[2]``; landmarks; regression; NMS 0.7
   with the "min" overlap (intersection over the smaller box), which removes a small box
   nested inside a larger one.

Crops of one stage go through the network as one batch (in chunks of :data:`CROP_BATCH`).
Boxes are kept in continuous coordinates throughout (pixel i spans [i, i + 1)): the
reference implementation's MATLAB-style ``+1`` widths and 1-based offsets are dropped.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from emotion_perception.data.faces import check_image
from emotion_perception.nets.factory import CheckpointError
from emotion_perception.nets.mtcnn import MTCNN_FORMAT, load_mtcnn_nets

OVERLAP_MODES: tuple[str, ...] = ("union", "min")
CROP_BATCH = 1024  # crops per network call in stages 2 and 3 (bounds peak memory)
PNET_CELL = 12  # PNet window, px of a pyramid level
PNET_STRIDE = 2  # PNet output stride, px of a pyramid level


# --------------------------------------------------------------------------- boxes


def box_overlap(boxes_a: np.ndarray, boxes_b: np.ndarray, mode: str = "union") -> np.ndarray:
    """(A, B) overlap of x1y1x2y2 boxes: IoU (``"union"``) or intersection / smaller area (``"min"``).

    Continuous coordinates (area = width * height, no +1); a pair with a zero denominator is 0.
    """
    if mode not in OVERLAP_MODES:
        raise ValueError(f"overlap mode: {mode!r} is not one of {OVERLAP_MODES}")
    a = np.asarray(boxes_a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(boxes_b, dtype=np.float64).reshape(-1, 4)
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    wh = np.clip(np.minimum(a[:, None, 2:], b[None, :, 2:]) - np.maximum(a[:, None, :2], b[None, :, :2]), 0, None)
    intersection = wh[..., 0] * wh[..., 1]
    if mode == "union":
        denominator = area_a[:, None] + area_b[None, :] - intersection
    else:
        denominator = np.minimum(area_a[:, None], area_b[None, :])
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, intersection / np.where(denominator > 0, denominator, 1.0), 0.0)


def nms(boxes: np.ndarray, scores: np.ndarray, threshold: float, mode: str = "union") -> np.ndarray:
    """Greedy non-maximum suppression: indices of the kept boxes, highest score first.

    A box is dropped when its overlap (:func:`box_overlap`, ``mode``) with a kept, higher-scored
    box is greater than ``threshold``. Equal scores keep their input order.
    """
    if mode not in OVERLAP_MODES:
        raise ValueError(f"overlap mode: {mode!r} is not one of {OVERLAP_MODES}")
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if boxes.shape[0] != scores.shape[0]:
        raise ValueError(f"nms: {boxes.shape[0]} boxes but {scores.shape[0]} scores")
    order = np.argsort(-scores, kind="stable")
    x1, y1, x2, y2 = boxes.T
    areas = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    keep: list[int] = []
    while order.size:
        i = order[0]
        keep.append(int(i))
        rest = order[1:]
        w = np.clip(np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]), 0, None)
        h = np.clip(np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]), 0, None)
        inter = w * h
        denominator = areas[i] + areas[rest] - inter if mode == "union" else np.minimum(areas[i], areas[rest])
        overlap = np.where(denominator > 0, inter / np.where(denominator > 0, denominator, 1.0), 0.0)
        order = rest[overlap <= threshold]
    return np.asarray(keep, dtype=np.int64)


def _regress(boxes: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Boxes moved by MTCNN's regression offsets (dx1, dy1, dx2, dy2) in box widths/heights."""
    w = (boxes[:, 2] - boxes[:, 0])[:, None]
    h = (boxes[:, 3] - boxes[:, 1])[:, None]
    return boxes[:, :4] + offsets * np.concatenate([w, h, w, h], axis=1)


def _square(boxes: np.ndarray) -> np.ndarray:
    """Boxes made square about their centres, side the longer of width and height."""
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    side = np.maximum(w, h)
    cx = boxes[:, 0] + w / 2
    cy = boxes[:, 1] + h / 2
    return np.stack([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2], axis=1)


def _normalize(image: np.ndarray) -> np.ndarray:
    """RGB (..., H, W, 3) in 0..255 -> float32 (..., 3, H, W) scaled as the MTCNN weights expect."""
    x = (image.astype(np.float32) - 127.5) * 0.0078125
    return np.ascontiguousarray(np.moveaxis(x, -1, -3))


def _resize(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """(H, W, 3) -> (height, width, 3) float32 by torch's "area" interpolation (adaptive average
    pooling, without rounding back to uint8), as facenet-pytorch resamples for these weights.
    Measured: with OpenCV's area / bilinear instead, the full-size astronaut's suit collar came
    out as a face at 0.85; with this, as with facenet-pytorch, it does not."""
    tensor = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)).permute(2, 0, 1)[None]
    resized = F.interpolate(tensor, size=(height, width), mode="area")
    return resized[0].permute(1, 2, 0).numpy()


def _crops(image: np.ndarray, boxes: np.ndarray, size: int) -> np.ndarray:
    """(N, size, size, 3) float32 crops of ``boxes`` (rounded to pixels), zeros outside the image."""
    height, width = image.shape[:2]
    out = np.zeros((boxes.shape[0], size, size, 3), dtype=np.float32)
    bounds = np.rint(boxes[:, :4]).astype(np.int64)
    for k, (x1, y1, x2, y2) in enumerate(bounds):
        x2, y2 = max(x2, x1 + 1), max(y2, y1 + 1)
        patch = np.zeros((y2 - y1, x2 - x1, 3), dtype=np.uint8)
        sx1, sy1, sx2, sy2 = max(x1, 0), max(y1, 0), min(x2, width), min(y2, height)
        if sx2 > sx1 and sy2 > sy1:
            patch[sy1 - y1:sy2 - y1, sx1 - x1:sx2 - x1] = image[sy1:sy2, sx1:sx2]
        out[k] = _resize(patch, size, size)
    return out


# --------------------------------------------------------------------------- detector


class MTCNNDetector:
    """MTCNN face detector (PyTorch, CPU or GPU) with the weights of facenet-pytorch 2.6.0.

    ``weights``: a one-file checkpoint of format ``emotion_perception.mtcnn/1``, written by
    :func:`emotion_perception.nets.mtcnn.convert_facenet_pytorch` (``scripts/setup.sh`` makes
    ``external_models/mtcnn.pt``). ``min_face_size`` (px) sets the largest pyramid scale: smaller
    values find smaller faces at a higher cost. ``thresholds`` are the face-probability cut-offs
    of the three stages; ``factor`` the pyramid step; ``min_score`` drops final detections below it.
    """

    # The score column is O-Net's face probability, already in [0, 1] (the predictors use it as
    # the detection confidence as it is, unlike dlib's margins).
    scores_are_probabilities = True

    def __init__(
        self,
        weights: str | Path,
        device: str = "cpu",
        min_face_size: int = 20,
        thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7),
        factor: float = 0.709,
        min_score: float = 0.0,
    ) -> None:
        if not min_face_size >= 1:
            raise ValueError(f"MTCNNDetector.min_face_size: expected >= 1 px, got {min_face_size!r}")
        if not 0.0 < factor < 1.0:
            raise ValueError(f"MTCNNDetector.factor: expected a pyramid step in (0, 1), got {factor!r}")
        values = tuple(float(t) for t in thresholds)
        if len(values) != 3 or not all(0.0 <= t <= 1.0 for t in values):
            raise ValueError(f"MTCNNDetector.thresholds: expected 3 probabilities in [0, 1], got {values!r}")
        thresholds = (values[0], values[1], values[2])
        self.weights = Path(weights)
        self.device = torch.device(device)
        self.min_face_size = float(min_face_size)
        self.thresholds = thresholds
        self.factor = float(factor)
        self.min_score = float(min_score)
        self.pnet, self.rnet, self.onet = (net.to(self.device) for net in self._load(self.weights))

    @staticmethod
    def _load(path: Path):
        hint = (f"expected a checkpoint of format '{MTCNN_FORMAT}' made by "
                "emotion_perception.nets.mtcnn.convert_facenet_pytorch (run scripts/setup.sh)")
        if not path.is_file():
            raise FileNotFoundError(f"{path}: MTCNN weights not found; {hint}")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # truncated zip, not a torch file, unsafe pickle, ...
            raise CheckpointError(path, "(file)",
                                  f"not a readable torch checkpoint ({type(err).__name__}); {hint}") from None
        try:
            return load_mtcnn_nets(state)
        except ValueError as err:
            raise CheckpointError(path, "(content)", f"{err}; {hint}") from None

    # ------------------------------------------------------------------ stages

    def _scales(self, height: int, width: int) -> list[float]:
        scale = PNET_CELL / self.min_face_size
        short = min(height, width) * scale
        scales = []
        while short >= PNET_CELL:
            scales.append(scale)
            scale *= self.factor
            short *= self.factor
        return scales

    def _stage1(self, image: np.ndarray) -> np.ndarray:
        height, width = image.shape[:2]
        found = []
        for scale in self._scales(height, width):
            level_h, level_w = math.ceil(height * scale), math.ceil(width * scale)
            level = torch.from_numpy(_normalize(_resize(image, level_w, level_h))[None]).to(self.device)
            prob, reg = self.pnet(level)
            prob = prob[0, 1].cpu().numpy()
            reg = reg[0].cpu().numpy()
            rows, cols = np.nonzero(prob >= self.thresholds[0])
            if rows.size == 0:
                continue
            x1 = cols * PNET_STRIDE / scale
            y1 = rows * PNET_STRIDE / scale
            side = PNET_CELL / scale
            boxes = np.stack([x1, y1, x1 + side, y1 + side, prob[rows, cols]], axis=1)
            offsets = reg[:, rows, cols].T
            keep = nms(boxes[:, :4], boxes[:, 4], 0.5, "union")
            found.append(np.concatenate([boxes[keep], offsets[keep]], axis=1))
        if not found:
            return np.zeros((0, 5))
        boxes = np.concatenate(found)
        boxes = boxes[nms(boxes[:, :4], boxes[:, 4], 0.7, "union")]
        return np.concatenate([_square(_regress(boxes[:, :4], boxes[:, 5:9])), boxes[:, 4:5]], axis=1)

    def _run_crops(self, net: torch.nn.Module, image: np.ndarray, boxes: np.ndarray, size: int) -> list[np.ndarray]:
        outputs: list[list[np.ndarray]] = []
        for start in range(0, boxes.shape[0], CROP_BATCH):
            batch = torch.from_numpy(_normalize(_crops(image, boxes[start:start + CROP_BATCH], size))).to(self.device)
            outputs.append([t.cpu().numpy() for t in net(batch)])
        return [np.concatenate(parts) for parts in zip(*outputs)]

    def _stage2(self, image: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        prob, reg = self._run_crops(self.rnet, image, boxes, 24)
        keep = prob[:, 1] >= self.thresholds[1]
        boxes, scores, reg = boxes[keep, :4], prob[keep, 1], reg[keep]
        keep = nms(boxes, scores, 0.7, "union")
        boxes, scores, reg = boxes[keep], scores[keep], reg[keep]
        return np.concatenate([_square(_regress(boxes, reg)), scores[:, None]], axis=1)

    def _stage3(self, image: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        prob, reg, points = self._run_crops(self.onet, image, boxes, 48)
        keep = prob[:, 1] >= self.thresholds[2]
        boxes, scores, reg, points = boxes[keep, :4], prob[keep, 1], reg[keep], points[keep]
        w = (boxes[:, 2] - boxes[:, 0])[:, None]
        h = (boxes[:, 3] - boxes[:, 1])[:, None]
        landmarks = np.stack([boxes[:, 0:1] + points[:, :5] * w, boxes[:, 1:2] + points[:, 5:] * h], axis=2)
        boxes = _regress(boxes, reg)
        keep = nms(boxes, scores, 0.7, "min")
        return np.concatenate([boxes[keep], scores[keep, None]], axis=1), landmarks[keep]

    # ------------------------------------------------------------------ public

    def detect_with_landmarks(self, image_rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """((K, 5) float32 [x1, y1, x2, y2, score], (K, 5, 2) float32 landmarks x, y).

        Landmarks: left eye, right eye (as seen in the image), nose, left and right mouth corner,
        in pixels of the image (not clipped). Boxes as :meth:`detect`.
        """
        image = np.ascontiguousarray(check_image(image_rgb))
        height, width = image.shape[:2]
        empty = np.zeros((0, 5), dtype=np.float32), np.zeros((0, 5, 2), dtype=np.float32)
        with torch.inference_mode():
            boxes = self._stage1(image)
            if boxes.shape[0]:
                boxes = self._stage2(image, boxes)
            if not boxes.shape[0]:
                return empty
            boxes, landmarks = self._stage3(image, boxes)
        boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, width)
        boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, height)
        keep = (boxes[:, 4] >= self.min_score) & (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        boxes, landmarks = boxes[keep], landmarks[keep]
        order = np.argsort(-boxes[:, 4], kind="stable")
        return boxes[order].astype(np.float32), landmarks[order].astype(np.float32)

    def detect(self, image_rgb: np.ndarray) -> np.ndarray:
        """(K, 5) float32 [x1, y1, x2, y2, score] clipped to the image, highest score first."""
        return self.detect_with_landmarks(image_rgb)[0]
