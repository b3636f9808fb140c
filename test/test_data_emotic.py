"""EMOTIC reader: the official Annotations.mat nesting (built here with savemat), the CSV export,
clipping, squeeze_me corner cases, skipped people and clear errors; the .mat writer round trip."""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np
import pytest
import scipy.io

from emotion_perception.data.categories import EMOTIC_CATEGORIES
from emotion_perception.data.emotic import (
    EmoticImageAnnotation,
    EmoticPersonAnnotation,
    load_emotic,
    load_emotic_splits,
    read_emotic_csv,
    write_emotic_mat,
)
from emotion_perception.data.records import AnnotationError
from emotion_perception.data.report import ReadReport

IDX = {name: i for i, name in enumerate(EMOTIC_CATEGORIES)}


# --------------------------------------------------------------------------- MATLAB structures by hand


def struct_array(items: list[dict]) -> np.ndarray:
    """1xN MATLAB struct array as savemat writes numpy structured arrays of objects."""
    names = list(items[0])
    array = np.zeros((1, len(items)), dtype=[(n, "O") for n in names])
    for i, item in enumerate(items):
        for n in names:
            array[0, i][n] = item[n]
    return array


def cell(strings: list[str]) -> np.ndarray:
    out = np.empty((1, len(strings)), dtype=object)
    for i, s in enumerate(strings):
        out[0, i] = s
    return out


def vad_struct(v, a, d) -> np.ndarray:
    return struct_array([{"valence": float(v), "arousal": float(a), "dominance": float(d)}])


def train_person(box, categories, vad, gender="Male", age="Adult") -> dict:
    return {
        "body_bbox": np.array([box], dtype=np.float64),
        "annotations_categories": struct_array([{"categories": cell(categories)}]),
        "annotations_continuous": vad_struct(*vad),
        "gender": gender,
        "age": age,
    }


def eval_person(box, annotators, combined, combined_vad, gender="Female", age="Kid") -> dict:
    return {
        "body_bbox": np.array([box], dtype=np.float64),
        "annotations_categories": struct_array([{"categories": cell(c)} for c, _ in annotators]),
        "combined_categories": cell(combined),
        "annotations_continuous": struct_array(
            [{"valence": float(v[0]), "arousal": float(v[1]), "dominance": float(v[2])} for _, v in annotators]),
        "combined_continuous": vad_struct(*combined_vad),
        "gender": gender,
        "age": age,
    }


def image(filename, folder, width, height, persons: list[dict]) -> dict:
    return {
        "filename": filename,
        "folder": folder,
        "image_size": struct_array([{"n_row": float(height), "n_col": float(width)}]),
        "original_database": struct_array([{"name": "mscoco", "info": ""}]),
        "person": struct_array(persons),
    }


@pytest.fixture()
def emotic_root(tmp_path: Path) -> Path:
    train = struct_array([
        # 320 wide, 200 high: x2=300 is inside (x is clipped against the width, not the height)
        image("a.jpg", "mscoco/images", 320, 200, [
            train_person([10, 20, 300, 150], ["Peace", "Happiness"], (7, 3, 6)),
            train_person([-5, -8, 400, 260], ["Anger"], (2, 9, 8), gender="Female", age="Teenager"),
        ]),
        # single person, single category: squeeze_me turns both into scalars
        image("b.jpg", "framesdb/images", 100, 80, [train_person([1, 2, 30, 40], ["Fatigue"], (4, 2, 3))]),
        # a person without labels is skipped and reported; the other person stays
        image("c.jpg", "ade20k/images", 50, 50, [
            train_person([0, 0, 10, 10], [], (5, 5, 5)),
            train_person([5, 5, 20, 30], ["Engagement", "Esteem", "Yearning"], (6, 6, 6)),
        ]),
    ])
    val = struct_array([
        image("v.jpg", "emodb_small/images", 200, 100, [
            eval_person([0, 0, 50, 60],
                        [(["Pain"], (2, 6, 3)), (["Pain", "Fear"], (3, 7, 2)), (["Sadness"], (1, 5, 1))],
                        ["Pain", "Sadness"], (2.0, 6.0, 2.0)),
            # one annotator: squeeze_me gives a struct, not an array of structs
            eval_person([10, 10, 90, 90], [(["Surprise"], (6, 9, 5))], ["Surprise"], (6.0, 9.0, 5.0)),
        ]),
    ])
    test = struct_array([
        image("t.jpg", "mscoco/images", 64, 48, [
            eval_person([1, 1, 20, 40], [(["Doubt/Confusion"], (5, 5, 5)), (["Doubt/Confusion"], (4, 4, 4))],
                        ["Doubt/Confusion"], (np.nan, np.nan, np.nan)),
        ]),
    ])
    root = tmp_path / "EMOTIC"
    (root / "Annotations").mkdir(parents=True)
    scipy.io.savemat(str(root / "Annotations" / "Annotations.mat"), {"train": train, "val": val, "test": test})
    return root


def one_hot(*names: str) -> np.ndarray:
    v = np.zeros(26, dtype=np.float32)
    for n in names:
        v[IDX[n]] = 1
    return v


def test_mat_train_split(emotic_root: Path):
    report = ReadReport()
    records = load_emotic(emotic_root, "train", report=report)
    assert [r.path.name for r in records] == ["a.jpg", "b.jpg", "c.jpg"]
    a, b, c = records
    assert a.path == emotic_root / "emotic" / "mscoco" / "images" / "a.jpg"
    assert (a.width, a.height, a.split, a.source) == (320, 200, "train", "emotic")
    np.testing.assert_array_equal(a.people[0].box, [10, 20, 300, 150])
    np.testing.assert_array_equal(a.people[1].box, [0, 0, 320, 200])  # x against width, y against height
    np.testing.assert_array_equal(a.people[0].categories, one_hot("Peace", "Happiness"))
    np.testing.assert_allclose(a.people[0].vad, [(7 - 1) / 9, (3 - 1) / 9, (6 - 1) / 9], rtol=1e-6)
    assert (a.people[1].gender, a.people[1].age) == ("Female", "Teenager")
    np.testing.assert_array_equal(a.people[1].categories, one_hot("Anger"))
    assert len(b.people) == 1
    np.testing.assert_array_equal(b.people[0].categories, one_hot("Fatigue"))
    np.testing.assert_array_equal(b.people[0].box, [1, 2, 30, 40])
    assert len(c.people) == 1
    np.testing.assert_array_equal(c.people[0].categories, one_hot("Engagement", "Esteem", "Yearning"))
    assert report.skipped_people["no emotion category"] == 1
    assert a.boxes().shape == (2, 4) and a.labels().shape == (2, 26) and a.vads().shape == (2, 3)


def test_mat_val_test_use_combined_labels(emotic_root: Path):
    splits = load_emotic_splits(emotic_root, ("val", "test"))
    (v,) = splits["val"]
    np.testing.assert_array_equal(v.people[0].categories, one_hot("Pain", "Sadness"))
    np.testing.assert_allclose(v.people[0].vad, [1 / 9, 5 / 9, 1 / 9], rtol=1e-6)
    np.testing.assert_array_equal(v.people[1].categories, one_hot("Surprise"))
    np.testing.assert_allclose(v.people[1].vad, [5 / 9, 8 / 9, 4 / 9], rtol=1e-6)
    (t,) = splits["test"]
    assert np.isnan(t.people[0].vad).all()
    np.testing.assert_array_equal(t.people[0].categories, one_hot("Doubt/Confusion"))


def _rewrite(root: Path, mutate) -> None:
    path = root / "Annotations" / "Annotations.mat"
    raw = scipy.io.loadmat(str(path))
    mutate(raw)
    scipy.io.savemat(str(path), {k: raw[k] for k in ("train", "val", "test")})


def test_malformed_box_names_file_and_field(emotic_root: Path):
    def bad_box(raw):
        raw["train"][0, 1]["person"][0, 0]["body_bbox"] = np.array([[1.0, 2.0, 3.0]])

    _rewrite(emotic_root, bad_box)
    with pytest.raises(AnnotationError) as err:
        load_emotic(emotic_root, "train")
    assert "Annotations.mat" in str(err.value)
    assert err.value.field_name == "train[1].person[0].body_bbox"


def test_unknown_category_and_missing_field(emotic_root: Path):
    def bad_category(raw):
        raw["val"][0, 0]["person"][0, 1]["combined_categories"] = cell(["Joy"])

    _rewrite(emotic_root, bad_category)
    with pytest.raises(AnnotationError, match="Joy") as err:
        load_emotic(emotic_root, "val")
    assert err.value.field_name == "val[0].person[1].combined_categories"

    path = emotic_root / "Annotations" / "Annotations.mat"
    scipy.io.savemat(str(path), {"train": struct_array([{"filename": "x.jpg", "folder": "f"}])})
    with pytest.raises(AnnotationError) as err:
        load_emotic(emotic_root, "train")
    assert err.value.field_name == "train[0].image_size"
    with pytest.raises(AnnotationError, match="split missing"):
        load_emotic(emotic_root, "val")


def test_vad_out_of_scale_is_an_error(emotic_root: Path):
    def bad_vad(raw):
        raw["train"][0, 0]["person"][0, 0]["annotations_continuous"] = vad_struct(11, 5, 5)

    _rewrite(emotic_root, bad_vad)
    with pytest.raises(AnnotationError) as err:
        load_emotic(emotic_root, "train")
    assert err.value.field_name == "train[0].person[0].annotations_continuous.valence"


# --------------------------------------------------------------------------- CSV export


def write_csv(path: Path, rows: list[list]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["Index", "Folder", "Filename", "Image Size", "BBox", "Categorical_Labels",
                         "Continuous_Labels", "Gender", "Age"])
        for i, row in enumerate(rows):
            writer.writerow([i] + row)


def test_csv_export_groups_people_per_image(tmp_path: Path):
    root = tmp_path / "EMOTIC"
    # Image Size as the converter writes it: [n_row, n_col] = [height, width]
    write_csv(root / "emotic_pre" / "train.csv", [
        ["mscoco/images", "a.jpg", "[200, 320]", "[10, 20, 300, 150]", "['Peace', 'Happiness']", "[7, 3, 6]",
         "Male", "Adult"],
        ["framesdb/images", "b.jpg", "[80, 100]", "[1, 2, 30, 40]", "['Fatigue']", "[4, 2, 3]", "Female", "Kid"],
        ["mscoco/images", "a.jpg", "[200, 320]", "[-5, -8, 400, 260]", "['Anger']", "[]", "Female", "Teenager"],
        ["framesdb/images", "b.jpg", "[80, 100]", "[1, 2, 3, 4]", "[]", "[5, 5, 5]", "Male", "Adult"],
    ])
    report = ReadReport()
    records = load_emotic(root, "train", report=report)
    assert [r.path.name for r in records] == ["a.jpg", "b.jpg"]
    a, b = records
    assert (a.width, a.height) == (320, 200)
    np.testing.assert_array_equal(a.boxes(), [[10, 20, 300, 150], [0, 0, 320, 200]])
    np.testing.assert_array_equal(a.labels(), [one_hot("Peace", "Happiness"), one_hot("Anger")])
    np.testing.assert_allclose(a.people[0].vad, [6 / 9, 2 / 9, 5 / 9], rtol=1e-6)
    assert np.isnan(a.people[1].vad).all()
    assert len(b.people) == 1 and report.skipped_people["no emotion category"] == 1


def test_csv_image_size_order_detected_from_images(tmp_path: Path):
    root = tmp_path / "EMOTIC"
    folder = root / "emotic" / "imgs"
    folder.mkdir(parents=True)
    cv2.imwrite(str(folder / "w.jpg"), np.zeros((30, 50, 3), np.uint8))  # 50 wide, 30 high
    # this CSV lists (width, height): the reader must notice from the file
    write_csv(root / "train.csv", [["imgs", "w.jpg", "[50, 30]", "[0, 0, 45, 29]", "['Pain']", "[1, 2, 3]", "M", "A"]])
    (record,) = read_emotic_csv(root / "train.csv", "train", root / "emotic")
    assert (record.width, record.height) == (50, 30)
    np.testing.assert_array_equal(record.people[0].box, [0, 0, 45, 29])
    (forced,) = read_emotic_csv(root / "train.csv", "train", root / "emotic", image_size_order="hw")
    assert (forced.width, forced.height) == (30, 50)


def test_csv_malformed_box_names_line_and_column(tmp_path: Path):
    root = tmp_path / "EMOTIC"
    write_csv(root / "emotic_pre" / "val.csv", [
        ["f", "a.jpg", "[10, 10]", "[0, 0, 5, 5]", "['Pain']", "[1, 2, 3]", "M", "A"],
        ["f", "b.jpg", "[10, 10]", "[0, 0, 5]", "['Pain']", "[1, 2, 3]", "M", "A"],
    ])
    with pytest.raises(AnnotationError) as err:
        load_emotic(root, "val")
    assert err.value.field_name == "line 3: BBox" and "val.csv" in str(err.value)


def test_missing_annotations_is_a_clear_error(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="no EMOTIC annotations"):
        load_emotic(tmp_path, "train")


# --------------------------------------------------------------------------- writer


def test_writer_round_trip_through_the_reader(tmp_path: Path):
    def person(box, cats, vad, annotators=None):
        if annotators is None:
            return EmoticPersonAnnotation(box, [cats], [vad], gender="Male", age="Adult")
        return EmoticPersonAnnotation(box, [a for a, _ in annotators], [v for _, v in annotators],
                                      combined_categories=cats, combined_vad=vad, gender="Female", age="Kid")

    splits = {
        "train": [EmoticImageAnnotation("1.jpg", "s", 100, 50, [person([1, 2, 90, 49], ["Peace"], [5, 6, 7])])],
        "val": [EmoticImageAnnotation("2.jpg", "s", 60, 60, [
            person([0, 0, 10, 10], ["Pain", "Fear"], [2, 8, 2],
                   annotators=[(["Pain"], [2, 8, 3]), (["Fear"], [3, 8, 1])]),
            person([5, 5, 70, 20], ["Anger"], [1, 9, 9], annotators=[(["Anger"], [1, 9, 9])]),
        ])],
        "test": [],
    }
    write_emotic_mat(tmp_path / "Annotations" / "Annotations.mat", splits)
    raw = scipy.io.loadmat(str(tmp_path / "Annotations" / "Annotations.mat"), struct_as_record=False, squeeze_me=True)
    assert raw["val"].person[0].annotations_categories[1].categories == "Fear"
    assert list(raw["val"].person[0].combined_categories) == ["Pain", "Fear"]
    assert raw["train"].image_size.n_col == 100 and raw["train"].image_size.n_row == 50
    loaded = load_emotic_splits(tmp_path, ("train", "val"))
    np.testing.assert_array_equal(loaded["train"][0].people[0].categories, one_hot("Peace"))
    val = loaded["val"][0]
    np.testing.assert_array_equal(val.labels(), [one_hot("Pain", "Fear"), one_hot("Anger")])
    np.testing.assert_array_equal(val.people[1].box, [5, 5, 60, 20])
    np.testing.assert_allclose(val.people[0].vad, [1 / 9, 7 / 9, 1 / 9], rtol=1e-6)


# --------------------------------------------------------------------------- path confinement


@pytest.mark.parametrize("field, value", [
    ("folder", "../../outside"), ("folder", "/etc"), ("filename", "/etc/passwd"),
    ("filename", "../../../secret.png"), ("folder", "C:\\Windows"),
])
def test_mat_image_paths_outside_the_dataset_are_refused(emotic_root: Path, field: str, value: str):
    def escape(raw):
        raw["train"][0, 1][field] = np.array([value])

    _rewrite(emotic_root, escape)
    with pytest.raises(AnnotationError) as err:
        load_emotic(emotic_root, "train")
    assert err.value.field_name == f"train[1].{field}"
    assert "absolute path" in str(err.value) or "climbs out of the dataset folder" in str(err.value)


def test_mat_paths_that_stay_inside_are_kept(emotic_root: Path):
    def inside(raw):
        raw["train"][0, 1]["folder"] = np.array(["framesdb/../framesdb/images"])

    _rewrite(emotic_root, inside)
    records = load_emotic(emotic_root, "train")
    assert any(r.path.name == "b.jpg" for r in records)


def test_symlinks_leaving_the_image_folder_are_skipped_and_reported(tmp_path: Path):
    root = tmp_path / "EMOTIC"
    images = root / "emotic" / "imgs"
    images.mkdir(parents=True)
    outside = tmp_path / "private.jpg"
    cv2.imwrite(str(outside), np.zeros((30, 50, 3), np.uint8))
    cv2.imwrite(str(images / "own.jpg"), np.zeros((30, 50, 3), np.uint8))
    (images / "link.jpg").symlink_to(outside)
    write_csv(root / "train.csv", [
        ["imgs", "own.jpg", "[30, 50]", "[0, 0, 45, 29]", "['Pain']", "[1, 2, 3]", "M", "A"],
        ["imgs", "link.jpg", "[30, 50]", "[0, 0, 45, 29]", "['Pain']", "[1, 2, 3]", "M", "A"],
    ])
    report = ReadReport()
    (record,) = read_emotic_csv(root / "train.csv", "train", root / "emotic", report=report)
    assert record.path.name == "own.jpg"
    (reason,) = report.skipped_images
    assert "outside the dataset's image folder" in reason and report.skipped_images[reason] == 1
    # a dataset folder that is itself a link (images on another disk) is fine
    (tmp_path / "linked").symlink_to(root, target_is_directory=True)
    (again,) = read_emotic_csv(tmp_path / "linked" / "train.csv", "train", tmp_path / "linked" / "emotic")
    assert again.path.name == "own.jpg"


@pytest.mark.parametrize("column, value", [("Folder", "../.."), ("Filename", "/etc/passwd")])
def test_csv_image_paths_outside_the_dataset_are_refused(tmp_path: Path, column: str, value: str):
    root = tmp_path / "EMOTIC"
    row = ["imgs", "a.jpg", "[30, 50]", "[0, 0, 45, 29]", "['Pain']", "[1, 2, 3]", "M", "A"]
    row[0 if column == "Folder" else 1] = value
    write_csv(root / "train.csv", [row])
    with pytest.raises(AnnotationError) as err:
        read_emotic_csv(root / "train.csv", "train", root / "emotic")
    assert err.value.field_name == f"line 2: {column}"


@pytest.mark.parametrize("value", [np.inf, 1e300, 70000.0])
def test_image_sizes_beyond_any_photograph_are_clear_errors(emotic_root: Path, value: float):
    def huge(raw):
        raw["train"][0, 0]["image_size"][0, 0]["n_col"] = np.array([[value]])

    _rewrite(emotic_root, huge)
    with pytest.raises(AnnotationError) as err:  # was OverflowError (inf) or inf boxes (1e300)
        load_emotic(emotic_root, "train")
    assert err.value.field_name == "train[0].image_size" and "65535" in str(err.value)


def test_swapped_box_corners_are_read_and_reported(emotic_root: Path):
    def swapped(raw):
        raw["train"][0, 1]["person"][0, 0]["body_bbox"] = np.array([[30.0, 2.0, 1.0, 40.0]])

    _rewrite(emotic_root, swapped)
    report = ReadReport()
    records = load_emotic(emotic_root, "train", report=report)
    b = next(r for r in records if r.path.name == "b.jpg")
    np.testing.assert_array_equal(b.people[0].box, [1, 2, 30, 40])
    (reason,) = [r for r in report.notes if "swapped" in r]
    assert report.notes[reason] == 1 and "train[1].person[0]" in report.examples[reason][0]


def test_csv_fields_over_the_csv_limit_and_infinite_values_are_one_clear_error(tmp_path: Path):
    root = tmp_path / "EMOTIC"
    write_csv(root / "train.csv", [
        ["imgs", "a.jpg", "[30, 50]", "[0, 0, 45, 29]", "['Pain']", "[1, 2, 3]", "M", "A"],
        ["imgs", "b.jpg", "[30, 50]", "[0, 0, 45, 29]", "['Pain']", "[1, 2, 3]", "M", "x" * 200_000],
    ])
    with pytest.raises(AnnotationError) as err:  # was a raw _csv.Error
        read_emotic_csv(root / "train.csv", "train", root / "emotic")
    assert err.value.field_name == "line 3" and "field larger than field limit" in str(err.value)
    write_csv(root / "train.csv", [["imgs", "a.jpg", "[30, 50]", "[0, 0, 1e400, 29]", "['Pain']", "[]", "M", "A"]])
    with pytest.raises(AnnotationError) as err:
        read_emotic_csv(root / "train.csv", "train", root / "emotic")
    assert err.value.field_name == "line 2: BBox"
