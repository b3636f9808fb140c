"""Training CAHFW-Net on CAER-S: the recipe (:class:`CAHFWTrainConfig`) and the task that
``train/loop.py`` runs.

Recipe (``config/train_cahfw_paper_224_sgd_lr1e-2_cos_flood0.05.yaml``, fields of
:class:`CAHFWTrainConfig`): SGD with Nesterov momentum 0.9, learning rate 0.01 annealed to
``min_lr`` by a cosine over all ``epochs x steps per epoch`` optimisation steps, cross-entropy
with flooding (``|CE - b| + b``, b = 0.05: below the flood level the gradient changes sign, so
the loss hovers around b instead of being driven to 0). Validation accuracy on CAER-S ``val``
(10% of each class of the official train folder, see ``data/caer.py``) selects ``best.pt``.
``max_steps`` and ``--max-minutes`` stop a run without changing its schedule (a resumed run
continues the same cosine); a shorter schedule is fewer ``epochs``. Face boxes are detected (and
cached) by rank 0 before the other ranks read the cache. Everything else (DDP, resume,
checkpoints, history, seeding) is the shared loop's: ``train/loop.py``.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

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
    max_steps: int = 0  # stop after this many optimisation steps in total (the schedule stays); 0 = no limit
    log_every: int = 20  # TensorBoard step scalars every N steps
    output_dir: str = "runs/cahfw"  # run folder when the command line gives none


def parse_recipe(values: dict[str, Any], source: str | Path = "<config>") -> CAHFWTrainConfig:
    """Validate a recipe mapping; ConfigError naming the file and field otherwise."""
    recipe = dataclass_from_mapping(CAHFWTrainConfig, values, source)
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
            raise ConfigError(source, field_name, f"{problem}, got {getattr(recipe, field_name)!r}")
    from emotion_perception.nets.factory import build_config

    try:
        build_config("cahfw", recipe.preset, variant=recipe.variant)
    except ValueError as err:
        raise ConfigError(source, "preset/variant", str(err)) from err
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


def flooded(loss: torch.Tensor, level: float) -> torch.Tensor:
    """Flooding (Ishida et al. 2020): ``|loss - b| + b``; the identity above the level b."""
    return (loss - level).abs() + level if level > 0 else loss


def build_optimizer(model: nn.Module, recipe: CAHFWTrainConfig) -> torch.optim.SGD:
    return torch.optim.SGD(
        model.parameters(), lr=recipe.lr, momentum=recipe.momentum, nesterov=recipe.nesterov,
        weight_decay=recipe.weight_decay,
    )



def _load_records(recipe: CAHFWTrainConfig, split: str, ctx: DistributedContext) -> list:
    from emotion_perception.data.caer import load_caer

    def load() -> list:
        return load_caer(recipe.data_root, split, detector=recipe.detector, no_face=recipe.no_face,
                         val_fraction=recipe.val_fraction, seed=recipe.seed, progress=ctx.is_main)

    # Rank 0 fills the face-box cache; the others wait for it, then only read it.
    if ctx.distributed:
        records = load() if ctx.is_main else None
        torch.distributed.barrier()
        return records if records is not None else load()
    return load()


class CAHFWTask:
    """CAHFW-Net for :func:`train.loop.fit`: flooded cross-entropy, SGD, per-step cosine."""

    model_name = "cahfw"
    best_metric = "val_accuracy"
    higher_is_better = True
    scheduler_interval: Literal["epoch", "step"] = "step"
    find_unused_parameters = False

    def __init__(self, recipe: CAHFWTrainConfig) -> None:
        from emotion_perception.nets.factory import build_config

        self.recipe = recipe
        self.config = build_config("cahfw", recipe.preset, variant=recipe.variant)
        self.description = f"CAHFW-Net {recipe.preset}/{recipe.variant}"

    def build_model(self, logger: logging.Logger, resuming: bool) -> nn.Module:
        from emotion_perception.nets.factory import get_entry

        return get_entry("cahfw").builder(self.config)

    def build_loaders(self, ctx: DistributedContext) -> tuple[DataLoader, DataLoader | None]:
        from emotion_perception.data.faces import CAHFWDataset

        recipe, size, classes = self.recipe, self.config.input_size, self.config.num_classes
        train_set = CAHFWDataset(_load_records(recipe, "train", ctx), size, train=True, seed=recipe.seed,
                                 num_classes=classes, face_scale=recipe.face_scale)
        val_set = CAHFWDataset(_load_records(recipe, "val", ctx), size, train=False, num_classes=classes,
                               face_scale=recipe.face_scale)
        train_loader = build_loader(train_set, recipe.batch_size, ctx=ctx, shuffle=True, collate_fn=None,
                                    workers=recipe.workers, seed=recipe.seed,
                                    drop_last=len(train_set) > recipe.batch_size)
        val_loader = build_loader(val_set, recipe.batch_size, ctx=ctx, shuffle=False, collate_fn=None,
                                  workers=recipe.workers, seed=recipe.seed) if len(val_set) else None
        return train_loader, val_loader

    def build_optimizer(self, model: nn.Module, steps_per_epoch: int) -> tuple[torch.optim.Optimizer, Any]:
        optimizer = build_optimizer(model, self.recipe)
        # Per-step cosine over the whole recipe: a smooth decay whatever the epoch count, reaching
        # min_lr at the last step. max_steps does not shorten it, so a run it cut resumes on it.
        return optimizer, build_scheduler(optimizer, self.recipe, steps_per_epoch * self.recipe.epochs)

    def train_step(self, model: nn.Module, batch: Any, ctx: DistributedContext) -> StepResult:
        face, context, label = (tensor.to(ctx.device, non_blocking=True) for tensor in batch)
        with autocast_for(ctx.device, self.recipe.amp):
            logits = model(face, context)
        cross_entropy = nn.functional.cross_entropy(logits.float(), label)
        loss = flooded(cross_entropy, self.recipe.flooding)
        accuracy = (logits.argmax(dim=1) == label).float().mean()
        return StepResult(loss=loss, logged={"loss": loss, "cross_entropy": cross_entropy, "accuracy": accuracy},
                          count=len(label))

    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader: DataLoader, ctx: DistributedContext) -> dict[str, float]:
        """Mean cross-entropy and accuracy over ``loader`` (reduced over ranks)."""
        model.eval()
        meters = MetricLogger("validate", ctx)
        for face, context, label in meters.log_every(loader):
            face, context, label = face.to(ctx.device), context.to(ctx.device), label.to(ctx.device)
            with autocast_for(ctx.device, self.recipe.amp):
                logits = model(face, context).float()
            meters.update(weight=len(label), cross_entropy=nn.functional.cross_entropy(logits, label),
                          accuracy=(logits.argmax(dim=1) == label).float().mean())
        return meters.averages()


def main(recipe: CAHFWTrainConfig, options: RunOptions) -> Path:
    """Train with ``recipe``; returns the path of ``best.pt``."""
    return fit(CAHFWTask(recipe), recipe, options)


def train_cahfw(cfg: dict, args: argparse.Namespace) -> Path:
    """Entry point of the shared ``train`` command: recipe mapping (CLI overrides applied) + options."""
    source = getattr(args, "config", None) or "<config>"
    recipe = parse_recipe(dict(cfg), source)
    return main(recipe, RunOptions.from_args(args, recipe.output_dir))
