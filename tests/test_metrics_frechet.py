"""Fréchet distance against closed forms and an eigenvalue route independent of sqrtm."""
import warnings

import numpy as np
import pytest

from stylegan2.metrics.frechet import frechet_distance


def test_diagonal_gaussians_match_closed_form():
    # for diagonal covariances FD = |mu1-mu2|^2 + sum_i (sqrt(s1_i) - sqrt(s2_i))^2
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.normal(size=8), rng.normal(size=8)
    s1, s2 = rng.uniform(0.1, 3.0, 8), rng.uniform(0.1, 3.0, 8)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(s1) - np.sqrt(s2)) ** 2)
    assert frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2)) == pytest.approx(expected, rel=1e-10)


def test_full_covariances_match_eigenvalue_trace():
    # Tr sqrt(S1 S2) = sum sqrt(eig(S1 S2)); S1 S2 is similar to a PSD matrix, so the eigenvalues are >= 0
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(6, 6)), rng.normal(size=(6, 6))
    s1, s2 = a @ a.T + 0.1 * np.eye(6), b @ b.T + 0.1 * np.eye(6)
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    eig = np.linalg.eigvals(s1 @ s2).real
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.sum(np.sqrt(np.clip(eig, 0, None)))
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-8)


def test_same_gaussian_is_zero_and_singular_covariance_is_silent():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(5, 12))  # 5 samples in 12-D: singular covariance, as with few fakes
    mu, sigma = x.mean(axis=0), np.cov(x, rowvar=False, bias=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        d = frechet_distance(mu, sigma, mu, sigma)
    assert abs(d) < 1e-6


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="shapes"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))
