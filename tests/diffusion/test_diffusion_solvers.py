"""Continuous time and the fast solvers: alpha_bar_at (log-SNR PCHIP), the time grids, one contract over every
sampler, euler = DDIM(eta = 0), exact oracles, convergence orders against the closed-form probability-flow ODE,
classifier-free guidance through every sampler."""

import math

import pytest
import torch

from elbolab.data.toy import make_toy
from elbolab.diffusion import GaussianDiffusion, GaussianMixtureOracle, GaussianOracle, NoiseSchedule, samplers
from elbolab.diffusion.guidance import ClassifierFreeGuidance
from elbolab.diffusion.loop import Denoiser
from elbolab.math import energy_distance

NEW = [samplers.euler, samplers.heun, samplers.dpmpp_2m, samplers.dpmpp_2m_sde]
ALL = [samplers.ancestral, samplers.ddim, *NEW]
MU = torch.tensor([0.3, -0.2], dtype=torch.float64)
COV = torch.tensor([[0.5, 0.2], [0.2, 0.3]], dtype=torch.float64)


def _nfe(sampler, n):
    return 2 * n - 1 if sampler is samplers.heun else n


# ------------------------------------------------------------------------------------------------
# continuous time
# ------------------------------------------------------------------------------------------------
SCHEDULES = {
    "linear": lambda: NoiseSchedule.linear(1000),
    "cosine": lambda: NoiseSchedule.cosine(200),
    "custom": lambda: NoiseSchedule.from_betas(
        torch.rand(60, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 0.2 + 0.01),
}


@pytest.mark.parametrize("name", list(SCHEDULES))
def test_alpha_bar_at_interpolates_log_snr_monotonically_and_smoothly(name):
    s = SCHEDULES[name]()
    d = GaussianDiffusion(s)
    T = s.T
    grid = torch.arange(1, T + 1, dtype=torch.float64)
    assert torch.equal(d.alpha_bar_at(grid), s.alpha_bars[1:])  # exact at integer t
    assert d.alpha_bar_at(5.0).dtype == torch.float64 and float(d.alpha_bar_at(5.0)) == float(s.alpha_bars[5])
    t = torch.linspace(1e-3, T, 4001, dtype=torch.float64)
    lam = d.log_snr_at(t)
    assert (lam.diff() < 0).all()  # strictly decreasing (alpha_bar strictly decreasing)
    assert (d.alpha_bar_at(t).diff() < 0).all() and float(d.log_snr_at(1e-12)) > float(s.log_snr[1]) + 5
    # C^1: one-sided difference quotients at the interior grid points agree to O(h)
    k = torch.arange(2, T, dtype=torch.float64)
    h = 1e-6
    left = (d.log_snr_at(k) - d.log_snr_at(k - h)) / h
    right = (d.log_snr_at(k + h) - d.log_snr_at(k)) / h
    scale = (s.log_snr[2:T] - s.log_snr[1:T - 1]).abs()
    assert ((left - right).abs() / scale).max() < 1e-3
    # ... while a piecewise-linear interpolant would jump by the change of secant (not C^1)
    jump = ((s.log_snr[3:T + 1] - s.log_snr[2:T]) - (s.log_snr[2:T] - s.log_snr[1:T - 1])).abs() / scale
    assert float(jump.max()) > 1e-3
    # the inverse
    torch.testing.assert_close(s.t_from_log_snr(lam), t, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(d.t_from_sigma_ve(d.sigma_ve_at(t)), t, rtol=1e-9, atol=1e-9)
    with pytest.raises(ValueError, match=r"continuous time t must lie in \(0, "):
        d.alpha_bar_at(T + 0.5)
    with pytest.raises(ValueError, match="continuous time"):
        d.alpha_bar_at(0.0)


def test_alpha_bar_at_between_grid_points_is_within_the_neighbours():
    s = NoiseSchedule.linear(1000)
    t = torch.tensor([1.5, 10.25, 999.9], dtype=torch.float64)
    lo, hi = s.alpha_bars[t.ceil().long()], s.alpha_bars[t.floor().long()]
    ab = s.alpha_bar_at(t)
    assert ((ab > lo) & (ab < hi)).all()
    torch.testing.assert_close(1.0 - ab, s.one_minus_alpha_bar_at(t), rtol=1e-12, atol=0)


def test_time_grids(make_diffusion):
    d = GaussianDiffusion(NoiseSchedule.linear(1000))
    logsnr = samplers.time_grid(d, 12, "logsnr")
    assert logsnr[0] == 1000.0 and logsnr[-2] == 1.0 and logsnr[-1] == 0 and len(logsnr) == 13
    lam = d.log_snr_at(torch.tensor(logsnr[:-1], dtype=torch.float64))
    torch.testing.assert_close(lam.diff(), torch.full((11,), float(lam.diff().mean()), dtype=torch.float64))
    karras = samplers.time_grid(d, 9, samplers.TimeSpacing.KARRAS, t_min=2.0)
    assert karras[-2] == 2.0 and float(d.sigma_ve_at(karras[0])) == pytest.approx(80.0)  # sigma_VE(T) = 157
    r = d.sigma_ve_at(torch.tensor(karras[:-1], dtype=torch.float64)) ** (1 / 7)
    torch.testing.assert_close(r.diff(), torch.full((8,), float(r.diff().mean()), dtype=torch.float64))
    assert samplers.time_grid(d, 4, "trailing") == [1000, 750, 500, 250, 0]
    angle = samplers.time_grid(d, 10, "angle", t_min=2.0)
    assert angle[0] == 1000.0 and angle[-2] == 2.0 and angle[-1] == 0 and len(angle) == 11
    phi = torch.atan(d.sigma_ve_at(torch.tensor(angle[:-1], dtype=torch.float64)))
    torch.testing.assert_close(phi.diff(), torch.full((9,), float(phi.diff().mean()), dtype=torch.float64))
    # on the cosine schedule the angle grid is (up to the offset s = 0.008) the uniform trailing grid; on the
    # linear schedule it is not
    for schedule, lo, hi in ((NoiseSchedule.cosine(1000), 0.0, 0.5), (NoiseSchedule.linear(1000), 50.0, 1e3)):
        dd = GaussianDiffusion(schedule)
        ang = torch.tensor(samplers.time_grid(dd, 25, "angle", t_min=40.0)[:-1], dtype=torch.float64)
        trail = torch.tensor(samplers.time_grid(dd, 25, "trailing")[:-1], dtype=torch.float64)
        assert lo <= float((ang - trail).abs().max()) < hi
    assert samplers.time_grid(d, None, "leading", timesteps=[900, 31, 2]) == [900, 31, 2, 0]
    assert samplers.time_grid(d, None, "leading", timesteps=torch.tensor([5.5, 2.0])) == [5.5, 2.0, 0]
    for bad, match in [([5, 5], "strictly decreasing"), ([1001, 3], r"\(0, T\]"), ([3, 0], r"\(0, T\]"),
                       ([], "empty")]:
        with pytest.raises(ValueError, match=match):
            samplers.time_grid(d, None, "leading", timesteps=bad)
    with pytest.raises(ValueError, match="spacing = 'even' is not valid"):
        samplers.time_grid(d, 5, "even")
    with pytest.raises(ValueError, match="t_min"):
        samplers.time_grid(d, 5, "karras", t_min=0.0)
    from elbolab.diffusion.config import Spacing

    assert samplers.parse_spacing(Spacing.TRAILING) is samplers.TimeSpacing.TRAILING  # the config enum still works


def test_score_samplers_take_explicit_timesteps(make_diffusion):
    from elbolab.score import langevin, predictor_corrector

    d = make_diffusion(30)
    for f, nfe in ((langevin, 3 + 1), (predictor_corrector, 3 + 2)):
        model = Recorder()
        res = f(model, (2, 2), d, timesteps=[25, 12.5, 3], generator=torch.Generator().manual_seed(0))
        assert res.timesteps.tolist() == [25, 12.5, 3] and res.nfe == nfe == len(model.calls)
        assert float(model.calls[0][0][0]) == 25 and any(float(c[0][0]) == 12.5 for c in model.calls)


# ------------------------------------------------------------------------------------------------
# one contract for every sampler
# ------------------------------------------------------------------------------------------------
class Recorder(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.calls = []

    def forward(self, x, t, y=None):
        self.calls.append((t.clone(), None if y is None else y.clone()))
        tt = t.to(x.dtype).reshape(-1, *([1] * (x.ndim - 1)))
        return 0.5 * torch.tanh(x) + 0.001 * tt


@pytest.mark.parametrize("sampler", NEW)
@pytest.mark.parametrize("spacing", ["karras", "logsnr", "angle", "trailing"])
def test_new_sampler_contract(sampler, spacing, make_diffusion):
    d = make_diffusion(50)
    model, seen = Recorder(), []
    shape, y = (3, 1, 2, 2), torch.tensor([0, 1, 2])
    res = sampler(model, shape, d, steps=6, spacing=spacing, generator=torch.Generator().manual_seed(0), cond=y,
                  callback=seen.append, return_trajectory=True)
    assert res.sample.shape == shape and torch.isfinite(res.sample).all()
    assert res.nfe == _nfe(sampler, 6) == len(model.calls)
    assert res.timesteps.numel() == 6 and res.xs.shape == (7, *shape) and res.x0s.shape == (6, *shape)
    t_0 = 50 if spacing != "karras" else samplers.time_grid(d, 6, spacing)[0]  # karras: sigma_VE(t_0) <= 80
    assert float(res.timesteps[0]) == t_0 and (res.timesteps.diff() < 0).all()
    assert [s.index for s in seen] == list(range(6)) and seen[-1].t_prev == 0
    torch.testing.assert_close(res.xs[-1], res.sample)
    assert all(c[1].tolist() == [0, 1, 2] for c in model.calls)
    if spacing != "trailing":  # fractional times reach the network unrounded
        ts = torch.stack([c[0][0] for c in model.calls]).double()
        assert ts.dtype == torch.float64 and ((ts - ts.round()).abs() > 1e-3).any()
    again = sampler(Recorder(), shape, d, steps=6, spacing=spacing, generator=torch.Generator().manual_seed(0),
                    cond=y)
    assert torch.equal(again.sample, res.sample)

    class Guided(Recorder):
        nfe_per_call = 2

    assert sampler(Guided(), shape, d, steps=4, spacing=spacing, generator=torch.Generator(), cond=y).nfe == \
        2 * _nfe(sampler, 4)


@pytest.mark.parametrize("sampler", NEW)
def test_new_sampler_validation(sampler, make_diffusion):
    d, g = make_diffusion(10), torch.Generator()
    with pytest.raises(ValueError, match="spacing = 'even' is not valid"):
        sampler(Recorder(), (2, 3), d, steps=5, spacing="even", generator=g)
    with pytest.raises(ValueError, match="steps = 0"):
        sampler(Recorder(), (2, 3), d, steps=0, generator=g)
    with pytest.raises(ValueError, match="cond must have shape"):
        sampler(Recorder(), (2, 3), d, steps=3, generator=g, cond=torch.zeros(3, dtype=torch.long))
    with pytest.raises(TypeError, match="generator"):
        sampler(Recorder(), (2, 3), d, steps=3, generator=None)


def test_stochastic_samplers_use_their_noise(make_diffusion):
    d = make_diffusion(50)
    run = lambda f, seed, **kw: f(Recorder(), (4, 2), d, steps=8, generator=torch.Generator().manual_seed(seed),  # noqa
                                  x_T=torch.ones(4, 2), **kw).sample
    assert not torch.equal(run(samplers.dpmpp_2m_sde, 0), run(samplers.dpmpp_2m_sde, 1))
    assert not torch.equal(run(samplers.heun, 0, S_churn=10.0), run(samplers.heun, 1, S_churn=10.0))
    assert torch.equal(run(samplers.heun, 0), run(samplers.heun, 1))  # S_churn = 0: deterministic
    assert torch.equal(run(samplers.dpmpp_2m, 0), run(samplers.dpmpp_2m, 1))
    torch.testing.assert_close(run(samplers.dpmpp_2m_sde, 0, eta=0.0), run(samplers.dpmpp_2m, 0))
    with pytest.raises(ValueError, match="S_churn"):
        samplers.heun(Recorder(), (2, 2), d, steps=3, S_churn=-1.0, generator=torch.Generator())


@pytest.mark.parametrize("spacing", ["leading", "karras"])
def test_euler_in_ve_coordinates_is_ddim_with_eta_zero(spacing, make_diffusion):
    d = make_diffusion(100)
    x_T = torch.randn(6, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    times = samplers.time_grid(d, 15, spacing)[:-1]
    a = samplers.euler(Recorder(), (6, 2), d, timesteps=times, x_T=x_T, generator=torch.Generator())
    b = samplers.ddim(Recorder(), (6, 2), d, timesteps=times, x_T=x_T, generator=torch.Generator())
    assert a.nfe == b.nfe == 15
    torch.testing.assert_close(a.sample, b.sample, rtol=1e-10, atol=1e-10)
    # ... and not the ancestral sampler on the same times
    c = samplers.ancestral(Recorder(), (6, 2), d, timesteps=times, x_T=x_T, generator=torch.Generator())
    assert (c.sample - a.sample).abs().max() > 1e-3


# ------------------------------------------------------------------------------------------------
# exact oracles: every sampler reproduces the data at modest NFE
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("sampler,steps,kw", [
    (samplers.ancestral, 200, {"spacing": "trailing"}), (samplers.ddim, 100, {"spacing": "trailing"}),
    (samplers.euler, 100, {}), (samplers.heun, 25, {}), (samplers.heun, 50, {"S_churn": 10.0, "S_tmax": 50.0}),
    (samplers.dpmpp_2m, 20, {}), (samplers.dpmpp_2m_sde, 50, {})])
def test_gaussian_oracle_every_sampler_reproduces_the_data(sampler, steps, kw):
    """Mean within 4 standard errors, covariance within 4 standard errors of a sample covariance. The steps
    are what each needs on this problem (DDPM's linear schedule, T = 1000): at 20 steps ddim/euler are 0.11-0.14
    off in a covariance entry, dpmpp_2m 0.017."""
    d = GaussianDiffusion(NoiseSchedule.linear(1000))
    oracle = GaussianOracle(MU, COV, d)
    n = 4000
    x = sampler(oracle, (n, 2), d, steps=steps, generator=torch.Generator().manual_seed(0), **kw).sample.double()
    se = (torch.diag(COV) / n).sqrt()
    assert ((x.mean(0) - MU).abs() < 4 * se).all()
    assert (torch.cov(x.T) - COV).abs().max() < 4 * math.sqrt(2.0 / n) * float(COV.max())


@pytest.mark.slow
@pytest.mark.parametrize("sampler,steps", [(samplers.euler, 25), (samplers.heun, 13), (samplers.dpmpp_2m, 20),
                                           (samplers.dpmpp_2m_sde, 25)])
def test_mixture_oracle_every_new_sampler_samples_the_modes(sampler, steps, make_diffusion, gaussian_baseline):
    mix = make_toy("gaussian-mixture")  # 8 Gaussians on a ring of radius 2, std 0.2
    d = make_diffusion(100)
    n = 2000
    x = sampler(GaussianMixtureOracle(mix, d), (n, 2), d, steps=steps,
                generator=torch.Generator().manual_seed(0)).sample
    data = mix.sample(n, torch.Generator().manual_seed(1))
    assert float(energy_distance(x, data)) < 0.01 < 0.05 < gaussian_baseline(data)
    w = torch.bincount(torch.cdist(x.double(), mix.means).argmin(1), minlength=8).double() / n
    assert (w - 1 / 8).abs().max() < 0.03
    dist = torch.cdist(x.double(), mix.means).min(1).values
    assert float((dist < 3 * 0.2).double().mean()) > 0.95


def test_karras_grid_caps_sigma_max_so_few_heun_steps_do_not_blow_up(gaussian_baseline):
    """The cosine schedule's sigma_VE(T) is ~2e4: rho = 7 over [0.02, 2e4] with 5 steps put the last jump at
    8.6 -> 0.02, and Heun's correction (d' = (y' - D(y'))/s_next) blew it up (energy distance 3.7 and |x| up to
    28 on the ring; 2.1 at 10 steps). With EDM's sigma_max = 80 the grid starts where sigma_VE = 80."""
    mix = make_toy("gaussian-mixture")
    d = GaussianDiffusion(NoiseSchedule.cosine(1000))
    grid = samplers.time_grid(d, 5, "karras")
    assert grid[0] < 1000 and float(d.sigma_ve_at(grid[0])) == pytest.approx(samplers.KARRAS_SIGMA_MAX, rel=1e-6)
    assert samplers.time_grid(d, 5, "karras", sigma_max=None)[0] == 1000.0
    with pytest.raises(ValueError, match="sigma_max = 0.001 must be a number >"):
        samplers.time_grid(d, 5, "karras", sigma_max=0.001)
    data = mix.sample(2000, torch.Generator().manual_seed(1))
    def energy(steps, sigma_max=samplers.KARRAS_SIGMA_MAX):
        times = samplers.time_grid(d, steps, "karras", sigma_max=sigma_max)[:-1]
        x = samplers.heun(GaussianMixtureOracle(mix, d), (2000, 2), d, timesteps=times,
                          generator=torch.Generator().manual_seed(0)).sample
        return float(energy_distance(x, data)), float(x.abs().max())

    (e10, _), (e10_uncapped, _) = energy(10), energy(10, None)
    assert e10 < 0.05 < 1.0 < e10_uncapped  # measured 0.012 vs 2.1
    assert e10 < 0.5 * gaussian_baseline(data)
    # 5 steps (9 NFE) stay weak on the ring (the last Heun step 0.47 -> 0.02 crosses the modes' scale) but no longer
    # blow up: measured energy 1.09 vs 3.7, |x| <= 4.9 vs 28
    (e5, m5), (e5_uncapped, m5_uncapped) = energy(5), energy(5, None)
    assert e5 < 0.5 * e5_uncapped and m5 < 8.0 < 20.0 < m5_uncapped


# ------------------------------------------------------------------------------------------------
# convergence order against the closed-form probability-flow ODE of Gaussian data
# ------------------------------------------------------------------------------------------------
def _exact_pf_ode(d, oracle, x_T, t_min, t_0):
    """x0_hat(x_{t_min}) with x_{t_min} the exact PF-ODE solution from x_T at t = t_0: in VE coordinates
    y = x / alpha, s = sigma / alpha, dy/ds = s (Cov + s^2 I)^{-1} (y - mu), so in Cov's eigenbasis each
    coordinate of y - mu scales as sqrt(lambda_i + s^2)."""
    lam, U = torch.linalg.eigh(COV)
    s0, s1 = float(d.sigma_ve_at(float(t_0))), float(d.sigma_ve_at(t_min))
    a0, a1 = 1 / math.sqrt(1 + s0**2), 1 / math.sqrt(1 + s1**2)
    scale = torch.sqrt((lam + s1**2) / (lam + s0**2))
    y1 = MU + ((x_T / a0 - MU) @ U) * scale @ U.T
    den = Denoiser(oracle, d)
    return den(a1 * y1, float(t_min)).x0


@pytest.mark.parametrize("sampler,order,spacing", [(samplers.euler, 1, "logsnr"), (samplers.heun, 2, "karras"),
                                                   (samplers.heun, 2, "logsnr"), (samplers.dpmpp_2m, 2, "logsnr"),
                                                   (samplers.dpmpp_2m, 2, "karras")])
def test_convergence_order_on_the_gaussian_oracle(sampler, order, spacing):
    d = GaussianDiffusion(NoiseSchedule.linear(1000))
    oracle = GaussianOracle(MU, COV, d)
    x_T = torch.randn(16, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    exact = _exact_pf_ode(d, oracle, x_T, 1.0, samplers.time_grid(d, 10, spacing)[0])
    Ns = [10, 20, 40, 80]
    errs = [float((sampler(oracle, (16, 2), d, steps=N, spacing=spacing, x_T=x_T,
                           generator=torch.Generator()).sample - exact).abs().max()) for N in Ns]
    slope = float(torch.linalg.lstsq(torch.stack([torch.log(torch.tensor(Ns, dtype=torch.float64)),
                                                  torch.ones(4, dtype=torch.float64)], 1),
                                     torch.log(torch.tensor(errs, dtype=torch.float64))[:, None]).solution[0, 0])
    assert -order - 0.35 < slope < -order + 0.35, (errs, slope)
    assert errs[-1] < (0.1 if order == 1 else 1e-2)  # measured: euler 0.050, heun/dpmpp_2m 1.5e-3..3.9e-3


# ------------------------------------------------------------------------------------------------
# classifier-free guidance through every sampler
# ------------------------------------------------------------------------------------------------
class Conditional(torch.nn.Module):
    def forward(self, x, t, y):
        yy = y.to(x.dtype).reshape(-1, *([1] * (x.ndim - 1)))
        return 0.4 * torch.tanh(x) + 0.05 * yy + 0.0005 * t.to(x.dtype).reshape(yy.shape)


class HandGuided(torch.nn.Module):
    def __init__(self, w):
        super().__init__()
        self.w, self.net = w, Conditional()

    def forward(self, x, t, y):
        return (1 + self.w) * self.net(x, t, y) - self.w * self.net(x, t, torch.full_like(y, -1))


@pytest.mark.parametrize("sampler", ALL)
def test_classifier_free_guidance_works_with_every_sampler(sampler, make_diffusion):
    d = make_diffusion(40)
    y = torch.tensor([0, 3, 5, 9])
    run = lambda m: sampler(m, (4, 3), d, steps=5, generator=torch.Generator().manual_seed(2), cond=y)  # noqa
    guided, hand = run(ClassifierFreeGuidance(Conditional(), 1.5)), run(HandGuided(1.5))
    torch.testing.assert_close(guided.sample, hand.sample)
    assert guided.nfe == 2 * hand.nfe == 2 * _nfe(sampler, 5)
    cond_only = run(ClassifierFreeGuidance(Conditional(), 0.0))
    assert cond_only.nfe == _nfe(sampler, 5) and not torch.allclose(cond_only.sample, guided.sample)
