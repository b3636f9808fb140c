"""Start BENet's backbone from a pretrained HRNet checkpoint (``train benet --init PATH``).

The public BENet experiments start from HigherHRNet-W32's COCO-pose checkpoint
(``pose_higher_hrnet_w32_512.pth``); an ImageNet HRNet-W32 classification checkpoint works too.
:func:`load_backbone_init` reads the file, recognises its key layout, renames its keys onto
``model.backbone.*`` and copies every tensor whose renamed key exists in our backbone with the
same shape. Heads are never touched.

Layouts (recognised from marker keys, after a leading ``module.`` is stripped):

``higherhrnet``
    HigherHRNet (``final_layers.*`` / ``deconv_layers.*`` heads, unused here).
``hrnet-cls``
    HRNet-Image-Classification's ``hrnetv2_w32_imagenet_pretrained.pth``, and timm's
    ``hrnet_w32`` classification weights: timm's ``hrnet.py`` keeps the official attribute names,
    so the two state dicts have the same keys (``incre_modules``, ``downsamp_modules``,
    ``final_layer``, ``classifier``: unused here).
``timm-features``
    timm ``hrnet_w32`` built with ``features_only=True`` (``incre_modules`` but no classifier).
``hrnet-backbone``
    the HRNet trunk alone (``conv1`` ... ``stage4``), e.g. timm ``feature_location=''``.
``benet``
    one of our own checkpoints (``backbone.*`` keys, copied name for name).

All HRNet layouts share one renaming: ``conv1``/``bn1`` -> ``stem.0.0``/``stem.0.1``,
``conv2``/``bn2`` -> ``stem.1.0``/``stem.1.1``, ``layer1.N.downsample`` -> ``layer1.N.shortcut``,
``transitionT`` -> ``transitions.{T-1}``, ``stageS.M.branches`` -> ``stages.{S-2}.M.branches``,
``stageS.M.fuse_layers`` -> ``stages.{S-2}.M.fuse``; what follows those prefixes is the same in
both networks (``nn.Sequential`` indices included).

Counting. The share that decides acceptance is over our backbone's tensors that a pretrained
HRNet can hold: the attention modules inside our residual blocks (``...attention...``) exist in
no public checkpoint, so they are reported apart ("ours only", expected missing) and left out of
the denominator, and BatchNorm ``num_batches_tracked`` counters are never counted (they are
copied when present). BENet's ``paper`` preset is a reduced HRNet-W32 with 2 modules in stage 2
where HRNet-W32 has 1, so even a perfect W32 checkpoint leaves stage 2's second module as built
(about 8 % of the counted tensors); modules and blocks the checkpoint has beyond ours are counted
as unexpected.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from emotion_perception.nets.factory import CheckpointError, read_checkpoint

LAYOUTS: dict[str, str] = {
    "higherhrnet": "HigherHRNet (COCO pose, e.g. pose_higher_hrnet_w32_512.pth)",
    "hrnet-cls": "HRNet ImageNet classification (HRNet-Image-Classification or timm hrnet_w32)",
    "timm-features": "timm hrnet_w32 features_only",
    "hrnet-backbone": "HRNet trunk without heads",
    "benet": "a BENet checkpoint of this package",
    "unknown": "no known layout",
}
DEFAULT_MIN_MATCH = 0.9
_WRAPPERS = ("state_dict", "model")
_PREFIX = "backbone."


class InitMatchError(CheckpointError):
    """A pretrained checkpoint that fills too little of BENet's backbone; nothing was loaded."""


@dataclass(frozen=True)
class InitReport:
    """What :func:`load_backbone_init` copied.

    ``total`` is the denominator of the acceptance share: our backbone tensors without the
    attention modules (``ours_only``, which no pretrained checkpoint has) and without BatchNorm
    ``num_batches_tracked``. ``matched + missing == total``; a tensor whose checkpoint value has
    another shape is missing and also named in ``shape_mismatch``. ``unexpected`` counts the
    checkpoint's tensors that fit no tensor of our backbone (heads, modules we do not have).
    """

    source: str
    layout: str
    matched: int
    total: int
    missing: int
    unexpected: int
    shape_mismatch: tuple[str, ...]
    ours_only: int
    ours_only_matched: int = 0
    missing_keys: tuple[str, ...] = ()
    unexpected_keys: tuple[str, ...] = ()

    @property
    def share(self) -> float:
        return self.matched / self.total if self.total else 0.0

    def summary(self) -> str:
        line = (f"init from {self.source} (layout {self.layout}): matched {self.matched} of {self.total} "
                f"backbone tensors ({100 * self.share:.1f}%), missing {self.missing}, unexpected {self.unexpected}")
        if self.shape_mismatch:
            line += f", shape mismatch {len(self.shape_mismatch)}"
        left = self.ours_only - self.ours_only_matched
        if left:
            line += f"; {left} attention tensors are BENet's own (not counted, left as built)"
        return line


# --------------------------------------------------------------------------- key mapping

def _stem(match: re.Match) -> str:
    index = int(match[2]) - 1
    return f"stem.{index}.{0 if match[1] == 'conv' else 1}.{match[3]}"


def _transition(match: re.Match) -> str:
    return f"transitions.{int(match[1]) - 1}.{match[2]}"


def _branches(match: re.Match) -> str:
    rest = match[3].replace(".downsample.", ".shortcut.")
    return f"stages.{int(match[1]) - 2}.{match[2]}.branches.{rest}"


def _fuse(match: re.Match) -> str:
    return f"stages.{int(match[1]) - 2}.{match[2]}.fuse.{match[3]}"


_HRNET_RULES: tuple[tuple[re.Pattern, Callable[[re.Match], str]], ...] = (
    (re.compile(r"^(conv|bn)([12])\.([^.]+)$"), _stem),
    (re.compile(r"^layer1\.(\d+)\.downsample\.(.+)$"), lambda m: f"layer1.{m[1]}.shortcut.{m[2]}"),
    (re.compile(r"^layer1\.(\d+)\.((?:conv|bn)[123]\.[^.]+)$"), lambda m: f"layer1.{m[1]}.{m[2]}"),
    (re.compile(r"^transition([1-9])\.(.+)$"), _transition),
    (re.compile(r"^stage([2-9])\.(\d+)\.branches\.(.+)$"), _branches),
    (re.compile(r"^stage([2-9])\.(\d+)\.fuse_layers\.(.+)$"), _fuse),
)


def hrnet_key_to_benet(key: str) -> str | None:
    """Our ``backbone.*`` name of an HRNet trunk key (official / HigherHRNet / timm), or None."""
    for pattern, rename in _HRNET_RULES:
        match = pattern.match(key)
        if match:
            return _PREFIX + rename(match)
    return None


def _benet_key(key: str) -> str | None:
    return key if key.startswith(_PREFIX) else None


def detect_layout(keys: list[str] | tuple[str, ...] | Any) -> str:
    """The layout name (see :data:`LAYOUTS`) of a state dict's keys."""
    keys = list(keys)

    def has(prefix: str) -> bool:
        return any(k.startswith(prefix) for k in keys)

    if has(_PREFIX + "stem."):
        return "benet"
    trunk = has("conv1.") and has("layer1.") and has("stage2.")
    if has("final_layers.") or has("deconv_layers."):
        return "higherhrnet"
    if has("classifier.") or has("final_layer.") or has("downsamp_modules."):
        return "hrnet-cls"
    if has("incre_modules."):
        return "timm-features"
    if trunk:
        return "hrnet-backbone"
    return "unknown"


def _mapper(layout: str) -> Callable[[str], str | None]:
    if layout == "benet":
        return _benet_key
    if layout == "unknown":
        return lambda key: None
    return hrnet_key_to_benet


# --------------------------------------------------------------------------- reading

def _is_counter(key: str) -> bool:
    return key.endswith("num_batches_tracked")


def _is_ours_only(key: str) -> bool:
    return ".attention." in f".{key}"


def _state_dict_of(obj: Any, source: str) -> dict[str, torch.Tensor]:
    """The tensors of a raw state dict, or of one wrapped under 'state_dict' / 'model'."""
    for _ in range(3):  # e.g. {"model": {"state_dict": ...}}
        if not isinstance(obj, Mapping):
            break
        inner = next((obj[w] for w in _WRAPPERS if isinstance(obj.get(w), Mapping)), None)
        if inner is None:
            break
        obj = inner
    if not isinstance(obj, Mapping):
        raise CheckpointError(source, "<file>", f"expected a dict (a state dict), got {type(obj).__name__}")
    tensors = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise CheckpointError(source, "<state dict>", "no tensors found; expected a state dict, raw or under "
                                                      "'state_dict' or 'model'")
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in tensors.items()}


# --------------------------------------------------------------------------- loading

def load_backbone_init(
    model: nn.Module,
    path_or_state: str | Path | Mapping[str, Any],
    *,
    min_match: float = DEFAULT_MIN_MATCH,
    logger: logging.Logger | None = None,
) -> InitReport:
    """Copy a pretrained checkpoint's trunk into ``model.backbone``; returns the :class:`InitReport`.

    ``path_or_state`` is a checkpoint file (read with ``torch.load(..., map_location="cpu",
    weights_only=True)``) or an already loaded dict. Every checkpoint tensor whose renamed key
    exists in our backbone with the same shape is copied; heads stay as built.

    Raises :class:`InitMatchError` (a ``ValueError``) naming the file, the layout and the
    matched share when fewer than ``min_match`` of the counted backbone tensors would be filled
    (attention modules and ``num_batches_tracked`` are not counted, see the module docstring);
    nothing is copied then. FileNotFoundError / CheckpointError for missing or unreadable files.
    The one-line summary goes to ``logger`` (default: this module's) at INFO.
    """
    if not 0.0 <= min_match <= 1.0:
        raise ValueError(f"load_backbone_init: min_match must be in [0, 1], got {min_match}")
    if isinstance(path_or_state, Mapping):
        source = "<state dict>"
        loaded: Any = path_or_state
    else:
        source = str(path_or_state)
        loaded = read_checkpoint(path_or_state, "cpu", required=())
    checkpoint = _state_dict_of(loaded, source)

    target = getattr(model, "module", model)  # DistributedDataParallel
    backbone = getattr(target, "backbone", None)
    if not isinstance(backbone, nn.Module):
        raise TypeError(f"load_backbone_init: {type(target).__name__} has no backbone")
    ours = {_PREFIX + k: v for k, v in backbone.state_dict().items()}
    counted = [k for k in ours if not _is_counter(k) and not _is_ours_only(k)]
    ours_only = [k for k in ours if not _is_counter(k) and _is_ours_only(k)]

    layout = detect_layout(checkpoint)
    rename = _mapper(layout)
    plan: dict[str, torch.Tensor] = {}
    unexpected: list[str] = []
    mismatch: list[str] = []
    for key, value in checkpoint.items():
        name = rename(key)
        if name is None or name not in ours:
            if not _is_counter(key):
                unexpected.append(key)
        elif tuple(value.shape) != tuple(ours[name].shape):
            if not _is_counter(key):
                mismatch.append(name)
        else:
            plan[name] = value

    matched = sum(1 for k in counted if k in plan)
    missing_keys = tuple(k for k in counted if k not in plan)
    report = InitReport(
        source=source, layout=layout, matched=matched, total=len(counted), missing=len(missing_keys),
        unexpected=len(unexpected), shape_mismatch=tuple(mismatch), ours_only=len(ours_only),
        ours_only_matched=sum(1 for k in ours_only if k in plan),
        missing_keys=missing_keys, unexpected_keys=tuple(unexpected),
    )
    if report.share < min_match:
        raise InitMatchError(
            source, "<backbone>",
            f"layout {layout}: only {matched} of {len(counted)} BENet backbone tensors matched "
            f"({100 * report.share:.1f}%), {100 * min_match:.0f}% needed; nothing was loaded "
            f"({len(mismatch)} shape mismatches, {len(unexpected)} unused checkpoint tensors). "
            "--init expects an HRNet-W32 checkpoint (HigherHRNet pose, HRNet ImageNet, timm hrnet_w32) "
            "for the 'paper' preset",
        )
    with torch.no_grad():
        for name, value in plan.items():
            ours[name].copy_(value.to(ours[name].device))
    (logger or logging.getLogger(__name__)).info(report.summary())
    return report
