"""CAER-S reader: images in class folders, face boxes from a detector, cached in a text file.

Layout (``ROOT`` may be the folder that contains ``CAER-S`` or ``CAER-S`` itself)::

    CAER-S/{train,test}/{Anger,Disgust,Fear,Happy,Neutral,Sad,Surprise}/*.png   ("Angry" accepted)
    CAER-S/face_boxes.txt                                                         face-box cache

Splits: ``test`` is the official test folder; ``val`` is 10% of each class of the official train
folder, drawn with a seeded permutation (deterministic for a given file list and seed); ``train``
is the rest.

Face-box cache: one line per image, ``relpath,label,x1,y1,x2,y2`` (relpath relative to
``CAER-S``, label the canonical class name, box in pixels, continuous coordinates), or
``relpath,label,,,,`` when the detector found no face, so no image is ever detected twice.
Lines starting with ``#`` are comments (the first names the detector). Boxes are computed once,
for the images missing from the cache, with a progress bar, and appended as they come. When
several faces are found, the largest is taken (CAER-S frames are framed on the speaker).

No-face policy (``no_face``): ``"keep"`` (default) keeps the image with ``face_box=None``, and the
face pipeline falls back to a centred crop (``faces.fallback_face_box``); ``"drop"`` leaves it
out. Either way the count is reported.
"""

from __future__ import annotations

import csv
import io
import logging
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np

from emotion_perception.data.categories import CAER_CATEGORIES
from emotion_perception.data.paths import OUTSIDE_ROOT, resolves_inside
from emotion_perception.data.records import AnnotationError, FaceRecord, read_csv_rows
from emotion_perception.data.report import ReadReport

LOGGER = logging.getLogger(__name__)

CAER_DIRNAME = "CAER-S"
CAER_SPLITS: tuple[str, ...] = ("train", "val", "test")
FACE_CACHE_NAME = "face_boxes.txt"
NO_FACE_POLICIES: tuple[str, ...] = ("keep", "drop")
IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg")
# Folder spellings -> canonical class (the released archive has used "Angry").
CAER_FOLDER_ALIASES: dict[str, str] = {name: name for name in CAER_CATEGORIES} | {"Angry": "Anger"}
_CLASS_INDEX = {name: i for i, name in enumerate(CAER_CATEGORIES)}
# Cache lines are appended in batches so an interrupted detection run keeps most of its work.
_CACHE_FLUSH_EVERY = 200

FaceBoxFunction = Callable[[np.ndarray], np.ndarray]


def caer_dir(root: str | Path) -> Path:
    """The ``CAER-S`` folder under ``root`` (or ``root`` itself when it holds train/ or test/)."""
    root = Path(root)
    if (root / CAER_DIRNAME).is_dir():
        return root / CAER_DIRNAME
    if (root / "train").is_dir() or (root / "test").is_dir():
        return root
    raise FileNotFoundError(f"{root}: no CAER-S dataset found (expected {root / CAER_DIRNAME}/train and test)")


def list_caer_images(base: Path, folder: str, report: ReadReport | None = None) -> list[tuple[str, int]]:
    """(relpath, class index) of every image of ``base/folder``, sorted by relpath.

    An image (or class folder) that is a symlink resolving outside ``base`` is left out and
    counted in ``report``.
    """
    report = report if report is not None else ReadReport(source=f"CAER-S {base}")
    base_resolved = Path(os.path.realpath(base))
    split_dir = base / folder
    if not split_dir.is_dir():
        raise FileNotFoundError(f"{split_dir}: CAER-S split folder not found")
    items = []
    for class_dir in sorted(p for p in split_dir.iterdir() if p.is_dir()):
        label = CAER_FOLDER_ALIASES.get(class_dir.name)
        if label is None:
            raise AnnotationError(class_dir, "class folder",
                                  f"unknown CAER-S class {class_dir.name!r} (expected one of {CAER_CATEGORIES})")
        for image in sorted(class_dir.iterdir()):
            if image.suffix.lower() in IMAGE_SUFFIXES and image.is_file():
                relpath = image.relative_to(base).as_posix()
                if not resolves_inside(image, base_resolved):
                    report.skip_image(OUTSIDE_ROOT, f"{relpath} -> {os.path.realpath(image)}")
                    continue
                items.append((relpath, _CLASS_INDEX[label]))
    if not items:
        raise FileNotFoundError(f"{split_dir}: no images found in its class folders")
    return sorted(items)


# --------------------------------------------------------------------------- face-box cache


def format_face_cache_line(relpath: str, label: str, box: np.ndarray | Sequence[float] | None) -> str:
    """One cache line (without newline); an empty box means "no face found"."""
    fields = [relpath, label] + (["", "", "", ""] if box is None else [f"{float(v):.1f}" for v in box])
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="").writerow(fields)
    return buffer.getvalue()


def read_face_cache(path: str | Path) -> dict[str, tuple[str, np.ndarray | None]]:
    """relpath -> (label, face box or None) from a cache file (empty dict when it does not exist)."""
    path = Path(path)
    entries: dict[str, tuple[str, np.ndarray | None]] = {}
    if not path.is_file():
        return entries
    with path.open(newline="", encoding="utf-8") as handle:
        for line_number, row in enumerate(read_csv_rows(path, csv.reader(handle)), start=1):
            if not row or row[0].startswith("#"):
                continue
            where = f"line {line_number}"
            if len(row) != 6:
                raise AnnotationError(path, where, f"expected relpath,label,x1,y1,x2,y2, got {len(row)} fields")
            relpath, label, *coords = (field.strip() for field in row)
            if label not in _CLASS_INDEX:
                raise AnnotationError(path, f"{where}: label", f"unknown class {label!r}")
            if all(c == "" for c in coords):
                entries[relpath] = (label, None)
                continue
            values = []
            for name, text in zip(("x1", "y1", "x2", "y2"), coords):
                try:
                    values.append(float(text))
                except ValueError:
                    raise AnnotationError(path, f"{where}: {name}", f"expected a number, got {text!r}") from None
            box = np.array(values, dtype=np.float32)
            if not np.all(np.isfinite(box)) or box[2] <= box[0] or box[3] <= box[1]:
                raise AnnotationError(path, f"{where}: x1,y1,x2,y2", f"not a valid box: {values}")
            entries[relpath] = (label, box)
    return entries


def write_face_cache(
    path: str | Path, entries: Iterable[tuple[str, str, np.ndarray | None]], header: str | None = None,
    append: bool = False,
) -> None:
    """Write (or append) cache lines; ``header`` becomes a leading ``#`` comment."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a" if append else "w", encoding="utf-8") as handle:
        if header is not None:
            handle.write(f"# {header}\n")
        for relpath, label, box in entries:
            handle.write(format_face_cache_line(relpath, label, box) + "\n")


def _largest_face(detections: np.ndarray) -> np.ndarray | None:
    detections = np.asarray(detections, dtype=np.float32)
    if detections.size == 0:
        return None
    detections = detections.reshape(len(detections), -1)
    areas = (detections[:, 2] - detections[:, 0]) * (detections[:, 3] - detections[:, 1])
    return detections[int(np.argmax(areas)), :4].copy()


def _default_detector(method: str) -> FaceBoxFunction:
    # Imported here: faces.py needs dlib, which the rest of the data layer does not.
    from emotion_perception.data.faces import FaceDetector

    return FaceDetector(method=method).detect


def ensure_face_boxes(
    base: Path,
    items: Sequence[tuple[str, int]],
    cache_path: Path,
    *,
    detector: str = "cnn",
    face_detector: FaceBoxFunction | None = None,
    progress: bool = True,
    report: ReadReport | None = None,
) -> dict[str, tuple[str, np.ndarray | None]]:
    """Cache entries for ``items``, detecting (and appending to the cache) those not cached yet.

    ``face_detector`` maps an RGB image to (K, >=4) boxes [x1, y1, x2, y2, ...]; by default
    ``faces.FaceDetector(method=detector).detect``. An image that cannot be read is counted in
    ``report`` and left out of the result and the cache (a later run tries it again). Boxes are
    appended as they are found (every ``_CACHE_FLUSH_EVERY`` images, and whatever is pending when
    anything, an interrupt included, ends the loop), so no detection is lost.
    """
    from tqdm import tqdm

    from emotion_perception.data.imageio import ImageError, read_rgb

    report = report if report is not None else ReadReport(source=f"CAER-S {base}")

    cache = read_face_cache(cache_path)
    for relpath, label in items:
        cached = cache.get(relpath)
        if cached is not None and cached[0] != CAER_CATEGORIES[label]:
            raise AnnotationError(cache_path, f"{relpath}: label",
                                  f"cache says {cached[0]!r} but the image is in class {CAER_CATEGORIES[label]!r}")
    missing = [(relpath, label) for relpath, label in items if relpath not in cache]
    if not missing:
        return cache
    detect = face_detector if face_detector is not None else _default_detector(detector)
    header = (None if cache_path.is_file()
              else f"CAER-S face boxes, detector={detector}, format relpath,label,x1,y1,x2,y2")
    pending: list[tuple[str, str, np.ndarray | None]] = []
    try:
        for relpath, label in tqdm(missing, desc=f"face boxes ({detector})", unit="img", disable=not progress):
            try:
                image = read_rgb(base / relpath)
            except (FileNotFoundError, ImageError) as err:
                report.skip_image("image unreadable, not PNG/JPEG/BMP/WebP, or over the pixel limit", str(err))
                continue
            box = _largest_face(np.asarray(detect(image)))
            cache[relpath] = (CAER_CATEGORIES[label], box)
            pending.append((relpath, CAER_CATEGORIES[label], box))
            if len(pending) >= _CACHE_FLUSH_EVERY:
                write_face_cache(cache_path, pending, header=header, append=True)
                pending, header = [], None
    finally:
        if pending or header is not None:
            write_face_cache(cache_path, pending, header=header, append=True)
    return cache


# --------------------------------------------------------------------------- splits and records


def split_train_val(
    items: Sequence[tuple[str, int]], val_fraction: float = 0.1, seed: int = 0
) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
    """Carve a validation set out of the official train folder: ``round(val_fraction * n)`` images
    of each class, chosen by a permutation seeded with ``seed`` over the sorted relpaths."""
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    rng = np.random.default_rng(seed)
    train: list[tuple[str, int]] = []
    val: list[tuple[str, int]] = []
    for label in range(len(CAER_CATEGORIES)):
        members = sorted(item for item in items if item[1] == label)
        order = rng.permutation(len(members))
        n_val = int(round(val_fraction * len(members)))
        chosen = set(order[:n_val].tolist())
        for i, item in enumerate(members):
            (val if i in chosen else train).append(item)
    return sorted(train), sorted(val)


def load_caer(
    root: str | Path,
    split: str,
    *,
    detector: str = "cnn",
    no_face: str = "keep",
    val_fraction: float = 0.1,
    seed: int = 0,
    cache: str | Path | None = None,
    face_detector: FaceBoxFunction | None = None,
    report: ReadReport | None = None,
    progress: bool = True,
) -> list[FaceRecord]:
    """FaceRecords of a CAER-S split (``train``, ``val`` or ``test``); see the module docstring."""
    if split not in CAER_SPLITS:
        raise ValueError(f"CAER-S split must be one of {CAER_SPLITS}, got {split!r}")
    if no_face not in NO_FACE_POLICIES:
        raise ValueError(f"no_face must be one of {NO_FACE_POLICIES}, got {no_face!r}")
    base = caer_dir(root)
    cache_path = Path(cache) if cache is not None else base / FACE_CACHE_NAME
    own_report = report is None
    report = report if report is not None else ReadReport(source=f"CAER-S {base} ({split})")

    items = list_caer_images(base, "test" if split == "test" else "train", report)
    boxes = ensure_face_boxes(base, items, cache_path, detector=detector, face_detector=face_detector,
                              progress=progress, report=report)
    if split != "test":
        train, val = split_train_val(items, val_fraction, seed)
        items = train if split == "train" else val

    records = []
    for relpath, label in items:
        if relpath not in boxes:
            continue  # unreadable: skipped and reported (the split stays the one of the file list)
        box = boxes[relpath][1]
        if box is None:
            if no_face == "drop":
                report.skip_image("no face found (dropped by no_face='drop')", relpath)
                continue
            report.note("no face found (kept with face_box=None: centred-crop fallback)", relpath)
        records.append(FaceRecord(path=base / relpath, label=label, face_box=box, split=split))
    if own_report:
        report.log(LOGGER)
    return records
