"""`emotion-perception bench model`: latency and throughput of a model per backend and precision.

Three kinds of measurement (all after warm-up, wall-clock, device synchronised):

* ``model``: ``backend.infer`` on a preprocessed batch (the network alone, plus decoding for
  ``--with-decode`` graphs);
* ``pipeline``: what a robot pays per frame for a 640x480 camera image with N people.
  BENet: ``predictor.predict`` (letterbox + network + decoding) on synthetic scenes with N
  people, to show the single-pass property (latency independent of N). CAHFW-Net
  (top-down): face detection (dlib, reported on its own: on stylised synthetic faces it finds
  few or none) and the classification of N faces given their boxes (``classify_faces``; one
  batch of N face + context crops), which grows with N;
* the CPU floor of a model: its MACs divided by the rate ONNX Runtime reaches on a plain stack
  of 3x3 convolutions at the same thread count, measured in the same run (bench/cpu_floor.py).

Measurements that are compared with each other are ordered so that load from other processes
on a shared machine skews them alike: people counts of one backend are taken in turns, call by
call; backends in blocks ordered A B C then C B A (call-by-call turns across backends would let
one runtime's spinning thread pool slow the next). Everything is printed as a table and written
as JSON (``latency_ms`` {p50, p90, p99, mean}, ``fps``) with the device and software versions.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from emotion_perception.cli_options import (
    MODEL_FILE_HELP,
    PRESET_HELP,
    add_batch_size,
    add_device,
    add_graph_options,
    parse_preset,
    setup_command_logging,
)

if TYPE_CHECKING:
    import torch

LOGGER = logging.getLogger(__name__)
CAMERA_SIZE = (480, 640)  # (H, W) of the synthetic camera frames of the pipeline measurements


def add_arguments(parser: argparse.ArgumentParser) -> None:
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--model", metavar="FILE", help=MODEL_FILE_HELP)
    what.add_argument("--preset", metavar="ARCH[:PRESET]",
                      help=f"{PRESET_HELP}; benchmarked with seeded random weights")
    parser.add_argument("--backends", default="torch,onnxruntime", help="comma-separated: torch,onnxruntime,tensorrt")
    parser.add_argument("--precisions", default="fp32",
                        help="comma-separated: fp32, fp16 (GPU), int8 (onnxruntime, quantised on synthetic scenes)")
    add_device(parser)
    add_graph_options(parser)
    parser.add_argument("--input-size", nargs=2, type=int, metavar=("H", "W"),
                        help="BENet input (multiples of 32; default: the model's training size)")
    add_batch_size(parser, 1, "batch of the model-only measurement")
    parser.add_argument("--people", default="1,20", help="people per synthetic scene for the pipeline measurement "
                                                         "(empty: skip)")
    parser.add_argument("--iterations", type=int, default=20, help="timed runs per measurement")
    parser.add_argument("--warmup", type=int, default=3, help="untimed runs first")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU intra-op threads of every backend (default: ONNX Runtime physical cores, "
                             "PyTorch its own default)")
    parser.add_argument("--seed", type=int, default=0, help="weights seed (presets) and scene seed")
    parser.add_argument("--floor", action=argparse.BooleanOptionalAction, default=True,
                        help="measure the CPU floor beside CPU models: ONNX Runtime on a plain 3x3 conv stack "
                             "at the same thread count (default: on)")
    parser.add_argument("--face-detector", choices=("mtcnn", "hog", "cnn"), default="hog",
                        help="CAHFW-Net face detector")
    parser.add_argument("--cache-dir", type=Path, help="where exported/quantised models are cached")
    parser.add_argument("--json", type=Path, help="write the results to this JSON file")


# --------------------------------------------------------------------------- measuring


@dataclass(frozen=True)
class Measurement:
    """One row of the benchmark."""

    kind: str  # "model" | "pipeline" | "face_detection" | "classify_faces"
    model: str
    backend: str
    device: str
    precision: str
    input_size: tuple[int, int]
    batch: int
    latency_ms: dict[str, float]
    fps: float
    iterations: int
    people: int | None = None
    notes: dict[str, Any] = field(default_factory=dict)


def latency_stats(samples_ms: Sequence[float]) -> dict[str, float]:
    """p50/p90/p99/mean (and min/max) of latency samples in milliseconds."""
    import numpy as np

    values = np.asarray(samples_ms, dtype=np.float64)
    if values.size == 0:
        raise ValueError("no latency samples")
    p50, p90, p99 = np.percentile(values, [50, 90, 99])
    return {"p50": float(p50), "p90": float(p90), "p99": float(p99), "mean": float(values.mean()),
            "min": float(values.min()), "max": float(values.max())}


def time_calls(run: Callable[[], Any], synchronize: Callable[[], None], iterations: int, warmup: int) -> list[float]:
    """Wall-clock milliseconds of ``iterations`` calls of ``run`` after ``warmup`` untimed ones."""
    for _ in range(warmup):
        run()
    synchronize()
    samples = []
    for _ in range(iterations):
        started = time.perf_counter()
        run()
        synchronize()
        samples.append((time.perf_counter() - started) * 1000.0)
    return samples


def time_interleaved(
    calls: dict[Any, tuple[Callable[[], Any], Callable[[], None]]], iterations: int, warmup: int
) -> dict[Any, list[float]]:
    """Like :func:`time_calls` for several calls at once, taking turns (the order rotating every
    round), so that load from other processes on a shared machine affects every call alike and
    their ratios stay meaningful even when absolute numbers drift."""
    keys = list(calls)
    samples: dict[Any, list[float]] = {key: [] for key in keys}
    for round_index in range(warmup + iterations):
        shift = round_index % len(keys)
        for key in keys[shift:] + keys[:shift]:
            run, synchronize = calls[key]
            started = time.perf_counter()
            run()
            synchronize()
            if round_index >= warmup:
                samples[key].append((time.perf_counter() - started) * 1000.0)
    return samples


# --------------------------------------------------------------------------- environment


def cpu_model_name(cpuinfo_text: str | None = None) -> str:
    """The CPU's marketing name from /proc/cpuinfo ("model name"), else platform.processor()."""
    if cpuinfo_text is None:
        try:
            cpuinfo_text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
        except OSError:
            cpuinfo_text = ""
    for line in cpuinfo_text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("model name", "Model", "Hardware") and value.strip():
            return value.strip()
    return platform.processor() or platform.machine()


def environment_info() -> dict[str, Any]:
    """Device names and software versions the numbers were measured with."""
    import importlib.metadata
    import os

    import torch

    from emotion_perception.runtime.onnxruntime_backend import physical_cores

    versions = {"python": platform.python_version()}
    for package in ("torch", "onnxruntime", "onnxruntime-gpu", "onnx", "onnxslim", "tensorrt", "numpy",
                    "opencv-python-headless", "dlib", "dlib-bin"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            continue
    info = {
        "cpu": cpu_model_name(),
        "physical_cores": physical_cores(),
        "cpus_allowed": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "load_average_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "platform": platform.platform(),
        "versions": versions,
    }
    return info


# --------------------------------------------------------------------------- models


def resolve_model(model_file: str | None, preset_spec: str | None, cache_dir: Path, seed: int) -> tuple[Path, str]:
    """(model file, label) of ``--model FILE`` (used as is) or ``--preset ARCH[:PRESET]`` (a seeded
    checkpoint, saved once in the cache, so exports and engines of it are cached too)."""
    import dataclasses
    import sys

    import torch

    from emotion_perception.nets.factory import build_config, create_model, get_entry, model_names, write_checkpoint

    if model_file is not None:
        path = Path(model_file)
        if path.exists():
            return path, path.name
        try:  # the old "--model benet:lite" spelling of a preset
            parse_preset(model_file, model_names())
        except ValueError:
            raise ValueError(f"--model {model_file}: no such file") from None
        print(f"bench model: warning: --model {model_file} naming a preset is deprecated, use --preset {model_file}",
              file=sys.stderr)
        preset_spec = model_file
    if preset_spec is None:
        raise ValueError("give --model FILE or --preset ARCH[:PRESET]")
    name, preset = parse_preset(preset_spec, model_names())
    try:
        entry = get_entry(name)
    except ValueError as err:
        raise ValueError(f"--preset {preset_spec!r}: {err}") from None
    preset = preset or entry.default_preset
    config = build_config(name, preset)  # validates the preset name
    target = cache_dir / "bench" / f"{name}-{preset}-seed{seed}.pt"
    if not target.is_file():
        torch.manual_seed(seed)
        model = create_model(name, preset)
        write_checkpoint(target, {"model": model.state_dict(), "model_name": name, "config": dataclasses.asdict(config),
                                  "epoch": None, "metrics": {},
                                  "note": f"random weights, torch seed {seed} (benchmark only)"})
    return target, f"{name}:{preset} (seeded random weights)"


def model_macs(model_path: Path, input_size: tuple[int, int] | None, card: Any = None) -> float | None:
    """GMACs of one inference forward of the model in ``model_path``: a checkpoint's own model, or
    for ONNX / engine files the model their card (``card``) describes; None without either."""
    from emotion_perception.nets.factory import config_from_dict, get_entry, load_model_from_checkpoint
    from emotion_perception.nets.profile import profile_model
    from emotion_perception.runtime.model_files import detect_model_kind

    if detect_model_kind(model_path) == "checkpoint":
        model, _ = load_model_from_checkpoint(model_path)
    elif card is not None:
        model = get_entry(card.model_name).builder(config_from_dict(card.model_name, card.config, model_path))
    else:
        return None
    # Every registered model has example_inputs (nets.factory's contract); nn.Module's type cannot say so.
    example_inputs = cast("Callable[..., tuple[torch.Tensor, ...]]", model.eval().example_inputs)
    return profile_model(model, example_inputs(1, input_size)).gmacs


# --------------------------------------------------------------------------- the benchmark


def _model_inputs(predictor: Any, batch: int, seed: int) -> dict[str, Any]:
    """A preprocessed batch as the backend takes it (scene with one person, repeated)."""
    import numpy as np

    from emotion_perception.export.grid_scenes import draw_scene
    from emotion_perception.runtime.preprocess import letterbox_row

    card = predictor.card
    scene = draw_scene(np.random.default_rng(seed), 1, *CAMERA_SIZE)
    if card.model_name == "benet":
        image, params = predictor.preprocess(scene.image)
        image = np.asarray(image) if isinstance(image, np.ndarray) else image
        stacked = np.repeat(image, batch, axis=0) if isinstance(image, np.ndarray) else image.repeat(batch, 1, 1, 1)
        feed = {"image": stacked}
        if card.with_decode:
            feed["letterbox"] = predictor._to_backend(np.repeat(letterbox_row(params), batch, axis=0))
        return feed
    from emotion_perception.data.faces import faces_and_contexts
    from emotion_perception.runtime.preprocess import normalise_numpy

    faces, contexts = faces_and_contexts(scene.image, np.repeat(scene.face_boxes[:1], batch, axis=0),
                                         int(card.input_size[0]), predictor.face_scale)
    return {"face": predictor._to_backend(normalise_numpy(faces, card.normalisation)),
            "context": predictor._to_backend(normalise_numpy(contexts, card.normalisation))}


def _common(predictor: Any, label: str) -> dict[str, Any]:
    backend = predictor.backend
    return {"model": label, "backend": backend.name, "device": backend.device, "precision": backend.precision}


def measure_models(predictors: Sequence[Any], label: str, batch: int, iterations: int, warmup: int,
                   seed: int) -> list[Measurement]:
    """Model-only latency of every predictor's backend.

    Backends are timed in blocks, in the order A B C then C B A (half the iterations each), not
    call by call: the thread pools of ONNX Runtime and OpenMP keep spinning for a while after a
    call and would slow whichever backend runs next. The mirrored order spreads slow drifts of
    the machine's load evenly over the backends.
    """
    feeds = [_model_inputs(p, batch, seed) for p in predictors]
    samples: dict[int, list[float]] = {index: [] for index in range(len(predictors))}
    first_half = max(1, iterations // 2)
    order = list(range(len(predictors)))
    for block_order, count in ((order, first_half), (order[::-1], iterations - first_half)):
        for index in block_order:
            if count == 0:
                continue
            backend = predictors[index].backend
            samples[index].extend(time_calls(functools.partial(backend.infer, feeds[index]), backend.synchronize,
                                             count, warmup))
    results = []
    for index, predictor in enumerate(predictors):
        shape = next(iter(feeds[index].values())).shape
        stats = latency_stats(samples[index])
        results.append(Measurement(
            "model", input_size=(int(shape[2]), int(shape[3])), batch=batch, latency_ms=stats,
            fps=batch * 1000.0 / stats["mean"], iterations=len(samples[index]),
            notes={"with_decode": predictor.card.with_decode, **predictor.backend.details},
            **_common(predictor, label)))
    return results


def measure_people(predictor: Any, label: str, people: Sequence[int], iterations: int, warmup: int,
                   seed: int) -> list[Measurement]:
    """Per-frame cost against the number of people (see module docstring), counts measured in turns."""
    import numpy as np

    from emotion_perception.export.grid_scenes import draw_scene

    if not people:
        return []
    backend = predictor.backend
    scenes = {count: draw_scene(np.random.default_rng(seed + count), count, *CAMERA_SIZE) for count in people}
    results = []
    if predictor.card.model_name == "benet":
        top = max(people)
        calls: dict[int, tuple[Callable[[], Any], Callable[[], None]]] = {
            count: (functools.partial(predictor.predict, scene.image, detection_threshold=0.0, max_people=top),
                    backend.synchronize) for count, scene in scenes.items()}
        samples = time_interleaved(calls, iterations, warmup)
        for count, scene in scenes.items():
            image, _ = predictor.preprocess(scene.image)
            returned = len(predictor.predict(scene.image, detection_threshold=0.0, max_people=top))
            stats = latency_stats(samples[count])
            results.append(Measurement(
                "pipeline", input_size=(int(image.shape[2]), int(image.shape[3])), batch=1, latency_ms=stats,
                fps=1000.0 / stats["mean"], iterations=iterations, people=count,
                notes={"camera": list(CAMERA_SIZE), "people_returned": returned,
                       "what": "letterbox + network + decoding (threshold 0, top-k = max people)"},
                **_common(predictor, label)))
        return results
    detector = predictor.face_detector
    for count, scene in scenes.items():
        faces_found = len(detector.detect(scene.image))
        det_samples = time_calls(functools.partial(detector.detect, scene.image), lambda: None,
                                 max(3, iterations // 4), 1)
        det_stats = latency_stats(det_samples)
        results.append(Measurement(
            "face_detection", input_size=CAMERA_SIZE, batch=1, latency_ms=det_stats, fps=1000.0 / det_stats["mean"],
            iterations=len(det_samples), people=count,
            notes={"detector": getattr(detector, "method", type(detector).__name__), "faces_found": faces_found},
            **_common(predictor, label)))
    calls = {count: (functools.partial(predictor.classify_faces, scene.image, scene.face_boxes[:count]),
                     backend.synchronize) for count, scene in scenes.items()}
    samples = time_interleaved(calls, iterations, warmup)
    for count in scenes:
        stats = latency_stats(samples[count])
        results.append(Measurement(
            "classify_faces", input_size=tuple(predictor.card.input_size), batch=count, latency_ms=stats,
            fps=1000.0 / stats["mean"], iterations=iterations, people=count,
            notes={"what": "N given face boxes: crops + masked contexts + one batched forward + softmax"},
            **_common(predictor, label)))
    return results


def summarise(results: Sequence[Measurement], gmacs: float | None,
              floor: dict[str, Any] | None = None) -> dict[str, Any]:
    """Ratios the targets are stated in (see docs/BENCHMARKS.md); ``floor`` is
    :meth:`emotion_perception.bench.cpu_floor.FloorProbe.report` of the model's GMACs."""
    summary: dict[str, Any] = {}
    model_rows = [r for r in results if r.kind == "model"]

    def p50(rows: Sequence[Measurement]) -> float | None:
        return rows[0].latency_ms["p50"] if rows else None

    torch_fp32 = p50([r for r in model_rows if r.backend == "torch" and r.precision == "fp32"])
    ort_fp32 = p50([r for r in model_rows if r.backend == "onnxruntime" and r.precision == "fp32"])
    ort_int8 = p50([r for r in model_rows if r.backend == "onnxruntime" and r.precision == "int8"])
    if torch_fp32 and ort_fp32:
        summary["onnxruntime_fp32_speedup_over_torch_fp32"] = torch_fp32 / ort_fp32
    if ort_fp32 and ort_int8:
        summary["int8_speedup_over_fp32_onnxruntime"] = ort_fp32 / ort_int8
    if torch_fp32 and ort_int8:
        summary["int8_onnxruntime_speedup_over_torch_fp32"] = torch_fp32 / ort_int8
    if gmacs is not None:
        summary["gmacs"] = gmacs
    if floor is not None:
        summary["cpu_floor"] = floor
        for row in model_rows:
            if row.device == "cpu":
                summary[f"latency_over_floor[{row.backend},{row.precision}]"] = (
                    row.latency_ms["p50"] / (floor["floor_ms"] * row.batch))
    for kind in ("pipeline", "classify_faces"):
        groups: dict[tuple[str, str], dict[int, float]] = {}
        for row in results:
            if row.kind == kind and row.people is not None:
                groups.setdefault((row.backend, row.precision), {})[row.people] = row.latency_ms["p50"]
        for (backend, precision), by_people in groups.items():
            if len(by_people) >= 2:
                low, high = min(by_people), max(by_people)
                key = f"{kind}_latency_ratio_{high}_vs_{low}_people[{backend},{precision}]"
                summary[key] = by_people[high] / by_people[low]
    return summary


def format_table(results: Sequence[Measurement]) -> str:
    header = (f"{'kind':<15} {'backend':<12} {'prec':<5} {'device':<7} {'input':<9} {'batch':>5} {'people':>6} "
              f"{'p50 ms':>9} {'p90 ms':>9} {'p99 ms':>9} {'mean ms':>9} {'fps':>8}")
    lines = [header, "-" * len(header)]
    for r in results:
        lines.append(
            f"{r.kind:<15} {r.backend:<12} {r.precision:<5} {r.device:<7} {r.input_size[0]}x{r.input_size[1]:<5} "
            f"{r.batch:>5} {'' if r.people is None else r.people:>6} {r.latency_ms['p50']:9.2f} "
            f"{r.latency_ms['p90']:9.2f} {r.latency_ms['p99']:9.2f} {r.latency_ms['mean']:9.2f} {r.fps:8.2f}")
    return "\n".join(lines)


def _split(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _floor_probe(args: argparse.Namespace, predictors: Sequence[Any], skipped: list[str]) -> Any:
    """The CPU floor probe at the ONNX Runtime backend's thread count, when a CPU model is measured."""
    if not args.floor or not any(p.backend.device == "cpu" for p in predictors):
        return None
    try:
        from emotion_perception.bench.cpu_floor import FloorProbe
        from emotion_perception.runtime.onnxruntime_backend import physical_cores

        return FloorProbe(args.threads or physical_cores())
    except ImportError as err:
        skipped.append(f"CPU floor: needs onnxruntime ({err})")
        return None


def main(args: argparse.Namespace) -> int:
    import sys

    from emotion_perception.runtime.model_files import default_cache_dir
    from emotion_perception.runtime.predictor import load_predictor

    setup_command_logging()
    from emotion_perception.errors import output_file_problem

    problem = output_file_problem("--json", args.json) if args.json is not None else None
    if problem:  # before minutes of measuring
        print(f"error: {problem}", file=sys.stderr)
        return 2
    cache_dir = args.cache_dir or default_cache_dir()
    try:
        people = [int(p) for p in _split(args.people)]
        if any(p < 1 for p in people) or args.batch_size < 1 or args.iterations < 1 or args.warmup < 0:
            raise ValueError("--people, --batch-size and --iterations must be positive, --warmup non-negative")
        model_path, label = resolve_model(args.model, args.preset, cache_dir, args.seed)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    input_size = tuple(args.input_size) if args.input_size else None
    environment = environment_info()
    print(f"device: CPU {environment['cpu']} ({environment['physical_cores']} physical cores allowed), "
          f"GPU {environment['gpu'] or 'none'}; load average {environment['load_average_at_start']}")
    predictors = []
    skipped: list[str] = []
    for backend in _split(args.backends):
        for precision in _split(args.precisions):
            if precision == "int8" and backend == "torch":
                skipped.append("torch/int8: INT8 is an ONNX Runtime / TensorRT (QDQ) model")
                continue
            try:
                predictors.append(load_predictor(
                    model_path, backend=backend, device=args.device, input_size=input_size, precision=precision,
                    cache_dir=cache_dir, threads=args.threads, face_detector=args.face_detector,
                    cuda_graph=args.cuda_graph, compile=args.compile))
            except (ValueError, ImportError, RuntimeError) as err:
                skipped.append(f"{backend}/{precision}: {err}")
                print(f"skipped {backend}/{precision}: {err}", file=sys.stderr)
    results: list[Measurement] = []
    probe = _floor_probe(args, predictors, skipped)
    if predictors:
        print(f"measuring: {', '.join(map(str, predictors))}", flush=True)
        # The floor probe half before and half after the models: drifts of load average out.
        if probe is not None:
            probe.measure(max(1, args.iterations // 2), args.warmup)
        results.extend(measure_models(predictors, label, args.batch_size, args.iterations, args.warmup, args.seed))
        if probe is not None:
            probe.measure(max(1, args.iterations - args.iterations // 2), 0)
        print(format_table(results), flush=True)
        for predictor in predictors:
            rows = measure_people(predictor, label, people, args.iterations, args.warmup, args.seed)
            print(format_table(rows), flush=True)
            results.extend(rows)
        for predictor in predictors:
            predictor.close()
    if not results:
        print("error: nothing could be measured: " + "; ".join(skipped), file=sys.stderr)
        return 2
    gmacs = None
    if any(r.device == "cpu" for r in results):
        # MACs at the size the model rows ran at (a camera frame's letterbox unless --input-size).
        measured_size = next((r.input_size for r in results if r.kind == "model"), input_size)
        gmacs = model_macs(model_path, measured_size, predictors[0].card if predictors else None)
    floor = probe.report(gmacs) if probe is not None and gmacs is not None else None
    summary = summarise(results, gmacs, floor)
    print("\n" + format_table(results))
    print("\nsummary:")
    for key, value in summary.items():
        if isinstance(value, dict):
            print(f"  {key}: " + ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}"
                                           for k, v in value.items()))
        else:
            print(f"  {key}: {value:.3f}" if isinstance(value, float) else f"  {key}: {value}")
    for note in skipped:
        print(f"  skipped {note}")
    if args.json is not None:
        document = {"model": label, "model_file": str(model_path), "environment": environment,
                    "settings": {"iterations": args.iterations, "warmup": args.warmup, "batch": args.batch_size,
                                 "people": people, "input_size": list(input_size) if input_size else None,
                                 "camera": list(CAMERA_SIZE)},
                    "results": [asdict(r) for r in results], "summary": summary, "skipped": skipped}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(document, indent=2, default=str) + "\n", encoding="utf-8")
        print(f"wrote {args.json}")
    return 0
