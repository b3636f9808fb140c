"""BENet's multitask loss with per-image head routing and head ablations.

At each output resolution: CenterNet focal loss on the centre heatmap (normalised by the number
of people), L1 on the box size at centre pixels (weight 0.1), multi-label binary focal loss on
the bottom-up emotions at ground-truth centres, masked L1 on VAD where annotated. The same
binary focal loss trains the person-centric and background heads. An image only trains the
heads its drawn pre-transformation routes to (``targets.HEAD_ROUTING``); the others get exactly
zero gradient from it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from emotion_perception.train.targets import HEADS, STRIDES, BENetTargets, build_targets

# Head sets of the paper's ablation (BU, BU+Det, +PC, +BG); add "vad" for the continuous head.
HEAD_ABLATIONS: dict[str, frozenset[str]] = {
    "bu": frozenset({"bu"}),
    "bu_det": frozenset({"bu", "det"}),
    "bu_det_pc": frozenset({"bu", "det", "pc"}),
    "bu_det_pc_bg": frozenset({"bu", "det", "pc", "bg"}),
}


@dataclass(frozen=True)
class BENetLossConfig:
    """Which heads train and how their terms are weighted."""

    heads: frozenset[str] = HEAD_ABLATIONS["bu_det_pc_bg"]  # subset of {"det","bu","pc","bg","vad"}
    heatmap_weight: float = 1.0  # CenterNet focal loss on centre heatmaps (each resolution)
    size_weight: float = 0.1  # L1 on box sizes (CenterNet's lambda_size)
    emotion_weight: float = 1.0  # binary focal loss on bottom-up emotions (each resolution)
    vad_weight: float = 1.0  # masked L1 on VAD (each resolution)
    person_centric_weight: float = 1.0  # binary focal loss of the person-centric head
    background_weight: float = 1.0  # binary focal loss of the background head
    heatmap_alpha: float = 2.0  # focal exponent on the prediction error (CenterNet alpha)
    heatmap_beta: float = 4.0  # exponent of the Gaussian penalty reduction (CenterNet beta)
    emotion_gamma: float = 2.0  # focusing exponent of the binary focal loss
    strides: tuple[int, ...] = STRIDES  # output resolutions trained ("heatmap_4" -> 4, ...)

    def __post_init__(self) -> None:
        unknown = set(self.heads) - set(HEADS)
        if unknown:
            raise ValueError(f"BENetLossConfig.heads: unknown head(s) {sorted(unknown)}; known: {HEADS}")
        if not self.heads:
            raise ValueError("BENetLossConfig.heads: at least one head must be enabled")
        object.__setattr__(self, "heads", frozenset(self.heads))


def binary_focal_loss(logits: torch.Tensor, targets: torch.Tensor, gamma: float = 2.0) -> torch.Tensor:
    """Elementwise -[y (1-p)^g log p + (1-y) p^g log(1-p)], p = sigmoid(logits), log-sigmoid stable."""
    probability = torch.sigmoid(logits)
    positive = targets * (1 - probability).pow(gamma) * F.logsigmoid(logits)
    negative = (1 - targets) * probability.pow(gamma) * F.logsigmoid(-logits)
    return -(positive + negative)


def centernet_focal_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    image_mask: torch.Tensor | None = None,
    alpha: float = 2.0,
    beta: float = 4.0,
) -> torch.Tensor:
    """CenterNet's penalty-reduced focal loss over (B,1,h,w) heatmap logits.

    Positives are pixels where the Gaussian target equals 1. The sum over the images selected by
    ``image_mask`` (B,) is divided by their number of positives (at least 1).
    """
    probability = torch.sigmoid(logits)
    positive = target.eq(1).to(logits.dtype)
    positive_term = positive * (1 - probability).pow(alpha) * F.logsigmoid(logits)
    negative_term = (1 - positive) * (1 - target).pow(beta) * probability.pow(alpha) * F.logsigmoid(-logits)
    per_image = -(positive_term + negative_term).flatten(1).sum(1)
    positives = positive.flatten(1).sum(1)
    if image_mask is not None:
        weights = image_mask.to(logits.dtype)
        per_image = per_image * weights
        positives = positives * weights
    return per_image.sum() / positives.sum().clamp(min=1)


def gather_at(maps: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Values of (B,C,h,w) maps at flat pixel indices (B,M) -> (B,M,C)."""
    flat = maps.flatten(2)
    return flat.gather(2, index.unsqueeze(1).expand(-1, flat.shape[1], -1)).transpose(1, 2)


def _mean_over_rows(per_element: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """Sum over the last dim, mean over the selected rows (zero, still in the graph, if none)."""
    weights = rows.to(per_element.dtype)
    return (per_element.sum(-1) * weights).sum() / weights.sum().clamp(min=1)


def _require(outputs: Mapping[str, torch.Tensor], key: str, hint: str) -> torch.Tensor:
    if key not in outputs:
        raise KeyError(f"BENet loss needs output '{key}' ({hint}); outputs have {sorted(outputs)}")
    return outputs[key].float()


def benet_losses(
    outputs: Mapping[str, torch.Tensor], targets: BENetTargets, config: BENetLossConfig = BENetLossConfig()
) -> dict[str, torch.Tensor]:
    """Loss terms of the enabled heads and their weighted ``total``; raises on non-finite values."""
    losses: dict[str, torch.Tensor] = {}
    total_terms: list[torch.Tensor] = []
    routes = targets.routes
    for stride in config.strides:
        target = targets.by_stride[stride]
        if "det" in config.heads:
            heatmap = _require(outputs, f"heatmap_{stride}", "detection head")
            losses[f"heatmap_{stride}"] = centernet_focal_loss(
                heatmap, target.heatmap, routes["det"], config.heatmap_alpha, config.heatmap_beta
            )
            size = gather_at(_require(outputs, f"size_{stride}", "detection head"), target.index)
            rows = target.mask & routes["det"][:, None]
            # Mean over (person, dimension) elements, as CenterNet's RegL1Loss.
            losses[f"size_{stride}"] = _mean_over_rows((size - target.size).abs(), rows) / 2
            total_terms += [config.heatmap_weight * losses[f"heatmap_{stride}"],
                            config.size_weight * losses[f"size_{stride}"]]
        if "bu" in config.heads:
            emotions = gather_at(_require(outputs, f"emotions_{stride}", "bottom-up head"), target.index)
            rows = target.mask & routes["bu"][:, None]
            losses[f"emotions_{stride}"] = _mean_over_rows(
                binary_focal_loss(emotions, target.emotions, config.emotion_gamma), rows
            )
            total_terms.append(config.emotion_weight * losses[f"emotions_{stride}"])
        if "vad" in config.heads:
            vad = torch.sigmoid(gather_at(_require(outputs, f"vad_{stride}", "set BENetConfig.vad_head"), target.index))
            annotated = torch.isfinite(target.vad) & (target.mask & routes["vad"][:, None])[..., None]
            error = (vad - torch.nan_to_num(target.vad)).abs() * annotated.to(vad.dtype)
            losses[f"vad_{stride}"] = error.sum() / annotated.sum().clamp(min=1)
            total_terms.append(config.vad_weight * losses[f"vad_{stride}"])
    for head, key, weight in (("pc", "person_centric", config.person_centric_weight),
                              ("bg", "background", config.background_weight)):
        if head in config.heads:
            logits = _require(outputs, key, "run BENet with heads='all' and the head enabled")
            losses[key] = _mean_over_rows(
                binary_focal_loss(logits, targets.image_label.to(logits.device), config.emotion_gamma), routes[head]
            )
            total_terms.append(weight * losses[key])
    losses["total"] = torch.stack(total_terms).sum()
    if not torch.isfinite(losses["total"]):
        bad = [name for name, value in losses.items() if not torch.isfinite(value)]
        raise FloatingPointError(f"non-finite BENet loss term(s): {', '.join(bad)}")
    return losses


def benet_batch_losses(
    outputs: Mapping[str, torch.Tensor], batch: Mapping[str, Any], config: BENetLossConfig = BENetLossConfig()
) -> dict[str, torch.Tensor]:
    """Build the targets of a collated batch on the outputs' device and return :func:`benet_losses`."""
    num_emotions = next(v.shape[1] for k, v in outputs.items() if k.startswith("emotions_"))
    device = next(iter(outputs.values())).device
    targets = build_targets(batch, num_emotions, config.strides).to(device)
    return benet_losses(outputs, targets, config)
