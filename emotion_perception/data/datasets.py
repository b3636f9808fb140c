"""Torch datasets for BENet: records -> transform -> :class:`BENetSample` -> :func:`collate_benet`.

Augmentation randomness comes from ``np.random.default_rng([seed, epoch, index])``: a sample is
reproducible from (seed, epoch, index) whatever the DataLoader's worker count or order. Call
``set_epoch`` before each epoch (with non-persistent workers, which copy the dataset when an
epoch's iterator is created).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from emotion_perception.data.categories import NUM_EMOTIC
from emotion_perception.data.emotic import load_emotic
from emotion_perception.data.heco import heco_to_emotic, load_heco
from emotion_perception.data.imageio import DEFAULT_MAX_IMAGE_PIXELS, ImageError, image_size, read_rgb
from emotion_perception.data.records import ImageRecord
from emotion_perception.data.report import ReadReport
from emotion_perception.data.transforms import BENetSample, normalize_image

LOGGER = logging.getLogger(__name__)

BENetTransformFn = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.random.Generator], BENetSample]


def load_benet_records(
    root: str | Path, split: str, heco_root: str | Path | None = None, *, report: ReadReport | None = None
) -> list[ImageRecord]:
    """EMOTIC images of ``split``; for ``train``, plus HECO mapped onto EMOTIC's 26 categories.

    HECO has no official split, so it may only join training; asking for it with ``val`` or
    ``test`` is an error rather than a silent no-op.
    """
    records = load_emotic(root, split, report=report)
    if heco_root is not None:
        if split != "train":
            raise ValueError(f"HECO has no official split and only joins training; got split={split!r} with heco_root")
        heco = [heco_to_emotic(r) for r in load_heco(heco_root, report=report)]
        LOGGER.info("merged %d HECO images into %d EMOTIC training images", len(heco), len(records))
        records = records + heco
    return records


UNUSABLE_IMAGE = "image missing, header unreadable, not PNG/JPEG/BMP/WebP, or over the pixel limit"


def drop_unusable_images(records: Sequence[Any], report: ReadReport,
                         max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS, decode: bool = False) -> list[Any]:
    """The records (anything with a ``path``) whose image exists and whose header gives a size
    within ``max_pixels``; the others are skipped and counted in ``report``. Reads headers only
    (a few hundred bytes per image), so a run checks its whole split before the first batch
    instead of dying on image 5,000. ``decode`` also decodes each image once, which catches a
    readable header over a broken body (a JPEG cut after its header); evaluation does, as it
    reads every image anyway."""
    kept = []
    for record in records:
        try:
            width, height = image_size(record.path)
            if width * height > max_pixels:
                raise ImageError(f"{record.path}: {width}x{height} is over the limit of {max_pixels} pixels")
            if decode:
                read_rgb(record.path, max_pixels)
        except (FileNotFoundError, ImageError) as err:
            report.skip_image(UNUSABLE_IMAGE, str(err))
            continue
        kept.append(record)
    return kept


class BENetDataset(Dataset):
    """Whole images with all their people, through a BENet transform (training or eval)."""

    def __init__(self, records: Sequence[ImageRecord], transform: BENetTransformFn, seed: int = 0,
                 num_categories: int = NUM_EMOTIC) -> None:
        for record in records:
            for person in record.people:
                if person.categories.shape != (num_categories,):
                    raise ValueError(
                        f"{record.path}: person labels have shape {person.categories.shape}, expected "
                        f"({num_categories},) (map HECO records with heco_to_emotic first)")
        self.records = list(records)
        self.transform = transform
        self.seed = int(seed)
        self.epoch = 0
        self.num_categories = num_categories

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.records)

    def arrays(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Image and annotations of record ``index`` before the transform (boxes in image pixels)."""
        record = self.records[index]
        image = read_rgb(record.path)
        boxes = record.boxes()
        height, width = image.shape[:2]
        if (width, height) != (record.width, record.height) and len(boxes):
            # Annotations are in the annotated size; follow the file if it was resized since.
            boxes = boxes * np.array([width / record.width, height / record.height] * 2, dtype=np.float32)
        labels = record.labels() if record.people else np.zeros((0, self.num_categories), dtype=np.float32)
        return image, boxes, labels, record.vads()

    def __getitem__(self, index: int) -> BENetSample:
        rng = np.random.default_rng([self.seed, self.epoch, index])
        return self.transform(*self.arrays(index), rng)


def collate_benet(samples: Sequence[BENetSample]) -> dict:
    """Batch BENet samples (docs/ARCHITECTURE.md).

    Returns ``image`` float32 (B, 3, S, S) ImageNet-normalised; ``boxes`` / ``labels`` / ``vad``:
    lists of (N_i, 4) / (N_i, E) / (N_i, 3) float32 tensors; ``num_people`` (B,) int64; ``mode``:
    list of str; ``image_label`` (B, E); ``letterbox``: list of LetterboxParams or None.
    """
    if not samples:
        raise ValueError("collate_benet: empty batch")
    images = np.stack([s.image for s in samples])
    return {
        "image": torch.from_numpy(normalize_image(images)),
        "boxes": [torch.from_numpy(np.ascontiguousarray(s.boxes, dtype=np.float32)) for s in samples],
        "labels": [torch.from_numpy(np.ascontiguousarray(s.labels, dtype=np.float32)) for s in samples],
        "vad": [torch.from_numpy(np.ascontiguousarray(s.vad, dtype=np.float32)) for s in samples],
        "num_people": torch.tensor([len(s.boxes) for s in samples], dtype=torch.int64),
        "mode": [s.mode for s in samples],
        "image_label": torch.from_numpy(np.stack([s.image_label for s in samples]).astype(np.float32)),
        "letterbox": [s.letterbox for s in samples],
    }
