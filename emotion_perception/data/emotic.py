"""EMOTIC reader (official ``Annotations.mat`` or the common CSV export) and ``Annotations.mat`` writer.

Dataset root as distributed::

    ROOT/Annotations/Annotations.mat      keys train, val, test
    ROOT/emotic/<folder>/<filename>        images (folder e.g. "mscoco/images")

The .mat file is read with ``scipy.io.loadmat(..., struct_as_record=False, squeeze_me=True)``;
fields are accessed by name. Per image: ``filename``, ``folder``, ``image_size.{n_row, n_col}``,
``person``. Per person: ``body_bbox`` [x1 y1 x2 y2]; train has one annotator
(``annotations_categories.categories``, ``annotations_continuous.{valence,arousal,dominance}``),
val/test have per-annotator struct arrays plus ``combined_categories`` and
``combined_continuous``, which are the labels we use there. ``gender`` and ``age`` are strings.

``squeeze_me`` collapses every 1x1 array: an image with one person gives a struct instead of an
array of structs, one category gives a string instead of an array of strings; ``_items``
undoes that. Boxes are clipped to the image with x against the width (``n_col``) and y against
the height (``n_row``). People with no category are skipped and reported (:class:`ReadReport`).

The CSV export (columns Index, Folder, Filename, Image Size, BBox, Categorical_Labels,
Continuous_Labels, Gender, Age; one row per person) is accepted too; see :func:`read_emotic_csv`
for its image-size ambiguity.
"""

from __future__ import annotations

import ast
import csv
import logging
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from emotion_perception.data.categories import EMOTIC_CATEGORIES, vad_to_unit
from emotion_perception.data.imageio import ImageError, image_size
from emotion_perception.data.paths import OUTSIDE_ROOT, escape_problem, resolves_inside
from emotion_perception.data.records import AnnotationError, ImageRecord, PersonRecord, read_csv_rows
from emotion_perception.data.report import ReadReport

LOGGER = logging.getLogger(__name__)

EMOTIC_SPLITS: tuple[str, ...] = ("train", "val", "test")
EMOTIC_CATEGORY_INDEX: dict[str, int] = {name: i for i, name in enumerate(EMOTIC_CATEGORIES)}
MAT_RELATIVE_PATH = Path("Annotations") / "Annotations.mat"
IMAGES_DIRNAME = "emotic"
CSV_COLUMNS: tuple[str, ...] = (
    "Index", "Folder", "Filename", "Image Size", "BBox", "Categorical_Labels", "Continuous_Labels", "Gender", "Age",
)
VAD_FIELDS: tuple[str, ...] = ("valence", "arousal", "dominance")
# Largest image side an annotation may state (JPEG's own limit): beyond it, a size is a typo
# or an attack (inf, 1e300), not a photograph.
MAX_IMAGE_SIDE = 65535
IMAGE_FIELDS: tuple[str, ...] = ("filename", "folder", "image_size", "original_database", "person")
# Where the CSV export is usually found under the dataset root (the converter writes
# <root>/emotic_pre/<split>.csv), and the names it is known by.
CSV_DIRS: tuple[str, ...] = ("emotic_pre", "Annotations", ".")
CSV_NAMES: tuple[str, ...] = ("{split}.csv", "annot_arrs_{split}.csv")


# --------------------------------------------------------------------------- finding files


def find_emotic_annotations(root: str | Path, split: str) -> Path:
    """The annotation file for ``split`` under ``root``: the official .mat first, else a CSV export.

    ``root`` may also be the annotation file itself.
    """
    root = Path(root)
    if root.is_file():
        return root
    mat = root / MAT_RELATIVE_PATH
    if mat.is_file():
        return mat
    tried = [mat]
    for folder in CSV_DIRS:
        for name in CSV_NAMES:
            candidate = root / folder / name.format(split=split)
            if candidate.is_file():
                return candidate
            tried.append(candidate)
    raise FileNotFoundError(
        f"{root}: no EMOTIC annotations found for split '{split}' (looked for "
        + ", ".join(str(p) for p in tried)
        + ")"
    )


def emotic_images_root(root: str | Path, annotations: Path) -> Path:
    """Folder that image paths (``<folder>/<filename>``) are relative to."""
    root = Path(root)
    if root.is_file():  # the annotation file was given directly: ROOT/Annotations/file
        root = (annotations.parent.parent if annotations.parent.name in ("Annotations", "emotic_pre")
                else annotations.parent)
    return root / IMAGES_DIRNAME


def load_emotic(root: str | Path, split: str, *, report: ReadReport | None = None) -> list[ImageRecord]:
    """All annotated images of an EMOTIC split, each with all its people (26-category labels)."""
    return load_emotic_splits(root, (split,), report=report)[split]


def load_emotic_splits(
    root: str | Path, splits: Sequence[str] = EMOTIC_SPLITS, *, report: ReadReport | None = None
) -> dict[str, list[ImageRecord]]:
    """Several splits at once (the .mat file is parsed once)."""
    for split in splits:
        if split not in EMOTIC_SPLITS:
            raise ValueError(f"EMOTIC split must be one of {EMOTIC_SPLITS}, got {split!r}")
    own_report = report is None
    report = report if report is not None else ReadReport(source=f"EMOTIC {Path(root)}")
    result: dict[str, list[ImageRecord]] = {}
    mat_path = Path(root) / MAT_RELATIVE_PATH if not Path(root).is_file() else Path(root)
    if mat_path.suffix.lower() == ".mat" and mat_path.is_file():
        result = read_emotic_mat(mat_path, splits, emotic_images_root(root, mat_path), report=report)
    else:
        for split in splits:
            path = find_emotic_annotations(root, split)
            result[split] = read_emotic_csv(path, split, emotic_images_root(root, path), report=report)
    if own_report:
        report.log(LOGGER)
    return result


# --------------------------------------------------------------------------- .mat parsing


def _items(value: Any) -> list[Any]:
    """Undo squeeze_me: an array becomes its elements, a lone value a one-element list."""
    if value is None:
        return []
    if isinstance(value, np.ndarray):
        return list(value.ravel())
    return [value]


def _has(struct: Any, name: str) -> bool:
    return name in getattr(struct, "_fieldnames", ())


class _MatContext:
    """Names the file and the field path (``train[3].person[1].body_bbox``) in errors."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def error(self, where: str, problem: str) -> AnnotationError:
        return AnnotationError(self.path, where, problem)

    def field(self, struct: Any, name: str, where: str) -> Any:
        if not _has(struct, name):
            raise self.error(f"{where}.{name}", "missing")
        return getattr(struct, name)

    def string(self, value: Any, where: str) -> str:
        if isinstance(value, str):
            return value
        if isinstance(value, np.ndarray) and value.size == 0:
            return ""
        raise self.error(where, f"expected a string, got {type(value).__name__}")

    def number(self, value: Any, where: str) -> float:
        array = np.asarray(value)
        if array.size == 0:
            return float("nan")
        if array.size != 1 or not np.issubdtype(array.dtype, np.number):
            raise self.error(where, f"expected one number, got {value!r}")
        return float(array.reshape(()))

    def categories(self, value: Any, where: str) -> list[str]:
        names = []
        for item in _items(value):
            name = self.string(item, where)
            if name not in EMOTIC_CATEGORY_INDEX:
                raise self.error(where, f"unknown category {name!r} (expected one of the 26 EMOTIC categories)")
            names.append(name)
        return names

    def vad(self, struct: Any, where: str) -> np.ndarray:
        """(3,) raw 1..10 ratings of one continuous-annotation struct, NaN where absent."""
        if isinstance(struct, np.ndarray) and struct.size == 0:
            return np.full(3, np.nan)
        values = np.array([self.number(self.field(struct, name, where), f"{where}.{name}") for name in VAD_FIELDS])
        bad = np.isfinite(values) & ((values < 1) | (values > 10))
        if bad.any():
            name = VAD_FIELDS[int(np.argmax(bad))]
            raise self.error(f"{where}.{name}", f"value {values[bad][0]} outside the 1..10 scale")
        return values

    def box(self, value: Any, where: str) -> np.ndarray:
        try:
            box = np.asarray(value, dtype=np.float64).ravel()
        except (TypeError, ValueError):
            raise self.error(where, f"expected 4 numbers x1 y1 x2 y2, got {value!r}") from None
        if box.shape != (4,) or not np.all(np.isfinite(box)):
            raise self.error(where, f"expected 4 finite numbers x1 y1 x2 y2, got {box.tolist()}")
        return box


def _load_mat(path: Path) -> dict[str, Any]:
    from scipy.io import loadmat

    try:
        return loadmat(str(path), struct_as_record=False, squeeze_me=True)
    except NotImplementedError as err:  # MATLAB v7.3 files are HDF5
        raise AnnotationError(path, "<file>", f"not a MATLAB v5 .mat file ({err})") from err
    except (ValueError, OSError, TypeError) as err:
        raise AnnotationError(path, "<file>", f"cannot be read as a .mat file ({err})") from err


def _mean_vad(ctx: _MatContext, annotators: list[Any], where: str) -> np.ndarray:
    rows = [ctx.vad(a, f"{where}[{i}]" if len(annotators) > 1 else where) for i, a in enumerate(annotators)]
    if not rows:
        return np.full(3, np.nan)
    stacked = np.stack(rows)
    with np.errstate(invalid="ignore"):
        counts = np.isfinite(stacked).sum(axis=0)
        sums = np.nansum(stacked, axis=0)
    return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def _person_labels(ctx: _MatContext, person: Any, where: str) -> tuple[list[str], np.ndarray]:
    """Categories and raw VAD of one person: combined fields when present (val/test), else the
    union of annotators' categories and the mean of their ratings (train has one annotator)."""
    if _has(person, "combined_categories"):
        categories = ctx.categories(person.combined_categories, f"{where}.combined_categories")
    else:
        annotators = _items(ctx.field(person, "annotations_categories", where))
        categories = []
        for i, annotator in enumerate(annotators):
            key = f"{where}.annotations_categories[{i}]" if len(annotators) > 1 else f"{where}.annotations_categories"
            for name in ctx.categories(ctx.field(annotator, "categories", key), f"{key}.categories"):
                if name not in categories:
                    categories.append(name)
    if _has(person, "combined_continuous"):
        vad = ctx.vad(person.combined_continuous, f"{where}.combined_continuous")
    else:
        annotators = _items(ctx.field(person, "annotations_continuous", where))
        vad = _mean_vad(ctx, annotators, f"{where}.annotations_continuous")
    return categories, vad


def _multi_hot(names: Iterable[str]) -> np.ndarray:
    vector = np.zeros(len(EMOTIC_CATEGORIES), dtype=np.float32)
    for name in names:
        vector[EMOTIC_CATEGORY_INDEX[name]] = 1.0
    return vector


def _unit_vad(raw: np.ndarray) -> np.ndarray:
    return np.array([vad_to_unit(v) if np.isfinite(v) else np.nan for v in raw], dtype=np.float32)


def _make_person(
    box: np.ndarray, categories: list[str], vad_raw: np.ndarray, gender: str, age: str,
    width: int, height: int, report: ReadReport, where: str,
) -> PersonRecord | None:
    if not categories:
        report.skip_person("no emotion category", where)
        return None
    if box[2] < box[0] or box[3] < box[1]:
        report.note("box corners swapped (x2 < x1 or y2 < y1), read as the box they span", where)
    x1, x2 = sorted((float(box[0]), float(box[2])))
    y1, y2 = sorted((float(box[1]), float(box[3])))
    clipped = np.array(
        [min(max(x1, 0.0), width), min(max(y1, 0.0), height), min(max(x2, 0.0), width), min(max(y2, 0.0), height)],
        dtype=np.float32,
    )
    if clipped[2] <= clipped[0] or clipped[3] <= clipped[1]:
        report.skip_person("box empty after clipping to the image", where)
        return None
    return PersonRecord(box=clipped, categories=_multi_hot(categories), vad=_unit_vad(vad_raw), gender=gender, age=age)


def read_emotic_mat(
    path: str | Path, splits: Sequence[str], images_root: str | Path, *, report: ReadReport | None = None
) -> dict[str, list[ImageRecord]]:
    """Parse the official ``Annotations.mat`` into :class:`ImageRecord` lists, one per split."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: EMOTIC annotation file not found")
    report = report if report is not None else ReadReport(source=f"EMOTIC {path}")
    ctx = _MatContext(path)
    mat = _load_mat(path)
    images_root = Path(images_root)
    images_resolved = Path(os.path.realpath(images_root))
    result: dict[str, list[ImageRecord]] = {}
    for split in splits:
        if split not in mat:
            raise ctx.error(split, f"split missing (keys present: {sorted(k for k in mat if not k.startswith('__'))})")
        records = []
        for index, image in enumerate(_items(mat[split])):
            where = f"{split}[{index}]"
            filename = ctx.string(ctx.field(image, "filename", where), f"{where}.filename")
            folder = ctx.string(ctx.field(image, "folder", where), f"{where}.folder")
            for name, value in (("folder", folder), ("filename", filename)):
                problem = escape_problem(value)
                if problem:
                    raise ctx.error(f"{where}.{name}", problem)
            size = ctx.field(image, "image_size", where)
            width = ctx.number(ctx.field(size, "n_col", f"{where}.image_size"), f"{where}.image_size.n_col")
            height = ctx.number(ctx.field(size, "n_row", f"{where}.image_size"), f"{where}.image_size.n_row")
            if not (0 < width <= MAX_IMAGE_SIDE and 0 < height <= MAX_IMAGE_SIDE):
                raise ctx.error(f"{where}.image_size",
                                f"expected n_col, n_row in (0, {MAX_IMAGE_SIDE}], got {width}, {height}")
            people = []
            persons = _items(ctx.field(image, "person", where))
            for p_index, person in enumerate(persons):
                p_where = f"{where}.person[{p_index}]"
                box = ctx.box(ctx.field(person, "body_bbox", p_where), f"{p_where}.body_bbox")
                categories, vad = _person_labels(ctx, person, p_where)
                gender = ctx.string(person.gender, f"{p_where}.gender") if _has(person, "gender") else ""
                age = ctx.string(person.age, f"{p_where}.age") if _has(person, "age") else ""
                record = _make_person(box, categories, vad, gender, age, int(width), int(height), report,
                                      f"{path.name}:{p_where}")
                if record is not None:
                    people.append(record)
            if not people:
                report.skip_image("no usable person", f"{path.name}:{where}")
                continue
            image_path = images_root / folder / filename
            if not resolves_inside(image_path, images_resolved):
                report.skip_image(OUTSIDE_ROOT, f"{path.name}:{where}: {image_path}")
                continue
            records.append(
                ImageRecord(path=image_path, width=int(width), height=int(height),
                            people=people, split=split, source="emotic")
            )
        result[split] = records
    return result


# --------------------------------------------------------------------------- CSV export


def _literal(path: Path, where: str, text: str) -> Any:
    try:
        return ast.literal_eval(text) if text.strip() else []
    except (ValueError, SyntaxError) as err:
        raise AnnotationError(path, where, f"cannot parse {text!r} ({err.__class__.__name__})") from None


def _image_size_order(path: Path, sizes: dict[Path, tuple[float, float]], images_resolved: Path) -> str:
    """Decide whether "Image Size" lists (height, width) or (width, height) from images on disk."""
    votes = {"hw": 0, "wh": 0}
    for image_path, (a, b) in sizes.items():
        if a == b or not image_path.is_file() or not resolves_inside(image_path, images_resolved):
            continue
        try:
            width, height = image_size(image_path)
        except (FileNotFoundError, ImageError):
            continue  # no vote; the image itself is skipped and reported when it is read
        if (height, width) == (a, b):
            votes["hw"] += 1
        elif (width, height) == (a, b):
            votes["wh"] += 1
        if sum(votes.values()) >= 8:
            break
    if votes["hw"] and votes["wh"]:
        raise AnnotationError(path, "Image Size", f"inconsistent with the image files ({votes})")
    if votes["wh"]:
        return "wh"
    return "hw"


def read_emotic_csv(
    path: str | Path,
    split: str,
    images_root: str | Path,
    *,
    image_size_order: str = "auto",
    report: ReadReport | None = None,
) -> list[ImageRecord]:
    """Parse the CSV export (one row per person) into images grouped with all their people.

    The converter that writes this CSV stores "Image Size" as the two fields of the .mat's
    ``image_size`` in file order, i.e. ``[n_row, n_col]`` = (height, width), and clips boxes with
    the first against x, which is wrong for non-square images. ``image_size_order`` says how to
    read the column: ``"hw"``, ``"wh"``, or ``"auto"`` (compare with up to 8 images found on disk;
    ``"hw"`` when none can be checked). Boxes are clipped again, correctly. Continuous labels are
    ``[valence, arousal, dominance]`` on 1..10 (empty when unknown).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: EMOTIC CSV file not found")
    if image_size_order not in ("auto", "hw", "wh"):
        raise ValueError(f"image_size_order must be 'auto', 'hw' or 'wh', got {image_size_order!r}")
    report = report if report is not None else ReadReport(source=f"EMOTIC {path}")
    images_root = Path(images_root)
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        rows = read_csv_rows(path, reader)
        header = reader.fieldnames or []
        for column in CSV_COLUMNS:
            if column not in header:
                raise AnnotationError(path, column, f"missing column (header: {header})")

    parsed = []
    sizes: dict[Path, tuple[float, float]] = {}
    for line, row in enumerate(rows, start=2):
        where = f"line {line}"
        folder, filename = row["Folder"].strip(), row["Filename"].strip()
        if not filename:
            raise AnnotationError(path, f"{where}: Filename", "empty")
        for column, value in (("Folder", folder), ("Filename", filename)):
            problem = escape_problem(value)
            if problem:
                raise AnnotationError(path, f"{where}: {column}", problem)
        size = _literal(path, f"{where}: Image Size", row["Image Size"])
        if not (isinstance(size, (list, tuple)) and len(size) == 2
                and all(isinstance(v, (int, float)) and 0 < v <= MAX_IMAGE_SIDE for v in size)):
            raise AnnotationError(path, f"{where}: Image Size",
                                  f"expected two numbers in (0, {MAX_IMAGE_SIDE}], got {row['Image Size']!r}")
        box = _literal(path, f"{where}: BBox", row["BBox"])
        if not (isinstance(box, (list, tuple)) and len(box) == 4
                and all(isinstance(v, (int, float)) and math.isfinite(v) for v in box)):
            raise AnnotationError(path, f"{where}: BBox",
                                  f"expected [x1, y1, x2, y2] finite numbers, got {row['BBox']!r}")
        categories = _literal(path, f"{where}: Categorical_Labels", row["Categorical_Labels"])
        if not isinstance(categories, (list, tuple)) or not all(isinstance(c, str) for c in categories):
            raise AnnotationError(path, f"{where}: Categorical_Labels",
                                  f"expected a list of names, got {row['Categorical_Labels']!r}")
        for name in categories:
            if name not in EMOTIC_CATEGORY_INDEX:
                raise AnnotationError(path, f"{where}: Categorical_Labels", f"unknown category {name!r}")
        continuous = _literal(path, f"{where}: Continuous_Labels", row["Continuous_Labels"])
        if not isinstance(continuous, (list, tuple)) or len(continuous) not in (0, 3):
            raise AnnotationError(path, f"{where}: Continuous_Labels",
                                  f"expected [valence, arousal, dominance], got {row['Continuous_Labels']!r}")
        vad = np.array(continuous, dtype=np.float64) if continuous else np.full(3, np.nan)
        if np.any(np.isfinite(vad) & ((vad < 1) | (vad > 10))):
            raise AnnotationError(path, f"{where}: Continuous_Labels", f"values {vad.tolist()} outside the 1..10 scale")
        image_path = images_root / folder / filename
        sizes.setdefault(image_path, (float(size[0]), float(size[1])))
        parsed.append((where, image_path, (float(size[0]), float(size[1])), np.array(box, dtype=np.float64),
                       list(categories), vad, row["Gender"].strip(), row["Age"].strip()))

    images_resolved = Path(os.path.realpath(images_root))
    order = _image_size_order(path, sizes, images_resolved) if image_size_order == "auto" else image_size_order
    grouped: dict[Path, ImageRecord] = {}
    for where, image_path, (a, b), box, categories, vad, gender, age in parsed:
        width, height = (b, a) if order == "hw" else (a, b)
        record = grouped.get(image_path)
        if record is None:
            record = ImageRecord(path=image_path, width=int(width), height=int(height), people=[], split=split,
                                 source="emotic")
            grouped[image_path] = record
        person = _make_person(box, categories, vad, gender, age, int(width), int(height), report,
                              f"{path.name}:{where}")
        if person is not None:
            record.people.append(person)
    records = []
    for image_path, record in grouped.items():
        if not record.people:
            report.skip_image("no usable person", f"{path.name}:{image_path.name}")
        elif not resolves_inside(image_path, images_resolved):
            report.skip_image(OUTSIDE_ROOT, f"{path.name}: {image_path}")
        else:
            records.append(record)
    return records


# --------------------------------------------------------------------------- .mat writer


@dataclass
class EmoticPersonAnnotation:
    """One person as stored in ``Annotations.mat`` (VAD on the raw 1..10 scale).

    Train persons have exactly one annotator and no combined fields; val/test persons have
    several annotators plus ``combined_categories`` / ``combined_vad``.
    """

    body_bbox: Sequence[float]
    annotator_categories: list[list[str]]
    annotator_vad: Sequence[Sequence[float]]
    combined_categories: list[str] | None = None
    combined_vad: Sequence[float] | None = None
    gender: str = ""
    age: str = ""


@dataclass
class EmoticImageAnnotation:
    filename: str
    folder: str
    width: int
    height: int
    people: list[EmoticPersonAnnotation] = field(default_factory=list)
    original_database: str = ""


def _mat_struct(fields: Mapping[str, Any]) -> np.ndarray:
    """A 1x1 MATLAB struct (numpy structured array of objects, as savemat expects)."""
    return _mat_struct_array([fields])


def _mat_struct_array(items: Sequence[Mapping[str, Any]], names: Sequence[str] | None = None) -> np.ndarray:
    names = list(names) if names is not None else list(items[0].keys())
    array = np.zeros((1, len(items)), dtype=[(name, "O") for name in names])
    for i, fields in enumerate(items):
        for name in names:
            array[0, i][name] = fields[name]
    return array


def _mat_cell(strings: Sequence[str]) -> np.ndarray:
    cell = np.empty((1, len(strings)), dtype=object)
    for i, text in enumerate(strings):
        cell[0, i] = text
    return cell


def _mat_vad(vad: Sequence[float]) -> np.ndarray:
    return _mat_struct({name: float(value) for name, value in zip(VAD_FIELDS, vad)})


def write_emotic_mat(path: str | Path, splits: Mapping[str, Sequence[EmoticImageAnnotation]]) -> None:
    """Write an ``Annotations.mat`` with the official nesting (see the module docstring)."""
    from scipy.io import savemat

    content = {}
    for split, images in splits.items():
        image_items = []
        for image in images:
            if not image.people:
                raise ValueError(f"{image.filename}: an EMOTIC image needs at least one annotated person")
            person_items = []
            for person in image.people:
                if len(person.annotator_categories) != len(person.annotator_vad) or not person.annotator_categories:
                    raise ValueError(f"{image.filename}: one categories list and one VAD per annotator are required")
                categories = _mat_struct_array([{"categories": _mat_cell(c)} for c in person.annotator_categories])
                continuous = _mat_struct_array([{n: float(v) for n, v in zip(VAD_FIELDS, vad)}
                                                for vad in person.annotator_vad])
                fields: dict[str, Any] = {"body_bbox": np.asarray(person.body_bbox, dtype=np.float64).reshape(1, 4),
                                          "annotations_categories": categories}
                if person.combined_categories is not None:
                    if person.combined_vad is None:
                        raise ValueError(f"{image.filename}: combined_vad is required with combined_categories")
                    fields["combined_categories"] = _mat_cell(person.combined_categories)
                    fields["annotations_continuous"] = continuous
                    fields["combined_continuous"] = _mat_vad(person.combined_vad)
                else:
                    fields["annotations_continuous"] = continuous
                fields["gender"] = person.gender
                fields["age"] = person.age
                person_items.append(fields)
            image_items.append({
                "filename": image.filename,
                "folder": image.folder,
                "image_size": _mat_struct({"n_row": float(image.height), "n_col": float(image.width)}),
                "original_database": _mat_struct({"name": image.original_database, "info": ""}),
                "person": _mat_struct_array(person_items),
            })
        content[split] = _mat_struct_array(image_items, IMAGE_FIELDS)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    savemat(str(path), content, do_compression=True)
