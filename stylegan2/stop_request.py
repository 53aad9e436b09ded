"""Graceful stops: the first SIGINT/SIGTERM becomes a flag the training ranks agree on, a second Ctrl-C aborts.

The training loop reads the flag every iteration and, with several ranks, all-reduces it at its check
points, so every rank writes the same final snapshot and stops at the same image count.
"""
from __future__ import annotations

import os
import signal
import threading
from typing import Any, Dict, Optional

import torch

from . import distributed


class StopRequest:
    """SIGINT/SIGTERM handlers that turn the first signal into a flag and a second SIGINT into an abort.

    ``install()`` (main thread only; elsewhere it does nothing) replaces the handlers until
    ``uninstall()``. The first SIGINT or SIGTERM sets :attr:`signum`; the loop reads it every
    iteration and, with several ranks, all-reduces it at its check points (every ADA interval) so
    all ranks stop together (:meth:`agreed` does the same as a standalone call). A second SIGINT raises ``KeyboardInterrupt`` at once; further
    SIGTERMs are ignored (a scheduler that wants a hard stop sends SIGKILL; torchrun's agent sends
    SIGTERM after the terminal's SIGINT, which must not count as a second Ctrl-C).
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, verbose: bool = True):
        self.signum: Optional[int] = None
        self.interrupts = 0
        self.verbose = verbose
        self._saved: Dict[int, Any] = {}

    def _handle(self, signum, frame):
        if signum == signal.SIGINT:
            self.interrupts += 1
            if self.interrupts >= 2:
                self.uninstall()
                raise KeyboardInterrupt("second interrupt: aborting without a snapshot")
        if self.signum is None:
            self.signum = signum
            if self.verbose:    # os.write: the interrupted code may be inside a write to the same stream
                os.write(2, f"\nReceived {signal.Signals(signum).name}: stopping after this iteration and "
                            f"writing a snapshot (Ctrl-C again to abort without one)\n".encode())

    def install(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._saved[sig] = signal.signal(sig, self._handle)
        return self

    def uninstall(self) -> None:
        for sig, handler in self._saved.items():
            signal.signal(sig, handler)
        self._saved.clear()

    def agreed(self, device: torch.device, world: int) -> bool:
        """True on every rank when any rank received a stop signal (one all-reduce when world > 1)."""
        if world == 1:
            return self.signum is not None
        flag = torch.tensor([1.0 if self.signum is not None else 0.0], device=device)
        distributed.all_reduce_sum_(flag)
        return bool(flag.item() > 0)

