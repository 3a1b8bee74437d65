"""GaussianDiffusion: forward closed forms vs Monte Carlo, posterior vs numerical Bayes, reverse mean formulas."""

import math

import pytest
import torch

from elbolab.diffusion.config import VarianceKind
from elbolab.diffusion import GaussianDiffusion, NoiseSchedule, Prediction
from elbolab.math import gaussian_log_likelihood, normal_kl


@pytest.mark.parametrize("t", [1, 7, 50])
def test_iterated_forward_steps_match_closed_form(t, make_diffusion):
    """Iterating q(x_t | x_{t-1}) t times gives q(x_t | x_0) = N(sqrt(abar_t) x0, (1 - abar_t) I)."""
    d = make_diffusion(50)
    g = torch.Generator().manual_seed(t)
    n = 200_000
    x0 = torch.tensor([1.5, -0.7], dtype=torch.float64).expand(n, 2)
    x = x0
    for s in range(1, t + 1):
        x = d.q_step(x, s, torch.randn(n, 2, generator=g, dtype=torch.float64))
    q = d.q_mean_variance(x0[:1], t)
    se_mean = math.sqrt(q.variance[0, 0].item() / n)
    assert (x.mean(0) - q.mean[0]).abs().max() < 4.5 * se_mean
    se_var = q.variance[0, 0].item() * math.sqrt(2.0 / n)
    assert (x.var(0) - q.variance[0]).abs().max() < 4.5 * se_var
    # and q_sample draws from the same law
    y = d.q_sample(x0, t, torch.randn(n, 2, generator=g, dtype=torch.float64))
    assert (y.mean(0) - q.mean[0]).abs().max() < 4.5 * se_mean


@pytest.mark.parametrize("t", [2, 10, 40])
def test_posterior_matches_numerical_bayes_on_a_grid(t, make_diffusion):
    """mu_q and sigma_q2 equal the mean/variance of q(x_t|x_{t-1}) q(x_{t-1}|x_0) / Z computed by quadrature."""
    d = make_diffusion(50)
    abar, alpha = d.schedule.alpha_bars, d.schedule.alphas
    x0, x_t = torch.tensor([[0.6]], dtype=torch.float64), torch.tensor([[-0.3]], dtype=torch.float64)
    grid = torch.linspace(-6, 6, 400_001, dtype=torch.float64)
    prior = gaussian_log_likelihood(grid, abar[t - 1].sqrt() * x0[0, 0], torch.log(1 - abar[t - 1]))
    lik = gaussian_log_likelihood(x_t[0, 0], alpha[t].sqrt() * grid, torch.log(1 - alpha[t]))
    w = torch.softmax(prior + lik, 0)
    mean = (w * grid).sum()
    var = (w * (grid - mean) ** 2).sum()
    post = d.q_posterior(x0, x_t, t)
    assert post.mean.item() == pytest.approx(mean.item(), abs=1e-7)
    assert post.variance.item() == pytest.approx(var.item(), rel=1e-4)
    assert post.log_variance.exp().item() == pytest.approx(post.variance.item(), rel=1e-12)
    # the notes' formula, written out
    mu_q = (alpha[t].sqrt() * (1 - abar[t - 1]) * x_t + abar[t - 1].sqrt() * (1 - alpha[t]) * x0) / (1 - abar[t])
    assert post.mean.item() == pytest.approx(mu_q.item(), rel=1e-12)


def test_posterior_at_t1_is_a_point_mass_at_x0(make_diffusion):
    d = make_diffusion(10)
    x0, x1 = torch.randn(3, 2, dtype=torch.float64), torch.randn(3, 2, dtype=torch.float64)
    post = d.q_posterior(x0, x1, 1)
    torch.testing.assert_close(post.mean, x0)
    assert (post.variance == 0).all() and torch.isinf(post.log_variance).all()


def test_prior_kl_closed_form(make_diffusion):
    d = make_diffusion(10)
    x0 = torch.tensor([[0.5, -1.0]], dtype=torch.float64)
    ab = d.schedule.alpha_bars[-1]
    expected = sum(0.5 * (ab * v**2 + (1 - ab) - 1 - torch.log(1 - ab)) for v in (0.5, -1.0))
    assert d.prior_kl(x0).item() == pytest.approx(expected.item(), rel=1e-12)


@pytest.mark.parametrize("variance", list(VarianceKind))
def test_reverse_mean_is_algorithm_2_and_mu_q_of_x0_hat(variance, make_diffusion):
    d = make_diffusion(30, variance=variance)
    g = torch.Generator().manual_seed(0)
    x_t = torch.randn(5, 3, generator=g, dtype=torch.float64)
    eps = torch.randn(5, 3, generator=g, dtype=torch.float64)
    t = torch.tensor([1, 2, 9, 17, 30])
    step = d.p_mean_variance(eps, x_t, t)
    b = d.schedule.betas[t][:, None]
    ab = d.schedule.alpha_bars[t][:, None]
    algo2 = (x_t - b / (1 - ab).sqrt() * eps) / (1 - b).sqrt()
    torch.testing.assert_close(step.mean, algo2, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(step.mean, d.q_posterior(step.x0, x_t, t).mean, rtol=1e-10, atol=1e-10)
    sigma2 = (d.schedule.betas if variance is VarianceKind.BETA else d.schedule.posterior_variances)[t]
    if variance is VarianceKind.BETA_TILDE:
        sigma2 = sigma2.clone()
        sigma2[0] = d.schedule.posterior_variances[2]  # decoder variance at t = 1 (Ho et al.'s clipped log-variance)
    torch.testing.assert_close(step.variance[:, 0], sigma2)
    clipped = d.p_mean_variance(eps, x_t, t, clip_x0=True)
    assert clipped.x0.abs().max() <= 1.0
    torch.testing.assert_close(clipped.mean, d.q_posterior(clipped.x0, x_t, t).mean)
    torch.testing.assert_close(d.predict_eps(clipped.eps * 0 + eps, x_t, t), eps)


def test_kl_of_reverse_model_to_posterior_is_zero_with_the_true_noise_and_beta_tilde(make_diffusion):
    """With eps_hat = the true eps and sigma_t^2 = beta_tilde_t, p_theta(x_{t-1}|x_t) = q(x_{t-1}|x_t,x_0)."""
    d = make_diffusion(20, variance=VarianceKind.BETA_TILDE)
    g = torch.Generator().manual_seed(1)
    x0, eps = torch.randn(4, 2, generator=g, dtype=torch.float64), torch.randn(4, 2, generator=g, dtype=torch.float64)
    t = torch.tensor([2, 5, 11, 20])
    x_t = d.q_sample(x0, t, eps)
    step, post = d.p_mean_variance(eps, x_t, t), d.q_posterior(x0, x_t, t)
    kl = normal_kl(post.mean, post.log_variance, step.mean, step.log_variance)
    assert kl.abs().max() < 1e-10


def test_timestep_and_shape_validation(make_diffusion):
    d = make_diffusion(10)
    x = torch.zeros(2, 3)
    with pytest.raises(ValueError, match=r"t must lie in 1\.\.10"):
        d.q_posterior(x, x, torch.tensor([0, 3]))
    with pytest.raises(ValueError, match=r"t must lie in 1\.\.10"):
        d.p_mean_variance(x, x, torch.tensor([11, 3]))
    with pytest.raises(ValueError, match=r"shape \(2,\)"):
        d.q_sample(x, torch.tensor([1, 2, 3]), x)
    with pytest.raises(ValueError, match="integer tensor"):
        d.q_sample(x, torch.tensor([1.0, 2.0]), x)
    with pytest.raises(ValueError, match="noise has shape"):
        d.q_sample(x, 3, torch.zeros(2, 4))
    assert torch.equal(d.q_sample(x + 1, 0, x), x + 1)  # t = 0 is the data itself
    with pytest.raises(ValueError, match="prediction = 'noise' is not valid"):
        GaussianDiffusion(NoiseSchedule.linear(10), prediction="noise")
    with pytest.raises(ValueError, match="variance = 'learned' is not valid"):
        GaussianDiffusion(NoiseSchedule.linear(10), variance="learned")
    assert GaussianDiffusion(NoiseSchedule.linear(10), prediction="v").prediction is Prediction.V


def test_coefficients_follow_data_dtype_and_device(make_diffusion):
    d = make_diffusion(10)
    for dtype in (torch.float32, torch.float64):
        x = torch.zeros(2, 1, 4, 4, dtype=dtype)
        c = d.coef("alpha_bars", torch.tensor([1, 10]), x)
        assert c.dtype == dtype and c.shape == (2, 1, 1, 1)


def test_timesteps_range_is_checked_on_the_cpu_only_no_host_sync_elsewhere():
    """The value check of t reads t.min()/t.max(): on a GPU that is a host synchronisation in every inner-loop call,
    so it runs for CPU tensors only (the samplers and objectives make their times in range once, at entry). A meta
    tensor stands in for a device tensor: reading its values would raise, so passing shows no value was read."""
    d = GaussianDiffusion(NoiseSchedule.linear(10))
    with pytest.raises(ValueError, match="must lie in 1..10"):
        d.timesteps(torch.tensor([0, 11]), torch.zeros(2, 3))
    x = torch.zeros(2, 3, device="meta")
    out = d.timesteps(torch.full((2,), 99, device="meta"), x)
    assert out.device.type == "meta" and out.dtype == torch.long
    with pytest.raises(ValueError, match="shape"):  # type and shape are still checked everywhere
        d.timesteps(torch.full((3,), 1, device="meta"), x)
