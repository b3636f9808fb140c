"""HECO reader (Human Emotions in COntext) and its mapping onto EMOTIC's categories.

Layout::

    ROOT/Labels/HECO_Labels.csv   columns Image, xmin, ymin, xmax, ymax, Category,
                                  Valence, Arousal, Dominance (one row per person)
    ROOT/Data/<Image>             images (also looked up in Images/, images/, data/ and ROOT)

One category per person among the 8 of ``HECO_CATEGORIES``; VAD on 1..10 like EMOTIC. HECO has
no official split: it is extra training data, merged into EMOTIC's training set through
``HECO_TO_EMOTIC`` (see docs/DATA.md). The CSV has no image sizes, so boxes are clipped using
the size read from each image's header; rows of missing images are skipped and reported.
"""

from __future__ import annotations

import csv
import logging
import os
from dataclasses import replace
from pathlib import Path

import numpy as np

from emotion_perception.data.categories import EMOTIC_CATEGORIES, HECO_CATEGORIES, vad_to_unit
from emotion_perception.data.imageio import ImageError, image_size
from emotion_perception.data.paths import OUTSIDE_ROOT, escape_problem, resolves_inside
from emotion_perception.data.records import AnnotationError, ImageRecord, PersonRecord, read_csv_rows
from emotion_perception.data.report import ReadReport

LOGGER = logging.getLogger(__name__)

LABELS_RELATIVE_PATH = Path("Labels") / "HECO_Labels.csv"
HECO_COLUMNS: tuple[str, ...] = (
    "Image", "xmin", "ymin", "xmax", "ymax", "Category", "Valence", "Arousal", "Dominance",
)
IMAGE_DIRS: tuple[str, ...] = ("Data", "Images", "images", "data", ".")
HECO_SPLIT = "train"

# Spellings seen in hand-typed labels -> canonical HECO category. Keys are lower-case with
# spaces removed (see _normalise); anything else is an AnnotationError, so a new typo is noticed
# and added here rather than silently dropped.
HECO_ALIASES: dict[str, str] = {
    "anger": "Anger", "angry": "Anger", "angery": "Anger",
    "disgust": "Disgust", "disgusted": "Disgust", "disgusting": "Disgust", "digust": "Disgust",
    "excitement": "Excitement", "excited": "Excitement", "excitment": "Excitement", "exciting": "Excitement",
    "fear": "Fear", "feared": "Fear", "fearful": "Fear", "afraid": "Fear",
    "happiness": "Happiness", "happy": "Happiness", "happines": "Happiness", "hapiness": "Happiness",
    "happyness": "Happiness",
    "peace": "Peace", "peaceful": "Peace", "peacefulness": "Peace", "peacful": "Peace",
    "sadness": "Sadness", "sad": "Sadness", "sadnes": "Sadness", "saddness": "Sadness",
    "surprise": "Surprise", "surprised": "Surprise", "suprise": "Surprise", "surprize": "Surprise",
    "suprised": "Surprise",
}

# HECO -> EMOTIC when HECO joins EMOTIC training. Seven names exist in both vocabularies with
# the same meaning; EMOTIC has no "Disgust", its "Aversion" (feeling disgust, dislike,
# repulsion) is the same emotion.
HECO_TO_EMOTIC: dict[str, str] = {
    "Anger": "Anger",
    "Disgust": "Aversion",
    "Excitement": "Excitement",
    "Fear": "Fear",
    "Happiness": "Happiness",
    "Peace": "Peace",
    "Sadness": "Sadness",
    "Surprise": "Surprise",
}

_HECO_INDEX = {name: i for i, name in enumerate(HECO_CATEGORIES)}
_EMOTIC_INDEX = {name: i for i, name in enumerate(EMOTIC_CATEGORIES)}


def _normalise(name: str) -> str:
    return "".join(name.split()).lower()


def canonical_heco_category(name: str) -> str | None:
    """The HECO category a (possibly misspelt) label stands for, or None if unknown."""
    return HECO_ALIASES.get(_normalise(name))


def heco_labels_path(root: str | Path) -> Path:
    root = Path(root)
    return root if root.is_file() else root / LABELS_RELATIVE_PATH


def _find_image(base: Path, name: str, images_dir: Path | None) -> tuple[Path | None, bool]:
    """(the image file, whether it resolves inside the folder it was found in)."""
    folders = [images_dir] if images_dir is not None else [base / d for d in IMAGE_DIRS]
    for folder in folders:
        candidate = folder / name
        try:
            found = candidate.is_file()
        except OSError:  # a name the file system cannot hold (too long, ...): not there
            found = False
        if found:
            return candidate, resolves_inside(candidate, Path(os.path.realpath(folder)))
    return None, True


def _number(path: Path, where: str, text: str, allow_empty: bool) -> float:
    text = text.strip()
    if not text and allow_empty:
        return float("nan")
    try:
        value = float(text)
    except ValueError:
        raise AnnotationError(path, where, f"expected a number, got {text!r}") from None
    if not np.isfinite(value) and not allow_empty:
        raise AnnotationError(path, where, f"expected a finite number, got {text!r}")
    return value


def load_heco(
    root: str | Path, *, images_dir: str | Path | None = None, report: ReadReport | None = None
) -> list[ImageRecord]:
    """All HECO images with their people; categories are 8-dim over ``HECO_CATEGORIES``."""
    labels_path = heco_labels_path(root)
    if not labels_path.is_file():
        raise FileNotFoundError(f"{labels_path}: HECO label file not found")
    base = labels_path.parent.parent if labels_path.parent.name == "Labels" else labels_path.parent
    own_report = report is None
    report = report if report is not None else ReadReport(source=f"HECO {labels_path}")
    images_dir = Path(images_dir) if images_dir is not None else None

    with labels_path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        try:
            header = [h.strip() for h in (reader.fieldnames or [])]
        except csv.Error as err:
            raise AnnotationError(labels_path, "line 1", f"unreadable CSV header ({err})") from None
        reader.fieldnames = header
        for column in HECO_COLUMNS:
            if column not in header:
                raise AnnotationError(labels_path, column, f"missing column (header: {header})")
        rows = read_csv_rows(labels_path, reader)

    grouped: dict[str, ImageRecord | None] = {}
    for line, row in enumerate(rows, start=2):
        where = f"line {line}"
        name = (row["Image"] or "").strip()
        if not name:
            raise AnnotationError(labels_path, f"{where}: Image", "empty")
        box = np.array([_number(labels_path, f"{where}: {c}", row[c] or "", False)
                        for c in ("xmin", "ymin", "xmax", "ymax")], dtype=np.float64)
        category = canonical_heco_category(row["Category"] or "")
        if category is None:
            raise AnnotationError(labels_path, f"{where}: Category",
                                  f"unknown category {row['Category']!r} (known: {HECO_CATEGORIES}; "
                                  "add new spellings to HECO_ALIASES)")
        if _normalise(row["Category"]) != _normalise(category):
            report.note("category spelling mapped by the alias table", f"{where}: {row['Category']!r}->{category}")
        vad = np.array([_number(labels_path, f"{where}: {c}", row[c] or "", True)
                        for c in ("Valence", "Arousal", "Dominance")])
        if np.any(np.isfinite(vad) & ((vad < 1) | (vad > 10))):
            raise AnnotationError(labels_path, f"{where}: Valence/Arousal/Dominance",
                                  f"values {vad.tolist()} outside the 1..10 scale")

        if name not in grouped:
            problem = escape_problem(name)
            if problem:
                raise AnnotationError(labels_path, f"{where}: Image", problem)
            image_path, inside = _find_image(base, name, images_dir)
            if image_path is None:
                report.skip_image("image file not found", name)
                grouped[name] = None
            elif not inside:
                report.skip_image(OUTSIDE_ROOT, f"{name}: {image_path}")
                grouped[name] = None
            else:
                try:
                    width, height = image_size(image_path)
                except (FileNotFoundError, ImageError) as err:
                    report.skip_image("image unreadable or not PNG/JPEG/BMP/WebP", f"{name}: {err}")
                    grouped[name] = None
                else:
                    grouped[name] = ImageRecord(path=image_path, width=width, height=height, people=[],
                                                split=HECO_SPLIT, source="heco")
        record = grouped[name]
        if record is None:
            continue
        if box[2] < box[0] or box[3] < box[1]:
            report.note("box corners swapped (xmax < xmin or ymax < ymin), read as the box they span",
                        f"{labels_path.name}:{where}")
        x1, x2 = sorted((box[0], box[2]))
        y1, y2 = sorted((box[1], box[3]))
        clipped = np.array([np.clip(x1, 0, record.width), np.clip(y1, 0, record.height),
                            np.clip(x2, 0, record.width), np.clip(y2, 0, record.height)], dtype=np.float32)
        if clipped[2] <= clipped[0] or clipped[3] <= clipped[1]:
            report.skip_person("box empty after clipping to the image", f"{labels_path.name}:{where}")
            continue
        categories = np.zeros(len(HECO_CATEGORIES), dtype=np.float32)
        categories[_HECO_INDEX[category]] = 1.0
        unit_vad = np.array([vad_to_unit(v) if np.isfinite(v) else np.nan for v in vad], dtype=np.float32)
        record.people.append(PersonRecord(box=clipped, categories=categories, vad=unit_vad))

    records = []
    for name, record in grouped.items():
        if record is None:
            continue
        if record.people:
            records.append(record)
        else:
            report.skip_image("no usable person", name)
    if own_report:
        report.log(LOGGER)
    return records


def heco_to_emotic(record: ImageRecord) -> ImageRecord:
    """The same image with each person's HECO category mapped to EMOTIC's 26 (``HECO_TO_EMOTIC``)."""
    people = []
    for person in record.people:
        if person.categories.shape != (len(HECO_CATEGORIES),):
            raise ValueError(f"{record.path}: expected {len(HECO_CATEGORIES)} HECO categories per person, "
                             f"got shape {person.categories.shape}")
        vector = np.zeros(len(EMOTIC_CATEGORIES), dtype=np.float32)
        for index in np.flatnonzero(person.categories > 0):
            vector[_EMOTIC_INDEX[HECO_TO_EMOTIC[HECO_CATEGORIES[index]]]] = 1.0
        people.append(replace(person, categories=vector))
    return replace(record, people=people)
