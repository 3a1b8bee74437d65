"""Shared fixtures of the diffusion tests."""

import pytest
import torch

from elbolab.diffusion import GaussianDiffusion, NoiseSchedule


def scaled_linear(T: int) -> NoiseSchedule:
    """Ho et al.'s linear schedule with betas scaled by 1000 / T (capped), so short chains still end in noise."""
    k = min(1000.0 / T, 40.0)
    return NoiseSchedule.linear(T, 1e-4 * k, 0.02 * k)


@pytest.fixture
def make_diffusion():
    """``make_diffusion(T, **kwargs)``: a GaussianDiffusion on the scaled linear schedule."""

    def make(T: int = 50, **kwargs) -> GaussianDiffusion:
        return GaussianDiffusion(scaled_linear(T), **kwargs)

    return make


def affine_reverse_maps(model, diffusion):
    """For a model whose reverse mean is affine in x_t (the Gaussian oracle): [(A_t, b_t, sigma_t^2)] for
    t = 1..T with mu_theta(x_t, t) = A_t x_t + b_t, read off by evaluating at 0 and the unit vectors (float64)."""
    D = model.dim
    pts = torch.cat([torch.zeros(1, D), torch.eye(D)]).double()
    maps = []
    for t in range(1, diffusion.T + 1):
        tt = torch.full((D + 1,), t)
        step = diffusion.p_mean_variance(model(pts, tt), pts, tt)
        b = step.mean[0]
        maps.append(((step.mean[1:] - b).T, b, step.variance[0, 0].item()))
    return maps


def exact_reverse_law(model, diffusion, decoder_noise):
    """The exact law N(m, C) of x_0 under the reverse chain x_T ~ N(0, I), x_{t-1} = A_t x_t + b_t + sigma_t z.

    ``decoder_noise=False``: the sampler's law (Algorithm 2, z = 0 at t = 1); ``True``: the model density
    p_theta(x_0) including the decoder variance at t = 1."""
    D = model.dim
    m, C = torch.zeros(D, dtype=torch.float64), torch.eye(D, dtype=torch.float64)
    for t, (A, b, var) in reversed(list(enumerate(affine_reverse_maps(model, diffusion), start=1))):
        m, C = A @ m + b, A @ C @ A.T
        if t > 1 or decoder_noise:
            C = C + var * torch.eye(D, dtype=torch.float64)
    return m, C


@pytest.fixture
def reverse_law():
    return exact_reverse_law


@pytest.fixture
def reverse_maps():
    return affine_reverse_maps


def moment_matched_gaussian_energy_distance(data, seed=0):
    """Energy distance to ``data: (N, D)`` of N draws of the Gaussian with data's mean and covariance: what a
    sampler that ignores the modes achieves (the baseline a mixture sampler must beat)."""
    from elbolab.math import energy_distance

    x = data.double()
    chol = torch.linalg.cholesky(torch.cov(x.T))
    z = torch.randn(x.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    gauss = x.mean(0) + z @ chol.T
    return float(energy_distance(gauss, x))


@pytest.fixture
def gaussian_baseline():
    return moment_matched_gaussian_energy_distance
