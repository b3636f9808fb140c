#!/usr/bin/env bash
# CAHFW-Net ablation at CPU size (docs/RESULTS.md, "Ablation"): the paper's three variants
# (SE+AF, SE+CA+AA, full SE+CA+ER+AA) x seeds, same recipe and epochs, best.pt (validation
# accuracy) evaluated on the synthetic test split.
#
#   scripts/ablation_cahfw.sh [EPOCHS] [SEEDS] [JOBS]      (defaults: 15 "0 1" 2)
#
# Runs land in runs/ablation_cahfw/<variant>_s<seed>/ (eval in eval_test/). Needs:
#   emotion-perception synth caer --out data_gen/caer_synth --images 2000 --seed 0
set -euo pipefail
cd "$(dirname "$0")/.."
EPOCHS=${1:-15}
SEEDS=${2:-"0 1"}
JOBS=${3:-2}
DATA=data_gen/caer_synth
CONFIG=config/train_cahfw_small_112_sgd_lr1e-2_cos_flood0.05_hog.yaml   # every variant: this recipe with --variant
OUT=runs/ablation_cahfw
CLI=${EMOTION_PERCEPTION_CLI:-.venv/bin/emotion-perception}
[ -d "$DATA" ] || { echo "missing $DATA: run 'emotion-perception synth caer --out $DATA --images 2000 --seed 0'" >&2; exit 2; }
mkdir -p "$OUT"

one_run() {  # variant seed: one recipe, the variant as an override (full = SE+CA+ER+AA)
    local variant=$1 seed=$2
    local run=$OUT/${variant}_s$seed
    if [ ! -f "$run/eval_test/metrics.json" ]; then
        OMP_NUM_THREADS=1 "$CLI" train cahfw --config "$CONFIG" --variant "${variant/full/se_ca_er_aa}" \
            --data "$DATA" --seed "$seed" --epochs "$EPOCHS" --workers 1 --out "$run" > "$run.train.log" 2>&1
        OMP_NUM_THREADS=1 "$CLI" eval cahfw --model "$run/best.pt" --data "$DATA" --split test \
            --workers 1 --out "$run/eval_test" > "$run.eval.log" 2>&1
    fi
    echo "done $variant seed $seed"
}
export -f one_run
export OUT DATA EPOCHS CLI CONFIG

# Every variant's first seed before any second seed: a cut-short session still has one full row.
for seed in $SEEDS; do for variant in full se_af se_ca_aa; do echo "$variant $seed"; done; done \
    | xargs -P "$JOBS" -L 1 bash -c 'one_run "$0" "$1"'
