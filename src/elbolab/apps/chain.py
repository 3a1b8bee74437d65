"""Pieces of the reverse chain that the applications share: start it at any t, and run DDIM backwards.

- :func:`truncate`: the diffusion restricted to its first ``t`` steps (same alpha_bar_1..alpha_bar_t, so the
  network is called with the original timesteps). The library samplers run on it start at x_t instead of
  x_T: :func:`reverse_from` draws x_0 ~ p_theta(x_0 | x_t) with Algorithm 2 of Ho et al. 2020 (or DDIM).
  This is what DDPM Figs. 7-9 need: "samples from p_theta(x_0 | x_t)" (shared latent) and "decoded by the
  reverse chain" (interpolation).
- :func:`ddim_invert`: the deterministic DDIM map (Song et al. 2021, eta = 0) run forward, x_0 -> x_t, the
  usual "DDIM inversion": each step s -> s' sets x_{s'} = sqrt(abar_{s'}) x0_hat + sqrt(1 - abar_{s'}) eps_hat
  with eps_hat = eps_theta(x_s, s') (the network is evaluated at the next, noisier timestep, as in diffusers'
  DDIMInverseScheduler, because eps_theta(., 0) does not exist). :func:`ddim_decode` is the reverse map
  (:func:`elbolab.diffusion.samplers.ddim` with eta = 0 on the truncated chain).

Every one of them runs on the library's one reverse loop (:func:`elbolab.diffusion.loop.run_loop`): the
decoders through the samplers (the shared-noise decoder is ``samplers.ancestral(..., shared_noise=True)``),
the inversion with its own step over the ascending pairs (0, tau_1), (tau_1, tau_2), ...

Shapes: ``x: (B, ...)`` (images ``(B, C, H, W)``); ``t``: a Python int in 0..T (0 = data, nothing to do).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import torch
from torch import Tensor, nn

from elbolab.diffusion.config import ReverseSampler, Spacing
from elbolab.diffusion import samplers
from elbolab.diffusion.process import GaussianDiffusion
from elbolab.diffusion.loop import Denoiser, run_loop
from elbolab.diffusion.samplers import SampleResult, ddim_step, sampling_timesteps
from elbolab.diffusion.schedules import NoiseSchedule

__all__ = ["check_time", "ddim_decode", "ddim_invert", "reverse_from", "reverse_from_shared_noise", "run_diffusion",
           "truncate"]


@contextlib.contextmanager
def _truncated_schedules() -> Iterator[None]:
    """Silence the schedule's "alpha_bar_T keeps signal" warning: a chain cut at t < T keeps signal on purpose."""
    log = logging.getLogger("elbolab.diffusion.schedules")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


def check_time(t: int, T: int, name: str = "t", low: int = 0) -> int:
    """``t`` as an int in ``low..T``; ValueError naming the value and the range otherwise."""
    if isinstance(t, bool) or not isinstance(t, int) or not low <= t <= T:
        raise ValueError(f"{name} = {t!r} must be an integer in {low}..{T} (T = {T})")
    return t


def _check_steps(steps: int | None, t: int) -> int:
    """Number of timesteps visited from t down to 1: ``min(steps, t)``, at least 2 when t > 1 (the evenly spaced
    ``linspace`` timesteps must contain both t and 1)."""
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 1):
        raise ValueError(f"steps = {steps!r} must be a positive integer (or None for every timestep)")
    return t if steps is None else min(max(steps, 2), t)


def run_diffusion(run) -> GaussianDiffusion:
    """The :class:`GaussianDiffusion` of a loaded diffusion run; ValueError for runs of other families."""
    from elbolab.families import all_families

    diffusion = run.family.diffusion(run.config)
    if diffusion is None:
        names = [f.name for f in all_families() if f.capabilities.diffusion]
        from elbolab.errors import RunFolderError

        raise RunFolderError(f"{run.folder} is a {run.config.family!r} run: this application needs a diffusion run "
                         f"(families: {', '.join(names)})")
    return diffusion


def truncate(diffusion: GaussianDiffusion, t: int) -> GaussianDiffusion:
    """``diffusion`` cut after step ``t`` (1..T): alpha_bar'_s = alpha_bar_s for s = 1..t (t = T: unchanged)."""
    check_time(t, diffusion.T, low=1)
    if t == diffusion.T:
        return diffusion
    with _truncated_schedules():
        schedule = NoiseSchedule.from_alpha_bars(diffusion.schedule.alpha_bars[1:t + 1])
    return GaussianDiffusion(schedule, diffusion.prediction, diffusion.variance)


def reverse_from(
    model: nn.Module,
    x_t: Tensor,
    t: int,
    diffusion: GaussianDiffusion,
    *,
    generator: torch.Generator,
    steps: int | None = None,
    sampler: ReverseSampler | str = ReverseSampler.ANCESTRAL,
    cond: Tensor | None = None,
    clip_x0: bool = False,
    return_trajectory: bool = False,
    progress: bool = False,
) -> SampleResult:
    """Decode ``x_t: (B, ...)`` at time ``t`` (0..T) to x_0 with the reverse chain: a draw of p_theta(x_0 | x_t).

    ``steps``: visit ``min(steps, t)`` timesteps (at least 2) evenly spaced from t down to 1 (None: all t).
    ``sampler``: ``ancestral`` (Algorithm 2) or ``ddim`` (deterministic, eta = 0). ``t = 0`` returns ``x_t``.
    """
    T = diffusion.T
    check_time(t, T)
    sampler = ReverseSampler(sampler)
    if t == 0:
        return SampleResult(sample=x_t, nfe=0, timesteps=torch.zeros(0, dtype=torch.long),
                            xs=x_t[None] if return_trajectory else None,
                            x0s=x_t.new_empty((0, *x_t.shape)) if return_trajectory else None)
    S = _check_steps(steps, t)
    chain = truncate(diffusion, t)
    fn = samplers.ancestral if sampler is ReverseSampler.ANCESTRAL else samplers.ddim
    with _truncated_schedules():  # the sampler respaces the truncated chain
        return fn(model, tuple(x_t.shape), chain, steps=S, generator=generator, cond=cond,
                  spacing=Spacing.LINSPACE, clip_x0=clip_x0, x_T=x_t, return_trajectory=return_trajectory,
                  progress=progress)


@torch.no_grad()
def reverse_from_shared_noise(
    model: nn.Module,
    x_t: Tensor,
    t: int,
    diffusion: GaussianDiffusion,
    *,
    generator: torch.Generator,
    steps: int | None = None,
    cond: Tensor | None = None,
    clip_x0: bool = False,
) -> Tensor:
    """As :func:`reverse_from` with the ancestral sampler, but every example of the batch receives the same
    noise z at each step ("we fixed the noise", Ho et al. 2020, Sec. 4.3): a batch of interpolants then
    differs only through its x_t. Returns x_0 ``(B, ...)``."""
    check_time(t, diffusion.T)
    if t == 0:
        return x_t
    S = _check_steps(steps, t)
    with _truncated_schedules():
        return samplers.ancestral(model, tuple(x_t.shape), truncate(diffusion, t), steps=S, generator=generator,
                                  cond=cond, spacing=Spacing.LINSPACE, clip_x0=clip_x0, shared_noise=True,
                                  x_T=x_t).sample


@torch.no_grad()
def ddim_invert(
    model: nn.Module,
    x0: Tensor,
    t: int,
    diffusion: GaussianDiffusion,
    *,
    steps: int | None = None,
    cond: Tensor | None = None,
    clip_x0: bool = False,
) -> Tensor:
    """The deterministic DDIM code of ``x0: (B, ...)`` at time ``t`` (1..T): x_0 -> x_t, ``(B, ...)``.

    Visits ``min(steps, t)`` timesteps evenly spaced in 1..t (the ones :func:`ddim_decode` visits, so that
    decoding inverts encoding up to the discretisation error of the ODE). Runs on the library's one loop
    (:func:`elbolab.diffusion.loop.run_loop`) over the ascending pairs (0, tau_1), (tau_1, tau_2), ...
    """
    check_time(t, diffusion.T, low=1)
    S = _check_steps(steps, t)
    times = [0, *sampling_timesteps(t, S, Spacing.LINSPACE).tolist()]
    den = Denoiser(model, diffusion, cond)

    def step(k: int, prev: int, nxt: int, x: Tensor) -> tuple[Tensor, Tensor]:
        eps = den(x, nxt).eps  # eps_theta(x_prev, t_next): eps_theta(., 0) does not exist
        ab_prev = float(den.alpha_bar(prev))
        x0_hat = (x - (1.0 - ab_prev) ** 0.5 * eps) / ab_prev ** 0.5
        if clip_x0:
            x0_hat = x0_hat.clamp(-1.0, 1.0)
        return ddim_step(x0_hat, eps, float(den.alpha_bar(nxt)), 0.0, None), x0_hat

    return run_loop(x0, times, step, counter=den, name="ddim inversion").sample


def ddim_decode(
    model: nn.Module,
    x_t: Tensor,
    t: int,
    diffusion: GaussianDiffusion,
    *,
    steps: int | None = None,
    cond: Tensor | None = None,
    clip_x0: bool = False,
) -> Tensor:
    """The deterministic DDIM decoding (eta = 0) of ``x_t: (B, ...)`` from time ``t`` (0..T) to x_0."""
    g = torch.Generator(x_t.device)  # eta = 0 draws nothing; the samplers still take a generator
    return reverse_from(model, x_t, t, diffusion, generator=g, steps=steps, sampler=ReverseSampler.DDIM, cond=cond,
                        clip_x0=clip_x0).sample
