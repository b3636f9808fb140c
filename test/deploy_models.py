"""Seeded tiny models and checkpoints shared by the deployment tests (export, runtime, predict CLI)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
from torch import nn

from emotion_perception.nets.factory import create_model


def peaky_benet(seed: int = 0) -> nn.Module:
    """Tiny BENet whose heatmap has distinct peaks and whose sizes are positive.

    Freshly initialised BENet heatmaps sit flat at the focal-loss prior (all pixels ~0.1), where
    neighbouring pixels tie to within rounding and decoding would compare noise. Re-drawing the
    final heatmap/size convolutions gives trained-like, well separated peaks and real boxes.
    """
    torch.manual_seed(seed)
    model = create_model("benet", "tiny").eval()
    with torch.no_grad():
        for head, std, bias in ((model.heatmap_head, 0.05, 0.0), (model.size_head, 0.3, 4.0)):
            for final in (head.final_4, head.final_2):
                nn.init.normal_(final[-1].weight, std=std)
                nn.init.constant_(final[-1].bias, bias)
    return model


def tiny_cahfw(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return create_model("cahfw", "tiny").eval()


def save_checkpoint(model: nn.Module, path: Path, name: str) -> Path:
    """A checkpoint in the project's format (docs/ARCHITECTURE.md, "Checkpoints")."""
    torch.save({"model": model.state_dict(), "model_name": name, "config": dataclasses.asdict(model.config),
                "epoch": 0, "metrics": {}}, path)
    return path


def with_card_changes(source, target, changes: dict) -> None:
    """A copy of the ONNX file ``source`` whose embedded model card has ``changes`` applied
    (dotted keys reach into normalisation); the graph itself is untouched."""
    import json

    import onnx

    from emotion_perception.export.model_card import CARD_KEY

    model = onnx.load(str(source))
    prop = next(p for p in model.metadata_props if p.key == CARD_KEY)
    card = json.loads(prop.value)
    for key, value in changes.items():
        *parents, leaf = key.split(".")
        node = card
        for parent in parents:
            node = node[parent]
        node[leaf] = value(node[leaf]) if callable(value) else value
    prop.value = json.dumps(card)
    onnx.save(model, str(target))
