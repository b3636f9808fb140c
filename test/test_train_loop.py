"""The one training loop, over both models: a run cut mid-epoch and resumed ends where an
uninterrupted run ends (weights, optimiser state, learning rate, step counter and history)."""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "config"
EPOCHS = 3


def _emotic(root: Path) -> Path:
    from emotion_perception.data.synth.scenes import EMOTIC_SYNTH_PRESETS
    from emotion_perception.data.synth.writers import write_emotic_dataset

    config = dataclasses.replace(EMOTIC_SYNTH_PRESETS["emotic"], width=128, height=96)
    write_emotic_dataset(root, 24, seed=3, config=config, workers=1, progress=False)
    return root


def _caer(root: Path) -> Path:
    from emotion_perception.data.synth.scenes import CAER_SYNTH_PRESETS
    from emotion_perception.data.synth.writers import write_caer_dataset

    write_caer_dataset(root, 28, seed=2, config=dataclasses.replace(CAER_SYNTH_PRESETS["caer"], width=64, height=64),
                       progress=False)
    return root


def _benet(data: Path) -> tuple[dict[str, Any], Callable[..., Path]]:
    from emotion_perception.train.benet import train_benet

    # The paper recipe's random pre-transformations and augmentation (each step's draws must be
    # replayed after a resume), a learning-rate step after epoch 2, six images in batches of 2.
    recipe = {"preset": "tiny", "data_root": str(data), "batch_size": 2, "workers": 0, "max_train_images": 6,
              "max_val_images": 2, "lr_milestones": [2], "amp": False, "log_every": 1}
    return recipe, train_benet


def _cahfw(data: Path) -> tuple[dict[str, Any], Callable[..., Path]]:
    from emotion_perception.train.cahfw import train_cahfw

    # Per-step cosine, Nesterov momentum, dropout and flip/colour augmentation: all of it must
    # continue where the cut left it.
    recipe = {"preset": "tiny", "data_root": str(data), "batch_size": 4, "workers": 0, "val_fraction": 0.25,
              "amp": False, "log_every": 1, "lr": 0.05}
    return recipe, train_cahfw


MODELS = {"benet": (_emotic, _benet, "train_benet_paper_512_adam_lr1e-3.yaml"),
          "cahfw": (_caer, _cahfw, "train_cahfw_paper_224_sgd_lr1e-2_cos_flood0.05.yaml")}


def _checkpoint(path: Path) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=True)


def _assert_same_tensors(got: Any, expected: Any, where: str) -> None:
    """Nested dicts/lists of tensors and numbers, compared exactly."""
    if isinstance(expected, torch.Tensor):
        assert isinstance(got, torch.Tensor) and torch.equal(got, expected), where
    elif isinstance(expected, dict):
        assert set(got) == set(expected), where
        for key in expected:
            _assert_same_tensors(got[key], expected[key], f"{where}.{key}")
    elif isinstance(expected, (list, tuple)):
        assert len(got) == len(expected), where
        for index, (a, b) in enumerate(zip(got, expected)):
            _assert_same_tensors(a, b, f"{where}[{index}]")
    else:
        assert got == expected, where


@pytest.mark.parametrize("model", sorted(MODELS))
def test_a_run_cut_mid_epoch_resumes_to_the_uninterrupted_result(model: str, tmp_path: Path) -> None:
    from emotion_perception.train.recipes import load_recipe

    make_data, make_recipe, recipe_file = MODELS[model]
    recipe, train = make_recipe(make_data(tmp_path / "data"))
    values = {**load_recipe(CONFIG / recipe_file), **recipe, "epochs": EPOCHS, "seed": 0}

    def run(out: Path, max_steps: int = 0, resume: Path | None = None) -> dict[str, Any]:
        train({**values, "max_steps": max_steps}, argparse.Namespace(device="cpu", out=out, resume=resume))
        return _checkpoint(out / "final.pt")

    straight = run(tmp_path / "straight")
    history = straight["metrics"]["history"]
    steps_per_epoch = history[0]["step"]
    assert steps_per_epoch >= 2 and [row["step"] for row in history] == [steps_per_epoch * e for e in (1, 2, 3)]
    cut_at = steps_per_epoch + 1  # one step into the second epoch

    cut = run(tmp_path / "cut", max_steps=cut_at)
    assert cut["metrics"]["step"] == cut_at and cut["epoch"] == 1  # one complete pass
    resumed = run(tmp_path / "cut", resume=tmp_path / "cut" / "last.pt")

    # The steps of epoch 2 left out by the cut run after the resume, and no others.
    assert [(row["epoch"], row["step"]) for row in resumed["metrics"]["history"]] == \
        [(row["epoch"], row["step"]) for row in history]
    assert resumed["epoch"] == straight["epoch"] == EPOCHS
    assert resumed["metrics"]["step"] == straight["metrics"]["step"] == EPOCHS * steps_per_epoch
    # The restored schedule ends where the uninterrupted one ends (CAHFW's cosine at min_lr 0).
    assert resumed["optimizer"]["param_groups"][0]["lr"] == straight["optimizer"]["param_groups"][0]["lr"]
    _assert_same_tensors(resumed["scheduler"], straight["scheduler"], "scheduler")
    _assert_same_tensors(resumed["model"], straight["model"], "model")
    _assert_same_tensors(resumed["optimizer"]["state"], straight["optimizer"]["state"], "optimizer.state")
    # Epoch means of the cut epoch cover all of its steps, before and after the resume.
    for got, expected in zip(resumed["metrics"]["history"], history):
        for key, value in expected.items():
            if key.startswith(("train_", "val_")):
                assert got[key] == pytest.approx(value, rel=1e-6), (got["epoch"], key)


def test_checkpoints_from_before_the_step_counter_resume_after_their_last_complete_pass() -> None:
    from emotion_perception.train.benet import BENetTask
    from emotion_perception.train.loop import progress_of

    # An older last.pt cut one step into epoch 3: no "step" or "epoch_progress" keys, and the
    # best value under its old name only.
    history = [{"epoch": 1, "step": 3, "val_total": 5.0}, {"epoch": 2, "step": 6, "val_total": 4.0},
               {"epoch": 3, "step": 7, "complete": False, "val_total": 3.5}]
    old = {"epoch": 2, "metrics": {"history": history, "best_val_loss": 3.5}}
    progress = progress_of(old, BENetTask)  # type: ignore[arg-type]  # class attributes suffice
    assert (progress.epoch, progress.step, progress.epoch_step, progress.epoch_meters) == (2, 6, 0, {})
    assert [row["epoch"] for row in progress.history] == [1, 2]  # epoch 3 is trained again, whole
    assert progress.best == 4.0  # the best of the rows that remain (BENet: lowest val_total)
