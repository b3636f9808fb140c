"""BENet's multitask loss with per-image head routing and head ablations.

At each output resolution, normalised per image as the public code (lib/core/loss_mt.py) and
then averaged over the images routed to the head: CenterNet focal loss on the centre heatmap
(divided by that image's number of people), L1 on the box size at centre pixels summed over
width and height and averaged over the image's people (Eq. 2, weight 0.1), multi-label binary
focal loss on the bottom-up emotions at ground-truth centres (summed over categories, averaged
over the image's people), masked L1 on VAD where annotated (our extension). The same binary
focal loss trains the person-centric and background heads. An image only trains the heads its
drawn pre-transformation routes to (``targets.HEAD_ROUTING``); the others get exactly zero
gradient from it. Outputs may come from a routed forward (each head run on its images only:
:meth:`emotion_perception.nets.benet.BENet.forward` with ``routes``) or from a full one.
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
    # Centre heatmap Gaussian (map pixels), the public configs' SIGMA; 0: CenterNet's adaptive radius.
    gaussian_sigma: float = 2.0

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
    alpha: float = 2.0,
    beta: float = 4.0,
) -> torch.Tensor:
    """CenterNet's penalty-reduced focal loss over (n,1,h,w) heatmap logits, per image.

    Positives are pixels where the Gaussian target equals 1. Each image's sum is divided by its
    own number of positives (at least 1), then the images are averaged, as the public code.
    """
    probability = torch.sigmoid(logits)
    positive = target.eq(1).to(logits.dtype)
    positive_term = positive * (1 - probability).pow(alpha) * F.logsigmoid(logits)
    negative_term = (1 - positive) * (1 - target).pow(beta) * probability.pow(alpha) * F.logsigmoid(-logits)
    per_image = -(positive_term + negative_term).flatten(1).sum(1)
    positives = positive.flatten(1).sum(1)
    return (per_image / positives.clamp(min=1)).mean()


def gather_at(maps: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Values of (B,C,h,w) maps at flat pixel indices (B,M) -> (B,M,C)."""
    flat = maps.flatten(2)
    return flat.gather(2, index.unsqueeze(1).expand(-1, flat.shape[1], -1)).transpose(1, 2)


def per_image_person_mean(per_person: torch.Tensor, people: torch.Tensor) -> torch.Tensor:
    """(n, M) per-person values, (n, M) bool real people -> the mean over each image's people,
    then over the images that have any (zero, still in the graph, if none)."""
    weights = people.to(per_person.dtype)
    count = weights.sum(1)
    per_image = (per_person * weights).sum(1) / count.clamp(min=1)
    has_people = (count > 0).to(per_person.dtype)
    return (per_image * has_people).sum() / has_people.sum().clamp(min=1)


def _rows_of(output: torch.Tensor, route: torch.Tensor, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(the routed images' outputs, the route) whether ``output`` came from a routed forward
    (routed rows only) or a full one (every image: the routed rows are selected here)."""
    route = route.to(output.device)
    if output.shape[0] == route.shape[0]:
        return output[route], route
    if output.shape[0] == int(route.sum()):
        return output, route
    raise ValueError(f"BENet loss: output '{name}' has {output.shape[0]} rows, the batch {route.shape[0]} "
                     f"images of which {int(route.sum())} are routed to it")


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

    def routed(key: str, route: str, hint: str) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The routed rows of output ``key`` and the route; None when no image is routed."""
        if not bool(routes[route].any()):
            return None
        return _rows_of(_require(outputs, key, hint), routes[route], key)

    for stride in config.strides:
        target = targets.by_stride[stride]
        if "det" in config.heads and (found := routed(f"heatmap_{stride}", "det", "detection head")):
            heatmap, rows = found
            losses[f"heatmap_{stride}"] = centernet_focal_loss(
                heatmap, target.heatmap[rows.to(target.heatmap.device)], config.heatmap_alpha, config.heatmap_beta)
            size_found = routed(f"size_{stride}", "det", "detection head")
            assert size_found is not None  # same "det" route as the heatmap, which has rows
            size, _ = size_found
            picked = rows.to(target.index.device)
            error = (gather_at(size, target.index[picked]) - target.size[picked]).abs().sum(-1)  # Eq. 2: |dw| + |dh|
            losses[f"size_{stride}"] = per_image_person_mean(error, target.mask[picked])
            total_terms += [config.heatmap_weight * losses[f"heatmap_{stride}"],
                            config.size_weight * losses[f"size_{stride}"]]
        if "bu" in config.heads and (found := routed(f"emotions_{stride}", "bu", "bottom-up head")):
            emotions, rows = found
            picked = rows.to(target.index.device)
            focal = binary_focal_loss(gather_at(emotions, target.index[picked]), target.emotions[picked],
                                      config.emotion_gamma).sum(-1)
            losses[f"emotions_{stride}"] = per_image_person_mean(focal, target.mask[picked])
            total_terms.append(config.emotion_weight * losses[f"emotions_{stride}"])
        if "vad" in config.heads and (found := routed(f"vad_{stride}", "vad", "set BENetConfig.vad_head")):
            vad_logits, rows = found
            picked = rows.to(target.index.device)
            vad = torch.sigmoid(gather_at(vad_logits, target.index[picked]))
            annotated = torch.isfinite(target.vad[picked]) & target.mask[picked][..., None]
            error = (vad - torch.nan_to_num(target.vad[picked])).abs() * annotated.to(vad.dtype)
            losses[f"vad_{stride}"] = error.sum() / annotated.sum().clamp(min=1)
            total_terms.append(config.vad_weight * losses[f"vad_{stride}"])
    for head, key, weight in (("pc", "person_centric", config.person_centric_weight),
                              ("bg", "background", config.background_weight)):
        if head in config.heads and (found := routed(key, head, "run BENet with heads='all' and the head enabled")):
            logits, rows = found
            labels = targets.image_label.to(logits.device)[rows.to(logits.device)]
            losses[key] = binary_focal_loss(logits, labels, config.emotion_gamma).sum(-1).mean()
            total_terms.append(weight * losses[key])
    if not total_terms:
        raise ValueError("BENet loss: no image of the batch is routed to an enabled head")
    # Every enabled term is reported, 0 for a batch with no image routed to its head, so that
    # the logged terms (and their all-reduce across DDP ranks) always have the same keys.
    zero = torch.zeros((), device=total_terms[0].device)
    for key in enabled_terms(config):
        losses.setdefault(key, zero)
    losses["total"] = torch.stack(total_terms).sum()
    if not torch.isfinite(losses["total"]):
        bad = [name for name, value in losses.items() if not torch.isfinite(value)]
        raise FloatingPointError(f"non-finite BENet loss term(s): {', '.join(bad)}")
    return losses


def enabled_terms(config: BENetLossConfig) -> list[str]:
    """Names of the loss terms ``config`` enables (without ``total``)."""
    names = []
    for stride in config.strides:
        names += [f"heatmap_{stride}", f"size_{stride}"] if "det" in config.heads else []
        names += [f"emotions_{stride}"] if "bu" in config.heads else []
        names += [f"vad_{stride}"] if "vad" in config.heads else []
    names += ["person_centric"] if "pc" in config.heads else []
    names += ["background"] if "bg" in config.heads else []
    return names


def benet_batch_losses(
    outputs: Mapping[str, torch.Tensor], batch: Mapping[str, Any], config: BENetLossConfig = BENetLossConfig()
) -> dict[str, torch.Tensor]:
    """Build the targets of a collated batch on the outputs' device and return :func:`benet_losses`."""
    num_emotions = next(v.shape[1] for k, v in outputs.items() if k.startswith("emotions_"))
    device = next(iter(outputs.values())).device
    targets = build_targets(batch, num_emotions, config.strides, sigma=config.gaussian_sigma).to(device)
    return benet_losses(outputs, targets, config)
