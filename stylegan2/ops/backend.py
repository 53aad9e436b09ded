"""The one place that decides whether an op runs a CUDA kernel or the reference PyTorch path.

Every op calls :func:`kernels_for` with its tensor; a return of ``None`` means "use the reference
path". The mode comes from :func:`set_mode` or the ``ELECTROGAN_OPS`` environment variable:

- ``auto`` (default): use the kernels for CUDA tensors when they build and load; otherwise run the
  reference path and warn once, saying why and how to fix it.
- ``reference``: never use the kernels (for debugging or comparing numbers).
- ``cuda``: a kernel that cannot be built or loaded is an error (for people who must not train
  slowly by accident).
"""
from __future__ import annotations

import os
import warnings
from typing import Optional

import torch

MODES = ("auto", "reference", "cuda")
ENV_VAR = "ELECTROGAN_OPS"

_mode_override: Optional[str] = None
_warned: set = set()


class KernelUnavailable(RuntimeError):
    """Raised when a CUDA kernel cannot be built or loaded; the message says why and how to fix it."""


def set_mode(mode: Optional[str]) -> None:
    """Override the environment variable for this process (``None`` goes back to it)."""
    global _mode_override
    if mode is not None and mode not in MODES:
        raise ValueError(f"ops mode must be one of {', '.join(MODES)}; got {mode!r}")
    _mode_override = mode


def get_mode() -> str:
    """The active mode: the override from :func:`set_mode`, else ``$ELECTROGAN_OPS``, else ``auto``."""
    if _mode_override is not None:
        return _mode_override
    mode = os.environ.get(ENV_VAR, "auto").strip().lower() or "auto"
    if mode not in MODES:
        raise ValueError(f"${ENV_VAR} must be one of {', '.join(MODES)}; got {mode!r}")
    return mode


#: dtypes our kernels are compiled for; anything else (bfloat16, integers) takes the reference path.
KERNEL_DTYPES = (torch.float16, torch.float32, torch.float64)


def _load_kernels(name: str, device: torch.device):
    """Build (first use) and import the CUDA extension ``name`` for ``device``; raise KernelUnavailable on failure."""
    from . import plugin
    return plugin.load(name, device)


def kernels_for(name: str, x: torch.Tensor):
    """The loaded CUDA extension to run op ``name`` on tensor ``x``, or ``None`` for the reference path."""
    if x.device.type != "cuda":
        return None
    mode = get_mode()
    if mode == "reference" or x.dtype not in KERNEL_DTYPES:
        return None
    try:
        return _load_kernels(name, x.device)
    except KernelUnavailable as err:
        if mode == "cuda":
            raise
        if name not in _warned:
            _warned.add(name)
            warnings.warn(f"{err}. Running the slower reference path instead (set {ENV_VAR}=reference to "
                          f"silence this, {ENV_VAR}=cuda to make it an error)",
                          RuntimeWarning, stacklevel=3)
        return None
