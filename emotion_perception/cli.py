"""`emotion-perception`: one command line for every layer of the project.

Each subcommand lives in the layer that implements it, in a module exposing
``add_arguments(parser)`` (argparse only, cheap to import) and ``main(args) -> int``
(which imports torch, rclpy, ... only when the command runs). ``emotion-perception --help``
therefore stays fast and works without ROS. Options shared between commands come from
``cli_options`` (one name per concept; README, "Command-line vocabulary").
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from emotion_perception.cli_options import load_command_module

# name -> (module, one-line help). Order is the order shown in --help.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "synth": ("emotion_perception.data.synth.cli", "generate synthetic scenes in EMOTIC/HECO/CAER-S formats"),
    "train": ("emotion_perception.train.cli", "train BENet or CAHFW-Net"),
    "eval": ("emotion_perception.eval.cli", "evaluate a checkpoint with the papers' metrics"),
    "ship": ("emotion_perception.train.ship_cli", "make a shippable model file from a training checkpoint"),
    "export": ("emotion_perception.export.cli", "export a checkpoint to ONNX or a TensorRT engine"),
    "predict": ("emotion_perception.runtime.cli", "run a model on images and print/draw people and emotions"),
    "track": ("emotion_perception.runtime.track_cli",
              "run a model and the people tracker over a sequence; MOTChallenge output + per-track emotions"),
    "bench": ("emotion_perception.bench.cli",
              "benchmark models (latency, throughput) and nodes (rosbag replay); build the recordings"),
    "models": ("emotion_perception.export.external_models",
               "obtain the pinned third-party models (MTCNN face detector, face-expression model)"),
    "model-info": ("emotion_perception.nets.cli", "parameters, GMACs and tensor shapes of a model preset"),
    "demo": ("emotion_perception.demo", "the README's main job: run the BENet node on the demo recording"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="emotion-perception",
        description="Real-time, context-aware emotion recognition for robots (BENet, CAHFW-Net).",
    )
    from emotion_perception import __version__

    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        module = load_command_module(f"emotion-perception {name}", module_name)
        sp = sub.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(sp)
        sp.set_defaults(_main=module.main)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return int(args._main(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
