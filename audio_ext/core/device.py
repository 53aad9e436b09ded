"""The torch device a command runs on, from its ``--device`` value: the one resolution rule."""
from __future__ import annotations

from typing import Optional, Union

import torch


class DeviceError(ValueError):
    """A ``--device`` value that cannot be used on this machine; the message is one line naming it."""


def resolve_device(name: Optional[Union[str, torch.device]] = None) -> torch.device:
    """``None`` or ``'auto'``: CUDA when available, else the CPU. Any other torch device string
    (``cpu``, ``cuda``, ``cuda:1``, ``mps``) is checked by putting a tensor there, so a missing or
    misspelt device is a :class:`DeviceError` before any work starts."""
    if name is None or str(name) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if str(name).startswith("cuda") and not torch.cuda.is_available():
        raise DeviceError(f"--device {name}: no CUDA device is available (use --device cpu)")
    try:
        device = torch.device(name)
        torch.empty(1, device=device)
    except Exception as e:  # RuntimeError for a bad string, AssertionError/RuntimeError for a missing backend
        why = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DeviceError(f"--device {name!r}: not usable here ({why[:160]})") from None
    return device
