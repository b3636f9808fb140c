"""Every shipped training recipe parses (its base chain, its fields, its heads and augmentation),
including the ones no other test reads (the demo models' among them), and its name says what it
trains."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from emotion_perception.train import benet as benet_train
from emotion_perception.train import cahfw as cahfw_train
from emotion_perception.train.loop import RunOptions
from emotion_perception.train.recipes import load_recipe

CONFIG = Path(__file__).resolve().parents[1] / "config"
RECIPES = sorted(CONFIG.glob("train_*.yaml"))


def test_there_are_recipes_of_both_models():
    names = [p.name for p in RECIPES]
    assert any(n.startswith("train_benet") for n in names) and any(n.startswith("train_cahfw") for n in names)


@pytest.mark.parametrize("path", RECIPES, ids=[p.name for p in RECIPES])
def test_recipe_parses_into_its_model_and_data_pipeline(path: Path):
    values = load_recipe(path)
    if values.get("model") == "benet":
        recipe = benet_train.parse_recipe(values, source=path)
        benet_train.model_config(recipe)
        benet_train.loss_config(recipe, source=path)
        transform = benet_train.transform_config(recipe, 64)
        # Every routed pre-transformation trains at least one enabled head.
        assert sum(transform.mode_probs) > 0
    else:
        assert values.get("model") == "cahfw", f"{path.name}: unknown model {values.get('model')!r}"
        cahfw_train.parse_recipe(values, source=path)


# train_<model>_<preset>_<input size>_<optimizer>_lr<lr>[_<extra>...] (HigherHRNet's scheme,
# docs/ARCHITECTURE.md "Recipes"). Each extra names something the recipe is; the tokens that
# are checked against the recipe's fields:
HEADS_DEFAULT = ("bu", "det", "pc", "bg")  # the paper's four heads go unnamed; any other set is spelled in full
NAME = re.compile(r"train_(?P<model>[a-z]+)_(?P<preset>[a-z]+)_(?P<size>\d+)_(?P<optimizer>[a-z]+)_lr(?P<lr>[0-9.e-]+?)"
                  r"(?P<extras>(_[a-z0-9.+-]+)*)")
OPTIMIZERS = {"benet": "adam", "cahfw": "sgd"}  # train/benet.py: Adam; train/cahfw.py: SGD


def _extras(path: Path) -> list[str]:
    match = NAME.fullmatch(path.stem)
    assert match, f"{path.name}: not train_<model>_<preset>_<size>_<optimizer>_lr<lr>[_<extras>]"
    return [token for token in match["extras"].split("_") if token]


@pytest.mark.parametrize("path", RECIPES, ids=[p.name for p in RECIPES])
def test_recipe_name_says_what_it_trains(path: Path):
    from emotion_perception.nets.factory import build_config

    match = NAME.fullmatch(path.stem)
    assert match, f"{path.name}: not train_<model>_<preset>_<size>_<optimizer>_lr<lr>[_<extras>]"
    values = load_recipe(path)
    model = values["model"]
    recipe = (benet_train if model == "benet" else cahfw_train).parse_recipe(values, source=path)
    assert (match["model"], match["preset"]) == (model, recipe.preset)
    assert match["optimizer"] == OPTIMIZERS[model]
    assert float(match["lr"]) == pytest.approx(recipe.lr)
    extras = _extras(path)
    if model == "benet":
        size = recipe.input_size or build_config("benet", recipe.preset).input_size[0]
        heads = [token for token in extras if token in benet_train.HEAD_NAMES]
        assert tuple(heads) == (() if recipe.heads == HEADS_DEFAULT else recipe.heads), \
            f"{path.name}: heads {recipe.heads} (the paper's four go unnamed, any other set is spelled in full)"
        assert ("light" in extras) == (recipe.augmentation == "benet_light")
        assert ("heco" in extras) == bool(recipe.heco_root)
    else:
        size = build_config("cahfw", recipe.preset).input_size
        size = size[0] if isinstance(size, tuple) else size
        assert ("cos" in extras) and f"flood{recipe.flooding:g}" in extras  # the schedule and loss of train/cahfw.py
        assert ("hog" in extras) == (recipe.detector == "hog")
        variant = [token for token in extras if token.startswith("se")]
        assert variant == ([] if recipe.variant == "SE+CA+ER+AA" else [recipe.variant.lower().replace("+", "-")])
    assert int(match["size"]) == size


@pytest.mark.parametrize("path", RECIPES, ids=[p.name for p in RECIPES])
def test_recipe_leaves_the_run_folder_to_its_name(path: Path):
    # runs/<name without train_> (train/cli.py default_run_dir): a hand-written output_dir drifts
    # from the name when the recipe is renamed.
    import yaml

    assert "output_dir" not in yaml.safe_load(path.read_text(encoding="utf-8"))


def test_ablations_are_overrides_not_copies():
    # A recipe that differs from its base only in heads or variant is an ablation copy: --heads /
    # --variant express it (scripts/ablation_*.sh).
    import yaml

    for path in RECIPES:
        own = yaml.safe_load(path.read_text(encoding="utf-8"))
        if "base" in own:
            differences = set(own) - {"base"}
            assert differences - {"heads", "variant"}, f"{path.name}: differs from its base only in {differences}"


def test_run_folder_comes_from_the_recipe_name_and_its_overrides(tmp_path: Path):
    import argparse

    from emotion_perception.train import cli

    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)

    def run_dir(*argv: str) -> Path:
        args = parser.parse_args(list(argv))
        values = cli.recipe_with_overrides(args)
        train = benet_train if args.model == "benet" else cahfw_train
        return RunOptions.from_args(args, train.parse_recipe(values).output_dir).run_dir

    demo = str(CONFIG / "train_benet_lite_256_adam_lr1e-3_light_bu_det_vad.yaml")
    # The demo model's recipe lands where its output_dir used to say.
    assert run_dir("benet", "--config", demo) == Path("runs/benet_lite_256_adam_lr1e-3_light_bu_det_vad")
    assert run_dir("benet", "--config", demo, "--seed", "1", "--preset", "benet:tiny", "--epochs", "2") == \
        Path("runs/benet_lite_256_adam_lr1e-3_light_bu_det_vad+preset_tiny+seed_1")
    cahfw = str(CONFIG / "train_cahfw_small_112_sgd_lr1e-2_cos_flood0.05_hog.yaml")
    assert run_dir("cahfw", "--config", cahfw, "--variant", "SE+CA+AA") == \
        Path("runs/cahfw_small_112_sgd_lr1e-2_cos_flood0.05_hog+variant_se_ca_aa")
    assert run_dir("cahfw", "--config", cahfw, "--out", str(tmp_path / "mine")) == tmp_path / "mine"
    # A recipe of one's own may still name its folder; --out wins over it.
    own = tmp_path / "train_mine.yaml"
    own.write_text(f"base: {demo}\noutput_dir: {tmp_path / 'named'}\n")
    assert run_dir("benet", "--config", str(own)) == tmp_path / "named"
    assert run_dir("benet", "--config", str(own), "--out", str(tmp_path / "out")) == tmp_path / "out"
