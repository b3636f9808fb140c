"""Training BENet: one straight :func:`main` plus :func:`train_one_epoch` / :func:`evaluate`.

Recipe (``config/train_benet.yaml``, fields of :class:`BENetTrainConfig`): Adam, learning rate
1e-3, 250 epochs (the paper's), the BENet pre-transformations and augmentations of
``data/transforms.py`` and the multitask loss of ``train/losses.py``. ``heads`` selects the
paper's head ablation (``bu``, ``bu,det``, ``bu,det,pc``, ``bu,det,pc,bg``; ``vad`` adds the
continuous head): heads that do not train are left out of the network (person-centric,
background, VAD) and their pre-transformations are not drawn.

The validation loss (same loss, on the ``val`` split through the pre-transformations without
augmentation, with a fixed seed so every epoch sees the same images) selects ``best.pt``;
``final.pt`` is the last epoch; ``last.pt`` is rewritten every epoch for ``--resume``.
``--max-minutes`` and ``max_steps`` stop inside an epoch; a checkpoint's ``epoch`` counts
complete passes only, so a resumed run redoes a pass that was cut short.
``history.json`` holds one row of metrics per epoch; TensorBoard scalars go to
``RUN_DIR/tensorboard`` and the log to ``RUN_DIR/train.log``. Checkpoints follow
docs/ARCHITECTURE.md.

Single process or ``torchrun`` DDP (``train/common.py``): BN becomes SyncBatchNorm on GPUs,
each rank reads its own shard, rank 0 writes files. Mixed precision (float16 autocast +
GradScaler) on CUDA only.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from emotion_perception.train import common

@dataclass(frozen=True)
class BENetTrainConfig:
    """One BENet training recipe (a flat YAML mapping, ``base:`` allowed; see common.load_recipe)."""

    model: str = "benet"  # the model family; must be "benet"
    preset: str = "paper"  # BENet preset (nets/benet.py BENET_PRESETS): paper | lite | tiny
    heads: tuple[str, ...] = ("bu", "det", "pc", "bg")  # trained heads, subset of bu, det, pc, bg, vad
    data_root: str = "data/emotic"  # EMOTIC root (official layout or synthetic); --data overrides
    heco_root: str = ""  # HECO root merged into training as extra data ("" = none); --heco overrides
    train_split: str = "train"
    val_split: str = "val"
    input_size: int = 0  # square training input side; 0 = the preset's input_size
    augmentation: str = "benet"  # transform preset (data/transforms.py TRANSFORM_PRESETS)
    epochs: int = 250  # passes over the training images (paper: 250)
    batch_size: int = 16  # images per process and step
    lr: float = 1e-3  # Adam learning rate (paper: 1e-3)
    weight_decay: float = 0.0  # Adam L2 penalty
    lr_milestones: tuple[int, ...] = ()  # epochs after which lr *= lr_gamma (empty: constant lr)
    lr_gamma: float = 0.1
    grad_clip_norm: float = 0.0  # clip the global gradient norm; 0 = no clipping
    loss: dict[str, Any] = field(default_factory=dict)  # BENetLossConfig weight overrides (train/losses.py)
    amp: bool = True  # float16 autocast + GradScaler on CUDA (ignored on CPU)
    workers: int = 4  # DataLoader workers per process
    seed: int = 0  # seeds weights, shuffling and augmentation
    val_every: int = 1  # validate every N epochs (and always after the last)
    max_steps: int = 0  # stop after this many optimisation steps in total; 0 = no limit (smoke runs)
    max_train_images: int = 0  # use the first N training images; 0 = all (smoke runs)
    max_val_images: int = 0  # use the first N validation images; 0 = all
    log_every: int = 20  # TensorBoard step scalars every N steps
    output_dir: str = "runs/benet"  # run folder when the command line gives none
    init: str = ""  # pretrained HRNet-W32 checkpoint for the backbone (train/init_weights.py); "" = none; --init


@dataclass(frozen=True)
class RunOptions:
    """What the command line adds to a recipe."""

    run_dir: Path
    device: str = "auto"
    resume: Path | None = None
    max_minutes: float | None = None
    source: str = "<config>"  # the recipe file, for messages


HEAD_NAMES = ("bu", "det", "pc", "bg", "vad")


def parse_heads(text: str | tuple[str, ...] | list[str], source: str | Path = "<config>") -> tuple[str, ...]:
    """``"bu,det,pc"`` or an ablation name (``bu_det_pc``) -> ordered head tuple; error names the field."""
    from emotion_perception.train.losses import HEAD_ABLATIONS

    if isinstance(text, str):
        items = sorted(HEAD_ABLATIONS[text]) if text in HEAD_ABLATIONS else [h.strip() for h in text.split(",") if h.strip()]
    else:
        items = [str(h).strip() for h in text]
    unknown = sorted(set(items) - set(HEAD_NAMES))
    if unknown or not items:
        raise common.ConfigError(source, "heads", f"got {items!r}; choose from {', '.join(HEAD_NAMES)} "
                                                  f"or an ablation ({', '.join(HEAD_ABLATIONS)})")
    return tuple(h for h in HEAD_NAMES if h in items)


def parse_recipe(values: dict[str, Any], source: str | Path = "<config>") -> BENetTrainConfig:
    """Validate a recipe mapping; :class:`common.ConfigError` naming the file and field otherwise."""
    values = dict(values)
    if "heads" in values:
        values["heads"] = parse_heads(values["heads"], source)
    recipe = common.dataclass_from_mapping(BENetTrainConfig, values, source)
    checks = [
        ("model", recipe.model == "benet", "must be 'benet'"),
        ("epochs", recipe.epochs >= 1, "must be >= 1"),
        ("batch_size", recipe.batch_size >= 1, "must be >= 1"),
        ("lr", recipe.lr > 0, "must be > 0"),
        ("weight_decay", recipe.weight_decay >= 0, "must be >= 0"),
        ("lr_gamma", recipe.lr_gamma > 0, "must be > 0"),
        ("lr_milestones", all(isinstance(m, int) and m > 0 for m in recipe.lr_milestones), "must be positive epochs"),
        ("grad_clip_norm", recipe.grad_clip_norm >= 0, "must be >= 0"),
        ("input_size", recipe.input_size >= 0 and recipe.input_size % 32 == 0, "must be 0 or a multiple of 32"),
        ("val_every", recipe.val_every >= 1, "must be >= 1"),
        ("workers", recipe.workers >= 0, "must be >= 0"),
        ("max_steps", recipe.max_steps >= 0, "must be >= 0"),
        ("max_train_images", recipe.max_train_images >= 0, "must be >= 0"),
        ("max_val_images", recipe.max_val_images >= 0, "must be >= 0"),
        ("log_every", recipe.log_every >= 1, "must be >= 1"),
    ]
    for field_name, ok, problem in checks:
        if not ok:
            raise common.ConfigError(source, field_name, f"{problem}, got {getattr(recipe, field_name)!r}")
    from emotion_perception.data.transforms import TRANSFORM_PRESETS

    if recipe.augmentation not in TRANSFORM_PRESETS:
        raise common.ConfigError(source, "augmentation", f"unknown preset {recipe.augmentation!r}; "
                                                         f"known: {', '.join(sorted(TRANSFORM_PRESETS))}")
    try:
        model_config(recipe)
    except ValueError as err:
        raise common.ConfigError(source, "preset", str(err)) from err
    loss_config(recipe, source)
    return recipe


def model_config(recipe: BENetTrainConfig):
    """The BENet config a recipe trains: its preset with exactly the heads that learn."""
    from emotion_perception.nets.factory import build_config

    overrides: dict[str, Any] = {
        "person_centric_head": "pc" in recipe.heads,
        "background_head": "bg" in recipe.heads,
        "vad_head": "vad" in recipe.heads,
    }
    if recipe.input_size:
        overrides["input_size"] = (recipe.input_size, recipe.input_size)
    return build_config("benet", recipe.preset, **overrides)


def loss_config(recipe: BENetTrainConfig, source: str | Path = "<config>"):
    """BENetLossConfig of a recipe: its heads plus the ``loss`` block's weight overrides."""
    from emotion_perception.train.losses import BENetLossConfig

    if "heads" in recipe.loss:
        raise common.ConfigError(source, "loss.heads", "set the top-level 'heads' field instead")
    base = common.dataclass_from_mapping(BENetLossConfig, recipe.loss, f"{source} (loss)")
    return dataclasses.replace(base, heads=frozenset(recipe.heads))


def transform_config(recipe: BENetTrainConfig, input_size: int, augment: bool = True):
    """Transform of a recipe; a pre-transformation that trains none of its heads is never drawn.

    Which heads a mode trains is ``train/targets.py`` HEAD_ROUTING (docs/ARCHITECTURE.md).
    Validation (``augment=False``) keeps the recipe's mode mix without augmentation.
    """
    from emotion_perception.data.transforms import MODES, transform_preset
    from emotion_perception.train.targets import HEAD_ROUTING

    mode_probs = transform_preset(recipe.augmentation).mode_probs
    preset = transform_preset(recipe.augmentation if augment else "modes_only")
    probs = tuple(p if HEAD_ROUTING[mode] & set(recipe.heads) else 0.0 for mode, p in zip(MODES, mode_probs))
    if sum(probs) <= 0:
        raise common.ConfigError("<config>", "heads", f"no pre-transformation of {recipe.augmentation!r} "
                                                      f"trains heads {recipe.heads}")
    return dataclasses.replace(preset, size=input_size, mode_probs=probs)


def options_from_args(args: argparse.Namespace, recipe: BENetTrainConfig) -> RunOptions:
    """Read the optional command-line options once."""
    out = getattr(args, "out", None)
    resume = getattr(args, "resume", None)
    return RunOptions(
        run_dir=Path(out) if out else Path(recipe.output_dir),
        device=getattr(args, "device", None) or "auto",
        resume=Path(resume) if resume else None,
        max_minutes=getattr(args, "max_minutes", None),
        source=str(getattr(args, "config", None) or "<config>"),
    )


def _forward_heads(recipe: BENetTrainConfig) -> str:
    return "all" if {"pc", "bg"} & set(recipe.heads) else "inference"


def _to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    # Targets are built from the CPU lists (train/targets.py); only the image moves now.
    return {**batch, "image": batch["image"].to(device, non_blocking=True)}


def _routed_losses(model: nn.Module, batch: dict[str, Any], heads: str, config, ctx: common.DistributedContext,
                   amp: bool, step: int) -> dict[str, torch.Tensor]:
    """Targets first, then the forward pass with each head on its routed images (as the public
    code: a head's BatchNorm sees only the images it trains on), then the loss terms."""
    from emotion_perception.train.losses import benet_losses
    from emotion_perception.train.targets import build_targets

    num_emotions = int(torch.as_tensor(batch["image_label"]).shape[1])
    targets = build_targets(batch, num_emotions, config.strides, sigma=config.gaussian_sigma).to(ctx.device)
    with common.autocast_for(ctx.device, amp):
        outputs = model(batch["image"], heads=heads, routes=targets.routes)
    # The losses cast to float32 themselves; computing them outside autocast keeps them exact.
    try:
        return benet_losses(outputs, targets, config)
    except FloatingPointError as err:
        raise common.NonFiniteLossError(f"step {step}: {err}; stopping training") from err


def train_one_epoch(
    model: nn.Module,
    loader: torch.utils.data.DataLoader,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    ctx: common.DistributedContext,
    recipe: BENetTrainConfig,
    losses_config,
    epoch: int,
    global_step: int,
    writer: common.ScalarWriter,
    step_limit: int | None,
    deadline: common.Deadline,
) -> tuple[dict[str, float], int, bool]:
    """One pass over ``loader``, cut short at ``step_limit`` steps or the deadline.

    Returns the epoch's mean loss terms, the global step and whether the pass was complete.
    """
    model.train()
    heads = _forward_heads(recipe)
    meters = common.MetricLogger(f"train {epoch + 1}/{recipe.epochs}", ctx)
    complete = True
    for batch in meters.log_every(loader):
        if (step_limit is not None and global_step >= step_limit) or deadline.passed(ctx):
            complete = False
            break
        batch = _to_device(batch, ctx.device)
        losses = _routed_losses(model, batch, heads, losses_config, ctx, recipe.amp, global_step)
        common.check_finite(losses, global_step)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(losses["total"]).backward()
        if recipe.grad_clip_norm > 0:
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(model.parameters(), recipe.grad_clip_norm)
        scaler.step(optimizer)
        scaler.update()
        global_step += 1
        meters.update(weight=len(batch["mode"]), **losses)
        if global_step % recipe.log_every == 0:
            writer.add_scalars("train_step", {k: float(v.detach()) for k, v in losses.items()}, global_step)
    return meters.averages(), global_step, complete


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: torch.utils.data.DataLoader,
    ctx: common.DistributedContext,
    recipe: BENetTrainConfig,
    losses_config,
) -> dict[str, float]:
    """Mean validation loss terms over ``loader`` (reduced over ranks)."""
    model.eval()
    heads = _forward_heads(recipe)
    meters = common.MetricLogger("validate", ctx)
    for batch in meters.log_every(loader):
        batch = _to_device(batch, ctx.device)
        meters.update(weight=len(batch["mode"]), **_routed_losses(model, batch, heads, losses_config, ctx,
                                                                  recipe.amp, -1))
    return meters.averages()


def _records(recipe: BENetTrainConfig, split: str, with_heco: bool, limit: int) -> list:
    from emotion_perception.data.datasets import load_benet_records

    heco = recipe.heco_root if with_heco and recipe.heco_root else None
    records = load_benet_records(recipe.data_root, split, heco)
    return records[:limit] if limit else records


def main(recipe: BENetTrainConfig, options: RunOptions) -> Path:
    """Train with ``recipe``; returns the path of ``best.pt`` (see the module docstring)."""
    from emotion_perception.data.datasets import BENetDataset, collate_benet
    from emotion_perception.data.transforms import BENetTransform
    from emotion_perception.nets.factory import get_entry

    ctx = common.init_distributed(options.device)
    run_dir = options.run_dir
    logger = common.setup_run_logger(run_dir, ctx)
    writer = common.ScalarWriter(run_dir, ctx)
    try:
        common.seed_everything(recipe.seed)  # the same initial weights on every rank
        config = model_config(recipe)
        model = get_entry("benet").builder(config)
        if recipe.init and options.resume is None:
            from emotion_perception.train.init_weights import load_backbone_init

            # Every rank reads the same file, so the weights stay identical; rank 0 logs the line.
            load_backbone_init(model, recipe.init, logger=logger)
        elif recipe.init:
            logger.info("init %s ignored: --resume restores every weight", recipe.init)
        losses_config = loss_config(recipe, options.source)
        input_size = config.input_size[0]
        if config.input_size[0] != config.input_size[1]:
            raise common.ConfigError(options.source, "input_size", f"training needs a square input, got {config.input_size}")

        train_set = BENetDataset(_records(recipe, recipe.train_split, True, recipe.max_train_images),
                                 BENetTransform(transform_config(recipe, input_size)), seed=recipe.seed,
                                 num_categories=config.num_emotions)
        val_set = BENetDataset(_records(recipe, recipe.val_split, False, recipe.max_val_images),
                               BENetTransform(transform_config(recipe, input_size, augment=False)),
                               seed=recipe.seed + 1, num_categories=config.num_emotions)
        if not len(train_set):
            raise common.ConfigError(options.source, "data_root", f"no training images in {recipe.data_root} "
                                                                  f"split {recipe.train_split!r}")
        train_loader = common.build_loader(train_set, recipe.batch_size, ctx=ctx, shuffle=True,
                                           collate_fn=collate_benet, workers=recipe.workers, seed=recipe.seed,
                                           drop_last=len(train_set) >= 2 * recipe.batch_size * ctx.world_size)
        val_loader = common.build_loader(val_set, recipe.batch_size, ctx=ctx, shuffle=False,
                                         collate_fn=collate_benet, workers=recipe.workers,
                                         seed=recipe.seed) if len(val_set) else None
        logger.info("BENet %s, heads %s (%d parameters), %d train / %d val images, input %d, run folder %s",
                    recipe.preset, ",".join(recipe.heads), sum(p.numel() for p in model.parameters()),
                    len(train_set), len(val_set), input_size, run_dir)
        if val_loader is None:
            logger.warning("no validation images: best.pt follows the last epoch")

        if ctx.distributed and ctx.device.type == "cuda":
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        model.to(ctx.device)
        optimizer = torch.optim.Adam(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
        scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(recipe.lr_milestones),
                                                         gamma=recipe.lr_gamma)
        scaler = common.grad_scaler_for(ctx.device, recipe.amp)

        start_epoch, best_loss, history = 0, math.inf, []
        if options.resume is not None:
            checkpoint = common.load_checkpoint(options.resume, map_location=ctx.device)
            start_epoch = common.restore_training_state(checkpoint, model, optimizer, scheduler, scaler,
                                                        source=options.resume)
            # Rows after the last complete pass (a pass cut short) are redone, so they go.
            history = [row for row in checkpoint["metrics"].get("history", []) if row["epoch"] <= start_epoch]
            best = checkpoint["metrics"].get("best_val_loss")
            best_loss = math.inf if best is None else float(best)
            logger.info("resumed from %s after epoch %d", options.resume, start_epoch)
        if ctx.distributed:
            device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
            # Routed forward passes: a head with no image routed to it in a batch does not run,
            # and untrained heads (ablations) never do, so some parameters get no gradient.
            model = nn.parallel.DistributedDataParallel(model, device_ids=device_ids, find_unused_parameters=True)

        deadline = common.Deadline(options.max_minutes)
        steps_per_epoch = max(1, len(train_loader))
        global_step = history[-1]["step"] if history else start_epoch * steps_per_epoch
        step_limit = recipe.max_steps or None
        saved: dict[str, Any] = dict(model=model, model_name="benet", model_config=config, optimizer=optimizer,
                                     scheduler=scheduler, scaler=scaler, train_config=asdict(recipe))
        completed_epochs = start_epoch
        for epoch in range(start_epoch, recipe.epochs):
            common.set_loader_epoch(train_loader, epoch)
            train_metrics, global_step, complete = train_one_epoch(
                model, train_loader, optimizer, scaler, ctx, recipe, losses_config, epoch, global_step, writer,
                step_limit, deadline)
            if complete:
                scheduler.step()
                completed_epochs = epoch + 1
            row: dict[str, Any] = {"epoch": epoch + 1, "complete": complete, "step": global_step,
                                   **{f"train_{k}": v for k, v in train_metrics.items()},
                                   "lr": optimizer.param_groups[0]["lr"]}
            stop = not complete or (step_limit is not None and global_step >= step_limit) or deadline.passed(ctx)
            last_epoch = epoch + 1 == recipe.epochs or stop
            if val_loader is not None and ((epoch + 1) % recipe.val_every == 0 or last_epoch):
                row.update({f"val_{k}": v for k, v in evaluate(model, val_loader, ctx, recipe, losses_config).items()})
            writer.add_scalars("epoch", {k: v for k, v in row.items() if isinstance(v, float)}, epoch + 1)
            history.append(row)
            improved = "val_total" in row and row["val_total"] < best_loss
            if improved:
                best_loss = row["val_total"]
            logger.info("epoch %d%s: %s", epoch + 1, "" if complete else " (cut short)", ", ".join(
                f"{k} {v:.4f}" for k, v in row.items() if isinstance(v, float)))
            if ctx.is_main:
                # ``epoch`` counts complete passes: resuming redoes a pass that was cut short.
                metrics = {**row, "best_val_loss": best_loss, "history": history}
                common.save_checkpoint(run_dir / "last.pt", epoch=completed_epochs, metrics=metrics, **saved)
                if improved or val_loader is None:
                    common.save_checkpoint(run_dir / "best.pt", epoch=completed_epochs, metrics=metrics, **saved)
                (run_dir / "history.json").write_text(json.dumps(common.jsonable(history), indent=1) + "\n")
            if stop:
                logger.info("stopping in epoch %d: %s", epoch + 1,
                            "max_steps reached" if step_limit is not None and global_step >= step_limit
                            else "the --max-minutes budget has passed")
                break
        if ctx.is_main:
            final_metrics = {**(history[-1] if history else {}), "best_val_loss": best_loss, "history": history}
            common.save_checkpoint(run_dir / "final.pt", epoch=completed_epochs, metrics=final_metrics, **saved)
            if not (run_dir / "best.pt").exists():
                common.save_checkpoint(run_dir / "best.pt", epoch=completed_epochs, metrics=final_metrics, **saved)
            logger.info("done: best validation loss %.4f, checkpoints in %s", best_loss, run_dir)
        return run_dir / "best.pt"
    finally:
        writer.close()
        common.close_run_logger(logger)
        common.cleanup_distributed(ctx)


def train_benet(cfg: dict, args: argparse.Namespace) -> Path:
    """Entry point of the shared ``train`` command: recipe mapping (CLI overrides applied) + options."""
    source = getattr(args, "config", None) or "<config>"
    recipe = parse_recipe(dict(cfg), source)
    return main(recipe, options_from_args(args, recipe))
