"""Every shipped training recipe parses (its base chain, its fields, its heads and augmentation),
including the ones no other test reads (the demo models' among them)."""

from __future__ import annotations

from pathlib import Path

import pytest

from emotion_perception.train import benet as benet_train
from emotion_perception.train import cahfw as cahfw_train
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
