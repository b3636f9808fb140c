"""`emotion-perception bench gpu-check`: the GPU figures of issue #18 in one run, one JSON file.

Meant for a GPU machine that has PyTorch with CUDA and numpy but perhaps none of TensorRT,
onnxruntime(-gpu), onnx or OpenCV, and runs the package from the source tree
(``scripts/gpu_check.sh``). It measures, in this order:

* the device (name, compute capability, memory, driver, CUDA and cuDNN versions, torch) and
  which optional modules are importable;
* which backend ``backend="auto"`` picks for a BENet checkpoint here and why: the candidate
  chain of :func:`emotion_perception.runtime.backend.auto_candidates` (each reason names the
  backends passed over) and what ``load_predictor`` actually opened, with its log lines (a
  backend that is installed but fails is logged and the next tried);
* model-only latency (``backend.infer``, batch 1, ``torch.cuda.synchronize`` after every call,
  :func:`~emotion_perception.bench.model_bench.time_calls`) of BENet ``paper`` at 512x512 and
  ``lite`` at its training size 256x256, seeded random weights, for PyTorch CUDA fp32, fp16 and
  fp16 + CUDA graphs;
* the pipeline (``predict`` on a 640x480 synthetic frame: letterbox + network + decoding) with 1
  and 20 people, counts measured in turns, and the 20 / 1 ratio of their p50s (single pass: the
  cost must not grow with the number of people);
* agreement of the people found by every GPU variant (and by ``auto``'s choice) with PyTorch
  fp32 on the CPU, on the shipped trained demo model (``models/benet_lite_demo.pt``; seeded
  random weights find nothing meaningful): people matched by IoU, largest box, score and
  emotion-score differences;
* pass / miss against the targets (docs/BENCHMARKS.md): ``paper`` 512x512 fp16 p50 <= 2 ms,
  1 ms as the stretch; 20 / 1 people ratio <= 1.10.

``--dry`` runs the same code on the CPU with a 128x128 input and a few iterations (CI): the
rows that need CUDA (fp16, CUDA graphs) are written as skipped with the reason, and so is every
row that cannot run here (no OpenCV: no synthetic scenes, so no pipeline or agreement rows).
Model rows feed a seeded random image, not a drawn scene, so they need no OpenCV: the cost
of a network does not depend on its pixel values.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from emotion_perception.cli_options import add_detection_threshold, add_device

if TYPE_CHECKING:
    from emotion_perception.runtime.predictor import PersonPrediction, Predictor

# (variant, precision, CUDA graphs): the PyTorch settings measured on the GPU, slowest first.
VARIANTS: tuple[tuple[str, str, bool], ...] = (("fp32", "fp32", False), ("fp16", "fp16", False),
                                               ("fp16+cuda_graph", "fp16", True))
# BENet presets of the model rows: (preset, input (H, W); None: the preset's training size).
PRESETS: tuple[tuple[str, tuple[int, int] | None], ...] = (("paper", (512, 512)), ("lite", None))
DRY_SIZE = (128, 128)  # every input of a dry run: seconds per row on one CPU core
PEOPLE = (1, 20)  # people per synthetic frame of the pipeline rows
NEEDS_CUDA = "needs CUDA (fp16 and CUDA graphs are GPU-only; this is the dry run on CPU)"
DEMO_MODEL = "models/benet_lite_demo.pt"
# Scene sizes of the agreement check: a person alone and crowds of growing size.
AGREEMENT_PEOPLE = (1, 4, 8, 12)
MIN_IOU = 0.5  # a person found by both backends: boxes overlapping at least this much
OPTIONAL_MODULES = ("tensorrt", "onnxruntime", "onnx", "cv2")
# Targets (docs/BENCHMARKS.md, issue #18).
PAPER_FP16_MS = 2.0
PAPER_FP16_STRETCH_MS = 1.0
PEOPLE_RATIO_LIMIT = 1.10
# Defaults per mode: GPU (iterations, warmup, pipeline iterations, agreement scenes) and dry.
GPU_COUNTS = {"iterations": 300, "warmup": 30, "pipeline_iterations": 100, "scenes": 8}
DRY_COUNTS = {"iterations": 5, "warmup": 1, "pipeline_iterations": 3, "scenes": 2}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dry", action="store_true",
                        help=f"run on the CPU with {DRY_SIZE[0]}x{DRY_SIZE[1]} inputs and a few iterations "
                             "(CI); rows needing CUDA are reported as skipped")
    add_device(parser, help_text="the GPU to check (--dry: the CPU)")
    parser.add_argument("--iterations", type=int, help=f"timed calls per model row (default: "
                                                       f"{GPU_COUNTS['iterations']}, --dry {DRY_COUNTS['iterations']})")
    parser.add_argument("--warmup", type=int, help=f"untimed calls first (default: {GPU_COUNTS['warmup']}, "
                                                   f"--dry {DRY_COUNTS['warmup']})")
    parser.add_argument("--pipeline-iterations", type=int,
                        help=f"timed frames per people count (default: {GPU_COUNTS['pipeline_iterations']}, "
                             f"--dry {DRY_COUNTS['pipeline_iterations']})")
    parser.add_argument("--scenes", type=int, help=f"synthetic frames of the agreement check (default: "
                                                   f"{GPU_COUNTS['scenes']}, --dry {DRY_COUNTS['scenes']})")
    parser.add_argument("--agreement-model", type=Path, metavar="FILE",
                        help=f"trained BENet checkpoint of the agreement check (default: the shipped {DEMO_MODEL})")
    add_detection_threshold(parser, 0.2, "people kept in the agreement check (the demo model's node default)",
                            old_names=())
    parser.add_argument("--threads", type=int, help="CPU intra-op threads of PyTorch (default: its own)")
    parser.add_argument("--seed", type=int, default=0, help="weights seed of the presets and scene seed")
    parser.add_argument("--cache-dir", type=Path, help="where the seeded checkpoints (and auto's exports) are kept")
    parser.add_argument("--json", type=Path, help="write the results here (default: out/gpu_check.json, "
                                                  "--dry out/gpu_check_dry.json)")


# --------------------------------------------------------------------------- agreement


def people_agreement(reference: Sequence[Sequence[PersonPrediction]], other: Sequence[Sequence[PersonPrediction]],
                     min_iou: float = MIN_IOU) -> dict[str, Any]:
    """How far the people ``other`` found agree with ``reference``'s, image by image (the two
    lists hold one list of people per image).

    On each image people are paired greedily by falling IoU, a pair needing ``min_iou``; the
    rest are unmatched (their scores are listed: people near the detection threshold may fall
    on either side of it from rounding alone). Differences are the largest over matched pairs:
    box coordinates in pixels, person score, per-category emotion score, VAD (None when no pair
    has VAD); None when nothing matched, rather than a vacuous 0.
    """
    import numpy as np

    from emotion_perception.runtime.face_detection import box_overlap

    if len(reference) != len(other):
        raise ValueError(f"people_agreement: {len(reference)} reference images but {len(other)} others")
    matched = 0
    unmatched_reference: list[float] = []
    unmatched_other: list[float] = []
    box = score = emotions = vad = None

    def larger(current: float | None, value: float) -> float:
        return value if current is None else max(current, value)

    for ref_people, other_people in zip(reference, other):
        overlaps = box_overlap(np.array([p.box for p in ref_people]), np.array([p.box for p in other_people]))
        pairs = sorted(((float(overlaps[i, j]), i, j) for i in range(len(ref_people))
                        for j in range(len(other_people))), key=lambda pair: -pair[0])
        used_ref: set[int] = set()
        used_other: set[int] = set()
        for overlap, i, j in pairs:
            if overlap < min_iou:
                break
            if i in used_ref or j in used_other:
                continue
            used_ref.add(i)
            used_other.add(j)
            r, o = ref_people[i], other_people[j]
            matched += 1
            box = larger(box, float(np.max(np.abs(np.asarray(r.box, np.float64) - np.asarray(o.box, np.float64)))))
            score = larger(score, abs(float(r.score) - float(o.score)))
            emotions = larger(emotions, float(np.max(np.abs(np.asarray(r.scores, np.float64)
                                                            - np.asarray(o.scores, np.float64)), initial=0.0)))
            vad_difference = np.abs(np.asarray(r.vad, np.float64) - np.asarray(o.vad, np.float64))
            if np.isfinite(vad_difference).any():
                vad = larger(vad, float(np.nanmax(vad_difference)))
        unmatched_reference += [float(p.score) for k, p in enumerate(ref_people) if k not in used_ref]
        unmatched_other += [float(p.score) for k, p in enumerate(other_people) if k not in used_other]
    return {"images": len(reference), "reference_people": matched + len(unmatched_reference),
            "other_people": matched + len(unmatched_other), "matched": matched,
            "unmatched_reference": len(unmatched_reference), "unmatched_other": len(unmatched_other),
            "unmatched_reference_scores": unmatched_reference, "unmatched_other_scores": unmatched_other,
            "all_matched": not unmatched_reference and not unmatched_other,
            "max_box_diff_px": box, "max_score_diff": score, "max_emotion_score_diff": emotions,
            "max_vad_diff": vad, "min_iou": min_iou}


# --------------------------------------------------------------------------- environment


def _cuda_driver(index: int) -> str | None:
    """The NVIDIA driver version from nvidia-smi (torch reports only its own CUDA runtime)."""
    import shutil
    import subprocess

    if shutil.which("nvidia-smi") is None:
        return None
    try:
        done = subprocess.run(["nvidia-smi", f"--id={index}", "--query-gpu=driver_version", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    if done.returncode != 0:
        return None
    return done.stdout.strip() or None


def device_info(device: str) -> dict[str, Any]:
    """What the figures were measured on: the GPU (or CPU) and the torch / CUDA / cuDNN versions."""
    import torch

    from emotion_perception.bench.model_bench import cpu_model_name

    info: dict[str, Any] = {
        "device": device, "torch": torch.__version__, "torch_cuda_build": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        # The torch backend leaves cuDNN's autotuner and TF32 as PyTorch sets them; recorded, not
        # changed (TF32 convolutions are why GPU fp32 differs from CPU fp32 in the agreement rows).
        "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
        "cudnn_allow_tf32": bool(torch.backends.cudnn.allow_tf32),
    }
    if device.startswith("cuda"):
        index = torch.device(device).index or 0
        properties = torch.cuda.get_device_properties(index)
        info.update(name=torch.cuda.get_device_name(index), capability=f"{properties.major}.{properties.minor}",
                    total_memory_gib=round(properties.total_memory / 2**30, 1),
                    multiprocessors=properties.multi_processor_count, driver=_cuda_driver(index))
    else:
        info.update(name=cpu_model_name(), capability=None, total_memory_gib=None, multiprocessors=None, driver=None)
    return info


def probe_modules() -> dict[str, dict[str, Any]]:
    """Which optional modules import here, with their versions (a broken install says why)."""
    import importlib

    modules: dict[str, dict[str, Any]] = {}
    for name in OPTIONAL_MODULES:
        try:
            module = importlib.import_module(name)
        except Exception as err:  # a broken install raises more than ImportError (missing CUDA libraries, ...)
            modules[name] = {"present": False, "version": None, "error": f"{type(err).__name__}: {err}"}
        else:
            modules[name] = {"present": True, "version": str(getattr(module, "__version__", "unknown")), "error": None}
    return modules


@contextlib.contextmanager
def _captured_runtime_log() -> Iterator[list[str]]:
    """The runtime's log lines while the block runs (load_predictor says there which backend it
    opened, why, and which ones failed before it)."""
    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(f"{record.levelname} {record.getMessage()}")

    logger = logging.getLogger("emotion_perception.runtime")
    handler = Collect(logging.INFO)
    previous = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield lines
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)


def auto_report(model_path: Path, device: str, cache_dir: Path, threads: int | None) -> tuple[dict[str, Any], Any]:
    """(what ``backend="auto"`` does with a BENet checkpoint on ``device``, the predictor it
    opened or None): the machine as probed, the candidate chain with each reason, and the
    backend that opened with the runtime's log lines."""
    from emotion_perception.runtime.backend import auto_candidates, probe_availability
    from emotion_perception.runtime.predictor import load_predictor

    available = probe_availability()
    report: dict[str, Any] = {
        "model": str(model_path), "device_asked": device, "availability": asdict(available),
        "candidates": [{"backend": name, "device": target, "reason": reason}
                       for name, target, reason in auto_candidates("checkpoint", device, available)],
    }
    predictor = None
    with _captured_runtime_log() as log:
        try:
            predictor = load_predictor(model_path, backend="auto", device=device, cache_dir=cache_dir,
                                       threads=threads)
        except (ValueError, RuntimeError, ImportError, OSError) as err:
            report["opened"] = None
            report["error"] = f"{type(err).__name__}: {err}"
    if predictor is not None:
        report["opened"] = {"backend": predictor.backend_name, "device": predictor.device,
                            "precision": predictor.precision}
        report["error"] = None
    report["log"] = log
    return report, predictor


# --------------------------------------------------------------------------- measuring


def _skipped(kind: str, model: str, variant: str, reason: str, **extra: Any) -> dict[str, Any]:
    return {"kind": kind, "model": model, "variant": variant, "status": "skipped", "reason": reason,
            "latency_ms": None, **extra}


def _model_feed(predictor: Predictor, size: tuple[int, int], seed: int) -> dict[str, Any]:
    """One normalised (1, 3, H, W) input on the backend's device, from seeded random pixels."""
    import numpy as np

    from emotion_perception.runtime.preprocess import normalise_numpy

    pixels = np.random.default_rng(seed).integers(0, 256, (size[0], size[1], 3), dtype=np.uint8)
    return {"image": predictor._to_backend(normalise_numpy(pixels, predictor.card.normalisation))}


def model_row(predictor: Predictor, model: str, variant: str, size: tuple[int, int], iterations: int,
              warmup: int, seed: int, size_why: str) -> dict[str, Any]:
    """Model-only latency of one predictor's backend (``backend.infer`` on a preprocessed batch of 1)."""
    from emotion_perception.bench.model_bench import latency_stats, time_calls

    backend = predictor.backend
    feed = _model_feed(predictor, size, seed)
    samples = time_calls(functools.partial(backend.infer, feed), backend.synchronize, iterations, warmup)
    return {"kind": "model", "model": model, "variant": variant, "status": "measured", "reason": None,
            "backend": backend.name, "device": backend.device, "precision": backend.precision,
            "cuda_graph": bool(backend.details.get("cuda_graph")), "input_size": list(size), "input_size_why": size_why,
            "batch": 1, "iterations": len(samples), "warmup": warmup, "latency_ms": latency_stats(samples),
            "timing": "wall clock per call, device synchronised after each (model_bench.time_calls)"}


def pipeline_rows(predictor: Predictor, model: str, variant: str, iterations: int, warmup: int,
                  seed: int) -> list[dict[str, Any]]:
    """``predict`` on 640x480 synthetic frames with 1 and 20 people (model_bench.measure_people)."""
    from emotion_perception.bench.model_bench import measure_people

    rows = []
    for measurement in measure_people(predictor, model, PEOPLE, iterations, warmup, seed):
        row = asdict(measurement)
        row.update(kind="pipeline", model=model, variant=variant, status="measured", reason=None,
                   input_size=list(measurement.input_size))
        rows.append(row)
    return rows


def people_ratios(pipeline: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """p50(20 people) / p50(1 person) of every (model, variant) whose two rows were measured."""
    low, high = min(PEOPLE), max(PEOPLE)
    ratios = []
    groups: dict[tuple[str, str], dict[int, float]] = {}
    for row in pipeline:
        if row["status"] == "measured":
            groups.setdefault((row["model"], row["variant"]), {})[row["people"]] = row["latency_ms"]["p50"]
    for (model, variant), by_people in groups.items():
        if low in by_people and high in by_people:
            ratios.append({"model": model, "variant": variant, f"p50_ms_{low}": by_people[low],
                           f"p50_ms_{high}": by_people[high], "ratio": by_people[high] / by_people[low]})
    return ratios


def target_verdicts(model_rows: Sequence[dict[str, Any]], ratios: Sequence[dict[str, Any]],
                    dry: bool) -> list[dict[str, Any]]:
    """Pass / miss of each target, naming the row it was judged on; "not measured" with the reason."""
    paper_fp16 = [row for row in model_rows if row["model"] == "benet:paper" and row["status"] == "measured"
                  and row["precision"] == "fp16" and row["input_size"] == [512, 512]]
    best = min(paper_fp16, key=lambda row: row["latency_ms"]["p50"]) if paper_fp16 else None
    verdicts = []
    for name, limit in (("BENet paper 512x512 fp16 model latency p50 <= 2 ms", PAPER_FP16_MS),
                        ("BENet paper 512x512 fp16 model latency p50 <= 1 ms (stretch)", PAPER_FP16_STRETCH_MS)):
        if best is None:
            reason = NEEDS_CUDA if dry else "no fp16 row of BENet paper at 512x512 was measured (see its rows)"
            verdicts.append({"target": name, "limit": limit, "value": None, "row": None, "verdict": "not measured",
                             "reason": reason})
            continue
        value = best["latency_ms"]["p50"]
        verdicts.append({"target": name, "limit": limit, "value": value, "p99": best["latency_ms"]["p99"],
                         "row": f"{best['model']} {best['variant']}", "verdict": "pass" if value <= limit else "miss",
                         "reason": None})
    name = f"pipeline latency ratio {max(PEOPLE)} people / {min(PEOPLE)} person (p50) <= {PEOPLE_RATIO_LIMIT:.2f}"
    if ratios:
        worst = max(ratios, key=lambda ratio: ratio["ratio"])
        verdicts.append({"target": name, "limit": PEOPLE_RATIO_LIMIT, "value": worst["ratio"],
                         "row": f"{worst['model']} {worst['variant']}, the worst of {len(ratios)}",
                         "verdict": "pass" if worst["ratio"] <= PEOPLE_RATIO_LIMIT else "miss", "reason": None})
    else:
        verdicts.append({"target": name, "limit": PEOPLE_RATIO_LIMIT, "value": None, "row": None,
                         "verdict": "not measured", "reason": "no pipeline row pair was measured (see their rows)"})
    return verdicts


def _opencv_problem() -> str | None:
    """Why the synthetic scenes (and a camera frame's letterbox) cannot be made here, or None."""
    try:
        import cv2  # noqa: F401 - only whether it imports
    except Exception as err:  # a broken OpenCV raises more than ImportError
        return (f"needs OpenCV to draw and letterbox the synthetic frames (pip install opencv-python-headless); "
                f"cv2: {type(err).__name__}: {err}")
    return None


def _load(model_path: Path, device: str, precision: str, cuda_graph: bool, input_size: tuple[int, int] | None,
          cache_dir: Path, threads: int | None) -> Predictor:
    from emotion_perception.runtime.predictor import load_predictor

    return load_predictor(model_path, backend="torch", device=device, input_size=input_size, precision=precision,
                          cache_dir=cache_dir, threads=threads, cuda_graph=cuda_graph)


# Errors a row can end in without ending the check: a backend refusing, a CUDA error, a capture failure.
ROW_ERRORS: tuple[type[Exception], ...] = (ValueError, RuntimeError, ImportError, OSError)


def measure_presets(settings: dict[str, Any], device: str, cache_dir: Path, threads: int | None, skipped: list[str],
                    scenes_problem: str | None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(model rows, pipeline rows) of every preset and variant; rows that cannot run say why."""
    from emotion_perception.bench.model_bench import resolve_model

    dry = settings["dry"]
    model_rows: list[dict[str, Any]] = []
    pipeline: list[dict[str, Any]] = []

    def skip(label: str, variant: str, reason: str, model: bool = True) -> None:
        if model:
            model_rows.append(_skipped("model", label, variant, reason))
        pipeline.extend(_skipped("pipeline", label, variant, reason, people=count) for count in PEOPLE)
        skipped.append(f"{label} {variant}{'' if model else ' pipeline'}: {reason}")

    for preset, size in PRESETS:
        label = f"benet:{preset}"
        model_path, _ = resolve_model(None, label, cache_dir, settings["seed"])
        for variant, precision, cuda_graph in VARIANTS:
            if device == "cpu" and (precision != "fp32" or cuda_graph):
                skip(label, variant, NEEDS_CUDA)
                continue
            # Dry: one small canvas for everything. GPU: the pipeline letterboxes a camera frame
            # as a robot would (input_size None: longer side at the training size).
            try:
                predictor = _load(model_path, device, precision, cuda_graph, DRY_SIZE if dry else None, cache_dir,
                                  threads)
            except ROW_ERRORS as err:
                skip(label, variant, f"could not open: {type(err).__name__}: {err}")
                continue
            try:
                row_size = DRY_SIZE if dry else (size or tuple(predictor.card.input_size))
                size_why = ("the dry run's size" if dry else "the preset's training size" if size is None
                            else "the target's size")
                print(f"measuring {label} {variant} model at {row_size[0]}x{row_size[1]} ...", flush=True)
                try:
                    model_rows.append(model_row(predictor, label, variant, (int(row_size[0]), int(row_size[1])),
                                                settings["iterations"], settings["warmup"], settings["seed"],
                                                size_why))
                except ROW_ERRORS as err:
                    model_rows.append(_skipped("model", label, variant, f"failed: {type(err).__name__}: {err}"))
                    skipped.append(f"{label} {variant} model: {type(err).__name__}: {err}")
                if scenes_problem is not None:
                    skip(label, variant, scenes_problem, model=False)
                    continue
                print(f"measuring {label} {variant} pipeline, {' and '.join(map(str, PEOPLE))} people ...", flush=True)
                try:
                    pipeline += pipeline_rows(predictor, label, variant, settings["pipeline_iterations"],
                                              settings["warmup"], settings["seed"])
                except ROW_ERRORS as err:
                    skip(label, variant, f"failed: {type(err).__name__}: {err}", model=False)
            finally:
                predictor.close()
    return model_rows, pipeline


def measure_agreement(model_path: Path, device: str, auto_predictor: Any, settings: dict[str, Any],
                      cache_dir: Path, threads: int | None, skipped: list[str]) -> dict[str, Any]:
    """The people every GPU variant (and ``auto``'s choice) finds against PyTorch fp32 on the CPU."""
    import numpy as np

    from emotion_perception.bench.model_bench import CAMERA_SIZE
    from emotion_perception.export.grid_scenes import draw_scene

    threshold = settings["detection_threshold"]
    frames = [draw_scene(np.random.default_rng(settings["seed"] + 1000 + index),
                         AGREEMENT_PEOPLE[index % len(AGREEMENT_PEOPLE)], *CAMERA_SIZE).image
              for index in range(settings["scenes"])]

    def people_of(predictor: Predictor) -> list[list[PersonPrediction]]:
        return [predictor.predict(frame, detection_threshold=threshold, max_people=max(PEOPLE)) for frame in frames]

    reference_predictor = _load(model_path, "cpu", "fp32", False, None, cache_dir, threads)
    try:
        if reference_predictor.model_name != "benet":
            raise ValueError(f"{model_path.name} is a {reference_predictor.model_name} model; the agreement check "
                             "compares BENet's people")
        reference = people_of(reference_predictor)
    finally:
        reference_predictor.close()
    rows: list[dict[str, Any]] = []
    for variant, precision, cuda_graph in VARIANTS:
        if device == "cpu" and (precision != "fp32" or cuda_graph):
            rows.append(_skipped("agreement", str(model_path), variant, NEEDS_CUDA))
            continue
        try:
            predictor = _load(model_path, device, precision, cuda_graph, None, cache_dir, threads)
        except ROW_ERRORS as err:
            reason = f"could not open: {type(err).__name__}: {err}"
            rows.append(_skipped("agreement", str(model_path), variant, reason))
            skipped.append(f"agreement {variant}: {reason}")
            continue
        try:
            rows.append(_agreement_row(variant, predictor, reference, people_of))
        finally:
            predictor.close()
    if auto_predictor is not None:
        rows.append(_agreement_row("auto", auto_predictor, reference, people_of))
    else:
        rows.append(_skipped("agreement", str(model_path), "auto", "auto opened no backend (see auto.error)"))
    return {"model": str(model_path), "reference": {"backend": "torch", "device": "cpu", "precision": "fp32"},
            "detection_threshold": threshold, "max_people": max(PEOPLE), "scenes": len(frames),
            "people_per_scene": [AGREEMENT_PEOPLE[i % len(AGREEMENT_PEOPLE)] for i in range(len(frames))],
            "camera": list(CAMERA_SIZE), "rows": rows}


def _agreement_row(variant: str, predictor: Predictor, reference: list[list[PersonPrediction]],
                   people_of: Callable[[Predictor], list[list[PersonPrediction]]]) -> dict[str, Any]:
    try:
        found = people_of(predictor)
    except ROW_ERRORS as err:
        return _skipped("agreement", predictor.model_name, variant, f"failed: {type(err).__name__}: {err}")
    return {"kind": "agreement", "variant": variant, "status": "measured", "reason": None,
            "backend": predictor.backend_name, "device": predictor.device, "precision": predictor.precision,
            **people_agreement(reference, found)}


# --------------------------------------------------------------------------- report


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _skipped_lines(rows: Sequence[dict[str, Any]]) -> list[str]:
    """One line per (model, variant) of skipped rows (the people counts of a pipeline row share it)."""
    lines: list[str] = []
    seen: set[tuple[str, str, str]] = set()
    for row in rows:
        key = (row["model"], row["variant"], row["reason"])
        if row["status"] == "skipped" and key not in seen:
            seen.add(key)
            lines.append(f"{row['model']:<12} {row['variant']:<16} skipped: {row['reason']}")
    return lines


def _latency_lines(rows: Sequence[dict[str, Any]], middle: Any, last: Any) -> list[str]:
    """Table lines of measured rows (model, variant, ``middle(row)``, size, p50/p90/p99,
    ``last(row)``), then one line per skipped row."""
    lines = []
    for row in rows:
        if row["status"] == "measured":
            stats = row["latency_ms"]
            lines.append(f"{row['model']:<12} {row['variant']:<16} {middle(row)} "
                         f"{row['input_size'][0]}x{row['input_size'][1]:<5} {_ms(stats['p50']):>8} "
                         f"{_ms(stats['p90']):>8} {_ms(stats['p99']):>8}{last(row)}")
    return lines + _skipped_lines(rows)


def format_report(document: dict[str, Any]) -> str:
    """The readable table of a gpu-check document (the JSON it writes)."""
    device = document["device"]
    if device["capability"] is not None:
        where = (f"{device['name']} ({device['device']}, compute capability {device['capability']}, "
                 f"{device['total_memory_gib']} GiB, driver {device['driver'] or 'unknown'})")
    else:
        where = f"{device['name']} ({device['device']})"
    auto = document["auto"]
    available = auto["availability"]
    lines = [f"GPU check{' (dry run on CPU)' if document['dry'] else ''}: {where}",
             f"torch {device['torch']}, CUDA build {device['torch_cuda_build'] or 'none'}, cuDNN "
             f"{device['cudnn'] or 'none'}; modules: "
             + ", ".join(f"{name} {info['version']}" if info["present"] else f"{name} absent"
                         for name, info in document["modules"].items()),
             (f"probed: CUDA {'yes' if available['cuda'] else 'no'}, TensorRT "
              f"{'yes' if available['tensorrt'] else 'no'}, ONNX Runtime providers "
              f"{', '.join(available['onnxruntime_providers']) or 'none'}")]
    opened = auto["opened"]
    choice = f"{opened['backend']} on {opened['device']}, {opened['precision']}" if opened else \
        f"nothing opened: {auto['error']}"
    lines.append(f"auto ({Path(auto['model']).name}): {choice}")
    for rank, candidate in enumerate(auto["candidates"], 1):
        lines.append(f"  {rank}. {candidate['backend']} on {candidate['device']}: {candidate['reason']}")
    lines += [f"  {line}" for line in auto["log"] if not line.startswith("INFO")]  # backends that failed to open
    lines += ["", "model latency (backend.infer, batch 1), ms",
              f"{'model':<12} {'variant':<16} {'device':<7} {'HxW':<9} {'p50':>8} {'p90':>8} {'p99':>8} {'iters':>6}"]
    lines += _latency_lines(document["model"], lambda row: f"{row['device']:<7}",
                            lambda row: f" {row['iterations']:>6}")
    camera = document["settings"]["camera"]
    lines += ["", f"pipeline (predict on a {camera[1]}x{camera[0]} synthetic frame: letterbox, network, decoding), ms",
              f"{'model':<12} {'variant':<16} {'people':>6} {'HxW':<9} {'p50':>8} {'p90':>8} {'p99':>8}"]
    lines += _latency_lines(document["pipeline"], lambda row: f"{row['people']:>6}", lambda row: "")
    for ratio in document["people_ratio"]:
        lines.append(f"  {ratio['model']} {ratio['variant']}: p50 {max(PEOPLE)} / {min(PEOPLE)} people = "
                     f"{ratio['ratio']:.3f}")
    agreement = document["agreement"]
    lines.append("")
    if "rows" not in agreement:
        lines.append(f"agreement with PyTorch fp32 on CPU: skipped: {agreement['reason']}")
    else:
        lines += [(f"agreement with PyTorch fp32 on CPU ({Path(agreement['model']).name}, {agreement['scenes']} "
                   f"frames, detection threshold {agreement['detection_threshold']:g}, IoU >= {MIN_IOU}); "
                   "people: CPU/this, largest differences"),
                  (f"{'variant':<16} {'backend':<12} {'prec':<5} {'people':>9} {'matched':>7} {'box px':>8} "
                   f"{'score':>8} {'emotion':>8}")]
        for row in agreement["rows"]:
            if row["status"] == "measured":
                people = f"{row['reference_people']}/{row['other_people']}"
                lines.append(f"{row['variant']:<16} {row['backend']:<12} {row['precision']:<5} {people:>9} "
                             f"{row['matched']:>7} {_ms(row['max_box_diff_px']):>8} {_ms(row['max_score_diff']):>8} "
                             f"{_ms(row['max_emotion_score_diff']):>8}")
            else:
                lines.append(f"{row['variant']:<16} skipped: {row['reason']}")
    lines += ["", "targets"]
    for verdict in document["targets"]:
        detail = (f"{verdict['value']:.3f} ({verdict['row']})" if verdict["value"] is not None
                  else verdict["reason"])
        lines.append(f"  {verdict['verdict'].upper():<12} {verdict['target']}: {detail}")
    lines.append(f"\nchecked in {document['elapsed_s']:.1f} s")
    return "\n".join(lines)


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    """The run's counts (each option, else the mode's default); ValueError for impossible ones."""
    defaults = DRY_COUNTS if args.dry else GPU_COUNTS
    counts = {name: getattr(args, name) if getattr(args, name) is not None else default
              for name, default in defaults.items()}
    for name, value in counts.items():
        least = 0 if name == "warmup" else 1
        if value < least:
            raise ValueError(f"--{name.replace('_', '-')} must be >= {least}, got {value}")
    if not 0.0 <= args.detection_threshold <= 1.0:
        raise ValueError(f"--detection-threshold must be in [0, 1], got {args.detection_threshold}")
    if args.threads is not None and args.threads < 1:
        raise ValueError(f"--threads must be >= 1, got {args.threads}")
    return {"dry": bool(args.dry), **counts, "seed": args.seed, "detection_threshold": args.detection_threshold,
            "threads": args.threads, "people": list(PEOPLE), "dry_input_size": list(DRY_SIZE) if args.dry else None}


def _device(args: argparse.Namespace) -> str:
    """The device to check: the CPU for --dry, else a CUDA GPU (ValueError saying why not)."""
    import torch

    if args.dry:
        if args.device not in ("auto", "cpu"):
            raise ValueError(f"--dry runs on the CPU; drop --device {args.device}")
        return "cpu"
    if not torch.cuda.is_available():
        raise ValueError(f"no CUDA GPU (torch {torch.__version__}, CUDA build {torch.version.cuda or 'none'}, "
                         "sees none); --dry runs this check on the CPU")
    if args.device == "cpu":
        raise ValueError("--device cpu: this check is for a GPU; --dry runs it on the CPU")
    from emotion_perception.runtime.backend import probe_availability, resolve_device

    device = resolve_device(args.device, probe_availability())
    index = torch.device(device).index or 0
    if index >= torch.cuda.device_count():
        raise ValueError(f"--device {args.device}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return device


def main(args: argparse.Namespace) -> int:
    import sys

    try:
        import torch  # noqa: F401 - the one hard requirement, checked before anything else
    except ImportError as err:
        print(f"error: bench gpu-check needs PyTorch ({err})", file=sys.stderr)
        return 2
    from emotion_perception.errors import output_file_problem
    from emotion_perception.resources import find_resource
    from emotion_perception.runtime.model_files import default_cache_dir

    started = time.perf_counter()
    json_path = args.json or Path("out/gpu_check_dry.json" if args.dry else "out/gpu_check.json")
    problem = output_file_problem("--json", json_path)
    try:
        if problem:
            raise ValueError(problem)
        settings = _settings(args)
        device = _device(args)
        if args.agreement_model is not None and not args.agreement_model.is_file():
            raise ValueError(f"--agreement-model {args.agreement_model}: no such file")
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    agreement_model = args.agreement_model
    if agreement_model is None:
        with contextlib.suppress(FileNotFoundError):
            agreement_model = find_resource(DEMO_MODEL)
    cache_dir = args.cache_dir or default_cache_dir()
    try:
        return _check(args, settings, device, agreement_model, cache_dir, json_path, started)
    except OSError as err:  # the cache or the output folder not writable, a disk full
        print(f"error: {err}", file=sys.stderr)
        return 1


def _check(args: argparse.Namespace, settings: dict[str, Any], device: str, agreement_model: Path | None,
           cache_dir: Path, json_path: Path, started: float) -> int:
    """The measurements of :func:`main`, its arguments checked; writes the table and the JSON."""
    from emotion_perception.bench.model_bench import CAMERA_SIZE, environment_info, resolve_model

    environment = environment_info()  # first: it records the load average at the start
    skipped: list[str] = []
    modules = probe_modules()
    info = device_info(device)
    print(f"device: {info['name']} ({device}); optional modules: "
          + ", ".join(f"{name} {'present' if m['present'] else 'absent'}" for name, m in modules.items()), flush=True)

    scenes_problem = _opencv_problem()
    # auto is asked about the agreement model, so that its choice is compared with the CPU too.
    auto_model = agreement_model or resolve_model(None, "benet:lite", cache_dir, settings["seed"])[0]
    auto, auto_predictor = auto_report(Path(auto_model), device, cache_dir, args.threads)
    try:
        model_rows, pipeline = measure_presets(settings, device, cache_dir, args.threads, skipped, scenes_problem)
        if agreement_model is None:
            agreement: dict[str, Any] = {"reason": f"{DEMO_MODEL} is not installed here and no --agreement-model "
                                                   "was given (seeded random weights find no people to compare)"}
        elif scenes_problem is not None:
            agreement = {"model": str(agreement_model), "reason": scenes_problem}
        else:
            print(f"agreement with the CPU on {settings['scenes']} frames ...", flush=True)
            try:
                agreement = measure_agreement(Path(agreement_model), device, auto_predictor, settings, cache_dir,
                                              args.threads, skipped)
            except ROW_ERRORS as err:  # the reference itself failed (a model that is not BENet, ...)
                agreement = {"model": str(agreement_model), "reason": f"{type(err).__name__}: {err}"}
        if "rows" not in agreement:
            skipped.append(f"agreement: {agreement['reason']}")
    finally:
        if auto_predictor is not None:
            auto_predictor.close()
    ratios = people_ratios(pipeline)
    document = {"dry": settings["dry"], "device": info, "modules": modules, "auto": auto,
                "settings": {**settings, "camera": list(CAMERA_SIZE)}, "model": model_rows, "pipeline": pipeline,
                "people_ratio": ratios, "agreement": agreement,
                "targets": target_verdicts(model_rows, ratios, settings["dry"]), "skipped": skipped,
                "environment": environment, "elapsed_s": time.perf_counter() - started}
    print("\n" + format_report(document))
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(document, indent=2, default=str) + "\n", encoding="utf-8")
    print(f"wrote {json_path}")
    return 0
