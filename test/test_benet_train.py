"""BENet training: recipes, a tiny model overfitting synthetic scenes, checkpoints, resume, DDP."""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from emotion_perception.train import benet as TB
from emotion_perception.train.checkpoints import load_checkpoint
from emotion_perception.train.loop import NonFiniteLossError
from emotion_perception.train.recipes import ConfigError, load_recipe

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "config"


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory) -> Path:
    from emotion_perception.data.synth.scenes import EMOTIC_SYNTH_PRESETS
    from emotion_perception.data.synth.writers import write_emotic_dataset

    root = tmp_path_factory.mktemp("synth_emotic")
    config = dataclasses.replace(EMOTIC_SYNTH_PRESETS["emotic"], width=128, height=96)
    write_emotic_dataset(root, 24, seed=3, config=config, heco_images=4, workers=1, progress=False)
    return root


def _recipe(synth_root: Path, **overrides) -> TB.BENetTrainConfig:
    values = {
        **load_recipe(CONFIG / "train_benet_paper_512_adam_lr1e-3.yaml"),
        "preset": "tiny", "data_root": str(synth_root), "batch_size": 2, "workers": 0,
        "max_train_images": 4, "max_val_images": 2, "augmentation": "modes_only", "seed": 0,
    }
    values.update(overrides)
    return TB.parse_recipe(values, "test recipe")


def _history(run_dir: Path) -> list[dict]:
    return json.loads((run_dir / "history.json").read_text())


def test_shipped_recipes_parse_and_select_heads(synth_root: Path) -> None:
    import argparse

    from emotion_perception.train import cli

    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    # (recipe, --heads override): the paper's head ablation is the main recipe with --heads.
    expected = {
        ("train_benet_paper_512_adam_lr1e-3.yaml", None): ("bu", "det", "pc", "bg"),
        ("train_benet_paper_512_adam_lr1e-3.yaml", "bu"): ("bu",),
        ("train_benet_paper_512_adam_lr1e-3.yaml", "bu,det"): ("bu", "det"),
        ("train_benet_paper_512_adam_lr1e-3.yaml", "bu_det_pc"): ("bu", "det", "pc"),
        ("train_benet_paper_512_adam_lr1e-3_heco.yaml", None): ("bu", "det", "pc", "bg"),
        ("train_benet_lite_256_adam_lr1e-3.yaml", None): ("bu", "det", "pc", "bg"),
    }
    for (name, heads_override), heads in expected.items():
        argv = ["benet", "--config", str(CONFIG / name)] + (["--heads", heads_override] if heads_override else [])
        recipe = TB.parse_recipe(cli.recipe_with_overrides(parser.parse_args(argv)), CONFIG / name)
        assert recipe.heads == heads, name
        assert (recipe.lr, recipe.epochs) == (1e-3, 250), name  # the paper's optimiser budget
        config = TB.model_config(recipe)
        assert config.person_centric_head == ("pc" in heads)
        assert config.background_head == ("bg" in heads)
        assert not config.vad_head
        assert TB.loss_config(recipe).heads == frozenset(heads)
    assert TB.parse_recipe(load_recipe(CONFIG / "train_benet_paper_512_adam_lr1e-3_heco.yaml")).heco_root == "data/HECO"

    # Heads without a trainable image get no pre-transformation: no crops without PC, no masks without BG.
    bu_det = _recipe(synth_root, heads="bu,det")
    probs = TB.transform_config(bu_det, 64).mode_probs
    assert probs[2] == 0.0 and probs[3] == 0.0 and probs[0] > 0
    assert _recipe(synth_root, heads="bu_det_pc_bg").heads == ("bu", "det", "pc", "bg")


def test_bad_recipes_name_the_field(synth_root: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"'heads'"):
        _recipe(synth_root, heads="bu,face")
    with pytest.raises(ConfigError, match=r"'lr_rate': unknown field"):
        _recipe(synth_root, lr_rate=0.1)
    with pytest.raises(ConfigError, match=r"'preset'"):
        _recipe(synth_root, preset="huge")
    with pytest.raises(ConfigError, match=r"'augmentation'"):
        _recipe(synth_root, augmentation="none")
    with pytest.raises(ConfigError, match=r"\(loss\): field 'size_wieght'"):
        _recipe(synth_root, loss={"size_wieght": 1.0})
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"base: {CONFIG / 'train_benet_paper_512_adam_lr1e-3.yaml'}\nepochs: many\n")
    from emotion_perception.cli import main

    assert main(["train", "benet", "--config", str(bad)]) == 2


def test_loss_falls_when_overfitting(synth_root: Path, tmp_path: Path) -> None:
    # Four images, one batch, no augmentation, detection mode only: the same batch every step,
    # which a working loop must fit. Adam 1e-3 as in the paper, 30 steps.
    recipe = _recipe(synth_root, heads="bu,det", augmentation="det_only", batch_size=4, epochs=30, val_every=1000)
    TB.main(recipe, TB.RunOptions(run_dir=tmp_path / "run", device="cpu"))
    totals = [row["train_total"] for row in _history(tmp_path / "run")]
    assert len(totals) == 30
    assert sum(totals[-3:]) / 3 < 0.75 * totals[0]
    rows = _history(tmp_path / "run")
    for term in ("heatmap_2", "size_2"):
        assert rows[-1][f"train_{term}"] < rows[0][f"train_{term}"], term
    # Raw (det) images train detection only: the bottom-up term stays 0 (public routing).
    assert all(row["train_emotions_2"] == 0 for row in rows)


def test_heco_joins_training_only(synth_root: Path, tmp_path: Path) -> None:
    from emotion_perception.data.datasets import load_benet_records

    emotic_train = len(load_benet_records(synth_root, "train"))
    recipe = _recipe(synth_root, heco_root=str(synth_root / "HECO"), max_train_images=0, max_steps=1)
    TB.main(recipe, TB.RunOptions(run_dir=tmp_path / "heco", device="cpu"))
    log = (tmp_path / "heco" / "train.log").read_text()
    assert f"{emotic_train + 4} train / 2 val images" in log


def _state(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


def test_checkpoints_and_resume_match_an_uninterrupted_run(synth_root: Path, tmp_path: Path) -> None:
    from emotion_perception.nets.factory import load_model_from_checkpoint

    recipe = _recipe(synth_root, epochs=3)  # all four heads, random pre-transformations
    TB.main(recipe, TB.RunOptions(run_dir=tmp_path / "full", device="cpu"))
    for name in ("best.pt", "final.pt", "last.pt", "train.log", "history.json"):
        assert (tmp_path / "full" / name).exists(), name
    assert list((tmp_path / "full" / "tensorboard").glob("events.out.tfevents.*"))

    final = load_checkpoint(tmp_path / "full" / "final.pt")
    assert final["model_name"] == "benet" and final["epoch"] == 3
    assert final["train_config"]["heads"] == ["bu", "det", "pc", "bg"]
    assert final["config"]["person_centric_head"] and final["config"]["background_head"]
    for key in ("optimizer", "scheduler", "scaler"):
        assert final[key] is not None, key
    history = final["metrics"]["history"]
    assert [row["epoch"] for row in history] == [1, 2, 3]
    # best.pt is the epoch with the lowest validation loss.
    best = load_checkpoint(tmp_path / "full" / "best.pt")
    lowest = min(history, key=lambda row: row["val_total"])
    assert best["epoch"] == lowest["epoch"]
    assert best["metrics"]["val_total"] == pytest.approx(lowest["val_total"])
    assert final["metrics"]["best_val_total"] == pytest.approx(lowest["val_total"])
    # The checkpoint rebuilds the network on its own.
    model, _ = load_model_from_checkpoint(tmp_path / "full" / "final.pt")
    assert sum(p.numel() for p in model.parameters()) == sum(v.numel() for k, v in final["model"].items()
                                                              if "running" not in k and "num_batches" not in k)

    # Two epochs, then resume from last.pt for the third: the same weights as the straight run.
    TB.main(dataclasses.replace(recipe, epochs=2), TB.RunOptions(run_dir=tmp_path / "part", device="cpu"))
    TB.main(recipe, TB.RunOptions(run_dir=tmp_path / "part", device="cpu", resume=tmp_path / "part" / "last.pt"))
    resumed = load_checkpoint(tmp_path / "part" / "final.pt")
    assert resumed["epoch"] == 3
    assert [row["epoch"] for row in resumed["metrics"]["history"]] == [1, 2, 3]
    straight, continued = _state(tmp_path / "full" / "final.pt"), _state(tmp_path / "part" / "final.pt")
    assert straight.keys() == continued.keys()
    for key in straight:
        torch.testing.assert_close(continued[key], straight[key], msg=key)


def test_max_minutes_and_non_finite_loss_stop_training(synth_root: Path, tmp_path: Path) -> None:
    recipe = _recipe(synth_root, epochs=5)
    TB.main(recipe, TB.RunOptions(run_dir=tmp_path / "timed", device="cpu", max_minutes=1e-9))
    stopped = load_checkpoint(tmp_path / "timed" / "final.pt")
    # Cut short before its first step: no complete epoch, the row says so.
    assert stopped["epoch"] == 0 and stopped["step"] == 0 and stopped["metrics"]["step"] == 0
    assert stopped["metrics"]["complete"] is False
    # Resuming continues the pass that was cut short; its complete row replaces the partial one.
    TB.main(dataclasses.replace(recipe, epochs=1),
            TB.RunOptions(run_dir=tmp_path / "timed", device="cpu", resume=tmp_path / "timed" / "last.pt"))
    redone = load_checkpoint(tmp_path / "timed" / "final.pt")
    assert redone["epoch"] == 1
    assert [(row["epoch"], row["complete"], row["step"]) for row in redone["metrics"]["history"]] == [(1, True, 2)]

    exploding = _recipe(synth_root, heads="bu,det", loss={"heatmap_weight": float("inf")})
    with pytest.raises(NonFiniteLossError, match="step 0: non-finite BENet loss term.*total"):
        TB.main(exploding, TB.RunOptions(run_dir=tmp_path / "nan", device="cpu"))
    assert not (tmp_path / "nan" / "final.pt").exists()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_ddp_run_through_torchrun(synth_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "ddp"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
        f"--master_port={_free_port()}", "-m", "emotion_perception.cli", "train", "benet",
        "--config", str(CONFIG / "train_benet_paper_512_adam_lr1e-3.yaml"), "--data", str(synth_root),
        "--preset", "tiny",
        "--epochs", "1", "--batch-size", "2", "--max-steps", "2", "--workers", "0", "--device", "cpu",
        "--out", str(out),
    ]
    recipe = tmp_path / "ddp.yaml"
    recipe.write_text(f"base: {CONFIG / 'train_benet_paper_512_adam_lr1e-3.yaml'}\n"
                      "max_train_images: 8\nmax_val_images: 2\naugmentation: modes_only\n")
    command[command.index(str(CONFIG / "train_benet_paper_512_adam_lr1e-3.yaml"))] = str(recipe)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=240)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    final = load_checkpoint(out / "final.pt")
    assert final["metrics"]["step"] == 2  # two steps, each over 2 ranks x 2 images
    assert "val_total" in final["metrics"]
    # Rank 0 alone writes the log: one start line, not one per process.
    assert (out / "train.log").read_text().count("BENet tiny") == 1


def test_train_cahfw_dispatches(tmp_path: Path) -> None:
    from emotion_perception.cli import main
    from emotion_perception.data.synth.scenes import CAER_SYNTH_PRESETS
    from emotion_perception.data.synth.writers import write_caer_dataset

    write_caer_dataset(tmp_path / "caer", 16, seed=2,
                       config=dataclasses.replace(CAER_SYNTH_PRESETS["caer"], width=64, height=64), progress=False)
    recipe = tmp_path / "cahfw.yaml"
    recipe.write_text(f"base: {CONFIG / 'train_cahfw_paper_224_sgd_lr1e-2_cos_flood0.05.yaml'}\n"
                      "preset: tiny\nbatch_size: 4\nworkers: 0\nmax_steps: 2\n")
    assert main(["train", "cahfw", "--config", str(recipe), "--data", str(tmp_path / "caer"), "--epochs", "1",
                 "--out", str(tmp_path / "run"), "--device", "cpu"]) == 0
    final = load_checkpoint(tmp_path / "run" / "final.pt")
    assert final["model_name"] == "cahfw" and final["train_config"]["epochs"] == 1
