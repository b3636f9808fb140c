"""Training checkpoints: what ``last.pt`` / ``best.pt`` / ``final.pt`` hold, written and restored.

Layout (docs/ARCHITECTURE.md, "Checkpoints"): ``{"model", "model_name", "config", "optimizer",
"scheduler", "scaler", "epoch", "step", "epoch_progress", "metrics", "train_config"}``, every
value made of tensors and plain containers so that ``torch.load(..., weights_only=True)`` reads
it back. Written through ``nets.factory.write_checkpoint`` (atomic), read through
``nets.factory.read_checkpoint``, the one writer and the one reader of every layer.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from emotion_perception.nets.factory import read_checkpoint, write_checkpoint
from emotion_perception.serialization import plain
from emotion_perception.train.distributed import unwrap_model
from emotion_perception.train.recipes import ConfigError

CHECKPOINT_KEYS = ("model", "model_name", "config", "epoch")


def save_checkpoint(
    path: str | Path,
    *,
    model: nn.Module,
    model_name: str,
    model_config: Any,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    scaler: torch.amp.GradScaler | None = None,
    epoch: int = 0,
    step: int = 0,
    epoch_progress: Mapping[str, Any] | None = None,
    metrics: Mapping[str, Any] | None = None,
    train_config: Any = None,
) -> Path:
    """Write a training checkpoint atomically and return its path.

    ``epoch`` counts complete passes, ``step`` optimisation steps; ``epoch_progress`` says how
    far the pass after ``epoch`` had got when the run stopped inside it (``train/loop.py``).
    Configs may be dataclasses (stored as dicts).
    """
    return write_checkpoint(path, {
        "model": unwrap_model(model).state_dict(),
        "model_name": model_name,
        "config": plain(model_config),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "scaler": scaler.state_dict() if scaler is not None else None,
        "epoch": int(epoch),
        "step": int(step),
        "epoch_progress": plain(dict(epoch_progress or {"steps": 0, "meters": {}})),
        "metrics": plain(dict(metrics or {})),
        "train_config": plain(train_config),
    })


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a training checkpoint (weights_only=True); FileNotFoundError or CheckpointError otherwise."""
    return read_checkpoint(path, map_location, required=CHECKPOINT_KEYS)


def restore_training_state(
    checkpoint: Mapping[str, Any],
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    scaler: torch.amp.GradScaler | None = None,
    source: str | Path = "<checkpoint>",
) -> int:
    """Load weights and optimiser/scheduler/scaler state; returns the complete passes (``epoch``)."""
    try:
        unwrap_model(model).load_state_dict(checkpoint["model"])
    except RuntimeError as err:
        raise ConfigError(source, "model", f"weights do not fit this model: {err}") from err
    for name, target in (("optimizer", optimizer), ("scheduler", scheduler), ("scaler", scaler)):
        state = checkpoint.get(name)
        if target is None:
            continue
        if state is None:
            raise ConfigError(source, name, "missing; cannot resume training from this checkpoint")
        target.load_state_dict(state)
    return int(checkpoint["epoch"])
