"""ONNX Runtime backend: providers TensorRT EP -> CUDA EP -> CPU EP, IO binding on GPU.

Session options: all graph optimisations, intra-op threads = physical cores available to this
process (hyper-threads slow convolutions down), sequential execution. On a GPU, inputs given
as torch CUDA tensors are bound in place and outputs are written into torch tensors allocated
on the same device, so preprocessing, the model and decoding never round-trip through the host.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from emotion_perception.export.model_card import ModelCard, check_card_against_graph, read_onnx_card
from emotion_perception.runtime.backend import Backend, OpenOptions, input_specs
from emotion_perception.runtime.model_files import cached_int8_onnx, cached_onnx

LOGGER = logging.getLogger(__name__)

TRT_EP = "TensorrtExecutionProvider"
CUDA_EP = "CUDAExecutionProvider"
CPU_EP = "CPUExecutionProvider"
GPU_PROVIDERS = (TRT_EP, CUDA_EP)


def physical_cores(cpuinfo_text: str | None = None, allowed_cpus: int | None = None) -> int:
    """Physical cores this process may use: distinct (package, core) pairs in /proc/cpuinfo,
    capped by the CPU affinity mask (containers often allow fewer CPUs than the host has)."""
    if cpuinfo_text is None:
        try:
            cpuinfo_text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
        except OSError:
            cpuinfo_text = ""
    if allowed_cpus is None:
        allowed_cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    cores: set[tuple[str, str]] = set()
    physical_id = core_id = None
    processors = 0
    for line in cpuinfo_text.splitlines() + [""]:
        key, _, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if key == "processor":
            processors += 1
        elif key == "physical id":
            physical_id = value
        elif key == "core id":
            core_id = value
        elif not key:  # blank line ends one processor's block
            if core_id is not None:
                cores.add((physical_id or "0", core_id))
            physical_id = core_id = None
    count = len(cores) or processors or allowed_cpus
    return max(1, min(count, allowed_cpus))


def device_index(device: str) -> int:
    return int(device.split(":", 1)[1]) if ":" in device else 0


def choose_providers(
    available: Sequence[str], device: str, graph_precision: str, cache_dir: str | Path | None, trt_fp16: bool = True
) -> list[tuple[str, dict[str, Any]]]:
    """Ordered (provider, options) for ``device``: TensorRT EP, CUDA EP (those installed), CPU.

    ValueError when a GPU is asked for and the installed onnxruntime has no GPU provider.
    """
    if device == "cpu":
        return [(CPU_EP, {})]
    if not device.startswith("cuda"):
        raise ValueError(f"onnxruntime backend: device must be 'cpu' or 'cuda[:N]', got {device!r}")
    index = device_index(device)
    chain: list[tuple[str, dict[str, Any]]] = []
    if TRT_EP in available:
        options: dict[str, Any] = {
            "device_id": index,
            "trt_fp16_enable": trt_fp16 or graph_precision == "fp16",
            # QDQ graphs carry their own scales; TensorRT needs INT8 enabled to use them.
            "trt_int8_enable": graph_precision == "int8",
            "trt_max_workspace_size": 4 << 30,
        }
        if cache_dir is not None:
            options.update({
                "trt_engine_cache_enable": True,
                "trt_engine_cache_path": str(Path(cache_dir) / "ort_trt"),
                "trt_timing_cache_enable": True,
                "trt_timing_cache_path": str(Path(cache_dir) / "ort_trt"),
            })
        chain.append((TRT_EP, options))
    if CUDA_EP in available:
        chain.append((CUDA_EP, {"device_id": index, "cudnn_conv_algo_search": "EXHAUSTIVE"}))
    if not chain:
        raise ValueError(
            f"device {device!r} asked for, but the installed onnxruntime offers only {list(available)}: "
            "install onnxruntime-gpu (instead of onnxruntime) or use device 'cpu'"
        )
    chain.append((CPU_EP, {}))
    return chain


def open_backend(path: Path, kind: str, device: str, precision: str, cache: Path,
                 options: OpenOptions) -> OnnxRuntimeBackend:
    """The onnxruntime row of the backend table (runtime/backend.py): an ONNX file as it is, a
    checkpoint through its cached ONNX export (fp16 weights when fp16 is asked for), and for
    ``int8`` the cached QDQ quantisation of an fp32 graph."""
    if kind == "checkpoint":
        onnx_path, card = cached_onnx(path, cache, "fp16" if precision == "fp16" else "fp32")
    else:
        onnx_path, card = path, read_onnx_card(path)
    if precision == "int8" and card.precision != "int8":
        onnx_path, card = cached_int8_onnx(onnx_path, cache)
    # On a GPU the TensorRT provider may build fp16 kernels from an fp32 graph.
    trt_fp16 = device != "cpu" and precision in ("auto", "fp16")
    return OnnxRuntimeBackend(onnx_path, card, device, threads=options.threads, cache_dir=cache,
                              providers=options.onnxruntime_providers, trt_fp16=trt_fp16)


def output_shapes(card: ModelCard, batch: int, height: int, width: int) -> dict[str, tuple[tuple[int, ...], str]]:
    """(shape, numpy dtype name) of every graph output for an input batch of (batch, 3, height, width)."""
    from emotion_perception.export.graphs import benet_map_shapes

    if card.model_name == "cahfw":
        return {card.output_names[0]: ((batch, len(card.categories)), "float32")}
    if card.with_decode:
        assert card.decode is not None  # ModelCard refuses with_decode without a decode section
        k, e = int(card.decode["top_k"]), len(card.categories)
        return {"boxes": ((batch, k, 4), "float32"), "scores": ((batch, k), "float32"),
                "emotions": ((batch, k, e), "float32"), "vad": ((batch, k, 3), "float32"),
                "valid": ((batch, k), "bool")}
    shapes = benet_map_shapes(card.output_names, len(card.categories), batch, height, width)
    return {name: (shape, "float32") for name, shape in shapes.items()}


def session_options(threads: int | None = None) -> Any:
    """The session options of every ONNX Runtime session we open (module docstring): all graph
    optimisations, sequential execution, ``threads`` intra-op threads (default: the physical
    cores) and one inter-op thread; errors only in ONNX Runtime's own log."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = threads or physical_cores()
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only: provider fallbacks are logged by us
    return options


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"

    def __init__(
        self,
        onnx_path: str | Path,
        card: ModelCard,
        device: str = "cpu",
        threads: int | None = None,
        cache_dir: str | Path | None = None,
        providers: Sequence[str] | None = None,
        trt_fp16: bool = True,
    ) -> None:
        """``trt_fp16``: let the TensorRT provider (if used) pick fp16 kernels for an fp32 graph."""
        import onnxruntime as ort

        self.device = device
        self.card = card
        self.inputs = input_specs(card)
        self.output_names = tuple(card.output_names)
        available = list(providers) if providers is not None else ort.get_available_providers()
        chain = choose_providers(available, device, card.precision, cache_dir, trt_fp16)
        options = session_options(threads)
        try:
            self._session = ort.InferenceSession(
                str(onnx_path), options, providers=[name for name, _ in chain],
                provider_options=[opts for _, opts in chain],
            )
        except Exception as err:  # onnxruntime raises its own exception types for bad files
            raise ValueError(f"{onnx_path}: ONNX Runtime cannot load the model ({type(err).__name__}: {err})") from err
        # The card drives preprocessing and decoding: it must describe this very graph.
        graph_inputs = {i.name: i.shape for i in self._session.get_inputs()}
        graph_outputs = {o.name: o.shape for o in self._session.get_outputs()}
        check_card_against_graph(card, graph_inputs, graph_outputs, onnx_path)
        if any(not all(isinstance(d, int) for d in shape) for shape in graph_outputs.values()):
            # Symbolic output dimensions (the decoding graph's emotions are (B, K, E) with E not
            # inferred): one run on a blank smallest canvas gives the real ones.
            check_card_against_graph(card, graph_inputs, self._probe_output_shapes(onnx_path), onnx_path)
        self.providers = tuple(self._session.get_providers())
        self.precision = ("fp16" if trt_fp16 and self.providers[0] == TRT_EP and card.precision == "fp32"
                          else card.precision)
        self.array_type = "numpy" if device == "cpu" else "torch"
        self.details = {"onnxruntime_version": ort.__version__, "providers": list(self.providers),
                        "intra_op_threads": options.intra_op_num_threads}
        if device != "cpu" and not set(self.providers) & set(GPU_PROVIDERS):
            raise ValueError(f"{onnx_path}: no GPU provider could be created on {device} (got {self.providers})")
        LOGGER.info("onnxruntime session on %s with providers %s", device, self.providers)

    def _probe_output_shapes(self, onnx_path: str | Path) -> dict[str, list[int]]:
        feed = {}
        for spec in self.inputs:
            if spec.name == "letterbox":
                feed[spec.name] = np.array([[1.0, 0.0, 0.0]], dtype=np.float32)  # scale 1, no padding
            else:
                side = self.card.stride
                shape = [1] + [side if size is None else size for size in spec.shape[1:]]
                feed[spec.name] = np.zeros(shape, dtype=np.float32)
        try:
            results = self._session.run(None, feed)
        except Exception as err:  # onnxruntime's own exception types
            raise ValueError(f"{onnx_path}: the graph does not run on inputs its model card describes "
                             f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})") from err
        return {output.name: list(result.shape) for output, result in zip(self._session.get_outputs(), results)}

    def _run(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        if self.device == "cpu":
            feed = {name: _as_numpy(value) for name, value in inputs.items()}
            return dict(zip(self.output_names, self._session.run(list(self.output_names), feed)))
        return self._run_bound(inputs)

    def _run_bound(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        import torch

        torch_device = torch.device(self.device)
        binding = self._session.io_binding()
        tensors = {}
        for spec in self.inputs:
            value = inputs[spec.name]
            tensor = torch.from_numpy(np.ascontiguousarray(value)) if isinstance(value, np.ndarray) else value
            tensors[spec.name] = tensor.to(torch_device, non_blocking=True).contiguous()
        image = tensors[self.inputs[0].name]
        batch, _, height, width = image.shape
        outputs = {}
        for name, (shape, dtype) in output_shapes(self.card, batch, height, width).items():
            outputs[name] = torch.empty(shape, dtype=getattr(torch, dtype), device=torch_device)
        for name, tensor in tensors.items():
            binding.bind_input(name, "cuda", device_index(self.device), np.float32, tuple(tensor.shape),
                               tensor.data_ptr())
        for name, tensor in outputs.items():
            binding.bind_output(name, "cuda", device_index(self.device), _numpy_dtype(tensor.dtype),
                                tuple(tensor.shape), tensor.data_ptr())
        # ONNX Runtime runs on its own CUDA stream: the inputs written on torch's stream must be
        # complete first. run_with_iobinding returns after its stream has finished.
        torch.cuda.current_stream(torch_device).synchronize()
        self._session.run_with_iobinding(binding)
        return {name: outputs[name] for name in self.output_names}

    def synchronize(self) -> None:
        if self.device != "cpu":
            import torch

            torch.cuda.synchronize(torch.device(self.device))

    def _release(self) -> None:
        self._session = None


def _as_numpy(value: Any) -> np.ndarray:
    if isinstance(value, np.ndarray):
        return np.ascontiguousarray(value)
    return value.detach().cpu().contiguous().numpy()


def _numpy_dtype(torch_dtype: Any) -> Any:
    return {"torch.float32": np.float32, "torch.float16": np.float16, "torch.bool": np.bool_,
            "torch.int64": np.int64, "torch.int32": np.int32}[str(torch_dtype)]
