"""The model card: what a deployed model file is, stored inside the file (and beside it).

Every exported ONNX model carries its card as JSON in the ONNX ``metadata_props`` (key
:data:`CARD_KEY`, plus a few flat keys for viewers such as Netron), and a copy is written to
``<file>.json``. TensorRT engines cannot hold metadata, so their card lives only in
``<engine>.json`` (with a ``tensorrt`` section: version, GPU, precision, profile, source ONNX).

The predictor reads the model type, categories, input normalisation and output layout from the
card, never from the file name.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from emotion_perception.data.geometry import IMAGENET_MEAN, IMAGENET_STD

CARD_KEY = "emotion_perception.model_card"
CARD_FORMAT_VERSION = 1
MODEL_NAMES = ("benet", "cahfw", "expression")
PRECISIONS = ("fp32", "fp16", "int8")


class ModelCardError(ValueError):
    """A model card that is missing or does not describe a usable model; names the file."""

    def __init__(self, file: str | Path, problem: str) -> None:
        super().__init__(f"{file}: model card: {problem}")
        self.file = str(file)
        self.problem = problem


@dataclass(frozen=True)
class InputNormalisation:
    """How an RGB uint8 image becomes the network input: ``(pixel / 255 - mean) / std``, NCHW."""

    mean: tuple[float, float, float] = IMAGENET_MEAN  # RGB order
    std: tuple[float, float, float] = IMAGENET_STD
    colour_order: str = "RGB"
    layout: str = "NCHW"
    dtype: str = "float32"
    pixel_scale: float = 1.0 / 255.0


@dataclass(frozen=True)
class ModelCard:
    """Self-description of an exported model (see module docstring)."""

    model_name: str  # "benet" | "cahfw" | "expression"
    config: dict[str, Any]  # dataclasses.asdict of the model config
    categories: tuple[str, ...]  # output channel order of the emotion scores
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    input_size: tuple[int, int]  # (H, W) the model was exported / profiled at
    stride: int  # input H and W must be multiples of it (BENet 32; CAHFW: fixed size)
    dynamic_size: bool  # whether H and W may differ from input_size
    has_vad: bool
    with_decode: bool  # BENet only: peak extraction and boxes inside the graph
    precision: str = "fp32"  # weights/activations of the graph: fp32 | fp16 | int8
    preset: str | None = None  # registry preset the config equals, None for a custom config
    decode: dict[str, Any] | None = None  # DecodeConfig fields when with_decode
    normalisation: InputNormalisation = field(default_factory=InputNormalisation)
    opset: int | None = None
    source: dict[str, Any] = field(default_factory=dict)  # checkpoint path/hash, versions
    tensorrt: dict[str, Any] | None = None  # engine cards only
    # What the weights learned from: "synthetic" (this project's generator), "real: <dataset or
    # statement>", or "unknown" (a checkpoint that does not say). Nodes report it.
    trained_on: str = "unknown"
    # Per-category label thresholds calibrated on validation data (best F1), category -> threshold;
    # None: not calibrated (the node's global emotion_threshold applies).
    label_thresholds: dict[str, float] | None = None
    format_version: int = CARD_FORMAT_VERSION

    def __post_init__(self) -> None:
        # A card that loads but describes no usable model makes a node that fails every frame
        # (or finds nobody, forever) while reporting OK: refuse it here, naming the field.
        problem = card_problem(self)
        if problem:
            raise ValueError(problem)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    def replace(self, **changes: Any) -> ModelCard:
        return dataclasses.replace(self, **changes)


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _finite_numbers(values: Any, count: int) -> bool:
    return (isinstance(values, (tuple, list)) and len(values) == count
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values))


def _names(values: Any) -> bool:
    return (isinstance(values, (tuple, list)) and len(values) > 0 and len(set(values)) == len(values)
            and all(isinstance(v, str) and v for v in values))


def card_problem(card: ModelCard) -> str | None:
    """Why ``card`` cannot describe a usable model (``field 'stride': ...``), or None."""
    def field_problem(name: str, text: str) -> str:
        return f"field '{name}': {text}"

    if card.model_name not in MODEL_NAMES:
        return field_problem("model_name", f"{card.model_name!r} is not one of {', '.join(MODEL_NAMES)}")
    if card.precision not in PRECISIONS:
        return field_problem("precision", f"{card.precision!r} is not one of {', '.join(PRECISIONS)}")
    if card.with_decode and card.model_name != "benet":
        return field_problem("with_decode", "only BENet has a decoding stage")
    if not _positive_int(card.stride):
        return field_problem("stride", f"must be a positive integer, got {card.stride!r}")
    if card.model_name == "benet" and card.stride % 32:
        return field_problem("stride", f"BENet's backbone needs a multiple of 32, got {card.stride}")
    size = card.input_size
    if not (isinstance(size, (tuple, list)) and len(size) == 2 and all(_positive_int(v) for v in size)):
        return field_problem("input_size", f"must be two positive integers (H, W), got {size!r}")
    if card.dynamic_size and (size[0] % card.stride or size[1] % card.stride):
        return field_problem("input_size", f"{tuple(size)} is not a multiple of the stride {card.stride}")
    for name in ("categories", "input_names", "output_names"):
        if not _names(getattr(card, name)):
            return field_problem(name, f"must be a non-empty list of distinct names, got {getattr(card, name)!r}")
    norm = card.normalisation
    if not _finite_numbers(norm.mean, 3):
        return field_problem("normalisation.mean", f"must be 3 finite numbers, got {norm.mean!r}")
    if not _finite_numbers(norm.std, 3) or any(v == 0 for v in norm.std):
        return field_problem("normalisation.std", f"must be 3 finite non-zero numbers, got {norm.std!r}")
    if not _finite_numbers((norm.pixel_scale,), 1) or norm.pixel_scale <= 0:
        return field_problem("normalisation.pixel_scale", f"must be a positive number, got {norm.pixel_scale!r}")
    # Preprocessing writes RGB, NCHW, float32 and nothing else.
    for name, value, supported in (("colour_order", norm.colour_order, "RGB"), ("layout", norm.layout, "NCHW"),
                                   ("dtype", norm.dtype, "float32")):
        if value != supported:
            return field_problem(f"normalisation.{name}", f"only {supported} is supported, got {value!r}")
    if card.with_decode and not (isinstance(card.decode, Mapping) and _positive_int(card.decode.get("top_k"))):
        return field_problem("decode", f"with_decode needs a positive integer top_k, got {card.decode!r}")
    if card.label_thresholds is not None:
        thresholds = card.label_thresholds
        if not isinstance(thresholds, Mapping) or set(thresholds) - set(card.categories):
            return field_problem("label_thresholds", "must map category names of the card to thresholds")
        if not _finite_numbers(list(thresholds.values()), len(thresholds)) or \
                any(not 0.0 <= v <= 1.0 for v in thresholds.values()):
            return field_problem("label_thresholds", "thresholds must be numbers in [0, 1]")
    return None


def check_card_against_graph(card: ModelCard, graph_inputs: Mapping[str, Sequence[Any]],
                             graph_outputs: Mapping[str, Sequence[Any]], source: str | Path) -> None:
    """ModelCardError naming the field when the card does not describe the graph it came with.

    ``graph_inputs`` / ``graph_outputs``: name -> shape as the runtime reports it (ints, or
    strings / None for dynamic dimensions).
    """
    def refuse(name: str, text: str) -> None:
        raise ModelCardError(source, f"field '{name}': {text}")

    for name, card_names, graph in (("input_names", card.input_names, graph_inputs),
                                    ("output_names", card.output_names, graph_outputs)):
        if set(card_names) != set(graph):
            refuse(name, f"{sorted(card_names)} do not match the graph's {sorted(graph)}")
    # Where the category axis is in each output that has one.
    if card.model_name in ("cahfw", "expression"):
        category_axes = {card.output_names[0]: 1}
    elif card.with_decode:
        category_axes = {"emotions": 2}
    else:
        category_axes = {name: 1 for name in card.output_names if name.startswith("emotions_")}
        if card.has_vad != any(name.startswith("vad_") for name in card.output_names):
            refuse("has_vad", f"{card.has_vad} but the graph's outputs are {sorted(card.output_names)}")
    for name, axis in category_axes.items():
        shape = list(graph_outputs.get(name) or [])
        channels = shape[axis] if len(shape) > axis else None
        if isinstance(channels, int) and channels != len(card.categories):
            refuse("categories", f"{len(card.categories)} names, but the graph's output '{name}' has {channels}")
    image_shape = list(graph_inputs.get(card.input_names[0]) or [])
    if len(image_shape) == 4:
        height, width = image_shape[2:]
        if not card.dynamic_size and all(isinstance(v, int) for v in (height, width)) \
                and (height, width) != tuple(card.input_size):
            refuse("input_size", f"{tuple(card.input_size)}, but the graph takes {height}x{width}")


def card_from_dict(values: Mapping[str, Any], source: str | Path = "<card>") -> ModelCard:
    """Rebuild a card from :meth:`ModelCard.to_dict`; ModelCardError naming ``source`` otherwise."""
    if not isinstance(values, Mapping):
        raise ModelCardError(source, f"expected a JSON object, got {type(values).__name__}")
    version = values.get("format_version")
    if version != CARD_FORMAT_VERSION:
        raise ModelCardError(source, f"format_version {version!r} is not the supported {CARD_FORMAT_VERSION}")
    known = {f.name for f in dataclasses.fields(ModelCard)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ModelCardError(source, f"unknown field(s) {', '.join(unknown)}")
    items = dict(values)
    try:
        norm = items.get("normalisation") or {}
        if not isinstance(norm, Mapping):
            raise TypeError(f"field 'normalisation': expected a JSON object, got {type(norm).__name__}")
        norm_fields: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in norm.items()}
        items["normalisation"] = InputNormalisation(**norm_fields)
        for key in ("categories", "input_names", "output_names", "input_size"):
            if key in items:
                items[key] = tuple(items[key])
        return ModelCard(**items)
    except (TypeError, ValueError) as err:
        raise ModelCardError(source, str(err)) from err


def card_from_json(text: str, source: str | Path = "<card>") -> ModelCard:
    try:
        values = json.loads(text)
    except json.JSONDecodeError as err:
        raise ModelCardError(source, f"not valid JSON ({err})") from err
    return card_from_dict(values, source)


def sidecar_path(model_path: str | Path) -> Path:
    """``<file>.json`` beside a model file."""
    model_path = Path(model_path)
    return model_path.with_name(model_path.name + ".json")


def write_file_atomically(path: str | Path, data: bytes) -> Path:
    """Write ``data`` beside ``path``, then rename it there: a reader (another node starting at
    the same time) sees the old file or the whole new one, never half of it."""
    path = Path(path)
    partial = path.with_name(f"{path.name}.partial-{os.getpid()}")
    try:
        partial.write_bytes(data)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return path


def write_sidecar(card: ModelCard, model_path: str | Path) -> Path:
    """Write ``<model>.json`` (atomically: :func:`write_file_atomically`)."""
    return write_file_atomically(sidecar_path(model_path), (card.to_json() + "\n").encode("utf-8"))


def read_sidecar(model_path: str | Path) -> ModelCard | None:
    """The card in ``<file>.json``, None if there is none."""
    path = sidecar_path(model_path)
    if not path.is_file():
        return None
    return card_from_json(path.read_text(encoding="utf-8"), path)


def onnx_metadata(card: ModelCard) -> dict[str, str]:
    """ONNX ``metadata_props`` entries: the full card plus flat keys readable in model viewers."""
    return {
        CARD_KEY: card.to_json(),
        "model_name": card.model_name,
        "preset": card.preset or "custom",
        "categories": ",".join(card.categories),
        "input_normalisation": json.dumps(dataclasses.asdict(card.normalisation), sort_keys=True),
        "stride": str(card.stride),
        "has_vad": str(card.has_vad).lower(),
        "with_decode": str(card.with_decode).lower(),
        "precision": card.precision,
    }


def card_from_metadata(metadata: Mapping[str, str], source: str | Path) -> ModelCard:
    """The card stored by :func:`onnx_metadata` in an ONNX file's metadata map."""
    if CARD_KEY not in metadata:
        raise ModelCardError(
            source,
            f"no '{CARD_KEY}' entry in the ONNX metadata: not exported by 'emotion-perception export' "
            "(re-export the checkpoint)",
        )
    return card_from_json(metadata[CARD_KEY], source)


def read_onnx_card(onnx_path: str | Path) -> ModelCard:
    """The card embedded in an ONNX file (the sidecar is only a convenience copy).

    Uses the ``onnx`` package when installed (reads the protobuf without running anything),
    otherwise ONNX Runtime's model metadata (robots need only onnxruntime).
    """
    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise FileNotFoundError(f"{onnx_path}: ONNX model file not found")
    onnx: ModuleType | None
    try:
        import onnx
    except ImportError:
        onnx = None
    if onnx is not None:
        try:
            model = onnx.load(str(onnx_path), load_external_data=False)
        except Exception as err:  # protobuf raises DecodeError and others on corrupt files
            raise ModelCardError(onnx_path, f"not a readable ONNX model ({type(err).__name__}: {err})") from err
        metadata = {prop.key: prop.value for prop in model.metadata_props}
    else:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        try:
            session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
        except Exception as err:
            raise ModelCardError(onnx_path, f"not a readable ONNX model ({type(err).__name__}: {err})") from err
        metadata = dict(session.get_modelmeta().custom_metadata_map)
    return card_from_metadata(metadata, onnx_path)
