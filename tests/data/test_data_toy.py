"""Toy distributions: exact densities integrate to 1, exact scores match autograd, diffused mixtures are exact,
and inverse-CDF samples follow the CDF (Kolmogorov-Smirnov)."""

from __future__ import annotations

import math

import pytest
import torch

from elbolab.data import (
    Checkerboard,
    GaussianMixture,
    Mixture1D,
    PointDataset,
    SwissRoll,
    ToyName,
    TwoMoons,
    load_toy,
    load_toy_dataset,
    make_toy,
)


def _anisotropic() -> GaussianMixture:
    cov = torch.tensor([[[0.3, 0.1], [0.1, 0.2]], [[0.05, -0.02], [-0.02, 0.4]], [[0.2, 0.0], [0.0, 0.2]]])
    return GaussianMixture([0.5, 0.3, 0.2], [[-1.0, 0.5], [1.5, -0.5], [0.0, 1.5]], cov)


def _grid(lo: float, hi: float, n: int) -> tuple[torch.Tensor, float]:
    t = torch.linspace(lo, hi, n, dtype=torch.float64)
    xx, yy = torch.meshgrid(t, t, indexing="ij")
    return torch.stack([xx.flatten(), yy.flatten()], 1), float(t[1] - t[0]) ** 2


@pytest.mark.parametrize("gm", [GaussianMixture.ring(), _anisotropic(), _anisotropic().noised(0.3)],
                         ids=["ring", "anisotropic", "noised"])
def test_density_integrates_to_one(gm):
    x, cell = _grid(-5.0, 5.0, 401)
    total = float(gm.log_prob(x).exp().sum()) * cell
    assert abs(total - 1.0) < 1e-4


def test_score_equals_autograd_gradient():
    for gm in (_anisotropic(), GaussianMixture.ring(k=5, std=0.3)):
        x = torch.randn(64, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64).mul(2)
        x.requires_grad_(True)
        (grad,) = torch.autograd.grad(gm.log_prob(x).sum(), x)
        torch.testing.assert_close(gm.score(x.detach()), grad, rtol=1e-10, atol=1e-12)
    # torch.func agrees too, and in higher dimension
    gm5 = GaussianMixture.isotropic([0.2, 0.8], torch.randn(2, 5, generator=torch.Generator().manual_seed(1)), [0.5, 1.2])
    xs = torch.randn(7, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    grads = torch.func.vmap(torch.func.grad(lambda v: gm5.log_prob(v[None])[0]))(xs)
    torch.testing.assert_close(gm5.score(xs), grads)


def test_log_prob_matches_torch_distributions():
    gm = _anisotropic()
    ref = torch.distributions.MixtureSameFamily(torch.distributions.Categorical(gm.weights),
                                                torch.distributions.MultivariateNormal(gm.means, gm.covariances))
    x = torch.randn(100, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    torch.testing.assert_close(gm.log_prob(x), ref.log_prob(x))


def test_samples_match_moments():
    gm = _anisotropic()
    x, k = gm.sample_with_labels(200_000, torch.Generator().manual_seed(0), dtype=torch.float64)
    assert x.shape == (200_000, 2) and k.shape == (200_000,)
    torch.testing.assert_close(x.mean(0), gm.mean(), atol=0.01, rtol=0)
    torch.testing.assert_close(torch.cov(x.T), gm.covariance(), atol=0.01, rtol=0)
    freq = torch.bincount(k, minlength=3).double() / len(k)
    torch.testing.assert_close(freq, gm.weights, atol=0.005, rtol=0)
    assert torch.equal(gm.sample(10, torch.Generator().manual_seed(5)), gm.sample(10, torch.Generator().manual_seed(5)))
    with pytest.raises(ValueError, match="torch.Generator"):
        gm.sample(3, None)


def test_noised_mixture_is_the_law_of_x_t():
    gm, ab = _anisotropic(), 0.4
    g = torch.Generator().manual_seed(1)
    x0 = gm.sample(200_000, g, dtype=torch.float64)
    xt = math.sqrt(ab) * x0 + math.sqrt(1 - ab) * torch.randn(x0.shape, generator=g, dtype=torch.float64)
    noisy = gm.noised(ab)
    torch.testing.assert_close(xt.mean(0), noisy.mean(), atol=0.01, rtol=0)
    torch.testing.assert_close(torch.cov(xt.T), noisy.covariance(), atol=0.01, rtol=0)
    # the average log-density under the true noisy law beats the clean law's (a real distinction)
    assert float(noisy.log_prob(xt).mean()) > float(gm.log_prob(xt).mean()) + 0.1
    # per-example alpha_bar equals the scalar version; noisy_score equals the noised mixture's score
    torch.testing.assert_close(gm.noisy_score(xt[:50], ab), noisy.score(xt[:50]))
    abs_ = torch.full((50,), ab, dtype=torch.float64)
    torch.testing.assert_close(gm.noisy_score(xt[:50], abs_), noisy.score(xt[:50]))
    mixed = torch.tensor([0.1, 0.9], dtype=torch.float64)
    torch.testing.assert_close(gm.noisy_score(xt[:2], mixed)[1], gm.noised(0.9).score(xt[1:2])[0])


def test_denoiser_is_the_exact_posterior_mean():
    # one Gaussian: E[x0 | x_t] = mu + sqrt(ab) S (ab S + (1 - ab) I)^{-1} (x_t - sqrt(ab) mu)
    mu = torch.tensor([0.5, -1.0], dtype=torch.float64)
    S = torch.tensor([[0.6, 0.2], [0.2, 0.3]], dtype=torch.float64)
    single, ab = GaussianMixture([1.0], mu[None], S[None]), 0.3
    xt = torch.randn(20, 2, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    C = ab * S + (1 - ab) * torch.eye(2, dtype=torch.float64)
    expected = mu + math.sqrt(ab) * (S @ torch.linalg.solve(C, (xt - math.sqrt(ab) * mu).T)).T
    torch.testing.assert_close(single.denoise(xt, ab), expected)
    # mixture: the residual x0 - E[x0|x_t] is orthogonal to functions of x_t (Monte Carlo)
    gm, g = _anisotropic(), torch.Generator().manual_seed(2)
    x0 = gm.sample(200_000, g, dtype=torch.float64)
    eps = torch.randn(x0.shape, generator=g, dtype=torch.float64)
    xt = math.sqrt(ab) * x0 + math.sqrt(1 - ab) * eps
    r = x0 - gm.denoise(xt, ab)
    assert float(r.mean(0).abs().max()) < 0.01 and float((r[:, :, None] * xt[:, None]).mean(0).abs().max()) < 0.01
    # a wrong denoiser (the clean score) fails the same check
    bad = x0 - (xt + (1 - ab) * gm.score(xt)) / math.sqrt(ab)
    assert float((bad[:, :, None] * xt[:, None]).mean(0).abs().max()) > 0.05
    # the optimal eps prediction is consistent with the denoiser
    torch.testing.assert_close(gm.optimal_eps(xt[:10], ab),
                               (xt[:10] - math.sqrt(ab) * gm.denoise(xt[:10], ab)) / math.sqrt(1 - ab))


def test_checkerboard_exact_density():
    cb = Checkerboard()
    x, cell = _grid(-2.5, 2.5, 501)
    assert abs(float(cb.log_prob(x).exp().sum()) * cell - 1.0) < 0.02
    s = cb.sample(20_000, torch.Generator().manual_seed(0), dtype=torch.float64)
    assert torch.all(torch.isfinite(cb.log_prob(s)))  # every sample on a black cell
    assert torch.equal(cb.log_prob(torch.tensor([[-1.5, -1.5], [-0.5, -1.5], [3.0, 0.0]])),
                       torch.tensor([-math.log(8), -math.inf, -math.inf]))
    cells = torch.floor(s + 2).long()
    counts = torch.bincount(cells[:, 0] * 4 + cells[:, 1], minlength=16).double()
    black = counts[counts > 0]
    assert len(black) == 8 and float((black / 20_000 - 1 / 8).abs().max()) < 0.01


def _ks(samples: torch.Tensor, cdf) -> float:
    x = samples.sort().values.double()
    n = len(x)
    f = cdf(x)
    i = torch.arange(1, n + 1, dtype=torch.float64)
    return float(torch.maximum(i / n - f, f - (i - 1) / n).max())


def test_inverse_cdf_sampling_matches_cdf():
    m = make_toy(ToyName.MIXTURE_1D)
    assert isinstance(m, Mixture1D)
    n = 20_000
    x = m.sample_inverse_cdf(n, torch.Generator().manual_seed(0), dtype=torch.float64)
    crit = 1.95 / math.sqrt(n)  # KS critical value at the 0.1 % level
    assert _ks(x, m.cdf) < crit
    shifted = Mixture1D(m.weights, m.means + 0.1, m.stds)
    assert _ks(x, shifted.cdf) > crit  # the test can tell a slightly wrong distribution apart
    ancestral = m.sample(n, torch.Generator().manual_seed(1), dtype=torch.float64)
    assert _ks(ancestral, m.cdf) < crit


def test_cdf_icdf_pdf_are_consistent():
    m = Mixture1D([0.2, 0.5, 0.3], [-3.0, 0.0, 4.0], [0.3, 1.0, 0.1])
    u = torch.tensor([1e-12, 1e-6, 0.01, 0.2, 0.2 + 1e-9, 0.5, 0.7, 0.99, 1 - 1e-9], dtype=torch.float64)
    torch.testing.assert_close(m.cdf(m.icdf(u)), u, rtol=1e-9, atol=1e-13)
    t = torch.linspace(-8, 8, 160_001, dtype=torch.float64)
    p = m.prob(t)
    trapezoid = torch.cumulative_trapezoid(p, t)
    torch.testing.assert_close(m.cdf(t[1:]) - m.cdf(t[:1]), trapezoid, atol=1e-7, rtol=0)
    xs = t[::4000].clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(m.log_prob(xs).sum(), xs)
    torch.testing.assert_close(m.score(xs.detach()), grad)
    noisy = m.noised(0.5)
    torch.testing.assert_close(noisy.stds ** 2, 0.5 * m.stds ** 2 + 0.5)


def test_samplers_and_load_toy():
    g = lambda s: torch.Generator().manual_seed(s)  # noqa: E731
    for name in ToyName:
        x = load_toy(name, 500, g(0))
        d = 1 if name is ToyName.MIXTURE_1D else 2
        assert x.shape == (500, d) and x.dtype == torch.float32 and torch.isfinite(x).all()
        assert torch.equal(x, load_toy(name.value, 500, g(0))) and not torch.equal(x, load_toy(name, 500, g(1)))
    moons = TwoMoons(noise=0.0)
    x, y = moons.sample_with_labels(1000, g(0), dtype=torch.float64)
    centre = torch.where(y[:, None] == 0, torch.tensor([0.0, 0.0]), torch.tensor([1.0, 0.5])) - torch.tensor([0.5, 0.25])
    torch.testing.assert_close((x - centre.double()).norm(dim=1), torch.ones(1000, dtype=torch.float64))
    roll = SwissRoll(noise=0.0).sample(1000, g(0), dtype=torch.float64)
    radius = roll.norm(dim=1) * 5
    assert float(radius.min()) >= 1.5 * math.pi - 1e-9 and float(radius.max()) <= 4.5 * math.pi + 1e-9
    ds = load_toy_dataset("two-moons", 100, g(0))
    assert isinstance(ds, PointDataset) and ds.num_classes == 2 and sorted(set(ds.labels.tolist())) == [0, 1]
    with pytest.raises(ValueError, match="unknown toy distribution 'moons'; choices: gaussian-mixture"):
        load_toy("moons", 10, g(0))
    with pytest.raises(ValueError, match="not positive definite"):
        GaussianMixture([1.0], [[0.0, 0.0]], [[[1.0, 0.0], [0.0, -1.0]]])
