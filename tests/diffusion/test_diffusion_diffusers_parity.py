"""Parity with Hugging Face diffusers (test-only dependency): DDPMScheduler and DDIMScheduler.

diffusers indexes timesteps 0..T-1; elbolab uses t = 1..T, so their index i is our t = i + 1. Their
``set_alpha_to_one=True`` is our alpha_bar_0 = 1 at the end of a DDIM chain; ``steps_offset=0`` and
``timestep_spacing`` leading/trailing match our Spacing. (Their DDIM uses prev = t - T // S even for
``linspace`` spacing, where it is not the next visited timestep, so linspace is not compared.)

diffusers builds its schedule in float32, where 1 - alpha_bar_t at small t is rounded by up to ~1e-3
relative; :func:`_float64` loads our float64 schedule into their scheduler so that the comparisons test the
formulas at a tight tolerance. Their own float32 schedule is compared once, at the looser tolerance.
"""

import pytest
import torch

diffusers = pytest.importorskip("diffusers")
from diffusers import DDIMScheduler, DDPMScheduler  # noqa: E402

from elbolab.diffusion.config import VarianceKind
from elbolab.diffusion import GaussianDiffusion, NoiseSchedule, Prediction, samplers  # noqa: E402

PRED = {Prediction.EPS: "epsilon", Prediction.X0: "sample", Prediction.V: "v_prediction"}
VAR = {VarianceKind.BETA_TILDE: "fixed_small", VarianceKind.BETA: "fixed_large"}


class WigglyModel(torch.nn.Module):
    """A deterministic nonlinear stand-in for a network: out = tanh(x) cos(t / 50) + 0.1 t / T."""

    def __init__(self, T):
        super().__init__()
        self.T = T

    def forward(self, x, t, y=None):
        tt = t.to(x.dtype).reshape(-1, *([1] * (x.ndim - 1)))
        return torch.tanh(x) * torch.cos(tt / 50) + 0.1 * tt / self.T


def _float64(sched, schedule):
    """Give a diffusers scheduler our float64 schedule (their index i = our t = i + 1)."""
    sched.betas = schedule.betas[1:].clone()
    sched.alphas = schedule.alphas[1:].clone()
    sched.alphas_cumprod = schedule.alpha_bars[1:].clone()
    return sched


def test_posterior_variances_match_ddpm_scheduler():
    d = GaussianDiffusion(NoiseSchedule.linear(1000))
    small = DDPMScheduler(num_train_timesteps=1000, variance_type="fixed_small")
    large = DDPMScheduler(num_train_timesteps=1000, variance_type="fixed_large")
    torch.testing.assert_close(small.alphas_cumprod.double(), d.schedule.alpha_bars[1:], rtol=1e-5, atol=0)
    ours = d.schedule.posterior_variances
    theirs32 = torch.stack([small._get_variance(i) for i in range(1, 1000)]).double()
    torch.testing.assert_close(theirs32, ours[2:], rtol=2e-3, atol=0)  # float32 rounding at small t
    _float64(small, d.schedule)
    _float64(large, d.schedule)
    for i in range(1, 1000):
        assert float(small._get_variance(i)) == pytest.approx(float(ours[i + 1]), rel=1e-10)
        assert float(large._get_variance(i)) == pytest.approx(float(d.schedule.betas[i + 1]), rel=1e-10)


@pytest.mark.parametrize("kind", list(PRED))
@pytest.mark.parametrize("variance", list(VAR))
@pytest.mark.parametrize("i", [1, 17, 500, 999])
def test_one_ancestral_step_matches_ddpm_scheduler(kind, variance, i):
    sched = DDPMScheduler(num_train_timesteps=1000, variance_type=VAR[variance], prediction_type=PRED[kind],
                          clip_sample=False)
    d = GaussianDiffusion(NoiseSchedule.linear(1000), prediction=kind, variance=variance)
    _float64(sched, d.schedule)
    g = torch.Generator().manual_seed(i)
    x_t, out = torch.randn(4, 1, 3, 3, generator=g), torch.randn(4, 1, 3, 3, generator=g)
    ref = sched.step(out, i, x_t, generator=torch.Generator().manual_seed(99))
    noise = torch.randn(4, 1, 3, 3, generator=torch.Generator().manual_seed(99))  # the same draw
    ours, x0 = samplers.ancestral_step(d, out, x_t, i + 1, noise)
    torch.testing.assert_close(x0, ref.pred_original_sample, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ours, ref.prev_sample, rtol=1e-5, atol=1e-5)


def test_full_ancestral_loop_matches_ddpm_scheduler_with_the_same_generator():
    T = 50
    schedule = NoiseSchedule.linear(T, 2e-3, 0.4)
    sched = DDPMScheduler(num_train_timesteps=T, variance_type="fixed_small", clip_sample=False)
    _float64(sched, schedule)
    d = GaussianDiffusion(schedule)
    model = WigglyModel(T)
    g = torch.Generator().manual_seed(3)
    x = torch.randn(6, 2, generator=g)
    for i in sched.timesteps:
        out = model(x, torch.full((6,), int(i) + 1))
        x = sched.step(out, int(i), x, generator=g).prev_sample
    ours = samplers.ancestral(model, (6, 2), d, generator=torch.Generator().manual_seed(3))
    assert ours.nfe == T
    torch.testing.assert_close(ours.sample, x, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("spacing", ["leading", "trailing"])
@pytest.mark.parametrize("clip", [False, True])
@pytest.mark.parametrize("kind", list(PRED))
def test_ten_step_deterministic_ddim_matches_ddim_scheduler(spacing, clip, kind):
    sched = DDIMScheduler(num_train_timesteps=1000, clip_sample=clip, set_alpha_to_one=True, steps_offset=0,
                          timestep_spacing=spacing, prediction_type=PRED[kind])
    sched.set_timesteps(10)
    d = GaussianDiffusion(NoiseSchedule.linear(1000), prediction=kind)
    _float64(sched, d.schedule)
    model = WigglyModel(1000)
    x = torch.randn(5, 1, 2, 2, generator=torch.Generator().manual_seed(0))
    x_T = x.clone()
    for i in sched.timesteps:
        out = model(x, torch.full((5,), int(i) + 1))
        x = sched.step(out, int(i), x, eta=0.0, use_clipped_model_output=clip).prev_sample
    ours = samplers.ddim(model, (5, 1, 2, 2), d, steps=10, spacing=spacing, clip_x0=clip, x_T=x_T,
                         generator=torch.Generator())
    assert ours.timesteps.tolist() == [int(i) + 1 for i in sched.timesteps]
    assert ours.nfe == 10
    torch.testing.assert_close(ours.sample, x, rtol=1e-5, atol=1e-5)


def test_stochastic_ddim_matches_ddim_scheduler_with_the_same_generator():
    sched = DDIMScheduler(num_train_timesteps=1000, clip_sample=False, set_alpha_to_one=True)
    sched.set_timesteps(10)
    d = GaussianDiffusion(NoiseSchedule.linear(1000))
    _float64(sched, d.schedule)
    model = WigglyModel(1000)
    g = torch.Generator().manual_seed(5)
    x = torch.randn(5, 3, generator=g)
    for i in sched.timesteps:
        out = model(x, torch.full((5,), int(i) + 1))
        x = sched.step(out, int(i), x, eta=0.5, generator=g).prev_sample
    ours = samplers.ddim(model, (5, 3), d, steps=10, eta=0.5, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(ours.sample, x, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------------------------
# DPM-Solver++(2M): DPMSolverMultistepScheduler in its defaults
# ------------------------------------------------------------------------------------------------
def _dpm_scheduler(schedule, kind, **kw):
    """diffusers' defaults (solver_order 2, midpoint, lower_order_final, final_sigmas_type "zero", linspace
    timesteps) on our float64 schedule, set before set_timesteps computes its sigmas."""
    from diffusers import DPMSolverMultistepScheduler

    sched = DPMSolverMultistepScheduler(num_train_timesteps=schedule.T, prediction_type=PRED[kind], **kw)
    assert sched.config.solver_order == 2 and sched.config.solver_type == "midpoint"
    assert sched.config.lower_order_final and sched.config.final_sigmas_type == "zero"
    return _float64(sched, schedule)


@pytest.mark.parametrize("steps", [10, 25])
@pytest.mark.parametrize("kind", [Prediction.EPS, Prediction.V])
def test_dpmpp_2m_matches_dpm_solver_multistep_scheduler(steps, kind):
    d = GaussianDiffusion(NoiseSchedule.linear(1000), prediction=kind)
    sched = _dpm_scheduler(d.schedule, kind, algorithm_type="dpmsolver++")
    sched.set_timesteps(steps)
    model = WigglyModel(1000)
    x = torch.randn(5, 1, 2, 2, generator=torch.Generator().manual_seed(0))
    x_T = x.clone()
    for i in sched.timesteps:
        out = model(x, torch.full((5,), int(i) + 1))
        x = sched.step(out, int(i), x).prev_sample
    visited = [int(i) + 1 for i in sched.timesteps]  # their linspace grid is none of ours: pass it
    ours = samplers.dpmpp_2m(model, (5, 1, 2, 2), d, timesteps=visited, x_T=x_T, generator=torch.Generator())
    assert ours.timesteps.tolist() == visited and ours.nfe == steps
    torch.testing.assert_close(ours.sample, x, rtol=1e-5, atol=1e-5)
    # not a tautology: first-order (DDIM) steps on the same grid differ
    ddim = samplers.ddim(model, (5, 1, 2, 2), d, timesteps=visited, x_T=x_T, generator=torch.Generator())
    assert (ddim.sample - x).abs().max() > 1e-3


def test_dpmpp_2m_sde_matches_sde_dpm_solver_with_the_same_generator():
    d = GaussianDiffusion(NoiseSchedule.linear(1000))
    sched = _dpm_scheduler(d.schedule, Prediction.EPS, algorithm_type="sde-dpmsolver++")
    sched.set_timesteps(15)
    model = WigglyModel(1000)
    x = torch.randn(4, 3, generator=torch.Generator().manual_seed(1))
    x_T, g = x.clone(), torch.Generator().manual_seed(7)
    for i in sched.timesteps:
        out = model(x, torch.full((4,), int(i) + 1))
        x = sched.step(out, int(i), x, generator=g).prev_sample
    ours = samplers.dpmpp_2m_sde(model, (4, 3), d, timesteps=[int(i) + 1 for i in sched.timesteps], x_T=x_T,
                                 generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(ours.sample, x, rtol=1e-5, atol=1e-5)
