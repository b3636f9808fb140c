"""eval ceiling: the cue oracle agrees with the reader's labels on generated scenes; the per-kind and
per-height breakdowns against hand-built predictions."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from emotion_perception.data.categories import EMOTIC_CATEGORIES
from emotion_perception.data.emotic import load_emotic
from emotion_perception.data.synth.rules import EMOTIC_RULES
from emotion_perception.data.synth.writers import write_emotic_dataset
from emotion_perception.eval.ceiling import cue_categories, markdown, synthetic_ceiling


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("ceiling")
    write_emotic_dataset(root, images=30, seed=3, progress=False)
    return root


def _predictions(records, y_score):
    y_true = np.concatenate([r.labels() for r in records if r.people])
    return {"y_true": y_true, "y_score": y_score(y_true),
            "gt_boxes": np.concatenate([r.boxes() for r in records if r.people]),
            "person_image": np.concatenate([np.full(len(r.people), i) for i, r in enumerate(records)])}


def test_cue_oracle_reproduces_every_label_the_reader_gives(synth_root):
    records = load_emotic(synth_root, "test")
    predictions = _predictions(records, lambda y: np.zeros_like(y))
    cues = cue_categories(synth_root, "test", [str(r.path) for r in records])
    report = synthetic_ceiling(predictions, cues, 256, np.array([(r.width, r.height) for r in records]))
    assert report["people"] == len(predictions["y_true"]) > 0
    assert report["labels_disagreeing_with_cues"] == 0
    assert report["cue_oracle_mAP"] == pytest.approx(100.0)


def test_breakdown_per_cue_kind_and_height_against_sklearn():
    rng = np.random.default_rng(0)
    n, categories = 60, list(EMOTIC_CATEGORIES)
    y_true = (rng.random((n, len(categories))) < 0.3).astype(np.float32)
    y_true[0] = 1.0  # every category has a positive
    face = [i for i, c in enumerate(categories) if {r.category: r.kind for r in EMOTIC_RULES}[c] == "face"]
    y_score = rng.random((n, len(categories))).astype(np.float32)
    y_score[:, face] = y_true[:, face]  # face categories perfectly ranked
    heights = np.where(np.arange(n) < 20, 60.0, 200.0)  # at 256 input of a 320x240 image: x0.8
    boxes = np.stack([np.zeros(n), np.zeros(n), np.full(n, 50.0), heights], axis=1)
    cues = [[c for c, v in zip(categories, row) if v] for row in y_true]
    report = synthetic_ceiling({"y_true": y_true, "y_score": y_score, "gt_boxes": boxes,
                                "person_image": np.zeros(n, dtype=np.int64)}, cues, 256, np.array([(320, 240)]))
    bu = report["models"]["bu"]
    assert bu["by_kind"]["face"] == pytest.approx(100.0)
    body = [i for i, c in enumerate(categories) if {r.category: r.kind for r in EMOTIC_RULES}[c] == "body"]
    expected_body = 100 * np.mean([average_precision_score(y_true[:, c], y_score[:, c]) for c in body])
    assert bu["by_kind"]["body"] == pytest.approx(expected_body, abs=1e-6)
    small = bu["by_height"][0]  # 60 px x 0.8 = 48 input px: below 96
    assert small["people"] == 20 and bu["by_height"][2]["people"] == 40 and bu["by_height"][1]["people"] == 0
    rows = slice(0, 20)
    columns = [c for c in range(len(categories)) if y_true[rows, c].sum() > 0]
    expected = 100 * np.mean([average_precision_score(y_true[rows, c], y_score[rows, c]) for c in columns])
    assert small["mAP"] == pytest.approx(expected, abs=1e-6)
    assert "| bu |" in markdown(report)


def test_predictions_of_another_split_are_refused(synth_root):
    records = load_emotic(synth_root, "train")
    with pytest.raises(ValueError, match="no 'test' row"):
        cue_categories(synth_root, "test", [str(r.path) for r in records])
