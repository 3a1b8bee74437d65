"""Sampling a :class:`~elbolab.vdm.model.VDMModel`: its own ancestral sampler, the flow ODE, and every solver of
:mod:`elbolab.diffusion.samplers` on the VDM's (learned) schedule.

- :func:`ancestral`: VDM's generative model p(z_s | z_t) = q(z_s | z_t, x = x_hat(z_t; t)) on the uniform grid
  t_i = i / N (Kingma et al. 2021, Appendix A, eq. 32-34; ``model_vdm.sample_step``)::

      c = -expm1(gamma_s - gamma_t) = 1 - SNR(t) / SNR(s),
      z_s = (alpha_s / alpha_t) (z_t - sigma_t c eps_hat(z_t; t)) + sigma_s sqrt(c) eps',   eps' ~ N(0, I),

  from z_1 ~ N(0, I) down to z_0 (noise is added at every step, z_0 sits at gamma_0), then the decoder:
  x = the mode of p(x | z_0) (the 8-bit value nearest z_0 / alpha_0 for the softmax decoder, z_0 / alpha_0
  for the Gaussian one). NFE = N.
- :func:`flow_ode`: the probability-flow ODE in the flow coordinates z^flow = (1 - u) x + u eps,
  dz^flow / du = v(z^flow, u) = E[eps - x | z^flow] (Liu et al. 2023; Lipman et al. 2023), on a grid uniform
  in u from u_1 = sigmoid(gamma_1 / 2) to u_0 = sigmoid(gamma_0 / 2), by Euler's method or Heun's (trapezoid,
  2 NFE per step but the last); any VDM (eps or velocity network) has this ODE, since u and gamma are one
  variable (u = sigmoid(gamma / 2)). Then the same decoder at u_0.
- :func:`as_diffusion`: the VDM read on a grid of T points, alpha_bar_i = sigmoid(-gamma(i / T)), as a
  :class:`~elbolab.diffusion.GaussianDiffusion` (eps-prediction) and :class:`DiffusionView`, a module called like a
  DDPM network ``(x_t, t, y)`` with t in elbolab's discrete-time units (0, T]: it evaluates the VDM's network at
  the noise level the diffusion has at t, gamma = -diffusion.log_snr_at(t) (exact on the grid, the diffusion's
  monotone interpolation between grid points), so DDIM, Euler, Heun, DPM-Solver++ and the probability-flow
  likelihood of :mod:`elbolab.diffusion` run on a VDM run unchanged.

All randomness from ``generator``; every function returns :class:`~elbolab.diffusion.loop.SampleResult`.
"""

from __future__ import annotations

import copy
import enum

import torch
from torch import Tensor, nn

from elbolab.diffusion.loop import Callback, SampleResult, run_loop
from elbolab.diffusion.process import GaussianDiffusion
from elbolab.diffusion.samplers import check_generator, initial_noise
from elbolab.diffusion.schedules import NoiseSchedule
from elbolab.vdm._choices import parse_choice
from elbolab.vdm.elbo import VDMDecoder, parse_decoder
from elbolab.vdm.model import VDMModel, flow_coordinates
from elbolab.vdm.schedules import alpha_sigma

__all__ = ["DIFFUSION_GRID", "DiffusionView", "FlowSolver", "ancestral", "as_diffusion", "decode", "flow_ode"]

#: grid points of :func:`as_diffusion` (the DDPM's T = 1000, so a step there is 1/1000 of VDM time)
DIFFUSION_GRID = 1000


class _Count:
    nfe = 0


def _check(model: VDMModel, steps: int, generator: torch.Generator, cond: Tensor | None, B: int) -> None:
    if not isinstance(model, VDMModel):
        raise TypeError(f"model must be a VDMModel, got {type(model).__name__}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps = {steps!r} must be an integer >= 1")
    check_generator(generator)
    if cond is not None and cond.shape[:1] != (B,):
        raise ValueError(f"cond must have shape ({B},), got {tuple(cond.shape)}")


def _gammas(model: VDMModel, times: list[float], x: Tensor) -> Tensor:
    """gamma at ``times`` ((N,) on x's device; float64 for float64 x, else float32), one schedule evaluation."""
    dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    t = torch.tensor(times, dtype=dtype, device=x.device)
    return model.schedule(t).to(dtype).detach()


@torch.no_grad()
def decode(model: VDMModel, z_0: Tensor, decoder: VDMDecoder | str = VDMDecoder.SOFTMAX,
           num_bins: int = 256) -> Tensor:
    """The mode of p(x | z_0) at gamma_0: z_0 / alpha_0 rounded to the 8-bit grid 2k/(num_bins-1) - 1 (``SOFTMAX``:
    the largest logit -(z_0/alpha_0 - x_k)^2 / 2e^gamma_0 is the nearest x_k, in [-1, 1]) or z_0 / alpha_0
    (``GAUSSIAN``, continuous data, not clamped). ``z_0: (B, ...)`` -> same shape."""
    g0, _ = model.schedule.endpoints()
    dtype = torch.float64 if z_0.dtype == torch.float64 else torch.float32
    alpha_0, _ = alpha_sigma(g0.detach().to(dtype))
    x = z_0.to(dtype) / alpha_0
    if parse_decoder(decoder) is VDMDecoder.GAUSSIAN:
        return x.to(z_0.dtype)
    x = x.clamp(-1.0, 1.0)
    half = (num_bins - 1) / 2.0
    return (torch.round((x + 1.0) * half) / half - 1.0).to(z_0.dtype)


@torch.no_grad()
def ancestral(
    model: VDMModel,
    shape: tuple[int, ...],
    *,
    steps: int = 1000,
    generator: torch.Generator,
    cond: Tensor | None = None,
    callback: Callback | None = None,
    clip_x0: bool = True,
    decoder: VDMDecoder | str = VDMDecoder.SOFTMAX,
    x_T: Tensor | None = None,
    return_trajectory: bool = False,
    progress: bool = False,
) -> SampleResult:
    """VDM's ancestral sampler (module docstring) with ``steps`` = N uniform steps in t from 1 to 0.

    ``shape = (B, C, H, W)`` (or ``(B, D)``); ``clip_x0``: x_hat = (z_t - sigma_t eps_hat) / alpha_t is clipped to
    [-1, 1] and eps_hat recomputed from it before the step (images); ``x_T``: start from this z_1. The result's
    ``sample`` is the decoded x; ``timesteps`` the visited t (float64, descending from 1).
    """
    x = initial_noise(shape, generator, x_T)
    _check(model, steps, generator, cond, x.shape[0])
    times = [1.0 - i / steps for i in range(steps)] + [0.0]
    gammas = _gammas(model, times, x)
    count = _Count()

    def step(k: int, t: float, s: float, z: Tensor) -> tuple[Tensor, Tensor]:
        g_t, g_s = gammas[k], gammas[k + 1]
        a_t, s_t = alpha_sigma(g_t)
        a_s, s_s = alpha_sigma(g_s)
        eps = model.eps_at_gamma(z, g_t.expand(z.shape[0]), cond).to(z.dtype)
        count.nfe += 1
        x0 = (z - s_t * eps) / a_t
        if clip_x0:
            x0 = x0.clamp(-1.0, 1.0)
            eps = (z - a_t * x0) / s_t
        c = -torch.expm1(g_s - g_t)
        mean = (a_s / a_t) * (z - s_t * c * eps)
        noise = torch.randn(z.shape, generator=generator, device=z.device, dtype=z.dtype)
        return mean + s_s * torch.sqrt(c) * noise, x0

    res = run_loop(x, times, step, counter=count, callback=callback, return_trajectory=return_trajectory,
                   progress=progress, name="vdm-ancestral")
    return SampleResult(decode(model, res.sample, decoder), res.nfe, res.timesteps, res.xs, res.x0s)


class FlowSolver(str, enum.Enum):
    """The solvers of :func:`flow_ode`."""

    EULER = "euler"
    HEUN = "heun"


@torch.no_grad()
def flow_ode(
    model: VDMModel,
    shape: tuple[int, ...],
    *,
    steps: int = 50,
    generator: torch.Generator,
    cond: Tensor | None = None,
    callback: Callback | None = None,
    solver: FlowSolver | str = FlowSolver.EULER,
    decoder: VDMDecoder | str = VDMDecoder.SOFTMAX,
    x_T: Tensor | None = None,
    return_trajectory: bool = False,
    progress: bool = False,
) -> SampleResult:
    """The flow ODE dz^flow/du = v_hat(z^flow, u) from u_1 to u_0 in ``steps`` uniform steps of u (module
    docstring); ``solver``: ``"euler"`` (NFE = N) or ``"heun"`` (the trapezoidal corrector, NFE = 2N - 1).

    z^flow at u_1 is z_1 ~ N(0, I) (or ``x_T``) times sqrt((1 - u_1)^2 + u_1^2); the result is decoded at u_0
    with :func:`decode` (z_0 = z^flow / scale). ``timesteps``: the visited u (descending).
    """
    solver = parse_choice(solver, FlowSolver, "flow solver")
    z1 = initial_noise(shape, generator, x_T)
    _check(model, steps, generator, cond, z1.shape[0])
    g0, g1 = (float(v.detach()) for v in model.schedule.endpoints())
    u0, u1 = (float(torch.sigmoid(torch.tensor(0.5 * g))) for g in (g0, g1))
    us = [u1 + (u0 - u1) * i / steps for i in range(steps + 1)]
    gam = [2.0 * (torch.log(torch.tensor(u)) - torch.log1p(torch.tensor(-u))).item() for u in us]
    B = z1.shape[0]
    count = _Count()

    def velocity(z: Tensor, k: int) -> Tensor:
        count.nfe += 1
        g = torch.full((B,), gam[k], device=z.device,
                       dtype=torch.float64 if z.dtype == torch.float64 else torch.float32)
        return model.velocity_at_gamma(z, g, cond).to(z.dtype)

    def step(k: int, u: float, u_next: float, z: Tensor) -> tuple[Tensor, Tensor]:
        v = velocity(z, k)
        x0 = z - u * v
        z_next = z + (u_next - u) * v
        if solver is FlowSolver.HEUN and k + 1 < steps:
            z_next = z + (u_next - u) * 0.5 * (v + velocity(z_next, k + 1))
        return z_next, x0

    _, scale1 = flow_coordinates(torch.tensor(g1))
    res = run_loop(z1 * float(scale1), us, step, counter=count, callback=callback,
                   return_trajectory=return_trajectory, progress=progress, name=f"flow-{solver.value}",
                   visited=torch.tensor(us[:-1], dtype=torch.float64))
    _, scale0 = flow_coordinates(torch.tensor(g0))
    return SampleResult(decode(model, res.sample / float(scale0), decoder), res.nfe, res.timesteps, res.xs, res.x0s)


# --------------------------------------------------------------------------------------------------
# the VDM as a discrete-time Gaussian diffusion
# --------------------------------------------------------------------------------------------------
class DiffusionView(nn.Module):
    """A :class:`VDMModel` called like a DDPM eps-network of ``diffusion``: ``forward(x_t, t, y)`` with
    ``t: (B,)`` in (0, T] (long or float) returns eps_hat(x_t; gamma) at gamma = -diffusion.log_snr_at(t)."""

    def __init__(self, model: VDMModel, diffusion: GaussianDiffusion) -> None:
        super().__init__()
        self.vdm = model
        self.diffusion = diffusion

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        if t.ndim == 0:
            t = t.expand(x.shape[0])
        lam = self.diffusion.schedule.log_snr_of(t)
        dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
        gamma = (-lam).to(device=x.device, dtype=dtype)
        return self.vdm.eps_at_gamma(x, gamma, y)


@torch.no_grad()
def as_diffusion(model: VDMModel, T: int = DIFFUSION_GRID) -> tuple[GaussianDiffusion, DiffusionView]:
    """(diffusion, view): the VDM's schedule on the grid i / T, alpha_bar_i = sigmoid(-gamma(i / T)), i = 1..T
    (computed in float64; alpha_bar_0 = 1 by elbolab's convention, where the VDM has gamma_0), as an eps-prediction
    :class:`GaussianDiffusion` with beta_tilde reverse variances, and the model as its network (:class:`DiffusionView`).
    """
    if isinstance(T, bool) or not isinstance(T, int) or T < 2:
        raise ValueError(f"T = {T!r} must be an integer >= 2")
    sched = copy.deepcopy(model.schedule).double().cpu()
    t = torch.arange(1, T + 1, dtype=torch.float64) / T
    abar = torch.sigmoid(-sched(t))
    # a VDM with a small gamma_1 ends above the DDPM's warning level for alpha_bar_T, as designed
    noise_schedule = NoiseSchedule.from_alpha_bars(abar, warn_terminal=False)
    diffusion = GaussianDiffusion(noise_schedule, prediction="eps", variance="beta_tilde")
    return diffusion, DiffusionView(model, diffusion)
