"""FeatureStats: streaming float64 mean / population covariance, kept rows, merging across ranks."""
import numpy as np
import pytest
import torch

from stylegan2.metrics.feature_stats import FeatureStats


def test_mean_and_population_covariance_match_numpy_over_chunks():
    rng = np.random.default_rng(0)
    x = rng.normal(3.0, 2.0, size=(257, 6)).astype(np.float32)
    stats = FeatureStats(capture_mean_cov=True)
    for chunk in np.array_split(x, 7):
        stats.append(torch.from_numpy(chunk))
    mean, cov = stats.get_mean_cov()
    np.testing.assert_allclose(mean, x.astype(np.float64).mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(cov, np.cov(x.astype(np.float64), rowvar=False, bias=True), rtol=1e-9, atol=1e-12)
    assert stats.num_items == 257


def test_max_items_truncates_and_reports_full():
    stats = FeatureStats(capture_all=True, max_items=10)
    stats.append(np.arange(24, dtype=np.float32).reshape(8, 3))
    assert not stats.is_full()
    stats.append(np.arange(24, dtype=np.float32).reshape(8, 3) + 100)
    assert stats.is_full()
    rows = stats.get_all()
    assert rows.shape == (10, 3)
    np.testing.assert_array_equal(rows[8], [100, 101, 102])


def test_merging_two_ranks_equals_one_pass():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(40, 5)), rng.normal(size=(23, 5))
    s0 = FeatureStats(capture_all=True, capture_mean_cov=True)
    s1 = FeatureStats(capture_all=True, capture_mean_cov=True)
    s0.append(a)
    s1.append(b)
    s0.merge(FeatureStats.from_dict(s1.to_dict()))  # as if sent from another process
    mean, cov = s0.get_mean_cov()
    both = np.concatenate([a, b])
    np.testing.assert_allclose(mean, both.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(cov, np.cov(both, rowvar=False, bias=True), atol=1e-12)
    assert s0.get_all().shape == (63, 5)


def test_misuse_gives_clear_errors():
    with pytest.raises(ValueError, match="capture_all"):
        FeatureStats()
    s = FeatureStats(capture_mean_cov=True)
    with pytest.raises(ValueError, match="no features"):
        s.get_mean_cov()
    s.append(np.zeros((2, 4)))
    with pytest.raises(ValueError, match="expected 4"):
        s.append(np.zeros((2, 5)))
    with pytest.raises(ValueError, match="not kept"):
        s.get_all()
