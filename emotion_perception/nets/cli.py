"""`emotion-perception model-info`: parameters, GMACs and tensor shapes of a model preset.

Counts come from one forward pass on the ``meta`` device (shapes only, nothing computed), so
even the paper-size BENet is profiled instantly on a CPU-only machine.
"""

from __future__ import annotations

import argparse
import json
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="benet", help="registered model name (benet, cahfw, ...)")
    parser.add_argument("--preset", default=None, help="preset name (default: the model's default preset)")
    parser.add_argument("--input-size", nargs=2, type=int, metavar=("H", "W"), default=None,
                        help="input height and width (default: the preset's input size)")
    parser.add_argument("--batch", type=int, default=1, help="batch size of the profiled forward")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")


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
    inputs = model.example_inputs(batch, None if input_size is None else tuple(input_size))
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
    if args.batch < 1:
        print("model-info: --batch must be positive", file=sys.stderr)
        return 2
    try:
        info = model_info(args.model, args.preset, args.input_size, args.batch)
    except ValueError as err:  # unknown model/preset, input size the model cannot take
        print(f"model-info: {err}", file=sys.stderr)
        return 2
    print(json.dumps(info, indent=2) if args.json else format_table(info))
    return 0
