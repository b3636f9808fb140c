"""Training recipes: flat YAML mappings validated against one frozen dataclass per model.

A ``base: other.yaml`` key (relative to the file) reads another recipe first, so an ablation
states only what differs; every bad entry is a :class:`ConfigError` naming the file and field.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from emotion_perception.errors import FieldError


class ConfigError(FieldError):
    """A bad training recipe; the message names the file and the field."""


def _merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _merge(dict(merged[key]), value)
        else:
            merged[key] = value
    return merged


def load_recipe(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Read a training YAML; a ``base: other.yaml`` key (relative to the file) is read first.

    Recipes such as head ablations therefore state only what differs from the main recipe.
    """
    import yaml

    path = Path(path).resolve()
    if path in _seen:
        raise ConfigError(path, "base", "circular 'base' chain")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: training config not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise ConfigError(path, "<file>", f"not valid YAML ({err})") from err
    if not isinstance(data, dict):
        raise ConfigError(path, "<file>", f"expected a mapping at the top level, got {type(data).__name__}")
    base = data.pop("base", None)
    if base is None:
        return data
    if not isinstance(base, str):
        raise ConfigError(path, "base", "expected a file name")
    return _merge(load_recipe(path.parent / base, _seen + (path,)), data)


def dataclass_from_mapping(cls: type, values: Mapping[str, Any], source: str | Path) -> Any:
    """Build dataclass ``cls`` from ``values``, naming the file and field of any bad entry.

    Lists become tuples where the field's default is a tuple; numbers are coerced to the type
    of the default (YAML reads ``1e-3`` as a string and ``250`` as an int for a float field).
    """
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(source, unknown[0], f"unknown field; known fields: {', '.join(sorted(fields))}")
    kwargs: dict[str, Any] = {}
    for name, value in values.items():
        field = fields[name]
        default = field.default if field.default is not dataclasses.MISSING else (
            field.default_factory() if field.default_factory is not dataclasses.MISSING else None
        )
        try:
            kwargs[name] = _coerce(value, default)
        except (TypeError, ValueError) as err:
            raise ConfigError(source, name, f"{value!r} does not fit ({err})") from err
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as err:
        raise ConfigError(source, "<config>", str(err)) from err


def _coerce(value: Any, default: Any) -> Any:
    if value is None or default is None:
        return value
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise TypeError("expected true or false")
        return value
    if isinstance(default, int) and not isinstance(default, bool):
        if isinstance(value, bool) or float(value) != int(float(value)):
            raise TypeError("expected an integer")
        return int(float(value))
    if isinstance(default, float):
        if isinstance(value, bool):
            raise TypeError("expected a number")
        return float(value)
    if isinstance(default, tuple):
        if isinstance(value, str):
            value = [item.strip() for item in value.split(",") if item.strip()]
        if not isinstance(value, (list, tuple)):
            raise TypeError("expected a list")
        return tuple(value)
    if isinstance(default, str):
        if not isinstance(value, str):
            raise TypeError("expected a string")
        return value
    if isinstance(default, dict):
        if not isinstance(value, Mapping):
            raise TypeError("expected a mapping")
        return dict(value)
    return value
