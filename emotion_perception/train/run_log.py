"""What a run reports: its log file, TensorBoard scalars and meters around the data iterator.

Rank 0 writes ``RUN_DIR/train.log`` and ``RUN_DIR/tensorboard``; the other ranks log warnings
only. Meters average over all ranks (torchvision references' ``MetricLogger``).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence, Sized
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from emotion_perception.train.distributed import DistributedContext, collective_device


class _TqdmHandler(logging.Handler):
    """Writes log lines through tqdm so they do not tear the progress bar."""

    def emit(self, record: logging.LogRecord) -> None:
        from tqdm import tqdm

        try:
            tqdm.write(self.format(record))
        except Exception:
            self.handleError(record)


def setup_run_logger(run_dir: str | Path, ctx: DistributedContext,
                     name: str = "emotion_perception.train") -> logging.Logger:
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

    def __init__(self, description: str, ctx: DistributedContext, window: int = 20,
                 start: Mapping[str, Sequence[float]] | None = None) -> None:
        """``start``: the :meth:`totals` of an epoch cut short, which this logger continues."""
        self.description = description
        self.ctx = ctx
        self.window = window
        self.meters: dict[str, SmoothedValue] = {}
        self.seconds = 0.0  # wall time of the last log_every loop
        for name, (total, count) in (start or {}).items():
            # The sums are global: rank 0 carries them, the others start from zero, so the next
            # all-reduce counts them once; every rank holds the name, as collectives need.
            meter = self.meters[name] = SmoothedValue(window)
            if ctx.is_main:
                meter.total, meter.count = float(total), float(count)

    def update(self, weight: float = 1.0, **values: float | torch.Tensor) -> None:
        for name, value in values.items():
            number = float(value.detach()) if isinstance(value, torch.Tensor) else float(value)
            self.meters.setdefault(name, SmoothedValue(self.window)).update(number, weight)

    def log_every(self, iterable: Iterable[Any], total: int | None = None) -> Iterator[Any]:
        from tqdm import tqdm

        if total is None and isinstance(iterable, Sized):
            total = len(iterable)
        start = time.perf_counter()
        with tqdm(iterable, total=total, desc=self.description, disable=not self.ctx.is_main,
                  dynamic_ncols=True, leave=False) as bar:
            for item in bar:
                yield item
                bar.set_postfix({name: f"{meter.smoothed:.4f}" for name, meter in self.meters.items()}, refresh=False)
        self.seconds = time.perf_counter() - start

    def totals(self) -> dict[str, list[float]]:
        """``{name: [weighted sum, total weight]}`` of every meter, summed over all ranks."""
        names = sorted(self.meters)
        data = torch.tensor([[self.meters[n].total, self.meters[n].count] for n in names], dtype=torch.float64,
                            device=collective_device(self.ctx)).reshape(-1, 2)
        if self.ctx.distributed:
            dist.all_reduce(data)
        return {n: [float(data[i, 0]), float(data[i, 1])] for i, n in enumerate(names)}

    def averages(self) -> dict[str, float]:
        """Global averages of every meter, over all ranks (NaN for a meter with no weight)."""
        return {n: total / count if count > 0 else float("nan") for n, (total, count) in self.totals().items()}
