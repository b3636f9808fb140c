"""From per-category scores to the label list a dialogue stack reads."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np


def labels_over_threshold(scores: np.ndarray, categories: Sequence[str], threshold: float) -> list[str]:
    """Names of the categories scoring >= threshold, strongest first (ties keep category order)."""
    scores = np.asarray(scores, dtype=np.float64)
    if scores.shape != (len(categories),):
        raise ValueError(f"{scores.shape[0] if scores.ndim else 0} scores for {len(categories)} categories")
    order = np.argsort(-scores, kind="stable")
    return [categories[i] for i in order if scores[i] >= threshold]


# A class must reach this multiple of chance (1 / number of classes) to be published as a label
# by a softmax (one-of-C) model: a near-uniform output carries no information and publishes
# nothing, whatever the threshold (the CAHFW demo model's 0.16-0.20 top scores among 7 classes
# were published as "labels" before).
CHANCE_MARGIN = 2.0


def confident_labels(scores: np.ndarray, categories: Sequence[str], threshold: float, exclusive: bool,
                     per_category: Mapping[str, float] | None = None) -> list[str]:
    """The labels a node publishes.

    ``per_category`` (calibrated thresholds of the model card, category -> threshold) replaces
    ``threshold`` for the categories it names. ``exclusive`` (softmax over mutually exclusive
    classes: CAHFW-Net, the expression model): categories must also reach CHANCE_MARGIN / C.
    Multi-label (BENet's independent sigmoids): the thresholds alone.
    """
    if per_category:
        values = np.asarray(scores, dtype=np.float64)
        if values.shape != (len(categories),):
            raise ValueError(f"{values.shape[0] if values.ndim else 0} scores for {len(categories)} categories")
        order = np.argsort(-values, kind="stable")
        labels = [categories[i] for i in order if values[i] >= per_category.get(categories[i], threshold)]
    else:
        labels = labels_over_threshold(scores, categories, threshold)
    if not exclusive:
        return labels
    floor = CHANCE_MARGIN / len(categories)
    scores = np.asarray(scores, dtype=np.float64)
    return [name for name in labels if scores[list(categories).index(name)] >= floor]
