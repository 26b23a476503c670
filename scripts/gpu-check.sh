#!/usr/bin/env bash
# The checks that need a CUDA GPU, for a machine that has one (CI has none):
#   1. the engine's reference tests with the `device` fixture on cuda as well as cpu
#      (every metric against plain autograd, histograms against torch.histc), CUDA against
#      CPU records, and one host synchronisation per step (CUDA's sync debug mode);
#   2. the overhead benchmark on the GPU (wall-clock ratios, bench/results/overhead-cuda.json).
# Uses the python3 on PATH, which needs torch with CUDA and the project's packages; with
# PYTHONPATH=backend it runs from a checkout without installing it.
#   bash scripts/gpu-check.sh [RESULTS_DIR]
set -uo pipefail
results=${1:-bench/results}
python3 -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'" || exit 1
python3 -m pytest -q -p no:cacheprovider tests/test_probe.py tests/test_stats.py \
  tests/test_trainer.py tests/test_transfer.py
tests=$?
python3 bench/overhead.py --device cuda --out "$results/overhead-cuda.json"
exit $((tests || $?))
