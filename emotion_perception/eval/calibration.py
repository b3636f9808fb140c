"""Per-category label thresholds calibrated on validation predictions (best F1 per category).

    emotion-perception eval calibrate runs/RUN/eval_val/predictions.npz --out thresholds.json

One global threshold flattens a multi-label model: categories differ in base rate and in how
confident the network is about them. For each category, the threshold that maximises F1 on the
validation split's ground-truth people (``y_true`` / ``y_score`` of ``eval benet --split val``)
is kept; a category without a positive there gets none (the node's global threshold applies).
``emotion-perception ship ... --label-thresholds thresholds.json`` stores them in
the model file; the node uses them for ``labels`` when ``emotion_threshold`` is left at its
default (docs/DEPLOYMENT.md, model card ``label_thresholds``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np


def best_f1_threshold(y_true: np.ndarray, y_score: np.ndarray) -> tuple[float, float] | None:
    """(threshold, F1) maximising F1 for one category, or None without positives.

    Candidates are the distinct scores (predict positive when score >= threshold)."""
    y_true = np.asarray(y_true, dtype=bool)
    y_score = np.asarray(y_score, dtype=np.float64)
    positives = int(y_true.sum())
    if positives == 0:
        return None
    order = np.argsort(-y_score, kind="stable")
    scores, truth = y_score[order], y_true[order]
    true_positives = np.cumsum(truth)
    predicted = np.arange(1, len(scores) + 1)
    # Only the last index of each run of equal scores is a reachable operating point.
    last_of_run = np.r_[scores[1:] != scores[:-1], True]
    f1 = 2 * true_positives / (predicted + positives)
    f1 = np.where(last_of_run, f1, -1.0)
    best = int(np.argmax(f1))
    return float(scores[best]), float(f1[best])


def calibrate(y_true: np.ndarray, y_score: np.ndarray, categories: Sequence[str]) -> dict[str, float]:
    """Category -> best-F1 threshold (categories without validation positives are left out)."""
    y_true, y_score = np.asarray(y_true), np.asarray(y_score)
    if y_true.shape != y_score.shape or y_true.ndim != 2 or y_true.shape[1] != len(categories):
        raise ValueError(f"calibrate: y_true {y_true.shape} and y_score {y_score.shape} must be (N, {len(categories)})")
    thresholds = {}
    for index, name in enumerate(categories):
        found = best_f1_threshold(y_true[:, index], y_score[:, index])
        if found is not None and math.isfinite(found[0]):
            thresholds[name] = round(found[0], 6)
    return thresholds


def main_calibrate(predictions: Path, out: Path) -> int:
    from emotion_perception.data.categories import EMOTIC_CATEGORIES

    saved = np.load(predictions)
    for key in ("y_true", "y_score"):
        if key not in saved:
            raise ValueError(f"{predictions}: no '{key}' (run 'emotion-perception eval benet --split val' first)")
    thresholds = calibrate(saved["y_true"], saved["y_score"], EMOTIC_CATEGORIES)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"source": str(predictions), "rule": "best F1 per category on these predictions",
                               "label_thresholds": thresholds}, indent=2) + "\n", encoding="utf-8")
    print(f"{len(thresholds)} of {len(EMOTIC_CATEGORIES)} categories calibrated -> {out}")
    return 0
