"""Running statistics of detector features: mean and covariance (float64), optionally all rows.

Fréchet distances need only the mean and population covariance of the features, which can be
accumulated in one pass with constant memory from sum(x) and sum(x x^T); KID and
precision/recall need the features themselves, so those can be kept too. Statistics from
several processes (GPUs) or chunks are combined with :meth:`FeatureStats.merge`.
"""
from __future__ import annotations

from typing import Optional

import numpy as np


class FeatureStats:
    """Accumulates feature vectors of dimension ``num_features``.

    ``capture_mean_cov``: keep float64 sum and sum of outer products (for ``mean_cov``).
    ``capture_all``: also keep every row (float32) for metrics that need them.
    ``max_items``: stop accepting rows once this many were seen (``is_full``).
    """

    def __init__(self, capture_all: bool = False, capture_mean_cov: bool = False,
                 max_items: Optional[int] = None):
        if not (capture_all or capture_mean_cov):
            raise ValueError("FeatureStats: enable capture_all and/or capture_mean_cov")
        self.capture_all = capture_all
        self.capture_mean_cov = capture_mean_cov
        self.max_items = max_items
        self.num_items = 0
        self.num_features: Optional[int] = None
        self._rows: list = []
        self._sum: Optional[np.ndarray] = None
        self._sum_outer: Optional[np.ndarray] = None

    def _set_num_features(self, num_features: int) -> None:
        if self.num_features is None:
            self.num_features = int(num_features)
            if self.capture_mean_cov:
                self._sum = np.zeros(num_features, dtype=np.float64)
                self._sum_outer = np.zeros((num_features, num_features), dtype=np.float64)
        elif num_features != self.num_features:
            raise ValueError(f"FeatureStats: got {num_features} features per row, expected {self.num_features}")

    def is_full(self) -> bool:
        """True once ``max_items`` rows have been accepted."""
        return self.max_items is not None and self.num_items >= self.max_items

    def append(self, x) -> None:
        """Add rows ``x`` of shape [N, num_features] (numpy or torch); rows beyond ``max_items`` are dropped."""
        if hasattr(x, "detach"):
            x = x.detach().cpu().numpy()
        x = np.asarray(x)
        if x.ndim != 2:
            raise ValueError(f"FeatureStats: expected a 2-D array [N, features], got shape {x.shape}")
        self._set_num_features(x.shape[1])
        if self.max_items is not None:
            x = x[: max(self.max_items - self.num_items, 0)]
        if x.shape[0] == 0:
            return
        self.num_items += x.shape[0]
        if self.capture_all:
            self._rows.append(x.astype(np.float32, copy=True))
        if self.capture_mean_cov:
            x64 = x.astype(np.float64)
            self._sum += x64.sum(axis=0)
            self._sum_outer += x64.T @ x64

    def merge(self, other: "FeatureStats") -> None:
        """Fold the rows of ``other`` (same capture options) into this one, e.g. from another rank."""
        if (other.capture_all, other.capture_mean_cov) != (self.capture_all, self.capture_mean_cov):
            raise ValueError("FeatureStats.merge: capture options differ")
        if other.num_items == 0:
            return
        self._set_num_features(other.num_features)
        self.num_items += other.num_items
        if self.capture_all:
            self._rows.extend(other._rows)
        if self.capture_mean_cov:
            self._sum += other._sum
            self._sum_outer += other._sum_outer

    def get_all(self) -> np.ndarray:
        """All kept rows as float32 [N, num_features] (needs ``capture_all``)."""
        if not self.capture_all:
            raise ValueError("FeatureStats: rows were not kept (capture_all=False)")
        if not self._rows:
            return np.zeros((0, self.num_features or 0), dtype=np.float32)
        return np.concatenate(self._rows, axis=0)

    def get_mean_cov(self):
        """Mean [D] and population covariance [D, D] (divides by N), both float64."""
        if not self.capture_mean_cov:
            raise ValueError("FeatureStats: mean/cov were not accumulated (capture_mean_cov=False)")
        if self.num_items == 0:
            raise ValueError("FeatureStats: no features were added")
        mean = self._sum / self.num_items
        cov = self._sum_outer / self.num_items - np.outer(mean, mean)
        return mean, cov

    def to_dict(self) -> dict:
        """Plain numpy data (for an ``np.savez`` cache file or sending between processes)."""
        out = dict(capture_all=self.capture_all, capture_mean_cov=self.capture_mean_cov,
                   max_items=-1 if self.max_items is None else self.max_items,
                   num_items=self.num_items, num_features=-1 if self.num_features is None else self.num_features)
        if self.capture_all:
            out["all"] = self.get_all()
        if self.capture_mean_cov and self._sum is not None:
            out["sum"] = self._sum
            out["sum_outer"] = self._sum_outer
        return out

    @classmethod
    def from_dict(cls, d: dict) -> "FeatureStats":
        """Inverse of :meth:`to_dict`."""
        max_items = int(d["max_items"])
        s = cls(capture_all=bool(d["capture_all"]), capture_mean_cov=bool(d["capture_mean_cov"]),
                max_items=None if max_items < 0 else max_items)
        if int(d["num_features"]) >= 0:
            s._set_num_features(int(d["num_features"]))
        s.num_items = int(d["num_items"])
        if s.capture_all:
            s._rows = [np.asarray(d["all"], dtype=np.float32)]
        if s.capture_mean_cov and "sum" in d:
            s._sum = np.asarray(d["sum"], dtype=np.float64).copy()
            s._sum_outer = np.asarray(d["sum_outer"], dtype=np.float64).copy()
        return s
