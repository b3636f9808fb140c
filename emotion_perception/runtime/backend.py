"""The one inference interface: ``Backend.infer(inputs) -> outputs``.

A backend runs one deployable graph (see :mod:`emotion_perception.export.graphs`): named
float32 inputs in, named outputs out. Arrays are numpy arrays or torch tensors; each backend
says which it returns (``array_type``) and accepts either, moving data only when it must
(a torch CUDA tensor given to a GPU backend is used in place).

Inputs are checked against the backend's :class:`TensorSpec` list before running, so a wrong
shape or dtype gives one clear message instead of a runtime-specific stack trace.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from emotion_perception.export.model_card import ModelCard

BACKEND_NAMES = ("tensorrt", "onnxruntime", "torch")


class BackendInputError(ValueError):
    """Inputs that do not match what the model takes."""


@dataclass(frozen=True)
class TensorSpec:
    """One graph input: fixed axes as ints, dynamic axes as None (optionally bounded / strided)."""

    name: str
    shape: tuple[int | None, ...]
    dtype: str = "float32"
    multiple_of: dict[int, int] = field(default_factory=dict)  # axis -> divisor (BENet H, W: 32)
    min_shape: tuple[int, ...] | None = None  # engine profile bounds (TensorRT)
    max_shape: tuple[int, ...] | None = None

    def describe(self) -> str:
        axes = []
        for axis, size in enumerate(self.shape):
            label = str(size) if size is not None else ("B" if axis == 0 else "?")
            if axis in self.multiple_of:
                label += f" (multiple of {self.multiple_of[axis]})"
            axes.append(label)
        return f"({', '.join(axes)}) {self.dtype}"


def input_specs(card: ModelCard) -> tuple[TensorSpec, ...]:
    """The input specs of a model card's graph."""
    specs = []
    for name in card.input_names:
        if name == "letterbox":
            specs.append(TensorSpec(name, (None, 3)))
        elif card.dynamic_size:
            specs.append(TensorSpec(name, (None, 3, None, None), multiple_of={2: card.stride, 3: card.stride}))
        else:
            specs.append(TensorSpec(name, (None, 3) + tuple(card.input_size)))
    return tuple(specs)


def _shape_and_dtype(value: Any) -> tuple[tuple[int, ...], str]:
    if isinstance(value, np.ndarray):
        return tuple(value.shape), str(value.dtype)
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a hard dependency of the package
        torch = None
    if torch is not None and isinstance(value, torch.Tensor):
        return tuple(value.shape), str(value.dtype).replace("torch.", "")
    raise BackendInputError(f"expected a numpy array or torch tensor, got {type(value).__name__}")


def check_inputs(specs: tuple[TensorSpec, ...], inputs: Mapping[str, Any]) -> None:
    """BackendInputError naming the input and what was expected, if ``inputs`` do not fit."""
    expected = [spec.name for spec in specs]
    missing = [name for name in expected if name not in inputs]
    extra = [name for name in inputs if name not in expected]
    if missing or extra:
        raise BackendInputError(f"model inputs are {expected}; missing {missing}, unexpected {extra}")
    batch = None
    for spec in specs:
        try:
            shape, dtype = _shape_and_dtype(inputs[spec.name])
        except BackendInputError as err:
            raise BackendInputError(f"input '{spec.name}': {err}") from None
        if dtype != spec.dtype:
            raise BackendInputError(f"input '{spec.name}': expected dtype {spec.dtype}, got {dtype}")
        bad = len(shape) != len(spec.shape) or any(
            want is not None and have != want for have, want in zip(shape, spec.shape)
        ) or any(shape[axis] % divisor for axis, divisor in spec.multiple_of.items() if axis < len(shape))
        if bad or 0 in shape:
            raise BackendInputError(f"input '{spec.name}': expected shape {spec.describe()}, got {shape}")
        if spec.min_shape is not None and spec.max_shape is not None and any(
            not lo <= have <= hi for lo, have, hi in zip(spec.min_shape, shape, spec.max_shape)
        ):
            raise BackendInputError(
                f"input '{spec.name}': shape {shape} is outside the engine's optimisation profile "
                f"{tuple(spec.min_shape)}..{tuple(spec.max_shape)} (rebuild the engine with a larger profile)"
            )
        if batch is None:
            batch = shape[0]
        elif shape[0] != batch:
            raise BackendInputError(f"input '{spec.name}': batch {shape[0]} differs from the other inputs' {batch}")


class Backend(ABC):
    """Runs one graph. Subclasses set the attributes below and implement :meth:`_run`."""

    name: str  # one of BACKEND_NAMES
    device: str  # "cpu", "cuda:0", ...
    precision: str  # "fp32" | "fp16" | "int8"
    array_type: str  # "numpy" | "torch": what infer returns
    inputs: tuple[TensorSpec, ...]
    output_names: tuple[str, ...]
    details: dict[str, Any]  # backend-specific facts for logs and benchmarks (providers, ...)

    def infer(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        """Run the graph on named inputs; returns named outputs (see ``array_type``)."""
        check_inputs(self.inputs, inputs)
        return self._run(inputs)

    @abstractmethod
    def _run(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        """Run on already-checked inputs."""

    def synchronize(self) -> None:
        """Wait until work queued on the device is done (for timing); no-op on CPU."""

    def close(self) -> None:
        """Release device memory and sessions."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(device={self.device!r}, precision={self.precision!r})"
