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


# A class must reach this multiple of chance (1 / number of classes) to be published as a label
# by a softmax (one-of-C) model: a near-uniform output carries no information and publishes
# nothing, whatever the threshold (the CAHFW demo model's 0.16-0.20 top scores among 7 classes
# were published as "labels" before).
CHANCE_MARGIN = 2.0


def confident_labels(scores: np.ndarray, categories: Sequence[str], threshold: float, exclusive: bool) -> list[str]:
    """The labels a node publishes.

    ``exclusive`` (softmax over mutually exclusive classes: CAHFW-Net, the expression model):
    categories with probability >= ``threshold`` and >= CHANCE_MARGIN / C. Multi-label
    (BENet's independent sigmoids, whose chance level differs per category): the threshold.
    """
    labels = labels_over_threshold(scores, categories, threshold)
    if not exclusive:
        return labels
    floor = CHANCE_MARGIN / len(categories)
    scores = np.asarray(scores, dtype=np.float64)
    return [name for name in labels if scores[list(categories).index(name)] >= floor]
