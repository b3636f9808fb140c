"""PyTorch backend: the deploy graph in eager mode (optionally compiled / CUDA-graph captured).

CPU: float32 under ``torch.inference_mode``. CUDA: float16 network (decoding, when present,
stays float32), channels-last memory format, optional ``torch.compile`` and CUDA graph capture
(one graph per input shape; a camera stream has one shape, so one capture).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from emotion_perception.export.graphs import build_deploy_graph
from emotion_perception.export.model_card import ModelCard
from emotion_perception.runtime.backend import Backend, OpenOptions, input_specs

LOGGER = logging.getLogger(__name__)
CUDA_GRAPH_WARMUP = 3


def open_backend(path: Path, kind: str, device: str, precision: str, cache: Path, options: OpenOptions) -> TorchBackend:
    """The torch row of the backend table (runtime/backend.py): a checkpoint's deploy graph.

    Nothing is cached (``cache`` is unused): the checkpoint is the model. The card is made from
    the checkpoint as the exporter would make it, at the precision that will run.
    """
    from emotion_perception.export.graphs import build_deploy_graph, make_card
    from emotion_perception.nets.factory import label_thresholds_of, load_model_from_checkpoint, trained_on_of

    if precision == "auto":
        precision = "fp32" if device == "cpu" else "fp16"
    model, checkpoint = load_model_from_checkpoint(path, map_location="cpu")
    card = make_card(model, build_deploy_graph(model), with_decode=False, decode_config=None, precision=precision,
                     trained_on=trained_on_of(checkpoint), label_thresholds=label_thresholds_of(checkpoint))
    return TorchBackend(model, card, device, precision, compile=options.compile, cuda_graph=options.cuda_graph,
                        threads=options.threads)


class TorchBackend(Backend):
    name = "torch"
    array_type = "torch"

    def __init__(
        self,
        model: nn.Module,
        card: ModelCard,
        device: str = "cpu",
        precision: str = "auto",
        channels_last: bool | None = None,
        compile: bool = False,
        cuda_graph: bool = False,
        threads: int | None = None,
    ) -> None:
        """``threads``: CPU intra-op threads (torch.set_num_threads, which is process-wide);
        None leaves PyTorch's default."""
        if threads is not None:
            if threads < 1:
                raise ValueError(f"threads must be >= 1, got {threads}")
            torch.set_num_threads(int(threads))
        self.device = str(device)
        torch_device = torch.device(self.device)
        on_cuda = torch_device.type == "cuda"
        if precision == "auto":
            precision = "fp16" if on_cuda else "fp32"
        if precision not in ("fp32", "fp16"):
            raise ValueError(f"the torch backend runs fp32 or fp16, not {precision!r}")
        if precision == "fp16" and not on_cuda:
            raise ValueError("fp16 on CPU is slower than fp32 in PyTorch; use precision fp32 on CPU")
        if cuda_graph and not on_cuda:
            raise ValueError("CUDA graph capture needs a CUDA device")
        self.precision = precision
        self.card = card
        self.inputs = input_specs(card)
        self.output_names = tuple(card.output_names)
        graph = build_deploy_graph(model.to(torch_device), with_decode=card.with_decode,
                                   decode_config=_decode_config(card), half=precision == "fp16")
        if tuple(graph.output_names) != self.output_names:
            raise ValueError(f"graph outputs {graph.output_names} differ from the card's {self.output_names}")
        self._channels_last = on_cuda if channels_last is None else channels_last
        module = graph.module.to(torch_device).eval()
        if self._channels_last:
            # Module.to takes memory_format (torch docs); torch's overload stubs leave it out.
            module = module.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        # None once closed.
        self._module: Callable[..., Any] | None = torch.compile(module) if compile else module
        self._torch_device = torch_device
        self._cuda_graph = cuda_graph
        self._graphs: dict[tuple, tuple[torch.cuda.CUDAGraph, list[torch.Tensor], tuple[torch.Tensor, ...]]] = {}
        self.details = {"torch_version": torch.__version__, "intra_op_threads": torch.get_num_threads(),
                        "channels_last": self._channels_last,
                        "compile": compile, "cuda_graph": cuda_graph}

    def _to_device(self, value: Any) -> torch.Tensor:
        tensor = torch.from_numpy(np.ascontiguousarray(value)) if isinstance(value, np.ndarray) else value
        tensor = tensor.to(self._torch_device, non_blocking=True)
        if self._channels_last and tensor.dim() == 4:
            tensor = tensor.contiguous(memory_format=torch.channels_last)
        return tensor

    def _open_module(self) -> Callable[..., Any]:
        if self._module is None:
            raise RuntimeError("the torch backend is closed")
        return self._module

    def _run(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        tensors = [self._to_device(inputs[spec.name]) for spec in self.inputs]
        with torch.inference_mode():
            outputs = self._replay(tensors) if self._cuda_graph else self._open_module()(*tensors)
        return dict(zip(self.output_names, outputs))

    def _replay(self, tensors: list[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        key = tuple(tuple(t.shape) for t in tensors)
        if key not in self._graphs:
            self._graphs[key] = self._capture(tensors)
        graph, static_inputs, static_outputs = self._graphs[key]
        for static, tensor in zip(static_inputs, tensors):
            static.copy_(tensor)
        graph.replay()
        # The static outputs are overwritten by the next replay; callers may keep what we return.
        return tuple(output.clone() for output in static_outputs)

    def _capture(self, tensors: list[torch.Tensor]) -> tuple[Any, list[torch.Tensor], tuple[torch.Tensor, ...]]:
        module = self._open_module()
        static_inputs = [t.clone() for t in tensors]
        side = torch.cuda.Stream(self._torch_device)
        side.wait_stream(torch.cuda.current_stream(self._torch_device))
        with torch.cuda.stream(side):
            for _ in range(CUDA_GRAPH_WARMUP):  # lets cuDNN pick algorithms before capture
                module(*static_inputs)
        torch.cuda.current_stream(self._torch_device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_outputs = tuple(module(*static_inputs))
        LOGGER.info("captured a CUDA graph for input shapes %s", [tuple(t.shape) for t in tensors])
        return graph, static_inputs, static_outputs

    def synchronize(self) -> None:
        if self._torch_device.type == "cuda":
            torch.cuda.synchronize(self._torch_device)

    def _release(self) -> None:
        self._graphs.clear()
        self._module = None
        if self._torch_device.type == "cuda":
            torch.cuda.empty_cache()


def _decode_config(card: ModelCard) -> Any:
    if not card.with_decode:
        return None
    from emotion_perception.nets.decode import DecodeConfig

    assert card.decode is not None  # ModelCard refuses with_decode without a decode section
    return DecodeConfig(**card.decode)
