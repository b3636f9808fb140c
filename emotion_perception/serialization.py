"""Values as plain containers: what ``torch.load(..., weights_only=True)`` and strict JSON accept.

Checkpoints store configs and metrics through :func:`plain`; result files (``metrics.json``,
``history.json``) go through :func:`jsonable`. Imports nothing of ours, so every layer may use it
(``eval`` writes its JSON with it without importing ``train``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np


def plain(value: Any) -> Any:
    """Dataclasses -> dicts, tuples -> lists, Paths -> str, numpy scalars and arrays -> Python values.

    Mapping keys become strings; anything else (tensors, numbers, strings, None) is kept as is.
    """
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def jsonable(value: Any) -> Any:
    """:func:`plain`, with NaN and infinities as None: ``json.dumps(..., allow_nan=False)`` accepts it."""
    value = plain(value)
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
