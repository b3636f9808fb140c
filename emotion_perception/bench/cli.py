"""`emotion-perception bench`: the benchmarks (``bench model``, ``bench bag``, ``bench faces``,
``bench gpu-check``) and the rosbag2 recordings that ``bench bag`` replays (``bench make-bag``).

Each bench subcommand lives in a module exposing ``add_arguments(parser)`` (argparse only,
cheap to import) and ``main(args) -> int``, like the top-level commands; add a row to
:data:`BENCH_COMMANDS` to add one. A row whose module cannot be imported is an error, never a
command that silently disappears.
"""

from __future__ import annotations

import argparse

from emotion_perception.cli_options import load_command_module

# name -> (module, one-line help). Order is the order shown in --help.
BENCH_COMMANDS: dict[str, tuple[str, str]] = {
    "model": ("emotion_perception.bench.model_bench",
              "latency/throughput of a model per backend, precision, input size, batch and number of people"),
    "make-bag": ("emotion_perception.bench.bag_cli",
                 "write images, a sequence or synthetic scenes as a rosbag2 recording (what 'bench bag' replays)"),
    "bag": ("emotion_perception.bench.bag_bench",
            "replay rosbags to the real nodes over DDS: throughput, end-to-end latency percentiles, drops"),
    "faces": ("emotion_perception.bench.face_detectors",
              "face detectors (MTCNN, dlib HOG/CNN) on real photos: recall, false faces, CPU time per image"),
    "gpu-check": ("emotion_perception.bench.gpu_check",
                  "GPU check: device, auto's choice, fp32/fp16/CUDA-graph latency, 20/1 people ratio, CPU agreement"),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="bench_command", metavar="BENCHMARK", required=True)
    for name, (module_name, help_text) in BENCH_COMMANDS.items():
        module = load_command_module(f"emotion-perception bench {name}", module_name)
        command = sub.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(command)
        command.set_defaults(_bench_main=module.main)


def main(args: argparse.Namespace) -> int:
    return int(args._bench_main(args) or 0)
