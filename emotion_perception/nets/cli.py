"""`emotion-perception model-info --preset ARCH[:PRESET]`: parameters, GMACs and tensor shapes of a model preset.

Counts come from one forward pass on the ``meta`` device (shapes only, nothing computed), so
even the paper-size BENet is profiled instantly on a CPU-only machine.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import cast

from emotion_perception.cli_options import PRESET_HELP, add_batch_size, add_deprecated_alias, parse_preset


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", default="benet", metavar="ARCH[:PRESET]",
                        help=f"{PRESET_HELP}; a bare PRESET is one of benet's (default: benet, its default preset)")
    # The old "--model NAME --preset PRESET" spelling: --model now names a model file everywhere.
    add_deprecated_alias(parser, "--model", "--preset ARCH[:PRESET]", "legacy_arch")
    parser.add_argument("--input-size", nargs=2, type=int, metavar=("H", "W"), default=None,
                        help="input height and width (default: the preset's input size)")
    add_batch_size(parser, 1, "batch size of the profiled forward")
    parser.add_argument("--json", nargs="?", const="-", default=None, metavar="FILE",
                        help="write the report as one JSON object to FILE (no FILE: print it instead of the table)")


def resolve_preset(text: str, legacy_arch: str | None = None) -> tuple[str, str | None]:
    """(registry name, preset or None for the default) of ``--preset``, see cli_options.parse_preset.

    With the deprecated ``--model NAME``, ``--preset`` is a bare preset of NAME as it used to be.
    """
    from emotion_perception.nets.factory import model_names

    if legacy_arch is not None:
        return legacy_arch, None if text == "benet" else text
    arch, preset = parse_preset(text, model_names(), bare_preset_of="benet")
    return arch, preset


def model_info(model_name: str, preset: str | None, input_size: tuple[int, int] | None = None, batch: int = 1) -> dict:
    """The report printed by the command, as a dict."""
    import torch

    from emotion_perception.nets.factory import create_model, get_entry
    from emotion_perception.nets.profile import profile_model

    entry = get_entry(model_name)
    preset_name = entry.default_preset if preset is None else preset
    with torch.device("meta"):
        model = create_model(model_name, preset_name)
    model.eval()
    # Every registered model has example_inputs (nets.factory's contract); nn.Module's type cannot say so.
    example_inputs = cast("Callable[..., tuple[torch.Tensor, ...]]", model.example_inputs)
    inputs = example_inputs(batch, None if input_size is None else tuple(input_size))
    profile = profile_model(model, inputs)
    return {
        "model": model_name,
        "preset": preset_name,
        "params": profile.params,
        "inference_params": profile.inference_params,
        "gmacs": round(profile.gmacs, 4),
        "macs": profile.macs,
        "macs_by_type": profile.macs_by_type,
        "batch": batch,
        "input_shapes": [list(shape) for shape in profile.input_shapes],
        "output_shapes": {name: list(shape) for name, shape in profile.output_shapes.items()},
    }


def format_table(info: dict) -> str:
    """A readable rendering of :func:`model_info`'s dict."""
    rows = [
        ("model", f"{info['model']} ({info['preset']})"),
        ("parameters", f"{info['params']:,} ({info['params'] / 1e6:.2f} M)"),
        ("inference parameters", f"{info['inference_params']:,} ({info['inference_params'] / 1e6:.2f} M)"),
        ("GMACs", f"{info['gmacs']:.3f} (batch {info['batch']})"),
    ]
    rows += [(f"input {i}", "x".join(map(str, shape))) for i, shape in enumerate(info["input_shapes"])]
    rows += [(f"output {name}", "x".join(map(str, shape))) for name, shape in info["output_shapes"].items()]
    width = max(len(label) for label, _ in rows)
    return "\n".join(f"{label:<{width}}  {value}" for label, value in rows)


def main(args: argparse.Namespace) -> int:
    if args.batch_size < 1:
        print("model-info: --batch-size must be positive", file=sys.stderr)
        return 2
    try:
        model_name, preset = resolve_preset(args.preset, getattr(args, "legacy_arch", None))
        info = model_info(model_name, preset, args.input_size, args.batch_size)
    except ValueError as err:  # unknown model/preset, input size the model cannot take
        print(f"model-info: {err}", file=sys.stderr)
        return 2
    if args.json is None:
        print(format_table(info))
    elif args.json == "-":
        print(json.dumps(info, indent=2))
    else:
        from emotion_perception.errors import output_file_problem

        target = Path(args.json)
        problem = output_file_problem("--json", target)
        if problem:
            print(f"model-info: {problem}", file=sys.stderr)
            return 2
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
        print(format_table(info))
    return 0
