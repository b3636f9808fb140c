"""CAHFW-Net training and evaluation on a tiny generated CAER-S folder (tiny preset, CPU)."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, confusion_matrix, recall_score

from emotion_perception.data.caer import write_face_cache
from emotion_perception.data.categories import CAER_CATEGORIES
from emotion_perception.eval.cahfw import evaluate_cahfw
from emotion_perception.nets.cahfw import CAHFW_PRESETS
from emotion_perception.train.cahfw import flooded, parse_recipe, train_cahfw
from emotion_perception.train.recipes import ConfigError

# Seven well separated face colours (RGB), one per class: a tiny network learns them quickly.
CLASS_COLOURS = np.array([
    [220, 40, 40], [40, 200, 40], [40, 40, 220], [230, 230, 40], [40, 220, 220], [220, 40, 220], [250, 250, 250],
], dtype=np.uint8)


def make_caer(root: Path, per_class: dict[str, int], seed: int = 0) -> Path:
    """A CAER-S folder of 48x64 frames: noise background, a class-coloured face square, plus
    the face-box cache so no detector runs. The first test image has no face box (fallback)."""
    rng = np.random.default_rng(seed)
    base = root / "CAER-S"
    cache = []
    for split, count in per_class.items():
        for label, name in enumerate(CAER_CATEGORIES):
            folder = base / split / name
            folder.mkdir(parents=True)
            for index in range(count):
                image = rng.integers(0, 120, size=(48, 64, 3), dtype=np.uint8)
                x, y = int(rng.integers(4, 40)), int(rng.integers(2, 20))
                image[y:y + 20, x:x + 18] = CLASS_COLOURS[label]
                relpath = f"{split}/{name}/{index:03d}.png"
                cv2.imwrite(str(base / relpath), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
                box = None if (split == "test" and label == 0 and index == 0) else np.array([x, y, x + 18, y + 20])
                cache.append((relpath, name, box))
    write_face_cache(base / "face_boxes.txt", cache, header="test cache")
    return root


@pytest.fixture(scope="module")
def caer_root(tmp_path_factory) -> Path:
    return make_caer(tmp_path_factory.mktemp("caer"), {"train": 4, "test": 2})


def tiny_recipe(root: Path, out: Path, **changes) -> dict:
    recipe = {
        "preset": "tiny", "data_root": str(root), "output_dir": str(out), "epochs": 30, "batch_size": 7,
        "lr": 0.05, "workers": 0, "val_fraction": 0.25, "amp": False, "log_every": 1, "seed": 0,
    }
    recipe.update(changes)
    return recipe


@pytest.fixture(scope="module")
def trained_run(caer_root, tmp_path_factory) -> tuple[Path, Path]:
    torch.set_num_threads(1)
    run_dir = tmp_path_factory.mktemp("run")
    best = train_cahfw(tiny_recipe(caer_root, run_dir), argparse.Namespace(device="cpu"))
    return run_dir, best


def test_training_loss_falls_and_files_are_written(trained_run):
    run_dir, best = trained_run
    assert best == run_dir / "best.pt"
    for name in ("best.pt", "final.pt", "last.pt", "history.json", "train.log"):
        assert (run_dir / name).is_file(), name
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    history = json.loads((run_dir / "history.json").read_text())
    assert [row["epoch"] for row in history] == list(range(1, 31))
    # 21 train images (3 per class, one per class held out), batch 7, drop_last: 3 steps/epoch.
    assert history[-1]["step"] == 90
    # From scratch, the tiny network needs tens of steps to leave ln(7) = 1.95; the mean of the
    # last three epochs ends near 0.75 of the first epoch's loss (0.73-0.79 over seeds 0-4).
    first = history[0]["train_cross_entropy"]
    last = np.mean([row["train_cross_entropy"] for row in history[-3:]])
    assert first == pytest.approx(np.log(7), abs=0.1)
    assert last < 0.9 * first
    assert all("val_accuracy" in row for row in history)
    # Cosine annealing over all 90 steps ends at min_lr = 0.
    assert history[-1]["lr"] == pytest.approx(0.0, abs=1e-9)
    assert history[0]["lr"] < 0.05


def test_checkpoint_layout(trained_run):
    run_dir, _ = trained_run
    checkpoint = torch.load(run_dir / "final.pt", map_location="cpu", weights_only=True)
    assert set(checkpoint) == {"model", "model_name", "config", "optimizer", "scheduler", "scaler", "epoch",
                               "step", "epoch_progress", "metrics", "train_config"}
    assert checkpoint["model_name"] == "cahfw" and checkpoint["epoch"] == 30 and checkpoint["step"] == 90
    assert checkpoint["epoch_progress"] == {"steps": 0, "meters": {}}  # ended at an epoch boundary
    assert checkpoint["config"] == asdict(CAHFW_PRESETS["tiny"])
    assert checkpoint["train_config"]["flooding"] == 0.05 and checkpoint["train_config"]["nesterov"] is True
    best = torch.load(run_dir / "best.pt", map_location="cpu", weights_only=True)
    val_accuracies = [row["val_accuracy"] for row in checkpoint["metrics"]["history"]]
    assert best["metrics"]["val_accuracy"] == pytest.approx(max(val_accuracies))
    assert best["epoch"] == 1 + val_accuracies.index(max(val_accuracies))


def test_evaluation_files_and_accuracy_match_sklearn(trained_run, caer_root, tmp_path):
    _run_dir, best = trained_run
    metrics = evaluate_cahfw(best, caer_root, "test", tmp_path / "eval", device="cpu", progress=False)
    for name in ("metrics.json", "confusion_matrix.json", "confusion_matrix.png", "predictions.npz"):
        assert (tmp_path / "eval" / name).is_file(), name
    predictions = np.load(tmp_path / "eval" / "predictions.npz")
    y_true, y_score = predictions["y_true"], predictions["y_score"]
    assert y_score.shape == (14, 7)
    np.testing.assert_allclose(y_score.sum(axis=1), 1.0, rtol=1e-5)
    # Test folder order: classes alphabetical, two images each.
    np.testing.assert_array_equal(y_true, np.repeat(np.arange(7), 2))
    y_pred = y_score.argmax(axis=1)
    written = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert written["accuracy"] == pytest.approx(accuracy_score(y_true, y_pred))
    assert metrics["accuracy"] == pytest.approx(accuracy_score(y_true, y_pred))
    recalls = recall_score(y_true, y_pred, average=None, labels=list(range(7)), zero_division=0)
    assert [written["per_class_accuracy"][name] for name in CAER_CATEGORIES] == pytest.approx(recalls.tolist())
    assert written["mean_class_accuracy"] == pytest.approx(recalls.mean())
    matrix = json.loads((tmp_path / "eval" / "confusion_matrix.json").read_text())["matrix"]
    np.testing.assert_array_equal(matrix, confusion_matrix(y_true, y_pred, labels=list(range(7))))
    assert written["split"] == "test" and written["num_images"] == 14


def _logged_steps(run_dir: Path) -> list[int]:
    """Every step that ran and logged its loss (log_every 1), from all of the run's event files."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    return sorted(event.step for event in events.Scalars("train_step/loss"))


def _cosine(step: int, total: int, lr: float, min_lr: float = 0.0) -> float:
    return min_lr + (lr - min_lr) * (1 + np.cos(np.pi * step / total)) / 2


def test_max_steps_cut_mid_epoch_and_resume(caer_root, tmp_path):
    torch.set_num_threads(1)
    # 21 images, batch 7: 3 steps per epoch, 9 in all; the cut falls one step into epoch 2.
    recipe = tiny_recipe(caer_root, tmp_path / "run", variant="SE+AF", epochs=3, max_steps=4)
    train_cahfw(recipe, argparse.Namespace(device="cpu"))
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert [(row["epoch"], row["step"], row["complete"]) for row in history] == [(1, 3, True), (2, 4, False)]
    last = torch.load(tmp_path / "run" / "last.pt", map_location="cpu", weights_only=True)
    assert last["config"]["variant"] == "SE+AF"
    assert (last["epoch"], last["step"], last["epoch_progress"]["steps"]) == (1, 4, 1)
    # max_steps cuts the run, not the schedule: the cosine over all 9 steps, at step 4.
    assert history[-1]["lr"] == pytest.approx(_cosine(4, 9, 0.05))

    # Resume without the cap: the two steps epoch 2 had left, then epoch 3; each step once.
    recipe.update(max_steps=0)
    train_cahfw(recipe, argparse.Namespace(device="cpu", resume=str(tmp_path / "run" / "last.pt"),
                                           out=str(tmp_path / "run")))
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert [(row["epoch"], row["step"], row["complete"]) for row in history] == [(1, 3, True), (2, 6, True),
                                                                                 (3, 9, True)]
    assert _logged_steps(tmp_path / "run") == list(range(1, 10))
    assert [row["lr"] for row in history] == pytest.approx([_cosine(s, 9, 0.05) for s in (3, 6, 9)], abs=1e-12)
    final = torch.load(tmp_path / "run" / "final.pt", map_location="cpu", weights_only=True)
    assert (final["epoch"], final["step"]) == (3, 9)
    assert final["optimizer"]["param_groups"][0]["lr"] == pytest.approx(0.0, abs=1e-12)  # min_lr at the end


def test_flooding():
    below = torch.tensor(0.02, requires_grad=True)
    out = flooded(below, 0.05)
    out.backward()
    assert float(out.detach()) == pytest.approx(0.08) and float(below.grad) == -1.0  # ascent below b
    above = torch.tensor(0.7, requires_grad=True)
    flooded(above, 0.05).backward()
    assert float(flooded(above, 0.05).detach()) == pytest.approx(0.7) and float(above.grad) == 1.0
    assert flooded(below, 0.0) is below


def test_recipe_errors_name_file_and_field():
    with pytest.raises(ConfigError, match=r"r\.yaml: field 'epoch'"):
        parse_recipe({"epoch": 3}, "r.yaml")
    with pytest.raises(ConfigError, match=r"field 'preset/variant'.*variant"):
        parse_recipe({"variant": "SE+CA"}, "r.yaml")
    with pytest.raises(ConfigError, match=r"field 'model'"):
        parse_recipe({"model": "benet"}, "r.yaml")
    with pytest.raises(ConfigError, match=r"field 'min_lr'"):
        parse_recipe({"min_lr": 0.5}, "r.yaml")


def test_shipped_recipes_parse():
    import argparse

    from emotion_perception.train import cli

    config_dir = Path(__file__).resolve().parents[1] / "config"
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)

    def recipe(name: str, *argv: str):
        path = config_dir / name
        return parse_recipe(cli.recipe_with_overrides(parser.parse_args(["cahfw", "--config", str(path), *argv])), path)

    paper = "train_cahfw_paper_224_sgd_lr1e-2_cos_flood0.05.yaml"
    full = recipe(paper)
    assert (full.lr, full.momentum, full.nesterov, full.flooding) == (0.01, 0.9, True, 0.05)
    assert full.variant == "SE+CA+ER+AA"
    # The paper's ablation is the same recipe with --variant (either spelling).
    assert recipe(paper, "--variant", "SE+AF").variant == "SE+AF"
    assert recipe(paper, "--variant", "se_ca_aa").variant == "SE+CA+AA"
    assert recipe("train_cahfw_small_112_sgd_lr1e-2_cos_flood0.05_hog.yaml").preset == "small"


@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")
def test_classification_metrics_with_an_absent_class():
    from sklearn.metrics import balanced_accuracy_score

    from emotion_perception.eval.cahfw import classification_metrics

    rng = np.random.default_rng(3)
    y_true = rng.integers(0, 6, size=40)  # class 6 never occurs
    y_score = rng.random((40, 7))
    metrics = classification_metrics(y_true, y_score, CAER_CATEGORIES)
    y_pred = y_score.argmax(axis=1)
    assert metrics["accuracy"] == pytest.approx(accuracy_score(y_true, y_pred))
    assert np.isnan(metrics["per_class_accuracy"]["Surprise"])
    # Mean recall over the classes present: sklearn's balanced accuracy.
    assert metrics["mean_class_accuracy"] == pytest.approx(balanced_accuracy_score(y_true, y_pred))
    np.testing.assert_array_equal(metrics["confusion_matrix"], confusion_matrix(y_true, y_pred, labels=list(range(7))))
