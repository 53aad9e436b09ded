"""Kernel Inception Distance against a naive double loop over the cubic kernel."""
import numpy as np
import pytest

from stylegan2.metrics.kernel_distance import kernel_inception_distance


def naive_mmd2(x, y):
    m, d = x.shape
    k = lambda a, b: (float(np.dot(a, b)) / d + 1.0) ** 3
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / (m * m)
    return xx + yy - 2 * xy


def test_single_full_subset_equals_naive_unbiased_mmd():
    rng = np.random.default_rng(0)
    real, gen = rng.normal(size=(12, 4)), rng.normal(0.5, 1.0, size=(12, 4))
    # with m = N each subset is a permutation of the whole set, and MMD^2 is permutation-invariant
    kid = kernel_inception_distance(real, gen, num_subsets=3, max_subset_size=1000)
    assert kid == pytest.approx(naive_mmd2(gen, real), rel=1e-10)


def test_subsets_average_naive_estimates_of_the_same_draws():
    rng = np.random.default_rng(1)
    real, gen = rng.normal(size=(30, 3)), rng.normal(size=(25, 3)) * 1.5
    kid = kernel_inception_distance(real, gen, num_subsets=4, max_subset_size=8, seed=7)
    draw = np.random.default_rng(7)
    values = []
    for _ in range(4):
        x = gen[draw.choice(25, 8, replace=False)]
        y = real[draw.choice(30, 8, replace=False)]
        values.append(naive_mmd2(x, y))
    assert kid == pytest.approx(np.mean(values), rel=1e-10)


def test_kid_is_near_zero_for_same_distribution_and_larger_for_shifted():
    rng = np.random.default_rng(2)
    real = rng.normal(size=(200, 16))
    same = rng.normal(size=(200, 16))
    shifted = rng.normal(size=(200, 16)) + 1.0
    kid_same = kernel_inception_distance(real, same, num_subsets=10, max_subset_size=100)
    kid_shift = kernel_inception_distance(real, shifted, num_subsets=10, max_subset_size=100)
    assert abs(kid_same) < 0.05 < kid_shift


def test_too_few_rows_is_an_error():
    with pytest.raises(ValueError, match="at least 2"):
        kernel_inception_distance(np.zeros((1, 3)), np.zeros((5, 3)))
