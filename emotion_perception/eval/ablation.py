"""Summary of a BENet head ablation: one row per head set, seeds side by side, plus a figure.

A run folder is ``<heads>_s<seed>`` (``scripts/ablation_benet_heads.sh`` writes them), e.g.
``bu_det_s1``, holding ``history.json`` (training) and ``eval_test/metrics.json`` (``eval
benet``). Head sets are ordered as in the paper's ablation (BU, BU+Det, +PC, +BG). The spread
of a metric over seeds is reported next to its mean, because on a short budget the difference
between two head sets means something only where it exceeds the run-to-run spread.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

HEAD_LABELS = {"bu": "BU", "det": "Det", "pc": "PC", "bg": "BG", "vad": "VAD"}
RUN_NAME = re.compile(r"^(?P<heads>[a-z]+(?:_[a-z]+)*)_s(?P<seed>\d+)$")


@dataclass(frozen=True)
class AblationRun:
    """One trained and evaluated run of the ablation."""

    heads: tuple[str, ...]
    seed: int
    steps: int | None  # optimisation steps trained (history.json), None if the file is missing
    bu_map: float
    pc_map: float | None  # None when the run has no person-centric head
    fusion_map: float | None
    detection_ap: float | None
    joint_map: float | None
    folder: Path
    chance_map: float | None = None  # mAP of random scores: mean prevalence (predictions.npz), None if absent


@dataclass
class AblationRow:
    """Every seed of one head set."""

    heads: tuple[str, ...]
    runs: list[AblationRun] = field(default_factory=list)

    @property
    def label(self) -> str:
        return "+".join(HEAD_LABELS[name] for name in self.heads)

    def values(self, metric: str) -> list[float]:
        return [getattr(run, metric) for run in self.runs if getattr(run, metric) is not None]


def parse_heads(text: str, source: Path) -> tuple[str, ...]:
    """Heads named by a run folder (``bu_det``), validated and ordered as training does; BU required."""
    from emotion_perception.train.benet import parse_heads as parse_trained_heads

    heads = parse_trained_heads(text.split("_"), source)  # ConfigError (a ValueError) on unknown names
    if "bu" not in heads:
        raise ValueError(f"{source}: field 'heads': {heads} has no bu; the ablation compares bottom-up mAP "
                         f"(folder names like bu_det_s0)")
    return heads


def _number(metrics: dict, path: str, source: Path) -> float | None:
    value: object = metrics
    for key in path.split("."):
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    if value is None:
        return None
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise ValueError(f"{source}: field {path!r} is {value!r}, expected a number")
    return float(value)


def read_run(folder: Path, eval_name: str = "eval_test") -> AblationRun:
    """The numbers of one run folder; a clear ``ValueError`` if its outputs are incomplete."""
    match = RUN_NAME.match(folder.name)
    if match is None:
        raise ValueError(f"{folder}: not an ablation run folder name (<heads>_s<seed>, e.g. bu_det_s0)")
    metrics_path = folder / eval_name / "metrics.json"
    if not metrics_path.is_file():
        raise ValueError(f"{metrics_path}: missing (evaluate the run: emotion-perception eval benet "
                         f"--model {folder / 'final.pt'} --out {folder / eval_name} ...)")
    try:
        metrics = json.loads(metrics_path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{metrics_path}: not JSON ({err})") from err
    bu_map = _number(metrics, "gt_centre.bu.mAP", metrics_path)
    if bu_map is None:
        raise ValueError(f"{metrics_path}: field 'gt_centre.bu.mAP' missing; not an 'eval benet' output")
    steps = None
    history_path = folder / "history.json"
    if history_path.is_file():
        history = json.loads(history_path.read_text())
        steps = int(history[-1]["step"]) if history else 0
    return AblationRun(
        heads=parse_heads(match["heads"], folder), seed=int(match["seed"]), steps=steps, bu_map=bu_map,
        chance_map=chance_map(folder / eval_name / "predictions.npz"),
        pc_map=_number(metrics, "gt_centre.pc.mAP", metrics_path),
        fusion_map=_number(metrics, "gt_centre.fusion.mAP", metrics_path),
        detection_ap=_number(metrics, "detection.AP", metrics_path),
        joint_map=_number(metrics, "joint.mAP", metrics_path), folder=folder,
    )


def chance_map(predictions_path: Path) -> float | None:
    """Expected AP of random scores, averaged like mAP: the mean prevalence of the categories
    with positives in ``y_true`` of an ``eval benet`` predictions.npz (None if there is none)."""
    if not predictions_path.is_file():
        return None
    import numpy as np

    with np.load(predictions_path) as arrays:
        if "y_true" not in arrays.files:
            raise ValueError(f"{predictions_path}: no 'y_true' array; not an 'eval benet' output")
        prevalence = np.asarray(arrays["y_true"], dtype=np.float64).mean(axis=0)
    present = prevalence[prevalence > 0]
    return float(present.mean()) if present.size else None


def collect(root: Path, eval_name: str = "eval_test") -> list[AblationRow]:
    """Rows of every evaluated ``<heads>_s<seed>`` folder under ``root``, in the paper's order."""
    rows: dict[tuple[str, ...], AblationRow] = {}
    for folder in sorted(path for path in Path(root).iterdir() if path.is_dir() and RUN_NAME.match(path.name)):
        if not (folder / eval_name / "metrics.json").is_file():
            continue  # still training, or cut short: summarised once evaluated
        run = read_run(folder, eval_name)
        rows.setdefault(run.heads, AblationRow(run.heads)).runs.append(run)
    for row in rows.values():
        row.runs.sort(key=lambda run: run.seed)
    from emotion_perception.train.benet import HEAD_NAMES

    # Paper order: more heads later; among equal counts, the heads' training order decides.
    return sorted(rows.values(), key=lambda row: (len(row.heads), [HEAD_NAMES.index(h) for h in row.heads]))


def mean_and_spread(values: Sequence[float]) -> tuple[float, float]:
    """Mean and half the max-min range (0 for one value); NaN, NaN for none."""
    if not values:
        return math.nan, math.nan
    return sum(values) / len(values), (max(values) - min(values)) / 2


def _cell(values: Sequence[float]) -> str:
    if not values:
        return "–"
    mean, spread = mean_and_spread(values)
    return f"{100 * mean:.1f}" if len(values) == 1 else f"{100 * mean:.1f} ± {100 * spread:.1f}"


def markdown_table(rows: Sequence[AblationRow]) -> str:
    """Markdown table: per head set, mean ± half-range over seeds (percent) and each seed's BU mAP."""
    lines = [
        ("| heads | seeds | steps | BU mAP (GT centres) | BU mAP per seed | PC mAP | fusion mAP | detection AP "
         "| joint mAP |"),
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        steps = sorted({run.steps for run in row.runs if run.steps is not None})
        per_seed = ", ".join(f"{100 * run.bu_map:.1f}" for run in row.runs)
        detection = row.values("detection_ap") if "det" in row.heads else []  # an untrained heatmap's AP means nothing
        joint = row.values("joint_map") if "det" in row.heads else []
        lines.append(
            f"| {row.label} | {', '.join(str(run.seed) for run in row.runs)} | "
            f"{', '.join(map(str, steps)) or '?'} | {_cell(row.values('bu_map'))} | {per_seed} | "
            f"{_cell(row.values('pc_map'))} | {_cell(row.values('fusion_map'))} | {_cell(detection)} | {_cell(joint)} |"
        )
    return "\n".join(lines) + "\n"


def plot(rows: Sequence[AblationRow], path: Path, chance: float | None = None,
         title: str = "BENet head ablation") -> Path:
    """BU and fusion mAP per head set: each seed a dot, the mean a bar; ``chance`` a dashed line."""
    from emotion_perception.eval.plots import plot_seed_bars

    series = {"BU (bottom-up maps)": [row.values("bu_map") for row in rows],
              "fusion (BU + PC)": [row.values("fusion_map") for row in rows]}
    return plot_seed_bars([row.label for row in rows], series, path, ylabel="mAP at ground-truth centres",
                          title=title, reference=chance, reference_label="chance (random scores)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", type=Path, help="folder of <heads>_s<seed> run folders")
    parser.add_argument("--eval-name", default="eval_test", help="evaluation subfolder of each run")
    parser.add_argument("--plot", type=Path, help="figure path (default: RUNS/ablation.png)")


def run(args: argparse.Namespace, stream: TextIO) -> int:
    """``eval ablation``: the table to ``stream``, the figure to ``--plot``; 2 on bad or no runs."""
    try:
        rows = collect(args.runs, args.eval_name)
    except (OSError, ValueError) as err:
        print(f"ablation: {err}", file=sys.stderr)
        return 2
    if not rows:
        print(f"ablation: no evaluated <heads>_s<seed> runs under {args.runs}", file=sys.stderr)
        return 2
    stream.write(markdown_table(rows))
    chances = [value for row in rows for value in row.values("chance_map")]
    if chances:
        # Distinct levels are listed: more than one means the runs were evaluated on different data.
        stream.write(f"\nChance mAP (random scores, mean category prevalence): "
                     f"{', '.join(f'{100 * value:.1f}' for value in sorted({round(v, 4) for v in chances}))}\n")
    # The figure draws one line: the mean, which is the common level when the runs share their data.
    figure = plot(rows, args.plot or args.runs / "ablation.png", sum(chances) / len(chances) if chances else None)
    print(f"figure: {figure}", file=sys.stderr)
    return 0
