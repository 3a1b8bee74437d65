"""Decoder likelihoods p(x|z): parity with torch.distributions, normalisation, binarisation, one contract test."""

import math

import pytest
import torch

from elbolab.vae.config import DecoderLikelihood
from elbolab.vae.likelihoods import Bernoulli, Discretized, GaussianFixed, GaussianLearned, make_likelihood

ALL = [make_likelihood(k, gaussian_std=0.2) for k in DecoderLikelihood]


def _params(lik, g, shape=(4, 1, 3, 3)):
    b, c, h, w = shape
    return torch.randn((b, lik.params_per_channel * c, h, w), generator=g)


@pytest.mark.parametrize("lik", ALL, ids=lambda lk: lk.kind.value)
def test_contract_shapes_broadcast_and_range(lik):
    g = torch.Generator().manual_seed(0)
    params = _params(lik, g)
    x = lik.prepare(torch.rand(4, 1, 3, 3, generator=g) * 2 - 1, g)
    assert x.shape == (4, 1, 3, 3) and x.min() >= -1 and x.max() <= 1
    lp = lik.log_prob(params, x)
    assert lp.shape == (4,) and torch.isfinite(lp).all()
    # leading sample axes broadcast against the data (the IWAE bound scores (S, B, ...) params against (B, ...))
    stacked = torch.stack([params, params.flip(0)])
    lp2 = lik.log_prob(stacked, x)
    assert lp2.shape == (2, 4)
    torch.testing.assert_close(lp2[0], lp)
    assert lik.mean(params).shape == x.shape
    assert lik.sample(params, g).shape == x.shape


def test_bernoulli_matches_torch_and_binarises_dynamically():
    g = torch.Generator().manual_seed(1)
    lik = Bernoulli()
    logits = torch.randn(3, 1, 4, 4, generator=g)
    b = torch.randint(0, 2, (3, 1, 4, 4), generator=g).float()
    ref = torch.distributions.Bernoulli(logits=logits).log_prob(b).sum((1, 2, 3))
    torch.testing.assert_close(lik.log_prob(logits, 2 * b - 1), ref)
    # dynamic binarisation: values in {-1, 1}, mean (x + 1) / 2, reproducible with the same seed
    x = torch.full((20000, 1, 1, 1), 0.4)  # ink probability 0.7
    t1 = lik.prepare(x, torch.Generator().manual_seed(5))
    t2 = lik.prepare(x, torch.Generator().manual_seed(5))
    assert torch.equal(t1, t2) and set(t1.unique().tolist()) == {-1.0, 1.0}
    assert abs(((t1 + 1) / 2).mean().item() - 0.7) < 0.02
    torch.testing.assert_close(lik.mean(logits), 2 * torch.sigmoid(logits) - 1)


def test_gaussians_match_torch_normal():
    g = torch.Generator().manual_seed(2)
    x = torch.rand(2, 1, 3, 3, generator=g) * 2 - 1
    mu = torch.randn(2, 1, 3, 3, generator=g)
    ref = torch.distributions.Normal(mu, 0.2).log_prob(x).sum((1, 2, 3))
    torch.testing.assert_close(GaussianFixed(0.2).log_prob(mu, x), ref)
    lik = GaussianLearned()
    raw = torch.randn(2, 1, 3, 3, generator=g)
    params = torch.cat([mu, raw], dim=1)
    _, logvar = lik.split(params)
    ref = torch.distributions.Normal(mu, torch.exp(0.5 * logvar)).log_prob(x).sum((1, 2, 3))
    torch.testing.assert_close(lik.log_prob(params, x), ref)
    # the lower bound on log sigma^2 is soft: identity far above it, never below it
    very_low = lik.split(torch.cat([mu, torch.full_like(raw, -100.0)], 1))[1]
    assert very_low.min() >= lik.min_logvar
    torch.testing.assert_close(lik.split(torch.cat([mu, torch.zeros_like(raw)], 1))[1], torch.zeros_like(raw),
                               atol=1e-4, rtol=0)


def test_discretized_is_a_distribution_over_the_256_levels():
    lik = Discretized()
    levels = torch.arange(256, dtype=torch.float64) / 127.5 - 1.0  # every 8-bit value
    params = torch.tensor([0.3, math.log(0.05**2)], dtype=torch.float64).view(1, 2, 1, 1).expand(256, 2, 1, 1)
    probs = lik.log_prob(params, levels.view(256, 1, 1, 1)).exp()
    torch.testing.assert_close(probs.sum(), torch.tensor(1.0, dtype=torch.float64), atol=1e-9, rtol=0)
    assert abs(levels[probs.argmax()].item() - 0.3) < 2 / 255
    # prepare snaps to the grid; samples lie on the grid
    x = torch.tensor([-1.0, -0.9999, 0.0021, 1.0]).view(1, 1, 2, 2)
    snapped = lik.prepare(x, None)
    torch.testing.assert_close(snapped, torch.round((snapped + 1) * 127.5) / 127.5 - 1)
    s = lik.sample(torch.randn(2, 2, 3, 3), torch.Generator().manual_seed(0))
    torch.testing.assert_close(s, torch.round((s + 1) * 127.5) / 127.5 - 1)


def test_make_likelihood_rejects_unknown_names():
    with pytest.raises(ValueError, match="'bernoulli'"):
        make_likelihood("poisson")
    with pytest.raises(ValueError, match="std"):
        GaussianFixed(0.0)
    assert isinstance(make_likelihood("discretized"), Discretized)
