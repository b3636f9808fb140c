"""From per-category scores to the label list a dialogue stack reads."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np


def labels_over_threshold(scores: np.ndarray, categories: Sequence[str], threshold: float,
                          per_category: Mapping[str, float] | None = None) -> list[str]:
    """Names of the categories scoring >= their threshold, strongest first (ties keep category
    order); ``per_category`` overrides ``threshold`` for the categories it names."""
    scores = np.asarray(scores, dtype=np.float64)
    if scores.shape != (len(categories),):
        raise ValueError(f"{scores.shape[0] if scores.ndim else 0} scores for {len(categories)} categories")
    per_category = per_category or {}
    order = np.argsort(-scores, kind="stable")
    return [categories[i] for i in order if scores[i] >= per_category.get(categories[i], threshold)]


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
    labels = labels_over_threshold(scores, categories, threshold, per_category)
    if not exclusive:
        return labels
    floor = CHANCE_MARGIN / len(categories)
    scores = np.asarray(scores, dtype=np.float64)
    return [name for name in labels if scores[list(categories).index(name)] >= floor]
