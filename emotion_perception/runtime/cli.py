"""`emotion-perception predict`: run a model on images; print, save JSON, draw.

Also the quickest way to check that backends agree: run the same images with ``--backend torch``
and ``--backend onnxruntime`` and compare the JSON files.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from emotion_perception.cli_options import (
    MODEL_FILE_HELP,
    add_deprecated_alias,
    add_detection_threshold,
    add_device,
    add_graph_options,
    add_max_people,
    add_model_file,
)

BACKENDS = ("auto", "tensorrt", "onnxruntime", "torch")
PRECISIONS = ("auto", "fp32", "fp16", "int8")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("images", nargs="+", type=Path, metavar="IMAGES", help="image files")
    add_model_file(parser, f"{MODEL_FILE_HELP}; or 'expression' (face-api's real face-expression model, installed "
                           "by the setup)")
    parser.add_argument("--backend", choices=BACKENDS, default="auto", help="inference backend (default: auto)")
    add_device(parser)
    add_graph_options(parser)
    parser.add_argument("--precision", choices=PRECISIONS, default="auto", help="torch/TensorRT precision")
    parser.add_argument("--input-size", nargs=2, type=int, metavar=("H", "W"),
                        help="BENet canvas, multiples of 32 (default: longer side at the training size)")
    add_detection_threshold(parser, 0.3, "minimum person/face detection score, in [0, 1]")
    add_max_people(parser, 15)
    parser.add_argument("--flip-test", action="store_true", help="average with the mirrored image")
    parser.add_argument("--top-labels", type=int, default=3, metavar="N", help="labels listed per person (default: 3)")
    add_deprecated_alias(parser, "--top", "--top-labels", "top_labels", type=int)
    parser.add_argument("--face-detector", choices=("auto", "mtcnn", "hog", "cnn"), default="auto",
                        help="face models: MTCNN (auto, where installed) or dlib HOG / CNN")
    parser.add_argument("--json", type=Path, help="write the predictions to this JSON file")
    parser.add_argument("--draw", type=Path, metavar="DIR", help="write images with boxes and labels to DIR")
    parser.add_argument("--cache-dir", type=Path, help="where exported ONNX models and engines are cached")
    parser.add_argument("--max-image-pixels", type=int, default=None, metavar="N",
                        help="refuse images with more pixels, read from their header before decoding "
                             "(default: 2^25; formats other than PNG, JPEG, BMP, WebP are refused)")


def person_record(person: Any, categories: tuple[str, ...], top: int) -> dict[str, Any]:
    """The JSON form of one PersonPrediction (see docs/DEPLOYMENT.md, "predict")."""
    import math

    from emotion_perception.data.categories import VAD_NAMES
    from emotion_perception.runtime.predictor import top_labels

    vad = [float(v) for v in person.vad]
    return {
        "box": [round(float(v), 2) for v in person.box],
        "score": round(float(person.score), 5),
        "scores": {name: round(float(p), 5) for name, p in zip(categories, person.scores)},
        "top_labels": [{"label": name, "score": round(p, 5)} for name, p in top_labels(person.scores, categories, top)],
        "vad": None if all(math.isnan(v) for v in vad) else dict(zip(VAD_NAMES, (round(v, 5) for v in vad))),
    }


def draw_path(directory: Path, image_path: Path, used: set[str]) -> Path:
    """``<stem>.pred.png`` in ``directory``; inputs sharing a stem (a/x.jpg, b/x.png) get
    ``<stem>-2.pred.png``, ``-3`` ... in command-line order, so no drawing overwrites another."""
    name, number = f"{image_path.stem}.pred.png", 1
    while name in used:
        number += 1
        name = f"{image_path.stem}-{number}.pred.png"
    used.add(name)
    return directory / name


def output_target_problem(args: argparse.Namespace) -> str | None:
    """Why ``--draw`` / ``--json`` cannot be written, checked before any model loads."""
    if args.draw is not None and args.draw.exists() and not args.draw.is_dir():
        return f"--draw {args.draw}: is a file, not a folder"
    from emotion_perception.errors import output_file_problem

    return output_file_problem("--json", args.json) if args.json is not None else None


def main(args: argparse.Namespace) -> int:
    import json
    import sys
    import time

    import numpy as np

    from emotion_perception.cli_options import setup_command_logging
    from emotion_perception.data.imageio import DEFAULT_MAX_IMAGE_PIXELS, ImageError, read_rgb, write_rgb
    from emotion_perception.runtime.draw import caption, draw_people
    from emotion_perception.runtime.predictor import load_predictor

    setup_command_logging()
    max_pixels = DEFAULT_MAX_IMAGE_PIXELS if args.max_image_pixels is None else args.max_image_pixels
    problem = output_target_problem(args)
    if problem is None and max_pixels < 1:
        problem = f"--max-image-pixels must be >= 1, got {max_pixels}"
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    try:
        predictor = load_predictor(
            args.model, backend=args.backend, device=args.device,
            input_size=tuple(args.input_size) if args.input_size else None, precision=args.precision,
            cache_dir=args.cache_dir, face_detector=args.face_detector,
            cuda_graph=args.cuda_graph, compile=args.compile,
        )
    except (FileNotFoundError, ValueError, ImportError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    categories = predictor.categories
    results = []
    skipped: list[dict[str, str]] = []
    drawn_names: set[str] = set()
    # One image at a time: read, infer, report, draw, then let it go (memory stays one image).
    for path in args.images:
        try:
            image = read_rgb(path, max_pixels=max_pixels)
        except (FileNotFoundError, ImageError) as err:
            # An unusable input is skipped and reported; the others are still processed.
            print(f"skipped: {err}", file=sys.stderr)
            skipped.append({"path": str(path), "reason": str(err)})
            continue
        started = time.perf_counter()
        try:
            people = predictor.predict(image, detection_threshold=args.detection_threshold, max_people=args.max_people,
                                       flip_test=args.flip_test)
        except ValueError as err:
            print(f"error: {path}: {err}", file=sys.stderr)
            return 2
        latency_ms = (time.perf_counter() - started) * 1000
        print(f"{path}: {len(people)} {'person' if len(people) == 1 else 'people'} ({latency_ms:.1f} ms)")
        records = [person_record(p, categories, args.top_labels) for p in people]
        for index, record in enumerate(records, 1):
            labels = ", ".join(f"{t['label']} {t['score']:.2f}" for t in record["top_labels"])
            vad = "" if record["vad"] is None else "  VAD " + " ".join(f"{v:.2f}" for v in record["vad"].values())
            print(f"  #{index} box {record['box']} score {record['score']:.2f}: {labels}{vad}")
        results.append({"path": str(path), "width": int(image.shape[1]), "height": int(image.shape[0]),
                        "latency_ms": round(latency_ms, 3), "people": records})
        if args.draw is not None:
            captions = [caption(r["score"], [t["label"] for t in r["top_labels"]],
                                [t["score"] for t in r["top_labels"]])
                        for r in records]
            boxes = np.array([p.box for p in people], dtype=np.float32).reshape(-1, 4)
            target = draw_path(args.draw, path, drawn_names)
            try:
                args.draw.mkdir(parents=True, exist_ok=True)
                write_rgb(target, draw_people(image, boxes, captions))
            except OSError as err:
                print(f"error: --draw {target}: cannot write ({err.strerror or err})", file=sys.stderr)
                return 2
    if args.json is not None:
        document = {
            "model": {"path": str(args.model), "model_name": predictor.model_name, "preset": predictor.card.preset,
                      "backend": predictor.backend_name, "device": predictor.device, "precision": predictor.precision,
                      "categories": list(categories), "has_vad": predictor.has_vad},
            "settings": {"detection_threshold": args.detection_threshold, "max_people": args.max_people,
                         "flip_test": args.flip_test},
            "images": results,
            "skipped": skipped,
        }
        try:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
        except OSError as err:
            print(f"error: --json {args.json}: cannot write ({err.strerror or err})", file=sys.stderr)
            return 2
        print(f"wrote {args.json}")
    if skipped:
        print(f"{len(skipped)} of {len(args.images)} images skipped (unreadable, refused or too large)",
              file=sys.stderr)
        return 2
    return 0
