"""Parameter and multiply-accumulate (MAC) counts of a model on example inputs.

MACs are counted by forward hooks on Conv1d/Conv2d/ConvTranspose2d/Linear and by intercepting
``matmul``/``bmm``/``@`` and ``scaled_dot_product_attention`` (attention-style products). Bias
additions, normalisation, activations and pooling are not MACs and are not counted (the usual
convention of published GMAC figures).
Running the model on the ``meta`` device gives the same counts without computing anything.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn
from torch.nn import functional as F
from torch.overrides import TorchFunctionMode


def conv_macs(module: nn.Conv1d | nn.Conv2d, inputs: torch.Tensor, output: torch.Tensor) -> int:
    """MACs of one Conv1d/Conv2d call: every output element sums in_channels/groups x kernel products."""
    kernel = math.prod(module.kernel_size)
    return output.numel() * (module.in_channels // module.groups) * kernel


def conv_transpose_macs(module: nn.ConvTranspose2d, inputs: torch.Tensor, output: torch.Tensor) -> int:
    """MACs of a ConvTranspose call: every input element scatters into out_channels/groups x kernel outputs."""
    kernel = math.prod(module.kernel_size)
    return inputs.numel() * (module.out_channels // module.groups) * kernel


def linear_macs(module: nn.Linear, inputs: torch.Tensor, output: torch.Tensor) -> int:
    """MACs of a Linear call: every output element sums in_features products."""
    return output.numel() * module.in_features


# Each counter is only called on instances of its key type (looked up by ``type(module)``).
_MODULE_MACS: dict[type[nn.Module], Callable[[Any, torch.Tensor, torch.Tensor], int]] = {
    nn.Conv1d: conv_macs,
    nn.Conv2d: conv_macs,
    nn.ConvTranspose2d: conv_transpose_macs,
    nn.Linear: linear_macs,
}


def matmul_macs(a: torch.Tensor, b: torch.Tensor) -> int:
    """MACs of ``a @ b`` with broadcasting: output elements x the contracted dimension."""
    if a.dim() == 1 and b.dim() == 1:
        return a.shape[0]
    a2 = a.unsqueeze(0) if a.dim() == 1 else a
    b2 = b.unsqueeze(-1) if b.dim() == 1 else b
    batch = torch.broadcast_shapes(a2.shape[:-2], b2.shape[:-2])
    return math.prod(batch) * a2.shape[-2] * b2.shape[-1] * a2.shape[-1]


def attention_macs(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> int:
    """MACs of ``scaled_dot_product_attention``: ``Q K^T`` (L x S x E) plus ``A V`` (L x S x Ev)."""
    batch = torch.broadcast_shapes(query.shape[:-2], key.shape[:-2], value.shape[:-2])
    queries, keys = query.shape[-2], key.shape[-2]
    return math.prod(batch) * queries * keys * (query.shape[-1] + value.shape[-1])


class _MatmulCounter(TorchFunctionMode):
    """Adds the MACs of every matmul/bmm/@ and fused attention issued while active."""

    _FUNCTIONS: ClassVar[frozenset[Callable[..., Any]]] = frozenset(
        {torch.matmul, torch.bmm, torch.Tensor.matmul, torch.Tensor.bmm, torch.Tensor.__matmul__}
    )

    def __init__(self) -> None:
        super().__init__()
        self.macs = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in self._FUNCTIONS and len(args) >= 2:
            self.macs += matmul_macs(args[0], args[1])
        elif func is F.scaled_dot_product_attention:
            # One fused op: its two products never reach torch.matmul, so count them here.
            named = {**dict(zip(("query", "key", "value"), args)), **kwargs}
            self.macs += attention_macs(named["query"], named["key"], named["value"])
        return func(*args, **kwargs)


@dataclass
class ModelProfile:
    """Counts of one forward pass."""

    params: int  # all parameters of the model
    inference_params: int  # parameters of the modules that ran in the profiled forward
    macs: int  # multiply-accumulates of the profiled forward
    macs_by_type: dict[str, int] = field(default_factory=dict)  # module/op type -> MACs
    input_shapes: list[tuple[int, ...]] = field(default_factory=list)
    output_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)

    @property
    def gmacs(self) -> float:
        return self.macs / 1e9


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (shared ones counted once)."""
    return sum(p.numel() for p in model.parameters())


def _output_shapes(output: Any, prefix: str = "output") -> dict[str, tuple[int, ...]]:
    if isinstance(output, torch.Tensor):
        return {prefix: tuple(output.shape)}
    if isinstance(output, Mapping):
        shapes: dict[str, tuple[int, ...]] = {}
        for key, value in output.items():
            shapes.update(_output_shapes(value, str(key)))
        return shapes
    if isinstance(output, Sequence) and not isinstance(output, str):
        shapes = {}
        for index, value in enumerate(output):
            shapes.update(_output_shapes(value, f"{prefix}[{index}]"))
        return shapes
    return {}


@torch.no_grad()
def profile_model(model: nn.Module, inputs: Sequence[torch.Tensor], **forward_kwargs: Any) -> ModelProfile:
    """Count parameters and MACs of ``model(*inputs, **forward_kwargs)``.

    ``inference_params`` counts the parameters owned directly by modules that ran, so branches
    the forward skips (training-only heads) are excluded.
    """
    macs_by_type: dict[str, int] = {}
    executed: set[int] = set()

    def hook(module: nn.Module, args: tuple, output: Any) -> None:
        executed.add(id(module))
        counter = _MODULE_MACS.get(type(module))
        if counter is not None:
            name = type(module).__name__
            macs_by_type[name] = macs_by_type.get(name, 0) + counter(module, args[0], output)

    handles = [m.register_forward_hook(hook) for m in model.modules()]
    matmuls = _MatmulCounter()
    try:
        with matmuls:
            output = model(*inputs, **forward_kwargs)
    finally:
        for handle in handles:
            handle.remove()
    if matmuls.macs:
        macs_by_type["matmul"] = matmuls.macs

    seen: set[int] = set()
    inference_params = 0
    for module in model.modules():
        if id(module) not in executed:
            continue
        for param in module.parameters(recurse=False):
            if id(param) not in seen:
                seen.add(id(param))
                inference_params += param.numel()
    return ModelProfile(
        params=count_parameters(model),
        inference_params=inference_params,
        macs=sum(macs_by_type.values()),
        macs_by_type=macs_by_type,
        input_shapes=[tuple(x.shape) for x in inputs],
        output_shapes=_output_shapes(output),
    )
