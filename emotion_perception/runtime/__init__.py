"""Runtime layer: preprocessing, inference backends behind one interface, predictors.

``from emotion_perception.runtime import load_predictor, PersonPrediction`` (docs/ARCHITECTURE.md,
"Runtime interface"). The names are resolved on first use so that importing this package (as
the CLI does to list its subcommands) stays cheap.
"""

from __future__ import annotations

from typing import Any

__all__ = ["BENetPredictor", "CAHFWPredictor", "PersonPrediction", "Predictor", "load_predictor", "top_labels"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from emotion_perception.runtime import predictor

        return getattr(predictor, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
