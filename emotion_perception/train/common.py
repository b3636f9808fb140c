"""Training infrastructure shared by the BENet and CAHFW-Net trainers (torchvision-references style).

Single process or ``torchrun`` DDP (``init_process_group`` with gloo on CPU, nccl on GPU);
rank 0 alone writes logs, TensorBoard scalars and checkpoints. Nothing here knows a model:
trainers pass their model, config and metrics in.

Checkpoint layout (docs/ARCHITECTURE.md): ``{"model", "model_name", "config", "optimizer",
"scheduler", "scaler", "epoch", "metrics", "train_config"}``, every value made of tensors and
plain containers so that ``torch.load(..., weights_only=True)`` reads it back.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import math
import os
import random
import time
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from emotion_perception.errors import FieldError


class ConfigError(FieldError):
    """A bad training recipe; the message names the file and the field."""


class NonFiniteLossError(RuntimeError):
    """Raised when a loss becomes NaN or infinite; training stops rather than corrupt weights."""


# --------------------------------------------------------------------------- recipes


def _merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _merge(dict(merged[key]), value)
        else:
            merged[key] = value
    return merged


def load_recipe(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Read a training YAML; a ``base: other.yaml`` key (relative to the file) is read first.

    Recipes such as head ablations therefore state only what differs from the main recipe.
    """
    import yaml

    path = Path(path).resolve()
    if path in _seen:
        raise ConfigError(path, "base", "circular 'base' chain")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: training config not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise ConfigError(path, "<file>", f"not valid YAML ({err})") from err
    if not isinstance(data, dict):
        raise ConfigError(path, "<file>", f"expected a mapping at the top level, got {type(data).__name__}")
    base = data.pop("base", None)
    if base is None:
        return data
    if not isinstance(base, str):
        raise ConfigError(path, "base", "expected a file name")
    return _merge(load_recipe(path.parent / base, _seen + (path,)), data)


def dataclass_from_mapping(cls: type, values: Mapping[str, Any], source: str | Path) -> Any:
    """Build dataclass ``cls`` from ``values``, naming the file and field of any bad entry.

    Lists become tuples where the field's default is a tuple; numbers are coerced to the type
    of the default (YAML reads ``1e-3`` as a string and ``250`` as an int for a float field).
    """
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(source, unknown[0], f"unknown field; known fields: {', '.join(sorted(fields))}")
    kwargs: dict[str, Any] = {}
    for name, value in values.items():
        field = fields[name]
        default = field.default if field.default is not dataclasses.MISSING else (
            field.default_factory() if field.default_factory is not dataclasses.MISSING else None
        )
        try:
            kwargs[name] = _coerce(value, default)
        except (TypeError, ValueError) as err:
            raise ConfigError(source, name, f"{value!r} does not fit ({err})") from err
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as err:
        raise ConfigError(source, "<config>", str(err)) from err


def _coerce(value: Any, default: Any) -> Any:
    if value is None or default is None:
        return value
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise TypeError("expected true or false")
        return value
    if isinstance(default, int) and not isinstance(default, bool):
        if isinstance(value, bool) or float(value) != int(float(value)):
            raise TypeError("expected an integer")
        return int(float(value))
    if isinstance(default, float):
        if isinstance(value, bool):
            raise TypeError("expected a number")
        return float(value)
    if isinstance(default, tuple):
        if isinstance(value, str):
            value = [item.strip() for item in value.split(",") if item.strip()]
        if not isinstance(value, (list, tuple)):
            raise TypeError("expected a list")
        return tuple(value)
    if isinstance(default, str):
        if not isinstance(value, str):
            raise TypeError("expected a string")
        return value
    if isinstance(default, dict):
        if not isinstance(value, Mapping):
            raise TypeError("expected a mapping")
        return dict(value)
    return value


# --------------------------------------------------------------------------- processes and devices


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


def select_device(preference: str = "auto", local_rank: int = 0) -> torch.device:
    """``auto`` picks CUDA (GPU ``local_rank``) when available, else CPU; ``cpu``/``cuda`` force it."""
    if preference not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be auto, cpu or cuda, got '{preference}'")
    use_cuda = preference == "cuda" or (preference == "auto" and torch.cuda.is_available())
    if use_cuda:
        if not torch.cuda.is_available():
            raise RuntimeError("device 'cuda' requested but CUDA is not available")
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device("cpu")


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

    No barrier first: trainers call this from ``finally``, and a rank that failed must exit (so
    torchrun stops the others) rather than wait for ranks that will never arrive.
    """
    if ctx.distributed and dist.is_initialized():
        dist.destroy_process_group()


def seed_everything(seed: int, rank: int = 0) -> None:
    """Seed Python, numpy and torch; each rank gets its own stream so augmentations differ."""
    seed = seed + rank
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _seed_worker(worker_id: int) -> None:
    # torch seeds each worker; numpy and random follow from it so augmentations differ per worker.
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)
    random.seed(worker_seed)


def build_loader(
    dataset: torch.utils.data.Dataset,
    batch_size: int,
    *,
    ctx: DistributedContext,
    shuffle: bool,
    collate_fn: Any,
    workers: int = 0,
    seed: int = 0,
    drop_last: bool = False,
    persistent_workers: bool = False,
) -> torch.utils.data.DataLoader:
    """DataLoader over a DistributedSampler (under DDP each rank reads its own shard).

    ``batch_size`` is per process. Call :func:`set_loader_epoch` each epoch so shuffling (and a
    dataset's own ``set_epoch``, if it has one) changes between epochs. Persistent workers keep
    their copy of the dataset, so they would miss a dataset's ``set_epoch``: off by default.
    """
    # A DistributedSampler even for one process: its order is a function of (seed, epoch), so a
    # resumed run sees the same batches as an uninterrupted one.
    sampler = torch.utils.data.DistributedSampler(
        dataset, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=shuffle, seed=seed, drop_last=drop_last
    )
    generator = torch.Generator()
    generator.manual_seed(seed + ctx.rank)
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        collate_fn=collate_fn,
        drop_last=drop_last,
        pin_memory=ctx.device.type == "cuda",
        worker_init_fn=_seed_worker,
        generator=generator,
        persistent_workers=persistent_workers and workers > 0,
    )


def set_loader_epoch(loader: torch.utils.data.DataLoader, epoch: int) -> None:
    """Reshuffle the loader's sampler for ``epoch`` and tell a dataset with ``set_epoch`` too."""
    if isinstance(loader.sampler, torch.utils.data.DistributedSampler):
        loader.sampler.set_epoch(epoch)
    if hasattr(loader.dataset, "set_epoch"):
        loader.dataset.set_epoch(epoch)


def unwrap_model(model: nn.Module) -> nn.Module:
    """The module inside a DistributedDataParallel wrapper (or the model itself)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def reduce_mean(value: float | torch.Tensor, ctx: DistributedContext, weight: float = 1.0) -> float:
    """Weighted mean of ``value`` over all ranks (``weight`` = e.g. the rank's sample count)."""
    if not ctx.distributed:
        return float(value)
    data = torch.tensor([float(value) * weight, weight], dtype=torch.float64, device=_collective_device(ctx))
    dist.all_reduce(data)
    return float(data[0] / data[1]) if data[1] > 0 else float("nan")


def _collective_device(ctx: DistributedContext) -> torch.device:
    return ctx.device if ctx.device.type == "cuda" else torch.device("cpu")


# --------------------------------------------------------------------------- mixed precision


def autocast_for(device: torch.device, enabled: bool = True) -> torch.autocast:
    """float16 autocast on CUDA; disabled on CPU (where it would slow training down)."""
    return torch.autocast(device_type=device.type, dtype=torch.float16, enabled=enabled and device.type == "cuda")


def grad_scaler_for(device: torch.device, enabled: bool = True) -> torch.amp.GradScaler:
    """A GradScaler active only with CUDA mixed precision (a pass-through elsewhere)."""
    return torch.amp.GradScaler("cuda", enabled=enabled and device.type == "cuda")


def check_finite(losses: Mapping[str, torch.Tensor | float], step: int) -> None:
    """Raise :class:`NonFiniteLossError` naming the first non-finite loss term."""
    for name, value in losses.items():
        number = float(value.detach()) if isinstance(value, torch.Tensor) else float(value)
        if not math.isfinite(number):
            raise NonFiniteLossError(f"loss '{name}' is {number} at step {step}; stopping training")


# --------------------------------------------------------------------------- checkpoints


def save_checkpoint(
    path: str | Path,
    *,
    model: nn.Module,
    model_name: str,
    model_config: Any,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    scaler: torch.amp.GradScaler | None = None,
    epoch: int = 0,
    metrics: Mapping[str, Any] | None = None,
    train_config: Any = None,
) -> Path:
    """Write a checkpoint atomically (temporary file, then rename) and return its path.

    ``epoch`` is the number of completed epochs; configs may be dataclasses (stored as dicts).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {
        "model": unwrap_model(model).state_dict(),
        "model_name": model_name,
        "config": _plain(model_config),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "scaler": scaler.state_dict() if scaler is not None else None,
        "epoch": int(epoch),
        "metrics": _plain(dict(metrics or {})),
        "train_config": _plain(train_config),
    }
    temporary = path.with_name(path.name + ".tmp")
    torch.save(state, temporary)
    os.replace(temporary, path)
    return path


def _plain(value: Any) -> Any:
    """Dataclasses -> dicts, tuples -> lists, Paths -> str, numpy scalars -> Python numbers."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


CHECKPOINT_KEYS = ("model", "model_name", "config", "epoch")


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a training checkpoint (weights_only=True); FileNotFoundError or CheckpointError otherwise."""
    from emotion_perception.nets.factory import read_checkpoint

    return read_checkpoint(path, map_location, required=CHECKPOINT_KEYS)


def restore_training_state(
    checkpoint: Mapping[str, Any],
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    scaler: torch.amp.GradScaler | None = None,
    source: str | Path = "<checkpoint>",
) -> int:
    """Load weights and optimiser/scheduler/scaler state; returns the epoch to continue from."""
    try:
        unwrap_model(model).load_state_dict(checkpoint["model"])
    except RuntimeError as err:
        raise ConfigError(source, "model", f"weights do not fit this model: {err}") from err
    for name, target in (("optimizer", optimizer), ("scheduler", scheduler), ("scaler", scaler)):
        state = checkpoint.get(name)
        if target is None:
            continue
        if state is None:
            raise ConfigError(source, name, "missing; cannot resume training from this checkpoint")
        target.load_state_dict(state)
    return int(checkpoint["epoch"])


# --------------------------------------------------------------------------- logging


class _TqdmHandler(logging.Handler):
    """Writes log lines through tqdm so they do not tear the progress bar."""

    def emit(self, record: logging.LogRecord) -> None:
        from tqdm import tqdm

        try:
            tqdm.write(self.format(record))
        except Exception:  # noqa: BLE001 - logging must never raise into training
            self.handleError(record)


def setup_run_logger(run_dir: str | Path, ctx: DistributedContext, name: str = "emotion_perception.train") -> logging.Logger:
    """Logger writing to the console and ``run_dir/train.log`` on rank 0; warnings only elsewhere."""
    logger = logging.getLogger(name)
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    logger.propagate = False
    formatter = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S")
    console = _TqdmHandler()
    console.setFormatter(formatter)
    logger.addHandler(console)
    if ctx.is_main:
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        log_file = logging.FileHandler(run_dir / "train.log", encoding="utf-8")
        log_file.setFormatter(formatter)
        logger.addHandler(log_file)
        logger.setLevel(logging.INFO)
    else:
        logger.setLevel(logging.WARNING)
    return logger


def close_run_logger(logger: logging.Logger) -> None:
    """Flush and detach the handlers :func:`setup_run_logger` added."""
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()


class ScalarWriter:
    """TensorBoard scalars from rank 0 (``run_dir/tensorboard``); other ranks write nothing."""

    def __init__(self, run_dir: str | Path, ctx: DistributedContext) -> None:
        self._writer = None
        if ctx.is_main:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=str(Path(run_dir) / "tensorboard"))

    def add_scalars(self, prefix: str, values: Mapping[str, float], step: int) -> None:
        """One scalar per entry, tagged ``prefix/name``."""
        if self._writer is None:
            return
        for name, value in values.items():
            self._writer.add_scalar(f"{prefix}/{name}", float(value), step)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.flush()
            self._writer.close()


class SmoothedValue:
    """Running statistics of one scalar: a windowed median/mean for display, a global average."""

    def __init__(self, window: int = 20) -> None:
        self.window: deque[float] = deque(maxlen=window)
        self.total = 0.0
        self.count = 0.0

    def update(self, value: float, weight: float = 1.0) -> None:
        self.window.append(value)
        self.total += value * weight
        self.count += weight

    @property
    def smoothed(self) -> float:
        return float(np.median(self.window)) if self.window else float("nan")

    @property
    def global_avg(self) -> float:
        return self.total / self.count if self.count else float("nan")


class MetricLogger:
    """Meters plus a tqdm bar around a data iterator (rank 0 shows it; others stay silent).

    ``for batch in logger.log_every(loader): ...; logger.update(loss=...)`` keeps the loop body
    free of display code; :meth:`averages` gives the epoch means, reduced over ranks under DDP.
    """

    def __init__(self, description: str, ctx: DistributedContext, window: int = 20) -> None:
        self.description = description
        self.ctx = ctx
        self.window = window
        self.meters: dict[str, SmoothedValue] = {}
        self.seconds = 0.0  # wall time of the last log_every loop

    def update(self, weight: float = 1.0, **values: float | torch.Tensor) -> None:
        for name, value in values.items():
            number = float(value.detach()) if isinstance(value, torch.Tensor) else float(value)
            self.meters.setdefault(name, SmoothedValue(self.window)).update(number, weight)

    def log_every(self, iterable: Iterable[Any], total: int | None = None) -> Iterator[Any]:
        from tqdm import tqdm

        if total is None and hasattr(iterable, "__len__"):
            total = len(iterable)
        start = time.perf_counter()
        with tqdm(iterable, total=total, desc=self.description, disable=not self.ctx.is_main,
                  dynamic_ncols=True, leave=False) as bar:
            for item in bar:
                yield item
                bar.set_postfix({name: f"{meter.smoothed:.4f}" for name, meter in self.meters.items()}, refresh=False)
        self.seconds = time.perf_counter() - start

    def averages(self) -> dict[str, float]:
        """Global averages of every meter, over all ranks."""
        if not self.ctx.distributed:
            return {name: meter.global_avg for name, meter in self.meters.items()}
        names = sorted(self.meters)
        data = torch.tensor(
            [[self.meters[n].total, self.meters[n].count] for n in names], dtype=torch.float64,
            device=_collective_device(self.ctx),
        ).reshape(-1, 2)
        dist.all_reduce(data)
        return {n: float(data[i, 0] / data[i, 1]) if data[i, 1] > 0 else float("nan") for i, n in enumerate(names)}


class Deadline:
    """A wall-clock budget (``--max-minutes``); every rank agrees on when it has passed."""

    def __init__(self, minutes: float | None) -> None:
        self.minutes = minutes
        self._end = None if minutes is None or minutes <= 0 else time.monotonic() + 60.0 * minutes

    def passed(self, ctx: DistributedContext) -> bool:
        local = self._end is not None and time.monotonic() >= self._end
        if not ctx.distributed:
            return local
        flag = torch.tensor([1.0 if local else 0.0], device=_collective_device(ctx))
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item() > 0)


def jsonable(value: Any) -> Any:
    """Metrics as strict JSON: NaN/inf become null, numpy values become Python ones."""
    value = _plain(value)
    if isinstance(value, Mapping):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
