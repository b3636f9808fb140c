#!/usr/bin/env bash
# The GPU check of issue #18 (emotion_perception/bench/gpu_check.py; docs/DEPLOYMENT.md, "GPU check"):
# the device, which backend `auto` picks and why, PyTorch CUDA fp32 / fp16 / fp16 + CUDA graphs
# latency of BENet `paper` (512x512) and `lite`, the 20 / 1 people pipeline ratio and agreement of
# the people found with the CPU, as a table and one JSON file; under 10 minutes.
#
# On a GPU machine, from the repository root (PyTorch with CUDA and numpy are all it needs: no
# virtual environment, no network; OpenCV adds the pipeline and agreement rows), e.g. through the
# device tool:
#     bash scripts/gpu_check.sh --json $OUT/gpu_check.json
# On a CPU (CI), the same code with small inputs and the CUDA-only rows marked skipped:
#     bash scripts/gpu_check.sh --dry
# PYTHON picks the interpreter (default: python3); every other option: --help.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-python3}"
if ! command -v "$python" >/dev/null 2>&1; then
    echo "gpu_check: no Python interpreter '$python' (set PYTHON=/path/to/python)" >&2
    exit 2
fi
if ! "$python" -c "import torch" >/dev/null 2>&1; then
    echo "gpu_check: $python cannot import torch: install PyTorch (with CUDA for the GPU run) or set PYTHON" >&2
    exit 2
fi
# The package runs from this source tree, installed or not.
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
exec "$python" -m emotion_perception.cli bench gpu-check "$@"
