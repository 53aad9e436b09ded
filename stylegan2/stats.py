"""Training statistics reported from anywhere (loss, loop, augmentation) and merged across ranks.

Any module calls :func:`report` with a name and a tensor or number; each value counts as one
sample. Per name we keep running moments (count, sum, sum of squares) in float64, one set per
device so that reporting never forces a GPU->CPU copy. A :class:`Collector` turns the moments
gathered since its previous :meth:`Collector.update` into ``{num, mean, std}``; with several
processes it sums the moments of all ranks with one ``all_reduce``. All ranks must report the same
names (they run the same code in lock step); a name is listed once it has been seen.

The tick line of the training loop is written to ``stats.jsonl`` as
``{"Loss/G/loss": {"num": .., "mean": .., "std": ..}, ..., "timestamp": ..}`` (upstream-notes §6).
"""
from __future__ import annotations

import json
import re
import threading
import time
from typing import Dict, Iterable, Optional

import numpy as np
import torch

_lock = threading.Lock()
_moments: Dict[str, Dict[torch.device, torch.Tensor]] = {}   # name -> device -> [count, sum, sumsq]
_rank = 0
_sync_device: Optional[torch.device] = None


def init_multiprocessing(rank: int, sync_device: Optional[torch.device]) -> None:
    """Say which rank this process is and on which device ranks all-reduce (None: single process).

    NCCL needs a CUDA ``sync_device``; gloo works with the CPU.
    """
    global _rank, _sync_device
    _rank = int(rank)
    _sync_device = sync_device


def _as_moments(value) -> torch.Tensor:
    """Moments ``[count, sum, sum of squares]`` (float64) of every finite-or-not element of value."""
    if not isinstance(value, torch.Tensor):
        value = torch.as_tensor(np.asarray(value, dtype=np.float64))
    v = value.detach().flatten().to(torch.float64)
    return torch.stack([torch.tensor(float(v.numel()), dtype=torch.float64, device=v.device),
                        v.sum(), v.square().sum()])


def report(name: str, value):
    """Add every element of ``value`` (tensor, array or number) to the statistic ``name``; returns value.

    Returning the input lets a caller wrap an expression: ``loss = report('Loss/G/loss', loss)``.
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
        """Take the moments since the last update, summed over devices and (one all_reduce) ranks."""
        names = self.names()
        if not names:
            self._current = {}
            return
        dev = _sync_device if _sync_device is not None else torch.device("cpu")
        rows = []
        with _lock:
            for n in names:
                total = torch.zeros(3, dtype=torch.float64, device=dev)
                for m in _moments[n].values():
                    total += m.to(dev)
                rows.append(total)
        stacked = torch.stack(rows)
        if _sync_device is not None and torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(stacked)
        stacked = stacked.cpu()
        self._current = {}
        for n, row in zip(names, stacked):
            prev = self._previous.get(n, torch.zeros(3, dtype=torch.float64))
            self._previous[n] = row
            self._current[n] = row - prev

    def num(self, name: str) -> int:
        """How many values of ``name`` were reported in the last window (0 if none)."""
        m = self._current.get(name)
        return int(m[0]) if m is not None else 0

    def mean(self, name: str) -> float:
        """Mean of ``name`` over the last window (NaN if nothing was reported)."""
        m = self._current.get(name)
        if m is None or m[0] == 0:
            return float("nan")
        return float(m[1] / m[0])

    def std(self, name: str) -> float:
        """Population standard deviation of ``name`` over the last window (NaN if nothing was reported)."""
        m = self._current.get(name)
        if m is None or m[0] == 0:
            return float("nan")
        mean = m[1] / m[0]
        return float(torch.sqrt(torch.clamp(m[2] / m[0] - mean * mean, min=0)))

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
