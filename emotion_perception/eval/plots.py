"""Evaluation figures (matplotlib, Agg backend): AP bars, PR curves, confusion matrix, examples.

Each function draws one figure from arrays and writes it to ``path`` (PNG); none reads files
or models, so the evaluation commands decide what to plot.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from emotion_perception.eval.metrics import precision_recall_curve


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | Path, tight: bool = True) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # A tight bounding box costs a full extra draw; grids with a fixed layout skip it.
    fig.savefig(path, dpi=110, bbox_inches="tight" if tight else None)
    _pyplot().close(fig)
    return path


def plot_per_category_ap(
    aps_by_method: Mapping[str, np.ndarray], categories: Sequence[str], path: str | Path, title: str = "Per-category AP"
) -> Path:
    """Grouped horizontal bars: one group per category, one bar per method (e.g. BU, PC, fusion).

    NaN APs (categories without positives) are drawn as missing bars and marked "n/a".
    """
    plt = _pyplot()
    methods = list(aps_by_method)
    num_categories = len(categories)
    bar_height = 0.8 / max(len(methods), 1)
    fig, ax = plt.subplots(figsize=(7.5, 0.32 * num_categories + 1.5))
    positions = np.arange(num_categories)
    for index, method in enumerate(methods):
        aps = np.asarray(aps_by_method[method], dtype=np.float64)
        offsets = positions + (index - (len(methods) - 1) / 2) * bar_height
        mean = np.nanmean(aps) if np.any(~np.isnan(aps)) else float("nan")
        ax.barh(offsets, np.nan_to_num(aps * 100, nan=0.0), height=bar_height, label=f"{method} (mAP {mean * 100:.1f})")
    for position, column in enumerate(np.stack([np.asarray(v) for v in aps_by_method.values()], axis=1)):
        if np.all(np.isnan(column)):
            ax.text(1, position, "n/a", va="center", fontsize=7, color="gray")
    ax.set_yticks(positions, categories, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("AP (%)")
    ax.set_xlim(0, 100)
    ax.set_title(title, pad=26)
    ax.grid(axis="x", alpha=0.3)
    # Above the axes: inside, the legend would hide the bars of the last categories.
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=max(len(methods), 1), fontsize=8, frameon=False)
    return _save(fig, path)


def plot_pr_curves(
    y_true: np.ndarray, y_score: np.ndarray, categories: Sequence[str], path: str | Path,
    title: str = "Precision-recall",
) -> Path:
    """One small precision-recall panel per category, with its AP and positive count."""
    from emotion_perception.eval.metrics import per_category_ap

    plt = _pyplot()
    y_true = np.asarray(y_true)
    y_score = np.asarray(y_score)
    aps = per_category_ap(y_true, y_score)
    columns = 6
    rows = int(np.ceil(len(categories) / columns))
    fig, axes = plt.subplots(rows, columns, figsize=(2.2 * columns, 2.1 * rows + 0.6), sharex=True, sharey=True,
                             squeeze=False)
    fig.subplots_adjust(left=0.06, right=0.98, bottom=0.3 / rows + 0.02, top=1 - 0.45 / rows, hspace=0.55, wspace=0.12)
    for index, ax in enumerate(axes.flat):
        if index >= len(categories):
            ax.axis("off")
            continue
        positives = int(y_true[:, index].sum())
        if positives:
            precision, recall, _ = precision_recall_curve(y_true[:, index], y_score[:, index])
            ax.step(recall, precision, where="post", linewidth=1.2)
            ax.axhline(positives / len(y_true), color="gray", linestyle=":", linewidth=0.8)
            ax.set_title(f"{categories[index]}\nAP {aps[index] * 100:.1f} (n={positives})", fontsize=7)
        else:
            ax.set_title(f"{categories[index]}\nno positives", fontsize=7)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.tick_params(labelsize=6)
    fig.suptitle(title, fontsize=10)
    fig.supxlabel("recall", fontsize=8)
    fig.supylabel("precision", fontsize=8)
    return _save(fig, path, tight=False)


def plot_confusion_matrix(
    matrix: np.ndarray, class_names: Sequence[str], path: str | Path, title: str = "Confusion matrix"
) -> Path:
    """Row-normalised confusion matrix (rows = true class) with the raw counts printed."""
    plt = _pyplot()
    matrix = np.asarray(matrix, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        normalised = np.nan_to_num(matrix / matrix.sum(axis=1, keepdims=True))
    size = 1.0 + 0.6 * len(class_names)
    fig, ax = plt.subplots(figsize=(size + 1.2, size))
    image = ax.imshow(normalised, cmap="Blues", vmin=0, vmax=1)
    for (row, column), count in np.ndenumerate(matrix):
        ax.text(column, row, f"{int(count)}", ha="center", va="center", fontsize=8,
                color="white" if normalised[row, column] > 0.5 else "black")
    ax.set_xticks(range(len(class_names)), class_names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(class_names)), class_names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="fraction of true class")
    return _save(fig, path)


def _overlay(image_rgb: np.ndarray, heat: np.ndarray, colormap: str) -> np.ndarray:
    """Blend a non-negative map (any resolution, bilinearly resized) over an RGB image.

    The map is stretched from its minimum to its maximum so its shape shows whatever its range;
    the figure titles print the range.
    """
    import cv2

    plt = _pyplot()
    height, width = image_rgb.shape[:2]
    heat = cv2.resize(np.asarray(heat, dtype=np.float32), (width, height), interpolation=cv2.INTER_LINEAR)
    low, high = float(heat.min()), float(heat.max())
    heat = np.clip((heat - low) / max(high - low, 1e-6), 0.0, 1.0)
    colour = plt.get_cmap(colormap)(heat)[..., :3]
    alpha = 0.25 + 0.6 * heat[..., None]
    # float32 rounding of the blend can land a hair above 1, which imshow clips with a warning.
    return np.clip((image_rgb.astype(np.float32) / 255.0) * (1 - alpha) + colour * alpha, 0.0, 1.0)


def plot_detection_example(
    image_rgb: np.ndarray,
    path: str | Path,
    categories: Sequence[str],
    *,
    gt_boxes: np.ndarray,
    det_boxes: np.ndarray,
    det_scores: np.ndarray,
    det_emotions: np.ndarray,
    heatmap: np.ndarray,
    emotion_maps: np.ndarray,
    num_emotion_maps: int = 3,
    max_labels: int = 5,
    title: str = "",
) -> Path:
    """BENet-style example (its Fig. 2): detections with top emotions, centre heatmap, emotion maps.

    ``heatmap`` (h, w) and ``emotion_maps`` (E, h, w) are probabilities on any grid aligned with
    the image (they are resized to it). The emotion maps shown are the categories with the
    highest peak value; only the ``max_labels`` best detections get a text label.
    """
    from matplotlib.patches import Rectangle

    plt = _pyplot()
    emotion_maps = np.asarray(emotion_maps, dtype=np.float32)
    shown = np.argsort(-emotion_maps.reshape(len(emotion_maps), -1).max(axis=1))[:num_emotion_maps]
    panels = 2 + len(shown)
    fig, axes = plt.subplots(1, panels, figsize=(3.2 * panels, 3.4))
    axes[0].imshow(image_rgb)
    for box in np.asarray(gt_boxes).reshape(-1, 4):
        axes[0].add_patch(Rectangle((box[0], box[1]), box[2] - box[0], box[3] - box[1], fill=False,
                                    edgecolor="lime", linestyle="--", linewidth=1.2))
    for rank, (box, score, emotions) in enumerate(zip(np.asarray(det_boxes).reshape(-1, 4), np.ravel(det_scores),
                                                      np.asarray(det_emotions))):
        axes[0].add_patch(Rectangle((box[0], box[1]), box[2] - box[0], box[3] - box[1], fill=False,
                                    edgecolor="red", linewidth=1.5))
        if rank >= max_labels:
            continue
        top = np.argsort(-emotions)[:2]
        label = f"{score:.2f}\n" + "\n".join(f"{categories[i]} {emotions[i]:.2f}" for i in top)
        axes[0].text(box[0], box[1], label, fontsize=6, color="white", va="top",
                     bbox={"facecolor": "red", "alpha": 0.6, "pad": 1, "linewidth": 0})
    axes[0].set_title("detections (red), ground truth (green)", fontsize=8)
    axes[1].imshow(_overlay(image_rgb, heatmap, "jet"))
    axes[1].set_title(f"centre heatmap ({float(np.min(heatmap)):.2f}..{float(np.max(heatmap)):.2f})", fontsize=8)
    for ax, category in zip(axes[2:], shown):
        ax.imshow(_overlay(image_rgb, emotion_maps[category], "magma"))
        values = emotion_maps[category]
        ax.set_title(f"{categories[category]} map ({float(values.min()):.2f}..{float(values.max()):.2f})", fontsize=8)
    for ax in axes:
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def plot_seed_bars(
    groups: Sequence[str], series: Mapping[str, Sequence[Sequence[float]]], path: str | Path,
    ylabel: str = "value", title: str = "", reference: float | None = None, reference_label: str = "reference",
) -> Path:
    """Grouped bars of means with every seed's value as a dot: how far apart runs of one setting are.

    ``series`` maps a legend name to one list of per-seed values per group (an empty list draws
    no bar, e.g. a metric the setting does not have). ``reference`` draws a dashed horizontal line
    (e.g. the chance level).
    """
    plt = _pyplot()
    names = list(series)
    width = 0.8 / max(len(names), 1)
    fig, ax = plt.subplots(figsize=(1.6 + 1.5 * len(groups), 3.8))
    for offset, name in enumerate(names):
        positions = np.arange(len(groups)) + (offset - (len(names) - 1) / 2) * width
        labelled = False
        for position, values in zip(positions, series[name]):
            if len(values) == 0:
                continue
            ax.bar(position, float(np.mean(values)), width * 0.9, color=f"C{offset}", alpha=0.55,
                   label=None if labelled else name)
            labelled = True
            ax.scatter(np.full(len(values), position), values, color=f"C{offset}", edgecolor="black",
                       linewidth=0.5, s=22, zorder=3)
            ax.annotate(f"{100 * np.mean(values):.1f}", (position, float(np.max(values))), textcoords="offset points",
                        xytext=(0, 4), ha="center", fontsize=7)
    if reference is not None:
        ax.axhline(reference, color="gray", linestyle="--", linewidth=1,
                   label=f"{reference_label} {100 * reference:.1f}")
    ax.set_xticks(range(len(groups)), groups)
    ax.set_ylabel(ylabel)
    top = max([float(np.max(v)) for values in series.values() for v in values if len(v)] + [reference or 0.0])
    ax.set_ylim(0, top * 1.12 if top > 0 else 1)  # room for the value labels above the dots
    ax.set_title(title, pad=24)
    ax.grid(axis="y", alpha=0.3)
    # Above the axes: inside, the legend would hide the tallest bar.
    ax.legend(fontsize=8, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=len(names) + 1, frameon=False)
    return _save(fig, path)
