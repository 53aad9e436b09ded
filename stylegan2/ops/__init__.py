"""Low-level ops with a pure-PyTorch reference path and optional CUDA kernels (see backend.py)."""
