"""From per-category scores to the label list a dialogue stack reads."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def labels_over_threshold(scores: np.ndarray, categories: Sequence[str], threshold: float) -> list[str]:
    """Names of the categories scoring >= threshold, strongest first (ties keep category order)."""
    scores = np.asarray(scores, dtype=np.float64)
    if scores.shape != (len(categories),):
        raise ValueError(f"{scores.shape[0] if scores.ndim else 0} scores for {len(categories)} categories")
    order = np.argsort(-scores, kind="stable")
    return [categories[i] for i in order if scores[i] >= threshold]
