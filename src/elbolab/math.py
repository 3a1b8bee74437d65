"""Shared probability helpers for every ELBO in elbolab (VAE, HVAE, DDPM, evaluation).

All functions are elementwise unless stated otherwise and broadcast like ordinary torch operations.
Gaussians are described by a mean and a *log-variance* (never a standard deviation), so that the same
numbers flow from a posterior (``Posterior.log_variance``) into a KL or a likelihood.

Units: log-likelihoods and KLs are in nats; :func:`nats_to_bpd` converts a per-example total in nats to
bits per dimension, the unit of the diffusion and VAE papers (``bpd = nats / (D ln 2)``).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

__all__ = [
    "LOG_2PI",
    "MeanStderr",
    "append_dims",
    "approx_standard_normal_cdf",
    "discretized_gaussian_log_likelihood",
    "energy_distance",
    "gaussian_log_likelihood",
    "mean_and_stderr",
    "mean_flat",
    "nats_to_bpd",
    "normal_kl",
    "num_dims",
    "slerp",
    "standard_normal_cdf",
    "sum_flat",
]

LOG_2PI = math.log(2.0 * math.pi)


def append_dims(x: Tensor, target_ndim: int) -> Tensor:
    """Append trailing singleton axes so that ``x`` broadcasts against a tensor with ``target_ndim`` axes.

    ``x: (B,) -> (B, 1, 1, 1)`` for ``target_ndim = 4``. Raises ValueError if ``x`` already has more axes.
    """
    extra = target_ndim - x.ndim
    if extra < 0:
        raise ValueError(f"append_dims: x has {x.ndim} axes, more than target_ndim = {target_ndim}")
    return x[(...,) + (None,) * extra]


def num_dims(x: Tensor) -> int:
    """Number of dimensions D of one example of a batch ``x: (B, ...)`` (product of the non-batch axes)."""
    if x.ndim < 1:
        raise ValueError("num_dims: x must have a batch axis, got a scalar")
    return int(math.prod(x.shape[1:]))


def sum_flat(x: Tensor) -> Tensor:
    """Sum over every axis but the first: ``(B, ...) -> (B,)``."""
    return x.reshape(x.shape[0], -1).sum(dim=1)


def mean_flat(x: Tensor) -> Tensor:
    """Mean over every axis but the first: ``(B, ...) -> (B,)``."""
    return x.reshape(x.shape[0], -1).mean(dim=1)


def normal_kl(mean1: Tensor, logvar1: Tensor, mean2: Tensor, logvar2: Tensor) -> Tensor:
    """KL(N(mean1, exp(logvar1)) || N(mean2, exp(logvar2))) elementwise, in nats.

    ``0.5 * (logvar2 - logvar1 + exp(logvar1 - logvar2) + (mean1 - mean2)^2 exp(-logvar2) - 1)``.
    Sum over the data axes (:func:`sum_flat`) for a diagonal multivariate Gaussian.
    """
    return 0.5 * (
        -1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2)
    )


def gaussian_log_likelihood(x: Tensor, mean: Tensor, log_variance: Tensor) -> Tensor:
    """log N(x; mean, exp(log_variance)) elementwise, in nats (a continuous density)."""
    return -0.5 * (LOG_2PI + log_variance + (x - mean) ** 2 * torch.exp(-log_variance))


def standard_normal_cdf(x: Tensor) -> Tensor:
    """Exact standard normal CDF Phi(x) = (1 + erf(x / sqrt 2)) / 2."""
    return torch.special.ndtr(x)


def approx_standard_normal_cdf(x: Tensor) -> Tensor:
    """The tanh approximation of Phi(x) used in Ho et al. 2020's code (max abs error ~1e-3); for comparison only.

    elbolab's likelihoods use the exact :func:`standard_normal_cdf` through ``log_ndtr``.
    """
    return 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x.pow(3))))


def _log_ndtr_diff(lo: Tensor, hi: Tensor) -> Tensor:
    """log(Phi(hi) - Phi(lo)) for lo < hi, accurate in both tails.

    Reflects the interval to the lower tail (Phi(hi) - Phi(lo) = Phi(-lo) - Phi(-hi)) where the CDF is small
    and represented with full relative precision, then uses
    ``log(Phi(b) - Phi(a)) = log Phi(b) + log(-expm1(log Phi(a) - log Phi(b)))``.
    """
    flip = (lo + hi) > 0
    a = torch.where(flip, -hi, lo)
    b = torch.where(flip, -lo, hi)
    log_b = torch.special.log_ndtr(b)
    log_a = torch.special.log_ndtr(a)
    return log_b + torch.log(-torch.expm1(log_a - log_b))


def discretized_gaussian_log_likelihood(
    x: Tensor, mean: Tensor, log_variance: Tensor, num_bins: int = 256
) -> Tensor:
    """log P(x) of data quantised to ``num_bins`` levels in [-1, 1] under N(mean, exp(log_variance)), elementwise.

    The decoder of Ho et al. 2020 (eq. 13): the Gaussian mass of the bin around ``x`` of width
    ``2 / (num_bins - 1)`` (``2/255`` for 8-bit data), with the first bin extended to -inf and the last to
    +inf so that the probabilities of the ``num_bins`` values sum to exactly one. Computed in float64 with the
    exact normal CDF in log space (``log_ndtr``), so it stays finite and accurate when the bin lies deep in a
    tail or the variance is tiny; the result has ``x``'s dtype. In nats; sum over the data axes per example.

    ``x`` must hold values on the grid ``-1 + 2k/(num_bins - 1)`` (values in between are treated as lying in
    the bin centred on them). Raises ValueError for values outside [-1, 1] or ``num_bins < 2``.
    """
    if num_bins < 2:
        raise ValueError(f"discretized_gaussian_log_likelihood: num_bins = {num_bins!r} must be >= 2")
    tol = 1e-4
    if x.numel() and (x.min() < -1.0 - tol or x.max() > 1.0 + tol):
        raise ValueError(
            "discretized_gaussian_log_likelihood: x must lie in [-1, 1] (8-bit data scaled to [-1, 1]); "
            f"got values in [{x.min().item():.4g}, {x.max().item():.4g}]"
        )
    out_dtype = torch.promote_types(x.dtype, mean.dtype)
    x64, mean64, logvar64 = x.double(), mean.double(), log_variance.double()
    x64, mean64, logvar64 = torch.broadcast_tensors(x64, mean64, logvar64)
    inv_std = torch.exp(-0.5 * logvar64)
    half_bin = 1.0 / (num_bins - 1)
    centred = x64 - mean64
    lo = (centred - half_bin) * inv_std
    hi = (centred + half_bin) * inv_std
    # Edge bins extend to +-inf: P(X <= hi) at the bottom, P(X > lo) at the top. Every branch is evaluated on
    # finite arguments so that torch.where never routes a nan gradient.
    bottom = x64 < -1.0 + half_bin
    top = x64 > 1.0 - half_bin
    log_probs = torch.where(
        bottom,
        torch.special.log_ndtr(hi),
        torch.where(top, torch.special.log_ndtr(-lo), _log_ndtr_diff(lo, hi)),
    )
    return log_probs.to(out_dtype)


def nats_to_bpd(nats: Tensor | float, num_dims: int) -> Tensor | float:
    """Convert a per-example quantity in nats over ``num_dims`` dimensions to bits per dimension.

    ``bpd = nats / (num_dims * ln 2)``; for a negative log-likelihood this is the number the papers report.
    """
    if num_dims <= 0:
        raise ValueError(f"nats_to_bpd: num_dims = {num_dims!r} must be a positive integer")
    return nats / (num_dims * math.log(2.0))


class MeanStderr(NamedTuple):
    """A sample mean and its standard error ``std / sqrt(n)`` (``stderr = nan`` when n < 2)."""

    mean: float
    stderr: float


def mean_and_stderr(values: Tensor) -> MeanStderr:
    """Mean and standard error of the mean of a 1-D sample ``values: (N,)`` (unbiased std, in float64)."""
    v = values.detach().double().reshape(-1)
    n = v.numel()
    if n == 0:
        raise ValueError("mean_and_stderr: values is empty")
    mean = float(v.mean())
    stderr = float(v.std(unbiased=True) / math.sqrt(n)) if n > 1 else math.nan
    return MeanStderr(mean, stderr)


def energy_distance(x: Tensor, y: Tensor) -> Tensor:
    """Energy distance between two samples ``x: (N, D)`` and ``y: (M, D)`` (Szekely & Rizzo 2013).

    ``2 E|X - Y| - E|X - X'| - E|Y - Y'|`` with Euclidean norms and the unbiased (U-statistic) within-sample
    terms; zero in expectation iff the two distributions are equal. A scalar tensor (float64).
    """
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"energy_distance: need x (N, D) and y (M, D), got {tuple(x.shape)} and {tuple(y.shape)}")
    if x.shape[0] < 2 or y.shape[0] < 2:
        raise ValueError("energy_distance: each sample needs at least 2 points")
    x, y = x.double(), y.double()
    n, m = x.shape[0], y.shape[0]
    xy = torch.cdist(x, y).mean()
    xx = torch.cdist(x, x).sum() / (n * (n - 1))
    yy = torch.cdist(y, y).sum() / (m * (m - 1))
    return 2.0 * xy - xx - yy


def slerp(z0: Tensor, z1: Tensor, weights: Tensor) -> Tensor:
    """Spherical linear interpolation (Shoemake 1985) between ``z0`` and ``z1`` (same shape, any number of axes).

    ``weights: (W,)`` in [0, 1] -> ``(W, *z0.shape)``: ``sin((1-w) omega) / sin(omega) z0 + sin(w omega) / sin(omega)
    z1`` with omega the angle between the flattened vectors; falls back to linear interpolation when the
    vectors are (nearly) parallel. Interpolates Gaussian latents (VAE codes, DDPM x_T) without shrinking
    their norm towards the origin as a straight line would.
    """
    if z0.shape != z1.shape:
        raise ValueError(f"slerp: z0 {tuple(z0.shape)} and z1 {tuple(z1.shape)} must have the same shape")
    if weights.ndim != 1:
        raise ValueError(f"slerp: weights must have shape (W,), got {tuple(weights.shape)}")
    a, b = z0.reshape(-1).double(), z1.reshape(-1).double()
    cos = torch.dot(a, b) / (a.norm() * b.norm()).clamp_min(1e-300)
    omega = torch.arccos(cos.clamp(-1.0, 1.0))
    w = weights.double()[:, None]
    if float(torch.sin(omega)) < 1e-6:
        out = (1.0 - w) * a + w * b
    else:
        out = (torch.sin((1.0 - w) * omega) * a + torch.sin(w * omega) * b) / torch.sin(omega)
    return out.reshape(weights.shape[0], *z0.shape).to(z0.dtype)
