#!/usr/bin/env bash
# `make gpu-smoke`: from a bare CUDA machine to every GPU check and benchmark, within GPU_SMOKE_LIMIT seconds.
#
# Python with a CUDA build of torch is found or made, in this order:
#   1. $GPU_PYTHON, or `python3` when its torch already sees a GPU (cloud images, lent machines):
#      the project's other dependencies that are missing are installed into .gpu-site/ (no venv copy of torch);
#   2. otherwise the CUDA venv of the Makefile (.venv-cuda, torch from $CUDA_TORCH_SPEC).
# Packages come from PyPI, or with WHEELHOUSE=DIR only from that folder of wheels (offline machines).
set -uo pipefail
cd "$(dirname "$0")/.."
LIMIT="${GPU_SMOKE_LIMIT:-480}"
start=$(date +%s)
SITE="$PWD/.gpu-site"
# Modules the project and its tests import, with librosa's and soundfile's own needs spelled out: pip's
# --target ignores what is installed, so it runs with --no-deps and this list stands in for the resolver
# (the image's numpy and torch are never shadowed).
NEEDED="numpy scipy click PIL tqdm psutil requests packaging pytest ninja joblib sklearn numba msgpack
        lazy_loader typing_extensions decorator audioread soxr platformdirs pooch pycparser cffi soundfile librosa"
declare -A PIP_NAME=([PIL]=pillow [sklearn]=scikit-learn [lazy_loader]=lazy-loader [typing_extensions]=typing-extensions)

has_cuda_torch() { "$1" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; }

PY="${GPU_PYTHON:-python3}"
if has_cuda_torch "$PY"; then
  echo "gpu-smoke: using $PY ($("$PY" -c 'import torch; print(torch.__version__)'))"
  missing=()
  for mod in $NEEDED; do
    PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}" "$PY" -c "import $mod" 2>/dev/null || missing+=("${PIP_NAME[$mod]:-$mod}")
  done
  if ((${#missing[@]})); then
    echo "gpu-smoke: installing into .gpu-site: ${missing[*]}"
    if [[ -n "${WHEELHOUSE:-}" ]]; then
      "$PY" -m pip install -q --no-index --find-links "$WHEELHOUSE" --no-deps --no-compile --target "$SITE" "${missing[@]}" \
        || { echo "gpu-smoke: could not install ${missing[*]} from $WHEELHOUSE"; exit 2; }
    else
      "$PY" -m pip install -q --no-deps --no-compile --target "$SITE" "${missing[@]}" \
        || { echo "gpu-smoke: could not install ${missing[*]}"; exit 2; }
    fi
  fi
  export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
else
  echo "gpu-smoke: $PY has no CUDA torch; building .venv-cuda (CUDA_TORCH_SPEC=${CUDA_TORCH_SPEC:-torch==2.14.1})"
  make .venv-cuda/.installed || { echo "gpu-smoke: could not create .venv-cuda"; exit 2; }
  PY=.venv-cuda/bin/python
  has_cuda_torch "$PY" || { echo "gpu-smoke: no CUDA device visible to torch in .venv-cuda; nothing to check"; exit 2; }
fi

# Kernels build into a per-checkout cache unless the user chose one; all cores for nvcc.
export ELECTROGAN_CACHE="${ELECTROGAN_CACHE:-$PWD/.cache/electrogan}"
export MAX_JOBS="${MAX_JOBS:-$(nproc)}"
left=$(( LIMIT - ($(date +%s) - start) ))
exec "$PY" benchmarks/gpu_smoke.py --limit "$left" --python "$PY" "$@"
