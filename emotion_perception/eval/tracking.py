"""Tracking metrics (IDF1, MOTA, ID switches, HOTA) with TrackEval, and label flicker.

The metrics are TrackEval's own (``trackeval.metrics.HOTA``, ``CLEAR``, ``Identity``; the numpy-2
fork on PyPI as ``trackeval``); this module only reads MOTChallenge text files and builds the
per-frame input TrackEval's metrics take (ids relabelled 0..n-1, IoU similarity per frame), as its
MOTChallenge reader does for a sequence without distractor classes.

Label flicker: per tracked person, the number of frames whose label set differs from that
person's previous frame, divided by the seconds the person was tracked (summed over people).
"""

from __future__ import annotations

import csv
import itertools
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class MotRows:
    """One MOTChallenge file: per 1-based frame, the ids and x1y1x2y2 boxes."""

    ids: dict[int, np.ndarray]
    boxes: dict[int, np.ndarray]


def read_mot_file(path: str | Path) -> MotRows:
    """``frame, id, x, y, w, h, ...`` lines (gt.txt or a tracker's output); rows with conf 0 in a
    ground-truth file are MOTChallenge's "ignore" rows and are dropped."""
    ids: dict[int, list[int]] = defaultdict(list)
    boxes: dict[int, list[list[float]]] = defaultdict(list)
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such MOTChallenge file")
    for line_number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split(",")
        try:
            frame, track, x, y, w, h = int(float(fields[0])), int(float(fields[1])), *map(float, fields[2:6])
        except (ValueError, IndexError):
            raise ValueError(f"{path}:{line_number}: expected 'frame, id, x, y, w, h, ...', got '{line}'") from None
        if len(fields) > 6 and fields[6].strip() == "0":
            continue
        ids[frame].append(track)
        boxes[frame].append([x, y, x + w, y + h])
    return MotRows({f: np.asarray(v, dtype=np.int64) for f, v in ids.items()},
                   {f: np.asarray(v, dtype=np.float64).reshape(-1, 4) for f, v in boxes.items()})


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    from trackeval.datasets._base_dataset import _BaseDataset

    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    return _BaseDataset._calculate_box_ious(a, b, box_format="x0y0x1y1")


def trackeval_input(gt: MotRows, pred: MotRows, num_frames: int | None = None) -> dict:
    """The ``data`` dict TrackEval's metrics' ``eval_sequence`` takes."""
    frames = range(1, (num_frames or max([0, *gt.ids, *pred.ids])) + 1)
    gt_relabel = {v: i for i, v in enumerate(sorted({int(t) for ids in gt.ids.values() for t in ids}))}
    pred_relabel = {v: i for i, v in enumerate(sorted({int(t) for ids in pred.ids.values() for t in ids}))}
    empty_ids, empty_boxes = np.zeros(0, np.int64), np.zeros((0, 4))
    data: dict = {"gt_ids": [], "tracker_ids": [], "similarity_scores": []}
    for frame in frames:
        g_ids, p_ids = gt.ids.get(frame, empty_ids), pred.ids.get(frame, empty_ids)
        data["gt_ids"].append(np.array([gt_relabel[int(t)] for t in g_ids], dtype=np.int64))
        data["tracker_ids"].append(np.array([pred_relabel[int(t)] for t in p_ids], dtype=np.int64))
        data["similarity_scores"].append(_iou(gt.boxes.get(frame, empty_boxes), pred.boxes.get(frame, empty_boxes)))
    data.update(num_timesteps=len(frames), num_gt_ids=len(gt_relabel), num_tracker_ids=len(pred_relabel),
                num_gt_dets=sum(len(i) for i in data["gt_ids"]),
                num_tracker_dets=sum(len(i) for i in data["tracker_ids"]))
    return data


def tracking_metrics(gt: MotRows, pred: MotRows, num_frames: int | None = None) -> dict[str, float]:
    """IDF1, MOTA, ID switches, HOTA (mean over IoU thresholds 0.05..0.95) and their parts."""
    from trackeval.metrics import CLEAR, HOTA, Identity

    data = trackeval_input(gt, pred, num_frames)
    quiet = {"PRINT_CONFIG": False}
    clear = CLEAR(quiet).eval_sequence(data)
    identity = Identity(quiet).eval_sequence(data)
    hota = HOTA(quiet).eval_sequence(data)
    return {
        "IDF1": float(identity["IDF1"]), "MOTA": float(clear["MOTA"]), "IDSW": int(clear["IDSW"]),
        "HOTA": float(np.mean(hota["HOTA"])), "DetA": float(np.mean(hota["DetA"])),
        "AssA": float(np.mean(hota["AssA"])),
        "FP": int(clear["CLR_FP"]), "FN": int(clear["CLR_FN"]), "TP": int(clear["CLR_TP"]),
        "gt_ids": int(data["num_gt_ids"]), "pred_ids": int(data["num_tracker_ids"]),
        "frames": int(data["num_timesteps"]),
    }


def label_flicker(labels_by_track: dict[str, list[tuple[float, frozenset[str]]]]) -> dict[str, float]:
    """Label-set changes per tracked person per second.

    ``labels_by_track``: per track, (stamp in seconds, label set) of each frame it was seen, in
    time order. Returns the changes, the tracked seconds (first to last sighting, summed over
    tracks) and their ratio."""
    changes, seconds = 0, 0.0
    for observations in labels_by_track.values():
        observations = sorted(observations, key=lambda o: o[0])
        changes += sum(1 for (_, a), (_, b) in itertools.pairwise(observations) if a != b)
        if observations:
            seconds += observations[-1][0] - observations[0][0]
    return {"changes": changes, "tracked_seconds": seconds,
            "flicker_per_s": changes / seconds if seconds > 0 else float("nan")}


def read_track_labels(path: str | Path, column: str, rate_hz: float) -> dict[str, list[tuple[float, frozenset[str]]]]:
    """Per track id, (stamp, label set) from an emotions CSV (``frame, id, <column>, ...``)."""
    out: dict[str, list[tuple[float, frozenset[str]]]] = defaultdict(list)
    with open(path, encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f):
            labels = frozenset(name for name in row[column].split(";") if name)
            out[row["id"]].append(((int(row["frame"]) - 1) / rate_hz, labels))
    return dict(out)


def format_report(metrics: dict[str, float], flicker: dict[str, dict[str, float]] | None = None) -> str:
    lines = [(f"IDF1 {100 * metrics['IDF1']:.1f}  MOTA {100 * metrics['MOTA']:.1f}  ID switches {metrics['IDSW']}  "
             f"HOTA {100 * metrics['HOTA']:.1f} (DetA {100 * metrics['DetA']:.1f}, AssA {100 * metrics['AssA']:.1f})  "
             f"FP {metrics['FP']} FN {metrics['FN']}  ids: {metrics['gt_ids']} true, {metrics['pred_ids']} predicted, "
             f"{metrics['frames']} frames")]
    for name, values in (flicker or {}).items():
        lines.append(f"label flicker ({name}): {values['flicker_per_s']:.3f} changes per person per second "
                     f"({values['changes']} changes over {values['tracked_seconds']:.1f} tracked person-seconds)")
    return "\n".join(lines)


def main_tracking(gt_root: Path, pred_path: Path, json_path: Path | None) -> int:
    """``eval tracking``: print (and optionally save) the metrics and, where the tracker wrote
    per-track emotions, the label flicker from raw and from smoothed scores."""
    import json

    from emotion_perception.data.synth.sequence import read_sequence_info, track_emotions_path

    sequence = read_sequence_info(gt_root)
    metrics = tracking_metrics(read_mot_file(sequence.root / "gt" / "gt.txt"), read_mot_file(pred_path),
                               num_frames=len(sequence.frame_paths))
    flicker = {}
    emotions = track_emotions_path(pred_path)
    if emotions.is_file():
        flicker = {"raw scores": label_flicker(read_track_labels(emotions, "raw_labels", sequence.rate_hz)),
                   "smoothed scores": label_flicker(read_track_labels(emotions, "labels", sequence.rate_hz))}
    truth = sequence.root / "gt" / "emotions.csv"
    if truth.is_file():
        flicker["ground truth"] = label_flicker(read_track_labels(truth, "labels", sequence.rate_hz))
    print(format_report(metrics, flicker))
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps({"metrics": metrics, "flicker": flicker}, indent=2) + "\n", encoding="utf-8")
    return 0
