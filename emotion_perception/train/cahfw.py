"""Training CAHFW-Net on CAER-S: one straight :func:`run` plus :func:`train_one_epoch` / :func:`validate`.

Recipe (``config/train_cahfw.yaml``, fields of :class:`CAHFWTrainConfig`): SGD with Nesterov
momentum 0.9, learning rate 0.01 annealed to ``min_lr`` by a cosine over all optimisation steps,
cross-entropy with flooding (``|CE - b| + b``, b = 0.05: below the flood level the gradient
changes sign, so the loss hovers around b instead of being driven to 0). Validation accuracy
on CAER-S ``val`` (10% of each class of the official train folder, see ``data/caer.py``)
selects ``best.pt``; ``final.pt`` is the last epoch, ``last.pt`` is rewritten every epoch for
``--resume``. Checkpoints follow docs/ARCHITECTURE.md; ``history.json`` holds one line of
metrics per epoch; TensorBoard scalars go to ``RUN_DIR/tensorboard``.

Single process or ``torchrun`` DDP (``train/common.py``): on GPUs BN becomes SyncBatchNorm,
each rank reads its own shard, rank 0 writes files. Face boxes are detected (and cached) by rank 0 before
the other ranks read the cache.

Command-line options read from ``args`` (the shared ``train`` command's namespace), each
optional: ``out`` (run folder, default the recipe's ``output_dir``), ``data_root`` (overrides
the recipe's), ``device`` (auto/cpu/cuda), ``resume`` (a ``last.pt``), ``max_minutes`` (stop
after the epoch that crosses this budget), ``config`` (the recipe path, for error messages).
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from emotion_perception.data.categories import CAER_CATEGORIES
from emotion_perception.train import common


@dataclass(frozen=True)
class CAHFWTrainConfig:
    """One CAHFW-Net training recipe (a flat YAML mapping)."""

    model: str = "cahfw"  # the model family; must be "cahfw" (the train command dispatches on it)
    preset: str = "paper"  # CAHFW-Net preset: paper (224, full width), small (112, half width), tiny
    variant: str = "SE+CA+ER+AA"  # ablation: SE+AF | SE+CA+AA | SE+CA+ER+AA (full)
    data_root: str = "data"  # folder holding CAER-S/ (or CAER-S itself)
    detector: str = "cnn"  # face detector for the face-box cache: cnn (dlib MMOD) | hog
    no_face: str = "keep"  # images without a detected face: keep (centred fallback box) | drop
    val_fraction: float = 0.1  # share of each class of the official train folder held out for val
    face_scale: float = 1.0  # face crop enlargement about the box centre (1.0 = the box itself)
    epochs: int = 50  # passes over the training split
    batch_size: int = 32  # per process
    lr: float = 0.01  # initial SGD learning rate
    min_lr: float = 0.0  # end of the cosine annealing
    momentum: float = 0.9  # SGD momentum
    nesterov: bool = True  # Nesterov momentum
    weight_decay: float = 5e-4  # L2 on all weights
    flooding: float = 0.05  # flood level b of |CE - b| + b; 0 disables flooding
    # Not in the paper's recipe (it names neither): available for unstable runs, off by default.
    grad_clip_norm: float = 0.0  # clip the global gradient norm; 0 = no clipping
    warmup_steps: int = 0  # linear LR warm-up from lr/100 over this many steps, then the cosine
    amp: bool = True  # float16 autocast on CUDA (ignored on CPU)
    workers: int = 4  # DataLoader workers per process
    seed: int = 0  # seeds weights, shuffling, augmentation and the train/val split
    val_every: int = 1  # validate every N epochs (and always after the last)
    max_steps: int = 0  # stop after this many optimisation steps in total; 0 = no limit (smoke runs)
    log_every: int = 20  # TensorBoard step scalars every N steps
    output_dir: str = "runs/cahfw"  # run folder when the command line gives none


@dataclass(frozen=True)
class RunOptions:
    """What the command line adds to a recipe."""

    run_dir: Path
    data_root: Path
    device: str = "auto"
    resume: Path | None = None
    max_minutes: float | None = None


def parse_recipe(values: dict[str, Any], source: str | Path = "<config>") -> CAHFWTrainConfig:
    """Validate a recipe mapping; ConfigError naming the file and field otherwise."""
    recipe = common.dataclass_from_mapping(CAHFWTrainConfig, values, source)
    checks = [
        ("model", recipe.model == "cahfw", "must be 'cahfw'"),
        ("detector", recipe.detector in ("cnn", "hog"), "must be cnn or hog"),
        ("no_face", recipe.no_face in ("keep", "drop"), "must be keep or drop"),
        ("epochs", recipe.epochs >= 1, "must be >= 1"),
        ("batch_size", recipe.batch_size >= 1, "must be >= 1"),
        ("lr", recipe.lr > 0, "must be > 0"),
        ("min_lr", 0 <= recipe.min_lr <= recipe.lr, "must be in [0, lr]"),
        ("flooding", recipe.flooding >= 0, "must be >= 0"),
        ("grad_clip_norm", recipe.grad_clip_norm >= 0, "must be >= 0"),
        ("warmup_steps", recipe.warmup_steps >= 0, "must be >= 0"),
        ("val_fraction", 0 <= recipe.val_fraction < 1, "must be in [0, 1)"),
        ("val_every", recipe.val_every >= 1, "must be >= 1"),
        ("workers", recipe.workers >= 0, "must be >= 0"),
        ("max_steps", recipe.max_steps >= 0, "must be >= 0"),
        ("log_every", recipe.log_every >= 1, "must be >= 1"),
    ]
    for field_name, ok, problem in checks:
        if not ok:
            raise common.ConfigError(source, field_name, f"{problem}, got {getattr(recipe, field_name)!r}")
    from emotion_perception.nets.factory import build_config

    try:
        build_config("cahfw", recipe.preset, variant=recipe.variant)
    except ValueError as err:
        raise common.ConfigError(source, "preset/variant", str(err)) from err
    return recipe


def build_scheduler(optimizer: torch.optim.Optimizer, recipe: CAHFWTrainConfig,
                    total_steps: int) -> torch.optim.lr_scheduler.LRScheduler:
    """Cosine from ``lr`` to ``min_lr`` over the steps, after ``warmup_steps`` of linear warm-up."""
    warmup = min(recipe.warmup_steps, max(total_steps - 1, 0))
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(total_steps - warmup, 1),
                                                        eta_min=recipe.min_lr)
    if warmup == 0:
        return cosine
    ramp = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=0.01, end_factor=1.0, total_iters=warmup)
    return torch.optim.lr_scheduler.SequentialLR(optimizer, [ramp, cosine], milestones=[warmup])


def options_from_args(args: argparse.Namespace, recipe: CAHFWTrainConfig) -> RunOptions:
    """Read the optional command-line options once (see the module docstring)."""
    out = getattr(args, "out", None)
    data_root = getattr(args, "data_root", None)
    resume = getattr(args, "resume", None)
    return RunOptions(
        run_dir=Path(out) if out else Path(recipe.output_dir),
        data_root=Path(data_root) if data_root else Path(recipe.data_root),
        device=getattr(args, "device", None) or "auto",
        resume=Path(resume) if resume else None,
        max_minutes=getattr(args, "max_minutes", None),
    )


def flooded(loss: torch.Tensor, level: float) -> torch.Tensor:
    """Flooding (Ishida et al. 2020): ``|loss - b| + b``; the identity above the level b."""
    return (loss - level).abs() + level if level > 0 else loss


def build_optimizer(model: nn.Module, recipe: CAHFWTrainConfig) -> torch.optim.SGD:
    return torch.optim.SGD(
        model.parameters(), lr=recipe.lr, momentum=recipe.momentum, nesterov=recipe.nesterov,
        weight_decay=recipe.weight_decay,
    )


def train_one_epoch(
    model: nn.Module,
    loader: torch.utils.data.DataLoader,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler,
    ctx: common.DistributedContext,
    recipe: CAHFWTrainConfig,
    epoch: int,
    global_step: int,
    writer: common.ScalarWriter,
    step_limit: int | None,
) -> tuple[dict[str, float], int]:
    """One pass over ``loader`` (or until ``step_limit`` total steps); returns epoch means and the step."""
    model.train()
    meters = common.MetricLogger(f"train {epoch + 1}/{recipe.epochs}", ctx)
    for face, context, label in meters.log_every(loader):
        if step_limit is not None and global_step >= step_limit:
            break
        face = face.to(ctx.device, non_blocking=True)
        context = context.to(ctx.device, non_blocking=True)
        label = label.to(ctx.device, non_blocking=True)
        with common.autocast_for(ctx.device, recipe.amp):
            logits = model(face, context)
            cross_entropy = nn.functional.cross_entropy(logits.float(), label)
            loss = flooded(cross_entropy, recipe.flooding)
        common.check_finite({"cross_entropy": cross_entropy}, global_step)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if recipe.grad_clip_norm > 0:
            scaler.unscale_(optimizer)  # clip the true gradients, not the loss-scaled ones
            nn.utils.clip_grad_norm_(model.parameters(), recipe.grad_clip_norm)
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        global_step += 1
        accuracy = (logits.argmax(dim=1) == label).float().mean()
        meters.update(weight=len(label), loss=loss, cross_entropy=cross_entropy, accuracy=accuracy)
        if global_step % recipe.log_every == 0:
            writer.add_scalars("train", {
                "loss": float(loss.detach()), "cross_entropy": float(cross_entropy.detach()),
                "lr": optimizer.param_groups[0]["lr"],
            }, global_step)
    return meters.averages(), global_step


@torch.no_grad()
def validate(
    model: nn.Module, loader: torch.utils.data.DataLoader, ctx: common.DistributedContext, amp: bool = True
) -> dict[str, float]:
    """Mean cross-entropy and accuracy over ``loader`` (reduced over ranks)."""
    model.eval()
    meters = common.MetricLogger("validate", ctx)
    for face, context, label in meters.log_every(loader):
        face, context, label = face.to(ctx.device), context.to(ctx.device), label.to(ctx.device)
        with common.autocast_for(ctx.device, amp):
            logits = model(face, context).float()
        meters.update(
            weight=len(label),
            cross_entropy=nn.functional.cross_entropy(logits, label),
            accuracy=(logits.argmax(dim=1) == label).float().mean(),
        )
    return meters.averages()


def _load_records(recipe: CAHFWTrainConfig, data_root: Path, split: str, ctx: common.DistributedContext):
    from emotion_perception.data.caer import load_caer

    def load():
        return load_caer(data_root, split, detector=recipe.detector, no_face=recipe.no_face,
                         val_fraction=recipe.val_fraction, seed=recipe.seed, progress=ctx.is_main)

    # Rank 0 fills the face-box cache; the others wait for it, then only read it.
    if ctx.distributed:
        records = load() if ctx.is_main else None
        torch.distributed.barrier()
        return records if records is not None else load()
    return load()


def run(recipe: CAHFWTrainConfig, options: RunOptions) -> Path:
    """Train with ``recipe``; returns the path of ``best.pt`` (see the module docstring)."""
    from emotion_perception.data.faces import CAHFWDataset
    from emotion_perception.nets.factory import create_model

    ctx = common.init_distributed(options.device)
    run_dir = options.run_dir
    logger = common.setup_run_logger(run_dir, ctx)
    writer = common.ScalarWriter(run_dir, ctx)
    try:
        common.seed_everything(recipe.seed, ctx.rank)
        model = create_model("cahfw", recipe.preset, variant=recipe.variant)
        config = model.config
        train_records = _load_records(recipe, options.data_root, "train", ctx)
        val_records = _load_records(recipe, options.data_root, "val", ctx)
        num_classes = config.num_classes
        train_set = CAHFWDataset(train_records, config.input_size, train=True, seed=recipe.seed + ctx.rank,
                                 num_classes=num_classes, face_scale=recipe.face_scale)
        val_set = CAHFWDataset(val_records, config.input_size, train=False, num_classes=num_classes,
                               face_scale=recipe.face_scale)
        train_loader = common.build_loader(train_set, recipe.batch_size, ctx=ctx, shuffle=True, collate_fn=None,
                                           workers=recipe.workers, seed=recipe.seed,
                                           drop_last=len(train_set) > recipe.batch_size)
        val_loader = common.build_loader(val_set, recipe.batch_size, ctx=ctx, shuffle=False, collate_fn=None,
                                         workers=recipe.workers, seed=recipe.seed) if len(val_set) else None
        logger.info("CAHFW-Net %s/%s (%d parameters), %d train / %d val images, run folder %s",
                    recipe.preset, recipe.variant, sum(p.numel() for p in model.parameters()),
                    len(train_set), len(val_set), run_dir)
        if val_loader is None:
            logger.warning("no validation images (val_fraction=%s): best.pt follows the last epoch",
                           recipe.val_fraction)

        if ctx.distributed and ctx.device.type == "cuda":
            # SyncBatchNorm runs on GPUs only; CPU (gloo) ranks keep per-rank statistics.
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        model.to(ctx.device)
        optimizer = build_optimizer(model, recipe)
        steps_per_epoch = max(1, len(train_loader))
        total_steps = steps_per_epoch * recipe.epochs
        if recipe.max_steps:
            total_steps = min(total_steps, recipe.max_steps)
        # Per-step cosine: a smooth decay whatever the epoch count, reaching min_lr at the last step
        # (after an optional linear warm-up).
        scheduler = build_scheduler(optimizer, recipe, total_steps)
        scaler = common.grad_scaler_for(ctx.device, recipe.amp)

        start_epoch, best_accuracy, history = 0, -math.inf, []
        if options.resume is not None:
            checkpoint = common.load_checkpoint(options.resume, map_location=ctx.device)
            start_epoch = common.restore_training_state(checkpoint, model, optimizer, scheduler, scaler,
                                                        source=options.resume)
            history = list(checkpoint["metrics"].get("history", []))
            best_accuracy = float(checkpoint["metrics"].get("best_val_accuracy", -math.inf))
            logger.info("resumed from %s at epoch %d", options.resume, start_epoch)
        if ctx.distributed:
            device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
            model = nn.parallel.DistributedDataParallel(model, device_ids=device_ids)

        deadline = common.Deadline(options.max_minutes)
        global_step = start_epoch * steps_per_epoch
        saved: dict[str, Any] = dict(model=model, model_name="cahfw", model_config=config, optimizer=optimizer,
                                     scheduler=scheduler, scaler=scaler, train_config=asdict(recipe))
        epoch = start_epoch
        for epoch in range(start_epoch, recipe.epochs):
            common.set_loader_epoch(train_loader, epoch)
            train_metrics, global_step = train_one_epoch(model, train_loader, optimizer, scheduler, scaler, ctx,
                                                         recipe, epoch, global_step, writer, total_steps)
            row: dict[str, Any] = {"epoch": epoch + 1, "step": global_step,
                                   **{f"train_{k}": v for k, v in train_metrics.items()},
                                   "lr": optimizer.param_groups[0]["lr"]}
            last_epoch = epoch + 1 == recipe.epochs or global_step >= total_steps or deadline.passed(ctx)
            if val_loader is not None and ((epoch + 1) % recipe.val_every == 0 or last_epoch):
                row.update({f"val_{k}": v for k, v in validate(model, val_loader, ctx, recipe.amp).items()})
            writer.add_scalars("epoch", {k: v for k, v in row.items() if k not in ("epoch", "step")}, epoch + 1)
            history.append(row)
            improved = "val_accuracy" in row and row["val_accuracy"] > best_accuracy
            if improved:
                best_accuracy = row["val_accuracy"]
            logger.info("epoch %d: %s", epoch + 1, ", ".join(
                f"{k} {v:.4f}" for k, v in row.items() if isinstance(v, float)))
            if ctx.is_main:
                metrics = {**row, "best_val_accuracy": best_accuracy, "history": history}
                common.save_checkpoint(run_dir / "last.pt", epoch=epoch + 1, metrics=metrics, **saved)
                if improved or val_loader is None:
                    common.save_checkpoint(run_dir / "best.pt", epoch=epoch + 1, metrics=metrics, **saved)
                (run_dir / "history.json").write_text(json.dumps(common.jsonable(history), indent=1) + "\n")
            if last_epoch:
                if global_step >= total_steps and epoch + 1 < recipe.epochs:
                    logger.info("stopping after %d steps (max_steps)", global_step)
                elif epoch + 1 < recipe.epochs:
                    logger.info("stopping: the --max-minutes budget has passed")
                break
        if ctx.is_main:
            final_metrics = {**(history[-1] if history else {}), "best_val_accuracy": best_accuracy,
                             "history": history, "class_names": list(CAER_CATEGORIES)}
            common.save_checkpoint(run_dir / "final.pt", epoch=epoch + 1, metrics=final_metrics, **saved)
            logger.info("done: best val accuracy %.4f, checkpoints in %s", best_accuracy, run_dir)
        return run_dir / "best.pt"
    finally:
        writer.close()
        common.close_run_logger(logger)
        common.cleanup_distributed(ctx)


def train_cahfw(cfg: dict, args: argparse.Namespace) -> Path:
    """Entry point of the shared ``train`` command: recipe mapping + command-line options."""
    source = getattr(args, "config", None) or "<config>"
    recipe = parse_recipe(dict(cfg), source)
    return run(recipe, options_from_args(args, recipe))
