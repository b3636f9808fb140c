"""INT8 ONNX models by ONNX Runtime static quantisation (QDQ, per-channel weights).

Calibration runs the fp32 model on a set of inputs (real-looking synthetic scenes by default,
:mod:`emotion_perception.export.grid_scenes`) to fix activation ranges. Weights are int8 per output
channel, activations uint8 (the U8S8 form that x86 VNNI / AVX-512 and ARM dot-product kernels
run natively). The network's convolutions, element-wise ops, pooling, resizes and concatenations
are quantised so that activations stay int8 from layer to layer; the decoding stage (top-k,
gathers, box arithmetic), the layers that produce the output maps or logits, matrix products
with two activation operands (attention) and softmaxes stay in float32, and so do a few small
branches whose errors the metrics showed to matter (:data:`FLOAT_BRANCHES`: BENet's box-size
head, CAHFW-Net's highlight attention and fusion head).

ONNX Runtime's MinMax calibration keeps every activation of every calibration input in memory
(about 1.8 GB per 512x512 image for BENet ``paper``), so BENet is calibrated on scenes
letterboxed to at most :data:`CALIBRATION_SIDE` pixels (the network is fully convolutional; the
ranges of its activations barely depend on the canvas size) and 8 scenes by default.

The exporter reports output differences only; accuracy is measured on held-out data with
``emotion-perception eval benet|cahfw --backend onnxruntime --precision int8`` (the cached
quantisation of a checkpoint, scored with the papers' metrics; scripts/int8_accuracy.sh compares
it with fp32 for the demo models).
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from emotion_perception.export.grid_scenes import scene_inputs
from emotion_perception.export.model_card import ModelCard, onnx_metadata, read_onnx_card, write_sidecar

LOGGER = logging.getLogger(__name__)
# Runtimes an INT8 graph can be shaped for (quantize_int8's target).
QUANTISATION_TARGETS = ("onnxruntime", "tensorrt")
QUANTISED_OPS = (
    "Conv", "ConvTranspose", "Add", "Mul", "Relu", "Sigmoid", "MaxPool", "AveragePool",
    "GlobalAveragePool", "Concat", "Resize",
)
CALIBRATION_SIDE = 256
# Exported node names carry the module path; the network proper lives under this prefix in
# every deploy graph (export.graphs), the decoding stage outside it.
NETWORK_PREFIX = "/net/"
# Branches of the network left wholly in float32 (every node under the prefix), and why; measured
# with the demo models on their synthetic test splits (scripts/int8_accuracy.sh, docs/BENCHMARKS.md).
# * BENet's size head regresses box widths and heights in map pixels: with its hidden
#   activations in 8 bits the sizes were off by ~5% (mean relative error), costing 14 points of
#   COCO AP (0.50:0.95) and 4.7 of joint mAP, while centres and emotions stayed within 0.2
#   points. In float: every headline within 1 point of fp32, CPU latency unchanged (one head of
#   four).
# * CAHFW-Net's highlight attention (scores whose softmax over positions re-weights the context
#   map, so 8-bit steps in them are exponentiated and multiplied in) and its fusion head (the
#   vector layers that make the logits): with both in 8 bits the logits moved by 0.34 on average,
#   more than the model's median Happy/Sad margin (0.21), and 119 of 600 test predictions
#   changed (accuracy +0.8 by chance: Happy 22% -> 96%, Sad 67% -> 6%). In float: 7 changed,
#   accuracy -0.2, for 4-7% of the INT8 latency (INT8 stays 1.5-1.6x faster than fp32).
FLOAT_BRANCHES = ("/net/size_head/", "/net/highlight/", "/net/fusion/")
# Bumped whenever the same fp32 graph quantises differently, so caches of INT8 models
# (runtime.model_files.cached_int8_onnx) make them again. 2: FLOAT_BRANCHES.
QUANTISER_REVISION = 2


def nodes_to_keep_float(model: Any) -> list[str]:
    """Names of nodes that quantisation must leave alone (see module docstring).

    Those outside the network (decoding), those whose outputs leave the network: graph
    outputs or inputs of decoding nodes, i.e. the final convolutions of the heads (their logits
    feed thresholds and rankings, where 8-bit steps would reorder near-equal peaks), and every
    node of the :data:`FLOAT_BRANCHES`.
    """
    graph_outputs = {o.name for o in model.graph.output}
    outside = [n for n in model.graph.node if not n.name.startswith(NETWORK_PREFIX)]
    decode_inputs = {name for n in outside for name in n.input}
    keep = [n.name for n in outside]
    for node in model.graph.node:
        if not node.name.startswith(NETWORK_PREFIX):
            continue
        if (any(o in graph_outputs or o in decode_inputs for o in node.output)
                or node.name.startswith(FLOAT_BRANCHES)):
            keep.append(node.name)
    return keep


class _Reader:
    """ONNX Runtime CalibrationDataReader over a list of input dicts."""

    def __init__(self, inputs: Sequence[dict[str, np.ndarray]]) -> None:
        self._inputs = list(inputs)
        self._iterator: Iterator[dict[str, np.ndarray]] = iter(self._inputs)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._iterator, None)

    def rewind(self) -> None:
        self._iterator = iter(self._inputs)


def quantize_int8(
    fp32_onnx: str | Path,
    out: str | Path,
    calibration: Sequence[dict[str, np.ndarray]] | None = None,
    calibration_count: int = 8,
    per_channel: bool = True,
    target: str = "onnxruntime",
) -> tuple[Path, ModelCard]:
    """Quantise an fp32 ONNX export to INT8 (QDQ); writes ``out`` with an updated model card.

    ``target`` picks the QDQ form the runtime executes natively. ``onnxruntime``: uint8
    activations with zero points from calibration (U8S8, x86 VNNI / ARM dot-product kernels).
    ``tensorrt``: symmetric int8 everywhere (every zero point 0, int8) and float biases, the only
    form the TensorRT ONNX parser accepts (it has no asymmetric or int32-bias DequantizeLinear).
    Weights are int8 per output channel in both.
    """
    if target not in QUANTISATION_TARGETS:
        raise ValueError(f"INT8 target must be one of {', '.join(QUANTISATION_TARGETS)}, got {target!r}")
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    fp32_onnx, out = Path(fp32_onnx), Path(out)
    card = read_onnx_card(fp32_onnx)
    if card.precision != "fp32":
        raise ValueError(f"{fp32_onnx}: INT8 quantisation needs an fp32 export, this one is {card.precision}")
    if calibration is None:
        canvas: tuple[int, int] | None = None
        if card.dynamic_size and max(card.input_size) > CALIBRATION_SIDE:
            factor = CALIBRATION_SIDE / max(card.input_size)
            height, width = (max(card.stride, int(round(s * factor / card.stride)) * card.stride)
                             for s in card.input_size)
            canvas = (height, width)
        calibration = scene_inputs(card, calibration_count, canvas=canvas)
    inputs = list(calibration)
    if not inputs:
        raise ValueError("INT8 quantisation needs at least one calibration input")
    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        # Shape inference + graph optimisation first, as ONNX Runtime recommends before
        # static quantisation (fuses BN into convs so they are quantised once).
        quant_pre_process(str(fp32_onnx), str(prepared), skip_symbolic_shape=True)
        keep_float = nodes_to_keep_float(onnx.load(str(prepared)))
        quantize_static(
            str(prepared),
            str(out),
            _Reader(inputs),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=list(QUANTISED_OPS),
            nodes_to_exclude=keep_float,
            per_channel=per_channel,
            activation_type=QuantType.QInt8 if target == "tensorrt" else QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
            extra_options=({"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False}
                           if target == "tensorrt" else {}),
        )
    card = card.replace(precision="int8", source={**card.source, "quantised_from": str(fp32_onnx),
                                                  "calibration_inputs": len(inputs), "int8_target": target,
                                                  "quantiser_revision": QUANTISER_REVISION,
                                                  "float_branches": list(FLOAT_BRANCHES)})
    proto = onnx.load(str(out))
    del proto.metadata_props[:]
    for key, value in onnx_metadata(card).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, str(out))
    write_sidecar(card, out)
    LOGGER.info("quantised %s to INT8 (%d calibration inputs): %s", fp32_onnx, len(inputs), out)
    return out, card
