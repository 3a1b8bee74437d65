"""Kernel Inception Distance (Bińkowski et al. 2018, "Demystifying MMD GANs", Sec. 5 / Appendix).

KID is the squared maximum mean discrepancy between the feature distributions with the cubic polynomial
kernel ``k(x, y) = (x . y / D + 1)^3``, estimated without bias (the U-statistic: diagonal terms of the
within-set kernel matrices left out), so that its expectation is 0 when the two distributions are equal,
whatever the sample size. That makes it better than FID for small n. For each of ``num_subsets`` random
subsets of ``subset_size`` vectors from each set (drawn without replacement within a subset),

    MMD^2_u = sum_{i != j} k(x_i, x_j) / (m (m-1)) + sum_{i != j} k(y_i, y_j) / (m (m-1)) - 2 sum_{i,j} k(x_i, y_j) / m^2.

The reported ``mean`` is the mean over subsets and ``std`` the spread of one subset's estimate. Subsets of a
finite pool of N vectors overlap, so ``std / sqrt(num_subsets)`` would understate the uncertainty of the
mean; the standard error reported is ``std * sqrt(1 / num_subsets + m / N)``: the Monte Carlo error of the
subset average plus the error of the complete U-statistic on the pool, whose variance is at most about
``m / N`` times that of one subset (it is an average of about N / m independent subset estimates).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from elbolab.evaluate.features import as_feature_matrix


@dataclass
class KIDResult:
    """Unbiased MMD^2 (polynomial kernel): ``mean`` over subsets, ``std`` of one subset estimate, ``stderr``."""

    mean: float
    std: float
    stderr: float
    subset_size: int
    num_subsets: int


def polynomial_kernel(x: torch.Tensor, y: torch.Tensor, degree: int = 3, coef0: float = 1.0) -> torch.Tensor:
    """k(x, y) = (x . y / D + coef0)^degree. x: (N, D), y: (M, D) -> (N, M), float64."""
    d = x.shape[1]
    return (x.double() @ y.double().T / d + coef0) ** degree


def mmd2_unbiased(x: torch.Tensor, y: torch.Tensor, degree: int = 3, coef0: float = 1.0) -> float:
    """Unbiased estimate of MMD^2 between the distributions of x: (m, D) and y: (n, D), m, n >= 2."""
    m, n = x.shape[0], y.shape[0]
    if m < 2 or n < 2:
        raise ValueError(f"need at least 2 vectors per set for an unbiased MMD^2, got {m} and {n}")
    k_xx = polynomial_kernel(x, x, degree, coef0)
    k_yy = polynomial_kernel(y, y, degree, coef0)
    k_xy = polynomial_kernel(x, y, degree, coef0)
    term_xx = (k_xx.sum() - k_xx.diagonal().sum()) / (m * (m - 1))
    term_yy = (k_yy.sum() - k_yy.diagonal().sum()) / (n * (n - 1))
    return float(term_xx + term_yy - 2.0 * k_xy.mean())


def kid_from_features(features_a: torch.Tensor | np.ndarray, features_b: torch.Tensor | np.ndarray,
                      subset_size: int = 1000, num_subsets: int = 100,
                      generator: torch.Generator | None = None) -> KIDResult:
    """KID of two feature sets (N_a, D) and (N_b, D); ``subset_size`` is capped at min(N_a, N_b)."""
    a, b = as_feature_matrix(features_a), as_feature_matrix(features_b)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"feature dimensions differ: {a.shape[1]} vs {b.shape[1]}")
    if subset_size < 2 or num_subsets < 2:
        raise ValueError(f"subset_size = {subset_size}, num_subsets = {num_subsets}: both must be >= 2 "
                         "(a standard error needs at least two subsets)")
    n_pool = min(a.shape[0], b.shape[0])
    if n_pool < 2:
        raise ValueError(f"need at least 2 feature vectors in each set, got {a.shape[0]} and {b.shape[0]}")
    m = min(subset_size, n_pool)
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    values = np.empty(num_subsets)
    for s in range(num_subsets):
        ia = torch.randperm(a.shape[0], generator=gen)[:m]
        ib = torch.randperm(b.shape[0], generator=gen)[:m]
        values[s] = mmd2_unbiased(a[ia], b[ib])
    std = float(values.std(ddof=1))
    stderr = std * math.sqrt(1.0 / num_subsets + m / n_pool)
    return KIDResult(mean=float(values.mean()), std=std, stderr=stderr, subset_size=m, num_subsets=num_subsets)
