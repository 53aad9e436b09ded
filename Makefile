# ElectroGAN: everything a newcomer needs runs through these targets.
# The virtual environment lives in .venv; torch is pinned to the CPU build so
# a fresh machine does not pull a multi-GB CUDA wheel (set TORCH_SPEC to change).
# CUDA work (kernel compile check, GPU tests) uses a second venv, .venv-cuda,
# with a CUDA build of torch (CUDA_TORCH_SPEC).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.13.0
CUDA_VENV ?= .venv-cuda
CUDA_PY := $(CUDA_VENV)/bin/python
CUDA_TORCH_SPEC ?= torch==2.14.1
CUDA_ARCH ?= 8.0;9.0

.PHONY: install lint test test-slow test-all test-librosa-0.10 demo demo-quick pretrained pretrained-gpu studio cuda-compile-check gpu-check gpu-smoke bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[dev,fid]"
	touch $@

install: $(VENV)/.installed

# Lint before the tests (pyproject.toml says which rules and why): ruff finds unused imports and names,
# undefined names and unsorted imports; import-linter checks the layers -- stylegan2 never imports
# audio_ext, no library module imports a CLI, the rooms of audio_ext import only downward, no cycles --
# and names the offending import when one breaks.
lint: install
	$(PY) -m ruff check .
	$(VENV)/bin/lint-imports

# The fast suite: CPU only, no slow or GPU tests.
test: install
	$(PY) -m pytest -q

# Only the slow tests (two-rank equality, the quick demo, CUDA compile check when possible).
test-slow: install
	$(PY) -m pytest -q -m "slow and not gpu"

test-all: install
	$(PY) -m pytest -q -m "not gpu"

# The fast suite again on the oldest librosa series we support (0.10; the venv has the newest): that
# release goes into .librosa-0.10, first on PYTHONPATH (the whole suite, so no list of tests can go stale).
LIBROSA_OLDEST ?= librosa==0.10.2.post1
test-librosa-0.10: install
	$(PY) -m pip install -q --no-deps --upgrade --target .librosa-0.10 "$(LIBROSA_OLDEST)"
	PYTHONPATH=.librosa-0.10 $(PY) -c "import librosa, sys; print('librosa', librosa.__version__); sys.exit(not librosa.__version__.startswith('0.10'))"
	PYTHONPATH=.librosa-0.10 $(PY) -m pytest -q -p no:cacheprovider

demo: install
	$(PY) demo.py

# The shipped network electro128 from scratch (docs/pretrained.md): fetch the freely licensed music
# (sha256-checked), build the archive, train (resumes when rerun), export G_ema to
# audio_ext/generation/models/. About a day of CPU time; PRETRAINED_ARGS adds recipe options.
PRETRAINED_ARGS ?=
pretrained: install
	$(PY) recipes/pretrained.py $(PRETRAINED_ARGS)

# Continue that training on a lent CUDA GPU for PRETRAINED_GPU_SECONDS (480) and export (recipes/pretrained_gpu.sh);
# needs pretrained-work/electro128.zip, built by make pretrained on any machine.
pretrained-gpu:
	bash recipes/pretrained_gpu.sh

demo-quick: install
	$(PY) demo.py --quick

# The studio in the browser (docs/studio.md): make studio NETWORK=snap.pkl [PORT=8000]
NETWORK ?=
PORT ?= 8000
studio: install
	$(PY) -m audio_ext studio $(if $(NETWORK),--network $(NETWORK)) --port $(PORT)

$(CUDA_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(CUDA_VENV)
	$(CUDA_PY) -m pip install -q --upgrade pip
	$(CUDA_PY) -m pip install -q "$(CUDA_TORCH_SPEC)"
	$(CUDA_PY) -m pip install -q -e ".[dev]"
	touch $@

# Compile both CUDA extensions for CUDA_ARCH without a GPU (needs nvcc); catches syntax and binding errors.
cuda-compile-check: $(CUDA_VENV)/.installed
	$(CUDA_PY) -m stylegan2.ops.compile_check --arch "$(CUDA_ARCH)"

# On a CUDA machine: kernels against the reference paths, fp16 networks, GPU codec/phase checks.
gpu-check: $(CUDA_VENV)/.installed
	$(CUDA_PY) -m pytest -q -m gpu -rs

# On a (possibly bare, possibly offline) CUDA machine: build the kernels, run the GPU tests and every GPU
# benchmark in order of value, stop by itself after GPU_SMOKE_LIMIT seconds (default 480), record the
# numbers with the GPU's name in docs/benchmarks.md. Offline: WHEELHOUSE=dir-of-wheels. See docs/cuda_ops.md.
gpu-smoke:
	bash benchmarks/gpu_smoke.sh

bench: install
	$(PY) benchmarks/phase_quality.py
	$(PY) benchmarks/generate_speed.py
	$(PY) benchmarks/train_speed.py

clean:
	rm -rf $(VENV) $(CUDA_VENV) .librosa-0.10 demo-out .pytest_cache
