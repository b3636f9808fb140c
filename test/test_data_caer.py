"""CAER-S reader: class folders ("Angry" accepted), face boxes detected once and cached in the
documented text format, the no-face policy, the seeded validation split, clear cache errors;
and the synthetic CAER-S data loading without any detector."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from emotion_perception.data.caer import (
    FACE_CACHE_NAME,
    load_caer,
    read_face_cache,
    split_train_val,
)
from emotion_perception.data.categories import CAER_CATEGORIES
from emotion_perception.data.records import AnnotationError
from emotion_perception.data.report import ReadReport
from emotion_perception.data.synth.draw import FACE_TINTS, SKIN_TONES, blend
from emotion_perception.data.synth.scenes import CaerSynthConfig
from emotion_perception.data.synth.writers import write_caer_dataset

FOLDERS = ["Angry", "Disgust", "Fear", "Happy", "Neutral", "Sad", "Surprise"]


class WhiteSquareDetector:
    """A real (if simple) detector for the test images: the bounding box of pure-white pixels."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, image: np.ndarray) -> np.ndarray:
        self.calls += 1
        ys, xs = np.nonzero((image == 255).all(axis=2))
        if len(xs) == 0:
            return np.zeros((0, 5), np.float32)
        return np.array([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1, 1.0]], np.float32)


@pytest.fixture()
def caer_root(tmp_path: Path) -> Path:
    base = tmp_path / "data" / "CAER-S"
    rng = np.random.default_rng(0)
    for split, per_class in (("train", 10), ("test", 3)):
        for c, folder in enumerate(FOLDERS):
            (base / split / folder).mkdir(parents=True)
            for i in range(per_class):
                image = rng.integers(0, 200, (40, 60, 3), dtype=np.uint8)
                if i != 0:  # the first image of each class has no face
                    image[5 + c : 20 + c, 10 + i : 30 + i] = 255
                cv2.imwrite(str(base / split / folder / f"{i:04d}.png"), image)
    return tmp_path / "data"


def test_detects_once_and_caches(caer_root: Path):
    detector = WhiteSquareDetector()
    report = ReadReport()
    test = load_caer(caer_root, "test", face_detector=detector, report=report, progress=False)
    assert detector.calls == 21 and len(test) == 21
    cache_path = caer_root / "CAER-S" / FACE_CACHE_NAME
    lines = [line for line in cache_path.read_text().splitlines() if not line.startswith("#")]
    assert len(lines) == 21
    assert "test/Angry/0001.png,Anger,11.0,5.0,31.0,20.0" in lines
    assert "test/Angry/0000.png,Anger,,,," in lines
    record = next(r for r in test if r.path.name == "0002.png" and r.label == CAER_CATEGORIES.index("Happy"))
    np.testing.assert_array_equal(record.face_box, [12, 5 + 3, 32, 20 + 3])
    assert record.split == "test" and record.path.parent.name == "Happy"
    assert report.notes["no face found (kept with face_box=None: centred-crop fallback)"] == 7
    assert sum(r.face_box is None for r in test) == 7

    again = load_caer(caer_root, "test", face_detector=detector, progress=False)
    assert detector.calls == 21  # all cached
    assert [r.path for r in again] == [r.path for r in test]
    dropped = ReadReport()
    kept = load_caer(caer_root, "test", face_detector=detector, no_face="drop", report=dropped, progress=False)
    assert len(kept) == 14 and all(r.face_box is not None for r in kept)
    assert sum(dropped.skipped_images.values()) == 7


def test_validation_split_is_seeded_and_stratified(caer_root: Path):
    detector = WhiteSquareDetector()
    train = load_caer(caer_root, "train", face_detector=detector, progress=False)
    val = load_caer(caer_root, "val", face_detector=detector, progress=False)
    assert detector.calls == 70
    assert len(train) == 63 and len(val) == 7
    assert sorted(r.label for r in val) == list(range(7))  # 10% of each class
    assert not {r.path for r in train} & {r.path for r in val}
    assert {r.label for r in train} == set(range(7)) and CAER_CATEGORIES[0] == "Anger"
    again = load_caer(caer_root, "val", face_detector=detector, progress=False)
    assert [r.path for r in again] == [r.path for r in val]
    other = load_caer(caer_root, "val", face_detector=detector, seed=1, progress=False)
    assert [r.path for r in other] != [r.path for r in val]
    items = [(f"train/x/{i}.png", i % 2) for i in range(40)]
    tr, va = split_train_val(items, 0.25, seed=3)
    assert len(va) == 10 and sorted(tr + va) == sorted(items)


def test_cache_errors_name_the_line_and_field(caer_root: Path):
    cache = caer_root / "CAER-S" / FACE_CACHE_NAME
    cache.write_text("# comment\ntest/Angry/0001.png,Anger,1,2,x,4\n")
    with pytest.raises(AnnotationError) as err:
        read_face_cache(cache)
    assert err.value.field_name == "line 2: x2" and FACE_CACHE_NAME in str(err.value)
    cache.write_text("test/Angry/0001.png,Happy,1,2,3,4\n")
    with pytest.raises(AnnotationError, match="class 'Anger'"):
        load_caer(caer_root, "test", face_detector=WhiteSquareDetector(), progress=False)
    cache.write_text("test/Angry/0001.png,Anger,1,2\n")
    with pytest.raises(AnnotationError, match="relpath,label"):
        read_face_cache(cache)


def test_unknown_class_folder(caer_root: Path):
    (caer_root / "CAER-S" / "test" / "Joy").mkdir()
    with pytest.raises(AnnotationError, match="Joy"):
        load_caer(caer_root, "test", face_detector=WhiteSquareDetector(), progress=False)


def test_synthetic_caer_loads_without_a_detector(tmp_path: Path):
    def no_detector(image):
        raise AssertionError("the synthetic set ships its face boxes; nothing should be detected")

    counts = write_caer_dataset(tmp_path, 35, seed=5, config=CaerSynthConfig(width=96, height=96), progress=False)
    records = {split: load_caer(tmp_path, split, face_detector=no_detector, progress=False)
               for split in ("train", "val", "test")}
    assert sum(len(v) for v in records.values()) == 35
    assert counts["test_images"] == len(records["test"])
    face_colours = ({tuple(s) for s in SKIN_TONES}
                    | {tuple(blend(s, t, 0.6)) for s in SKIN_TONES for t in FACE_TINTS.values()})
    labels = []
    for split_records in records.values():
        for record in split_records:
            image = cv2.cvtColor(cv2.imread(str(record.path)), cv2.COLOR_BGR2RGB)
            x1, y1, x2, y2 = record.face_box
            # the box centre is the face's nose-less middle: a skin (or tinted skin) colour
            centre = tuple(int(v) for v in image[int((y1 + y2) / 2), int((x1 + x2) / 2)])
            assert centre in face_colours, (record.path, centre)
            assert record.path.parent.name == CAER_CATEGORIES[record.label]
            labels.append(record.label)
    assert np.bincount(labels, minlength=7).tolist() == [5] * 7  # balanced


def test_symlinks_leaving_the_dataset_are_skipped_and_reported(caer_root: Path, tmp_path: Path):
    outside = tmp_path / "private.png"
    cv2.imwrite(str(outside), np.zeros((40, 60, 3), np.uint8))
    (caer_root / "CAER-S" / "test" / "Happy" / "9999.png").symlink_to(outside)
    report = ReadReport()
    records = load_caer(caer_root, "test", face_detector=WhiteSquareDetector(), report=report, progress=False)
    assert len(records) == 21 and all(r.path.name != "9999.png" for r in records)
    assert report.skipped_images["image resolves outside the dataset's image folder (a symlink leaving it)"] == 1
    assert "9999.png" not in (caer_root / "CAER-S" / FACE_CACHE_NAME).read_text()


def test_unreadable_images_are_skipped_and_detections_before_a_failure_are_kept(caer_root: Path):
    (caer_root / "CAER-S" / "test" / "Fear" / "0001.png").write_bytes(b"truncated")
    report = ReadReport()
    records = load_caer(caer_root, "test", face_detector=WhiteSquareDetector(), report=report, progress=False)
    assert len(records) == 20 and sum(report.skipped_images.values()) == 1
    assert "Fear/0001.png" in " ".join(report.examples[next(iter(report.skipped_images))])

    class FailsAfter(WhiteSquareDetector):
        def __call__(self, image):
            if self.calls == 5:
                raise RuntimeError("detector crashed")
            return super().__call__(image)

    cache = caer_root / "CAER-S" / FACE_CACHE_NAME
    cache.unlink()
    with pytest.raises(RuntimeError, match="detector crashed"):
        load_caer(caer_root, "test", face_detector=FailsAfter(), progress=False)
    # the 5 boxes found before the crash are in the cache: a rerun detects only the rest
    assert len(read_face_cache(cache)) == 5
    rerun = WhiteSquareDetector()
    load_caer(caer_root, "test", face_detector=rerun, progress=False)
    assert rerun.calls == 20 - 5


def test_a_cache_line_over_the_csv_field_limit_is_one_clear_error(caer_root: Path):
    cache = caer_root / "CAER-S" / FACE_CACHE_NAME
    cache.write_text("# header\n" + "test/Happy/0000.png,Happy," + "1" * 200_000 + ",1,2,3\n")
    with pytest.raises(AnnotationError) as err:
        read_face_cache(cache)
    assert err.value.field_name == "line 2" and "field larger than field limit" in str(err.value)
