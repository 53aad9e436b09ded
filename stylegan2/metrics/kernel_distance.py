"""Kernel Inception Distance: unbiased MMD^2 with a cubic polynomial kernel, averaged over subsets.

k(x, y) = (x.y / d + 1)^3 with d the feature dimension (Bińkowski et al. 2018, arXiv 1801.01401).
Each of ``num_subsets`` rounds draws m = min(N_real, N_gen, max_subset_size) rows from each set
without replacement and computes the unbiased MMD^2 estimate; the result is their mean.
"""
from __future__ import annotations

from typing import Optional

import numpy as np


def _unbiased_mmd2(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 estimate between equal-sized samples x and y [m, d] for the cubic kernel."""
    m, d = x.shape
    k_xx = (x @ x.T / d + 1.0) ** 3
    k_yy = (y @ y.T / d + 1.0) ** 3
    k_xy = (x @ y.T / d + 1.0) ** 3
    within = (k_xx.sum() - np.trace(k_xx) + k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
    across = k_xy.sum() * 2.0 / (m * m)
    return float(within - across)


def kernel_inception_distance(feat_real, feat_gen, num_subsets: int = 100, max_subset_size: int = 1000,
                              seed: Optional[int] = 0) -> float:
    """KID between feature sets [N_r, d] and [N_g, d]; ``seed`` fixes the subset draws (None: random)."""
    feat_real = np.asarray(feat_real, dtype=np.float64)
    feat_gen = np.asarray(feat_gen, dtype=np.float64)
    if feat_real.ndim != 2 or feat_gen.ndim != 2 or feat_real.shape[1] != feat_gen.shape[1]:
        raise ValueError(f"kernel_inception_distance: need [N, d] arrays with equal d, got "
                         f"{feat_real.shape} and {feat_gen.shape}")
    m = min(feat_real.shape[0], feat_gen.shape[0], max_subset_size)
    if m < 2:
        raise ValueError(f"kernel_inception_distance: need at least 2 rows per set, got {m}")
    rng = np.random.default_rng(seed)
    total = 0.0
    for _ in range(num_subsets):
        x = feat_gen[rng.choice(feat_gen.shape[0], m, replace=False)]
        y = feat_real[rng.choice(feat_real.shape[0], m, replace=False)]
        total += _unbiased_mmd2(x, y)
    return total / num_subsets
