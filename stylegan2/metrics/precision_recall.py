"""Improved precision and recall of a generator (Kynkäänniemi et al. 2019, arXiv 1904.06991).

Each feature set defines a manifold: the union of balls around its points whose radius is the
distance to the point's k-th nearest neighbour in the same set (the point itself excluded).
Precision = share of generated points inside the real manifold; recall = share of real points
inside the generated manifold. Distances are computed in torch in row batches, so memory
stays O(batch x N) rather than O(N^2).
"""
from __future__ import annotations

import numpy as np
import torch


def _pairwise_distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Euclidean distances [len(a), len(b)] computed in float32/float64 as given."""
    return torch.cdist(a, b, compute_mode="donot_use_mm_for_euclid_dist")


def _knn_radii(feat: torch.Tensor, k: int, batch_size: int) -> torch.Tensor:
    """Distance from each row of ``feat`` to its k-th nearest other row."""
    radii = []
    for start in range(0, feat.shape[0], batch_size):
        dist = _pairwise_distances(feat[start:start + batch_size], feat)
        # the smallest distance is the point to itself (0); the k-th neighbour is the (k+1)-th smallest
        radii.append(dist.kthvalue(k + 1, dim=1).values)
    return torch.cat(radii)


def _coverage(manifold: torch.Tensor, radii: torch.Tensor, probes: torch.Tensor, batch_size: int) -> float:
    """Share of ``probes`` within distance radii[j] of at least one manifold point j."""
    inside = 0
    for start in range(0, probes.shape[0], batch_size):
        dist = _pairwise_distances(probes[start:start + batch_size], manifold)
        inside += int((dist <= radii.unsqueeze(0)).any(dim=1).sum())
    return inside / probes.shape[0]


def precision_recall(feat_real, feat_gen, k: int = 3, batch_size: int = 1024, device="cpu") -> tuple:
    """(precision, recall) of generated features against real ones, both in [0, 1]."""
    real = torch.as_tensor(np.asarray(feat_real), dtype=torch.float32, device=device)
    gen = torch.as_tensor(np.asarray(feat_gen), dtype=torch.float32, device=device)
    if real.ndim != 2 or gen.ndim != 2 or real.shape[1] != gen.shape[1]:
        raise ValueError(f"precision_recall: need [N, d] arrays with equal d, got "
                         f"{tuple(real.shape)} and {tuple(gen.shape)}")
    if min(real.shape[0], gen.shape[0]) <= k:
        raise ValueError(f"precision_recall: need more than k={k} rows per set, got "
                         f"{real.shape[0]} real and {gen.shape[0]} generated")
    real_radii = _knn_radii(real, k, batch_size)
    gen_radii = _knn_radii(gen, k, batch_size)
    precision = _coverage(real, real_radii, gen, batch_size)
    recall = _coverage(gen, gen_radii, real, batch_size)
    return precision, recall
