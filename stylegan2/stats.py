"""Training statistics reported from anywhere (loss, loop, augmentation) and merged across ranks.

Any module calls :func:`report` with a name and a tensor or number; each value counts as one
sample. Per name we keep running moments in float64, one set per device, so that reporting never
forces a GPU->CPU copy or a host sync: the moments stay on the device they were reported on until a
:class:`Collector` reads them (the training loop does that once per tick, and the ADA controller
once per interval). A :class:`Collector` turns the moments gathered since its previous
:meth:`Collector.update` into ``{num, mean, std}`` with one device->host copy; with several
processes it sums the moments of all ranks with one ``all_reduce``. All ranks must report the same
names (they run the same code in lock step); a name is listed once it has been seen.

Non-finite values do not poison later windows: the moments are ``[count, sum, sum of squares]`` of
the finite values plus the counts of NaN, +inf and -inf. A window that holds a non-finite value
reports the mean IEEE arithmetic would give (NaN, or +-inf) and a NaN std; the next window is
clean again. ``num`` counts every value, finite or not.

The tick line of the training loop is written to ``stats.jsonl`` as
``{"Loss/G/loss": {"num": .., "mean": .., "std": ..}, ..., "timestamp": ..}`` (StyleGAN2-ADA's field
names; docs/references.md).
"""
from __future__ import annotations

import json
import re
import threading
import time
from typing import Dict, Iterable, List, Optional

import numpy as np
import torch

_lock = threading.Lock()
# name -> device -> [count, sum, sumsq, n_nan, n_posinf, n_neginf] (float64; sums over finite values)
_moments: Dict[str, Dict[torch.device, torch.Tensor]] = {}
_rank = 0
_sync_device: Optional[torch.device] = None
NUM_MOMENTS = 6


def init_multiprocessing(rank: int, sync_device: Optional[torch.device]) -> None:
    """Say which rank this process is and on which device ranks all-reduce (None: single process).

    NCCL needs a CUDA ``sync_device``; gloo works with the CPU.
    """
    global _rank, _sync_device
    _rank = int(rank)
    _sync_device = sync_device


def _as_moments(value) -> torch.Tensor:
    """The 6 moments (float64, on the value's device) of every element of ``value``; no host sync.

    The count is written with a fill kernel (``new_full``), never copied from the host.
    """
    if not isinstance(value, torch.Tensor):
        value = torch.as_tensor(np.asarray(value, dtype=np.float64))
    v = value.detach().flatten().to(torch.float64)
    finite = torch.isfinite(v)
    clean = torch.where(finite, v, torch.zeros_like(v))
    return torch.stack([v.new_full([], float(v.numel())), clean.sum(), clean.square().sum(),
                        v.isnan().sum().to(torch.float64), (v == float("inf")).sum().to(torch.float64),
                        (v == float("-inf")).sum().to(torch.float64)])


def report(name: str, value):
    """Add every element of ``value`` (tensor, array or number) to the statistic ``name``; returns value.

    Returning the input lets a caller wrap an expression: ``loss = report('Loss/G/loss', loss)``.
    Never waits for the device: the moments are added up where the value lives.
    """
    m = _as_moments(value)
    with _lock:
        per_dev = _moments.setdefault(name, {})
        if m.device in per_dev:
            per_dev[m.device].add_(m)
        else:
            per_dev[m.device] = m.clone()
    return value


def report0(name: str, value):
    """Like :func:`report`, but only rank 0 contributes (for values every rank knows, e.g. timings).

    Other ranks still register the name with zero count so that all ranks reduce the same list.
    """
    if _rank == 0:
        return report(name, value)
    with _lock:
        _moments.setdefault(name, {})
    return value


def _home_device() -> torch.device:
    """Where moments are summed before reading: the all-reduce device, else a CUDA device in use, else the CPU."""
    if _sync_device is not None:
        return _sync_device
    for per_dev in _moments.values():
        for dev in per_dev:
            if dev.type != "cpu":
                return dev
    return torch.device("cpu")


def device_moments(names: List[str], device: Optional[torch.device] = None) -> torch.Tensor:
    """Cumulative moments ``[len(names), 6]`` of ``names`` summed over devices, left on ``device``.

    No host sync and no all-reduce: for checks that stay on the device (the training loop's
    non-finite-loss counter, the ADA sign sums). Unknown names give zero rows. CPU moments are
    moved with ``non_blocking=True`` (a host->device copy that does not wait for the device).
    """
    device = torch.device(device) if device is not None else _home_device()
    rows = []
    with _lock:
        for n in names:
            total = torch.zeros(NUM_MOMENTS, dtype=torch.float64, device=device)
            for m in _moments.get(n, {}).values():
                total = total + (m if m.device == device else m.to(device, non_blocking=True))
            rows.append(total)
    if not rows:
        return torch.zeros([0, NUM_MOMENTS], dtype=torch.float64, device=device)
    return torch.stack(rows)


def reset() -> None:
    """Forget every statistic (used between independent runs in one process, e.g. tests)."""
    with _lock:
        _moments.clear()


class Collector:
    """Gathers the statistics reported since its previous :meth:`update`, optionally filtered by regex.

    Several collectors can coexist (the tick logger and the ADA controller each keep their own
    window): each remembers the cumulative moments it saw last and reports the difference.
    """

    def __init__(self, regex: str = ".*"):
        self._regex = re.compile(regex)
        self._previous: Dict[str, torch.Tensor] = {}
        self._current: Dict[str, torch.Tensor] = {}

    def names(self) -> list:
        """Names matching the regex that have been reported so far, sorted (identical on all ranks)."""
        with _lock:
            return sorted(n for n in _moments if self._regex.fullmatch(n))

    def update(self) -> None:
        """Take the moments since the last update, summed over devices and (one all_reduce) ranks.

        One device->host copy for all names together (a single sync), however many were reported.
        """
        names = self.names()
        if not names:
            self._current = {}
            return
        stacked = device_moments(names)
        if _sync_device is not None and torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(stacked)
        stacked = stacked.cpu()
        self._current = {}
        for n, row in zip(names, stacked):
            prev = self._previous.get(n, torch.zeros(NUM_MOMENTS, dtype=torch.float64))
            self._previous[n] = row
            self._current[n] = row - prev

    def num(self, name: str) -> int:
        """How many values of ``name`` were reported in the last window (0 if none)."""
        m = self._current.get(name)
        return int(m[0]) if m is not None else 0

    def mean(self, name: str) -> float:
        """Mean of ``name`` over the last window (NaN if nothing was reported; NaN/inf as IEEE would give)."""
        m = self._current.get(name)
        if m is None or m[0] == 0:
            return float("nan")
        nan, pinf, ninf = float(m[3]), float(m[4]), float(m[5])
        if nan or (pinf and ninf):
            return float("nan")
        if pinf or ninf:
            return float("inf") if pinf else float("-inf")
        return float(m[1] / m[0])

    def std(self, name: str) -> float:
        """Population standard deviation of ``name`` over the last window (NaN if empty or any value non-finite)."""
        m = self._current.get(name)
        if m is None or m[0] == 0 or float(m[3] + m[4] + m[5]):
            return float("nan")
        mean = m[1] / m[0]
        return float(torch.sqrt(torch.clamp(m[2] / m[0] - mean * mean, min=0)))

    def nonfinite(self, name: str) -> int:
        """How many values of ``name`` in the last window were NaN or infinite."""
        m = self._current.get(name)
        return int(m[3] + m[4] + m[5]) if m is not None else 0

    def as_dict(self) -> Dict[str, Dict[str, float]]:
        """``{name: {num, mean, std}}`` for every name with at least one value in the last window."""
        return {n: {"num": self.num(n), "mean": self.mean(n), "std": self.std(n)}
                for n in self._current if self.num(n) > 0}


def jsonl_line(stats: Dict[str, Dict[str, float]], timestamp: Optional[float] = None) -> str:
    """One ``stats.jsonl`` line (with newline): the stats dict plus a Unix ``timestamp`` in seconds."""
    record = dict(stats)
    record["timestamp"] = time.time() if timestamp is None else timestamp
    return json.dumps(record) + "\n"


def scalar_items(stats: Dict[str, Dict[str, float]]) -> Iterable:
    """``(name, mean)`` pairs for logging scalars (TensorBoard) from an :meth:`Collector.as_dict`."""
    return [(n, v["mean"]) for n, v in sorted(stats.items())]
