"""Export BENet / CAHFW-Net to ONNX, simplify the graph, embed the model card, check parity.

The exported graph takes the preprocessed network input (float32 NCHW RGB, normalised with the
card's mean/std); preprocessing stays outside so that every backend can run it on its own
device. BENet graphs have dynamic batch, height and width (multiples of 32); CAHFW-Net graphs
have a dynamic batch (one row per face).
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from emotion_perception.export.graphs import DeployGraph, build_deploy_graph, make_card
from emotion_perception.export.model_card import ModelCard, onnx_metadata, write_sidecar
from emotion_perception.nets.attention import with_mean_as_conv
from emotion_perception.nets.decode import DecodeConfig

LOGGER = logging.getLogger(__name__)
DEFAULT_OPSET = 17
# fp32 parity target on the output maps (ONNX Runtime vs PyTorch, same weights and inputs).
FP32_TOLERANCE = 1e-4
# Bumped whenever the exported graph changes for the same weights (caches of exports, e.g.
# runtime.model_files.cached_onnx, compare it so that an old export is made again).
# 2: spatial attention's channel mean as a 1x1 convolution (nets.attention.MeanAsConvSpatialAttention).
EXPORT_REVISION = 2


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export_onnx` wrote."""

    onnx_path: Path
    card_path: Path
    card: ModelCard
    graph: DeployGraph


def _torch_onnx_export(graph: DeployGraph, path: Path, opset: int) -> None:
    # The TorchScript-based exporter: it needs no extra packages (the torch.export-based one
    # needs onnxscript) and handles data-dependent top-k shapes without guards.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        torch.onnx.export(
            graph.module,
            graph.example_inputs,
            str(path),
            dynamo=False,
            opset_version=opset,
            input_names=list(graph.input_names),
            output_names=list(graph.output_names),
            dynamic_axes=graph.dynamic_axes,
            do_constant_folding=True,
        )


def simplify(model: Any) -> Any:
    """onnxslim's graph simplification (constant folding, dead-node and shape-op elimination)."""
    import onnxslim

    # onnxslim prints a summary table; the exporter reports its own summary instead.
    with contextlib.redirect_stdout(io.StringIO()):
        return onnxslim.slim(model)


def export_onnx(
    model: nn.Module,
    out: str | Path,
    with_decode: bool = False,
    decode_config: DecodeConfig | None = None,
    input_size: tuple[int, int] | None = None,
    precision: str = "fp32",
    opset: int = DEFAULT_OPSET,
    source: dict[str, Any] | None = None,
    simplify_graph: bool = True,
    trained_on: str = "unknown",
    label_thresholds: dict[str, float] | None = None,
    graph_rewrites: bool = True,
) -> ExportResult:
    """Export ``model`` (BENet, CAHFW-Net or FaceExpressionNet) to ``out`` with its model card; see module docstring.

    ``precision`` is "fp32" or "fp16" (float16 weights and activations behind float32 inputs and
    outputs, for GPU runtimes; int8 is :func:`emotion_perception.export.quantize.quantize_int8`
    applied to an fp32 export). ``graph_rewrites`` exports the inference form of the network
    (:func:`emotion_perception.nets.attention.with_mean_as_conv`, equal outputs, faster on ONNX
    Runtime CPU); the card's ``source["graph_rewrites"]`` lists what was rewritten.
    """
    import onnx

    if opset < DEFAULT_OPSET:
        raise ValueError(f"opset must be >= {DEFAULT_OPSET}, got {opset}")
    if precision not in ("fp32", "fp16"):
        raise ValueError(f"export_onnx: precision must be fp32 or fp16 (int8 is a quantisation step), "
                         f"got {precision!r}")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    # Parity is checked against the model as trained; the exported graph is its inference form.
    graph = build_deploy_graph(model, with_decode, decode_config, half=precision == "fp16", input_size=input_size)
    inference_form = with_mean_as_conv(model).eval() if graph_rewrites else model
    rewrites = [] if inference_form is model else ["spatial_attention_mean_as_conv"]
    exported = graph if inference_form is model else build_deploy_graph(
        inference_form, with_decode, decode_config, half=precision == "fp16", input_size=input_size)
    source = {**(source or {}), "export_revision": EXPORT_REVISION, "graph_rewrites": rewrites}
    with torch.no_grad():
        _torch_onnx_export(exported, out, opset)
    proto = onnx.load(str(out))
    simplified = False
    if simplify_graph:
        try:
            proto, simplified = simplify(proto), True
        except ImportError as err:
            # A GPU machine with onnx but not onnxslim still exports (for TensorRT): the graph is
            # the same function, only less folded; the card records it.
            LOGGER.warning("onnxslim is not importable (%s): exporting the graph unsimplified", err)
    source["simplified"] = simplified
    card = make_card(model, graph, with_decode, decode_config, precision, input_size, opset, source, trained_on,
                     label_thresholds)
    write_metadata(proto, card)
    onnx.checker.check_model(proto)
    onnx.save(proto, str(out))
    card_path = write_sidecar(card, out)
    LOGGER.info("exported %s (%s, %s) to %s", card.model_name, card.preset or "custom", precision, out)
    return ExportResult(out, card_path, card, graph)


def write_metadata(proto: Any, card: ModelCard) -> None:
    """Replace the ONNX model's metadata_props by the card's entries (in place)."""
    del proto.metadata_props[:]
    for key, value in onnx_metadata(card).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.producer_name = "emotion_perception"


# --------------------------------------------------------------------------- parity


@dataclass(frozen=True)
class ParityRow:
    """Largest absolute difference between ONNX Runtime and PyTorch for one output on one input."""

    input_label: str
    output: str
    max_abs_diff: float
    max_abs_value: float
    compared: str = "all"  # which elements were compared (decoded outputs: rows at the same peak)


def run_torch_graph(graph: DeployGraph, inputs: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
    device = next(graph.module.parameters()).device
    with torch.inference_mode():
        outputs = graph.module(*(torch.from_numpy(np.ascontiguousarray(x)).to(device) for x in inputs))
    return {name: value.detach().cpu().numpy() for name, value in zip(graph.output_names, outputs)}


def run_onnx_cpu(onnx_path: str | Path, input_names: Sequence[str],
                 inputs: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
    """One ONNX Runtime CPU run (the reference runtime of the parity check)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    values = session.run(names, {name: np.ascontiguousarray(x) for name, x in zip(input_names, inputs)})
    return dict(zip(names, values))


def _max_diff(ref: np.ndarray, cand: np.ndarray) -> tuple[float, float]:
    ref = ref.astype(np.float64)
    cand = cand.astype(np.float64)
    if not np.array_equal(np.isfinite(ref), np.isfinite(cand)):
        return float("inf"), float(np.nanmax(np.abs(ref), initial=0.0))
    finite = np.isfinite(ref)
    return (float(np.max(np.abs(ref[finite] - cand[finite]), initial=0.0)),
            float(np.max(np.abs(ref[finite]), initial=0.0)))


def match_decoded_rows(ref_boxes: np.ndarray, cand_boxes: np.ndarray,
                       tolerance: float = 1e-3) -> list[tuple[int, int, int]]:
    """(image, reference row, candidate row) of decoded people found at the same peak.

    A person's box is centred on its peak pixel, so equal centres mean the same peak. Matching
    by peak rather than by rank matters on flat heatmaps (e.g. untrained weights): there,
    neighbouring pixels tie to within rounding and the runtimes may legitimately keep different
    ones of two near-equal neighbours.
    """
    matches = []
    ref_centres = (ref_boxes[..., :2] + ref_boxes[..., 2:]) / 2
    cand_centres = (cand_boxes[..., :2] + cand_boxes[..., 2:]) / 2
    for image in range(ref_boxes.shape[0]):
        distance = np.abs(ref_centres[image][:, None, :] - cand_centres[image][None, :, :]).max(axis=2)
        for row in range(ref_boxes.shape[1]):
            col = int(np.argmin(distance[row]))
            if distance[row, col] <= tolerance:
                matches.append((image, row, col))
    return matches


def compare_outputs(
    reference: dict[str, np.ndarray], candidate: dict[str, np.ndarray], label: str
) -> list[ParityRow]:
    """Per-output max |difference|; decoded people are compared at matching peaks."""
    for name, ref in reference.items():
        if candidate[name].shape != ref.shape:
            raise AssertionError(f"output {name}: shape {candidate[name].shape} differs from PyTorch's {ref.shape}")
    if not ("boxes" in reference and "valid" in reference):
        return [ParityRow(label, name, *_max_diff(ref, candidate[name])) for name, ref in reference.items()]
    rows = [ParityRow(label, "scores", *_max_diff(reference["scores"], candidate["scores"]), "all (sorted)")]
    matches = match_decoded_rows(reference["boxes"], candidate["boxes"])
    total = reference["scores"].size
    index_ref = tuple(np.array([(b, r) for b, r, _ in matches], dtype=np.int64).reshape(-1, 2).T)
    index_cand = tuple(np.array([(b, c) for b, _, c in matches], dtype=np.int64).reshape(-1, 2).T)
    for name in ("boxes", "emotions", "vad", "valid"):
        ref = reference[name][index_ref]
        cand = candidate[name][index_cand]
        rows.append(ParityRow(label, name, *_max_diff(ref, cand), f"{len(matches)}/{total} rows at the same peak"))
    return rows


def parity_check(
    graph: DeployGraph, onnx_path: str | Path, named_inputs: Iterable[tuple[str, Sequence[np.ndarray]]]
) -> list[ParityRow]:
    """Compare ONNX Runtime (CPU) with the PyTorch graph on each labelled input set."""
    rows: list[ParityRow] = []
    for label, inputs in named_inputs:
        reference = run_torch_graph(graph, inputs)
        candidate = run_onnx_cpu(onnx_path, graph.input_names, inputs)
        rows.extend(compare_outputs(reference, candidate, label))
    return rows


def within_tolerance(row: ParityRow, tolerance: float) -> bool:
    """|diff| <= tolerance * max(1, |value|): absolute for maps and probabilities, relative for
    large values such as box coordinates in pixels (float32 carries ~7 significant digits)."""
    return row.max_abs_diff <= tolerance * max(1.0, row.max_abs_value)


def format_parity(rows: Sequence[ParityRow], tolerance: float | None) -> str:
    lines = [f"{'input':<24} {'output':<12} {'max |diff|':>11} {'max |value|':>11}  compared"]
    for row in rows:
        flag = "" if tolerance is None or within_tolerance(row, tolerance) else "  EXCEEDS TOLERANCE"
        lines.append(f"{row.input_label:<24} {row.output:<12} {row.max_abs_diff:11.3e} {row.max_abs_value:11.3e}"
                     f"  {row.compared}{flag}")
    return "\n".join(lines)
