"""Emotion category vocabularies of the datasets we read, in their canonical order.

The order is part of the model contract: it fixes the channel order of BENet's emotion maps,
CAHFW-Net's logits and ``PersonEmotions.categories`` on the wire.
"""

from __future__ import annotations

# EMOTIC (Kosti et al.), 26 discrete categories, alphabetical as in the official release.
EMOTIC_CATEGORIES: tuple[str, ...] = (
    "Affection", "Anger", "Annoyance", "Anticipation", "Aversion", "Confidence",
    "Disapproval", "Disconnection", "Disquietment", "Doubt/Confusion", "Embarrassment",
    "Engagement", "Esteem", "Excitement", "Fatigue", "Fear", "Happiness", "Pain", "Peace",
    "Pleasure", "Sadness", "Sensitivity", "Suffering", "Surprise", "Sympathy", "Yearning",
)

# CAER-S (Lee et al.), 7 basic emotions, folder names of the official release.
CAER_CATEGORIES: tuple[str, ...] = (
    "Anger", "Disgust", "Fear", "Happy", "Neutral", "Sad", "Surprise",
)

# HECO (Yang et al.), 8 categories.
HECO_CATEGORIES: tuple[str, ...] = (
    "Anger", "Disgust", "Excitement", "Fear", "Happiness", "Peace", "Sadness", "Surprise",
)

# Continuous dimensions; EMOTIC and HECO annotate them on a 1..10 scale, we carry them in [0, 1].
VAD_NAMES: tuple[str, ...] = ("valence", "arousal", "dominance")

NUM_EMOTIC = len(EMOTIC_CATEGORIES)
NUM_CAER = len(CAER_CATEGORIES)


def vad_to_unit(value: float) -> float:
    """Map an EMOTIC/HECO 1..10 rating to [0, 1] (the convention of PersonEmotion.valence...)."""
    return (float(value) - 1.0) / 9.0


def vad_from_unit(value: float) -> float:
    """Inverse of :func:`vad_to_unit`."""
    return float(value) * 9.0 + 1.0
