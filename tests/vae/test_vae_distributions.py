"""Diagonal Gaussians: closed-form KL of the notes vs Monte Carlo and vs references; reparameterisation gradient."""

import math

import pytest
import torch

from elbolab.math import normal_kl
from elbolab.vae.distributions import DiagonalGaussian


def _random_gaussian(g, shape=(3, 5)):
    mu = torch.randn(shape, generator=g, dtype=torch.float64)
    logvar = torch.randn(shape, generator=g, dtype=torch.float64) * 0.7
    return DiagonalGaussian(mu, logvar)


def test_closed_form_kl_matches_monte_carlo():
    g = torch.Generator().manual_seed(0)
    q = _random_gaussian(g)
    closed = q.kl_to_standard_normal()  # (3, 5), the notes' -1/2 (1 + log s2 - mu2 - s2)
    z = q.rsample(g, num_samples=200_000)
    log_ratio = q.log_prob(z) - DiagonalGaussian.standard(z).log_prob(z)  # (S, 3, 5)
    mc, se = log_ratio.mean(0), log_ratio.std(0) / math.sqrt(z.shape[0])
    assert (closed - mc).abs().max() < 5 * se.max()
    assert torch.all(closed >= 0)


def test_closed_form_kl_matches_references():
    g = torch.Generator().manual_seed(1)
    q = _random_gaussian(g)
    zero = torch.zeros_like(q.mu)
    torch.testing.assert_close(q.kl_to_standard_normal(), normal_kl(q.mu, q.logvar, zero, zero))
    ref = torch.distributions.kl_divergence(torch.distributions.Normal(q.mu, q.std), torch.distributions.Normal(0.0, 1.0))
    torch.testing.assert_close(q.kl_to_standard_normal(), ref)
    # a standard normal has zero KL to itself
    assert DiagonalGaussian.standard(q.mu).kl_to_standard_normal().abs().max() == 0


def test_log_prob_and_entropy_match_torch_distributions():
    g = torch.Generator().manual_seed(2)
    q = _random_gaussian(g)
    ref = torch.distributions.Normal(q.mu, q.std)
    z = q.rsample(g, num_samples=4)
    torch.testing.assert_close(q.log_prob(z), ref.log_prob(z))
    torch.testing.assert_close(q.entropy(), ref.entropy())


def test_rsample_is_reparameterised_and_seeded():
    mu = torch.tensor([1.0, -2.0], requires_grad=True)
    logvar = torch.tensor([0.5, -1.0], requires_grad=True)
    q = DiagonalGaussian(mu, logvar)
    z1 = q.rsample(torch.Generator().manual_seed(3), num_samples=7)
    z2 = q.rsample(torch.Generator().manual_seed(3), num_samples=7)
    assert z1.shape == (7, 2) and torch.equal(z1, z2)
    z1.sum().backward()
    torch.testing.assert_close(mu.grad, torch.full((2,), 7.0))  # dz/dmu = 1 per sample
    eps = (z1.detach() - mu.detach()) / torch.exp(0.5 * logvar.detach())
    torch.testing.assert_close(logvar.grad, (0.5 * torch.exp(0.5 * logvar.detach()) * eps).sum(0))


def test_reparameterised_gradient_agrees_with_score_function_gradient():
    """d/d(mu, log s2) E_q[f(z)] for f(z) = sum (z - a)^2 + sin(3 z): reparameterisation (pathwise) and REINFORCE
    (score function, with a baseline) are both unbiased; their means agree with each other and the exact value."""
    a = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64)
    mu = torch.tensor([1.0, 0.0, 1.5], dtype=torch.float64, requires_grad=True)
    logvar = torch.tensor([-0.5, 0.3, -1.2], dtype=torch.float64, requires_grad=True)

    def f(z):
        return ((z - a) ** 2 + torch.sin(3.0 * z)).sum(-1)

    n = 400_000
    g = torch.Generator().manual_seed(4)
    q = DiagonalGaussian(mu, logvar)
    # pathwise: per-sample gradients of f(mu + sigma eps)
    z = q.rsample(g, num_samples=n)
    rep = torch.autograd.grad(f(z).sum() / n, (mu, logvar))
    # score function: f(z) grad log q(z), z not differentiated; mean baseline reduces variance, keeps it unbiased
    z_sf = q.rsample(g, num_samples=n).detach()
    fz = f(z_sf)
    weights = (fz - fz.mean()).detach()
    sf = torch.autograd.grad((weights * q.log_prob(z_sf).sum(-1)).sum() / n, (mu, logvar))
    # exact: E[(z-a)^2] = (mu-a)^2 + s2 ; E[sin(3z)] = sin(3 mu) exp(-9 s2 / 2)
    s2 = torch.exp(logvar.detach())
    m = mu.detach()
    exact_mu = 2 * (m - a) + 3 * torch.cos(3 * m) * torch.exp(-4.5 * s2)
    exact_logvar = s2 + torch.sin(3 * m) * torch.exp(-4.5 * s2) * (-4.5 * s2)
    torch.testing.assert_close(rep[0], exact_mu, atol=0.01, rtol=0)
    torch.testing.assert_close(rep[1], exact_logvar, atol=0.01, rtol=0)
    torch.testing.assert_close(sf[0], rep[0], atol=0.05, rtol=0)
    torch.testing.assert_close(sf[1], rep[1], atol=0.05, rtol=0)


def test_from_params_checks_shape():
    with pytest.raises(ValueError, match="even"):
        DiagonalGaussian.from_params(torch.zeros(2, 5))
    with pytest.raises(ValueError, match="differ"):
        DiagonalGaussian(torch.zeros(2, 3), torch.zeros(2, 4))
