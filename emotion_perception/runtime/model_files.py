"""Model files (checkpoint, ONNX, TensorRT engine): their kind, and the export cache.

A checkpoint given to ONNX Runtime or TensorRT is exported to ONNX once (and quantised once
for INT8) into the cache, keyed by the file's SHA-256. Which backend runs a file is decided by
the backend table (:mod:`emotion_perception.runtime.backend`).
"""

from __future__ import annotations

import glob
import logging
import os
import zipfile
from collections.abc import Callable
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

    Keyed by the checkpoint's SHA-256, so a retrained checkpoint at the same path is re-exported;
    an export made by an older exporter (another ``EXPORT_REVISION``) is made again.
    """
    from emotion_perception.export.onnx_export import EXPORT_REVISION, export_onnx
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
        lambda card: (card.source.get("checkpoint_sha256") == digest and card.precision == precision
                      and card.source.get("export_revision") == EXPORT_REVISION),
        export, f"exporting {checkpoint} to ONNX {precision}",
    )


def cached_int8_onnx(fp32_onnx: str | Path, cache_dir: str | Path,
                     target: str = "onnxruntime") -> tuple[Path, ModelCard]:
    """The INT8 (QDQ) quantisation of an fp32 ONNX export for ``target`` (export/quantize.py), in
    ``cache_dir/onnx`` (made on first use, keyed by the fp32 model's SHA-256 and the target; one
    made by an older quantiser, another ``QUANTISER_REVISION``, is made again)."""
    from emotion_perception.export.quantize import QUANTISER_REVISION, quantize_int8

    fp32_onnx = Path(fp32_onnx)
    digest = file_sha256(fp32_onnx)
    suffix = "" if target == "onnxruntime" else f"-{target}"
    return _cached_model_file(
        Path(cache_dir) / "onnx" / f"{fp32_onnx.stem}-{digest[:16]}-int8{suffix}.onnx",
        lambda card: (card.precision == "int8" and card.source.get("int8_target", "onnxruntime") == target
                      and card.source.get("quantiser_revision") == QUANTISER_REVISION),
        lambda partial: quantize_int8(fp32_onnx, partial, target=target)[1],
        f"quantising {fp32_onnx} to INT8 for {target}",
    )
