"""Synthetic generator: what it writes loads through the real readers with the label statistics
its rules imply, labels follow the documented cues, output is a function of the seed, and the
documentation table matches the code."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import scipy.io

from emotion_perception.cli import main as cli_main
from emotion_perception.data.categories import CAER_CATEGORIES, EMOTIC_CATEGORIES
from emotion_perception.data.emotic import load_emotic_splits
from emotion_perception.data.heco import load_heco
from emotion_perception.data.synth.gallery import render_gallery, write_gallery
from emotion_perception.data.synth.rules import CAER_RULES, EMOTIC_RULES, rules_markdown
from emotion_perception.data.synth.scenes import EmoticSynthConfig, generate_caer_scene, generate_emotic_scene
from emotion_perception.data.synth.writers import write_emotic_dataset

ROOT = Path(__file__).resolve().parents[1]

# The documented rules (docs/DATA.md), written out by hand: cue value -> category.
FACE = {"smile": "Happiness", "frown": "Sadness", "angry": "Anger", "surprised": "Surprise", "scared": "Fear",
        "disgusted": "Aversion", "puzzled": "Doubt/Confusion"}
BODY = {"arms_up": "Excitement", "hands_on_hips": "Confidence", "arms_crossed": "Disapproval", "slumped": "Fatigue",
        "bent_holding_belly": "Pain", "hand_on_cheek": "Embarrassment", "reaching": "Yearning"}
SCENE = {"party": "Pleasure", "park": "Peace", "storm": "Disquietment", "hospital": "Suffering",
         "construction": "Annoyance"}
PROP = {"screen": "Engagement", "podium": "Esteem", "gift": "Anticipation"}
# VAD of a person with exactly one category: 5 + that category's documented offsets.
SINGLE_VAD = {"Happiness": (8, 6, 6), "Peace": (7, 2, 5), "Fatigue": (4, 2, 3), "Fear": (2, 8, 2),
              "Pleasure": (8, 6, 6), "Suffering": (2, 5, 3), "Annoyance": (3, 7, 5), "Disquietment": (3, 7, 4),
              "Anger": (2, 8, 7), "Sadness": (2, 3, 3), "Surprise": (6, 8, 5), "Aversion": (3, 6, 5)}
N_IMAGES = 500


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth")
    write_emotic_dataset(root, N_IMAGES, seed=11, heco_images=30, progress=False)
    return root


@pytest.fixture(scope="module")
def loaded(synth_root: Path) -> dict:
    return load_emotic_splits(synth_root)


def names(vector: np.ndarray) -> set[str]:
    return {EMOTIC_CATEGORIES[i] for i in np.flatnonzero(vector)}


def test_splits_and_official_val_test_structure(synth_root: Path, loaded: dict):
    assert {k: len(v) for k, v in loaded.items()} == {"train": 350, "val": 50, "test": 100}
    raw = scipy.io.loadmat(str(synth_root / "Annotations" / "Annotations.mat"), struct_as_record=False,
                           squeeze_me=True)
    val_person = np.atleast_1d(raw["val"][0].person)[0]
    annotators = np.atleast_1d(val_person.annotations_categories)
    assert 2 <= len(annotators) <= 4 and len(np.atleast_1d(val_person.annotations_continuous)) == len(annotators)
    assert hasattr(val_person, "combined_categories") and hasattr(val_person, "combined_continuous")
    train_person = np.atleast_1d(raw["train"][0].person)[0]
    assert not hasattr(train_person, "combined_categories")
    assert set(train_person._fieldnames) == {"body_bbox", "annotations_categories", "annotations_continuous",
                                             "gender", "age"}


def test_category_frequencies_match_the_rules(loaded: dict):
    config = EmoticSynthConfig()
    people = [p for records in loaded.values() for r in records for p in r.people]
    n = len(people)
    assert n > 2 * len(loaded["train"])  # several people per image on average
    counts = Counter(name for p in people for name in names(p.categories))
    assert set(counts) == set(EMOTIC_CATEGORIES)  # every category occurs

    def expected(probs, index):
        return probs[index] / sum(probs)

    checks = {cat: expected(config.expression_probs, i + 1) for i, cat in enumerate(FACE.values())}
    checks |= {cat: expected(config.pose_probs, i + 1) for i, cat in enumerate(BODY.values())}
    checks |= {cat: expected(config.prop_probs, i + 1) for i, cat in enumerate(PROP.values())}
    checks["Sensitivity"] = config.tear_prob
    for category, p in checks.items():
        observed = counts[category] / n
        # 4 sigma of the binomial, plus 2 points for the small dependence of "annotated" on the cue
        assert abs(observed - p) <= 4 * np.sqrt(p * (1 - p) / n) + 0.02, (category, observed, p)
    images = [r for records in loaded.values() for r in records]
    for i, category in enumerate(SCENE.values()):
        p = expected(config.scene_probs, i + 1)
        with_scene = [bool(r.labels()[:, EMOTIC_CATEGORIES.index(category)].all()) for r in images]
        none_or_all = [r.labels()[:, EMOTIC_CATEGORIES.index(category)].min()
                       == r.labels()[:, EMOTIC_CATEGORIES.index(category)].max() for r in images]
        assert all(none_or_all), category  # a scene category holds for everyone in the image
        assert abs(np.mean(with_scene) - p) <= 4 * np.sqrt(p * (1 - p) / len(images)) + 0.02, category
    per_person = np.array([p.categories.sum() for p in people])
    assert per_person.min() >= 1 and 1.5 <= per_person.mean() <= 3.5


def test_labels_follow_the_documented_cues(synth_root: Path, loaded: dict):
    with (synth_root / "Annotations" / "synth_cues.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    by_image = {(r.path.parent.name, r.path.name, r.split): r for records in loaded.values() for r in records}
    assert len(rows) == sum(len(r.people) for r in by_image.values())
    for row in rows:
        record = by_image[(Path(row["folder"]).name, row["filename"], row["split"])]
        labels = names(record.people[int(row["person"])].categories)
        assert labels == set(row["categories"].split(";"))
        face = {FACE[row["expression"]]} if row["expression"] in FACE else set()
        body = {BODY[row["pose"]]} if row["pose"] in BODY else set()
        assert labels & set(FACE.values()) == face
        assert labels & set(BODY.values()) == body
        assert ("Sensitivity" in labels) == (row["tear"] == "1")
        assert (SCENE.get(row["scene"]) in labels) if row["scene"] in SCENE else not labels & set(SCENE.values())
        assert (PROP.get(row["prop"]) in labels) if row["prop"] in PROP else not labels & set(PROP.values())
        assert ("Affection" in labels) == (row["paired"] == "1")
        if "Sympathy" in labels:
            assert row["paired"] == "1"


def test_vad_is_the_documented_function_of_the_labels(loaded: dict):
    checked = set()
    for records in loaded.values():
        for record in records:
            for person in record.people:
                labels = names(person.categories)
                if len(labels) == 1 and (name := next(iter(labels))) in SINGLE_VAD:
                    np.testing.assert_allclose(person.vad * 9 + 1, SINGLE_VAD[name], atol=1e-4)
                    checked.add(name)
    assert len(checked) >= 3


def test_disconnection_is_standing_apart():
    config = EmoticSynthConfig()
    seen = 0
    for i in range(150):
        scene = generate_emotic_scene(np.random.default_rng([3, i]), config)
        boxes = [p.box for p in scene.people]
        for k, person in enumerate(scene.people):
            gaps = [max(o[0] - person.box[2], person.box[0] - o[2]) for j, o in enumerate(boxes) if j != k]
            apart = len(boxes) >= 3 and min(gaps) >= 0.3 * person.figure.height
            assert ("Disconnection" in person.categories) == apart
            seen += apart
    assert seen > 0


def test_heco_output_loads(synth_root: Path):
    records = load_heco(synth_root / "HECO")
    assert len(records) == 30
    assert all(p.categories.sum() == 1 for r in records for p in r.people)


def test_deterministic_by_seed_and_independent_of_workers(tmp_path: Path):
    write_emotic_dataset(tmp_path / "a", 10, seed=4, progress=False)
    write_emotic_dataset(tmp_path / "b", 10, seed=4, workers=2, progress=False)
    write_emotic_dataset(tmp_path / "c", 10, seed=5, progress=False)
    a, b, _c = (load_emotic_splits(tmp_path / k) for k in "abc")
    for split in a:
        assert len(a[split]) == len(b[split])
        for ra, rb in zip(a[split], b[split]):
            assert ra.path.name == rb.path.name
            np.testing.assert_array_equal(ra.boxes(), rb.boxes())
            np.testing.assert_array_equal(ra.labels(), rb.labels())
            assert ra.path.read_bytes() == rb.path.read_bytes()
    images_a = sorted((tmp_path / "a" / "emotic").rglob("*.jpg"))
    images_c = sorted((tmp_path / "c" / "emotic").rglob("*.jpg"))
    assert [p.read_bytes() for p in images_a] != [p.read_bytes() for p in images_c]


def test_caer_cues():
    # Fear and Disgust are shown by the context only, the face classes never use those contexts
    contexts = {name: set() for name in ("Fear", "Disgust", "Happy", "Neutral")}
    for i in range(60):
        label = i % 7
        scene = generate_caer_scene(np.random.default_rng([9, i]), label=label)
        if CAER_CATEGORIES[label] in contexts:
            contexts[CAER_CATEGORIES[label]].add(scene.context)
    assert contexts["Fear"] == {"storm"} and contexts["Disgust"] == {"garbage"}
    assert not contexts["Happy"] & {"storm", "garbage"} and not contexts["Neutral"] & {"storm", "garbage"}


def test_cli_writes_what_the_readers_load(tmp_path: Path):
    out = tmp_path / "cli"
    assert cli_main(["synth", "emotic", "--out", str(out), "--images", "8", "--seed", "2", "--heco",
                     "--workers", "1", "--no-progress"]) == 0
    assert sum(len(v) for v in load_emotic_splits(out).values()) == 8
    assert len(load_heco(out / "HECO")) == 2
    assert cli_main(["synth", "caer", "--out", str(out), "--images", "7", "--size", "64", "--workers", "1",
                     "--no-progress"]) == 0
    assert len(list((out / "CAER-S").rglob("*.png"))) == 7


def test_docs_table_matches_the_rules():
    text = (ROOT / "docs" / "DATA.md").read_text(encoding="utf-8")
    assert rules_markdown(EMOTIC_RULES) in text
    assert rules_markdown(CAER_RULES, label="class") in text


def test_gallery(tmp_path: Path):
    image = render_gallery(seed=0)
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[1] > 1000
    path = write_gallery(tmp_path / "g.png")
    assert path.stat().st_size < 1_000_000
    assert (ROOT / "docs" / "images" / "synth_gallery.png").stat().st_size < 1_000_000


def test_config_is_validated():
    with pytest.raises(ValueError, match="pose_probs"):
        EmoticSynthConfig(pose_probs=(1.0,))
    with pytest.raises(ValueError, match="scene_probs"):
        EmoticSynthConfig(scene_probs=(0, 0, 0, 0, 0, 0))
