#!/usr/bin/env bash
# INT8 against fp32 with the shipped demo models on their synthetic test splits (issue #18):
# each model evaluated with the papers' metrics as the checkpoint in PyTorch fp32, as ONNX
# Runtime's fp32 graph, and as the two INT8 (QDQ) graphs, onnxruntime-shaped (uint8
# activations) and tensorrt-shaped (symmetric int8, run here by ONNX Runtime on the CPU).
# Then a table: headline metrics, their difference to torch fp32 in points, eval wall time.
#
#   scripts/int8_accuracy.sh                 # everything, one evaluation at a time, 1 thread
#   THREADS=4 OUT=runs/int8_4t scripts/int8_accuracy.sh
#   MODELS=cahfw scripts/int8_accuracy.sh     # one model
#   TABLE_ONLY=1 scripts/int8_accuracy.sh     # reprint the table of an earlier run
#
# Data: the generator settings the model cards give (models/benet_lite_demo.md,
# models/cahfw_small_demo.md), made when missing. Exports and quantisations go to a cache inside
# OUT, so they are made from this checkout's code (their time is the first INT8 row's open_s).
set -euo pipefail
cd "$(dirname "$0")/.."

EP=${EP:-.venv/bin/emotion-perception}
PY=${PY:-.venv/bin/python}
OUT=${OUT:-runs/int8_accuracy}
THREADS=${THREADS:-1}
MODELS=${MODELS:-"benet cahfw"}
EMOTIC=${EMOTIC:-data_gen/emotic_synth}
CAER=${CAER:-data_gen/caer_synth}
BENET_MODEL=${BENET_MODEL:-models/benet_lite_demo.pt}
CAHFW_MODEL=${CAHFW_MODEL:-models/cahfw_small_demo.pt}
export OMP_NUM_THREADS=$THREADS  # torch and numpy on the same thread budget as ONNX Runtime

# name, then the eval options of each form
FORMS=(
  "torch-fp32|--backend torch --precision fp32"
  "onnxruntime-fp32|--backend onnxruntime --precision fp32"
  "onnxruntime-int8|--backend onnxruntime --precision int8 --int8-target onnxruntime"
  "onnxruntime-int8-tensorrt-qdq|--backend onnxruntime --precision int8 --int8-target tensorrt"
)

if [[ -z "${TABLE_ONLY:-}" ]]; then
  for model in $MODELS; do
    case $model in
      benet)
        [[ -f $EMOTIC/Annotations/Annotations.mat ]] ||
          "$EP" synth emotic --out "$EMOTIC" --images 2000 --seed 0 --workers 1 --no-progress
        extra=(--model "$BENET_MODEL" --data "$EMOTIC" --examples 0) ;;
      cahfw)
        [[ -f $CAER/CAER-S/face_boxes.txt ]] ||
          "$EP" synth caer --out "$CAER" --images 2000 --seed 0 --workers 1 --no-progress
        extra=(--model "$CAHFW_MODEL" --data "$CAER") ;;
      *) echo "int8_accuracy.sh: unknown model '$model' (benet, cahfw)" >&2; exit 2 ;;
    esac
    for form in "${FORMS[@]}"; do
      name=${form%%|*}
      read -r -a options <<< "${form#*|}"
      dir=$OUT/$model/$name
      echo "== $model $name" >&2
      start=$(date +%s.%N)
      # Default decoding settings: the public test's (flip test, threshold 0.1, top 15), as the cards.
      "$EP" eval "$model" "${extra[@]}" --split test --out "$dir" --device cpu --threads "$THREADS" \
        --cache-dir "$OUT/cache" "${options[@]}" 2> >(grep -v 'it/s\]\|s/it\]' >&2)
      end=$(date +%s.%N)
      "$PY" -c "print(f'{$end - $start:.1f}')" > "$dir/wall_s.txt"
    done
  done
fi

"$PY" - "$OUT" $MODELS <<'EOF'
import json
import sys
from pathlib import Path

import numpy as np

out, models = Path(sys.argv[1]), sys.argv[2:]
HEADLINES = {
    "benet": [("det AP", lambda m: m["detection"]["AP"]), ("det AP50", lambda m: m["detection"]["AP50"]),
              ("BU mAP", lambda m: m["gt_centre"]["bu"]["mAP"]), ("joint mAP", lambda m: m["joint"]["mAP"])],
    "cahfw": [("accuracy", lambda m: m["accuracy"]), ("mean class acc", lambda m: m["mean_class_accuracy"])],
}
for model in models:
    rows = []
    for folder in sorted((out / model).iterdir(), key=lambda p: (p.name != "torch-fp32", p.name)):
        if (folder / "metrics.json").is_file():
            rows.append((folder.name, json.loads((folder / "metrics.json").read_text()),
                         (folder / "wall_s.txt").read_text().strip() if (folder / "wall_s.txt").is_file() else "?"))
    if not rows:
        continue
    reference = next((m for name, m, _ in rows if name == "torch-fp32"), rows[0][1])
    names = [name for name, _ in HEADLINES[model]]
    print(f"\n{model} ({rows[0][1]['checkpoint']}, {rows[0][1].get('num_images')} test images; "
          f"differences in points against torch fp32)")
    # CAHFW-Net: how many test images get another class than from torch fp32 (a headline can
    # stay put while predictions move, when errors trade places between two classes).
    changed = model == "cahfw"
    print("| form | " + " | ".join(names) + " | " + " | ".join(f"d {n}" for n in names)
          + (" | changed predictions" if changed else "") + " | open s | predict s | eval wall s |")
    print("|---" * (2 * len(names) + 4 + changed) + "|")
    for name, metrics, wall in rows:
        values = [100 * get(metrics) for _, get in HEADLINES[model]]
        deltas = [v - 100 * get(reference) for v, (_, get) in zip(values, HEADLINES[model])]
        timing = metrics.get("timing", {})
        moved = ""
        if changed:
            ours, theirs = (np.load(out / model / form / "predictions.npz")["y_pred"] for form in (name, "torch-fp32"))
            moved = f" | {int((ours != theirs).sum())} of {len(ours)}"
        print(f"| {name} | " + " | ".join(f"{v:.2f}" for v in values) + " | "
              + " | ".join(f"{d:+.2f}" for d in deltas) + moved
              + f" | {timing.get('open_s', float('nan')):.1f} | {timing.get('predict_s', float('nan')):.1f} | {wall} |")
EOF
