"""How far a model is from the synthetic benchmark's ceiling, and where the distance lies.

    emotion-perception eval ceiling runs/RUN/eval_test/predictions.npz --data data_gen/emotic_synth

The synthetic scenes' labels are a deterministic function of the generator's cue variables
(``data/synth/rules.py``), recorded per person in ``Annotations/synth_cues.csv``. The ceiling of
the ground-truth-centre protocol is therefore 100 mAP for a model that perceives every cue; the
*cue oracle* (the cues' own categories used as scores) measures that ceiling instead of assuming
it, and fails loudly where the evaluated labels and the generator's cues disagree (label noise,
a reader bug, or predictions of another split). Reported beside it, from the same predictions:

* mAP per cue kind (categories shown on the face, by the body pose, or by the context), which
  says which kind of evidence the model has not learned;
* mAP per person height at the network input (the cue's size in input pixels), which says how
  much of the distance is resolution.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from emotion_perception.data.categories import EMOTIC_CATEGORIES
from emotion_perception.data.synth.rules import EMOTIC_RULES
from emotion_perception.eval import metrics as M

CUES_FILE = "Annotations/synth_cues.csv"
# Person height at the network input, in input pixels (the lite preset's input is 256).
HEIGHT_BINS: tuple[tuple[float, float], ...] = ((0.0, 96.0), (96.0, 128.0), (128.0, float("inf")))


def cue_categories(data_root: Path, split: str, image_paths: Sequence[str]) -> list[list[str]]:
    """Per person, in the predictions' order (image by image, annotation order), the categories
    the generator's cues give (``synth_cues.csv``)."""
    path = Path(data_root) / CUES_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: 'eval ceiling' needs a synthetic root from 'synth emotic'")
    by_image: dict[str, list[tuple[int, list[str]]]] = {}
    with path.open(newline="") as handle:
        for row in csv.DictReader(handle):
            if row["split"] == split:
                names = [name for name in row["categories"].split(";") if name]
                by_image.setdefault(row["filename"], []).append((int(row["person"]), names))
    people: list[list[str]] = []
    for image_path in image_paths:
        name = Path(image_path).name
        if name not in by_image:
            raise ValueError(f"{CUES_FILE} has no '{split}' row for image {name}: "
                             "predictions of another root or split?")
        people.extend(names for _, names in sorted(by_image[name]))
    return people


def _multi_hot(people: Sequence[Sequence[str]], categories: Sequence[str]) -> np.ndarray:
    index = {name: i for i, name in enumerate(categories)}
    out = np.zeros((len(people), len(categories)), dtype=np.float32)
    for row, names in enumerate(people):
        for name in names:
            out[row, index[name]] = 1.0
    return out


def _map_over(y_true: np.ndarray, y_score: np.ndarray, columns: Sequence[int]) -> float:
    """mAP (%) over the given categories that have a positive among these people."""
    aps = [M.average_precision(y_true[:, c], y_score[:, c]) for c in columns if y_true[:, c].sum() > 0]
    return float(100.0 * np.mean(aps)) if aps else float("nan")


def synthetic_ceiling(predictions: dict[str, np.ndarray], cues: Sequence[Sequence[str]], input_size: int,
                      image_sizes: np.ndarray, categories: Sequence[str] = EMOTIC_CATEGORIES) -> dict[str, Any]:
    """The ceiling report of one split's predictions (``eval benet``'s predictions.npz arrays);
    ``image_sizes`` (I, 2) width, height of each image, as the letterbox sees it."""
    y_true = np.asarray(predictions["y_true"], dtype=np.float32)
    if len(cues) != len(y_true):
        raise ValueError(f"{len(cues)} people in the cue file against {len(y_true)} in the predictions")
    oracle = _multi_hot(cues, categories)
    disagreements = int((oracle != y_true).any(axis=1).sum())
    everything = list(range(len(categories)))
    scores = {"bu": np.asarray(predictions["y_score"], dtype=np.float32)}
    if "y_score_fusion" in predictions and np.asarray(predictions["y_score_fusion"]).size:
        scores["fusion"] = np.asarray(predictions["y_score_fusion"], dtype=np.float32)
    kinds = {rule.category: rule.kind for rule in EMOTIC_RULES}
    boxes = np.asarray(predictions["gt_boxes"], dtype=np.float64)
    sizes = np.asarray(image_sizes, dtype=np.float64).reshape(-1, 2)
    scale = input_size / sizes.max(axis=1)[np.asarray(predictions["person_image"], dtype=np.int64)]
    heights = (boxes[:, 3] - boxes[:, 1]) * scale
    report: dict[str, Any] = {
        "people": int(len(y_true)),
        "labels_disagreeing_with_cues": disagreements,
        "cue_oracle_mAP": _map_over(y_true, oracle, everything),
        "input_size": input_size,
        "models": {},
    }
    for name, y_score in scores.items():
        entry: dict[str, Any] = {"mAP": _map_over(y_true, y_score, everything), "by_kind": {}, "by_height": []}
        for kind in ("face", "body", "context"):
            columns = [i for i, c in enumerate(categories) if kinds.get(c) == kind]
            entry["by_kind"][kind] = _map_over(y_true, y_score, columns)
        for low, high in HEIGHT_BINS:
            rows = (heights >= low) & (heights < high)
            entry["by_height"].append({"min_px": low, "max_px": None if high == float("inf") else high,
                                       "people": int(rows.sum()),
                                       "mAP": _map_over(y_true[rows], y_score[rows], everything)})
        report["models"][name] = entry
    return report


def markdown(report: dict[str, Any]) -> str:
    """The report as the table docs/RESULTS.md holds."""
    lines = [(f"cue oracle mAP {report['cue_oracle_mAP']:.1f} ({report['labels_disagreeing_with_cues']} of "
             f"{report['people']} people's labels disagree with their cues)"), "",
             "| scores | mAP | distance to ceiling | face cues | body cues | context cues | "
             + " | ".join(_bin_label(b) for b in next(iter(report["models"].values()))["by_height"]) + " |",
             "|---" * (6 + len(HEIGHT_BINS)) + "|"]
    for name, entry in report["models"].items():
        cells = [name, f"{entry['mAP']:.1f}", f"{report['cue_oracle_mAP'] - entry['mAP']:.1f}"]
        cells += [f"{entry['by_kind'][k]:.1f}" for k in ("face", "body", "context")]
        cells += [f"{b['mAP']:.1f} ({b['people']})" for b in entry["by_height"]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _bin_label(bin_: dict[str, Any]) -> str:
    if bin_["max_px"] is None:
        return f"height >= {bin_['min_px']:.0f} px"
    return f"height {bin_['min_px']:.0f}-{bin_['max_px']:.0f} px"


def main_ceiling(predictions_path: Path, data_root: Path, split: str, input_size: int, out: Path | None) -> int:
    from emotion_perception.data.imageio import image_size
    from emotion_perception.serialization import jsonable  # NaN -> null, as every result file

    with np.load(predictions_path, allow_pickle=False) as data:
        predictions = {key: data[key] for key in data.files}
    image_paths = [str(p) for p in predictions["image_paths"]]
    if not image_paths:
        raise ValueError(f"{predictions_path} holds no images")
    sizes = []
    for image_path in image_paths:
        path = Path(image_path)
        sizes.append(image_size(path if path.is_absolute() or path.exists() else Path(data_root) / path))
    report = synthetic_ceiling(predictions, cue_categories(data_root, split, image_paths), input_size, np.array(sizes))
    text = markdown(report)
    print(text)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(jsonable(report), indent=2))
        print(f"wrote {out}")
    return 0

