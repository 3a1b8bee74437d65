"""The probability-flow ODE likelihood against the exact density of the exact model of Gaussian data, Hutchinson
within its standard error, the ODE as an invertible map x <-> x_T, batch independence, ODE NLL < -ELBO, bits/dim."""

import math

import pytest
import torch

from elbolab.data.toy import GaussianMixture
from elbolab.diffusion import GaussianDiffusion, GaussianMixtureOracle, GaussianOracle, NoiseSchedule
from elbolab.diffusion import likelihood

MU = torch.tensor([0.3, -0.2], dtype=torch.float64)
COV = torch.tensor([[0.5, 0.2], [0.2, 0.3]], dtype=torch.float64)


def _setup(T=1000):
    d = GaussianDiffusion(NoiseSchedule.linear(T))
    return d, GaussianOracle(MU, COV, d)


def _exact_flow(d, x, t_min):
    """The exact PF-ODE of N(MU, COV) data is affine: in VE coordinates y = x / alpha, s = sigma / alpha each
    eigen-coordinate of y - mu scales as sqrt(lambda_i + s^2). Returns (x_T, log p(x)) with the N(0, I) prior."""
    lam, U = torch.linalg.eigh(COV)
    s0, s1 = float(d.sigma_ve_at(float(t_min))), float(d.sigma_ve_at(float(d.T)))
    a0, a1 = 1 / math.sqrt(1 + s0**2), 1 / math.sqrt(1 + s1**2)
    r = torch.sqrt((lam + s1**2) / (lam + s0**2))
    x_T = a1 * (MU + ((x / a0 - MU) @ U) * r @ U.T)
    D = x.shape[1]
    log_det = D * math.log(a1 / a0) + float(torch.log(r).sum())
    log_p = -0.5 * (x_T**2).sum(1) - 0.5 * D * math.log(2 * math.pi) + log_det
    return x_T, log_p


def test_exact_trace_equals_the_exact_log_density():
    d, oracle = _setup()
    x = oracle.sample_data(64, torch.Generator().manual_seed(0)).double()
    res = likelihood.ode_log_likelihood(oracle, x, d, generator=torch.Generator(), exact_trace=True, rtol=1e-6,
                                        atol=1e-6, per_image=False)
    x_T, exact = _exact_flow(d, x, res.t_min)
    assert res.log_px.shape == (64,) and res.exact_trace and res.nfe > 0
    assert (res.log_px - exact).abs().max() < 1e-4
    torch.testing.assert_close(res.z, x_T, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(res.log_px, res.prior_log_p + res.delta_log_p)
    # and the closed-form marginal q_{t_min}(x) = N(a mu, a^2 Cov + s^2 I), up to the prior's mismatch with q_T
    ab = float(d.alpha_bar_at(res.t_min))
    q = torch.distributions.MultivariateNormal(math.sqrt(ab) * MU, ab * COV + (1 - ab) * torch.eye(2,
                                                                                                 dtype=torch.float64))
    assert (res.log_px - q.log_prob(x)).abs().max() < 2e-2  # the N(0, I) prior vs q_T: ~ sqrt(abar_T) |mu| |x_T|
    # a wrong model is visibly wrong: the data density at another covariance
    wrong = likelihood.ode_log_likelihood(GaussianOracle(MU, 2 * COV, d), x, d, generator=torch.Generator(),
                                          exact_trace=True, per_image=False)
    assert (wrong.log_px - exact).abs().mean() > 0.1


def test_hutchinson_is_unbiased_within_three_standard_errors():
    d, oracle = _setup()
    x = oracle.sample_data(200, torch.Generator().manual_seed(1)).double()
    hutch = likelihood.ode_log_likelihood(oracle, x, d, generator=torch.Generator().manual_seed(2), per_image=False)
    _, exact = _exact_flow(d, x, hutch.t_min)
    diff = hutch.log_px - exact
    se = float(diff.std() / math.sqrt(diff.numel()))
    assert se > 1e-3  # the estimator is noisy (the Jacobian is not diagonal), so the test has power
    assert abs(float(diff.mean())) < 3 * se
    again = likelihood.ode_log_likelihood(oracle, x, d, generator=torch.Generator().manual_seed(2), per_image=False)
    assert torch.equal(again.log_px, hutch.log_px)


def test_the_ode_maps_data_to_the_prior_and_back():
    d, oracle = _setup()
    x = oracle.sample_data(500, torch.Generator().manual_seed(3)).double()
    z = likelihood.ode_encode(oracle, x, d)
    x_T, _ = _exact_flow(d, x, likelihood.DEFAULT_T_MIN)
    torch.testing.assert_close(z, x_T, rtol=1e-4, atol=1e-4)
    n = x.shape[0]
    assert (z.mean(0).abs() < 4 / math.sqrt(n)).all()  # z ~ q(x_T) ~ N(0, I)
    assert (torch.cov(z.T) - torch.eye(2, dtype=torch.float64)).abs().max() < 4 * math.sqrt(2 / n)
    back = likelihood.ode_decode(oracle, z, d)
    assert (back - x).abs().max() < 1e-4


def test_per_image_results_do_not_depend_on_the_batch():
    mix = GaussianMixture.isotropic([0.5, 0.5], [[-1.0, 0.0], [1.0, 0.5]], 0.3)
    d = GaussianDiffusion(NoiseSchedule.linear(200, 5e-4, 0.1))
    oracle = GaussianMixtureOracle(mix, d)
    x = mix.sample(6, torch.Generator().manual_seed(0)).double()
    x[5] = torch.tensor([4.0, -3.0], dtype=torch.float64)  # an outlier changes the batch's step sizes
    rtol = 1e-5
    # the default solves image by image: the result is exactly the single-image solve
    exact = lambda xs, **kw: likelihood.ode_log_likelihood(oracle, xs, d, generator=torch.Generator(),  # noqa
                                                           exact_trace=True, rtol=rtol, atol=rtol, **kw).log_px
    per = exact(x)
    for i in range(6):
        assert float(per[i]) == float(exact(x[i:i + 1])[0])
    # a joint solve moves with the batch, but by little (measured 12-18 x rtol with this outlier)
    assert (exact(x, per_image=False) - per).abs().max() <= 30 * rtol * per.abs().max()


def test_ode_nll_is_below_the_negative_elbo():
    """For the exact model of Gaussian data the ODE likelihood is exact, the ELBO (Gaussian decoder) is a bound."""
    k = 10.0
    d = GaussianDiffusion(NoiseSchedule.linear(100, 1e-4 * k, 0.02 * k))
    oracle = GaussianOracle(MU, COV, d)
    x = oracle.sample_data(200, torch.Generator().manual_seed(4)).double()
    nll = -likelihood.ode_log_likelihood(oracle, x, d, generator=torch.Generator(), exact_trace=True,
                                         per_image=False).log_px
    terms = d.elbo_terms(oracle, x, generator=torch.Generator().manual_seed(5), decoder="gaussian")
    neg_elbo = terms.per_image.total * 2 * math.log(2.0)  # bits/dim -> nats (D = 2)
    gap = neg_elbo - nll
    se = float(gap.std() / math.sqrt(gap.numel()))
    assert float(gap.mean()) > 3 * se
    exact_nll = -oracle.log_prob(x).double()
    assert abs(float((nll - exact_nll).mean())) < 0.02 < float(gap.mean())


def test_bits_per_dim_with_uniform_dequantisation():
    d = GaussianDiffusion(NoiseSchedule.linear(1000))
    mu, cov = torch.zeros(4, dtype=torch.float64), 0.2 * torch.eye(4, dtype=torch.float64) + 0.05
    oracle = GaussianOracle(mu, cov, d)
    k = torch.randint(0, 256, (5, 1, 2, 2), generator=torch.Generator().manual_seed(0)).double()
    x = k / 127.5 - 1
    res = likelihood.bits_per_dim(oracle, x, d, generator=torch.Generator().manual_seed(1), n_dequant=2,
                                  exact_trace=True, per_image=False)
    assert res.per_image.shape == (5,) and res.n_dequant == 2 and res.nfe > 0
    g = torch.Generator().manual_seed(1)  # the same dequantisation draws (the exact trace draws nothing else)
    expected = torch.zeros(5, dtype=torch.float64)
    for _ in range(2):
        u = torch.rand(x.shape, generator=g, dtype=torch.float64)
        x_deq = 2 * (k + u) / 256 - 1
        lp = likelihood.ode_log_likelihood(oracle, x_deq, d, generator=torch.Generator(), exact_trace=True,
                                           per_image=False).log_px
        expected += (-lp - 4 * math.log(2 / 256)) / (4 * math.log(2)) / 2
    torch.testing.assert_close(res.per_image, expected)
    assert res.mean == pytest.approx(float(expected.mean()))
    with pytest.raises(ValueError, match="n_dequant"):
        likelihood.bits_per_dim(oracle, x, d, generator=torch.Generator(), n_dequant=0)


def test_likelihood_validation():
    d, oracle = _setup(50)
    x = torch.zeros(2, 2, dtype=torch.float64)
    with pytest.raises(TypeError, match="Generator"):
        likelihood.ode_log_likelihood(oracle, x, d, generator=None)
    with pytest.raises(ValueError, match="t_min"):
        likelihood.ode_log_likelihood(oracle, x, d, generator=torch.Generator(), t_min=0.0)
    with pytest.raises(ValueError, match="rtol"):
        likelihood.ode_log_likelihood(oracle, x, d, generator=torch.Generator(), rtol=-1.0)
