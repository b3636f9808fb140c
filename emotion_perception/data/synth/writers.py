"""Write synthetic scenes to disk in the real datasets' formats, so the real readers load them.

* EMOTIC: ``OUT/Annotations/Annotations.mat`` (train/val/test; val/test with per-annotator
  lists plus combined fields, like the official file) and ``OUT/emotic/<folder>/<file>.jpg``;
  plus ``OUT/Annotations/synth_cues.csv``, the generative factors of every annotated person.
* HECO: ``OUT/HECO/Labels/HECO_Labels.csv`` and ``OUT/HECO/Data/*.jpg``.
* CAER-S: ``OUT/CAER-S/{train,test}/<Class>/*.png`` and ``OUT/CAER-S/face_boxes.txt``, the face
  boxes known from the generator's geometry in the reader's detector-cache format (dlib does not
  find stylised faces, and the geometry is the exact answer anyway).

Image ``i`` is drawn from ``np.random.default_rng([seed, stream, i])``: output is identical for
a given seed whatever the number of worker processes.
"""

from __future__ import annotations

import csv
import functools
import multiprocessing
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from emotion_perception.data.caer import CAER_DIRNAME, FACE_CACHE_NAME, write_face_cache
from emotion_perception.data.categories import CAER_CATEGORIES, EMOTIC_CATEGORIES
from emotion_perception.data.emotic import EmoticImageAnnotation, EmoticPersonAnnotation, write_emotic_mat
from emotion_perception.data.heco import HECO_ALIASES, HECO_COLUMNS, LABELS_RELATIVE_PATH
from emotion_perception.data.imageio import write_rgb
from emotion_perception.data.synth.rules import heco_category
from emotion_perception.data.synth.scenes import (
    CaerSynthConfig,
    EmoticSynthConfig,
    SyntheticScene,
    generate_caer_scene,
    generate_emotic_scene,
)

# Independent random streams per use, so adding one never changes another.
STREAM_EMOTIC, STREAM_SPLIT, STREAM_ANNOTATORS, STREAM_HECO, STREAM_CAER, STREAM_HECO_TYPOS = 0, 1, 2, 3, 4, 5
# Fraction of HECO rows written with a misspelt category (from heco.HECO_ALIASES), so the
# reader's alias table is exercised the way hand-typed labels require.
HECO_TYPO_RATE = 0.03
CUES_FILE = "synth_cues.csv"
CUE_COLUMNS = ("split", "folder", "filename", "person", "expression", "tear", "pose", "scene", "prop", "paired",
               "categories")
_MAX_ATTEMPTS = 50


def split_assignment(n: int, fractions: tuple[float, ...], seed: int, names: tuple[str, ...]) -> list[str]:
    """Split name of each of ``n`` items: a seeded permutation cut by ``fractions``."""
    order = np.random.default_rng([seed, STREAM_SPLIT]).permutation(n)
    bounds = np.round(np.cumsum(fractions) / np.sum(fractions) * n).astype(int)
    assignment = [""] * n
    start = 0
    for name, end in zip(names, bounds):
        for index in order[start:end]:
            assignment[int(index)] = name
        start = end
    return assignment


def scene_with_people(stream: int, seed: int, index: int, config: EmoticSynthConfig,
                      keep: Callable[[SyntheticScene], bool]) -> SyntheticScene:
    """The first scene of image ``index``'s attempts that ``keep`` accepts (deterministic)."""
    for attempt in range(_MAX_ATTEMPTS):
        scene = generate_emotic_scene(np.random.default_rng([seed, stream, index, attempt]), config)
        if keep(scene):
            return scene
    raise RuntimeError(f"image {index}: no usable scene in {_MAX_ATTEMPTS} attempts; check the generator config")


def _annotators(rng: np.random.Generator, categories: list[str], vad: np.ndarray, config: EmoticSynthConfig
                ) -> tuple[list[list[str]], list[list[float]]]:
    """Noisy per-annotator views of the truth (the truth itself is the combined annotation)."""
    count = int(rng.integers(config.annotators[0], config.annotators[1] + 1))
    lists, ratings = [], []
    for _ in range(count):
        chosen = [c for c in categories if rng.random() >= config.annotator_drop]
        if rng.random() < config.annotator_extra:
            extra = EMOTIC_CATEGORIES[int(rng.integers(len(EMOTIC_CATEGORIES)))]
            if extra not in chosen:
                chosen.append(extra)
        if not chosen:
            chosen = [categories[int(rng.integers(len(categories)))]]
        lists.append([c for c in EMOTIC_CATEGORIES if c in chosen])
        ratings.append(np.clip(vad + rng.integers(-1, 2, size=3), 1, 10).tolist())
    return lists, ratings


@dataclass
class _EmoticJob:
    out: Path
    seed: int
    config: EmoticSynthConfig
    splits: list[str]


def _emotic_image(job: _EmoticJob, index: int) -> tuple[str, EmoticImageAnnotation, list[list[str]]]:
    config = job.config
    split = job.splits[index]
    scene = scene_with_people(STREAM_EMOTIC, job.seed, index, config, lambda s: bool(s.annotated()))
    filename = f"{index:06d}.jpg"
    write_rgb(job.out / "emotic" / config.folder / filename, scene.image, config.jpeg_quality)
    rng = np.random.default_rng([job.seed, STREAM_ANNOTATORS, index])
    people, cues = [], []
    for p_index, person in enumerate(scene.annotated()):
        if split == "train":
            annotation = EmoticPersonAnnotation(
                body_bbox=np.round(person.box, 1).tolist(), annotator_categories=[person.categories],
                annotator_vad=[person.vad.tolist()], gender=person.gender, age=person.age)
        else:
            lists, ratings = _annotators(rng, person.categories, person.vad, config)
            annotation = EmoticPersonAnnotation(
                body_bbox=np.round(person.box, 1).tolist(), annotator_categories=lists, annotator_vad=ratings,
                combined_categories=person.categories, combined_vad=person.vad.tolist(),
                gender=person.gender, age=person.age)
        people.append(annotation)
        figure = person.figure
        cues.append([split, config.folder, filename, str(p_index), figure.expression, str(int(figure.tear)),
                     figure.pose, scene.scene, person.prop, str(int(person.partner is not None)),
                     ";".join(person.categories)])
    image = EmoticImageAnnotation(filename=filename, folder=config.folder, width=config.width, height=config.height,
                                  people=people, original_database="synthetic")
    return split, image, cues


def _heco_image(job: _EmoticJob, index: int) -> tuple[str, list[list[str]]]:
    def usable(scene: SyntheticScene) -> bool:
        return any(heco_category(p.categories) for p in scene.annotated())

    scene = scene_with_people(STREAM_HECO, job.seed, index, job.config, usable)
    name = f"heco_{index:06d}.jpg"
    write_rgb(job.out / "HECO" / "Data" / name, scene.image, job.config.jpeg_quality)
    rng = np.random.default_rng([job.seed, STREAM_HECO_TYPOS, index])
    rows = []
    for person in scene.annotated():
        category = heco_category(person.categories)
        if category is None:
            continue  # drawn, but HECO has no label for it: left unannotated
        if rng.random() < HECO_TYPO_RATE:
            typos = sorted(k for k, v in HECO_ALIASES.items() if v == category and k != category.lower())
            category = typos[int(rng.integers(len(typos)))] if typos else category
        x1, y1, x2, y2 = (f"{v:.1f}" for v in person.box)
        v, a, d = (f"{x:g}" for x in person.vad)
        rows.append([name, x1, y1, x2, y2, category, v, a, d])
    return name, rows


def _run(function: Callable[[int], object], n: int, workers: int, desc: str, progress: bool) -> Iterator:
    if workers <= 1:
        yield from tqdm(map(function, range(n)), total=n, desc=desc, unit="img", disable=not progress)
        return
    # spawn, not fork: the parent may already run OpenCV/OpenMP thread pools, which do not
    # survive a fork reliably.
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        yield from tqdm(pool.imap(function, range(n), chunksize=8), total=n, desc=desc, unit="img",
                        disable=not progress)


def write_emotic_dataset(out: str | Path, images: int, seed: int = 0, config: EmoticSynthConfig = EmoticSynthConfig(),
                         heco_images: int = 0, workers: int = 1, progress: bool = True) -> dict[str, int]:
    """Generate ``images`` EMOTIC-format scenes (and ``heco_images`` HECO ones); returns counts."""
    if images < 1:
        raise ValueError(f"--images must be >= 1, got {images}")
    out = Path(out)
    (out / "emotic" / config.folder).mkdir(parents=True, exist_ok=True)
    job = _EmoticJob(out=out, seed=seed, config=config,
                     splits=split_assignment(images, config.split_fractions, seed, ("train", "val", "test")))
    splits: dict[str, list[EmoticImageAnnotation]] = {"train": [], "val": [], "test": []}
    cue_rows: list[list[str]] = []
    for split, image, cues in _run(functools.partial(_emotic_image, job), images, workers, "synth emotic", progress):
        splits[split].append(image)
        cue_rows.extend(cues)
    write_emotic_mat(out / "Annotations" / "Annotations.mat", splits)
    with (out / "Annotations" / CUES_FILE).open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(CUE_COLUMNS)
        writer.writerows(cue_rows)
    counts = {f"{k}_images": len(v) for k, v in splits.items()}
    counts["people"] = len(cue_rows)
    if heco_images > 0:
        (out / "HECO" / "Data").mkdir(parents=True, exist_ok=True)
        rows = []
        for _, image_rows in _run(functools.partial(_heco_image, job), heco_images, workers, "synth heco", progress):
            rows.extend(image_rows)
        labels = out / "HECO" / LABELS_RELATIVE_PATH
        labels.parent.mkdir(parents=True, exist_ok=True)
        with labels.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(HECO_COLUMNS)
            writer.writerows(rows)
        counts["heco_images"] = heco_images
        counts["heco_people"] = len(rows)
    return counts


@dataclass
class _CaerJob:
    base: Path
    seed: int
    config: CaerSynthConfig
    splits: list[str]


def _caer_image(job: _CaerJob, index: int) -> tuple[str, str, np.ndarray]:
    label = index % len(CAER_CATEGORIES)  # balanced classes
    scene = generate_caer_scene(np.random.default_rng([job.seed, STREAM_CAER, index]), job.config, label=label)
    relpath = f"{job.splits[index]}/{CAER_CATEGORIES[label]}/{index:05d}.png"
    write_rgb(job.base / relpath, scene.image)
    return relpath, CAER_CATEGORIES[label], scene.face_box


def write_caer_dataset(out: str | Path, images: int, seed: int = 0, config: CaerSynthConfig = CaerSynthConfig(),
                       workers: int = 1, progress: bool = True) -> dict[str, int]:
    """Generate ``images`` CAER-S-format scenes (balanced classes) and their face-box cache."""
    if images < 1:
        raise ValueError(f"--images must be >= 1, got {images}")
    base = Path(out) / CAER_DIRNAME
    splits = split_assignment(images, (1 - config.test_fraction, config.test_fraction), seed, ("train", "test"))
    for split in ("train", "test"):
        for name in CAER_CATEGORIES:
            (base / split / name).mkdir(parents=True, exist_ok=True)
    job = _CaerJob(base=base, seed=seed, config=config, splits=splits)
    entries = list(_run(functools.partial(_caer_image, job), images, workers, "synth caer", progress))
    write_face_cache(base / FACE_CACHE_NAME, sorted(entries, key=lambda e: e[0]),
                     header="detector=synthetic: boxes from the generator's face geometry, not a detector; "
                            "format relpath,label,x1,y1,x2,y2")
    return {"train_images": splits.count("train"), "test_images": splits.count("test")}
