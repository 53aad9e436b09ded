"""Streaming mean and standard deviation of ln-power values, mergeable across workers and machines.

Each worker feeds its clips to its own :class:`RunningStats`; the partial results are combined with
the pairwise update of Chan, Golub and LeVeque ("Updating formulae and a pairwise algorithm for
computing sample variances", 1979), which keeps count, mean and M2 (the sum of squared deviations)
in float64 and stays accurate where the naive sum-of-squares formula cancels catastrophically.
"""
from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np
import torch


def _chunk_moments(x) -> tuple:
    """(count, mean, M2) of all elements of a numpy array or torch tensor, in float64.

    A tensor stays in torch (on its device) and anything else goes through numpy; both run the
    same steps, so the numbers do not depend on which library holds the values.
    """
    if isinstance(x, torch.Tensor):
        a, isfinite = x.detach().to(torch.float64).reshape(-1), torch.isfinite
    else:
        a, isfinite = np.asarray(x, dtype=np.float64).reshape(-1), np.isfinite
    n = len(a)
    if n == 0:
        return 0, 0.0, 0.0
    if not bool(isfinite(a).all()):
        raise ValueError("RunningStats.update: values contain NaN or infinity")
    m = a.mean()
    return n, float(m), float(((a - m) ** 2).sum())


class RunningStats:
    """Count, mean and M2 of every value seen so far; ``std`` is the population standard deviation.

    ``update(x)`` accepts an array or tensor of any shape (all elements count alike); ``merge(other)``
    folds in another instance's values as if they had been fed here. Both run in float64.
    """

    def __init__(self, count: int = 0, mean: float = 0.0, m2: float = 0.0) -> None:
        if count < 0 or m2 < 0:
            raise ValueError(f"RunningStats: count and m2 must be non-negative (got {count}, {m2})")
        self.count = int(count)
        self._mean = float(mean)
        self.m2 = float(m2)

    def _combine(self, n_b: int, mean_b: float, m2_b: float) -> None:
        if n_b == 0:
            return
        n_a = self.count
        if n_a == 0:
            self.count, self._mean, self.m2 = n_b, mean_b, m2_b
            return
        n = n_a + n_b
        delta = mean_b - self._mean
        self._mean += delta * n_b / n
        self.m2 += m2_b + delta * delta * n_a * n_b / n
        self.count = n

    def update(self, x) -> "RunningStats":
        """Add every element of ``x`` (numpy array, torch tensor or sequence); returns ``self``."""
        self._combine(*_chunk_moments(x))
        return self

    def merge(self, other: "RunningStats") -> "RunningStats":
        """Add the values summarised by ``other`` (Chan et al.'s pairwise formula); returns ``self``."""
        if not isinstance(other, RunningStats):
            raise TypeError(f"RunningStats.merge expects a RunningStats, got {type(other).__name__}")
        self._combine(other.count, other._mean, other.m2)
        return self

    @property
    def mean(self) -> float:
        """Mean of all values seen (NaN before the first value)."""
        return self._mean if self.count else math.nan

    @property
    def var(self) -> float:
        """Population variance (ddof 0) of all values seen (NaN before the first value)."""
        return self.m2 / self.count if self.count else math.nan

    @property
    def std(self) -> float:
        """Population standard deviation (ddof 0), the ``std`` of the audio block."""
        return math.sqrt(self.var)

    def to_dict(self) -> dict:
        """Plain JSON data (count, mean, m2, and std for people reading the file)."""
        return {"count": self.count, "mean": self.mean if self.count else None, "m2": self.m2,
                "std": self.std if self.count else None}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "RunningStats":
        """Rebuild from :meth:`to_dict` output; fails with a clear message on missing keys."""
        missing = [k for k in ("count", "mean", "m2") if k not in d]
        if missing:
            raise ValueError(f"RunningStats.from_dict: missing key(s) {', '.join(missing)}")
        count = int(d["count"])
        return cls(count, 0.0 if count == 0 else float(d["mean"]), float(d["m2"]))

    def __repr__(self) -> str:
        return f"RunningStats(count={self.count}, mean={self.mean:.6g}, std={self.std:.6g})"
