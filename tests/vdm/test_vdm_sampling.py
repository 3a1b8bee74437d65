"""VDM samplers fed the exact denoiser of Gaussian data recover the data distribution: VDM's ancestral sampler,
the flow ODE (Euler/Heun), and the diffusion solvers on the VDM's schedule (as_diffusion); the flow
parameterisation and schedule; flow matching as a weighted ELBO (Kingma & Gao 2023) on the same x, eps and t."""

import math

import pytest
import torch

from elbolab.diffusion import samplers
from elbolab.vdm import FixedLinearSchedule, LearnedMonotoneSchedule, VDMModel
from elbolab.vdm.flow import flow_matching_loss
from elbolab.vdm.model import flow_coordinates
from elbolab.vdm.oracles import GaussianDataDenoiser
from elbolab.vdm.sampling import DiffusionView, ancestral, as_diffusion, decode, flow_ode
from elbolab.vdm.schedules import FlowSchedule, alpha_sigma
from elbolab.vdm.weighting import Weighting, flow_density, flow_neg_dlambda_dt, weight, weighted_loss

D, S2, N = 4, 0.3, 4000
MU = torch.tensor([0.5, -0.2, 0.1, 0.0], dtype=torch.float64)
REF = (-6.0, 6.0)


def oracle(schedule, prediction="eps") -> VDMModel:
    return VDMModel(GaussianDataDenoiser(MU, S2, REF), schedule.double(), gamma_range=REF).double()


def z1(seed: int) -> torch.Tensor:
    return torch.randn(N, D, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def standard(seed: int) -> torch.Tensor:
    """N(0, I) draws standardised to sample mean 0 and variance 1 per dimension: for Gaussian data the exact
    probability-flow map is linear, so the samples' mean and variance are then exact up to the solver's error."""
    z = z1(seed)
    return (z - z.mean(0)) / z.std(0)


def check_gaussian(x: torch.Tensor, var: float, rel: float = 0.05) -> None:
    se = math.sqrt(var / x.shape[0])
    assert (x.mean(0) - MU).abs().max() < 4.5 * se, x.mean(0)
    assert ((x.var(0) - var).abs() / var).max() < rel, x.var(0)


def test_ancestral_with_the_exact_denoiser_converges_to_the_data():
    """p(z_s|z_t) = q(z_s|z_t, x = x_hat) leaves out Var[x | z_t], an O(1/N) deficit of the samples' variance that
    vanishes as the steps grow (measured: -0.034, -0.0079, -0.0010 at N = 50, 200, 1000); the mean is right."""
    model = oracle(FixedLinearSchedule(*REF))
    target = S2 + math.exp(REF[0])  # z_0 / alpha_0 = x + e^{gamma_0 / 2} eps
    n = 20000
    x_T = torch.randn(n, D, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    deficit = {}
    for steps in (50, 200, 1000):
        res = ancestral(model, (n, D), steps=steps, generator=torch.Generator().manual_seed(1), clip_x0=False,
                        decoder="gaussian", x_T=x_T)
        assert res.nfe == steps and res.timesteps[0] == 1.0 and len(res.timesteps) == steps
        assert (res.sample.mean(0) - MU).abs().max() < 4.5 * math.sqrt(target / n)
        deficit[steps] = target - float(res.sample.var(0).mean())
    se = target * math.sqrt(2.0 / (n * D))  # of the pooled variance, ~0.0015
    assert deficit[50] > 0.02 and deficit[50] > 2.5 * deficit[200] > 0, deficit
    assert abs(deficit[1000]) < 3 * se, deficit
    with pytest.raises(ValueError, match="steps"):
        ancestral(model, (2, D), steps=0, generator=torch.Generator())


@pytest.mark.parametrize("solver,steps,nfe", [("euler", 1000, 1000), ("heun", 40, 79)])
def test_flow_ode_with_the_exact_denoiser_samples_the_data(solver, steps, nfe):
    """Any VDM (here the eps oracle on the flow path) has the flow ODE; deterministic, so reproducible."""
    model = oracle(FlowSchedule(*REF))
    res = flow_ode(model, (N, D), steps=steps, solver=solver, generator=torch.Generator(), decoder="gaussian",
                   x_T=standard(2))
    assert res.nfe == nfe
    check_gaussian(res.sample, S2 + math.exp(REF[0]), rel=0.01)  # measured within 0.2%
    with pytest.raises(ValueError, match="flow solver = 'rk4' is not valid"):
        flow_ode(model, (2, D), steps=2, solver="rk4", generator=torch.Generator())


def test_diffusion_solvers_run_on_a_learned_schedule():
    """DDIM / DPM-Solver++ on the discretised learned schedule: the network is called at the grid's noise level."""
    sched = LearnedMonotoneSchedule(*REF, hidden=16, generator=torch.Generator().manual_seed(3))
    model = oracle(sched)
    diffusion, view = as_diffusion(model, 1000)
    t = torch.arange(1, 1001, dtype=torch.float64) / 1000
    with torch.no_grad():
        assert torch.allclose(-diffusion.schedule.log_snr[1:], model.schedule(t), atol=1e-8)
    z = z1(4)[:8]
    with torch.no_grad():
        for i in (1, 250, 1000):  # on the grid: exactly the VDM at s = i / T
            g = model.schedule(torch.full((8,), i / 1000, dtype=torch.float64))
            assert torch.allclose(view(z, torch.full((8,), i)), model.eps_at_gamma(z, g), atol=1e-9)
    # the last step returns x_hat(z) at t_min = 1 (s = 1/1000): var(x_hat) = s^2 * s^2 SNR / (s^2 SNR + 1)
    snr = math.exp(-float(model.schedule(torch.tensor([1e-3], dtype=torch.float64)).detach()))
    target = S2 * S2 * snr / (S2 * snr + 1.0)
    for fn, steps, rel in ((samplers.ddim, 1000, 0.01), (samplers.dpmpp_2m, 30, 0.015)):
        res = fn(view, (N, D), diffusion, steps=steps, generator=torch.Generator(), x_T=standard(5))
        check_gaussian(res.sample, target, rel=rel)


def test_velocity_and_eps_parameterisations_are_one_model():
    """v = eps - x on the flow path: the eps oracle's velocity equals E[eps | z] - E[x | z] computed directly, and
    a velocity network turned into eps_hat and back returns itself."""
    model = oracle(FlowSchedule(*REF))
    g = torch.linspace(-5.0, 5.0, 8, dtype=torch.float64)
    z = z1(6)[:8]
    u, scale = flow_coordinates(g)
    a, s = alpha_sigma(g)
    # flow coordinates: alpha * scale = 1 - u, sigma * scale = u
    assert torch.allclose(a * scale, 1 - u) and torch.allclose(s * scale, u)
    with torch.no_grad():
        eps = model.eps_at_gamma(z, g)
        x_hat = (z - s[:, None] * eps) / a[:, None]
        assert torch.allclose(model.velocity_at_gamma(z * scale[:, None], g), eps - x_hat, atol=1e-10)
        vel = VDMModel(model.denoiser, model.schedule, gamma_range=REF, prediction="velocity").double()
        v = vel.velocity_at_gamma(z * scale[:, None], g)
        e = vel.eps_at_gamma(z, g)
        assert torch.allclose(e, z * scale[:, None] + (1 - u)[:, None] * v, atol=1e-12)


def test_flow_schedule_derivative_and_path():
    sched = FlowSchedule(-13.8, 13.8).double()
    t = torch.linspace(0.0, 1.0, 101, dtype=torch.float64)
    at = sched.evaluate(t)
    assert torch.allclose(at.gamma_prime, sched.gamma_prime_autograd(t), rtol=1e-9)
    u = sched.flow_time(t)
    assert torch.allclose(u.diff(), u.diff()[:1].expand(100))  # u linear in t
    assert torch.allclose(at.gamma[[0, -1]], torch.tensor([-13.8, 13.8], dtype=torch.float64))


def test_flow_matching_is_the_weighted_elbo_with_the_flow_weighting():
    """Kingma & Gao 2023: ||(eps - x) - v_hat||^2 / D = (2 / D) * 1/2 w(lambda) (-dlambda/du) ||eps - eps_hat||^2
    with w the FLOW weighting, on the same x, eps and u (replaying flow_matching_loss's draws)."""
    model = oracle(FlowSchedule(-8.0, 8.0))
    x = MU + math.sqrt(S2) * z1(8)[:64]
    loss, u = flow_matching_loss(model, x, None, torch.Generator().manual_seed(9), time_sampling="uniform")
    g = torch.Generator().manual_seed(9)
    torch.rand(64, generator=g, dtype=torch.float64)  # t
    eps = torch.randn(x.shape, generator=g, dtype=x.dtype)
    lam = 2.0 * (torch.log1p(-u.double()) - torch.log(u.double()))
    with torch.no_grad():
        z = model.q_sample(x, -lam, eps)
        eps_hat = model.eps_at_gamma(z, -lam)
    w = weight(Weighting.FLOW, lam, flow_density(lam))
    expected = (2.0 / D) * weighted_loss(w, flow_neg_dlambda_dt(u.double()), eps, eps_hat)
    assert torch.allclose(loss.double(), expected, rtol=1e-4), (loss[:4], expected[:4])


def test_decode_is_the_mode_of_the_softmax_decoder():
    from elbolab.vdm.elbo import decoder_log_probs

    model = oracle(FixedLinearSchedule(-8.0, 5.0))
    g0 = model.schedule.endpoints()[0]
    z = torch.rand(200, 3, generator=torch.Generator().manual_seed(10), dtype=torch.float64) * 2.2 - 1.1
    x = decode(model, z, "softmax")
    mode = decoder_log_probs(z, g0).argmax(-1)
    assert torch.equal(x, 2.0 * mode.double() / 255.0 - 1.0)
