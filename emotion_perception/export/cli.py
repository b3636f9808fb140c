"""`emotion-perception export`: a checkpoint to ONNX (fp32 / fp16 / int8) or a TensorRT engine."""

from __future__ import annotations

import argparse
from pathlib import Path

from emotion_perception.cli_options import add_detection_threshold, add_device, add_max_people, add_model_file

FORMATS = ("onnx", "tensorrt")
PRECISIONS = ("fp32", "fp16", "int8")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_file(parser, "checkpoint to export (.pt, a training run's or a shipped one); for --format tensorrt "
                           "also an ONNX file from this command", checkpoint_alias=True)
    parser.add_argument("--format", choices=FORMATS, default="onnx", help="output format (default: onnx)")
    parser.add_argument("--out", required=True, type=Path,
                        help="output file; TensorRT engines are named <stem>.trt<version>.<gpu>.<precision>.engine "
                             "in its directory")
    parser.add_argument("--with-decode", action="store_true",
                        help="BENet: put peak extraction and box assembly in the graph (fixed-size people arrays)")
    parser.add_argument("--input-size", nargs=2, type=int, metavar=("H", "W"),
                        help="BENet: export/profile size, multiples of 32 (default: the model's training size)")
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32",
                        help="fp32; fp16 (ONNX: float16 graph, TensorRT: fp16 kernels); int8 (ONNX Runtime static "
                             "quantisation calibrated on synthetic scenes)")
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset (>= 17)")
    add_max_people(parser, 15, "--with-decode: people per image (fixed output rows)", old_names=("--top-k",))
    add_detection_threshold(parser, 0.05, "--with-decode: detection score below which rows are marked invalid "
                                          "(the predictor's --detection-threshold can only be stricter)",
                            old_names=("--decode-threshold",))
    parser.add_argument("--flip-test", action="store_true", help="--with-decode: average with the mirrored image")
    parser.add_argument("--no-simplify", action="store_true", help="skip onnxslim graph simplification")
    parser.add_argument("--no-graph-rewrites", action="store_true",
                        help="export the network as trained, without the inference rewrites (the spatial "
                             "attention's channel mean as a 1x1 convolution; docs/DEPLOYMENT.md)")
    parser.add_argument("--calibration-images", type=int, default=8, help="int8: synthetic calibration scenes")
    parser.add_argument("--max-batch", type=int, default=None,
                        help="TensorRT profile: largest batch (default 2 for BENet: the flip test's image and mirror; "
             "16 faces for CAHFW-Net)")
    parser.add_argument("--int8-target", choices=("onnxruntime", "tensorrt"), default="onnxruntime",
                        help="--format onnx --precision int8: the runtime the QDQ graph is shaped for "
                             "(onnxruntime: uint8 activations; tensorrt: symmetric int8, the only form its parser "
                             "takes). --format tensorrt always uses tensorrt")
    add_device(parser, "auto", "--format tensorrt: the GPU the engine is built for and bound to (cuda:N)")
    parser.add_argument("--workspace-gb", type=float, default=4.0, help="TensorRT builder workspace limit")
    parser.add_argument("--no-parity", action="store_true", help="skip the ONNX Runtime vs PyTorch parity check")


def _source_info(checkpoint_path: Path, checkpoint: dict) -> dict:
    import torch

    from emotion_perception.export.engine_cache import file_sha256

    return {
        "checkpoint": str(checkpoint_path.resolve()),
        "checkpoint_sha256": file_sha256(checkpoint_path),
        "epoch": checkpoint.get("epoch"),
        "torch_version": torch.__version__,
    }


def _parity_sets(result, seed: int = 0) -> list[tuple[str, list]]:
    """Random inputs (batch 2) and two real-looking synthetic scenes, as graph input lists."""
    import numpy as np

    from emotion_perception.export.grid_scenes import scene_inputs

    card = result.card
    rng = np.random.default_rng(seed)
    random_inputs = []
    for name, example in zip(result.graph.input_names, result.graph.example_inputs):
        if name == "letterbox":
            random_inputs.append(np.tile(np.array([[0.8, 4.0, 12.0]], np.float32), (2, 1)))
        else:
            random_inputs.append(rng.standard_normal((2,) + tuple(example.shape[1:])).astype(np.float32))
    sets = [("random normal, batch 2", random_inputs)]
    for index, feed in enumerate(scene_inputs(card, 2, seed)):
        sets.append((f"synthetic scene {index + 1}", [feed[name] for name in card.input_names]))
    return sets


def _report_parity(result, onnx_path: Path, precision: str) -> bool:
    from emotion_perception.export.onnx_export import FP32_TOLERANCE, format_parity, parity_check, within_tolerance

    rows = parity_check(result.graph, onnx_path, _parity_sets(result))
    tolerance = FP32_TOLERANCE if precision == "fp32" else None
    reference = "PyTorch fp32" if precision != "fp16" else "PyTorch (fp16 network)"
    print(f"parity: ONNX Runtime (CPU) vs {reference}" + (f", tolerance {tolerance:g}" if tolerance else
                                                           " (reduced precision: differences reported, not checked)"))
    print(format_parity(rows, tolerance))
    return tolerance is None or all(within_tolerance(row, tolerance) for row in rows)


def _export_onnx(args: argparse.Namespace, model, checkpoint: dict, out: Path, precision: str,
                 int8_target: str = "onnxruntime") -> tuple[Path, bool]:
    import tempfile

    from emotion_perception.export.onnx_export import export_onnx
    from emotion_perception.export.quantize import quantize_int8
    from emotion_perception.nets.decode import DecodeConfig
    from emotion_perception.nets.factory import label_thresholds_of, trained_on_of

    decode_config = DecodeConfig(top_k=args.max_people, threshold=args.detection_threshold, flip_test=args.flip_test)
    common = {"with_decode": args.with_decode, "decode_config": decode_config,
                  "input_size": tuple(args.input_size) if args.input_size else None, "opset": args.opset,
                  "source": _source_info(Path(args.model), checkpoint), "simplify_graph": not args.no_simplify,
                  "graph_rewrites": not args.no_graph_rewrites,
                  "trained_on": trained_on_of(checkpoint), "label_thresholds": label_thresholds_of(checkpoint)}
    if precision != "int8":
        result = export_onnx(model, out, precision=precision, **common)
        ok = True if args.no_parity else _report_parity(result, out, precision)
        return out, ok
    with tempfile.TemporaryDirectory() as tmp:
        fp32_path = Path(tmp) / f"{out.stem}.fp32.onnx"
        result = export_onnx(model, fp32_path, precision="fp32", **common)
        quantize_int8(fp32_path, out, calibration_count=args.calibration_images, target=int8_target)
    if not args.no_parity:
        _report_parity(result, out, "int8")
    return out, True


def output_problem(out: Path) -> str | None:
    """Why the model (and its ``.json`` card) cannot be written at ``out``, or None; creates the
    folder when it is missing."""
    import os

    if out.is_dir():
        return "is a folder (give a file name, e.g. model.onnx)"
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        return f"cannot create its folder {out.parent} ({err.strerror or err})"
    if not out.parent.is_dir():
        return f"{out.parent} is not a folder"
    if not os.access(out.parent, os.W_OK):
        return f"its folder {out.parent} is not writable"
    return None


def main(args: argparse.Namespace) -> int:
    import sys

    from emotion_perception.cli_options import setup_command_logging
    from emotion_perception.export.model_card import read_onnx_card
    from emotion_perception.export.tensorrt_build import (
        DEFAULT_WORKSPACE_BYTES,
        TensorRTBuildError,
        TensorRTUnavailableError,
        ensure_engine,
        has_weak_fp16_flag,
        import_tensorrt,
        require_cuda,
    )
    from emotion_perception.nets.factory import CheckpointError, load_model_from_checkpoint

    setup_command_logging()
    if args.opset < 17:
        print(f"error: --opset must be >= 17, got {args.opset}", file=sys.stderr)
        return 2
    out: Path = args.out
    problem = output_problem(out)
    if problem:  # before minutes of export work
        print(f"error: --out {out}: {problem}", file=sys.stderr)
        return 2
    try:
        if args.format == "tensorrt":
            trt = import_tensorrt()  # fail before any export work when TensorRT is missing
            require_cuda()
        model_path = Path(args.model)
        if args.format == "tensorrt" and model_path.suffix == ".onnx":
            onnx_path, ok = model_path, True
            card = read_onnx_card(onnx_path)
        else:
            model, checkpoint = load_model_from_checkpoint(model_path, map_location="cpu")
            if args.format == "onnx":
                onnx_path, ok = _export_onnx(args, model, checkpoint, out, args.precision, args.int8_target)
                print(f"wrote {onnx_path} and {onnx_path}.json")
                return 0 if ok else 1
            # TensorRT 11+ has no fp16 flag: the fp16 engine is built from an fp16 ONNX graph.
            onnx_precision = "fp16" if args.precision == "fp16" and not has_weak_fp16_flag(trt) else "fp32"
            if args.precision == "int8":
                onnx_precision = "int8"
            onnx_path, ok = _export_onnx(args, model, checkpoint, out.with_suffix(".onnx"), onnx_precision, "tensorrt")
            card = read_onnx_card(onnx_path)
        if card.precision == "int8" and card.source.get("int8_target") not in (None, "tensorrt"):
            raise ValueError(f"{onnx_path}: this INT8 graph is shaped for ONNX Runtime (asymmetric uint8), which "
                             "the TensorRT parser rejects: export it with --int8-target tensorrt")
        # The predictors' batches: BENet runs the image and its mirror together under the flip
        # test, CAHFW-Net the faces of a frame (runtime/backend.py BackendOptions).
        max_batch = args.max_batch or (16 if card.model_name == "cahfw" else 2)
        engine = ensure_engine(
            onnx_path, out.parent, args.precision, max_batch=max_batch,
            workspace_bytes=int(args.workspace_gb * (1 << 30)) if args.workspace_gb else DEFAULT_WORKSPACE_BYTES,
            device_index=int(args.device.split(":")[1]) if ":" in args.device else 0,
            input_size=tuple(args.input_size) if args.input_size else None,
        )
    except (FileNotFoundError, CheckpointError, TensorRTUnavailableError, TensorRTBuildError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # the output went away or filled the disk mid-export
        print(f"error: --out {out}: cannot write ({err.strerror or err})", file=sys.stderr)
        return 2
    print(f"wrote {engine} and {engine}.json (from {onnx_path})")
    return 0 if ok else 1
