"""The one inference interface, ``Backend.infer(inputs) -> outputs``, and the table of backends.

A backend runs one deployable graph (see :mod:`emotion_perception.export.graphs`): named
float32 inputs in, named outputs out. Arrays are numpy arrays or torch tensors; each backend
says which it returns (``array_type``) and accepts either, moving data only when it must
(a torch CUDA tensor given to a GPU backend is used in place).

Inputs are checked against the backend's :class:`TensorSpec` list before running, so a wrong
shape or dtype gives one clear message instead of a runtime-specific stack trace.

:data:`BACKENDS` lists every backend once, in the order ``backend="auto"`` prefers them: the
model files it opens, the precisions it runs (and which of them on CPU), whether it can run on
a device here, and its module's one entry ``open_backend(path, kind, device, precision, cache,
options) -> Backend``. :func:`choose_backend` picks from it; predictors ask it for a backend
(``backend_entry(name).open(...)``) and never build one themselves.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from emotion_perception.export.model_card import ModelCard
from emotion_perception.runtime.model_files import MODEL_KINDS, default_cache_dir


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
    torch: ModuleType | None
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

    name: str  # its row in BACKENDS
    device: str  # "cpu", "cuda:0", ...
    precision: str  # "fp32" | "fp16" | "int8"
    card: ModelCard  # what the graph it runs is (drives preprocessing and decoding)
    array_type: str  # "numpy" | "torch": what infer returns
    inputs: tuple[TensorSpec, ...]
    output_names: tuple[str, ...]
    details: dict[str, Any]  # backend-specific facts for logs and benchmarks (providers, ...)

    _closed: bool = False

    def infer(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        """Run the graph on named inputs; returns named outputs (see ``array_type``)."""
        if self._closed:
            # Without this, a closed session fails deep inside its runtime ('NoneType' has no ...).
            raise RuntimeError(f"{self!r} is closed; load the model again to run it")
        check_inputs(self.inputs, inputs)
        return self._run(inputs)

    @abstractmethod
    def _run(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        """Run on already-checked inputs."""

    def synchronize(self) -> None:  # noqa: B027 - optional hook: a no-op unless a backend has a device queue
        """Wait until work queued on the device is done (for timing); no-op on CPU."""

    def close(self) -> None:
        """Release device memory and sessions; :meth:`infer` refuses to run afterwards."""
        self._closed = True
        self._release()

    def _release(self) -> None:  # noqa: B027 - optional hook: a no-op unless a backend holds resources
        """Free what the backend holds (its session, engine, module, device memory)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(device={self.device!r}, precision={self.precision!r})"


# --------------------------------------------------------------------------- the backend table


@dataclass(frozen=True)
class OpenOptions:
    """What some backends need beyond (path, kind, device, precision, cache); each field says which."""

    threads: int | None = None  # CPU intra-op threads (onnxruntime; torch: process-wide); None: the default
    compile: bool = False  # torch.compile the graph (torch)
    cuda_graph: bool = False  # capture the graph once per input shape and replay it (torch, tensorrt)
    # The largest batch one ``infer`` call will carry: it sizes the profile of the TensorRT
    # engines built here (a prebuilt engine keeps its own). An int for every model, or one per
    # model family (the card's ``model_name``), since the family is known only once the file's
    # card is read; ``Predictor.max_batch`` says why each predictor's is what it is.
    max_batch: int | Mapping[str, int] = 1
    onnxruntime_providers: tuple[str, ...] | None = None  # as probed (onnxruntime); None: ask onnxruntime

    def max_batch_for(self, model_name: str) -> int:
        if isinstance(self.max_batch, int):
            return self.max_batch
        if model_name not in self.max_batch:
            raise ValueError(f"OpenOptions.max_batch gives no batch for a '{model_name}' model "
                             f"(only for {', '.join(self.max_batch) or 'none'})")
        return int(self.max_batch[model_name])


@dataclass(frozen=True)
class Availability:
    """What this machine offers (probed once by :func:`probe_availability`)."""

    cuda: bool
    tensorrt: bool
    onnxruntime_providers: tuple[str, ...]


Opener = Callable[[Path, str, str, str, Path, OpenOptions], Backend]


@dataclass(frozen=True)
class BackendEntry:
    """One row of :data:`BACKENDS`: what a backend opens, at which precisions, and how."""

    name: str
    kinds: tuple[str, ...]  # the model files it opens (model_files.MODEL_KINDS)
    precisions: tuple[str, ...]  # what it runs; "auto" is accepted too and means auto_precision
    auto_precision: str  # what "auto" picks, in words (for docs and errors)
    cpu_precisions: tuple[str, ...]  # those of ``precisions`` it runs on CPU (none: a GPU-only backend)
    cpu_refusal: str  # why the others are refused on CPU
    summary: str  # what it is, for the log line saying why auto picked it
    opener: Opener  # its module's ``open_backend``, imported on first use
    unavailable: Callable[[str, Availability], str | None]  # why it cannot run on a device here, else None

    def check_kind(self, kind: str) -> None:
        """ValueError naming the backends that do open ``kind``, if this one does not."""
        if kind not in MODEL_KINDS:
            raise ValueError(f"model kind must be one of {MODEL_KINDS}, got {kind!r}")
        if kind not in self.kinds:
            openers = " or ".join(entry.name for entry in BACKENDS if kind in entry.kinds)
            raise ValueError(f"the {self.name} backend opens {' or '.join(self.kinds)} files, not "
                             f"a{_n(kind)} {kind} file; that runs on {openers}")

    def check_precision(self, precision: str, device: str) -> None:
        """ValueError saying why, if this backend does not run ``precision`` on ``device``."""
        if precision != "auto" and precision not in self.precisions:
            raise ValueError(f"the {self.name} backend runs precision auto ({self.auto_precision}) or "
                             f"{', '.join(self.precisions)}, not {precision!r}")
        if device == "cpu" and precision != "auto" and precision not in self.cpu_precisions:
            raise ValueError(self.cpu_refusal)

    def open(self, path: str | Path, kind: str, device: str, precision: str = "auto",
             cache: str | Path | None = None, options: OpenOptions = OpenOptions()) -> Backend:
        """This backend on the model file ``path`` of ``kind``, on ``device`` ("cpu" or "cuda:N",
        as :func:`choose_backend` resolves it): checks kind and precision, then calls the module's
        ``open_backend``. ``cache`` keeps the exports and engines made on the way (default:
        ``model_files.default_cache_dir()``)."""
        self.check_kind(kind)
        self.check_precision(precision, device)
        cache = Path(cache) if cache is not None else default_cache_dir()
        return self.opener(Path(path), kind, device, precision, cache, options)


def _n(word: str) -> str:
    return "n" if word[:1] in "aeiou" else ""


# The openers import their module on first use: torch, onnxruntime and tensorrt are heavy, and
# a machine may lack some of them.
def _open_tensorrt(path: Path, kind: str, device: str, precision: str, cache: Path, options: OpenOptions) -> Backend:
    from emotion_perception.runtime.tensorrt_backend import open_backend

    return open_backend(path, kind, device, precision, cache, options)


def _open_onnxruntime(path: Path, kind: str, device: str, precision: str, cache: Path, options: OpenOptions) -> Backend:
    from emotion_perception.runtime.onnxruntime_backend import open_backend

    return open_backend(path, kind, device, precision, cache, options)


def _open_torch(path: Path, kind: str, device: str, precision: str, cache: Path, options: OpenOptions) -> Backend:
    from emotion_perception.runtime.torch_backend import open_backend

    return open_backend(path, kind, device, precision, cache, options)


def _tensorrt_unavailable(device: str, available: Availability) -> str | None:
    if not available.tensorrt:
        return "TensorRT is not installed (Python package 'tensorrt'); use the ONNX model with the onnxruntime backend"
    if not available.cuda:
        return "TensorRT needs a CUDA GPU, and none is available"
    if device == "cpu":
        return "the tensorrt backend runs on a CUDA device, not 'cpu'"
    return None


def _onnxruntime_unavailable(device: str, available: Availability) -> str | None:
    from emotion_perception.runtime.onnxruntime_backend import CPU_EP, GPU_PROVIDERS

    providers = set(available.onnxruntime_providers)
    if not providers:
        return "onnxruntime is not installed"
    if device == "cpu":
        return None if CPU_EP in providers else "the installed onnxruntime has no CPU provider"
    if not providers & set(GPU_PROVIDERS):
        return (f"device {device!r}: the installed onnxruntime has no GPU provider "
                "(install onnxruntime-gpu, or use device 'cpu')")
    return None


def _torch_unavailable(device: str, available: Availability) -> str | None:
    return None if device == "cpu" or available.cuda else "no CUDA GPU is available (torch sees none)"


# Every backend, in the order ``backend="auto"`` prefers them on a device (fastest first).
BACKENDS: tuple[BackendEntry, ...] = (
    BackendEntry(
        name="tensorrt", kinds=("checkpoint", "onnx", "engine"), precisions=("fp32", "fp16", "int8"),
        auto_precision="fp16; an engine file runs at the precision it was built with",
        cpu_precisions=(), cpu_refusal="the tensorrt backend runs on a CUDA device, not 'cpu'",
        summary="native TensorRT engine (built once per GPU, TensorRT version and precision, cached)",
        opener=_open_tensorrt, unavailable=_tensorrt_unavailable,
    ),
    BackendEntry(
        name="onnxruntime", kinds=("checkpoint", "onnx"), precisions=("fp32", "fp16", "int8"),
        auto_precision="the graph's own, fp32 for a checkpoint; on a GPU its TensorRT provider may use fp16",
        cpu_precisions=("fp32", "int8"),
        cpu_refusal="fp16 is for GPUs (ONNX Runtime's CPU kernels are fp32); on CPU use fp32 or int8",
        summary="ONNX Runtime (on CPU its optimised graph is several times faster than PyTorch eager; "
                "on a GPU its TensorRT or CUDA provider); a checkpoint is exported to ONNX once, cached",
        opener=_open_onnxruntime, unavailable=_onnxruntime_unavailable,
    ),
    BackendEntry(
        name="torch", kinds=("checkpoint",), precisions=("fp32", "fp16"),
        auto_precision="fp16 on a GPU, fp32 on CPU", cpu_precisions=("fp32",),
        cpu_refusal="fp16 on CPU is slower than fp32 in PyTorch; use precision fp32 on CPU",
        summary="PyTorch (CPU: fp32 eager; GPU: fp16, channels-last)",
        opener=_open_torch, unavailable=_torch_unavailable,
    ),
)
BACKEND_NAMES = tuple(entry.name for entry in BACKENDS)


def backend_entry(name: str) -> BackendEntry:
    """The row of :data:`BACKENDS` called ``name``; ValueError listing the names otherwise."""
    for entry in BACKENDS:
        if entry.name == name:
            return entry
    raise ValueError(f"backend must be auto, {', '.join(BACKEND_NAMES)}, got {name!r}")


# --------------------------------------------------------------------------- which backend runs here


def probe_availability() -> Availability:
    import importlib.util

    import torch

    try:
        import onnxruntime as ort

        providers = tuple(ort.get_available_providers())
    except ImportError:
        providers = ()
    return Availability(
        cuda=torch.cuda.is_available(),
        tensorrt=importlib.util.find_spec("tensorrt") is not None,
        onnxruntime_providers=providers,
    )


def resolve_device(device: str, available: Availability) -> str:
    """"auto" -> "cuda:0" when CUDA is available, else "cpu"; validates explicit devices."""
    if device == "auto":
        return "cuda:0" if available.cuda else "cpu"
    if device == "cpu":
        return "cpu"
    if device == "cuda" or (device.startswith("cuda:") and device[5:].isdigit()):
        if not available.cuda:
            raise ValueError(f"device {device!r} asked for, but no CUDA GPU is available (torch sees none)")
        return "cuda:0" if device == "cuda" else device
    raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}")


def _devices_to_try(device: str, available: Availability) -> list[str]:
    # "auto" means a GPU if there is one and the CPU after it, so that a file no GPU runtime
    # here opens still runs (an ONNX model on a GPU machine without tensorrt or onnxruntime-gpu).
    # The CPU also follows an explicit GPU under backend="auto", as it always has.
    resolved = resolve_device(device, available)
    return [resolved] if resolved == "cpu" else [resolved, "cpu"]


def _device_order(kind: str, target: str, available: Availability) -> tuple[BackendEntry, ...]:
    """:data:`BACKENDS` in the order ``auto`` tries them on ``target``. One exception to the table
    order: on a GPU whose ONNX Runtime has only the CUDA provider (no TensorRT provider), a
    checkpoint runs faster in PyTorch at fp16 than as ONNX Runtime's fp32 graph, so torch goes
    first there."""
    from emotion_perception.runtime.onnxruntime_backend import TRT_EP

    if target == "cpu" or kind != "checkpoint" or TRT_EP in available.onnxruntime_providers:
        return BACKENDS
    torch_row = backend_entry("torch")
    ordered = [entry for entry in BACKENDS if entry is not torch_row]
    ordered.insert(next(i for i, entry in enumerate(ordered) if entry.name == "onnxruntime"), torch_row)
    return tuple(ordered)


def auto_candidates(kind: str, device: str, available: Availability) -> list[tuple[str, str, str]]:
    """Every (backend, device, reason) that can run a model file of ``kind`` here, best first:
    the GPU (if any) before the CPU, on each device the :data:`BACKENDS` order. Each reason says
    what the backend is and why those before it were passed over. ``backend="auto"`` takes the
    first. ValueError giving each backend's reason when none can run the file."""
    if kind not in MODEL_KINDS:
        raise ValueError(f"model kind must be one of {MODEL_KINDS}, got {kind!r}")
    candidates: list[tuple[str, str, str]] = []
    passed_over: list[str] = []
    refusals: dict[str, str] = {}
    for target in _devices_to_try(device, available):
        for entry in _device_order(kind, target, available):
            if kind not in entry.kinds:
                refusals.setdefault(entry.name, f"opens no {kind} files")
                continue
            why_not = entry.unavailable(target, available)
            if why_not is None:
                reason = f"{'CPU' if target == 'cpu' else 'GPU'}: {entry.summary}"
                candidates.append((entry.name, target, reason + (f" (not {'; not '.join(passed_over)})"
                                                                   if passed_over else "")))
            else:
                refusals.setdefault(entry.name, why_not)
                if target != "cpu" or entry.cpu_precisions:  # that a GPU-only backend skips the CPU is no news
                    passed_over.append(f"{entry.name}: {why_not}")
    if not candidates:
        raise ValueError(f"no backend can run a{_n(kind)} {kind} file here: "
                         + "; ".join(f"{name}: {why}" for name, why in refusals.items()))
    return candidates


def choose_backend(kind: str, backend: str, device: str, available: Availability) -> tuple[str, str, str]:
    """(backend, device, reason) for a model file of ``kind``: ``backend="auto"`` takes the first
    of :func:`auto_candidates`; a named backend runs on ``device`` (``auto``: the GPU if it can
    use it here, else the CPU). ValueError saying why when the combination cannot run here."""
    if backend == "auto":
        return auto_candidates(kind, device, available)[0]
    entry = backend_entry(backend)
    entry.check_kind(kind)
    targets = _devices_to_try(device, available) if device == "auto" else [resolve_device(device, available)]
    refusals: list[str] = []
    for target in targets:
        why_not = entry.unavailable(target, available)
        if why_not is None:
            return backend, target, f"asked for {backend}" + (f" ({refusals[0]})" if refusals else "")
        refusals.append(why_not)
    raise ValueError(refusals[0])
