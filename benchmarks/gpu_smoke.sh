#!/usr/bin/env bash
# `make gpu-smoke`: from a bare CUDA machine to every GPU check and benchmark, within GPU_SMOKE_LIMIT seconds.
# Python with a CUDA build of torch is found or made by benchmarks/gpu_python.sh ($GPU_PYTHON, WHEELHOUSE).
set -uo pipefail
cd "$(dirname "$0")/.."
LIMIT="${GPU_SMOKE_LIMIT:-480}"
GPU_TOOL=gpu-smoke
start=$(date +%s)
source benchmarks/gpu_python.sh

# Kernels build into a per-checkout cache unless the user chose one; all cores for nvcc.
export ELECTROGAN_CACHE="${ELECTROGAN_CACHE:-$PWD/.cache/electrogan}"
export MAX_JOBS="${MAX_JOBS:-$(nproc)}"
left=$(( LIMIT - ($(date +%s) - start) ))
exec "$PY" benchmarks/gpu_smoke.py --limit "$left" --python "$PY" "$@"
