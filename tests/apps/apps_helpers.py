"""Helpers of the application tests (imported by name; a unique module name avoids clashes between test dirs)."""

import torch

from elbolab.diffusion import NoiseSchedule


def scaled_linear(T: int) -> NoiseSchedule:
    """Ho et al.'s linear schedule with betas scaled by 1000 / T, so that short chains still end in noise."""
    k = 1000.0 / T
    return NoiseSchedule.linear(T, 1e-4 * k, min(0.02 * k, 0.999))


def correlated_gaussian(D: int, seed: int = 0, std: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean (D,), cov (D, D)) float64: strongly correlated, every marginal standard deviation ``std``."""
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(D, D, generator=g, dtype=torch.float64)
    cov = A @ A.T / D + 0.1 * torch.eye(D, dtype=torch.float64)
    s = cov.diag().sqrt()
    cov = cov / s[:, None] / s[None] * std**2
    mean = torch.linspace(-0.5, 0.5, D, dtype=torch.float64)
    return mean, cov


def gaussian_conditional(mean, cov, keep, x):
    """Closed-form p(x_a | x_b) of N(mean, cov) (lecture notes 001, "Gaussian conditioning"): a = ~keep,
    b = keep; returns (mu_{a|b}, Sigma_{a|b}) for the observed x (D,)."""
    a, b = (~keep).nonzero().flatten(), keep.nonzero().flatten()
    S_ab, S_b = cov[a][:, b], cov[b][:, b]
    mu = mean[a] + S_ab @ torch.linalg.solve(S_b, x[b] - mean[b])
    return mu, cov[a][:, a] - S_ab @ torch.linalg.solve(S_b, S_ab.T)

