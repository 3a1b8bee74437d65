"""ELBO <= IWAE_K <= log p(x) on linear-Gaussian models whose log p(x) is exact (probabilistic PCA, and a
two-layer linear-Gaussian Markovian HVAE); chunked IWAE; the likelihood report; active units."""

import math

import pytest
import torch
from torch import nn

from elbolab.math import gaussian_log_likelihood
from elbolab.nn.convnets import FeedForward, MLPDecoder, MLPEncoder
from elbolab.vae import HVAE, VAE, active_units, evaluate_likelihood, iwae_bound
from elbolab.vae.likelihoods import GaussianFixed

SHAPE = (1, 2, 3)  # D = 6
D, J = 6, 2
SIGMA = 0.5


def _mvn_log_prob(x, mean, cov):
    return torch.distributions.MultivariateNormal(mean, covariance_matrix=cov).log_prob(x)


def _set_linear(layer: nn.Linear, weight, bias):
    with torch.no_grad():
        layer.weight.copy_(weight)
        layer.bias.copy_(bias)


def ppca_vae(seed=0, mean_scale=0.8, logvar_shift=0.3):
    """p(z) = N(0, I_2), p(x|z) = N(W z + b, sigma^2 I_6); q(z|x) = N(scale * exact posterior mean, shifted
    diagonal posterior variance) -- deliberately not the true posterior, so ELBO < log p(x)."""
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(D, J, generator=g, dtype=torch.float64)
    b = torch.randn(D, generator=g, dtype=torch.float64) * 0.3
    enc = MLPEncoder(SHAPE, (), 2 * J).double()
    dec = MLPDecoder(J, (), 1, SHAPE[1:]).double()
    _set_linear(dec.mlp.net[-1], W, b)
    post_cov = torch.linalg.inv(torch.eye(J, dtype=torch.float64) + W.T @ W / SIGMA**2)
    A = mean_scale * post_cov @ W.T / SIGMA**2  # mean map x -> A (x - b)
    weight = torch.cat([A, torch.zeros(J, D, dtype=torch.float64)])
    bias = torch.cat([-A @ b, torch.log(torch.diagonal(post_cov)) + logvar_shift])
    _set_linear(enc.mlp.net[-1], weight, bias)
    model = VAE(enc, dec, GaussianFixed(SIGMA), J, SHAPE)
    x = (W @ torch.randn(J, 5, generator=g, dtype=torch.float64)).T + b + SIGMA * torch.randn(5, D, generator=g,
                                                                                               dtype=torch.float64)
    log_px = _mvn_log_prob(x, b, W @ W.T + SIGMA**2 * torch.eye(D, dtype=torch.float64))
    return model, x.view(5, *SHAPE), log_px, (W, b)


def analytic_elbo(model, x, W, b):
    """E_q[log N(x; W z + b, s^2 I)] - KL(q || N(0, I)) in closed form for the linear-Gaussian model."""
    q = model.posterior(x)
    mean_x = q.mu @ W.T + b
    rec = gaussian_log_likelihood(x.flatten(1), mean_x, torch.tensor(2 * math.log(SIGMA), dtype=x.dtype)).sum(1)
    rec = rec - 0.5 / SIGMA**2 * (torch.exp(q.logvar) @ (W**2).T).sum(1)
    return rec - q.kl_to_standard_normal().sum(1)


def _iwae_mean(model, x, k, g, reps):
    """Mean and standard error over ``reps`` independent IWAE_k estimates per image (one batched call)."""
    vals = iwae_bound(model, x.repeat(reps, 1, 1, 1), k, g).view(reps, x.shape[0])
    return vals.mean(0), vals.std(0) / math.sqrt(reps)


@torch.no_grad()
def test_ppca_elbo_estimator_matches_closed_form():
    model, x, log_px, (W, b) = ppca_vae()
    exact = analytic_elbo(model, x, W, b)
    g = torch.Generator().manual_seed(1)
    n = 40000
    elbos = model.elbo(x.repeat(n, 1, 1, 1), g).elbo.view(n, x.shape[0])  # n single-sample estimates per image
    mean, se = elbos.mean(0), elbos.std(0) / math.sqrt(n)
    assert torch.all((mean - exact).abs() < 5 * se + 1e-9)
    assert torch.all(exact < log_px - 0.05)  # q is not the posterior: a real gap


@torch.no_grad()
def test_ppca_elbo_le_iwae_k_le_log_px_and_iwae_rises_to_log_px():
    model, x, log_px, (W, b) = ppca_vae()
    elbo = analytic_elbo(model, x, W, b)
    g = torch.Generator().manual_seed(2)
    bounds = {}
    for k, reps in ((1, 4000), (5, 800), (50, 200), (500, 40), (5000, 10)):
        bounds[k] = _iwae_mean(model, x, k, g, reps)
    # IWAE_1 is the ELBO
    m1, se1 = bounds[1]
    assert torch.all((m1 - elbo).abs() < 5 * se1)
    ks = sorted(bounds)
    for k in ks:
        m, se = bounds[k]
        assert torch.all(elbo <= m + 4 * se), k
        assert torch.all(m <= log_px + 4 * se + 1e-6), k
    # strictly rising with K (averaged over the 5 data points, well beyond the noise)
    means = [bounds[k][0].mean() for k in ks]
    ses = [bounds[k][1].pow(2).mean().sqrt() for k in ks]
    for a, b_, sa, sb in zip(means, means[1:], ses, ses[1:]):
        assert b_ > a - 3 * (sa + sb)
    assert means[-1] - means[0] > 0.5 * (log_px.mean() - elbo.mean())
    # and approaching log p(x): the remaining gap at K = 5000 is tiny compared with the ELBO gap
    gap_elbo = (log_px - elbo).mean()
    gap_5000 = (log_px - bounds[5000][0]).mean()
    assert gap_elbo > 0.1 and 0 <= gap_5000 + 3 * ses[-1] and gap_5000 < 0.02 * gap_elbo + 3e-3


@torch.no_grad()
def test_iwae_chunking_is_exact():
    model, x, _, _ = ppca_vae()
    calls = []

    class Recorder:  # the model, recording every chunk of log-weights the bound asks for
        def __getattr__(self, name):
            return getattr(model, name)

        def log_importance_weights(self, x, num_samples, generator):
            calls.append(model.log_importance_weights(x, num_samples, generator))
            return calls[-1]

    chunked = iwae_bound(Recorder(), x, 1000, torch.Generator().manual_seed(3), max_elements=7 * x.shape[0] * D)
    assert [c.shape[0] for c in calls] == [7] * 142 + [6]
    torch.testing.assert_close(chunked, torch.logsumexp(torch.cat(calls), 0) - math.log(1000), rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="num_samples"):
        iwae_bound(model, x, 0, None)


def linear_hvae(seed=0):
    """Two-layer linear-Gaussian Markovian HVAE with exact log p(x):
    z2 ~ N(0, I_2), z1 | z2 ~ N(V z2 + e, tau^2 I_3), x | z1 ~ N(W z1 + b, sigma^2 I_6)."""
    g = torch.Generator().manual_seed(seed)
    j1, j2, tau = 3, 2, 0.6
    t = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731
    W, b, V, e = t(D, j1), 0.3 * t(D), t(j1, j2), 0.3 * t(j1)
    enc, dec = MLPEncoder(SHAPE, (), 2 * j1).double(), MLPDecoder(j1, (), 1, SHAPE[1:]).double()
    up, down = FeedForward(j1, (), 2 * j2).double(), FeedForward(j2, (), 2 * j1).double()
    _set_linear(dec.mlp.net[-1], W, b)
    z0 = torch.zeros(j1, j2, dtype=torch.float64)
    _set_linear(down.net[-1], torch.cat([V, z0]), torch.cat([e, torch.full((j1,), 2 * math.log(tau), dtype=W.dtype)]))
    # q(z1|x): the exact posterior's mean (of the z2-marginalised model) with its diagonal variance
    cov1 = V @ V.T + tau**2 * torch.eye(j1, dtype=W.dtype)
    post1 = torch.linalg.inv(torch.linalg.inv(cov1) + W.T @ W / SIGMA**2)
    A1 = post1 @ W.T / SIGMA**2
    mean1_bias = post1 @ torch.linalg.solve(cov1, e) - A1 @ b
    _set_linear(enc.mlp.net[-1], torch.cat([A1, torch.zeros(j1, D, dtype=W.dtype)]),
                torch.cat([mean1_bias, torch.log(torch.diagonal(post1))]))
    # q(z2|z1): the exact p(z2|z1)
    post2 = torch.linalg.inv(torch.eye(j2, dtype=W.dtype) + V.T @ V / tau**2)
    A2 = post2 @ V.T / tau**2
    _set_linear(up.net[-1], torch.cat([A2, torch.zeros(j2, j1, dtype=W.dtype)]),
                torch.cat([-A2 @ e, torch.log(torch.diagonal(post2))]))
    model = HVAE(enc, dec, GaussianFixed(SIGMA), (j1, j2), SHAPE, [up], [down])
    cov_x = W @ cov1 @ W.T + SIGMA**2 * torch.eye(D, dtype=W.dtype)
    x = torch.distributions.MultivariateNormal(W @ e + b, cov_x).sample((4,))
    return model, x.view(4, *SHAPE), _mvn_log_prob(x, W @ e + b, cov_x)


@torch.no_grad()
def test_linear_hvae_bounds_and_per_layer_terms():
    torch.manual_seed(0)  # the data draw in linear_hvae uses the global RNG of MultivariateNormal.sample
    model, x, log_px = linear_hvae()
    g = torch.Generator().manual_seed(4)
    n = 40000
    terms = model.elbo(x.repeat(n, 1, 1, 1), g)  # n single-sample estimates per image
    elbo_terms = terms.elbo.view(n, 4)
    kl = terms.kl.view(n, 4, 2)
    assert [k.shape for k in terms.kl_per_dim] == [(4 * n, 3), (4 * n, 2)]
    # per-layer terms sum to the total
    torch.testing.assert_close(terms.reconstruction.view(n, 4) - kl.sum(-1), elbo_terms)
    # the per-layer estimator (closed-form top KL, Monte Carlo lower layers) and the plain log-weight estimator
    # log p(x, z) - log q(z|x) have the same expectation: the ELBO
    log_w = model.log_importance_weights(x, n, g)
    m_terms, se_terms = elbo_terms.mean(0), elbo_terms.std(0) / math.sqrt(n)
    m_w, se_w = log_w.mean(0), log_w.std(0) / math.sqrt(n)
    assert torch.all((m_terms - m_w).abs() < 5 * (se_terms + se_w))
    # ELBO <= IWAE_K <= log p(x), rising with K towards log p(x)
    iw = {k: _iwae_mean(model, x, k, g, r) for k, r in ((10, 400), (1000, 20))}
    assert torch.all(m_w <= iw[10][0] + 4 * iw[10][1])
    assert torch.all(iw[10][0] <= iw[1000][0] + 4 * iw[1000][1])
    assert torch.all(iw[1000][0] <= log_px + 4 * iw[1000][1] + 1e-6)
    assert (log_px - iw[1000][0]).mean() < 0.1 * (log_px - m_w).mean()


@torch.no_grad()
def test_evaluate_likelihood_report():
    model, x, log_px, (W, b) = ppca_vae()
    batches = [(x[:3], torch.zeros(3)), (x[3:], torch.zeros(2))]
    rep = evaluate_likelihood(model, batches, num_samples=2000, generator=torch.Generator().manual_seed(5),
                              progress=False)
    assert rep.num_examples == 5 and rep.dims == D and rep.num_samples == 2000
    assert rep.likelihood == "gaussian_fixed" and len(rep.kl_per_layer) == 1
    assert rep.iwae_nll < rep.elbo_nll + 3 * rep.elbo_nll_stderr
    assert abs(rep.iwae_nll - (-log_px.mean().item())) < 0.05
    assert rep.iwae_bpd == pytest.approx(rep.iwae_nll / (D * math.log(2)))
    assert rep.iwae_nll_stderr == pytest.approx(log_px.std().item() / math.sqrt(5), rel=0.1)
    assert "IWAE_2000" in rep.to_text() and rep.to_dict()["kl_per_layer"] == list(rep.kl_per_layer)
    with pytest.raises(ValueError, match="no images"):
        evaluate_likelihood(model, [], 10, torch.Generator(), progress=False)


@torch.no_grad()
def test_active_units_count_collapsed_dimensions():
    g = torch.Generator().manual_seed(6)
    enc = MLPEncoder(SHAPE, (), 2 * 4)
    dec = MLPDecoder(4, (), 1, SHAPE[1:])
    # posterior means: dims 0, 1 vary with x (variances 0.25, 0.02), dim 2 barely (0.004), dim 3 constant;
    # small posterior variances (1e-4) keep the Monte Carlo noise of deeper layers' means negligible
    weight = torch.zeros(8, D)
    weight[0, 0], weight[1, 1], weight[2, 2] = 0.5, math.sqrt(0.02), math.sqrt(0.004)
    _set_linear(enc.mlp.net[-1], weight, torch.cat([torch.zeros(4), torch.full((4,), math.log(1e-4))]))
    model = VAE(enc, dec, GaussianFixed(0.1), 4, SHAPE)
    data = [torch.randn(500, *SHAPE, generator=g) for _ in range(8)]
    au = active_units(model, data, g)
    assert au.counts == (2,) and au.dims == (4,) and au.total == 2
    torch.testing.assert_close(au.variances[0], torch.tensor([0.25, 0.02, 0.004, 0.0], dtype=torch.float64),
                               atol=0.01, rtol=0.1)
    # HVAE: an up-transition that ignores z_1 makes every unit of layer 2 inactive (posterior collapse)
    hv = HVAE(enc, dec, GaussianFixed(0.1), (4, 3), SHAPE, [FeedForward(4, (), 6)], [FeedForward(3, (), 8)])
    _set_linear(hv.up[0].net[-1], torch.zeros(6, 4), torch.cat([torch.zeros(3), torch.full((3,), math.log(1e-4))]))
    au2 = active_units(hv, data, g, num_samples=8)
    assert au2.counts == (2, 0) and au2.dims == (4, 3)
    _set_linear(hv.up[0].net[-1], torch.cat([torch.eye(3, 4), torch.zeros(3, 4)]),
                torch.cat([torch.zeros(3), torch.full((3,), math.log(1e-4))]))
    assert active_units(hv, data, g, num_samples=8).counts == (2, 2)  # z_2 copies z_1's first 3 units
