"""``emotion-perception train {benet,cahfw}``: read a recipe YAML, apply command-line overrides, train.

Ablations are overrides of one recipe, not copies of it: ``--heads`` (BENet) and ``--variant``
(CAHFW-Net), like ``--preset``, ``--epochs`` or ``--seed``. The run folder is derived from the
recipe's name (:func:`default_run_dir`); ``--out`` overrides it.

Under ``torchrun --nproc_per_node N -m emotion_perception.cli train ...`` every process runs this
same command and joins the process group (train/distributed.py). Only argparse at module level.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from emotion_perception.cli_options import add_batch_size, add_deprecated_alias, add_device, parse_preset

DEFAULT_RECIPES = {"benet": Path("config/train_benet_paper_512_adam_lr1e-3.yaml"),
                   "cahfw": Path("config/train_cahfw_paper_224_sgd_lr1e-2_cos_flood0.05.yaml")}
RUNS = Path("runs")
# Command-line overrides that change what is trained, in the order they are named in the run
# folder: runs/<recipe>+heads_bu_det+seed_1. Other overrides (epochs, workers, data, ...) keep
# the recipe's folder; give --out to keep such runs apart.
NAMED_OVERRIDES = ("preset", "heads", "variant", "seed")


def _common_options(parser: argparse.ArgumentParser, model: str) -> None:
    parser.add_argument("--config", type=Path,
                        help=f"training recipe YAML (default: {DEFAULT_RECIPES[model]}, from the working "
                             "directory or the installed package)")
    parser.add_argument("--preset", type=lambda text: preset_name(text, model),
                        help=f"{model} architecture preset, overrides the recipe's (e.g. "
                             f"{'lite' if model == 'benet' else 'small'}, or {model}:PRESET)")
    parser.add_argument("--epochs", type=int, help="override the recipe's epochs")
    add_batch_size(parser, None, "override the recipe's batch size (per process)")
    parser.add_argument("--out", type=Path,
                        help="run folder (default: runs/<recipe name without train_>, + '+<field>_<value>' for "
                             "each of --preset, --heads, --variant, --seed given)")
    parser.add_argument("--resume", type=Path, help="continue from a checkpoint (a run's last.pt)")
    parser.add_argument("--max-minutes", type=float,
                        help="stop after this much wall time and write final.pt")
    add_device(parser, help_text="training device (under torchrun: auto or cuda, one GPU per process)")
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
    benet.add_argument("--heads", help="trained heads, overrides the recipe's: the paper's head ablation is "
                                       "bu | bu,det | bu,det,pc | bu,det,pc,bg (+ ,vad); bu_det ... also accepted")
    benet.add_argument("--init", type=Path,
                       help="start the backbone from a pretrained HRNet-W32 checkpoint (HigherHRNet "
                            "pose_higher_hrnet_w32_512.pth, HRNet ImageNet, timm hrnet_w32); overrides "
                            "the recipe's init; ignored with --resume")
    cahfw = models.add_parser("cahfw", help="CAHFW-Net on CAER-S, the paper's recipe",
                              description="Train CAHFW-Net (recipe fields: emotion_perception/train/cahfw.py).")
    _common_options(cahfw, "cahfw")
    cahfw.add_argument("--data", dest="data_root", type=Path,
                       help="folder holding CAER-S (overrides the recipe's data_root)")
    add_deprecated_alias(cahfw, "--data-root", "--data", "data_root", type=Path)
    cahfw.add_argument("--variant", help="network variant, overrides the recipe's: the paper's ablation is "
                                         "SE+AF | SE+CA+AA | SE+CA+ER+AA (full); se_af ... also accepted")
    cahfw.add_argument("--init", type=Path, help=argparse.SUPPRESS)  # BENet only: answered with a clear error


def default_recipe(model: str) -> Path:
    """The shipped recipe of ``model``: ./config/... in a checkout, else the installed copy."""
    relative = DEFAULT_RECIPES[model]
    if relative.is_file():
        return relative
    from emotion_perception.resources import find_resource

    return find_resource(relative)


def variant_name(text: str) -> str:
    """``se_ca_aa`` / ``SE+CA+AA`` -> ``SE+CA+AA`` (the recipe's spelling)."""
    return "+".join(part.upper() for part in re.split(r"[+_]", text.strip()) if part)


def preset_name(text: str, model: str) -> str:
    """argparse ``type`` of ``train MODEL --preset``: ``lite`` or ``benet:lite`` -> ``lite``."""
    try:
        name = parse_preset(text, (model,), bare_preset_of=model)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    if name.arch != model or name.preset is None:
        raise argparse.ArgumentTypeError(f"name a preset of {model} (e.g. tiny or {model}:tiny), got {text!r}")
    return name.preset


def _folder_token(value: object) -> str:
    """A value as a file-name token: bu,det -> bu_det, SE+CA+AA -> se_ca_aa."""
    return "_".join(part for part in re.split(r"[^0-9A-Za-z.-]+", str(value).lower()) if part)


def default_run_dir(config: Path, overrides: dict[str, object]) -> Path:
    """``runs/<recipe stem without train_>``, plus ``+<field>_<value>`` per override in
    :data:`NAMED_OVERRIDES` (so an ablation run never lands in its base recipe's folder)."""
    name = config.stem.removeprefix("train_")
    for field in NAMED_OVERRIDES:
        if overrides.get(field) is not None:
            name += f"+{field}_{_folder_token(overrides[field])}"
    return RUNS / name


def recipe_with_overrides(args: argparse.Namespace) -> dict:
    """The recipe mapping of ``args.config`` with the command line's overrides applied.

    ``output_dir`` is the recipe's own when it sets one, else :func:`default_run_dir`; ``--out``
    (read by the trainer) still wins over both.
    """
    from emotion_perception.train.recipes import load_recipe

    if args.config is None:
        args.config = default_recipe(args.model)
    values = load_recipe(args.config)
    overrides: dict[str, object] = {
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "workers": args.workers,
        "max_steps": args.max_steps,
        "seed": args.seed,
        "preset": args.preset,
    }
    if args.model == "benet":
        overrides.update({
            "data_root": str(args.data) if args.data else None,
            "heco_root": str(args.heco) if args.heco else None,
            "heads": args.heads,
            "init": str(args.init) if getattr(args, "init", None) else None,
        })
    else:
        overrides["data_root"] = str(args.data_root) if getattr(args, "data_root", None) else None
        overrides["variant"] = variant_name(args.variant) if args.variant else None
    values.update({key: value for key, value in overrides.items() if value is not None})
    values.setdefault("output_dir", str(default_run_dir(Path(args.config), overrides)))
    return values


def main(args: argparse.Namespace) -> int:
    import os
    import sys

    from emotion_perception.errors import FieldError
    from emotion_perception.train.loop import NonFiniteLossError

    if args.model != "benet" and getattr(args, "init", None):
        print(f"emotion-perception train {args.model}: --init applies to BENet (its HRNet backbone)", file=sys.stderr)
        return 2
    if ":" in args.device and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        print(f"emotion-perception train {args.model}: --device {args.device}: under torchrun each process takes "
              "its local rank's GPU; give --device cuda (or auto)", file=sys.stderr)
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
