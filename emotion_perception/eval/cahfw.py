"""Evaluation of a CAHFW-Net checkpoint on a CAER-S split: the paper's accuracy metrics.

Writes to ``out_dir``:

* ``metrics.json``: overall accuracy, mean per-class accuracy, per-class accuracy by class name,
  image count, split, the checkpoint's preset/variant, ``deployment`` (backend, precision,
  device, INT8 target, the graph's model card) and ``timing`` (seconds to open the network, to
  run the split, in all);
* ``confusion_matrix.json`` (class names + counts, rows = true class) and ``confusion_matrix.png``;
* ``predictions.npz``: ``y_true`` (N,) int64, ``y_score`` (N, K) float32 softmax probabilities,
  ``y_pred`` (N,) int64 and ``paths`` (N,) of the images, in dataset order.

The face-box cache, no-face policy and train/val split parameters are those the checkpoint was
trained with (its ``train_config``), so ``split="val"`` is the very hold-out of training.

The network is the checkpoint's module by default, or a deployed form of it (ONNX Runtime or
TensorRT, fp32 / fp16 / INT8; :mod:`emotion_perception.eval.deployed`); CAHFW-Net's deploy graph
is the whole network, so every metric is available for every form.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch

from emotion_perception.data.categories import CAER_CATEGORIES
from emotion_perception.data.datasets import drop_unusable_images
from emotion_perception.data.records import FaceRecord
from emotion_perception.data.report import ReadReport
from emotion_perception.eval.deployed import (
    Deployment,
    EvalNetwork,
    checked_load_device,
    eval_network,
)
from emotion_perception.eval.metrics import accuracy, confusion_matrix, per_class_accuracy
from emotion_perception.serialization import jsonable

if TYPE_CHECKING:
    from emotion_perception.nets.cahfw import CAHFWConfig

# Dataset-reading settings taken from the checkpoint's train_config when present.
_READER_DEFAULTS: dict[str, Any] = {"detector": "cnn", "no_face": "keep", "val_fraction": 0.1, "seed": 0}

LOGGER = logging.getLogger(__name__)


@torch.no_grad()
def predict(
    network: EvalNetwork, loader: torch.utils.data.DataLoader, num_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """(y_true (N,) int64, y_score (N, K) float32 softmax probabilities) over ``loader``, from
    ``network``'s logits (the checkpoint's module or a deployed form of it)."""
    from tqdm import tqdm

    truths, scores = [], []
    for face, context, label in tqdm(loader, desc="evaluate", leave=False, dynamic_ncols=True):
        logits = network(face.to(network.device), context.to(network.device))["logits"].float()
        scores.append(torch.softmax(logits, dim=1).cpu().numpy())
        truths.append(label.numpy())
    if not truths:
        return np.zeros(0, dtype=np.int64), np.zeros((0, num_classes), dtype=np.float32)
    return np.concatenate(truths).astype(np.int64), np.concatenate(scores).astype(np.float32)


def classification_metrics(y_true: np.ndarray, y_score: np.ndarray, class_names: Sequence[str]) -> dict[str, Any]:
    """Accuracy, mean per-class accuracy, per-class accuracy (by name) and the confusion matrix."""
    num_classes = len(class_names)
    y_pred = y_score.argmax(axis=1) if len(y_score) else np.zeros(0, dtype=np.int64)
    per_class = per_class_accuracy(y_true, y_pred, num_classes)
    defined = per_class[~np.isnan(per_class)]
    return {
        "accuracy": accuracy(y_true, y_pred),
        "mean_class_accuracy": float(defined.mean()) if defined.size else math.nan,
        "per_class_accuracy": {name: float(v) for name, v in zip(class_names, per_class)},
        "confusion_matrix": confusion_matrix(y_true, y_pred, num_classes).tolist(),
        "num_images": int(len(y_true)),
    }


def evaluate_cahfw(
    checkpoint: str | Path,
    data_root: str | Path | None,
    split: str = "test",
    out_dir: str | Path = "eval_cahfw",
    *,
    batch_size: int = 64,
    workers: int = 0,
    device: str = "auto",
    records: Sequence[FaceRecord] | None = None,
    progress: bool = True,
    deployment: Deployment | None = None,
) -> dict[str, Any]:
    """Evaluate ``checkpoint`` on CAER-S ``split`` under ``data_root`` (or on ``records``).

    ``deployment`` picks the form of the network that runs (None: the checkpoint's module in
    PyTorch fp32). Returns the metrics written to ``metrics.json`` (see the module docstring).
    """
    from emotion_perception.data.faces import CAHFWDataset
    from emotion_perception.eval.plots import plot_confusion_matrix
    from emotion_perception.nets.factory import CheckpointError, load_model_from_checkpoint

    deployment = deployment or Deployment()
    started = time.perf_counter()
    # Before minutes of reading data or exporting: a form that cannot run here says so now.
    run_device = checked_load_device(deployment, device)
    model, state = load_model_from_checkpoint(checkpoint, map_location=run_device)
    if state["model_name"] != "cahfw":
        raise CheckpointError(checkpoint, "model_name", f"expected 'cahfw', got {state['model_name']!r}")
    config = cast("CAHFWConfig", model.config)  # nn.Module's attribute lookup is typed Tensor | Module
    train_config = state.get("train_config") or {}
    if not isinstance(train_config, dict):
        raise CheckpointError(checkpoint, "train_config", f"expected a dict, got {type(train_config).__name__}")
    if records is None:
        from emotion_perception.data.caer import load_caer

        if data_root is None:
            raise ValueError("evaluate_cahfw: give data_root (a CAER-S folder) or records")
        reader = {key: train_config.get(key, default) for key, default in _READER_DEFAULTS.items()}
        records = load_caer(data_root, split, progress=progress, **reader)
    unusable = ReadReport(source=f"eval cahfw {split}")
    records = drop_unusable_images(list(records), unusable, decode=True)  # skipped and reported, not a crash mid-run
    unusable.log(LOGGER)
    if not records:
        raise ValueError(f"evaluate_cahfw: no usable images in split {split!r} of {data_root}")
    class_names = list(CAER_CATEGORIES) if config.num_classes == len(CAER_CATEGORIES) else [
        f"class {i}" for i in range(config.num_classes)]
    dataset = CAHFWDataset(records, config.input_size, train=False, num_classes=config.num_classes,
                           face_scale=float(train_config.get("face_scale", 1.0)))
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers)
    open_started = time.perf_counter()
    network = eval_network(model, "cahfw", checkpoint, deployment, device, run_device, batch_size)
    predict_started = time.perf_counter()
    try:
        y_true, y_score = predict(network, loader, config.num_classes)
    finally:
        network.close()
    predicted = time.perf_counter()

    metrics = classification_metrics(y_true, y_score, class_names)
    matrix = metrics.pop("confusion_matrix")
    metrics.update({"split": split, "checkpoint": str(checkpoint), "preset_input_size": config.input_size,
                    "variant": config.variant, "class_names": class_names, "deployment": network.record})
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    np.savez(out_dir / "predictions.npz", y_true=y_true, y_score=y_score,
             y_pred=y_score.argmax(axis=1) if len(y_score) else np.zeros(0, dtype=np.int64),
             paths=np.array([str(r.path) for r in records]))
    (out_dir / "confusion_matrix.json").write_text(
        json.dumps({"class_names": class_names, "rows": "true class", "columns": "predicted class",
                    "matrix": matrix}, indent=1) + "\n")
    plot_confusion_matrix(np.array(matrix), class_names, out_dir / "confusion_matrix.png",
                          title=f"CAHFW-Net {config.variant}, CAER-S {split}")
    metrics["timing"] = {"open_s": predict_started - open_started, "predict_s": predicted - predict_started,
                         "total_s": time.perf_counter() - started}
    (out_dir / "metrics.json").write_text(json.dumps(jsonable(metrics), indent=1) + "\n")  # NaN -> null
    return {**metrics, "confusion_matrix": matrix}
