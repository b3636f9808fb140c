"""Make a shippable model file from a training checkpoint: weights, config and metrics only.

    emotion-perception ship --model runs/RUN/best.pt --out models/NAME.pt --trained-on synthetic [--note "..."]

(train/ship_cli.py; ``python -m emotion_perception.train.ship SOURCE DESTINATION ...`` still works.)

Training checkpoints also hold optimizer, scheduler and scaler state (about twice the size);
a robot needs none of it. The result loads like any checkpoint (``load_model_from_checkpoint``,
``load_predictor``), with ``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

from emotion_perception.nets.factory import write_checkpoint
from emotion_perception.train.checkpoints import load_checkpoint

KEEP = ("model", "model_name", "config", "epoch", "step", "metrics", "train_config", "trained_on", "label_thresholds")


def ship_checkpoint(source: str | Path, destination: str | Path, note: str = "", trained_on: str | None = None,
                    label_thresholds: dict[str, float] | None = None) -> dict:
    """Write the inference part of ``source`` to ``destination``; returns what was kept."""
    checkpoint = load_checkpoint(source)
    missing = [key for key in ("model", "model_name", "config") if key not in checkpoint]
    if missing:
        raise ValueError(f"{source}: not a training checkpoint of this project (missing {missing})")
    shipped = {key: checkpoint[key] for key in KEEP if key in checkpoint}
    shipped["provenance"] = {"source": str(source), "note": note}
    if trained_on:
        # What the model card and the nodes report (export/model_card.py ModelCard.trained_on).
        shipped["trained_on"] = trained_on
    if label_thresholds:
        # Per-category label thresholds calibrated on validation data (eval/calibration.py).
        shipped["label_thresholds"] = {str(k): float(v) for k, v in label_thresholds.items()}
    destination = write_checkpoint(destination, shipped)
    shipped["sha256"] = hashlib.sha256(destination.read_bytes()).hexdigest()
    return shipped


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)  # None under -OO
    parser.add_argument("source")
    parser.add_argument("destination")
    parser.add_argument("--note", default="")
    parser.add_argument("--trained-on", default=None,
                        help="what the weights learned from: synthetic, or 'real: <dataset>' (reported by the nodes)")
    parser.add_argument("--label-thresholds", type=Path, default=None,
                        help="JSON of 'emotion-perception eval calibrate' (per-category label thresholds)")
    args = parser.parse_args()
    thresholds = None
    if args.label_thresholds is not None:
        import json

        thresholds = json.loads(args.label_thresholds.read_text(encoding="utf-8"))["label_thresholds"]
    shipped = ship_checkpoint(args.source, args.destination, args.note, args.trained_on, thresholds)
    size = Path(args.destination).stat().st_size / 2**20
    print(f"{args.destination}: {shipped['model_name']}, epoch {shipped.get('epoch')}, {size:.1f} MB, "
          f"sha256 {shipped['sha256'][:16]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
