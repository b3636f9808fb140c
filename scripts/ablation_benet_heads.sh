#!/usr/bin/env bash
# BENet head ablation at CPU size (docs/RESULTS.md, "Ablation of heads"): the four head sets of
# the paper (BU, BU+Det, BU+Det+PC, BU+Det+PC+BG) x seeds, each trained for the same number of
# optimisation steps and evaluated (final.pt) on the synthetic test split.
#
#   scripts/ablation_benet_heads.sh [STEPS] [SEEDS] [JOBS] [HEAD_SETS]
#   (defaults: 400 "0 1" 2 "bu bu_det_pc_bg bu_det bu_det_pc")
#
# JOBS runs go side by side, one thread each (on a 2-core machine 2 single-thread runs train
# faster in total than one 2-thread run). Runs land in runs/ablation_benet/<heads>_s<seed>/,
# a summary table in runs/ablation_benet/summary.md. Needs the synthetic scenes:
#   emotion-perception synth emotic --out data_gen/emotic_synth --images 2000 --seed 0
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS=${1:-400}
SEEDS=${2:-"0 1"}
JOBS=${3:-2}
HEAD_SETS=${4:-"bu bu_det_pc_bg bu_det bu_det_pc"}
DATA=data_gen/emotic_synth
CONFIG=config/train_benet_lite_256_adam_lr1e-3_light.yaml   # every head set: this recipe with --heads
OUT=runs/ablation_benet
CLI=${EMOTION_PERCEPTION_CLI:-.venv/bin/emotion-perception}
[ -d "$DATA" ] || { echo "missing $DATA: run 'emotion-perception synth emotic --out $DATA --images 2000 --seed 0'" >&2; exit 2; }
mkdir -p "$OUT"

one_run() {  # heads seed: one recipe, the head set as an override
    local heads=$1 seed=$2
    local run=$OUT/${heads}_s$seed
    if [ ! -f "$run/eval_test/metrics.json" ]; then
        OMP_NUM_THREADS=1 "$CLI" train benet --config "$CONFIG" --heads "$heads" --data "$DATA" --seed "$seed" \
            --max-steps "$STEPS" --workers 1 --out "$run" > "$run.train.log" 2>&1
        OMP_NUM_THREADS=1 "$CLI" eval benet --model "$run/final.pt" --data "$DATA" --split test \
            --workers 1 --out "$run/eval_test" > "$run.eval.log" 2>&1
    fi
    echo "done $heads seed $seed"
}
export -f one_run
export OUT DATA STEPS CLI CONFIG

# Every head set's first seed before any second seed: a cut-short session still has one full row.
for seed in $SEEDS; do for heads in $HEAD_SETS; do echo "$heads $seed"; done; done \
    | xargs -P "$JOBS" -L 1 bash -c 'one_run "$0" "$1"'

"$CLI" eval ablation "$OUT" > "$OUT/summary.md"
cat "$OUT/summary.md"
