"""Native TensorRT backend: a deserialized engine, device buffers allocated once, a CUDA stream.

Buffers are sized for the engine profile's largest shapes at start-up and their addresses
bound once; a call with a new input shape only updates the context's input shapes. Inputs are
copied into the input buffers on the backend's stream (which first waits for torch's current
stream, where preprocessing ran), the engine is enqueued with ``execute_async_v3``, and torch's
current stream waits for it before the outputs are handed back, so no host synchronisation is
needed between preprocessing, inference and decoding. With ``cuda_graph=True`` the enqueue is
captured once per input shape and replayed (saves the per-layer launch overhead, which matters
for small inputs).

CUDA buffers and streams come from torch, so no pycuda / cuda-python is needed.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from emotion_perception.export.model_card import ModelCard, read_onnx_card
from emotion_perception.export.tensorrt_build import (
    current_gpu,
    ensure_engine,
    has_weak_fp16_flag,
    import_tensorrt,
    read_engine_record,
    require_cuda,
)
from emotion_perception.runtime.backend import Backend, OpenOptions, input_specs
from emotion_perception.runtime.model_files import ModelFileError, cached_int8_onnx, cached_onnx

LOGGER = logging.getLogger(__name__)


def torch_dtype_of(trt: Any, data_type: Any) -> Any:
    """torch dtype of a TensorRT DataType."""
    import torch

    table = {"FLOAT": torch.float32, "HALF": torch.float16, "INT32": torch.int32, "INT64": torch.int64,
             "BOOL": torch.bool, "INT8": torch.int8, "UINT8": torch.uint8, "BF16": torch.bfloat16}
    for name, dtype in table.items():
        if hasattr(trt.DataType, name) and data_type == getattr(trt.DataType, name):
            return dtype
    raise ValueError(f"TensorRT tensor type {data_type} has no torch equivalent")


def open_backend(path: Path, kind: str, device: str, precision: str, cache: Path,
                 options: OpenOptions) -> TensorRTBackend:
    """The tensorrt row of the backend table (runtime/backend.py).

    An engine file runs as it is (at the precision it was built with), or is rebuilt from its
    source ONNX file when it was built for another GPU or TensorRT version. A checkpoint or ONNX
    file gets an engine built once into ``cache/engines`` at ``precision`` (``auto``: fp16), with
    a profile for batches up to ``options.max_batch_for(model)``.
    """
    trt = import_tensorrt()
    device_index = int(device.split(":")[1]) if ":" in device else 0
    engine_precision = "fp16" if precision == "auto" else precision
    engines = cache / "engines"
    if kind == "engine":
        card, key = read_engine_record(path)
        if card is None:
            raise ModelFileError(path, "no model card '<engine>.json' beside the engine: build engines with "
                                       "'emotion-perception export --format tensorrt'")
        gpu = current_gpu(device_index)
        mismatch = [f"{field}: engine {key.get(field)!r}, here {value!r}" for field, value in
                    (("tensorrt_version", str(trt.__version__)), ("gpu_name", gpu.name),
                     ("compute_capability", gpu.compute_capability)) if key and key.get(field) != value]
        if key is None or mismatch:
            source = Path((card.tensorrt or {}).get("onnx_path", ""))
            if not source.is_file():
                raise ModelFileError(path, f"engine built for another machine ({'; '.join(mismatch) or 'no key'}) and "
                                           "its source ONNX file is not available to rebuild it")
            LOGGER.warning("%s was built for another machine (%s): rebuilding from %s", path, "; ".join(mismatch),
                           source)
            path = ensure_engine(source, engines, key.get("precision", engine_precision) if key else engine_precision,
                                 profile=key.get("profile") if key else None, device_index=device_index)
            card = _built_engine_card(path)
        return TensorRTBackend(path, card, device, options.cuda_graph)
    if kind == "checkpoint":
        graph_precision = "fp16" if engine_precision == "fp16" and not has_weak_fp16_flag(trt) else "fp32"
        onnx_path, card = cached_onnx(path, cache, graph_precision)
    else:
        onnx_path, card = path, read_onnx_card(path)
    if engine_precision == "int8" and card.precision != "int8":
        # TensorRT builds INT8 from the QDQ graph (explicit quantisation), never by calibrating itself.
        onnx_path, card = cached_int8_onnx(onnx_path, cache, target="tensorrt")
    engine = ensure_engine(onnx_path, engines, engine_precision, max_batch=options.max_batch_for(card.model_name),
                           device_index=device_index)
    return TensorRTBackend(engine, _built_engine_card(engine), device, options.cuda_graph)


def _built_engine_card(engine: Path) -> ModelCard:
    """The card that ensure_engine wrote beside the engine it returned."""
    card, _ = read_engine_record(engine)
    if card is None:
        raise ModelFileError(engine, "no model card '<engine>.json' beside the engine just built")
    return card


class TensorRTBackend(Backend):
    name = "tensorrt"
    array_type = "torch"

    def __init__(self, engine_path: str | Path, card: ModelCard, device: str = "cuda:0",
                 cuda_graph: bool = False) -> None:
        trt = import_tensorrt()
        torch = require_cuda()
        engine_path = Path(engine_path)
        if not engine_path.is_file():
            raise FileNotFoundError(f"{engine_path}: TensorRT engine file not found")
        self.device = device
        self.precision = card.precision
        self.card = card
        self._torch_device = torch.device(device)
        torch.cuda.set_device(self._torch_device)  # TensorRT allocates on the current device
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self._engine = self._runtime.deserialize_cuda_engine(engine_path.read_bytes())
        if self._engine is None:
            raise ValueError(
                f"{engine_path}: TensorRT {trt.__version__} cannot deserialize this engine (corrupt, or built "
                "with another TensorRT version or GPU): rebuild it with 'emotion-perception export --format tensorrt'"
            )
        self._context = self._engine.create_execution_context()
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        input_names = [n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        output_names = [n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if input_names != list(card.input_names) or sorted(output_names) != sorted(card.output_names):
            raise ValueError(
                f"{engine_path}: engine tensors {input_names} -> {output_names} do not match its model card "
                f"{list(card.input_names)} -> {list(card.output_names)}"
            )
        self.output_names = tuple(card.output_names)
        profiles = {n: [tuple(s) for s in self._engine.get_tensor_profile_shape(n, 0)] for n in input_names}
        self.inputs = tuple(
            replace(spec, min_shape=profiles[spec.name][0], max_shape=profiles[spec.name][2])
            for spec in input_specs(card)
        )
        self._dtypes = {n: torch_dtype_of(trt, self._engine.get_tensor_dtype(n)) for n in names}

        # One allocation per tensor, at the profile's largest shapes.
        for name in input_names:
            self._set_shape(name, profiles[name][2])
        self._buffers = {}
        for name in names:
            shape = tuple(self._context.get_tensor_shape(name))
            self._buffers[name] = torch.empty(int(np.prod(shape)), dtype=self._dtypes[name], device=self._torch_device)
            self._context.set_tensor_address(name, self._buffers[name].data_ptr())
        self._shapes: dict[str, tuple[int, ...]] = {}
        self._stream = torch.cuda.Stream(self._torch_device)
        self._cuda_graph = cuda_graph
        self._graphs: dict[tuple, Any] = {}
        self.details = {"tensorrt_version": str(trt.__version__), "engine": str(engine_path),
                        "profile": {n: [list(s) for s in p] for n, p in profiles.items()}, "cuda_graph": cuda_graph}

    def _set_shape(self, name: str, shape: tuple[int, ...]) -> None:
        if not self._context.set_input_shape(name, tuple(int(s) for s in shape)):
            raise ValueError(f"TensorRT rejected shape {tuple(shape)} for input '{name}'")

    def _views(self, names: list[str] | tuple[str, ...]) -> dict[str, Any]:
        return {n: self._buffers[n][: int(np.prod(self._shapes[n]))].view(self._shapes[n]) for n in names}

    def _run(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        import torch

        shapes = {spec.name: tuple(int(s) for s in inputs[spec.name].shape) for spec in self.inputs}
        if any(self._shapes.get(name) != shape for name, shape in shapes.items()):
            for name, shape in shapes.items():
                self._set_shape(name, shape)
            self._shapes = dict(shapes)
            for name in self.output_names:
                self._shapes[name] = tuple(self._context.get_tensor_shape(name))
        current = torch.cuda.current_stream(self._torch_device)
        self._stream.wait_stream(current)  # preprocessing on torch's stream must be complete
        with torch.cuda.stream(self._stream):
            for name, view in self._views([spec.name for spec in self.inputs]).items():
                value = inputs[name]
                value = torch.from_numpy(np.ascontiguousarray(value)) if isinstance(value, np.ndarray) else value
                view.copy_(value.to(self._torch_device, non_blocking=True), non_blocking=True)
            if self._cuda_graph:
                self._replay(tuple(shapes.items()))
            elif not self._context.execute_async_v3(self._stream.cuda_stream):
                raise RuntimeError("TensorRT execute_async_v3 failed (see TensorRT log)")
        current.wait_stream(self._stream)
        # Copies on torch's stream: the next call may overwrite the buffers.
        return {name: view.clone() for name, view in self._views(self.output_names).items()}

    def _replay(self, key: tuple) -> None:
        import torch

        graph = self._graphs.get(key)
        if graph is None:
            # One plain run first: TensorRT may allocate or tune lazily after a shape change,
            # which must not happen inside a capture.
            if not self._context.execute_async_v3(self._stream.cuda_stream):
                raise RuntimeError("TensorRT execute_async_v3 failed (see TensorRT log)")
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, stream=self._stream):
                captured = self._context.execute_async_v3(self._stream.cuda_stream)
            if not captured:
                # A graph without the enqueue would replay nothing and hand back the previous
                # frame's outputs: fail instead, and capture again on the next call.
                raise RuntimeError("TensorRT execute_async_v3 failed during CUDA graph capture (see TensorRT log); "
                                   "run without cuda_graph to see whether the engine runs at all")
            self._graphs[key] = graph
            LOGGER.info("captured a CUDA graph of the TensorRT engine for %s", dict(key))
        graph.replay()

    def synchronize(self) -> None:
        import torch

        torch.cuda.synchronize(self._torch_device)

    def _release(self) -> None:
        self._graphs.clear()
        self._context = None
        self._engine = None
        self._buffers = {}
