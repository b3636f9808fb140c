"""The command line's vocabulary: one name per concept, one meaning per name, one parser each.

Every subcommand module adds the options it shares with others through these helpers, so
``--model`` is a model file, ``--preset`` an architecture, ``--detection-threshold`` a
detection score and ``--device`` accepts ``cuda:N`` in every command (README, "Command-line
vocabulary"). Old spellings stay as hidden aliases that warn on stderr (:func:`add_deprecated_alias`).

argparse only: every layer's ``cli`` module imports this leaf module, and ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import re
import sys
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any, NamedTuple

DEVICE_HELP = "auto (a CUDA GPU when there is one, else the CPU), cpu, cuda or cuda:N"
_DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")

# ``--model``: the one file option for a model a command reads.
MODEL_FILE_HELP = ("model file: PyTorch checkpoint (.pt, a training run's or a shipped one), ONNX export "
                   "or TensorRT engine")
# ``--preset``: the one option naming an architecture of the model registry (nets/factory.py).
PRESET_HELP = ("architecture preset ARCH:PRESET from the model registry (benet:paper, benet:lite, cahfw:small); "
               "ARCH alone: its default preset")


def parse_device(text: str) -> str:
    """argparse ``type`` of every ``--device``: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.

    Only the spelling is checked here; whether the GPU exists is the command's to say.
    """
    if not _DEVICE.fullmatch(text):
        raise argparse.ArgumentTypeError(f"expected {DEVICE_HELP}, got {text!r}")
    return text


def add_device(parser: argparse.ArgumentParser, default: str = "auto", help_text: str = "") -> None:
    """``--device`` (see :func:`parse_device`)."""
    parser.add_argument("--device", type=parse_device, default=default, metavar="DEVICE",
                        help=f"{help_text + '; ' if help_text else ''}{DEVICE_HELP} (default: {default})")


class PresetName(NamedTuple):
    """An architecture named on the command line: registry name and preset (None: its default)."""

    arch: str
    preset: str | None


def parse_preset(text: str, model_names: Sequence[str], bare_preset_of: str | None = None) -> PresetName:
    """``ARCH:PRESET``, ``ARCH`` (its default preset) or a bare ``PRESET`` of ``bare_preset_of``
    (the architecture a command names already, or its default one).

    ``model_names`` are the registry's names (``nets.factory.model_names()``); whether the preset
    exists is the registry's to say when the model is built.
    """
    arch, colon, preset = text.partition(":")
    if colon:
        if not arch or not preset:
            raise ValueError(f"--preset {text!r}: expected ARCH:PRESET, e.g. benet:lite")
        return PresetName(arch, preset)
    if text in model_names:
        return PresetName(text, None)
    if bare_preset_of is not None:
        return PresetName(bare_preset_of, text)
    raise ValueError(f"--preset {text!r}: unknown architecture; expected ARCH or ARCH:PRESET with ARCH among "
                     f"{', '.join(model_names)}")


class _DeprecatedAlias(argparse.Action):
    """An old option spelling: stores into the new option's ``dest`` and says it is deprecated."""

    def __init__(self, option_strings: Sequence[str], dest: str, replacement: str = "", **kwargs: Any) -> None:
        self.replacement = replacement
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        print(f"{parser.prog}: warning: {option_string} is deprecated, use {self.replacement}", file=sys.stderr)
        setattr(namespace, self.dest, values)


def add_deprecated_alias(parser: argparse._ActionsContainer, old: str, replacement: str,
                         dest: str, type: Callable[[str], Any] | None = None) -> None:
    """Accept ``old`` as a hidden spelling of ``replacement`` (same ``dest``), warning on stderr.

    The alias is left out of ``--help`` and has no default of its own, so the new option's
    default stands when neither is given.
    """
    converter: dict[str, Any] = {} if type is None else {"type": type}
    parser.add_argument(old, dest=dest, action=_DeprecatedAlias, replacement=replacement,
                        default=argparse.SUPPRESS, help=argparse.SUPPRESS, **converter)


def add_option(parser: argparse.ArgumentParser, name: str, dest: str, old_names: Sequence[str] = (),
               required: bool = False, type: Callable[[str], Any] | None = None, **kwargs: Any) -> None:
    """``parser.add_argument(name, ...)`` plus deprecated ``old_names``.

    A required option with old names becomes a required group of which exactly one spelling is
    given: argparse counts a required option as missing when only an alias of it was used.
    """
    container: Any = parser
    if required and old_names:
        container = parser.add_mutually_exclusive_group(required=True)
    if type is not None:
        kwargs["type"] = type
    container.add_argument(name, dest=dest, required=required and not old_names, **kwargs)
    for old in old_names:
        add_deprecated_alias(container, old, name, dest, type=type)


def add_model_file(parser: argparse.ArgumentParser, help_text: str = MODEL_FILE_HELP, required: bool = True,
                   checkpoint_alias: bool = False, default: str | None = None) -> None:
    """``--model FILE`` (dest ``model``); ``checkpoint_alias`` keeps the old ``--checkpoint``."""
    add_option(parser, "--model", "model", ("--checkpoint",) if checkpoint_alias else (), required=required,
               default=default, metavar="FILE", help=help_text)


def add_detection_threshold(parser: argparse.ArgumentParser, default: float | None, help_text: str,
                            old_names: Sequence[str] = ("--threshold",)) -> None:
    """``--detection-threshold`` (dest ``detection_threshold``): the minimum score of a person or
    face detection, the node parameter ``detection_threshold`` of the same name."""
    shown = "" if default is None else f" (default: {default:g})"
    add_option(parser, "--detection-threshold", "detection_threshold", old_names, type=float, default=default,
               metavar="SCORE", help=f"{help_text}{shown}")


def add_max_people(parser: argparse.ArgumentParser, default: int, help_text: str = "at most this many people per image",
                   old_names: Sequence[str] = ()) -> None:
    """``--max-people`` (dest ``max_people``), the node parameter ``max_people``."""
    add_option(parser, "--max-people", "max_people", old_names, type=int, default=default, metavar="N",
               help=f"{help_text} (default: {default})")


def add_batch_size(parser: argparse.ArgumentParser, default: int | None, help_text: str) -> None:
    """``--batch-size`` (dest ``batch_size``); the old ``--batch`` is a deprecated alias."""
    shown = "" if default is None else f" (default: {default})"
    add_option(parser, "--batch-size", "batch_size", ("--batch",), type=int, default=default, metavar="N",
               help=f"{help_text}{shown}")


def load_command_module(command: str, module_name: str) -> ModuleType:
    """Import the module of ``command`` (``add_arguments`` and ``main``); a missing or broken one
    is an ImportError naming the command.

    Never skipped: a skipped module would make its command vanish from ``--help`` with no word
    of why (a typo in a command table, or an import error inside the module).
    """
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ImportError(f"{command}: cannot import its module {module_name} ({err})") from err
    for function in ("add_arguments", "main"):
        if not callable(getattr(module, function, None)):
            raise ImportError(f"{command}: {module_name} has no {function}()")
    return module


def add_graph_options(parser: argparse.ArgumentParser) -> None:
    """``--cuda-graph`` and ``--compile``: the GPU graph options of a predictor (the nodes'
    ``cuda_graph`` and ``torch_compile`` parameters)."""
    parser.add_argument("--cuda-graph", action="store_true",
                        help="GPU: capture the network once per input shape as a CUDA graph and replay it "
                             "(torch and tensorrt backends)")
    parser.add_argument("--compile", action="store_true",
                        help="torch backend: torch.compile the network (the first calls compile)")


def setup_command_logging() -> None:
    """The commands' logging: our own progress at INFO, third-party libraries (ONNX Runtime's
    quantiser, onnxslim) only warnings, every line as ``LEVEL logger: message``."""
    import logging

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("emotion_perception").setLevel(logging.INFO)
