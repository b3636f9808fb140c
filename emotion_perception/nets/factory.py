"""One factory for every model: a registry of (config class, presets, builder) keyed by name.

Each model module registers itself at import time with :func:`register_model`; the factory
imports the known model modules on first use (``MODEL_MODULES``), so callers only ever write
``create_model("benet", "lite", vad_head=True)`` or ``load_model_from_checkpoint(path)``.

Every registered model exposes
``example_inputs(batch: int = 1, input_size: tuple[int, int] | None = None) -> tuple[Tensor, ...]``
(inputs at its configured size, on the model's device) so generic tools such as
``emotion-perception model-info`` work for all of them.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from emotion_perception.errors import FieldError

# Model name -> module that registers it. A module that is missing, fails to import or does not
# register its name is an error (a skipped one would make the model vanish without a word).
MODEL_MODULES: dict[str, str] = {
    "benet": "emotion_perception.nets.benet",
    "cahfw": "emotion_perception.nets.cahfw",
    "expression": "emotion_perception.nets.expression",
}


@dataclass(frozen=True)
class ModelEntry:
    """What the factory knows about one model family."""

    name: str
    config_class: type  # a frozen dataclass
    presets: Mapping[str, Any]  # preset name -> config_class instance
    builder: Callable[[Any], nn.Module]  # config -> model
    default_preset: str
    # Values of fields added after checkpoints were saved: a saved config without the field was
    # built with this value (not with today's default).
    legacy_defaults: Mapping[str, Any] = dataclasses.field(default_factory=dict)


MODEL_REGISTRY: dict[str, ModelEntry] = {}


class CheckpointError(FieldError):
    """A checkpoint that cannot be used; the message names the file and the field."""


def register_model(
    name: str,
    config_class: type,
    presets: Mapping[str, Any],
    builder: Callable[[Any], nn.Module],
    default_preset: str,
    legacy_defaults: Mapping[str, Any] | None = None,
) -> None:
    """Add a model family to :data:`MODEL_REGISTRY` (called once by each model module)."""
    if not dataclasses.is_dataclass(config_class):
        raise TypeError(f"model '{name}': config_class {config_class!r} is not a dataclass")
    if default_preset not in presets:
        raise ValueError(f"model '{name}': default preset '{default_preset}' is not among {sorted(presets)}")
    for preset_name, config in presets.items():
        if not isinstance(config, config_class):
            raise TypeError(f"model '{name}': preset '{preset_name}' is not a {config_class.__name__}")
    MODEL_REGISTRY[name] = ModelEntry(name, config_class, dict(presets), builder, default_preset,
                                      dict(legacy_defaults or {}))


def _import_model_modules() -> None:
    for model_name, module_name in MODEL_MODULES.items():
        if model_name in MODEL_REGISTRY:
            continue
        try:
            importlib.import_module(module_name)
        except ImportError as err:
            raise ImportError(f"model '{model_name}': cannot import its module {module_name} ({err})") from err
        if model_name not in MODEL_REGISTRY:
            raise ImportError(f"model '{model_name}': {module_name} does not register it (register_model)")


def model_names() -> list[str]:
    """Names of every registered model."""
    _import_model_modules()
    return sorted(MODEL_REGISTRY)


def get_entry(name: str) -> ModelEntry:
    """Registry entry of ``name``; ValueError listing the known names otherwise."""
    _import_model_modules()
    if name not in MODEL_REGISTRY:
        raise ValueError(f"unknown model '{name}'; known models: {', '.join(sorted(MODEL_REGISTRY)) or 'none'}")
    return MODEL_REGISTRY[name]


def _as_field_value(value: Any) -> Any:
    # Configs travel through YAML and checkpoints as lists; the frozen dataclasses hold tuples.
    if isinstance(value, list):
        return tuple(_as_field_value(v) for v in value)
    return value


def build_config(name: str, preset: str | None = None, **overrides: Any) -> Any:
    """The config of preset ``preset`` (default preset if None) with ``overrides`` applied."""
    entry = get_entry(name)
    preset_name = entry.default_preset if preset is None else preset
    if preset_name not in entry.presets:
        raise ValueError(f"model '{name}' has no preset '{preset_name}'; presets: {', '.join(sorted(entry.presets))}")
    known = {f.name for f in dataclasses.fields(entry.config_class)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(
            f"model '{name}': unknown config field(s) {', '.join(unknown)}; fields: {', '.join(sorted(known))}"
        )
    values = {key: _as_field_value(value) for key, value in overrides.items()}
    return dataclasses.replace(entry.presets[preset_name], **values)


def config_from_dict(name: str, values: Mapping[str, Any], source: str | Path = "<config>") -> Any:
    """Rebuild a model config from ``asdict(config)`` (e.g. a checkpoint's ``config``)."""
    entry = get_entry(name)
    fields = {f.name: f for f in dataclasses.fields(entry.config_class)}
    values = {**{k: v for k, v in entry.legacy_defaults.items() if k not in values}, **values}
    for key in values:
        if key not in fields:
            raise CheckpointError(source, f"config.{key}", f"not a field of {entry.config_class.__name__}")
    missing = [key for key, f in fields.items() if key not in values and f.default is dataclasses.MISSING
               and f.default_factory is dataclasses.MISSING]
    if missing:
        raise CheckpointError(source, f"config.{missing[0]}", "missing")
    try:
        return entry.config_class(**{key: _as_field_value(value) for key, value in values.items()})
    except (TypeError, ValueError) as err:
        raise CheckpointError(source, "config", str(err)) from err


def create_model(name: str, preset: str | None = None, **overrides: Any) -> nn.Module:
    """Build model ``name`` from preset ``preset`` (its default if None) plus config overrides."""
    return get_entry(name).builder(build_config(name, preset, **overrides))


def read_checkpoint(
    path: str | Path, map_location: str | torch.device = "cpu",
    required: tuple[str, ...] = ("model_name", "config", "model"),
) -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True``: a dict holding at least ``required``.

    FileNotFoundError for a missing file, CheckpointError (naming file and field) for a corrupt
    or foreign one. The one place checkpoints are read, for every layer.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint file not found")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises many types for truncated or foreign files
        raise CheckpointError(path, "<file>", f"not a readable torch checkpoint ({type(err).__name__}: {err})") from err
    if not isinstance(checkpoint, dict):
        raise CheckpointError(path, "<file>", f"expected a dict, got {type(checkpoint).__name__}")
    for key in required:
        if key not in checkpoint:
            raise CheckpointError(path, key, "missing")
    return checkpoint


def write_checkpoint(path: str | Path, state: Mapping[str, Any]) -> Path:
    """Save ``state`` with ``torch.save`` atomically and return the path; the one place
    checkpoints are written, for every layer (training, ``train.ship``, benchmarks).

    The file is written beside ``path`` under a temporary name, then renamed over it: a reader,
    or a run killed mid-write, sees the old file or the new one, never half of one. Values must
    be what :func:`read_checkpoint` reads back with ``weights_only=True`` (tensors and plain
    containers; configs through ``serialization.plain``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        torch.save(dict(state), temporary)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path


def trained_on_of(checkpoint: Mapping[str, Any]) -> str:
    """What a checkpoint's weights learned from (its ``trained_on`` entry), "unknown" if unsaid."""
    value = checkpoint.get("trained_on", "unknown")
    return value if isinstance(value, str) and value else "unknown"


def label_thresholds_of(checkpoint: Mapping[str, Any]) -> dict[str, float] | None:
    """A checkpoint's calibrated per-category label thresholds, None when it has none."""
    value = checkpoint.get("label_thresholds")
    if not isinstance(value, Mapping) or not value:
        return None
    return {str(k): float(v) for k, v in value.items()}


def load_model_from_checkpoint(
    path: str | Path, map_location: str | torch.device = "cpu"
) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model saved in a checkpoint (see docs/ARCHITECTURE.md) and load its weights.

    Returns the model (in eval mode) and the whole checkpoint dict.
    """
    path = Path(path)
    checkpoint = read_checkpoint(path, map_location)
    name = checkpoint["model_name"]
    if not isinstance(name, str):
        raise CheckpointError(path, "model_name", f"expected a string, got {type(name).__name__}")
    try:
        get_entry(name)
    except ValueError as err:
        raise CheckpointError(path, "model_name", str(err)) from err
    if not isinstance(checkpoint["config"], Mapping):
        raise CheckpointError(path, "config", f"expected a dict, got {type(checkpoint['config']).__name__}")
    if not isinstance(checkpoint["model"], Mapping):
        raise CheckpointError(path, "model", f"expected a state dict, got {type(checkpoint['model']).__name__}")
    config = config_from_dict(name, checkpoint["config"], source=path)
    model = get_entry(name).builder(config)
    try:
        model.load_state_dict(checkpoint["model"], strict=True)
    except RuntimeError as err:
        raise CheckpointError(path, "model", f"weights do not match the config: {err}") from err
    model.to(map_location)
    model.eval()
    return model, checkpoint
