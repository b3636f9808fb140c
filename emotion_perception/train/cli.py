"""``emotion-perception train {benet,cahfw}``: read a recipe YAML, apply command-line overrides, train.

Under ``torchrun --nproc_per_node N -m emotion_perception.cli train ...`` every process runs this
same command and joins the process group (train/distributed.py). Only argparse at module level.
"""

from __future__ import annotations

import argparse
from pathlib import Path

DEFAULT_RECIPES = {"benet": Path("config/train_benet.yaml"), "cahfw": Path("config/train_cahfw.yaml")}


def _common_options(parser: argparse.ArgumentParser, model: str) -> None:
    parser.add_argument("--config", type=Path,
                        help=f"training recipe YAML (default: {DEFAULT_RECIPES[model]}, from the working "
                             "directory or the installed package)")
    parser.add_argument("--epochs", type=int, help="override the recipe's epochs")
    parser.add_argument("--batch-size", type=int, help="override the recipe's batch size (per process)")
    parser.add_argument("--out", type=Path, help="run folder (default: the recipe's output_dir)")
    parser.add_argument("--resume", type=Path, help="continue from a checkpoint (a run's last.pt)")
    parser.add_argument("--max-minutes", type=float,
                        help="stop after this much wall time and write final.pt")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="training device (torchrun: one GPU per process)")
    parser.add_argument("--workers", type=int, help="override the recipe's DataLoader workers per process")
    parser.add_argument("--max-steps", type=int, help="stop after this many optimisation steps (smoke runs)")
    parser.add_argument("--seed", type=int,
                        help="override the recipe's seed (weights, data order, augmentation): repeat runs")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    models = parser.add_subparsers(dest="model", metavar="MODEL", required=True)
    benet = models.add_parser("benet", help="BENet on EMOTIC (+ HECO), the paper's multitask recipe",
                              description="Train BENet (recipe fields: emotion_perception/train/benet.py).")
    _common_options(benet, "benet")
    benet.add_argument("--data", type=Path, help="EMOTIC root (overrides the recipe's data_root)")
    benet.add_argument("--heco", type=Path, help="HECO root merged into training (overrides heco_root)")
    benet.add_argument("--heads", help="trained heads, e.g. bu | bu,det | bu,det,pc | bu,det,pc,bg (+ ,vad)")
    benet.add_argument("--preset", help="BENet preset (paper, lite, tiny)")
    benet.add_argument("--init", type=Path,
                       help="start the backbone from a pretrained HRNet-W32 checkpoint (HigherHRNet "
                            "pose_higher_hrnet_w32_512.pth, HRNet ImageNet, timm hrnet_w32); overrides "
                            "the recipe's init; ignored with --resume")
    cahfw = models.add_parser("cahfw", help="CAHFW-Net on CAER-S, the paper's recipe",
                              description="Train CAHFW-Net (recipe fields: emotion_perception/train/cahfw.py).")
    _common_options(cahfw, "cahfw")
    cahfw.add_argument("--data", "--data-root", dest="data_root", type=Path,
                       help="folder holding CAER-S (overrides the recipe's data_root)")
    cahfw.add_argument("--init", type=Path, help=argparse.SUPPRESS)  # BENet only: answered with a clear error


def default_recipe(model: str) -> Path:
    """The shipped recipe of ``model``: ./config/... in a checkout, else the installed copy."""
    relative = DEFAULT_RECIPES[model]
    if relative.is_file():
        return relative
    from emotion_perception.resources import find_resource

    return find_resource(relative)


def recipe_with_overrides(args: argparse.Namespace) -> dict:
    """The recipe mapping of ``args.config`` with the command line's overrides applied."""
    from emotion_perception.train.recipes import load_recipe

    if args.config is None:
        args.config = default_recipe(args.model)
    values = load_recipe(args.config)
    overrides = {
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "workers": args.workers,
        "max_steps": args.max_steps,
        "seed": args.seed,
    }
    if args.model == "benet":
        overrides.update({
            "data_root": str(args.data) if args.data else None,
            "heco_root": str(args.heco) if args.heco else None,
            "heads": args.heads,
            "preset": args.preset,
            "init": str(args.init) if getattr(args, "init", None) else None,
        })
    else:
        overrides["data_root"] = str(args.data_root) if getattr(args, "data_root", None) else None
    values.update({key: value for key, value in overrides.items() if value is not None})
    return values


def main(args: argparse.Namespace) -> int:
    import sys

    from emotion_perception.errors import FieldError
    from emotion_perception.train.loop import NonFiniteLossError

    if args.model != "benet" and getattr(args, "init", None):
        print(f"emotion-perception train {args.model}: --init applies to BENet (its HRNet backbone)", file=sys.stderr)
        return 2
    try:
        values = recipe_with_overrides(args)
        if args.model == "benet":
            from emotion_perception.train.benet import train_benet

            best = train_benet(values, args)
        else:
            from emotion_perception.train.cahfw import train_cahfw

            best = train_cahfw(values, args)
    except (FieldError, FileNotFoundError, NonFiniteLossError) as err:
        # One clear line instead of a traceback: these are the user's to fix (recipe, annotations,
        # checkpoint to resume, paths, lr). FieldError: ConfigError, AnnotationError, CheckpointError.
        print(f"emotion-perception train {args.model}: {err}", file=sys.stderr)
        return 2
    print(f"best checkpoint: {best}")
    return 0
