"""Head-ablation summary (eval/ablation.py) and the recipes and CLI overrides the ablation uses."""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path

import numpy as np
import pytest

from emotion_perception.eval import ablation as A

REPO = Path(__file__).resolve().parents[1]


def _run(root: Path, name: str, bu: float, pc: float | None = None, det: float | None = 0.3, steps: int = 400,
         evaluated: bool = True) -> Path:
    folder = root / name
    (folder / "eval_test").mkdir(parents=True)
    (folder / "history.json").write_text(json.dumps([{"epoch": 1, "step": steps - 13}, {"epoch": 2, "step": steps}]))
    if not evaluated:
        return folder
    gt_centre = {"bu": {"mAP": bu}}
    if pc is not None:
        gt_centre["pc"] = {"mAP": pc}
        gt_centre["fusion"] = {"mAP": (bu + pc) / 2 + 0.01}
    metrics = {"gt_centre": gt_centre, "detection": {"AP": det, "AP_small": None}, "joint": {"mAP": 0.1}}
    (folder / "eval_test" / "metrics.json").write_text(json.dumps(metrics))
    # Prevalences 1/4, 1/2 and one category without positives: chance mAP (1/4 + 1/2) / 2.
    y_true = np.array([[1, 1, 0], [0, 1, 0], [0, 0, 0], [0, 0, 0]], np.float32)
    np.savez(folder / "eval_test" / "predictions.npz", y_true=y_true, y_score=np.zeros_like(y_true))
    return folder


def test_rows_are_in_paper_order_with_mean_and_half_range(tmp_path: Path) -> None:
    _run(tmp_path, "bu_det_pc_bg_s0", 0.30, pc=0.40)
    _run(tmp_path, "bu_s1", 0.22)
    _run(tmp_path, "bu_s0", 0.18)
    _run(tmp_path, "bu_det_s0", 0.25)
    _run(tmp_path, "bu_det_pc_s0", 0.27, pc=0.35, evaluated=False)  # still training: left out
    (tmp_path / "notes").mkdir()  # not a run folder: ignored
    rows = A.collect(tmp_path)
    assert [row.label for row in rows] == ["BU", "BU+Det", "BU+Det+PC+BG"]
    assert [run.seed for run in rows[0].runs] == [0, 1]
    mean, spread = A.mean_and_spread(rows[0].values("bu_map"))
    assert mean == pytest.approx(0.20) and spread == pytest.approx(0.02)
    assert rows[0].runs[0].chance_map == pytest.approx(0.375)
    table = A.markdown_table(rows).splitlines()
    assert len(table) == 2 + 3
    bu_row = [cell.strip() for cell in table[2].strip("|").split("|")]
    # heads, seeds, steps, BU mAP, per seed, PC, fusion, detection AP (BU-only: no trained heatmap), joint
    assert bu_row == ["BU", "0, 1", "400", "20.0 ± 2.0", "18.0, 22.0", "–", "–", "–", "–"]
    full_row = [cell.strip() for cell in table[4].strip("|").split("|")]
    assert full_row == ["BU+Det+PC+BG", "0", "400", "30.0", "30.0", "40.0", "36.0", "30.0", "10.0"]


def test_cli_writes_table_and_figure(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from emotion_perception.cli import main

    _run(tmp_path, "bu_s0", 0.18)
    _run(tmp_path, "bu_det_pc_bg_s0", 0.30, pc=0.40)
    figure = tmp_path / "figures" / "heads.png"
    assert main(["eval", "ablation", str(tmp_path), "--plot", str(figure)]) == 0
    table = capsys.readouterr().out
    assert table.count("| ") >= 4 and "| BU+Det+PC+BG | 0 | 400 | 30.0 |" in table
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Chance mAP (random scores, mean category prevalence): 37.5" in table
    assert main(["eval", "ablation", str(tmp_path / "figures")]) == 2  # no runs there: an error, not an empty table


def test_incomplete_outputs_give_one_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    folder = _run(tmp_path, "bu_s0", 0.18)
    (folder / "eval_test" / "metrics.json").write_text(json.dumps({"accuracy": 0.5}))
    with pytest.raises(ValueError, match="gt_centre.bu.mAP"):
        A.collect(tmp_path)
    (folder / "eval_test" / "metrics.json").write_text("{not json")
    with pytest.raises(ValueError, match="not JSON"):
        A.collect(tmp_path)
    parser = argparse.ArgumentParser()
    A.add_arguments(parser)
    assert A.run(parser.parse_args([str(tmp_path)]), io.StringIO()) == 2
    assert "not JSON" in capsys.readouterr().err
    with pytest.raises(ValueError, match="heads"):
        A.parse_heads("det_pc", tmp_path)


def test_ablation_head_sets_are_overrides_of_one_recipe() -> None:
    # scripts/ablation_benet_heads.sh trains one recipe with --heads <set>: each run gets exactly
    # its heads, every other field of the recipe, and a run folder of its own.
    from emotion_perception.train import cli
    from emotion_perception.train.benet import parse_recipe
    from emotion_perception.train.recipes import load_recipe

    config = REPO / "config" / "train_benet_lite_256_adam_lr1e-3_light.yaml"
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    base = parse_recipe(load_recipe(config))
    assert base.heads == ("bu", "det", "pc", "bg")
    folders = set()
    for heads in ("bu", "bu_det", "bu_det_pc", "bu_det_pc_bg"):
        values = cli.recipe_with_overrides(parser.parse_args(["benet", "--config", str(config), "--heads", heads]))
        recipe = parse_recipe(values)
        assert recipe.heads == tuple(heads.split("_"))
        assert recipe.preset == "lite" and recipe.augmentation == "benet_light" and recipe.batch_size == 16
        assert {k: v for k, v in vars(recipe).items() if k not in ("heads", "output_dir")} == \
            {k: v for k, v in vars(base).items() if k not in ("heads", "output_dir")}
        folders.add(values["output_dir"])
    assert folders == {f"runs/benet_lite_256_adam_lr1e-3_light+heads_{heads}"
                       for heads in ("bu", "bu_det", "bu_det_pc", "bu_det_pc_bg")}


def test_seed_override_reaches_the_recipe() -> None:
    from emotion_perception.train import cli

    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    args = parser.parse_args(["benet", "--config", str(REPO / "config" / "train_benet_lite_256_adam_lr1e-3_light.yaml"),
                              "--seed", "7"])
    assert cli.recipe_with_overrides(args)["seed"] == 7
    args = parser.parse_args(["benet", "--config",
                              str(REPO / "config" / "train_benet_lite_256_adam_lr1e-3_light.yaml")])
    assert cli.recipe_with_overrides(args)["seed"] == 0


@pytest.mark.parametrize("script, override",
                         [("ablation_benet_heads.sh", "--heads"), ("ablation_cahfw.sh", "--variant")])
def test_ablation_scripts_train_one_existing_recipe_with_an_override(script: str, override: str) -> None:
    import re

    text = (REPO / "scripts" / script).read_text(encoding="utf-8")
    recipes = set(re.findall(r"config/[\w.+-]+\.yaml", text))
    assert len(recipes) == 1 and (REPO / next(iter(recipes))).is_file(), recipes
    assert f'--config "$CONFIG" {override} ' in text
