"""Statistics of a listening test: mean opinion scores, their intervals and pairwise tests.

Written out here (rather than calling scipy's tests) so that every number in a report can be
traced to a formula in docs/evaluation.md; tests check each against scipy.

* :func:`t_interval`: mean +- t_{n-1, 1-alpha/2} * s / sqrt(n) (s: sample standard deviation).
* :func:`bootstrap_interval`: percentile bootstrap of the mean (seeded, so reports repeat).
* :func:`mann_whitney`: two-sided Mann-Whitney U, normal approximation with the tie correction
  and a 0.5 continuity correction (scipy's ``mannwhitneyu(..., method='asymptotic')``).
* :func:`wilcoxon_signed_rank`: two-sided Wilcoxon signed-rank on paired differences, zeros
  dropped (Wilcoxon's rule), normal approximation with the tie correction, no continuity
  correction (scipy's ``wilcoxon(..., method='approx')``). Ratings on a 1-5 scale tie a lot, so the
  exact null distributions (which assume no ties) do not apply.
* :func:`holm`: Holm's step-down adjustment of p-values for many comparisons.
"""
from __future__ import annotations

import math
from typing import List, Sequence, Tuple

import numpy as np
from scipy.stats import t as student_t


def _normal_sf(z: float) -> float:
    """Upper tail of the standard normal distribution."""
    return 0.5 * math.erfc(z / math.sqrt(2.0))


def t_interval(x: Sequence[float], confidence: float = 0.95) -> Tuple[float, float, float]:
    """(mean, low, high): Student-t interval of the mean of ``x``; NaN bounds for fewer than 2 values."""
    a = np.asarray(x, dtype=np.float64)
    if a.size == 0:
        return math.nan, math.nan, math.nan
    mean = float(a.mean())
    if a.size < 2:
        return mean, math.nan, math.nan
    half = float(student_t.ppf(0.5 + confidence / 2.0, a.size - 1)) * float(a.std(ddof=1)) / math.sqrt(a.size)
    return mean, mean - half, mean + half


def bootstrap_interval(x: Sequence[float], confidence: float = 0.95, n_boot: int = 10000,
                       seed: int = 0) -> Tuple[float, float]:
    """(low, high): percentile bootstrap interval of the mean, resampling ``x`` with replacement."""
    a = np.asarray(x, dtype=np.float64)
    if a.size < 2:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    means = np.empty(n_boot)
    for start in range(0, n_boot, 1000):  # chunks keep memory small for long answer lists
        k = min(1000, n_boot - start)
        means[start:start + k] = a[rng.integers(0, a.size, size=(k, a.size))].mean(axis=1)
    lo, hi = np.quantile(means, [0.5 - confidence / 2.0, 0.5 + confidence / 2.0])
    return float(lo), float(hi)


def rank_average(values: np.ndarray) -> np.ndarray:
    """Ranks 1..n of ``values``, ties given the mean of the ranks they span."""
    v = np.asarray(values, dtype=np.float64)
    order = np.argsort(v, kind="mergesort")
    ranks = np.empty(v.size)
    sv = v[order]
    i = 0
    while i < v.size:
        j = i
        while j + 1 < v.size and sv[j + 1] == sv[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return ranks


def _tie_term(values: np.ndarray) -> float:
    """sum(t^3 - t) over the groups of tied values."""
    _, counts = np.unique(values, return_counts=True)
    return float(np.sum(counts.astype(np.float64) ** 3 - counts))


def mann_whitney(x: Sequence[float], y: Sequence[float]) -> Tuple[float, float]:
    """(U of ``x``, two-sided p) of the Mann-Whitney U test; p is NaN when either side is empty."""
    a, b = np.asarray(x, np.float64), np.asarray(y, np.float64)
    n1, n2 = a.size, b.size
    if n1 == 0 or n2 == 0:
        return math.nan, math.nan
    both = np.concatenate([a, b])
    ranks = rank_average(both)
    u1 = float(ranks[:n1].sum() - n1 * (n1 + 1) / 2.0)
    mu = n1 * n2 / 2.0
    n = n1 + n2
    var = n1 * n2 / 12.0 * ((n + 1) - _tie_term(both) / (n * (n - 1)))
    if var <= 0:
        return u1, 1.0  # every value tied: no evidence of a difference
    z = (abs(u1 - mu) - 0.5) / math.sqrt(var)
    return u1, min(1.0, 2.0 * _normal_sf(z))


def wilcoxon_signed_rank(d: Sequence[float]) -> Tuple[float, float]:
    """(min(R+, R-), two-sided p) of the signed-rank test on differences ``d``; zeros are dropped.

    p is NaN when no non-zero difference is left.
    """
    a = np.asarray(d, np.float64)
    a = a[a != 0]
    n = a.size
    if n == 0:
        return math.nan, math.nan
    ranks = rank_average(np.abs(a))
    r_plus = float(ranks[a > 0].sum())
    r_minus = float(ranks[a < 0].sum())
    mu = n * (n + 1) / 4.0
    var = n * (n + 1) * (2 * n + 1) / 24.0 - _tie_term(np.abs(a)) / 48.0
    stat = min(r_plus, r_minus)
    if var <= 0:
        return stat, 1.0
    z = (stat - mu) / math.sqrt(var)
    return stat, min(1.0, 2.0 * _normal_sf(abs(z)))


def holm(pvalues: Sequence[float]) -> List[float]:
    """Holm-adjusted p-values, in the input order (NaN stays NaN and is not counted)."""
    p = np.asarray(pvalues, dtype=np.float64)
    out = np.full(p.shape, math.nan)
    idx = [i for i in np.argsort(p, kind="mergesort") if not math.isnan(p[i])]
    m = len(idx)
    running = 0.0
    for k, i in enumerate(idx):
        running = max(running, min(1.0, (m - k) * p[i]))
        out[i] = running
    return [float(v) for v in out]
