"""Single process or ``torchrun`` DDP: the process group, collectives and a shared deadline.

``init_process_group`` uses nccl on GPUs and gloo on CPUs; rank 0 alone writes files. Every
function here that talks to the other ranks must be called by all of them, in the same order.
"""

from __future__ import annotations

import datetime
import os
import time
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from emotion_perception.devices import select_device


@dataclass(frozen=True)
class DistributedContext:
    """Where this process runs: its rank among ``world_size`` processes and its device."""

    rank: int
    local_rank: int
    world_size: int
    device: torch.device

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device_preference: str = "auto") -> DistributedContext:
    """Join the process group ``torchrun`` describes (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_*).

    Without those variables this is a single process. nccl serves GPUs, gloo CPUs.
    """
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return DistributedContext(0, 0, 1, select_device(device_preference))
    rank = int(os.environ["RANK"])
    world_size = int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    device = select_device(device_preference, local_rank)
    if world_size > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(
            backend="nccl" if device.type == "cuda" else "gloo",
            rank=rank,
            world_size=world_size,
            timeout=datetime.timedelta(minutes=30),
        )
    return DistributedContext(rank, local_rank, world_size, device)


def cleanup_distributed(ctx: DistributedContext) -> None:
    """Leave the process group (a no-op for a single process).

    No barrier first: the loop calls this from ``finally``, and a rank that failed must exit (so
    torchrun stops the others) rather than wait for ranks that will never arrive.
    """
    if ctx.distributed and dist.is_initialized():
        dist.destroy_process_group()


def unwrap_model(model: nn.Module) -> nn.Module:
    """The module inside a DistributedDataParallel wrapper (or the model itself)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def collective_device(ctx: DistributedContext) -> torch.device:
    """Where tensors for collectives live: the GPU under nccl, the CPU under gloo."""
    return ctx.device if ctx.device.type == "cuda" else torch.device("cpu")


def reduce_mean(value: float | torch.Tensor, ctx: DistributedContext, weight: float = 1.0) -> float:
    """Weighted mean of ``value`` over all ranks (``weight`` = e.g. the rank's sample count)."""
    if not ctx.distributed:
        return float(value)
    data = torch.tensor([float(value) * weight, weight], dtype=torch.float64, device=collective_device(ctx))
    dist.all_reduce(data)
    return float(data[0] / data[1]) if data[1] > 0 else float("nan")


class Deadline:
    """A wall-clock budget (``--max-minutes``); every rank agrees on when it has passed."""

    def __init__(self, minutes: float | None) -> None:
        self.minutes = minutes
        self._end = None if minutes is None or minutes <= 0 else time.monotonic() + 60.0 * minutes

    def passed(self, ctx: DistributedContext) -> bool:
        local = self._end is not None and time.monotonic() >= self._end
        if not ctx.distributed:
            return local
        flag = torch.tensor([1.0 if local else 0.0], device=collective_device(ctx))
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item() > 0)
