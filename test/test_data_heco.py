"""HECO reader: CSV grouping, alias table, clipping against sizes read from image headers,
missing images, errors naming file and field; HECO -> EMOTIC mapping and the training merge."""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np
import pytest

from emotion_perception.data.categories import EMOTIC_CATEGORIES, HECO_CATEGORIES
from emotion_perception.data.datasets import load_benet_records
from emotion_perception.data.emotic import EmoticImageAnnotation, EmoticPersonAnnotation, write_emotic_mat
from emotion_perception.data.heco import HECO_ALIASES, HECO_TO_EMOTIC, heco_to_emotic, load_heco
from emotion_perception.data.imageio import image_size
from emotion_perception.data.records import AnnotationError
from emotion_perception.data.report import ReadReport

HEADER = ["Image", "xmin", "ymin", "xmax", "ymax", "Category", "Valence", "Arousal", "Dominance"]


def write_labels(root: Path, rows: list[list], header: list[str] = HEADER) -> Path:
    path = root / "Labels" / "HECO_Labels.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


@pytest.fixture()
def heco_root(tmp_path: Path) -> Path:
    root = tmp_path / "HECO"
    (root / "Data").mkdir(parents=True)
    cv2.imwrite(str(root / "Data" / "a.jpg"), np.zeros((90, 160, 3), np.uint8))  # 160 wide, 90 high
    cv2.imwrite(str(root / "Data" / "b.png"), np.zeros((50, 40, 3), np.uint8))
    write_labels(root, [
        ["a.jpg", 10, 5, 60, 80, "Happiness", 8, 6, 7],
        ["b.png", -3, 10, 45, 70, "Suprise", 6, 9, 5],  # typo + box beyond the image
        ["a.jpg", 100, 10, 150, 85, "disgusted", 2, 5, "", ],  # alias + unknown dominance
        ["missing.jpg", 0, 0, 10, 10, "Fear", 1, 9, 1],
        ["a.jpg", 170, 10, 200, 20, "Peace", 5, 2, 5],  # entirely outside: skipped
    ])
    return root


def test_reads_groups_and_clips(heco_root: Path):
    report = ReadReport()
    records = load_heco(heco_root, report=report)
    by_name = {r.path.name: r for r in records}
    assert sorted(by_name) == ["a.jpg", "b.png"]
    a, b = by_name["a.jpg"], by_name["b.png"]
    assert (a.width, a.height, b.width, b.height) == (160, 90, 40, 50)
    assert a.source == "heco" and a.split == "train"
    assert len(a.people) == 2
    np.testing.assert_array_equal(a.people[0].box, [10, 5, 60, 80])
    np.testing.assert_array_equal(a.people[0].categories, np.eye(8)[HECO_CATEGORIES.index("Happiness")])
    np.testing.assert_allclose(a.people[0].vad, [7 / 9, 5 / 9, 6 / 9], rtol=1e-6)
    np.testing.assert_array_equal(a.people[1].categories, np.eye(8)[HECO_CATEGORIES.index("Disgust")])
    assert np.isnan(a.people[1].vad[2]) and a.people[1].vad[0] == pytest.approx(1 / 9)
    np.testing.assert_array_equal(b.people[0].box, [0, 10, 40, 50])  # x against 40 wide, y against 50 high
    np.testing.assert_array_equal(b.people[0].categories, np.eye(8)[HECO_CATEGORIES.index("Surprise")])
    assert report.skipped_images["image file not found"] == 1
    assert report.skipped_people["box empty after clipping to the image"] == 1
    assert report.notes["category spelling mapped by the alias table"] == 2


def test_alias_table_is_explicit_and_complete():
    assert set(HECO_ALIASES.values()) == set(HECO_CATEGORIES)
    for name in HECO_CATEGORIES:
        assert HECO_ALIASES[name.lower()] == name


def test_unknown_category_names_line_and_field(heco_root: Path):
    write_labels(heco_root, [["a.jpg", 1, 1, 5, 5, "Happiness", 5, 5, 5], ["a.jpg", 1, 1, 5, 5, "Jealousy", 5, 5, 5]])
    with pytest.raises(AnnotationError, match="Jealousy") as err:
        load_heco(heco_root)
    assert err.value.field_name == "line 3: Category" and "HECO_Labels.csv" in str(err.value)


def test_bad_number_and_missing_column(heco_root: Path):
    write_labels(heco_root, [["a.jpg", "x", 1, 5, 5, "Fear", 5, 5, 5]])
    with pytest.raises(AnnotationError) as err:
        load_heco(heco_root)
    assert err.value.field_name == "line 2: xmin"
    write_labels(heco_root, [["a.jpg", 1, 1, 5, 5, "Fear", 5, 5]], header=HEADER[:-1])
    with pytest.raises(AnnotationError) as err:
        load_heco(heco_root)
    assert err.value.field_name == "Dominance"


def test_image_size_reads_headers_like_a_decoder(tmp_path: Path):
    rng = np.random.default_rng(0)
    for i, (w, h) in enumerate([(17, 9), (640, 480), (33, 101)]):
        for suffix in (".png", ".jpg"):
            path = tmp_path / f"{i}{suffix}"
            cv2.imwrite(str(path), rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
            decoded = cv2.imread(str(path))
            assert image_size(path) == (decoded.shape[1], decoded.shape[0]) == (w, h)


def test_mapping_to_emotic(heco_root: Path):
    assert HECO_TO_EMOTIC["Disgust"] == "Aversion"
    assert all(v in EMOTIC_CATEGORIES for v in HECO_TO_EMOTIC.values())
    assert sorted(HECO_TO_EMOTIC) == sorted(HECO_CATEGORIES)
    records = {r.path.name: heco_to_emotic(r) for r in load_heco(heco_root)}
    a = records["a.jpg"]
    assert a.people[0].categories.shape == (26,)
    assert [EMOTIC_CATEGORIES[i] for i in np.flatnonzero(a.people[0].categories)] == ["Happiness"]
    assert [EMOTIC_CATEGORIES[i] for i in np.flatnonzero(a.people[1].categories)] == ["Aversion"]
    np.testing.assert_array_equal(a.people[0].box, [10, 5, 60, 80])


def test_load_benet_records_merges_heco_into_training(heco_root: Path, tmp_path: Path):
    emotic = tmp_path / "EMOTIC"
    person = EmoticPersonAnnotation([0, 0, 10, 10], [["Peace"]], [[5, 5, 5]])
    val_person = EmoticPersonAnnotation([0, 0, 10, 10], [["Peace"]], [[5, 5, 5]], combined_categories=["Peace"],
                                        combined_vad=[5, 5, 5])
    write_emotic_mat(emotic / "Annotations" / "Annotations.mat", {
        "train": [EmoticImageAnnotation("t.jpg", "f", 20, 20, [person])],
        "val": [EmoticImageAnnotation("v.jpg", "f", 20, 20, [val_person])],
        "test": [EmoticImageAnnotation("x.jpg", "f", 20, 20, [val_person])],
    })
    train = load_benet_records(emotic, "train", heco_root=heco_root)
    assert [r.source for r in train] == ["emotic", "heco", "heco"]
    assert all(p.categories.shape == (26,) for r in train for p in r.people)
    assert len(load_benet_records(emotic, "val")) == 1
    with pytest.raises(ValueError, match="only joins training"):
        load_benet_records(emotic, "val", heco_root=heco_root)


@pytest.mark.parametrize("name", ["../../outside.jpg", "/etc/passwd", "Data/../../x.jpg"])
def test_image_values_outside_the_dataset_are_refused(heco_root: Path, name: str):
    write_labels(heco_root, [["a.jpg", 10, 5, 60, 80, "Happiness", 8, 6, 7], [name, 0, 0, 10, 10, "Fear", 1, 9, 1]])
    with pytest.raises(AnnotationError) as err:
        load_heco(heco_root)
    assert err.value.field_name == "line 3: Image"


def test_symlinked_images_leaving_the_folder_and_unreadable_images_are_skipped(heco_root: Path, tmp_path: Path):
    outside = tmp_path / "private.png"
    cv2.imwrite(str(outside), np.zeros((20, 20, 3), np.uint8))
    (heco_root / "Data" / "link.png").symlink_to(outside)
    (heco_root / "Data" / "broken.png").write_bytes(b"not an image")
    write_labels(heco_root, [
        ["a.jpg", 10, 5, 60, 80, "Happiness", 8, 6, 7],
        ["link.png", 0, 0, 10, 10, "Fear", 1, 9, 1],
        ["broken.png", 0, 0, 10, 10, "Fear", 1, 9, 1],
    ])
    report = ReadReport()
    records = load_heco(heco_root, report=report)
    assert [r.path.name for r in records] == ["a.jpg"]
    reasons = dict(report.skipped_images)
    assert reasons == {"image resolves outside the dataset's image folder (a symlink leaving it)": 1,
                       "image unreadable or not PNG/JPEG/BMP/WebP": 1}


def test_report_examples_from_the_files_are_quoted_in_the_log_line(heco_root: Path):
    name = "x\n[ERROR] forged \x1b[31m" + "y" * 5000 + ".jpg"
    write_labels(heco_root, [["a.jpg", 10, 5, 60, 80, "Happiness", 8, 6, 7], [name, 0, 0, 10, 10, "Fear", 1, 9, 1]])
    report = ReadReport(source="HECO")
    load_heco(heco_root, report=report)
    summary = report.summary()
    assert "image file not found" in summary and "\\n[ERROR] forged \\x1b[31m" in summary
    assert "\n" not in summary and "\x1b" not in summary and len(summary) < 600


def test_swapped_corners_are_reported_and_oversized_csv_fields_are_one_error(heco_root: Path):
    write_labels(heco_root, [["a.jpg", 60, 5, 10, 80, "Happiness", 8, 6, 7]])
    report = ReadReport()
    (record,) = load_heco(heco_root, report=report)
    np.testing.assert_array_equal(record.people[0].box, [10, 5, 60, 80])
    assert sum(count for reason, count in report.notes.items() if "swapped" in reason) == 1
    write_labels(heco_root, [["a.jpg", 10, 5, 60, 80, "Happiness", 8, 6, 7],
                             ["b" * 200_000, 0, 0, 1, 1, "Fear", 1, 1, 1]])
    with pytest.raises(AnnotationError) as err:
        load_heco(heco_root)
    assert err.value.field_name == "line 3" and "field larger than field limit" in str(err.value)
