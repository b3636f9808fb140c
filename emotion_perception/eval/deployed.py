"""The network an evaluation scores: the checkpoint in PyTorch, or a deployed form of it.

``eval benet|cahfw`` runs the checkpoint's own ``nn.Module`` by default (``--backend torch
--precision fp32``). With ``--backend onnxruntime|tensorrt`` and ``--precision fp32|fp16|int8``
it scores the graph a robot runs instead, opened through the runtime's backend table
(:mod:`emotion_perception.runtime.backend`): the cached ONNX export of the checkpoint, its INT8
(QDQ) quantisation calibrated on synthetic scenes, or a TensorRT engine. The papers' metrics
then measure what deployment costs in accuracy with the evaluation code unchanged.

Both forms are called the same way, ``network(*inputs) -> {output name: tensor}`` on the
evaluation's torch device: BENet ``image`` (B,3,H,W) -> the maps graph's outputs (``heatmap_4``
... ``vad_2``, the keys of ``BENet.forward(x)``), CAHFW-Net ``face``, ``context`` -> ``logits``.
A deployed graph carries what inference runs and nothing else: BENet's image-level heads
(person-centric, background) are not in it, so ``EvalNetwork.all_heads`` is False there and
the metrics that need them are reported as not available.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

# Standard library only at module level: the command's parser reads the names below, and
# ``--help`` must not wait for torch.
if TYPE_CHECKING:
    import torch

LOGGER = logging.getLogger(__name__)

EVAL_BACKENDS = ("torch", "onnxruntime", "tensorrt")
EVAL_PRECISIONS = ("fp32", "fp16", "int8")
# The QDQ forms of an INT8 graph (export/quantize.py QUANTISATION_TARGETS; not imported here so
# that the command's parser stays free of heavy imports).
INT8_TARGETS = ("onnxruntime", "tensorrt")


@dataclass(frozen=True)
class Deployment:
    """Which form of the model an evaluation runs (the command's ``--backend``, ``--precision``,
    ``--int8-target``, ``--threads``, ``--cache-dir``)."""

    backend: str = "torch"
    precision: str = "fp32"
    # INT8 only: the QDQ form (onnxruntime: uint8 activations; tensorrt: symmetric int8).
    # None: the backend's own (onnxruntime for ONNX Runtime, tensorrt for TensorRT).
    int8_target: str | None = None
    threads: int | None = None  # CPU intra-op threads (ONNX Runtime; PyTorch process-wide); None: default
    cache_dir: Path | None = None  # exports, quantisations, engines (None: model_files.default_cache_dir())

    @property
    def is_checkpoint_module(self) -> bool:
        """Whether this runs the checkpoint's own module (every head) rather than a deploy graph."""
        return self.backend == "torch" and self.precision == "fp32"

    def resolved_int8_target(self) -> str | None:
        if self.precision != "int8":
            return None
        return self.int8_target or ("tensorrt" if self.backend == "tensorrt" else "onnxruntime")

    def problem(self) -> str | None:
        """Why this combination cannot be evaluated, in one line; None when it can be tried
        (whether the backend runs on this machine is the backend table's to say when it opens)."""
        if self.backend not in EVAL_BACKENDS:
            return f"--backend must be one of {', '.join(EVAL_BACKENDS)}, got {self.backend!r}"
        if self.precision not in EVAL_PRECISIONS:
            return f"--precision must be one of {', '.join(EVAL_PRECISIONS)}, got {self.precision!r}"
        if self.precision == "int8" and self.backend == "torch":
            return ("--precision int8 needs --backend onnxruntime or tensorrt: INT8 is a quantised ONNX graph, "
                    "the torch backend runs the checkpoint in fp32 (or fp16 on a GPU)")
        if self.int8_target is not None:
            if self.int8_target not in INT8_TARGETS:
                return f"--int8-target must be one of {', '.join(INT8_TARGETS)}, got {self.int8_target!r}"
            if self.precision != "int8":
                return f"--int8-target applies to --precision int8, not {self.precision}"
            if self.backend == "tensorrt" and self.int8_target != "tensorrt":
                return "--backend tensorrt builds INT8 from the symmetric (tensorrt) QDQ form only"
        if self.threads is not None and self.threads < 1:
            return f"--threads must be at least 1, got {self.threads}"
        return None

    def check(self) -> None:
        """ValueError with :meth:`problem`'s line, if there is one."""
        problem = self.problem()
        if problem:
            raise ValueError(problem)


@dataclass
class EvalNetwork:
    """``network(*inputs) -> {output name: tensor on device}``, and what it is (see module docstring)."""

    run: Callable[..., Mapping[str, torch.Tensor]]
    device: torch.device  # where inputs go and outputs come back
    all_heads: bool  # the checkpoint's module itself (BENet image-level heads reachable)
    record: dict[str, Any]  # what ran, for metrics.json ("deployment")
    close: Callable[[], None] = lambda: None

    def __call__(self, *inputs: torch.Tensor) -> Mapping[str, torch.Tensor]:
        return self.run(*inputs)

    def label(self) -> str:
        """e.g. ``onnxruntime int8 (QDQ for tensorrt) on cpu``."""
        target = self.record.get("int8_target")
        return (f"{self.record['backend']} {self.record['precision']}"
                f"{f' (QDQ for {target})' if target else ''} on {self.record['device']}")


def module_network(model: torch.nn.Module, model_name: str, device: torch.device, checkpoint: str | Path,
                   threads: int | None = None) -> EvalNetwork:
    """The checkpoint's own module (eval mode, on ``device``) as an :class:`EvalNetwork`."""
    import torch

    if threads is not None:
        torch.set_num_threads(int(threads))
    model.eval()

    def run(*inputs: torch.Tensor) -> Mapping[str, torch.Tensor]:
        if model_name == "cahfw":
            return {"logits": model(*inputs)}
        return model(*inputs)

    return EvalNetwork(run, device, all_heads=True, record={
        "backend": "torch", "precision": "fp32", "device": str(device), "int8_target": None,
        "model_file": str(checkpoint), "graph": "the checkpoint's module (every head)",
        "threads": torch.get_num_threads()})


def resolve_target(deployment: Deployment, device: str) -> tuple[str, str, str]:
    """(backend, device, reason) the deployed form will run on, or ValueError in one line when it
    cannot run here (backend not installed, no GPU, a precision the backend does not run on that
    device): cheap, so an evaluation says so before it reads a split."""
    from emotion_perception.runtime.backend import backend_entry, choose_backend, probe_availability

    deployment.check()
    name, target_device, reason = choose_backend("checkpoint", deployment.backend, device, probe_availability())
    backend_entry(name).check_precision(deployment.precision, target_device)
    return name, target_device, reason


def checked_load_device(deployment: Deployment, device: str) -> torch.device:
    """Where an evaluation loads its checkpoint, after checking (cheaply, before any data is
    read) that ``deployment`` can run here: the evaluation device for the checkpoint's module,
    the CPU for a deployed form (the checkpoint is only exported; the graph runs where
    :func:`resolve_target` says)."""
    import torch

    from emotion_perception.devices import select_device

    if deployment.is_checkpoint_module:
        deployment.check()
        return select_device(device)
    resolve_target(deployment, device)
    return torch.device("cpu")


def eval_network(model: torch.nn.Module, model_name: str, checkpoint: str | Path, deployment: Deployment,
                 device: str, load_device: torch.device, max_batch: int) -> EvalNetwork:
    """The network an evaluation runs: ``model`` itself on ``load_device`` (the
    :func:`checked_load_device` of the default torch fp32 form), else ``checkpoint``'s deployed
    form (:func:`open_network`)."""
    if deployment.is_checkpoint_module:
        return module_network(model, model_name, load_device, checkpoint, deployment.threads)
    return open_network(checkpoint, deployment, device, max_batch)


def open_network(checkpoint: str | Path, deployment: Deployment, device: str, max_batch: int) -> EvalNetwork:
    """A deployed form of ``checkpoint`` (not the plain torch fp32 module: see
    :func:`module_network`), opened through the runtime's backend table on ``device``
    (``auto``: a GPU the backend can use here, else the CPU). ``max_batch``: the largest batch
    one call carries (sizes TensorRT engine profiles)."""
    import numpy as np
    import torch

    from emotion_perception.runtime.backend import OpenOptions, backend_entry, probe_availability
    from emotion_perception.runtime.model_files import cached_int8_onnx, cached_onnx, default_cache_dir

    if deployment.is_checkpoint_module:
        raise ValueError("open_network: the torch fp32 form is the checkpoint's module (module_network)")
    name, target_device, reason = resolve_target(deployment, device)
    available = probe_availability()
    cache = deployment.cache_dir or default_cache_dir()
    LOGGER.info("evaluating on %s %s on %s (%s)", name, deployment.precision, target_device, reason)
    options = OpenOptions(threads=deployment.threads, max_batch=max(1, int(max_batch)),
                          onnxruntime_providers=available.onnxruntime_providers)
    entry = backend_entry(name)
    int8_target = deployment.resolved_int8_target()
    if name == "onnxruntime" and int8_target == "tensorrt":
        # The backend quantises for its own runtime; the symmetric form TensorRT takes is made
        # here from the same cached fp32 export and run by ONNX Runtime as an ONNX file.
        fp32_path, _ = cached_onnx(checkpoint, cache, "fp32")
        int8_path, _ = cached_int8_onnx(fp32_path, cache, target="tensorrt")
        backend = entry.open(int8_path, "onnx", target_device, "int8", cache, options)
    else:
        backend = entry.open(checkpoint, "checkpoint", target_device, deployment.precision, cache, options)
    torch_device = torch.device(backend.device)
    input_names = tuple(spec.name for spec in backend.inputs)
    if backend.card.with_decode:  # the runtime exports the maps graph; decoding is eval's own
        raise ValueError(f"{checkpoint}: the {name} graph decodes in-graph; evaluation needs the raw maps")

    def run(*inputs: torch.Tensor) -> Mapping[str, torch.Tensor]:
        if len(inputs) != len(input_names):
            raise ValueError(f"the {name} graph takes {input_names}, got {len(inputs)} inputs")
        feed = {key: value.detach().cpu().numpy() if backend.array_type == "numpy" else value.to(torch_device)
                for key, value in zip(input_names, inputs)}
        outputs = backend.infer(feed)
        return {key: (torch.from_numpy(np.asarray(value)) if isinstance(value, np.ndarray) else value).to(torch_device)
                for key, value in outputs.items()}

    card = backend.card
    record = {"backend": name, "precision": backend.precision, "device": backend.device,
              "int8_target": card.source.get("int8_target") if card.precision == "int8" else None,
              "model_file": str(checkpoint), "graph": "the runtime's deploy graph of the checkpoint",
              "details": backend.details, "card": card.to_dict()}
    return EvalNetwork(run, torch_device, all_heads=False, record=record, close=backend.close)
