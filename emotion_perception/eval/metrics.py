"""Metrics of the BENet and CAHFW-Net papers, in numpy (plus pycocotools for detection AP).

Conventions shared by every function here:

- Emotion scores are probabilities (after sigmoid), arrays ``(N, C)`` with one row per
  ground-truth person and one column per category; ground truth is multi-hot ``(N, C)``.
- Average precision is the step-wise definition of ``sklearn.metrics.average_precision_score``
  (which the official EMOTIC evaluation calls): ``AP = sum_k (R_k - R_{k-1}) P_k`` over the
  distinct score thresholds, tied scores forming one threshold. It is computed here so the
  evaluation does not depend on scikit-learn; the tests check equality with it.
- A category without any positive in the ground truth has no defined AP. We report it as NaN
  and leave it out of the mean (scikit-learn returns 0.0 with a warning instead, which would
  drag the mean down for a category that simply is absent from a small split).
- Boxes are ``x1y1x2y2`` in pixels everywhere; the COCO API wants ``xywh`` and the conversion
  happens once, in :func:`detection_ap`.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

# IoU thresholds of the COCO protocol, 0.50:0.05:0.95; the joint protocol (BENet Table 3) uses
# the same ones.
COCO_IOU_THRESHOLDS: tuple[float, ...] = tuple(np.round(np.linspace(0.5, 0.95, 10), 2).tolist())


def _as_2d(name: str, array: np.ndarray) -> np.ndarray:
    array = np.asarray(array, dtype=np.float64)
    if array.ndim == 1:
        array = array[:, None]
    if array.ndim != 2:
        raise ValueError(f"{name} must be (N,) or (N, C), got shape {array.shape}")
    return array


def _check_pair(y_true: np.ndarray, y_score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y_true = _as_2d("y_true", y_true)
    y_score = _as_2d("y_score", y_score)
    if y_true.shape != y_score.shape:
        raise ValueError(f"y_true {y_true.shape} and y_score {y_score.shape} differ in shape")
    if not np.all(np.isin(y_true, (0.0, 1.0))):
        raise ValueError("y_true must be binary (0/1)")
    if not np.all(np.isfinite(y_score)):
        raise ValueError("y_score contains NaN or infinite values")
    return y_true, y_score


# --------------------------------------------------------------------------- ranking metrics


def _threshold_counts(y_true: np.ndarray, y_score: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """True/false positives when thresholding at each distinct score, highest score first."""
    order = np.argsort(-y_score, kind="mergesort")
    scores = y_score[order]
    truth = y_true[order]
    # The last index of each run of equal scores: ties are decided together.
    last_of_run = np.r_[np.flatnonzero(np.diff(scores)), scores.size - 1]
    true_positives = np.cumsum(truth)[last_of_run]
    false_positives = (last_of_run + 1) - true_positives
    return true_positives, false_positives, scores[last_of_run]


def precision_recall_curve(y_true: np.ndarray, y_score: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision, recall and thresholds of one binary problem, scikit-learn's layout.

    Thresholds increase; precision and recall have one extra final point (precision 1,
    recall 0). Recall is NaN throughout when ``y_true`` has no positive.
    """
    y_true, y_score = _check_pair(y_true, y_score)
    if y_true.shape[1] != 1:
        raise ValueError("precision_recall_curve takes one category at a time")
    tp, fp, thresholds = _threshold_counts(y_true[:, 0], y_score[:, 0])
    precision = tp / (tp + fp)
    recall = tp / tp[-1] if tp.size and tp[-1] > 0 else np.full(tp.shape, np.nan)
    return (
        np.r_[precision[::-1], 1.0],
        np.r_[recall[::-1], 0.0],
        thresholds[::-1],
    )


def average_precision(y_true: np.ndarray, y_score: np.ndarray) -> float:
    """Step-wise average precision of one binary problem; NaN when there is no positive."""
    y_true, y_score = _check_pair(y_true, y_score)
    if y_true.shape[1] != 1:
        raise ValueError("average_precision takes one category at a time; see per_category_ap")
    if y_true.shape[0] == 0 or y_true.sum() == 0:
        return float("nan")
    tp, fp, _ = _threshold_counts(y_true[:, 0], y_score[:, 0])
    precision = tp / (tp + fp)
    recall = tp / tp[-1]
    recall_steps = np.diff(np.r_[0.0, recall])
    return float(np.sum(recall_steps * precision))


def per_category_ap(y_true: np.ndarray, y_score: np.ndarray) -> np.ndarray:
    """(C,) AP of each column of ``(N, C)`` arrays; NaN for a column without positives."""
    y_true, y_score = _check_pair(y_true, y_score)
    return np.array(
        [average_precision(y_true[:, c], y_score[:, c]) for c in range(y_true.shape[1])],
        dtype=np.float64,
    )


def mean_average_precision(y_true: np.ndarray, y_score: np.ndarray) -> float:
    """Mean of :func:`per_category_ap` over the categories that have positives (NaN if none)."""
    aps = per_category_ap(y_true, y_score)
    defined = aps[~np.isnan(aps)]
    return float(defined.mean()) if defined.size else float("nan")


def fuse_scores(bottom_up: np.ndarray, person_centric: np.ndarray) -> np.ndarray:
    """Fusion of BENet's bottom-up and person-centric probabilities (paper Table 4): their mean."""
    bottom_up = np.asarray(bottom_up, dtype=np.float64)
    person_centric = np.asarray(person_centric, dtype=np.float64)
    if bottom_up.shape != person_centric.shape:
        raise ValueError(f"bottom-up {bottom_up.shape} and person-centric {person_centric.shape} differ in shape")
    return 0.5 * (bottom_up + person_centric)


# --------------------------------------------------------------------------- classification


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """(K, K) int64 counts, rows = true class, columns = predicted class (scikit-learn's layout)."""
    y_true = np.asarray(y_true).astype(np.int64).ravel()
    y_pred = np.asarray(y_pred).astype(np.int64).ravel()
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true {y_true.shape} and y_pred {y_pred.shape} differ in length")
    for name, values in (("y_true", y_true), ("y_pred", y_pred)):
        if values.size and (values.min() < 0 or values.max() >= num_classes):
            raise ValueError(f"{name} has labels outside 0..{num_classes - 1}")
    flat = y_true * num_classes + y_pred
    return np.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Fraction of exact matches (NaN for empty input)."""
    y_true = np.asarray(y_true).ravel()
    y_pred = np.asarray(y_pred).ravel()
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true {y_true.shape} and y_pred {y_pred.shape} differ in length")
    return float(np.mean(y_true == y_pred)) if y_true.size else float("nan")


def per_class_accuracy(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """(K,) fraction of each true class predicted correctly (the class's recall); NaN if absent."""
    matrix = confusion_matrix(y_true, y_pred, num_classes).astype(np.float64)
    support = matrix.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(support > 0, np.diag(matrix) / support, np.nan)


# --------------------------------------------------------------------------- boxes


def box_iou(boxes_a: np.ndarray, boxes_b: np.ndarray) -> np.ndarray:
    """(A, B) IoU of x1y1x2y2 boxes (the COCO definition, continuous coordinates, no +1)."""
    a = np.asarray(boxes_a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(boxes_b, dtype=np.float64).reshape(-1, 4)
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    top_left = np.maximum(a[:, None, :2], b[None, :, :2])
    bottom_right = np.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = np.clip(bottom_right - top_left, 0, None)
    intersection = wh[..., 0] * wh[..., 1]
    union = area_a[:, None] + area_b[None, :] - intersection
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, intersection / union, 0.0)


def xyxy_to_xywh(boxes: np.ndarray) -> np.ndarray:
    """x1y1x2y2 -> x, y, width, height (the COCO ``bbox`` field)."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)


@dataclass
class ImageDetections:
    """Ground truth and detections of one image, everything a detection-side metric reads.

    gt_boxes (N, 4) x1y1x2y2, gt_labels (N, C) multi-hot; det_boxes (K, 4) x1y1x2y2,
    det_scores (K,) person confidences, det_emotions (K, C) emotion probabilities.
    """

    gt_boxes: np.ndarray
    gt_labels: np.ndarray
    det_boxes: np.ndarray
    det_scores: np.ndarray
    det_emotions: np.ndarray


# The 12 numbers COCOeval.summarize() prints, in its order.
COCO_STAT_NAMES: tuple[str, ...] = (
    "AP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large",
    "AR1", "AR10", "AR100", "AR_small", "AR_medium", "AR_large",
)


def detection_ap(images: Sequence[ImageDetections], max_detections: int = 100) -> dict[str, float]:
    """Person detection AP/AR with the COCO API (pycocotools), one category ``person``.

    Returns COCO's 12 summary numbers by name (see :data:`COCO_STAT_NAMES`); a number COCO
    leaves undefined (-1, e.g. no ground truth in an area range) is NaN. Each image keeps its
    ``max_detections`` best-scored detections; COCOeval itself keeps its maxDets 1/10/100,
    because its summary reads AP at exactly 100 (with maxDets [1, 10, 15] the headline AP is -1).
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    image_entries: list[dict[str, Any]] = []
    gt_entries: list[dict[str, Any]] = []
    det_entries: list[dict[str, Any]] = []
    for image_id, image in enumerate(images, start=1):
        image_entries.append({"id": image_id})
        for box in xyxy_to_xywh(image.gt_boxes):
            gt_entries.append({
                "id": len(gt_entries) + 1, "image_id": image_id, "category_id": 1,
                "bbox": box.tolist(), "area": float(box[2] * box[3]), "iscrowd": 0,
            })
        scores = np.asarray(image.det_scores, dtype=np.float64).ravel()
        kept = np.argsort(-scores, kind="stable")[:max_detections]
        boxes = np.asarray(image.det_boxes, dtype=np.float64).reshape(-1, 4)
        for box, score in zip(xyxy_to_xywh(boxes[kept]), scores[kept]):
            det_entries.append({
                "id": len(det_entries) + 1, "image_id": image_id, "category_id": 1,
                "bbox": box.tolist(), "area": float(box[2] * box[3]), "score": float(score), "iscrowd": 0,
            })
    categories = [{"id": 1, "name": "person"}]

    # COCO() and COCOeval print progress on stdout; keep the evaluation output clean.
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = {"images": image_entries, "annotations": gt_entries, "categories": categories}
        coco_gt.createIndex()
        # Built directly rather than through loadRes, which rejects an empty detection list.
        coco_dt = COCO()
        coco_dt.dataset = {"images": image_entries, "annotations": det_entries, "categories": categories}
        coco_dt.createIndex()
        evaluator = COCOeval(coco_gt, coco_dt, iouType="bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    stats = [float("nan") if value < 0 else float(value) for value in evaluator.stats]
    return dict(zip(COCO_STAT_NAMES, stats))


def greedy_match(
    gt_boxes: np.ndarray, det_boxes: np.ndarray, det_scores: np.ndarray, iou_threshold: float
) -> np.ndarray:
    """Match detections to ground truth the COCO way; returns (N,) detection index per GT or -1.

    Detections are visited from the highest score down; each takes the still-unmatched ground
    truth it overlaps most, if that IoU is at least ``iou_threshold``.
    """
    gt_boxes = np.asarray(gt_boxes, dtype=np.float64).reshape(-1, 4)
    det_boxes = np.asarray(det_boxes, dtype=np.float64).reshape(-1, 4)
    det_scores = np.asarray(det_scores, dtype=np.float64).ravel()
    matched_detection = np.full(len(gt_boxes), -1, dtype=np.int64)
    if len(gt_boxes) == 0 or len(det_boxes) == 0:
        return matched_detection
    ious = box_iou(det_boxes, gt_boxes)
    for det_index in np.argsort(-det_scores, kind="mergesort"):
        candidate_ious = np.where(matched_detection < 0, ious[det_index], -1.0)
        best_gt = int(np.argmax(candidate_ious))
        if candidate_ious[best_gt] >= iou_threshold:
            matched_detection[best_gt] = det_index
    return matched_detection


def joint_protocol_scores(images: Sequence[ImageDetections], iou_threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """(y_true, y_score) over all ground-truth people for one IoU threshold (BENet Table 3).

    A matched person gets the emotions read at its detection; a missed person gets an all-zero
    prediction, so missing people costs emotion AP. Unmatched detections are not scored: the
    protocol rates emotions of the annotated people.
    """
    truths, scores = [], []
    for image in images:
        gt_labels = np.asarray(image.gt_labels, dtype=np.float64)
        matches = greedy_match(image.gt_boxes, image.det_boxes, image.det_scores, iou_threshold)
        predicted = np.zeros_like(gt_labels)
        det_emotions = np.asarray(image.det_emotions, dtype=np.float64)
        hit = matches >= 0
        predicted[hit] = det_emotions[matches[hit]]
        truths.append(gt_labels)
        scores.append(predicted)
    if not truths:
        return np.zeros((0, 0)), np.zeros((0, 0))
    return np.concatenate(truths), np.concatenate(scores)


def joint_protocol_map(
    images: Sequence[ImageDetections], iou_thresholds: Sequence[float] = COCO_IOU_THRESHOLDS
) -> dict[str, object]:
    """Emotion mAP after detection at each IoU threshold and their average (BENet Table 3)."""
    per_threshold = {}
    for threshold in iou_thresholds:
        y_true, y_score = joint_protocol_scores(images, threshold)
        per_threshold[f"{threshold:.2f}"] = mean_average_precision(y_true, y_score)
    values = np.array(list(per_threshold.values()), dtype=np.float64)
    return {"mAP_per_iou": per_threshold, "mAP": float(np.mean(values)) if values.size else float("nan")}
