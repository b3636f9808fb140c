"""`emotion-perception track`: run a model and the tracker over a sequence's frames.

Writes the confirmed tracks in the MOTChallenge format (``frame, id, x, y, w, h, conf, -1, -1, -1``)
and, beside it (``PRED.emotions.csv``), per track and frame the labels from the raw scores and
from the smoothed ones, so that ``eval tracking`` can measure flicker with and without smoothing
from one run. Stamps are frame index / the sequence's frameRate, as a replayed recording's.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from emotion_perception.cli_options import (
    MODEL_FILE_HELP,
    add_detection_threshold,
    add_device,
    add_model_file,
    add_option,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_file(parser, f"{MODEL_FILE_HELP}; or 'expression' (the installed face-expression model)")
    add_option(parser, "--sequence", "sequence", ("--frames",), required=True, type=Path, metavar="DIR",
               help="a MOTChallenge sequence folder (synth sequence --out)")
    parser.add_argument("--out", type=Path, required=True,
                        help="tracker output PRED.txt (PRED.emotions.csv is written beside it)")
    parser.add_argument("--backend", default="auto", help="inference backend (default: auto)")
    add_device(parser)
    parser.add_argument("--face-detector", choices=("auto", "mtcnn", "hog", "cnn"), default="mtcnn")
    add_detection_threshold(parser, None, "minimum person/face detection score (default: the model's node "
                                          "default, config/<model>.yaml)")
    parser.add_argument("--emotion-threshold", type=float, default=None,
                        help="label threshold (default: the node default; calibrated per-category thresholds of "
                             "the model card apply then)")
    parser.add_argument("--confirmation-frames", type=int, default=None,
                        help="frames before a track gets an id (default: node's)")
    parser.add_argument("--lost-timeout", type=float, default=None, help="seconds a lost track lives (default: node's)")
    parser.add_argument("--smoothing", type=float, default=None,
                        help="smoothing time constant in seconds, 0 off (default: node's)")
    parser.add_argument("--drop-every", type=int, default=0, metavar="N",
                        help="skip every N-th frame (as a node dropping frames would); 0: none")


def _node_defaults(model_kind: str) -> dict:
    import yaml

    from emotion_perception.resources import find_resource

    document = yaml.safe_load(find_resource(f"config/{model_kind}.yaml").read_text(encoding="utf-8"))
    (section,) = document.values()
    return section["ros__parameters"]


def main(args: argparse.Namespace) -> int:
    import csv
    import sys

    from tqdm import tqdm

    from emotion_perception.data.imageio import read_rgb
    from emotion_perception.data.synth.sequence import read_sequence_info, track_emotions_path
    from emotion_perception.runtime.labels import confident_labels
    from emotion_perception.runtime.predictor import load_predictor
    from emotion_perception.runtime.smoothing import SmoothingSettings
    from emotion_perception.runtime.tracking import PersonTracker, TrackingSettings

    try:
        sequence = read_sequence_info(args.sequence)
        predictor = load_predictor(args.model, backend=args.backend, device=args.device,
                                   face_detector=args.face_detector)
        defaults = _node_defaults(predictor.model_name)
        tracker = PersonTracker(
            TrackingSettings(confirmation_frames=args.confirmation_frames or defaults["track_confirmation_frames"],
                             lost_timeout_s=float(defaults["track_lost_timeout"] if args.lost_timeout is None
                                                  else args.lost_timeout)),
            SmoothingSettings(float(defaults["smoothing_time_constant"] if args.smoothing is None else args.smoothing)),
        )
    except (FileNotFoundError, ValueError, ImportError, RuntimeError) as err:
        print(f"emotion-perception track: {err}", file=sys.stderr)
        return 2
    detection_threshold = (defaults["detection_threshold"] if args.detection_threshold is None
                           else args.detection_threshold)
    emotion_threshold = defaults["emotion_threshold"] if args.emotion_threshold is None else args.emotion_threshold
    per_category = predictor.card.label_thresholds if args.emotion_threshold is None else None
    exclusive = predictor.model_name != "benet"
    categories = predictor.categories

    def labels(scores) -> str:
        return ";".join(confident_labels(scores, categories, emotion_threshold, exclusive=exclusive,
                                         per_category=per_category))

    args.out.parent.mkdir(parents=True, exist_ok=True)
    emotions_path = track_emotions_path(args.out)
    tracks = set()
    with open(args.out, "w", encoding="utf-8") as mot, open(emotions_path, "w", encoding="utf-8", newline="") as emo:
        writer = csv.writer(emo)
        writer.writerow(["frame", "id", "raw_labels", "labels"])
        for index, path in enumerate(tqdm(sequence.frame_paths, desc="track", unit="frame"), 1):
            if args.drop_every and index % args.drop_every == 0:
                continue
            people = predictor.predict(read_rgb(path), detection_threshold=detection_threshold,
                                       max_people=int(defaults["max_people"]))
            for person in tracker.update(people, (index - 1) / sequence.rate_hz):
                if not person.track_id:
                    continue  # not confirmed yet: no id to evaluate
                tracks.add(person.track_id)
                x1, y1, x2, y2 = (float(v) for v in person.prediction.box)
                mot.write(f"{index},{person.track_id},{x1:.2f},{y1:.2f},{x2 - x1:.2f},{y2 - y1:.2f},"
                          f"{float(person.prediction.score):.4f},-1,-1,-1\n")
                writer.writerow([index, person.track_id, labels(person.raw_scores), labels(person.scores)])
    print(f"track: {len(sequence.frame_paths)} frames, {len(tracks)} tracks; wrote {args.out} and {emotions_path}")
    return 0
