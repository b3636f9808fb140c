"""Per-category best-F1 label thresholds (eval/calibration.py) against sklearn's F1."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import f1_score

from emotion_perception.eval.calibration import best_f1_threshold, calibrate


def test_best_f1_threshold_is_the_best_of_every_candidate_by_sklearn():
    rng = np.random.default_rng(0)
    for _ in range(5):
        y_true = rng.random(200) < 0.2
        y_score = np.round(np.clip(y_true * 0.3 + rng.random(200) * 0.7, 0, 1), 2)  # ties on purpose
        threshold, f1 = best_f1_threshold(y_true, y_score)
        brute = max(f1_score(y_true, y_score >= t) for t in np.unique(y_score))
        assert f1 == np.float64(brute) or abs(f1 - brute) < 1e-12
        assert abs(f1_score(y_true, y_score >= threshold) - f1) < 1e-12


def test_categories_without_positives_are_left_to_the_global_threshold():
    y_true = np.array([[1, 0], [0, 0], [1, 0]])
    y_score = np.array([[0.9, 0.8], [0.2, 0.1], [0.7, 0.3]])
    thresholds = calibrate(y_true, y_score, ("A", "B"))
    assert thresholds == {"A": 0.7}
