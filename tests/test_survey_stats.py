"""audio_ext.survey.significance against scipy (t-interval, Mann-Whitney U, Wilcoxon) and by hand (Holm, bootstrap)."""
import math

import numpy as np
import pytest
import scipy.stats as st

from audio_ext.survey import significance


@pytest.mark.parametrize("n", [2, 5, 40])
def test_t_interval_matches_scipy(n):
    x = np.random.default_rng(n).integers(1, 6, size=n).astype(float)
    x[0] = 1.0
    x[-1] = 5.0  # never constant
    mean, lo, hi = significance.t_interval(x, 0.95)
    ref = st.ttest_1samp(x, 0.0).confidence_interval(0.95)
    assert mean == pytest.approx(x.mean())
    assert (lo, hi) == pytest.approx((ref.low, ref.high), rel=1e-12)
    mean90, lo90, hi90 = significance.t_interval(x, 0.90)
    assert lo < lo90 < mean90 < hi90 < hi


def test_t_interval_degenerate():
    assert math.isnan(significance.t_interval([])[0])
    m, lo, hi = significance.t_interval([4.0])
    assert m == 4.0 and math.isnan(lo) and math.isnan(hi)


def test_bootstrap_interval_covers_the_mean_and_repeats():
    x = np.random.default_rng(0).normal(3.0, 1.0, size=200)
    lo, hi = significance.bootstrap_interval(x, 0.95, n_boot=4000, seed=1)
    assert lo < x.mean() < hi
    # close to the normal-theory interval for a large sample
    _, tlo, thi = significance.t_interval(x)
    assert lo == pytest.approx(tlo, abs=0.05) and hi == pytest.approx(thi, abs=0.05)
    assert significance.bootstrap_interval(x, 0.95, n_boot=4000, seed=1) == (lo, hi)
    assert significance.bootstrap_interval(x, 0.95, n_boot=4000, seed=2) != (lo, hi)


def test_rank_average_matches_scipy():
    x = np.array([3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5], float)
    np.testing.assert_allclose(significance.rank_average(x), st.rankdata(x))


@pytest.mark.parametrize("seed", range(4))
def test_mann_whitney_matches_scipy(seed):
    rng = np.random.default_rng(seed)
    x = rng.integers(1, 6, size=int(rng.integers(3, 40)))
    y = np.clip(rng.integers(1, 6, size=int(rng.integers(3, 40))) + seed % 2, 1, 5)
    u, p = significance.mann_whitney(x, y)
    ref = st.mannwhitneyu(x, y, alternative="two-sided", method="asymptotic", use_continuity=True)
    assert u == pytest.approx(ref.statistic)
    assert p == pytest.approx(ref.pvalue, rel=1e-9)


def test_mann_whitney_separates_clear_difference():
    u, p = significance.mann_whitney([1, 1, 2, 2, 1, 2, 1, 1] * 3, [4, 5, 5, 4, 5, 4, 5, 5] * 3)
    assert u == 0 and p < 1e-6
    assert significance.mann_whitney([3, 3, 3], [3, 3])[1] == 1.0


@pytest.mark.parametrize("seed", range(4))
def test_wilcoxon_matches_scipy(seed):
    rng = np.random.default_rng(10 + seed)
    d = rng.integers(-3, 4, size=int(rng.integers(8, 60))).astype(float) + (0.5 if seed == 3 else 0.0)
    w, p = significance.wilcoxon_signed_rank(d)
    ref = st.wilcoxon(d, zero_method="wilcox", correction=False, method="approx")
    assert w == pytest.approx(ref.statistic)
    assert p == pytest.approx(ref.pvalue, rel=1e-9)


def test_wilcoxon_all_zero_is_nan():
    assert all(math.isnan(v) for v in significance.wilcoxon_signed_rank([0, 0, 0]))


def test_holm_by_hand():
    p = [0.01, 0.04, 0.03, 0.5, math.nan]
    adj = significance.holm(p)
    # sorted: 0.01*4, 0.03*3, 0.04*2 -> raised to 0.09 (monotone), 0.5*1
    assert adj[:4] == pytest.approx([0.04, 0.09, 0.09, 0.5])
    assert math.isnan(adj[4])
    assert significance.holm([0.6, 0.7]) == pytest.approx([1.0, 1.0])
