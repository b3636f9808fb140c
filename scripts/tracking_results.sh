#!/usr/bin/env bash
# Reproduces docs/RESULTS.md "Tracking and smoothing": IDF1 / MOTA / ID switches / HOTA and label
# flicker from raw and smoothed scores, on fixed-seed synthetic sequences, for a BENet model
# (default: the demo model) and for the face path (MTCNN + the expression model).
#   scripts/tracking_results.sh [BENET_MODEL] [OUT_DIR]
# CPU, about 2 minutes. Node defaults (config/*.yaml) for thresholds, confirmation, timeout and
# the smoothing time constant. Re-run after retraining models/benet_lite_demo.pt.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
EP="${EP_VENV:-$ROOT/.venv}/bin/emotion-perception"
MODEL="${1:-$ROOT/models/benet_lite_demo.pt}"
OUT="${2:-$ROOT/out/tracking_results}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
mkdir -p "$OUT"

run() {  # name kind people model [track options...]
  local name=$1 kind=$2 people=$3 model=$4; shift 4
  local seq="$OUT/seq_$kind"
  [[ -f "$seq/seqinfo.ini" ]] || "$EP" synth sequence --out "$seq" --frames 200 --people "$people" --seed 0 --kind "$kind"
  "$EP" track --model "$model" --sequence "$seq" --out "$OUT/$name/pred.txt" --backend torch --device cpu "$@" 2>/dev/null
  echo "== $name"
  "$EP" eval tracking --gt "$seq" --pred "$OUT/$name/pred.txt" --json "$OUT/$name/metrics.json"
}

run benet bodies 4 "$MODEL"
run benet_drop_every_3 bodies 4 "$MODEL" --drop-every 3
run expression faces 3 expression
run expression_drop_every_3 faces 3 expression --drop-every 3
