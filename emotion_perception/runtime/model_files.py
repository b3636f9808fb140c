"""Model files (checkpoint, ONNX, TensorRT engine), the export cache and the choice of backend.

``backend="auto"`` picks the fastest backend this machine offers for the file, and says why:

* CPU: ONNX Runtime (graph-optimised CPU kernels are several times faster than PyTorch eager);
  a checkpoint is exported to ONNX once, into the cache.
* GPU: native TensorRT if installed (engine built once per GPU/TensorRT/precision, cached),
  else ONNX Runtime with its TensorRT or CUDA provider, else PyTorch (fp16, channels-last).
* A TensorRT engine runs only on TensorRT.
"""

from __future__ import annotations

import glob
import logging
import os
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from emotion_perception.export.engine_cache import file_sha256
from emotion_perception.export.model_card import ModelCard, ModelCardError, read_onnx_card, sidecar_path

LOGGER = logging.getLogger(__name__)

MODEL_KINDS = ("checkpoint", "onnx", "engine")
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt")
ENGINE_SUFFIXES = (".engine", ".plan", ".trt")
CACHE_ENV = "EMOTION_PERCEPTION_CACHE"


class ModelFileError(ValueError):
    """A model file that cannot be used; the message names the file and the problem."""

    def __init__(self, file: str | Path, problem: str) -> None:
        super().__init__(f"{file}: {problem}")
        self.file = str(file)
        self.problem = problem


def default_cache_dir() -> Path:
    """$EMOTION_PERCEPTION_CACHE, else $XDG_CACHE_HOME/emotion_perception, else ~/.cache/..."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "emotion_perception"


def detect_model_kind(path: str | Path) -> str:
    """"checkpoint" | "onnx" | "engine", from the suffix, else from the content.

    FileNotFoundError if the file is missing, ModelFileError if it is none of the three.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: model file not found")
    suffix = path.suffix.lower()
    if suffix in CHECKPOINT_SUFFIXES:
        return "checkpoint"
    if suffix == ".onnx":
        return "onnx"
    if suffix in ENGINE_SUFFIXES:
        return "engine"
    if zipfile.is_zipfile(path):  # torch.save's format
        return "checkpoint"
    try:
        read_onnx_card(path)
        return "onnx"
    except (ModelCardError, ValueError):
        pass
    raise ModelFileError(
        path, f"unknown model file type: expected a checkpoint ({', '.join(CHECKPOINT_SUFFIXES)}), an ONNX "
              f"model (.onnx) or a TensorRT engine ({', '.join(ENGINE_SUFFIXES)})"
    )


# --------------------------------------------------------------------------- backend choice


@dataclass(frozen=True)
class Availability:
    """What this machine offers (probed once by :func:`probe_availability`)."""

    cuda: bool
    tensorrt: bool
    onnxruntime_providers: tuple[str, ...]


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


def _ort_gpu(available: Availability) -> bool:
    return bool({"TensorrtExecutionProvider", "CUDAExecutionProvider"} & set(available.onnxruntime_providers))


def choose_backend(kind: str, backend: str, device: str, available: Availability) -> tuple[str, str, str]:
    """(backend, device, reason) for a model file of ``kind`` (see module docstring).

    ``device`` is "auto" or an explicit device. ValueError when the combination cannot run here.
    """
    if kind not in MODEL_KINDS:
        raise ValueError(f"model kind must be one of {MODEL_KINDS}, got {kind!r}")
    if backend not in ("auto", "tensorrt", "onnxruntime", "torch"):
        raise ValueError(f"backend must be auto, tensorrt, onnxruntime or torch, got {backend!r}")
    if backend == "torch" and kind != "checkpoint":
        raise ValueError(f"the torch backend needs a checkpoint (.pt); a{'n' if kind == 'onnx' else ''} {kind} file "
                         "runs on onnxruntime or tensorrt")
    if backend == "onnxruntime" and kind == "engine":
        raise ValueError("a TensorRT engine runs only on the tensorrt backend; give onnxruntime the ONNX file")
    if (backend == "tensorrt" or kind == "engine") and not available.tensorrt:
        raise ValueError("TensorRT is not installed (Python package 'tensorrt'); use the ONNX model with "
                         "the onnxruntime backend")
    if (backend == "tensorrt" or kind == "engine") and not available.cuda:
        raise ValueError("TensorRT needs a CUDA GPU, and none is available")

    if backend != "auto":
        if backend == "tensorrt" and device == "cpu":
            raise ValueError("the tensorrt backend runs on a CUDA device, not 'cpu'")
        resolved = resolve_device(device, available)
        if backend == "tensorrt":
            resolved = resolved if resolved != "cpu" else "cuda:0"
        if backend == "onnxruntime" and resolved != "cpu" and not _ort_gpu(available):
            if device == "auto":
                return backend, "cpu", "asked for onnxruntime; the installed onnxruntime is CPU-only"
            raise ValueError(f"device {resolved!r}: the installed onnxruntime has no GPU provider "
                             "(install onnxruntime-gpu) - use device 'cpu'")
        return backend, resolved, f"asked for {backend}"

    if kind == "engine":
        return "tensorrt", resolve_device("cuda" if device == "auto" else device, available), \
            "a TensorRT engine runs on TensorRT"
    resolved = resolve_device(device, available)
    if resolved == "cpu":
        if "CPUExecutionProvider" in available.onnxruntime_providers:
            return "onnxruntime", "cpu", ("CPU: ONNX Runtime's optimised graph is several times faster than "
                                          "PyTorch eager" + (" (checkpoint exported to ONNX once, cached)"
                                                             if kind == "checkpoint" else ""))
        if kind == "checkpoint":
            return "torch", "cpu", "CPU without onnxruntime installed: PyTorch eager"
        raise ValueError("an ONNX model needs onnxruntime, which is not installed")
    if available.tensorrt:
        return "tensorrt", resolved, "GPU with TensorRT: native engine (built once per GPU and TensorRT version, cached)"
    if _ort_gpu(available):
        provider = ("TensorRT" if "TensorrtExecutionProvider" in available.onnxruntime_providers else "CUDA")
        return "onnxruntime", resolved, f"GPU without the tensorrt package: ONNX Runtime with its {provider} provider"
    if kind == "checkpoint":
        return "torch", resolved, "GPU without TensorRT or onnxruntime-gpu: PyTorch fp16 (channels-last)"
    if "CPUExecutionProvider" in available.onnxruntime_providers:
        return "onnxruntime", "cpu", ("no GPU runtime for an ONNX file (install onnxruntime-gpu or tensorrt): "
                                      "ONNX Runtime on CPU")
    raise ValueError("an ONNX model needs onnxruntime, which is not installed")


# --------------------------------------------------------------------------- export cache


def _cached_model_file(
    path: Path, reusable: Callable[[ModelCard], bool], make: Callable[[Path], ModelCard], what: str
) -> tuple[Path, ModelCard]:
    """``path`` and its card if the card is ``reusable``; else ``make(partial)`` writes a model and
    its sidecar card at ``partial`` and both are renamed into place."""
    remove_stale_partials(path)
    if path.is_file():
        try:
            card = read_onnx_card(path)
            if reusable(card):
                return path, card
        except (ModelCardError, ValueError):
            pass  # a damaged cache entry is simply rebuilt
    LOGGER.info("%s (one-time, cached): %s", what, path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Written beside the final name and renamed: two processes loading the same model at once
    # must never see a half-written file.
    partial = path.with_name(f"{path.stem}.partial-{os.getpid()}.onnx")
    try:
        card = make(partial)
        os.replace(sidecar_path(partial), sidecar_path(path))
        os.replace(partial, path)
    finally:  # a failed export leaves nothing behind (a killed one is cleaned by the next call)
        for leftover in (partial, sidecar_path(partial)):
            leftover.unlink(missing_ok=True)
    return path, card


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's live process
    except OverflowError:
        return False
    return True


def remove_stale_partials(path: Path) -> list[Path]:
    """Delete ``<stem>.partial-PID.onnx`` files (and their cards) beside ``path`` whose writer
    process is gone, e.g. an exporter killed mid-export; returns what was removed. Files of live
    processes are left to them."""
    removed = []
    for partial in path.parent.glob(f"{glob.escape(path.stem)}.partial-*.onnx"):
        pid_text = partial.name[len(path.stem) + len(".partial-"):-len(".onnx")]
        if not pid_text.isdigit() or int(pid_text) == os.getpid() or _process_alive(int(pid_text)):
            continue
        for stale in (partial, sidecar_path(partial)):
            try:
                stale.unlink()
                removed.append(stale)
            except FileNotFoundError:
                pass  # another process cleaned it first
    if removed:
        LOGGER.info("removed %d stale partial file(s) of killed exports beside %s", len(removed), path)
    return removed


def cached_onnx(checkpoint: str | Path, cache_dir: str | Path, precision: str = "fp32") -> tuple[Path, ModelCard]:
    """The ONNX export of ``checkpoint`` in ``cache_dir/onnx`` (exported on first use).

    Keyed by the checkpoint's SHA-256, so a retrained checkpoint at the same path is re-exported.
    """
    from emotion_perception.export.onnx_export import export_onnx
    from emotion_perception.nets.factory import label_thresholds_of, load_model_from_checkpoint, trained_on_of

    checkpoint = Path(checkpoint)
    digest = file_sha256(checkpoint)

    def export(partial: Path) -> ModelCard:
        model, saved = load_model_from_checkpoint(checkpoint, map_location="cpu")
        source = {"checkpoint": str(checkpoint.resolve()), "checkpoint_sha256": digest, "epoch": saved.get("epoch")}
        return export_onnx(model, partial, precision=precision, source=source, trained_on=trained_on_of(saved),
                           label_thresholds=label_thresholds_of(saved)).card

    return _cached_model_file(
        Path(cache_dir) / "onnx" / f"{checkpoint.stem}-{digest[:16]}-{precision}.onnx",
        lambda card: card.source.get("checkpoint_sha256") == digest and card.precision == precision,
        export, f"exporting {checkpoint} to ONNX {precision}",
    )


def cached_int8_onnx(fp32_onnx: str | Path, cache_dir: str | Path) -> tuple[Path, ModelCard]:
    """The INT8 (QDQ) quantisation of an fp32 ONNX export, in ``cache_dir/onnx`` (made on first use,
    keyed by the fp32 model's SHA-256)."""
    from emotion_perception.export.quantize import quantize_int8

    fp32_onnx = Path(fp32_onnx)
    digest = file_sha256(fp32_onnx)
    return _cached_model_file(
        Path(cache_dir) / "onnx" / f"{fp32_onnx.stem}-{digest[:16]}-int8.onnx",
        lambda card: card.precision == "int8",
        lambda partial: quantize_int8(fp32_onnx, partial)[1], f"quantising {fp32_onnx} to INT8",
    )
