"""Fréchet distance between two Gaussians fitted to feature sets (FID when the features are Inception's).

FID = |mu1 - mu2|^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2))  (Heusel et al. 2017, arXiv 1706.08500).
The matrix square root is ``scipy.linalg.sqrtm`` with the real part taken and no regularisation,
as in the StyleGAN2-ADA evaluation, so numbers stay comparable with the literature.
"""
from __future__ import annotations

import warnings

import numpy as np
import scipy.linalg


def _sqrtm(a: np.ndarray) -> np.ndarray:
    """Principal square root of ``a``; silent on singular input (covariances from N < D samples).

    ``disp`` is not passed: SciPy 1.17 deprecates it (removal in 1.18) and every supported
    version returns just the root when it is left out.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=scipy.linalg.LinAlgWarning)
        warnings.simplefilter("ignore", category=RuntimeWarning)
        root = scipy.linalg.sqrtm(a)
    if isinstance(root, tuple):  # very old SciPy with disp=False semantics
        root = root[0]
    return root


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2); in squared feature units."""
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (mu1.size, mu1.size):
        raise ValueError(f"frechet_distance: shapes do not match: mu {mu1.shape} vs {mu2.shape}, "
                         f"sigma {sigma1.shape} vs {sigma2.shape}")
    mean_term = float(np.square(mu1 - mu2).sum())
    covmean = _sqrtm(sigma1 @ sigma2)
    trace_term = float(np.trace(sigma1 + sigma2 - 2.0 * np.real(covmean)))
    return mean_term + trace_term
