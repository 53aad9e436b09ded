"""Precision/recall (k-NN manifolds) against a brute-force numpy loop."""
import numpy as np
import pytest

from stylegan2.metrics.precision_recall import precision_recall


def brute_force(real, gen, k):
    def radii(s):
        return np.array([np.sort([np.linalg.norm(p - q) for q in s])[k] for p in s])  # index 0 is the point itself
    def covered(manifold, r, probes):
        return np.mean([any(np.linalg.norm(p - q) <= r[j] for j, q in enumerate(manifold)) for p in probes])
    return covered(real, radii(real), gen), covered(gen, radii(gen), real)


@pytest.mark.parametrize("k, shift", [(1, 1.0), (3, 1.5)])
def test_matches_brute_force_on_overlapping_clouds(k, shift):
    rng = np.random.default_rng(k)
    real = rng.normal(size=(40, 5))
    gen = rng.normal(shift, 0.6, size=(35, 5))  # narrower and shifted: precision and recall differ
    p, r = precision_recall(real, gen, k=k, batch_size=7)
    p_ref, r_ref = brute_force(real, gen, k)
    assert p == pytest.approx(p_ref, abs=1e-12)
    assert r == pytest.approx(r_ref, abs=1e-12)
    assert 0 < p_ref < 1 and 0 < r_ref < 1


def test_mode_collapse_gives_high_precision_low_recall():
    rng = np.random.default_rng(5)
    real = rng.normal(size=(200, 4))
    collapsed = rng.normal(scale=0.05, size=(200, 4))  # every fake near the real mode
    p, r = precision_recall(real, collapsed, k=3)
    assert p > 0.9 and r < 0.2


def test_needs_more_rows_than_k():
    with pytest.raises(ValueError, match="more than k=3"):
        precision_recall(np.zeros((3, 2)), np.zeros((10, 2)), k=3)
