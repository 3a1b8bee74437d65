"""Improved precision and recall (Kynkäänniemi et al. 2019, "Improved Precision and Recall Metric for
Assessing Generative Models", Sec. 2).

Each set's manifold is estimated as the union of balls around its feature vectors, the radius of each ball being
the distance to the vector's k-th nearest neighbour within its own set (k = 3 in the paper):

    f(phi, Phi) = 1 if ||phi - phi'|| <= ||phi' - NN_k(phi', Phi)|| for some phi' in Phi, else 0
    precision = mean over generated phi_g of f(phi_g, Phi_real)   (samples that look real)
    recall    = mean over real phi_r of f(phi_r, Phi_gen)          (real modes the model covers)

Distances are computed in float64 blocks of ``batch_size`` rows (``||a||^2 + ||b||^2 - 2 a.b``), so memory stays
O(batch_size * N) while the result equals the full pairwise computation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from elbolab.evaluate.features import as_feature_matrix


@dataclass
class PRResult:
    """Improved precision and recall with neighbourhood size ``k``; ``n_real``, ``n_gen``: set sizes."""

    precision: float
    recall: float
    k: int
    n_real: int
    n_gen: int


def pairwise_sq_distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distances: a (N, D), b (M, D) -> (N, M) float64, clamped at 0."""
    a, b = a.double(), b.double()
    d2 = (a * a).sum(1, keepdim=True) + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return d2.clamp_min_(0.0)


def knn_radii(features: torch.Tensor, k: int = 3, batch_size: int = 1000) -> torch.Tensor:
    """Squared distance of each vector to its k-th nearest neighbour in the same set (itself excluded).

    features: (N, D) -> (N,) float64.
    """
    f = as_feature_matrix(features)
    n = f.shape[0]
    if not 1 <= k < n:
        raise ValueError(f"k = {k} with {n} vectors: need 1 <= k < N")
    out = torch.empty(n, dtype=torch.float64)
    for i in range(0, n, batch_size):
        d2 = pairwise_sq_distances(f[i : i + batch_size], f)
        # the k+1-th smallest: the smallest is the vector itself (distance 0)
        out[i : i + batch_size] = d2.kthvalue(k + 1, dim=1).values
    return out


def manifold_coverage(queries: torch.Tensor, support: torch.Tensor, support_radii: torch.Tensor,
                      batch_size: int = 1000) -> torch.Tensor:
    """For each query, whether it lies in some ball (support_j, radius_j). queries: (Q, D) -> (Q,) bool."""
    q, s = as_feature_matrix(queries), as_feature_matrix(support)
    inside = torch.empty(q.shape[0], dtype=torch.bool)
    for i in range(0, q.shape[0], batch_size):
        d2 = pairwise_sq_distances(q[i : i + batch_size], s)
        inside[i : i + batch_size] = (d2 <= support_radii[None, :]).any(dim=1)
    return inside


def precision_recall(real_features: torch.Tensor | np.ndarray, gen_features: torch.Tensor | np.ndarray,
                     k: int = 3, batch_size: int = 1000) -> PRResult:
    """Improved precision and recall of generated features (N_g, D) against real features (N_r, D)."""
    real, gen = as_feature_matrix(real_features), as_feature_matrix(gen_features)
    if real.shape[1] != gen.shape[1]:
        raise ValueError(f"feature dimensions differ: {real.shape[1]} vs {gen.shape[1]}")
    if batch_size <= 0:
        raise ValueError(f"batch_size = {batch_size!r} must be > 0")
    r_real = knn_radii(real, k, batch_size)
    r_gen = knn_radii(gen, k, batch_size)
    precision = manifold_coverage(gen, real, r_real, batch_size).double().mean()
    recall = manifold_coverage(real, gen, r_gen, batch_size).double().mean()
    return PRResult(precision=float(precision), recall=float(recall), k=k, n_real=real.shape[0], n_gen=gen.shape[0])
