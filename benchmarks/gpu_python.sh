# Sourced from the repository root by benchmarks/gpu_smoke.sh and recipes/pretrained_gpu.sh: sets PY to a
# Python whose torch sees a CUDA GPU, in this order:
#   1. $GPU_PYTHON, or `python3` when its torch already sees a GPU (cloud images, lent machines):
#      the project's other dependencies that are missing are installed into .gpu-site/ (no venv copy of torch);
#   2. otherwise the CUDA venv of the Makefile (.venv-cuda, torch from $CUDA_TORCH_SPEC).
# Packages come from PyPI, or with WHEELHOUSE=DIR only from that folder of wheels (offline machines).
# GPU_TOOL names the caller in messages; a failure exits the caller with status 2.
GPU_TOOL="${GPU_TOOL:-gpu}"
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
  echo "$GPU_TOOL: using $PY ($("$PY" -c 'import torch; print(torch.__version__)'))"
  missing=()
  for mod in $NEEDED; do
    PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}" "$PY" -c "import $mod" 2>/dev/null || missing+=("${PIP_NAME[$mod]:-$mod}")
  done
  if ((${#missing[@]})); then
    echo "$GPU_TOOL: installing into .gpu-site: ${missing[*]}"
    if [[ -n "${WHEELHOUSE:-}" ]]; then
      "$PY" -m pip install -q --no-index --find-links "$WHEELHOUSE" --no-deps --no-compile --target "$SITE" "${missing[@]}" \
        || { echo "$GPU_TOOL: could not install ${missing[*]} from $WHEELHOUSE"; exit 2; }
    else
      "$PY" -m pip install -q --no-deps --no-compile --target "$SITE" "${missing[@]}" \
        || { echo "$GPU_TOOL: could not install ${missing[*]}"; exit 2; }
    fi
  fi
  export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
else
  echo "$GPU_TOOL: $PY has no CUDA torch; building .venv-cuda (CUDA_TORCH_SPEC=${CUDA_TORCH_SPEC:-torch==2.14.1})"
  make .venv-cuda/.installed || { echo "$GPU_TOOL: could not create .venv-cuda"; exit 2; }
  PY=.venv-cuda/bin/python
  has_cuda_torch "$PY" || { echo "$GPU_TOOL: no CUDA device visible to torch in .venv-cuda; nothing to check"; exit 2; }
fi

