"""The debug image of the nodes: the input frame with what was published drawn on it."""

from __future__ import annotations

import numpy as np

from emotion_perception.runtime.draw import caption, draw_people


def draw_person_emotions(rgb: np.ndarray, message) -> np.ndarray:
    """Draw a PersonEmotions message's boxes, scores and labels on a copy of ``rgb``."""
    categories = list(message.categories)
    boxes = np.array([[p.x_min, p.y_min, p.x_max, p.y_max] for p in message.people], dtype=np.float32)
    captions = [
        caption(p.score, list(p.labels), [p.scores[categories.index(name)] for name in p.labels])
        for p in message.people
    ]
    return draw_people(rgb, boxes.reshape(-1, 4), captions)
