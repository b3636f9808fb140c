"""Dataset-independent annotation records: what every reader returns and every consumer reads.

Readers (EMOTIC, HECO, CAER-S, synthetic) convert their file formats into these records, so
transforms, trainers and evaluators never see a file format.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from emotion_perception.errors import FieldError


@dataclass
class PersonRecord:
    """One annotated person.

    box:        (4,) float32, x_min, y_min, x_max, y_max in pixels of the original image,
                clipped to the image (x against width, y against height).
    categories: (C,) float32 multi-hot over the dataset's category list (26 for EMOTIC).
    vad:        (3,) float32 valence/arousal/dominance in [0, 1]; NaN where not annotated.
    gender, age: strings as annotated ("" when absent).
    """

    box: np.ndarray
    categories: np.ndarray
    vad: np.ndarray = field(default_factory=lambda: np.full(3, np.nan, dtype=np.float32))
    gender: str = ""
    age: str = ""


@dataclass
class ImageRecord:
    """One image with all its annotated people (BENet trains on whole images)."""

    path: Path
    width: int
    height: int
    people: list[PersonRecord]
    split: str = ""
    source: str = ""  # "emotic", "heco", "synthetic", ...

    def boxes(self) -> np.ndarray:
        """(N, 4) float32 boxes of all people (empty (0, 4) if none)."""
        if not self.people:
            return np.zeros((0, 4), dtype=np.float32)
        return np.stack([p.box for p in self.people]).astype(np.float32)

    def labels(self) -> np.ndarray:
        """(N, C) float32 multi-hot labels of all people."""
        if not self.people:
            return np.zeros((0, 0), dtype=np.float32)
        return np.stack([p.categories for p in self.people]).astype(np.float32)

    def vads(self) -> np.ndarray:
        """(N, 3) float32 VAD in [0, 1], NaN where unknown."""
        if not self.people:
            return np.zeros((0, 3), dtype=np.float32)
        return np.stack([p.vad for p in self.people]).astype(np.float32)


@dataclass
class FaceRecord:
    """One CAER-S style sample: an image, its class and the face box used to split face/context.

    face_box is (4,) float32 x_min, y_min, x_max, y_max in pixels, or None when no face was found
    (see the CAER-S reader for the policy applied to such images).
    """

    path: Path
    label: int
    face_box: np.ndarray | None
    split: str = ""


class AnnotationError(FieldError):
    """A malformed annotation; the message names the file and the field."""


def read_csv_rows(path: str | Path, reader: Any) -> list:
    """Every row of a ``csv`` reader over ``path``; a row the csv module refuses (a field over
    its 131072-character limit, a NUL byte) is an AnnotationError naming the line."""
    rows = []
    try:
        for row in reader:
            rows.append(row)
    except csv.Error as err:
        # A DictReader's own line_num lags one row behind its underlying reader's.
        line = getattr(reader, "reader", reader).line_num
        raise AnnotationError(path, f"line {line}", f"unreadable CSV row ({err})") from None
    return rows
