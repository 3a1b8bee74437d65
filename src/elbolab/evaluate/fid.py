"""Fréchet distance between Gaussian fits of feature sets (FID, Heusel et al. 2017).

    FID = ||mu_1 - mu_2||^2 + Tr(S_1) + Tr(S_2) - 2 Tr((S_1 S_2)^{1/2})

Statistics are float64 and can be accumulated batch by batch (Chan et al.'s pairwise update of mean and
scatter matrix, so the result equals the one-shot statistics up to rounding).

The matrix square root. pytorch-fid calls ``scipy.linalg.sqrtm(S_1 @ S_2)``: the product of two symmetric
matrices is not symmetric, the Schur-based root returns complex output with tiny imaginary parts from
rounding, and a singular product needs an ``eps * I`` offset. Here the trace is taken through a symmetric
matrix instead: S_1 S_2 is similar to ``M = S_1^{1/2} S_2 S_1^{1/2}`` (conjugate by S_1^{1/2}), so both have the
same eigenvalues, and M is symmetric positive semi-definite. Therefore

    Tr((S_1 S_2)^{1/2}) = sum_i sqrt(lambda_i(M)).

Both square roots come from ``eigh`` (real eigenvalues, orthonormal eigenvectors). Round-off can make an
eigenvalue of a (near-)singular PSD matrix slightly negative (about -1e-16 * ||S||); such eigenvalues are
clipped to 0, which is exact for the PSD matrices here. Singular or near-singular covariances (fewer samples
than feature dimensions, dead ReLU units) therefore need no offset and produce no imaginary parts.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from elbolab.evaluate.features import as_feature_matrix


@dataclass
class FeatureStats:
    """Gaussian fit of N feature vectors: ``mu`` (D,) and unbiased covariance ``sigma`` (D, D), float64."""

    mu: np.ndarray
    sigma: np.ndarray
    n: int

    def __post_init__(self) -> None:
        self.mu = np.asarray(self.mu, dtype=np.float64)
        self.sigma = np.asarray(self.sigma, dtype=np.float64)
        d = self.mu.shape[0] if self.mu.ndim == 1 else -1
        if self.mu.ndim != 1 or self.sigma.shape != (d, d):
            raise ValueError(f"mu of shape {self.mu.shape} and sigma of shape {self.sigma.shape}: "
                             "expected (D,) and (D, D)")


class StatsAccumulator:
    """Streaming float64 mean and covariance of feature batches (Chan, Golub & LeVeque 1979 pairwise update).

    ``acc.update(features_batch)`` for batches of shape (B, D), then ``acc.stats()``.
    """

    def __init__(self) -> None:
        self.n = 0
        self.mean: np.ndarray | None = None
        self.m2: np.ndarray | None = None  # sum of outer products of deviations from the mean

    def update(self, features: torch.Tensor | np.ndarray) -> None:
        x = as_feature_matrix(features).numpy()
        nb = x.shape[0]
        if nb == 0:
            return
        mean_b = x.mean(axis=0)
        dev = x - mean_b
        m2_b = dev.T @ dev
        if self.mean is None or self.m2 is None:
            self.n, self.mean, self.m2 = nb, mean_b, m2_b
            return
        if mean_b.shape != self.mean.shape:
            raise ValueError(f"feature dimension {mean_b.shape[0]} differs from earlier batches ({self.mean.shape[0]})")
        n = self.n + nb
        delta = mean_b - self.mean
        self.mean = self.mean + delta * (nb / n)
        self.m2 = self.m2 + m2_b + np.outer(delta, delta) * (self.n * nb / n)
        self.n = n

    def stats(self) -> FeatureStats:
        if self.mean is None or self.m2 is None or self.n < 2:
            raise ValueError(f"need at least 2 feature vectors for a covariance, got {self.n}")
        return FeatureStats(mu=self.mean.copy(), sigma=self.m2 / (self.n - 1), n=self.n)


def feature_stats(features: torch.Tensor | np.ndarray) -> FeatureStats:
    """features: (N, D) -> float64 mean and unbiased covariance."""
    acc = StatsAccumulator()
    acc.update(features)
    return acc.stats()


def sqrtm_psd(a: np.ndarray) -> np.ndarray:
    """Symmetric square root of a symmetric positive semi-definite matrix via ``eigh``; eigenvalues below 0
    (round-off of a singular matrix) are clipped to 0. a: (D, D) -> (D, D) float64."""
    a = np.asarray(a, dtype=np.float64)
    a = 0.5 * (a + a.T)
    w, v = np.linalg.eigh(a)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """Tr((S_1 S_2)^{1/2}) for symmetric PSD S_1, S_2, through the symmetric M = S_1^{1/2} S_2 S_1^{1/2}."""
    s1_half = sqrtm_psd(sigma1)
    m = s1_half @ np.asarray(sigma2, dtype=np.float64) @ s1_half
    m = 0.5 * (m + m.T)
    w = np.linalg.eigvalsh(m)
    return float(np.sqrt(np.clip(w, 0.0, None)).sum())


@dataclass
class FIDResult:
    """``fid`` = ``mean_term`` + ``trace_term``; ``n_a``, ``n_b``: sample counts behind the two fits."""

    fid: float
    mean_term: float  # ||mu_a - mu_b||^2
    trace_term: float  # Tr(S_a) + Tr(S_b) - 2 Tr((S_a S_b)^{1/2})
    n_a: int
    n_b: int


def frechet_distance(a: FeatureStats, b: FeatureStats) -> FIDResult:
    """Fréchet distance between the Gaussians N(a.mu, a.sigma) and N(b.mu, b.sigma)."""
    if a.mu.shape != b.mu.shape:
        raise ValueError(f"feature dimensions differ: {a.mu.shape[0]} vs {b.mu.shape[0]}")
    diff = a.mu - b.mu
    mean_term = float(diff @ diff)
    trace_term = float(np.trace(a.sigma) + np.trace(b.sigma) - 2.0 * trace_sqrt_product(a.sigma, b.sigma))
    # The distance is >= 0; a negative value can only be round-off (identical statistics).
    fid = max(mean_term + trace_term, 0.0)
    return FIDResult(fid=fid, mean_term=mean_term, trace_term=trace_term, n_a=a.n, n_b=b.n)


def fid_from_features(features_a: torch.Tensor | np.ndarray, features_b: torch.Tensor | np.ndarray) -> FIDResult:
    """FID of two feature sets, (N_a, D) and (N_b, D)."""
    return frechet_distance(feature_stats(features_a), feature_stats(features_b))
