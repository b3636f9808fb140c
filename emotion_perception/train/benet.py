"""Training BENet: the recipe (:class:`BENetTrainConfig`) and the task that ``train/loop.py`` runs.

Recipe (``config/train_benet_paper_512_adam_lr1e-3.yaml``, fields of :class:`BENetTrainConfig`):
Adam, learning rate 1e-3, 250 epochs (the paper's), the BENet pre-transformations and augmentations of
``data/transforms.py`` and the multitask loss of ``train/losses.py``. ``heads`` selects the
paper's head ablation (``bu``, ``bu,det``, ``bu,det,pc``, ``bu,det,pc,bg``; ``vad`` adds the
continuous head): heads that do not train are left out of the network (person-centric,
background, VAD) and their pre-transformations are not drawn.

The validation loss (same loss, on the ``val`` split through the pre-transformations without
augmentation, with a fixed seed so every epoch sees the same images) selects ``best.pt``
(lowest ``val_total``). The learning rate steps after complete epochs (``lr_milestones``).
Everything else (DDP, resume, ``--max-minutes`` and ``max_steps``, checkpoints, history,
seeding) is the shared loop's: ``train/loop.py``.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

import torch
from torch import nn
from torch.utils.data import DataLoader

from emotion_perception.train.data_loading import build_loader
from emotion_perception.train.distributed import DistributedContext
from emotion_perception.train.loop import RunOptions, StepResult, fit
from emotion_perception.train.precision import autocast_for
from emotion_perception.train.recipes import ConfigError, dataclass_from_mapping
from emotion_perception.train.run_log import MetricLogger


@dataclass(frozen=True)
class BENetTrainConfig:
    """One BENet training recipe (a flat YAML mapping, ``base:`` allowed; see recipes.load_recipe)."""

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


HEAD_NAMES = ("bu", "det", "pc", "bg", "vad")


def parse_heads(text: str | tuple[str, ...] | list[str], source: str | Path = "<config>") -> tuple[str, ...]:
    """``"bu,det,pc"`` or an ablation name (``bu_det_pc``) -> ordered head tuple; error names the field."""
    from emotion_perception.train.losses import HEAD_ABLATIONS

    if isinstance(text, str):
        items = (sorted(HEAD_ABLATIONS[text]) if text in HEAD_ABLATIONS
                 else [h.strip() for h in text.split(",") if h.strip()])
    else:
        items = [str(h).strip() for h in text]
    unknown = sorted(set(items) - set(HEAD_NAMES))
    if unknown or not items:
        raise ConfigError(source, "heads", f"got {items!r}; choose from {', '.join(HEAD_NAMES)} "
                                           f"or an ablation ({', '.join(HEAD_ABLATIONS)})")
    return tuple(h for h in HEAD_NAMES if h in items)


def parse_recipe(values: dict[str, Any], source: str | Path = "<config>") -> BENetTrainConfig:
    """Validate a recipe mapping; :class:`ConfigError` naming the file and field otherwise."""
    values = dict(values)
    if "heads" in values:
        values["heads"] = parse_heads(values["heads"], source)
    recipe = dataclass_from_mapping(BENetTrainConfig, values, source)
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
            raise ConfigError(source, field_name, f"{problem}, got {getattr(recipe, field_name)!r}")
    from emotion_perception.data.transforms import TRANSFORM_PRESETS

    if recipe.augmentation not in TRANSFORM_PRESETS:
        raise ConfigError(source, "augmentation", f"unknown preset {recipe.augmentation!r}; "
                                                  f"known: {', '.join(sorted(TRANSFORM_PRESETS))}")
    try:
        model_config(recipe)
    except ValueError as err:
        raise ConfigError(source, "preset", str(err)) from err
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
        raise ConfigError(source, "loss.heads", "set the top-level 'heads' field instead")
    base = dataclass_from_mapping(BENetLossConfig, recipe.loss, f"{source} (loss)")
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
    # One probability per mode, as mode_probs (zip over the 4 MODES keeps the length).
    probs = cast("tuple[float, float, float, float]",
                 tuple(p if HEAD_ROUTING[mode] & set(recipe.heads) else 0.0 for mode, p in zip(MODES, mode_probs)))
    if sum(probs) <= 0:
        raise ConfigError("<config>", "heads", f"no pre-transformation of {recipe.augmentation!r} "
                                               f"trains heads {recipe.heads}")
    return dataclasses.replace(preset, size=input_size, mode_probs=probs)



def _records(recipe: BENetTrainConfig, split: str, with_heco: bool, limit: int) -> list:
    from emotion_perception.data.datasets import load_benet_records

    heco = recipe.heco_root if with_heco and recipe.heco_root else None
    records = load_benet_records(recipe.data_root, split, heco)
    return records[:limit] if limit else records


class BENetTask:
    """BENet for :func:`train.loop.fit`: routed multitask losses, Adam, per-epoch LR steps."""

    model_name = "benet"
    best_metric = "val_total"
    higher_is_better = False
    scheduler_interval: Literal["epoch", "step"] = "epoch"
    # Routed forward passes: a head with no image routed to it in a batch does not run, and
    # untrained heads (ablations) never do, so some parameters get no gradient.
    find_unused_parameters = True

    def __init__(self, recipe: BENetTrainConfig, source: str | Path = "<config>") -> None:
        self.recipe = recipe
        self.source = source
        self.config = model_config(recipe)
        if self.config.input_size[0] != self.config.input_size[1]:
            raise ConfigError(source, "input_size", f"training needs a square input, got {self.config.input_size}")
        self.input_size = self.config.input_size[0]
        self.losses_config = loss_config(recipe, source)
        self.heads = "all" if {"pc", "bg"} & set(recipe.heads) else "inference"
        self.description = (f"BENet {recipe.preset}, heads {','.join(recipe.heads)}, input {self.input_size}")

    def build_model(self, logger: logging.Logger, resuming: bool) -> nn.Module:
        from emotion_perception.nets.factory import get_entry

        model = get_entry("benet").builder(self.config)
        if self.recipe.init and not resuming:
            from emotion_perception.train.init_weights import load_backbone_init

            # Every rank reads the same file, so the weights stay identical; rank 0 logs the line.
            load_backbone_init(model, self.recipe.init, logger=logger)
        elif self.recipe.init:
            logger.info("init %s ignored: --resume restores every weight", self.recipe.init)
        return model

    def build_loaders(self, ctx: DistributedContext) -> tuple[DataLoader, DataLoader | None]:
        from emotion_perception.data.datasets import BENetDataset, collate_benet
        from emotion_perception.data.transforms import BENetTransform

        recipe, size, categories = self.recipe, self.input_size, self.config.num_emotions
        train_set = BENetDataset(_records(recipe, recipe.train_split, True, recipe.max_train_images),
                                 BENetTransform(transform_config(recipe, size)), seed=recipe.seed,
                                 num_categories=categories)
        val_set = BENetDataset(_records(recipe, recipe.val_split, False, recipe.max_val_images),
                               BENetTransform(transform_config(recipe, size, augment=False)),
                               seed=recipe.seed + 1, num_categories=categories)
        if not len(train_set):
            raise ConfigError(self.source, "data_root", f"no training images in {recipe.data_root} "
                                                        f"split {recipe.train_split!r}")
        train_loader = build_loader(train_set, recipe.batch_size, ctx=ctx, shuffle=True, collate_fn=collate_benet,
                                    workers=recipe.workers, seed=recipe.seed,
                                    drop_last=len(train_set) >= 2 * recipe.batch_size * ctx.world_size)
        val_loader = build_loader(val_set, recipe.batch_size, ctx=ctx, shuffle=False, collate_fn=collate_benet,
                                  workers=recipe.workers, seed=recipe.seed) if len(val_set) else None
        return train_loader, val_loader

    def build_optimizer(self, model: nn.Module, steps_per_epoch: int) -> tuple[torch.optim.Optimizer, Any]:
        optimizer = torch.optim.Adam(model.parameters(), lr=self.recipe.lr, weight_decay=self.recipe.weight_decay)
        scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(self.recipe.lr_milestones),
                                                         gamma=self.recipe.lr_gamma)
        return optimizer, scheduler

    def _losses(self, model: nn.Module, batch: dict[str, Any], ctx: DistributedContext) -> dict[str, torch.Tensor]:
        """Targets first, then the forward pass with each head on its routed images (as the public
        code: a head's BatchNorm sees only the images it trains on), then the loss terms."""
        from emotion_perception.train.losses import benet_losses
        from emotion_perception.train.targets import build_targets

        # Targets are built from the CPU lists (train/targets.py); only the image moves.
        image = batch["image"].to(ctx.device, non_blocking=True)
        num_emotions = int(torch.as_tensor(batch["image_label"]).shape[1])
        targets = build_targets(batch, num_emotions, self.losses_config.strides,
                                sigma=self.losses_config.gaussian_sigma).to(ctx.device)
        with autocast_for(ctx.device, self.recipe.amp):
            outputs = model(image, heads=self.heads, routes=targets.routes)
        # The losses cast to float32 themselves; computing them outside autocast keeps them
        # exact. A non-finite term raises FloatingPointError, which stops the loop.
        return benet_losses(outputs, targets, self.losses_config)

    def train_step(self, model: nn.Module, batch: dict[str, Any], ctx: DistributedContext) -> StepResult:
        losses = self._losses(model, batch, ctx)
        return StepResult(loss=losses["total"], logged=losses, count=len(batch["mode"]))

    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader: DataLoader, ctx: DistributedContext) -> dict[str, float]:
        """Mean validation loss terms over ``loader`` (reduced over ranks)."""
        model.eval()
        meters = MetricLogger("validate", ctx)
        for batch in meters.log_every(loader):
            meters.update(weight=len(batch["mode"]), **self._losses(model, batch, ctx))
        return meters.averages()


def main(recipe: BENetTrainConfig, options: RunOptions) -> Path:
    """Train with ``recipe``; returns the path of ``best.pt``."""
    return fit(BENetTask(recipe, options.source), recipe, options)


def train_benet(cfg: dict, args: argparse.Namespace) -> Path:
    """Entry point of the shared ``train`` command: recipe mapping (CLI overrides applied) + options."""
    source = getattr(args, "config", None) or "<config>"
    recipe = parse_recipe(dict(cfg), source)
    return main(recipe, RunOptions.from_args(args, recipe.output_dir))
