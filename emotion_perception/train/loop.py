"""The one training loop of every model: :func:`fit` plus :func:`train_one_epoch`.

The torchvision references' shape: one straight function builds, resumes, trains epoch after
epoch, evaluates and checkpoints; a model supplies a small :class:`TrainingTask` (build the
model, loaders, optimiser and scheduler; compute one step's losses; evaluate; which metric
picks ``best.pt``). ``fit`` owns everything the models share:

* ``torchrun`` DDP (``train/distributed.py``): SyncBatchNorm on GPUs, each rank reads its own
  shard, rank 0 alone writes files;
* the checkpoints ``last.pt`` (after every epoch, and when a run stops), ``best.pt`` (the best
  value of the task's metric), ``final.pt`` (the end); their contents: ``train/checkpoints.py``;
* ``history.json``, one row per epoch: ``epoch``, ``complete``, ``step``, the epoch means of
  the training terms (``train_*``), ``lr``, and the evaluation (``val_*``) every ``val_every``
  epochs and after the last;
* stopping inside an epoch at ``max_steps`` (counted over the whole run) or when the
  ``--max-minutes`` budget has passed; abort on a non-finite loss;
* resume: a checkpoint's ``epoch`` counts complete passes and ``step`` optimisation steps; a run
  stopped inside a pass also saves how many of its steps ran and the running sums of its
  meters, so a resumed run trains exactly the batches that pass had left, with the same
  learning rate and step counter, and the pass's row covers all of its steps. Resuming a cut
  run therefore ends with the weights of an uninterrupted one (test/test_train_loop.py).

Seeding, one rule for every model and rank count:

1. weights: every rank seeds torch, numpy and random with the recipe's ``seed`` before the
   model is built, so all ranks start from the same weights;
2. data: each epoch's order is a function of (seed, epoch), sharded by rank; a sample's
   augmentation is drawn from (seed, epoch, sample index), with the same seed on every rank:
   ranks read different samples, so their augmentations differ, and a sample looks the same
   whatever the rank or worker count;
3. steps: before every optimisation step the global streams are reseeded from
   (seed, rank, step), so dropout differs between ranks and continues exactly after a resume.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from emotion_perception.serialization import jsonable
from emotion_perception.train.checkpoints import load_checkpoint, restore_training_state, save_checkpoint
from emotion_perception.train.data_loading import set_loader_epoch
from emotion_perception.train.distributed import (
    Deadline,
    DistributedContext,
    cleanup_distributed,
    init_distributed,
)
from emotion_perception.train.precision import grad_scaler_for
from emotion_perception.train.recipes import ConfigError
from emotion_perception.train.run_log import MetricLogger, ScalarWriter, close_run_logger, setup_run_logger


class NonFiniteLossError(RuntimeError):
    """Raised when a loss becomes NaN or infinite; training stops rather than corrupt weights."""


def check_finite(losses: Mapping[str, torch.Tensor | float], step: int) -> None:
    """Raise :class:`NonFiniteLossError` naming the first non-finite loss term."""
    for name, value in losses.items():
        number = float(value.detach()) if isinstance(value, torch.Tensor) else float(value)
        if not math.isfinite(number):
            raise NonFiniteLossError(f"loss '{name}' is {number} at step {step}; stopping training")


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's and torch's global streams (torch's on every GPU too)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 - seeding the global stream is the point
    torch.manual_seed(seed)


def seed_step(seed: int, rank: int, step: int) -> None:
    """Seed the global streams for optimisation step ``step`` of ``rank`` (rule 3 above)."""
    seed_everything(int(np.random.SeedSequence([seed, rank, step]).generate_state(1)[0]))


@dataclass(frozen=True)
class RunOptions:
    """What the command line adds to a recipe."""

    run_dir: Path
    device: str = "auto"  # auto | cpu | cuda | cuda:N (devices.select_device)
    resume: Path | None = None  # a run's last.pt
    max_minutes: float | None = None  # wall-time budget; None = none
    source: str = "<config>"  # the recipe file, for messages

    @classmethod
    def from_args(cls, args: argparse.Namespace, default_run_dir: str | Path) -> RunOptions:
        """The ``train`` command's options (each optional in ``args``); ``default_run_dir`` when no ``--out``."""
        out = getattr(args, "out", None)
        resume = getattr(args, "resume", None)
        return cls(
            run_dir=Path(out) if out else Path(default_run_dir),
            device=getattr(args, "device", None) or "auto",
            resume=Path(resume) if resume else None,
            max_minutes=getattr(args, "max_minutes", None),
            source=str(getattr(args, "config", None) or "<config>"),
        )


class LoopRecipe(Protocol):
    """The recipe fields the loop reads (both trainers' recipe dataclasses have them)."""

    @property
    def epochs(self) -> int: ...  # passes over the training data
    @property
    def seed(self) -> int: ...
    @property
    def max_steps(self) -> int: ...  # stop after this many steps in total; 0 = no limit
    @property
    def val_every(self) -> int: ...  # evaluate every N epochs (and after the last)
    @property
    def log_every(self) -> int: ...  # TensorBoard step scalars every N steps
    @property
    def amp(self) -> bool: ...  # CUDA mixed precision (GradScaler)
    @property
    def grad_clip_norm(self) -> float: ...  # 0 = no clipping


@dataclass(frozen=True)
class StepResult:
    """What one training step computed (``TrainingTask.train_step``)."""

    loss: torch.Tensor  # the scalar backward() runs on
    logged: Mapping[str, torch.Tensor | float]  # the step's terms: epoch means, TensorBoard, finiteness check
    count: int  # samples in the step: the weight of its terms in the epoch means


class TrainingTask(Protocol):
    """What a model supplies to :func:`fit` (``train/benet.py`` BENetTask, ``train/cahfw.py`` CAHFWTask)."""

    model_name: str  # the checkpoints' model_name (nets/factory.py registry)
    description: str  # start of the run's first log line
    best_metric: str  # history key that picks best.pt, e.g. "val_total"
    higher_is_better: bool  # direction of best_metric
    scheduler_interval: Literal["epoch", "step"]  # scheduler.step() after every complete pass | every step
    find_unused_parameters: bool  # DDP: whether a step may leave some parameters without gradient

    def build_model(self, logger: logging.Logger, resuming: bool) -> nn.Module:
        """The model on the CPU, built after the loop seeded (and with its pretrained start unless resuming)."""
        ...

    def build_loaders(self, ctx: DistributedContext) -> tuple[DataLoader, DataLoader | None]:
        """Training and validation loaders (``train/data_loading.py`` build_loader); None: no validation."""
        ...

    def build_optimizer(self, model: nn.Module, steps_per_epoch: int) -> tuple[torch.optim.Optimizer, Any]:
        """Optimiser and learning-rate scheduler of ``model`` (already on its device)."""
        ...

    def train_step(self, model: nn.Module, batch: Any, ctx: DistributedContext) -> StepResult:
        """Forward pass and losses of one batch (the loop does backward and the optimiser step).

        A FloatingPointError (a non-finite term the task detected) stops training.
        """
        ...

    def evaluate(self, model: nn.Module, loader: DataLoader, ctx: DistributedContext) -> dict[str, float]:
        """Means over ``loader``, reduced over ranks; they enter the history as ``val_<name>``."""
        ...


@dataclass
class Progress:
    """Where a run stands; saved in every checkpoint, restored by ``--resume``."""

    epoch: int = 0  # complete passes
    step: int = 0  # optimisation steps taken
    epoch_step: int = 0  # steps already taken of the pass after ``epoch`` (a run stopped inside it)
    epoch_meters: dict[str, list[float]] = field(default_factory=dict)  # that pass's meter sums
    history: list[dict[str, Any]] = field(default_factory=list)
    best: float = math.nan  # best value of the task's best_metric so far; NaN before any

    def checkpoint_fields(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "step": self.step,
                "epoch_progress": {"steps": self.epoch_step, "meters": self.epoch_meters}}


@dataclass
class _Training:
    """What one step changes (and every checkpoint holds)."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler


def _is_better(value: float, best: float, higher_is_better: bool) -> bool:
    if math.isnan(best):
        return not math.isnan(value)
    return value > best if higher_is_better else value < best


def progress_of(checkpoint: Mapping[str, Any], task: TrainingTask) -> Progress:
    """The :class:`Progress` a checkpoint saved (older checkpoints: from their last complete pass)."""
    metrics = checkpoint.get("metrics") or {}
    epoch = int(checkpoint["epoch"])
    history = list(metrics.get("history", []))
    if "step" in checkpoint:
        inside = checkpoint.get("epoch_progress") or {}
        progress = Progress(epoch, int(checkpoint["step"]), int(inside.get("steps", 0)),
                            {k: list(v) for k, v in (inside.get("meters") or {}).items()}, history)
    else:
        # Written before checkpoints kept the place inside a pass: continue after the last complete one.
        history = [row for row in history if row["epoch"] <= epoch]
        progress = Progress(epoch, int(history[-1]["step"]) if history else 0, 0, {}, history)
    # The saved best may come from a pass cut short whose row a later one replaced: keep it too.
    candidates = [metrics.get(f"best_{task.best_metric}")] + [row.get(task.best_metric) for row in progress.history]
    for value in candidates:
        if isinstance(value, (int, float)) and _is_better(float(value), progress.best, task.higher_is_better):
            progress.best = float(value)
    return progress


def train_one_epoch(
    task: TrainingTask,
    training: _Training,
    loader: DataLoader,
    meters: MetricLogger,
    ctx: DistributedContext,
    recipe: LoopRecipe,
    progress: Progress,
    writer: ScalarWriter,
    should_stop: Callable[[], str | None],
) -> str | None:
    """One pass over ``loader`` (what is left of it after a resume), stopped early when
    ``should_stop`` gives a reason. Returns that reason, None when the pass completed."""
    model, optimizer, scaler = training.model, training.optimizer, training.scaler
    model.train()
    for batch in meters.log_every(loader):
        reason = should_stop()
        if reason is not None:
            return reason
        seed_step(recipe.seed, ctx.rank, progress.step)
        try:
            result = task.train_step(model, batch, ctx)
        except FloatingPointError as err:
            raise NonFiniteLossError(f"step {progress.step}: {err}; stopping training") from err
        check_finite({"loss": result.loss, **result.logged}, progress.step)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(result.loss).backward()
        if recipe.grad_clip_norm > 0:
            scaler.unscale_(optimizer)  # clip the true gradients, not the loss-scaled ones
            nn.utils.clip_grad_norm_(model.parameters(), recipe.grad_clip_norm)
        scaler.step(optimizer)
        scaler.update()
        if task.scheduler_interval == "step":
            training.scheduler.step()
        progress.step += 1
        progress.epoch_step += 1
        meters.update(weight=result.count, **result.logged)
        if progress.step % recipe.log_every == 0:
            scalars = {name: float(value.detach()) if isinstance(value, torch.Tensor) else float(value)
                       for name, value in result.logged.items()}
            writer.add_scalars("train_step", {**scalars, "lr": optimizer.param_groups[0]["lr"]}, progress.step)
    return None


def _evaluate(task: TrainingTask, model: nn.Module, loader: DataLoader, ctx: DistributedContext,
              epoch: int) -> dict[str, float]:
    try:
        return task.evaluate(model, loader, ctx)
    except FloatingPointError as err:
        raise NonFiniteLossError(f"validation in epoch {epoch}: {err}; stopping training") from err


def fit(task: TrainingTask, recipe: LoopRecipe, options: RunOptions) -> Path:
    """Train ``task`` with ``recipe``; returns the path of ``best.pt`` (see the module docstring)."""
    ctx = init_distributed(options.device)
    run_dir = options.run_dir
    logger = setup_run_logger(run_dir, ctx)
    writer = ScalarWriter(run_dir, ctx)
    try:
        seed_everything(recipe.seed)  # seeding rule 1: the same initial weights on every rank
        resume = options.resume
        checkpoint = None if resume is None else load_checkpoint(resume, map_location=ctx.device)
        model = task.build_model(logger, resuming=checkpoint is not None)
        model_config = model.config  # every registered model keeps its config (nets/factory.py)
        train_loader, val_loader = task.build_loaders(ctx)
        steps_per_epoch = len(train_loader)
        if steps_per_epoch == 0:
            raise ConfigError(options.source, "batch_size", "the training data makes no batch")
        logger.info("%s (%d parameters), %d train / %d val images, run folder %s", task.description,
                    sum(p.numel() for p in model.parameters()), len(train_loader.dataset),  # type: ignore[arg-type]
                    len(val_loader.dataset) if val_loader is not None else 0, run_dir)  # type: ignore[arg-type]
        if val_loader is None:
            logger.warning("no validation images: best.pt follows the last epoch")

        if ctx.distributed and ctx.device.type == "cuda":
            # SyncBatchNorm runs on GPUs only; CPU (gloo) ranks keep per-rank statistics.
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        model.to(ctx.device)
        optimizer, scheduler = task.build_optimizer(model, steps_per_epoch)
        scaler = grad_scaler_for(ctx.device, recipe.amp)
        progress = Progress()
        if checkpoint is not None and resume is not None:
            restore_training_state(checkpoint, model, optimizer, scheduler, scaler, source=resume)
            progress = progress_of(checkpoint, task)
            if progress.epoch_step >= steps_per_epoch:
                raise ConfigError(resume, "epoch_progress",
                                  f"stopped after {progress.epoch_step} steps of epoch {progress.epoch + 1}, which "
                                  f"now has {steps_per_epoch}: resume with the data and batch size it ran with")
            logger.info("resumed from %s: %d complete epochs, step %d", resume, progress.epoch, progress.step)
        if ctx.distributed:
            device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
            model = nn.parallel.DistributedDataParallel(model, device_ids=device_ids,
                                                        find_unused_parameters=task.find_unused_parameters)
        training = _Training(model, optimizer, scheduler, scaler)
        deadline = Deadline(options.max_minutes)

        def should_stop() -> str | None:
            # Every rank asks at the same points: the deadline check is a collective.
            if recipe.max_steps and progress.step >= recipe.max_steps:
                return f"max_steps ({recipe.max_steps}) reached"
            if deadline.passed(ctx):
                return "the --max-minutes budget has passed"
            return None

        def save(name: str, metrics: Mapping[str, Any]) -> None:
            save_checkpoint(run_dir / name, model=model, model_name=task.model_name, model_config=model_config,
                            optimizer=optimizer, scheduler=scheduler, scaler=scaler, metrics=metrics,
                            train_config=recipe, **progress.checkpoint_fields())

        best_key = f"best_{task.best_metric}"
        for epoch in range(progress.epoch, recipe.epochs):
            set_loader_epoch(train_loader, epoch, skip_batches=progress.epoch_step)
            meters = MetricLogger(f"train {epoch + 1}/{recipe.epochs}", ctx, start=progress.epoch_meters)
            stop_reason = train_one_epoch(task, training, train_loader, meters, ctx, recipe, progress, writer,
                                          should_stop)
            complete = stop_reason is None
            if complete:
                if task.scheduler_interval == "epoch":
                    scheduler.step()
                progress.epoch, progress.epoch_step, progress.epoch_meters = epoch + 1, 0, {}
                stop_reason = should_stop()  # max_steps may fall on the last step of a pass
            else:
                progress.epoch_meters = meters.totals()
            row: dict[str, Any] = {"epoch": epoch + 1, "complete": complete, "step": progress.step,
                                   **{f"train_{k}": v for k, v in meters.averages().items()},
                                   "lr": optimizer.param_groups[0]["lr"]}
            last_epoch = epoch + 1 == recipe.epochs or stop_reason is not None
            if val_loader is not None and ((epoch + 1) % recipe.val_every == 0 or last_epoch):
                row.update({f"val_{k}": v for k, v in _evaluate(task, model, val_loader, ctx, epoch + 1).items()})
            writer.add_scalars("epoch", {k: v for k, v in row.items() if isinstance(v, float)}, epoch + 1)
            # A pass cut short and then resumed keeps one row: the one that covers all its steps.
            progress.history = [r for r in progress.history if r["epoch"] != epoch + 1] + [row]
            improved = task.best_metric in row and _is_better(row[task.best_metric], progress.best,
                                                              task.higher_is_better)
            if improved:
                progress.best = row[task.best_metric]
            logger.info("epoch %d%s: %s", epoch + 1, "" if complete else " (cut short)", ", ".join(
                f"{k} {v:.4f}" for k, v in row.items() if isinstance(v, float)))
            if ctx.is_main:
                metrics = {**row, best_key: progress.best, "history": progress.history}
                save("last.pt", metrics)
                if improved or val_loader is None:
                    save("best.pt", metrics)
                (run_dir / "history.json").write_text(json.dumps(jsonable(progress.history), indent=1) + "\n")
            if stop_reason is not None:
                logger.info("stopping in epoch %d: %s", epoch + 1, stop_reason)
                break
        if ctx.is_main:
            final_metrics = {**(progress.history[-1] if progress.history else {}), best_key: progress.best,
                             "history": progress.history}
            save("final.pt", final_metrics)
            if not (run_dir / "best.pt").exists():
                save("best.pt", final_metrics)
            logger.info("done: best %s %.4f, checkpoints in %s", task.best_metric, progress.best, run_dir)
        return run_dir / "best.pt"
    finally:
        writer.close()
        close_run_logger(logger)
        cleanup_distributed(ctx)
