"""TensorRT engine cache: file naming and staleness, as pure functions.

A serialized engine only runs on the TensorRT version and GPU model it was built with, and is
only valid for the ONNX graph, precision and shape profile it was built from. The engine's file
name therefore records the TensorRT version, the GPU name and the precision
(``<stem>.trt<version>.<gpu>.<precision>.engine``), so engines for different machines can sit
side by side, and a JSON record beside it (``<engine>.json``, the model card with a
``tensorrt`` section) records everything else. An engine whose record does not match what is
wanted now is *stale* and gets rebuilt, never loaded.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ENGINE_SUFFIX = ".engine"
PROFILE_KEYS = ("min", "opt", "max")


@dataclass(frozen=True)
class EngineKey:
    """Everything an engine depends on."""

    onnx_sha256: str
    tensorrt_version: str
    gpu_name: str
    compute_capability: str  # e.g. "9.0"
    precision: str  # fp32 | fp16 (| int8 for QDQ graphs)
    profile: dict[str, dict[str, list[int]]]  # input name -> {"min"|"opt"|"max": shape}
    # TF32 for fp32 layers (TensorRT's default): an engine built without it is the strict-fp32 one
    # that parity checks want, so the two are different engines (different files, see engine_path).
    tf32: bool = True

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def file_sha256(path: str | Path, chunk_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


def slug(text: str, keep_dots: bool = False) -> str:
    """A file-name-safe form of a version or GPU name ("NVIDIA H100 80GB HBM3" -> "NVIDIA-H100-80GB-HBM3")."""
    allowed = r"[^A-Za-z0-9.]+" if keep_dots else r"[^A-Za-z0-9]+"
    cleaned = re.sub(allowed, "-", text.strip()).strip("-.")
    return cleaned or "unknown"


def engine_file_name(stem: str, tensorrt_version: str, gpu_name: str, precision: str) -> str:
    """``<stem>.trt<version>.<gpu>.<precision>.engine`` (only the version keeps its dots, so the
    name parses back unambiguously)."""
    return f"{stem}.trt{slug(tensorrt_version, keep_dots=True)}.{slug(gpu_name)}.{slug(precision)}{ENGINE_SUFFIX}"


def engine_path(directory: str | Path, stem: str, key: EngineKey) -> Path:
    precision = key.precision if key.tf32 else f"{key.precision}-notf32"
    return Path(directory) / engine_file_name(stem, key.tensorrt_version, key.gpu_name, precision)


def parse_engine_file_name(name: str) -> dict[str, str] | None:
    """Inverse of :func:`engine_file_name` (slugged fields); None for other names."""
    match = re.fullmatch(r"(?P<stem>.+)\.trt(?P<trt>[A-Za-z0-9.-]+?)\.(?P<gpu>[A-Za-z0-9-]+)"
                         r"\.(?P<precision>[A-Za-z0-9-]+)\.engine", name)
    if match is None:
        return None
    return {"stem": match["stem"], "tensorrt_version": match["trt"], "gpu_name": match["gpu"],
            "precision": match["precision"]}


def validate_profile(profile: Mapping[str, Mapping[str, list[int]]]) -> None:
    """ValueError unless each input has min <= opt <= max shapes of equal rank."""
    for name, shapes in profile.items():
        if set(shapes) != set(PROFILE_KEYS):
            raise ValueError(f"profile of input '{name}': needs exactly {PROFILE_KEYS}, got {sorted(shapes)}")
        low, opt, high = (list(shapes[k]) for k in PROFILE_KEYS)
        if not len(low) == len(opt) == len(high):
            raise ValueError(f"profile of input '{name}': min/opt/max ranks differ: {low}, {opt}, {high}")
        if any(not (0 < a <= b <= c) for a, b, c in zip(low, opt, high)):
            raise ValueError(f"profile of input '{name}': need 0 < min <= opt <= max per axis, "
                             f"got {low}, {opt}, {high}")


def stale_reasons(recorded: Mapping[str, Any] | None, wanted: EngineKey) -> list[str]:
    """Why an engine built under ``recorded`` (its record's ``tensorrt.key``) cannot serve ``wanted``.

    Empty list: the engine may be loaded. The profile only needs to *cover* the wanted one
    (an engine built for larger maximum shapes serves smaller requests).
    """
    if recorded is None:
        return ["no build record beside the engine"]
    reasons = []
    for field in ("onnx_sha256", "tensorrt_version", "gpu_name", "compute_capability", "precision"):
        have, want = recorded.get(field), getattr(wanted, field)
        if have != want:
            label = "ONNX graph changed" if field == "onnx_sha256" else f"{field} {have!r} != wanted {want!r}"
            reasons.append(label)
    # Records written before the key had the field were built with TensorRT's default, TF32 on.
    if bool(recorded.get("tf32", True)) != wanted.tf32:
        reasons.append(f"tf32 {bool(recorded.get('tf32', True))} != wanted {wanted.tf32}")
    have_profile = recorded.get("profile") or {}
    for name, shapes in wanted.profile.items():
        if name not in have_profile:
            reasons.append(f"no profile for input '{name}'")
            continue
        low, high = have_profile[name].get("min"), have_profile[name].get("max")
        if low is None or high is None or len(low) != len(shapes["min"]):
            reasons.append(f"profile of input '{name}' is malformed")
            continue
        if any(h < w for h, w in zip(high, shapes["max"])) or any(lo > w for lo, w in zip(low, shapes["min"])):
            reasons.append(f"profile of input '{name}' {low}..{high} does not cover {shapes['min']}..{shapes['max']}")
    return reasons


@dataclass(frozen=True)
class EngineDecision:
    """What to do with the engine at ``path``: ``load`` it or ``build`` it (and why)."""

    path: Path
    action: str  # "load" | "build"
    reasons: tuple[str, ...]


def decide(path: str | Path, engine_exists: bool, recorded: Mapping[str, Any] | None,
           wanted: EngineKey) -> EngineDecision:
    """Load an existing engine whose record matches ``wanted``; build otherwise."""
    path = Path(path)
    if not engine_exists:
        return EngineDecision(path, "build", ("no engine file",))
    reasons = stale_reasons(recorded, wanted)
    return EngineDecision(path, "build" if reasons else "load", tuple(reasons))


def default_profile(
    input_names: tuple[str, ...],
    input_size: tuple[int, int],
    dynamic_size: bool,
    stride: int,
    max_batch: int = 1,
    opt_size: tuple[int, int] | None = None,
) -> dict[str, dict[str, list[int]]]:
    """The optimisation profile of a model card's inputs.

    Images (NCHW): opt = batch 1 at the export size; for dynamic sizes min is 2 strides square
    and max is the export size's longer side squared (the runtime letterboxes to at most that),
    batch 1..max_batch. Letterbox parameters (B, 3) follow the batch. CAHFW face/context inputs
    have a fixed size and batch 1..max_batch (faces per frame). ``opt_size`` (H, W; a dynamic
    graph only, multiples of the stride) replaces the export size as the optimum and raises the
    maximum side when it is longer.
    """
    height, width = input_size
    longest = max(height, width)
    if opt_size is not None and dynamic_size:
        if any(side < 2 * stride or side % stride for side in opt_size):
            raise ValueError(f"input size {tuple(opt_size)}: each side must be a multiple of {stride}, "
                             f"at least {2 * stride}")
        height, width = int(opt_size[0]), int(opt_size[1])
        longest = max(longest, height, width)
    profile: dict[str, dict[str, list[int]]] = {}
    for name in input_names:
        if name == "letterbox":
            profile[name] = {"min": [1, 3], "opt": [1, 3], "max": [max_batch, 3]}
        elif dynamic_size:
            low = 2 * stride
            profile[name] = {"min": [1, 3, low, low], "opt": [1, 3, height, width],
                             "max": [max_batch, 3, longest, longest]}
        else:
            profile[name] = {"min": [1, 3, height, width], "opt": [1, 3, height, width],
                             "max": [max_batch, 3, height, width]}
    return profile
