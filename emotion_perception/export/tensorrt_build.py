"""Build TensorRT engines from our ONNX exports with the TensorRT Python API.

Builder settings: explicit optimisation profile (min/opt/max shapes per input), workspace
memory-pool limit, persistent timing cache (rebuilds take seconds instead of minutes), TF32
allowed for fp32 layers, and for ``fp16``:

* TensorRT 10.x (weakly typed networks): the ``FP16`` builder flag lets TensorRT pick fp16
  kernels where it judges them accurate enough;
* TensorRT 11+ (strongly typed only, the flag no longer exists): the ONNX graph itself must be
  an fp16 export (``export --precision fp16``: float16 weights and activations behind float32
  inputs/outputs), which the export command produces automatically when the flag is missing.

Engines are named and invalidated by :mod:`emotion_perception.export.engine_cache`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from emotion_perception.export.engine_cache import (
    EngineKey,
    decide,
    engine_path,
    file_sha256,
    validate_profile,
)
from emotion_perception.export.model_card import (
    ModelCard,
    card_from_dict,
    read_onnx_card,
    sidecar_path,
    write_file_atomically,
    write_sidecar,
)

LOGGER = logging.getLogger(__name__)
DEFAULT_WORKSPACE_BYTES = 4 << 30


class TensorRTUnavailableError(RuntimeError):
    """TensorRT (or a CUDA GPU for it) is not available on this machine."""


class TensorRTBuildError(RuntimeError):
    """TensorRT could not parse the ONNX graph or build an engine from it; the message says why."""


def import_tensorrt() -> Any:
    """The ``tensorrt`` module; TensorRTUnavailableError saying how to get it otherwise."""
    try:
        import tensorrt
    except ImportError as err:
        raise TensorRTUnavailableError(
            "TensorRT is not installed: the 'tensorrt' Python package (NVIDIA, needs a CUDA GPU and "
            "driver) is required for --format tensorrt and --backend tensorrt. Use the ONNX model with "
            "--backend onnxruntime instead, or install TensorRT matching your CUDA version."
        ) from err
    return tensorrt


def require_cuda() -> Any:
    import torch

    if not torch.cuda.is_available():
        raise TensorRTUnavailableError("TensorRT needs a CUDA GPU, and torch sees none on this machine")
    return torch


def has_weak_fp16_flag(trt: Any) -> bool:
    """Whether this TensorRT still offers the weak-typing FP16 builder flag (10.x; removed in 11)."""
    return hasattr(trt.BuilderFlag, "FP16")


@dataclass(frozen=True)
class GpuInfo:
    name: str
    compute_capability: str


def current_gpu(device_index: int = 0) -> GpuInfo:
    torch = require_cuda()
    major, minor = torch.cuda.get_device_capability(device_index)
    return GpuInfo(torch.cuda.get_device_name(device_index), f"{major}.{minor}")


def wanted_engine_key(onnx_path: Path, card: ModelCard, precision: str, profile: dict, trt: Any,
                      gpu: GpuInfo, allow_tf32: bool = True) -> EngineKey:
    return EngineKey(
        onnx_sha256=file_sha256(onnx_path),
        tensorrt_version=str(trt.__version__),
        gpu_name=gpu.name,
        compute_capability=gpu.compute_capability,
        precision=precision,
        profile={name: {k: list(v) for k, v in shapes.items()} for name, shapes in profile.items()},
        tf32=allow_tf32,
    )


def _severity(trt: Any, verbose: bool) -> Any:
    return trt.Logger.VERBOSE if verbose else trt.Logger.WARNING


def build_engine(
    onnx_path: str | Path,
    out_path: str | Path,
    precision: str,
    profile: dict[str, dict[str, list[int]]],
    workspace_bytes: int = DEFAULT_WORKSPACE_BYTES,
    timing_cache_path: str | Path | None = None,
    verbose: bool = False,
    device_index: int = 0,
    allow_tf32: bool = True,
) -> Path:
    """Parse ``onnx_path``, build a serialized engine under ``profile`` on GPU ``device_index`` and
    write it to ``out_path`` (beside it first, then renamed: a reader never sees half an engine).

    ``allow_tf32=False`` clears TensorRT's default TF32 for fp32 layers (parity checks against
    another runtime: TF32 rounds matmul/conv inputs to 10 mantissa bits).
    """
    trt = import_tensorrt()
    torch = require_cuda()
    validate_profile(profile)
    if precision not in ("fp32", "fp16", "int8"):
        raise ValueError(f"TensorRT precision must be fp32, fp16 or int8 (QDQ graph), got {precision!r}")
    onnx_path, out_path = Path(onnx_path), Path(out_path)
    # The engine is tuned for, and bound to, the GPU current while it is built.
    previous_device = torch.cuda.current_device()
    torch.cuda.set_device(device_index)
    try:
        serialized, config = _build_serialized(trt, onnx_path, precision, profile, workspace_bytes,
                                               timing_cache_path, verbose, allow_tf32)
    finally:
        torch.cuda.set_device(previous_device)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    write_file_atomically(out_path, bytes(serialized))
    if timing_cache_path is not None:
        Path(timing_cache_path).parent.mkdir(parents=True, exist_ok=True)
        write_file_atomically(timing_cache_path, bytes(config.get_timing_cache().serialize()))
    return out_path


def _set_precision_flags(trt: Any, config: Any, precision: str, onnx_path: Path) -> None:
    """Builder flags of ``precision``. TensorRT 10.x (weakly typed): FP16 lets it choose fp16
    kernels, INT8 runs a QDQ graph's quantised layers (with FP16 for the layers left in float).
    TensorRT 11+ (strongly typed only, no FP16 flag): precisions come from the graph itself."""
    weak_fp16 = has_weak_fp16_flag(trt)
    if precision == "fp16":
        if weak_fp16:
            config.set_flag(trt.BuilderFlag.FP16)
        elif read_onnx_card(onnx_path).precision != "fp16":
            raise ValueError(
                f"TensorRT {trt.__version__} builds strongly typed networks only: an fp16 engine needs an "
                f"fp16 ONNX export (emotion-perception export --format onnx --precision fp16), "
                f"{onnx_path} is fp32"
            )
    elif precision == "int8":
        if hasattr(trt.BuilderFlag, "INT8"):
            config.set_flag(trt.BuilderFlag.INT8)
        if weak_fp16:
            config.set_flag(trt.BuilderFlag.FP16)


def _build_serialized(trt: Any, onnx_path: Path, precision: str, profile: dict[str, dict[str, list[int]]],
                      workspace_bytes: int, timing_cache_path: str | Path | None, verbose: bool,
                      allow_tf32: bool) -> tuple[Any, Any]:
    logger = trt.Logger(_severity(trt, verbose))
    builder = trt.Builder(logger)
    # Explicit batch is the only mode since TensorRT 10 (flag value 0); 8.x needs the flag.
    flags = 0
    if hasattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH") and int(str(trt.__version__).split(".")[0]) < 10:
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(_parser_error(parser.get_error(i)) for i in range(parser.num_errors))
        raise TensorRTBuildError(f"{onnx_path}: TensorRT could not parse the ONNX graph: {errors}")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_bytes))
    if hasattr(trt.BuilderFlag, "TF32"):
        # On by default in a builder config: clear it explicitly when it is not wanted.
        (config.set_flag if allow_tf32 else config.clear_flag)(trt.BuilderFlag.TF32)
    _set_precision_flags(trt, config, precision, onnx_path)

    optimisation_profile = builder.create_optimization_profile()
    for index in range(network.num_inputs):
        name = network.get_input(index).name
        if name not in profile:
            raise ValueError(f"no optimisation profile for network input '{name}' (have {sorted(profile)})")
        shapes = profile[name]
        optimisation_profile.set_shape(name, shapes["min"], shapes["opt"], shapes["max"])
    config.add_optimization_profile(optimisation_profile)

    timing_cache_path = Path(timing_cache_path) if timing_cache_path else None
    cache_bytes = timing_cache_path.read_bytes() if timing_cache_path and timing_cache_path.is_file() else b""
    timing_cache = config.create_timing_cache(cache_bytes)
    # ignore_mismatch=False: a cache from another GPU/version is rejected rather than trusted.
    if not config.set_timing_cache(timing_cache, False):
        LOGGER.warning("timing cache %s does not match this GPU/TensorRT; starting a new one", timing_cache_path)
        config.set_timing_cache(config.create_timing_cache(b""), False)

    started = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise TensorRTBuildError(f"{onnx_path}: TensorRT engine build failed (see TensorRT log above)")
    LOGGER.info("built a TensorRT engine from %s in %.1f s", onnx_path, time.perf_counter() - started)
    return serialized, config


def _parser_error(error: Any) -> str:
    describe = getattr(error, "desc", None)
    text = describe() if callable(describe) else str(error)
    node = getattr(error, "node", None)
    return f"node {node()}: {text}" if callable(node) else text


def read_engine_record(engine: str | Path) -> tuple[ModelCard | None, dict[str, Any] | None]:
    """(card, key dict) from ``<engine>.json``; (None, None) if absent."""
    path = sidecar_path(engine)
    if not path.is_file():
        return None, None
    import json

    values = json.loads(path.read_text(encoding="utf-8"))
    card = card_from_dict(values, path)
    key = (card.tensorrt or {}).get("key")
    return card, key


def ensure_engine(
    onnx_path: str | Path,
    cache_dir: str | Path,
    precision: str,
    profile: dict[str, dict[str, list[int]]] | None = None,
    max_batch: int = 1,
    workspace_bytes: int = DEFAULT_WORKSPACE_BYTES,
    device_index: int = 0,
    force: bool = False,
    input_size: tuple[int, int] | None = None,
    allow_tf32: bool = True,
) -> Path:
    """The engine of ``onnx_path`` for GPU ``device_index``, this TensorRT and ``precision``: loaded
    from the cache if its record matches, (re)built otherwise. Writes ``<engine>.json`` (card +
    ``tensorrt`` section). ``input_size`` (H, W) is the profile's optimum for a graph of dynamic
    size (default: the export size), and raises its maximum when larger."""
    from emotion_perception.export.engine_cache import default_profile

    trt = import_tensorrt()
    gpu = current_gpu(device_index)
    onnx_path = Path(onnx_path)
    card = read_onnx_card(onnx_path)
    if profile is None:
        profile = default_profile(card.input_names, card.input_size, card.dynamic_size, card.stride, max_batch,
                                  opt_size=input_size)
    key = wanted_engine_key(onnx_path, card, precision, profile, trt, gpu, allow_tf32)
    target = engine_path(cache_dir, onnx_path.stem, key)
    _, recorded = read_engine_record(target)
    decision = decide(target, target.is_file(), recorded, key)
    if decision.action == "load" and not force:
        LOGGER.info("TensorRT engine cache hit: %s", target)
        return target
    LOGGER.info("building TensorRT engine %s (%s)", target, "; ".join(decision.reasons) or "forced")
    timing_cache = Path(cache_dir) / f"timing.trt{key.tensorrt_version}.{gpu.compute_capability}.cache"
    build_engine(onnx_path, target, precision, profile, workspace_bytes, timing_cache_path=timing_cache,
                 device_index=device_index, allow_tf32=allow_tf32)
    engine_card = card.replace(
        precision=card.precision if card.precision != "fp32" else precision,
        tensorrt={"key": key.to_dict(), "onnx_path": str(onnx_path.resolve()), "workspace_bytes": int(workspace_bytes)},
    )
    write_sidecar(engine_card, target)
    return target
