"""Samples sharing a latent (DDPM Fig. 7): draws of p(x_0 | x_t) from one frozen x_t, checked against the exact
Gaussian posterior."""

import pytest
import torch
from apps_helpers import correlated_gaussian

from elbolab.apps.shared_latent import default_times, shared_latent_samples
from elbolab.diffusion import GaussianOracle


def reverse_chain_law(oracle, diffusion, x_t, t):
    """Exact law N(m, C) of x_0 under the ancestral chain started at the fixed x_t (affine oracle), float64."""
    D = x_t.numel()
    pts = torch.cat([torch.zeros(1, D), torch.eye(D)]).double()
    m, C = x_t.double().flatten(), torch.zeros(D, D, dtype=torch.float64)
    for s in range(t, 0, -1):
        st = diffusion.p_mean_variance(oracle(pts, torch.full((D + 1,), s)), pts, s)
        A, c = (st.mean[1:] - st.mean[0]).T, st.mean[0]
        m, C = A @ m + c, A @ C @ A.T
        if s > 1:
            C = C + float(st.variance[0, 0]) * torch.eye(D, dtype=torch.float64)
    return m, C


def gaussian_posterior(mean, cov, x_t, alpha_bar):
    """p(x_0 | x_t) for x_0 ~ N(mean, cov), x_t = sqrt(abar) x_0 + sqrt(1 - abar) eps: Gaussian conditioning."""
    a, s2 = alpha_bar**0.5, 1.0 - alpha_bar
    inv = torch.linalg.inv(cov)
    P = torch.linalg.inv(inv + a * a / s2 * torch.eye(mean.numel(), dtype=torch.float64))
    return P @ (inv @ mean + a / s2 * x_t.double().flatten()), P


def test_shared_latent_samples_follow_the_posterior(make_diffusion):
    """3000 draws from one x_t at t = 40 and t = T = 200: mean and covariance match the exact law of the reverse
    chain to Monte Carlo precision, and the closed-form posterior within the fixed-variance approximation of a
    200-step DDPM (KL < 0.06 nats); the spread grows with t."""
    d = make_diffusion(200)
    mean, cov = correlated_gaussian(8)
    oracle = GaussianOracle(mean, cov, d)
    x0 = oracle.sample_data(1, torch.Generator().manual_seed(3)).view(1, 1, 2, 4)
    N = 3000
    res = shared_latent_samples(oracle, x0, d, [40, 200], N, generator=torch.Generator().manual_seed(0))
    assert res.samples.shape == (2, N, 1, 2, 4) and res.x_t.shape == (2, 1, 2, 4)
    for k, t in enumerate([40, 200]):
        S = res.samples[k].reshape(N, 8).double()
        m_hat, C_hat = S.mean(0), torch.cov(S.T)
        m, C = reverse_chain_law(oracle, d, res.x_t[k], t)
        sd = C.diag().sqrt()
        assert ((m_hat - m).abs() / sd).max() < 4 / N**0.5
        assert ((C_hat - C).abs() / (sd[:, None] * sd[None])).max() < 4 * (2 / N) ** 0.5
        mu, P = gaussian_posterior(mean, cov, res.x_t[k], float(d.schedule.alpha_bars[t]))
        Pi = torch.linalg.inv(P)
        diff = mu - m_hat
        kl = 0.5 * (torch.trace(Pi @ C_hat) + diff @ Pi @ diff - 8 + torch.logdet(P) - torch.logdet(C_hat))
        assert kl < 0.06
    assert res.spread[0] < res.spread[1]


def test_small_t_samples_are_near_copies(gaussian_oracle):
    oracle, d, _, _ = gaussian_oracle
    x0 = oracle.sample_data(1, torch.Generator().manual_seed(0)).view(1, 1, 2, 4)
    res = shared_latent_samples(oracle, x0, d, [1, 100], 16, generator=torch.Generator().manual_seed(0))
    near = (res.samples[0] - x0).abs().max()
    far = (res.samples[1] - x0).pow(2).mean().sqrt()
    assert near < 0.1 < far and res.spread[0] < 0.1 * res.spread[1]


def test_shared_latent_errors_and_defaults(gaussian_oracle):
    oracle, d, _, _ = gaussian_oracle
    x0 = torch.zeros(2, 1, 2, 4)
    g = torch.Generator()
    with pytest.raises(ValueError, match="one example"):
        shared_latent_samples(oracle, x0, d, [5], 3, generator=g)
    with pytest.raises(ValueError, match="time = 0"):
        shared_latent_samples(oracle, x0[:1], d, [0], 3, generator=g)
    with pytest.raises(ValueError, match="n = 0"):
        shared_latent_samples(oracle, x0[:1], d, [5], 0, generator=g)
    assert default_times(1000) == [200, 400, 600, 800, 1000]
