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
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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

    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)  # ImageNet, RGB order
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
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
        if self.model_name not in MODEL_NAMES:
            raise ValueError(f"ModelCard.model_name: {self.model_name!r} is not one of {MODEL_NAMES}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"ModelCard.precision: {self.precision!r} is not one of {PRECISIONS}")
        if self.with_decode and self.model_name != "benet":
            raise ValueError("ModelCard.with_decode: only BENet has a decoding stage")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    def replace(self, **changes: Any) -> ModelCard:
        return dataclasses.replace(self, **changes)


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
        items["normalisation"] = InputNormalisation(
            **{k: tuple(v) if isinstance(v, list) else v for k, v in norm.items()}
        )
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


def write_sidecar(card: ModelCard, model_path: str | Path) -> Path:
    path = sidecar_path(model_path)
    path.write_text(card.to_json() + "\n", encoding="utf-8")
    return path


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
