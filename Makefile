# ElectroGAN: everything a newcomer needs runs through these targets.
# The virtual environment lives in .venv; torch is pinned to the CPU build so
# a fresh machine does not pull a multi-GB CUDA wheel (set TORCH_SPEC to change).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.13.0

.PHONY: install test test-all demo gpu-check bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

install: $(VENV)/.installed

test: install
	$(PY) -m pytest -q

test-all: install
	$(PY) -m pytest -q -m "not gpu"

demo: install
	$(PY) demo.py

gpu-check: install
	$(PY) -m pytest -q -m gpu

clean:
	rm -rf $(VENV) demo-out .pytest_cache
