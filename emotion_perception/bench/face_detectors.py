"""`emotion-perception bench faces`: face detectors on real photos with hand-drawn ground truth.

For each detector (``mtcnn``: :class:`~emotion_perception.runtime.face_detection.MTCNNDetector`;
``hog``/``cnn``: dlib's, :class:`~emotion_perception.data.faces.FaceDetector`) and each image:

* the image is resized to fit inside ``--size`` (aspect ratio kept: a camera's frame size, so
  that the timing says what a robot pays per frame), the ground truth scaled alike;
* CPU time of ``detect`` (``time.process_time``: the process's user + system time, so other
  processes on a shared machine do not count; torch and OpenCV limited to 1 thread, dlib is
  single-threaded) and wall time, after ``--warmup`` untimed calls on the first image;
* detections are matched to ground-truth faces greedily by falling score, each to the free
  face it overlaps most, when IoU >= ``--iou`` (0.4 by default: hand-drawn boxes and each
  detector's box convention differ in extent, not in which face they mean).

Per detector: recall (matched faces / faces), false faces (detections that match no face),
median CPU and wall ms per image. Ground truth (``--truth``, e.g. ``test/data/real_faces.json``):
``{"images": {NAME: {"size": [W, H], "faces": [[x1, y1, x2, y2], ...]}}}`` in pixels of the
original photo; NAME is the file name, or ``skimage:NAME`` for ``skimage.data.NAME()``, which
``--images`` accepts too.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from emotion_perception.cli_options import add_device

LOGGER = logging.getLogger(__name__)
DETECTORS: tuple[str, ...] = ("mtcnn", "hog", "cnn")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
MTCNN_RESOURCE = "external_models/mtcnn.pt"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--images", nargs="+", required=True,
                        help="image files, folders of images, or skimage:NAME (e.g. skimage:astronaut)")
    parser.add_argument("--truth", type=Path, required=True, help="ground-truth JSON (e.g. test/data/real_faces.json)")
    parser.add_argument("--detectors", default="mtcnn,hog", help=f"comma-separated among {','.join(DETECTORS)}")
    parser.add_argument("--size", default="640x480",
                        help="WxH the images are resized to fit in (aspect kept), or 'original'")
    parser.add_argument("--iou", type=float, default=0.4, help="IoU for a detection to count as a found face")
    parser.add_argument("--mtcnn-weights", type=Path,
                        help=f"MTCNN checkpoint (default: $EP_MTCNN_WEIGHTS, else the installed {MTCNN_RESOURCE})")
    parser.add_argument("--mtcnn-min-face", type=int, default=20, help="MTCNN min_face_size in px of the resized image")
    parser.add_argument("--mtcnn-min-score", type=float, default=0.0,
                        help="drop MTCNN faces below this probability (the nodes' detection_threshold: 0.9)")
    parser.add_argument("--upsample", type=int, default=1, help="dlib detectors' upsampling count")
    add_device(parser, "cpu", "torch device of MTCNN")
    parser.add_argument("--warmup", type=int, default=1, help="untimed detections on the first image per detector")
    parser.add_argument("--json", type=Path, help="write the results to this JSON file")


# --------------------------------------------------------------------------- pieces


def parse_size(text: str) -> tuple[int, int] | None:
    """'640x480' -> (640, 480); 'original' -> None. ValueError otherwise."""
    if text.strip().lower() in ("original", "none", "0"):
        return None
    try:
        width, height = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"--size: expected WxH such as 640x480 or 'original', got {text!r}") from None
    if width <= 0 or height <= 0:
        raise ValueError(f"--size: expected positive WxH, got {text!r}")
    return width, height


def load_truth(path: Path) -> dict[str, dict[str, Any]]:
    """NAME -> {"size": (W, H), "faces": (N, 4) float array}; ValueError naming the file on bad content."""
    import numpy as np

    try:
        document = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: ground-truth file not found") from None
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: not a readable JSON file ({err})") from None
    images = document.get("images") if isinstance(document, dict) else None
    if not isinstance(images, dict) or not images:
        raise ValueError(f"{path}: expected "
                         f"{{\"images\": {{NAME: {{\"size\": [W, H], \"faces\": [[x1, y1, x2, y2], ...]}}}}}}")
    truth = {}
    for name, entry in images.items():
        try:
            faces = np.asarray(entry["faces"], dtype=np.float64).reshape(-1, 4)
            width, height = (int(v) for v in entry["size"])
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"{path}: image {name!r}: expected 'size' [W, H] and 'faces' "
                             f"[[x1, y1, x2, y2], ...] ({err})") from None
        truth[name] = {"size": (width, height), "faces": faces}
    return truth


def collect_images(specs: Sequence[str]) -> list[tuple[str, str]]:
    """(key in the ground truth, source) per image: file names of files and folder contents, skimage:NAME as is."""
    found = []
    for spec in specs:
        if spec.startswith("skimage:"):
            found.append((spec, spec))
            continue
        path = Path(spec)
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            found.extend((p.name, str(p)) for p in files)
        elif path.is_file():
            found.append((path.name, str(path)))
        else:
            raise FileNotFoundError(f"--images: {spec}: no such file or folder")
    return found


def read_image(source: str):
    """(H, W, 3) uint8 RGB of a file or of skimage:NAME (grey images made RGB)."""
    import numpy as np

    if source.startswith("skimage:"):
        import skimage.data

        name = source.split(":", 1)[1]
        loader = getattr(skimage.data, name, None)
        if loader is None:
            raise ValueError(f"--images: skimage.data has no image {name!r}")
        image = np.asarray(loader())
        if image.ndim == 2:
            image = np.stack([image] * 3, axis=-1)
        return np.ascontiguousarray(image[..., :3].astype(np.uint8))
    from emotion_perception.data.imageio import read_rgb

    return read_rgb(source)


def fit_scale(width: int, height: int, size: tuple[int, int] | None) -> float:
    """Scale that makes a width x height image fit inside size (W, H), aspect kept; 1 without a size."""
    if size is None:
        return 1.0
    return min(size[0] / width, size[1] / height)


def match_faces(detections, truth, iou_threshold: float) -> tuple[int, int]:
    """(matched ground-truth faces, false detections): greedy by falling score, best free face first."""
    import numpy as np

    from emotion_perception.runtime.face_detection import box_overlap

    detections = np.asarray(detections, dtype=np.float64).reshape(-1, 5)
    truth = np.asarray(truth, dtype=np.float64).reshape(-1, 4)
    free = np.ones(len(truth), dtype=bool)
    false = 0
    iou = box_overlap(detections[:, :4], truth, "union")
    for k in np.argsort(-detections[:, 4], kind="stable"):
        candidates = np.where(free, iou[k], -1.0)
        best = int(np.argmax(candidates)) if len(truth) else -1
        if best >= 0 and candidates[best] >= iou_threshold:
            free[best] = False
        else:
            false += 1
    return int((~free).sum()), false


def build_detector(name: str, args: argparse.Namespace) -> Callable:
    """The ``detect`` method of detector ``name``."""
    if name == "mtcnn":
        from emotion_perception.runtime.face_detection import MTCNNDetector

        weights = args.mtcnn_weights or os.environ.get("EP_MTCNN_WEIGHTS")
        if not weights:
            from emotion_perception.resources import find_external_model

            weights = find_external_model("mtcnn")
        return MTCNNDetector(weights, device=args.device, min_face_size=args.mtcnn_min_face,
                             min_score=args.mtcnn_min_score).detect
    if name in ("hog", "cnn"):
        from emotion_perception.data.faces import FaceDetector

        return FaceDetector(name, upsample=args.upsample).detect
    raise ValueError(f"--detectors: {name!r} is not one of {DETECTORS}")


# --------------------------------------------------------------------------- measuring


@dataclass
class DetectorResult:
    """One row of the benchmark."""

    detector: str
    faces: int = 0
    matched: int = 0
    false_faces: int = 0
    detections: int = 0
    cpu_ms: list[float] = field(default_factory=list)
    wall_ms: list[float] = field(default_factory=list)
    per_image: list[dict[str, Any]] = field(default_factory=list)

    @property
    def recall(self) -> float:
        return self.matched / self.faces if self.faces else float("nan")

    def summary(self) -> dict[str, Any]:
        import numpy as np

        row = asdict(self)
        row.update(recall=self.recall, cpu_ms_median=float(np.median(self.cpu_ms)) if self.cpu_ms else None,
                   wall_ms_median=float(np.median(self.wall_ms)) if self.wall_ms else None)
        return row


def run_benchmark(args: argparse.Namespace) -> dict[str, Any]:
    import cv2
    import numpy as np
    import torch

    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    size = parse_size(args.size)
    truth = load_truth(args.truth)
    names = [n.strip() for n in args.detectors.split(",") if n.strip()]
    for name in names:
        if name not in DETECTORS:
            raise ValueError(f"--detectors: {name!r} is not one of {DETECTORS}")
    frames = []
    for key, source in collect_images(args.images):
        if key not in truth:
            raise ValueError(f"{args.truth}: no ground truth for image {key!r} ({source})")
        image = read_image(source)
        height, width = image.shape[:2]
        if (width, height) != truth[key]["size"]:
            raise ValueError(f"{source}: image is {width}x{height}, the ground truth says {truth[key]['size']}")
        scale = fit_scale(width, height, size)
        if scale != 1.0:
            new_size = (max(1, round(width * scale)), max(1, round(height * scale)))
            image = cv2.resize(image, new_size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
        frames.append((key, np.ascontiguousarray(image), truth[key]["faces"] * scale))
    if not frames:
        raise ValueError("--images: no image found")

    results = []
    for name in names:
        detect = build_detector(name, args)
        for _ in range(args.warmup):
            detect(frames[0][1])
        result = DetectorResult(name)
        for key, image, faces in frames:
            cpu, wall = time.process_time(), time.perf_counter()
            boxes = detect(image)
            cpu, wall = (time.process_time() - cpu) * 1000.0, (time.perf_counter() - wall) * 1000.0
            matched, false = match_faces(boxes, faces, args.iou)
            result.faces += len(faces)
            result.matched += matched
            result.false_faces += false
            result.detections += len(boxes)
            result.cpu_ms.append(cpu)
            result.wall_ms.append(wall)
            result.per_image.append({"image": key, "size": [image.shape[1], image.shape[0]], "faces": len(faces),
                                     "matched": matched, "false_faces": false, "cpu_ms": cpu, "wall_ms": wall})
            LOGGER.info("%s %s: %d/%d faces, %d false, %.0f ms CPU", name, key, matched, len(faces), false, cpu)
        results.append(result.summary())

    from emotion_perception.bench.model_bench import environment_info

    return {
        "command": " ".join(["emotion-perception"] + sys.argv[1:]),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "size": list(size) if size else "original",
        "iou": args.iou,
        "environment": environment_info(),
        "results": results,
    }


def format_table(report: dict[str, Any]) -> str:
    """Markdown table of the per-detector summary."""
    lines = ["| detector | faces found / faces | recall | false faces | CPU ms / image (median) | wall ms (median) |",
             "|---|---|---|---|---|---|"]
    for row in report["results"]:
        lines.append(f"| {row['detector']} | {row['matched']} / {row['faces']} | {row['recall']:.2f} | "
                     f"{row['false_faces']} | {row['cpu_ms_median']:.0f} | {row['wall_ms_median']:.0f} |")
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        report = run_benchmark(args)
    except (OSError, ValueError, ImportError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(format_table(report))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
        print(f"wrote {args.json}")
    return 0
