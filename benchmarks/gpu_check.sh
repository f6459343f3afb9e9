#!/usr/bin/env bash
# The GPU check (benchmarks/gpu_check.py): device tests on CUDA, training
# throughput at the paper's size (fp32, bf16) against d3rlpy's DT, evaluator
# speed, a short MT10 run; one summary table, under 8 minutes on one GPU.
#   bash benchmarks/gpu_check.sh              # on a GPU machine
#   bash benchmarks/gpu_check.sh --dry-run    # CPU, tiny sizes (CI runs this)
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
[ -x "$PY" ] || PY=python3
exec timeout 480 "$PY" benchmarks/gpu_check.py "$@"
