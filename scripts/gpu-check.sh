#!/usr/bin/env bash
# The checks that need a CUDA GPU, for a machine that has one (CI has none):
#   1. the test suite without the browser tests, on a machine where CUDA is present: the
#      engine's reference tests run with the `device` fixture on cuda as well as cpu (every
#      metric against plain autograd, histograms against torch.histc), and the CUDA-only tests
#      run (CUDA against CPU records, one host synchronisation per step, a cuda run through
#      the API's worker processes);
#   2. the overhead benchmark on the GPU (wall-clock ratios, overhead-cuda.json).
# Uses the python3 on PATH, which needs torch with CUDA and the project's packages installed
# (`pip install -e '.[dev]'`). Extra arguments go to pytest (e.g. --ignore=tests/service/test_fuzz.py).
#   bash scripts/gpu-check.sh [RESULTS_DIR] [PYTEST ARGS...]
set -uo pipefail
results=${1:-bench/results}
shift || true
python3 -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'" || exit 1
python3 -m pytest -q -p no:cacheprovider -m "not browser" --ignore=tests/e2e "$@"
tests=$?
python3 bench/overhead.py --device cuda --out "$results/overhead-cuda.json"
exit $((tests || $?))
