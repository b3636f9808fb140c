"""``emotion-perception ship``: a shippable model file from a training checkpoint (train/ship.py).

    emotion-perception ship --model runs/RUN/best.pt --out models/NAME.pt --trained-on synthetic \\
        [--label-thresholds thresholds.json] [--note "..."]

Only argparse at module level; torch is imported when the command runs.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from emotion_perception.cli_options import add_model_file


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = ("Write the inference part of a training checkpoint (weights, config, metrics; no "
                          "optimizer, scheduler or scaler state) as a model file for the nodes and 'predict'.")
    add_model_file(parser, "training checkpoint (.pt) of a run, e.g. runs/RUN/best.pt")
    parser.add_argument("--out", type=Path, required=True, metavar="FILE",
                        help="model file to write, e.g. models/NAME.pt")
    parser.add_argument("--trained-on", default=None,
                        help="what the weights learned from: synthetic, or 'real: <dataset>' (reported by the nodes)")
    parser.add_argument("--label-thresholds", type=Path, default=None, metavar="FILE",
                        help="JSON of 'emotion-perception eval calibrate' (per-category label thresholds)")
    parser.add_argument("--note", default="", help="free text kept in the file's provenance")


def main(args: argparse.Namespace) -> int:
    import json
    import sys

    from emotion_perception.errors import output_file_problem
    from emotion_perception.train.ship import ship_checkpoint

    problem = output_file_problem("--out", args.out)
    if problem:
        print(f"emotion-perception ship: {problem}", file=sys.stderr)
        return 2
    try:
        thresholds = None
        if args.label_thresholds is not None:
            thresholds = json.loads(args.label_thresholds.read_text(encoding="utf-8"))["label_thresholds"]
        shipped = ship_checkpoint(args.model, args.out, args.note, args.trained_on, thresholds)
    except (OSError, ValueError, KeyError) as err:
        # A missing or foreign checkpoint, a thresholds file that is not eval calibrate's.
        print(f"emotion-perception ship: {err}", file=sys.stderr)
        return 2
    size = args.out.stat().st_size / 2**20
    print(f"{args.out}: {shipped['model_name']}, epoch {shipped.get('epoch')}, {size:.1f} MB, "
          f"sha256 {shipped['sha256'][:16]}")
    return 0
