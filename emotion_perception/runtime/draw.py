"""Annotated images: boxes and top emotions drawn on a copy of the frame (OpenCV).

One drawing routine for the predict command, the ROS debug image and the demo video.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

# Distinct, colour-blind-friendly colours (Okabe-Ito), RGB.
PALETTE: tuple[tuple[int, int, int], ...] = (
    (230, 159, 0), (86, 180, 233), (0, 158, 115), (240, 228, 66),
    (0, 114, 178), (213, 94, 0), (204, 121, 167), (255, 255, 255),
)


def caption(score: float, labels: Sequence[str], label_scores: Sequence[float], max_labels: int = 3) -> str:
    """'0.92 | Happiness 0.81, Peace 0.66' for a person's box."""
    parts = [f"{name} {value:.2f}" for name, value in list(zip(labels, label_scores))[:max_labels]]
    return f"{score:.2f} | " + (", ".join(parts) if parts else "-")


def draw_people(rgb: np.ndarray, boxes: np.ndarray, captions: Sequence[str]) -> np.ndarray:
    """A copy of ``rgb`` (H, W, 3 uint8) with each box (x1, y1, x2, y2 pixels) and its caption."""
    canvas = np.ascontiguousarray(rgb, dtype=np.uint8).copy()
    height, width = canvas.shape[:2]
    scale = max(0.35, min(width, height) / 900.0)
    thickness = max(1, int(round(scale * 2)))
    for index, (box, text) in enumerate(zip(np.asarray(boxes, dtype=np.float32).reshape(-1, 4), captions)):
        colour = PALETTE[index % len(PALETTE)]
        x1, y1, x2, y2 = (int(round(v)) for v in box)
        cv2.rectangle(canvas, (x1, y1), (x2, y2), colour, thickness)
        (text_w, text_h), baseline = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        # Caption above the box, or inside it when the box touches the top edge.
        top = y1 - text_h - baseline - 2 if y1 - text_h - baseline - 2 >= 0 else y1
        left = min(max(x1, 0), max(width - text_w - 2, 0))
        cv2.rectangle(canvas, (left, top), (left + text_w + 2, top + text_h + baseline + 2), colour, -1)
        cv2.putText(canvas, text, (left + 1, top + text_h + 1), cv2.FONT_HERSHEY_SIMPLEX, scale,
                    (0, 0, 0), 1, cv2.LINE_AA)
    return canvas
