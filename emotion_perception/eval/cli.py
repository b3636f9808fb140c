"""``emotion-perception eval {benet,cahfw,calibrate,ceiling,tracking,ablation}``: a checkpoint's paper metrics,
predictions and plots.

Only argparse at module level; the evaluation modules are imported when the command runs.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from emotion_perception.cli_options import (
    add_batch_size,
    add_deprecated_alias,
    add_detection_threshold,
    add_device,
    add_max_people,
    add_model_file,
)


def _common_options(parser: argparse.ArgumentParser, dataset: str, default_out: str) -> None:
    add_model_file(parser, "the model file to evaluate: a training checkpoint (best.pt, final.pt) or a shipped .pt",
                   checkpoint_alias=True)
    parser.add_argument("--data", type=Path, required=True, help=f"{dataset} root folder")
    parser.add_argument("--split", choices=("val", "test"), default="test", help="split to evaluate (default: test)")
    parser.add_argument("--out", type=Path, default=Path(default_out),
                        help=f"folder for metrics.json, predictions.npz and plots (default: {default_out})")
    add_batch_size(parser, 8, "images per forward pass")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers")
    add_device(parser)
    _deployment_options(parser)


def _deployment_options(parser: argparse.ArgumentParser) -> None:
    """Which form of the model runs (eval/deployed.py); the names are those of predict and bench."""
    from emotion_perception.eval.deployed import EVAL_BACKENDS, EVAL_PRECISIONS, INT8_TARGETS

    parser.add_argument("--backend", choices=EVAL_BACKENDS, default="torch",
                        help="torch: the checkpoint's module (default); onnxruntime / tensorrt: the graph a robot "
                             "runs, exported (and quantised) from the checkpoint once into --cache-dir")
    parser.add_argument("--precision", choices=EVAL_PRECISIONS, default="fp32",
                        help="fp32 (default); fp16 (GPU); int8 (onnxruntime / tensorrt: QDQ graph calibrated on "
                             "synthetic scenes)")
    parser.add_argument("--int8-target", choices=INT8_TARGETS, default=None,
                        help="--precision int8: the QDQ form (onnxruntime: uint8 activations; tensorrt: symmetric "
                             "int8); default: the backend's own")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU intra-op threads (ONNX Runtime; PyTorch: process-wide); default: ONNX Runtime "
                             "the physical cores, PyTorch its own")
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help="where exported / quantised models and engines are cached "
                             "(default: $EMOTION_PERCEPTION_CACHE or ~/.cache/emotion_perception)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    models = parser.add_subparsers(dest="eval_command", metavar="WHAT", required=True)
    benet = models.add_parser("benet", help="BENet on EMOTIC: GT-centre mAP (BU, PC, fusion), COCO AP, joint protocol",
                              description="Evaluate a BENet checkpoint with the BENet paper's protocols.")
    _common_options(benet, "EMOTIC", "runs/eval_benet")
    # Defaults: the public BENet test settings (experiments/emotic/*.yaml: FLIP_TEST True,
    # DETECTION_THRESHOLD 0.1, MAX_NUM_PEOPLE 15). COCO-style wider settings:
    # --max-people 100 --detection-threshold 0.01.
    add_max_people(benet, 15, "detections kept per image, the public code's MAX_NUM_PEOPLE", old_names=("--top-k",))
    add_detection_threshold(benet, 0.1, "minimum centre score of a detection, the public code's DETECTION_THRESHOLD")
    benet.add_argument("--flip-test", action=argparse.BooleanOptionalAction, default=True,
                       help="average with the horizontally flipped image (default: on, as the public test)")
    benet.add_argument("--examples", type=int, default=4, help="example figures to draw (default: 4)")
    benet.add_argument("--max-images", type=int, default=0, help="evaluate only the first N images (0: all)")
    cahfw = models.add_parser("cahfw", help="CAHFW-Net on CAER-S: accuracy, per-class accuracy, confusion matrix",
                              description="Evaluate a CAHFW-Net checkpoint with the CAHFW-Net paper's metrics.")
    _common_options(cahfw, "CAER-S", "runs/eval_cahfw")
    calibrate = models.add_parser("calibrate", help="per-category best-F1 label thresholds from validation predictions",
                                  description="Per-category label thresholds (best F1) from eval benet --split val.")
    calibrate.add_argument("predictions", type=Path, help="predictions.npz of 'eval benet --split val'")
    calibrate.add_argument("--out", type=Path, required=True, help="thresholds JSON (for ship --label-thresholds)")
    ceiling = models.add_parser("ceiling", help="distance of synthetic-test predictions to the benchmark's ceiling",
                                description="Cue-oracle ceiling of the synthetic scenes, and a model's mAP per cue "
                                            "kind and per person height (eval/ceiling.py).")
    ceiling.add_argument("predictions", type=Path, help="predictions.npz of 'eval benet' on a synthetic root")
    ceiling.add_argument("--data", type=Path, required=True, help="the synthetic EMOTIC root (synth emotic --out)")
    ceiling.add_argument("--split", choices=("val", "test"), default="test", help="split of the predictions")
    ceiling.add_argument("--input-size", type=int, default=256, help="the network's input size (lite: 256)")
    ceiling.add_argument("--json", type=Path, default=None, metavar="FILE", help="also write the report as JSON")
    add_deprecated_alias(ceiling, "--out", "--json", "json", type=Path)
    tracking = models.add_parser("tracking",
                                 help="IDF1, MOTA, ID switches, HOTA (TrackEval) and label flicker of a tracker's "
                                      "output",
                                 description="Compare a tracker's MOTChallenge output with a sequence's gt/gt.txt "
                                             "(TrackEval's HOTA, CLEAR and Identity metrics); with PRED.emotions.csv "
                                             "beside it, label flicker from raw and smoothed scores.")
    tracking.add_argument("--gt", type=Path, required=True, help="the sequence folder (gt/gt.txt, seqinfo.ini)")
    tracking.add_argument("--pred", type=Path, required=True,
                          help="tracker output in the MOTChallenge format (emotion-perception track --out)")
    tracking.add_argument("--json", type=Path, default=None, metavar="FILE", help="also write the figures as JSON")
    ablation = models.add_parser("ablation", help="table + figure of a BENet head ablation's evaluated runs",
                                 description="Summarise <heads>_s<seed> run folders (scripts/ablation_benet_heads.sh): "
                                             "mean and spread over seeds per head set.")
    from emotion_perception.eval.ablation import add_arguments as ablation_arguments

    ablation_arguments(ablation)


def _summary(model: str, metrics: dict) -> str:
    def pct(value) -> str:
        return "n/a" if value is None or value != value else f"{100 * value:.2f}"

    if model == "benet":
        parts = [f"GT-centre mAP BU {pct(metrics['gt_centre']['bu']['mAP'])}"]
        for name in ("pc", "fusion"):
            if name in metrics["gt_centre"]:
                parts.append(f"{name.upper() if name == 'pc' else name} {pct(metrics['gt_centre'][name]['mAP'])}")
        parts.append(f"detection AP {pct(metrics['detection']['AP'])} AP50 {pct(metrics['detection']['AP50'])}")
        parts.append(f"joint mAP {pct(metrics['joint']['mAP'])}")
        return ", ".join(parts)
    return f"accuracy {pct(metrics.get('accuracy'))}, mean per-class accuracy {pct(metrics.get('mean_class_accuracy'))}"


def main(args: argparse.Namespace) -> int:
    import sys

    from emotion_perception.cli_options import setup_command_logging

    setup_command_logging()

    if args.eval_command == "ablation":
        from emotion_perception.eval.ablation import run

        return run(args, sys.stdout)
    if args.eval_command == "ceiling":
        from emotion_perception.eval.ceiling import main_ceiling

        try:
            return main_ceiling(args.predictions, args.data, args.split, args.input_size, args.json)
        except (OSError, ValueError, KeyError) as err:
            print(f"emotion-perception eval ceiling: {err}", file=sys.stderr)
            return 2
    if args.eval_command == "tracking":
        from emotion_perception.eval.tracking import main_tracking

        try:
            return main_tracking(args.gt, args.pred, args.json)
        except (OSError, ValueError) as err:
            print(f"emotion-perception eval tracking: {err}", file=sys.stderr)
            return 2
    if args.eval_command == "calibrate":
        from emotion_perception.eval.calibration import main_calibrate

        try:
            return main_calibrate(args.predictions, args.out)
        except (OSError, ValueError) as err:
            print(f"emotion-perception eval calibrate: {err}", file=sys.stderr)
            return 2
    from emotion_perception.eval.deployed import Deployment
    from emotion_perception.nets.factory import CheckpointError

    deployment = Deployment(backend=args.backend, precision=args.precision, int8_target=args.int8_target,
                            threads=args.threads, cache_dir=args.cache_dir)
    problem = deployment.problem()
    if problem:  # before loading anything
        print(f"emotion-perception eval {args.eval_command}: {problem}", file=sys.stderr)
        return 2
    try:
        if args.eval_command == "benet":
            from emotion_perception.eval.benet import evaluate_benet

            metrics = evaluate_benet(
                Path(args.model), args.data, args.split, args.out, batch_size=args.batch_size, workers=args.workers,
                device=args.device, top_k=args.max_people, threshold=args.detection_threshold, flip_test=args.flip_test,
                num_examples=args.examples, max_images=args.max_images, deployment=deployment,
            )
        else:
            from emotion_perception.eval.cahfw import evaluate_cahfw

            metrics = evaluate_cahfw(Path(args.model), args.data, args.split, args.out, batch_size=args.batch_size,
                                     workers=args.workers, device=args.device, deployment=deployment)
    # ImportError: a backend whose runtime is not installed (onnxruntime, tensorrt).
    except (CheckpointError, FileNotFoundError, ValueError, ImportError) as err:
        print(f"emotion-perception eval {args.eval_command}: {err}", file=sys.stderr)
        return 2
    ran = metrics["deployment"]
    target = f", QDQ for {ran['int8_target']}" if ran.get("int8_target") else ""
    print(f"{_summary(args.eval_command, metrics)} ({ran['backend']} {ran['precision']}{target} on {ran['device']}, "
          f"{metrics['timing']['total_s']:.0f} s); written to {args.out}")
    return 0
