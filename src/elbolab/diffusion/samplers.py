"""Samplers for a trained diffusion model: ancestral (Algorithm 2 of Ho et al. 2020) and DDIM (Song et al. 2021).

Both are functions with one signature,

    sampler(model, shape, diffusion, *, steps=None, generator, cond=None, callback=None, ...) -> SampleResult

built from the shared step helpers :func:`ancestral_step` and :func:`ddim_step`. ``model(x_t, t, y)`` is
called with ``t: (B,)`` long timesteps in 1..T and ``y = cond``; ``shape = (B, ...)`` is the shape of the
samples (``(B, C, H, W)`` images, ``(B, D)`` toy data). All randomness comes from ``generator`` (x_T is
drawn on its device), so the same seed gives the same samples.

Fewer steps than T: the visited timesteps tau_1 < ... < tau_S come from :func:`sampling_timesteps` and the
``spacing`` (:class:`elbolab.config.Spacing`). ``ancestral`` then runs Algorithm 2 on the respaced chain with
alpha_bar'_i = alpha_bar_{tau_i} (Nichol & Dhariwal 2021, Sec. 4); with ``steps = T`` (the default) it is
Algorithm 2 itself: x_T ~ N(0, I); for t = T..1: z ~ N(0, I) if t > 1 else z = 0;
x_{t-1} = (x_t - (1 - alpha_t) / sqrt(1 - alpha_bar_t) eps_theta(x_t, t)) / sqrt(alpha_t) + sigma_t z.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from elbolab.config import Spacing, coerce
from elbolab.diffusion import parameterization as param
from elbolab.diffusion.process import GaussianDiffusion
from elbolab.diffusion.schedules import NoiseSchedule

logger = logging.getLogger(__name__)

__all__ = [
    "SampleResult",
    "StepInfo",
    "ancestral",
    "ancestral_step",
    "check_generator",
    "ddim",
    "ddim_step",
    "initial_noise",
    "respace",
    "sample_loop",
    "sampling_timesteps",
]


@dataclass(frozen=True)
class SampleResult:
    """What a sampler returns.

    ``sample: (B, ...)`` the final x_0; ``nfe``: number of network evaluations (per batch);
    ``timesteps: (S,)`` the visited t in the order visited (descending); with ``return_trajectory=True``
    also ``xs: (S + 1, B, ...)`` = x_{tau_S}, ..., x_0 (the states, starting from the initial noise) and
    ``x0s: (S, B, ...)`` the x0 estimates at each step (progressive generation, Ho et al. 2020 Fig. 6).
    """

    sample: Tensor
    nfe: int
    timesteps: Tensor
    xs: Tensor | None = None
    x0s: Tensor | None = None


@dataclass(frozen=True)
class StepInfo:
    """Passed to ``callback`` after each step: step ``index`` (0 = first), ``t`` -> ``t_prev`` (0 = data),
    the new state ``x: (B, ...)`` = x_{t_prev} and the estimate ``x0: (B, ...)`` made at t."""

    index: int
    t: int
    t_prev: int
    x: Tensor
    x0: Tensor


Callback = Callable[[StepInfo], None]


def _parse_spacing(spacing: Spacing | str) -> Spacing:
    return coerce(spacing, Spacing, "spacing")


def sampling_timesteps(T: int, steps: int, spacing: Spacing | str = Spacing.LEADING) -> Tensor:
    """The S = ``steps`` timesteps a sampler visits, ascending, long, in 1..T.

    - ``leading`` (DDIM paper): 1, 1 + k, ..., 1 + (S - 1) k with k = T // S (does not reach T unless S = T);
    - ``linspace``: round(linspace(0, T - 1, S)) + 1, from 1 to T inclusive;
    - ``trailing`` (Lin et al. 2024): round(T - i T / S) for i = 0..S-1, starting at T.
    These are diffusers' 0-based timestep_spacing options shifted by one (our t = their index + 1, with
    steps_offset = 0).
    """
    spacing = _parse_spacing(spacing)
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= T:
        raise ValueError(f"steps = {steps!r} must be an integer in 1..T = {T}")
    if spacing is Spacing.LEADING:
        k = T // steps
        ts = 1 + torch.arange(steps, dtype=torch.long) * k
    elif spacing is Spacing.LINSPACE:
        ts = torch.linspace(0, T - 1, steps, dtype=torch.float64).round().long() + 1
    else:
        i = torch.arange(steps, dtype=torch.float64)
        ts = torch.round(T - i * (T / steps)).long().flip(0)
    return ts


def respace(diffusion: GaussianDiffusion, timesteps: Tensor) -> GaussianDiffusion:
    """The diffusion restricted to ``timesteps: (S,)`` ascending: alpha_bar'_i = alpha_bar_{tau_i}, i = 1..S.

    Its step i corresponds to the original t = tau_i (call the network with tau_i). With all T timesteps
    the original diffusion is returned unchanged.
    """
    T = diffusion.T
    if timesteps.numel() == T and torch.equal(timesteps.cpu(), torch.arange(1, T + 1)):
        return diffusion
    abar = diffusion.schedule.alpha_bars[timesteps.cpu()]
    return GaussianDiffusion(NoiseSchedule.from_alpha_bars(abar), diffusion.prediction, diffusion.variance)


def ancestral_step(
    diffusion: GaussianDiffusion,
    model_out: Tensor,
    x_t: Tensor,
    t: int,
    noise: Tensor | None,
    *,
    clip_x0: bool = False,
) -> tuple[Tensor, Tensor]:
    """One step of Algorithm 2: x_{t-1} = mu_theta(x_t, t) + sigma_t z; ``noise=None`` means z = 0.

    Returns ``(x_{t-1}, x0_hat)``; ``t`` is a step of ``diffusion`` (respaced or not).
    """
    step = diffusion.p_mean_variance(model_out, x_t, t, clip_x0=clip_x0)
    if noise is None:
        return step.mean, step.x0
    return step.mean + step.variance.sqrt() * noise, step.x0


def ddim_sigma(alpha_bar_t: float, alpha_bar_prev: float, eta: float) -> float:
    """sigma of a DDIM step (Song et al. 2021, eq. 16):
    eta * sqrt((1 - abar_prev) / (1 - abar_t)) * sqrt(1 - abar_t / abar_prev)."""
    return eta * math.sqrt((1.0 - alpha_bar_prev) / (1.0 - alpha_bar_t) * (1.0 - alpha_bar_t / alpha_bar_prev))


def ddim_step(
    x0: Tensor, eps: Tensor, alpha_bar_prev: float, sigma: float, noise: Tensor | None
) -> Tensor:
    """x_prev = sqrt(abar_prev) x0 + sqrt(1 - abar_prev - sigma^2) eps + sigma z (Song et al. 2021, eq. 12)."""
    direction = math.sqrt(max(1.0 - alpha_bar_prev - sigma**2, 0.0))
    x = math.sqrt(alpha_bar_prev) * x0 + direction * eps
    if noise is not None and sigma > 0.0:
        x = x + sigma * noise
    return x


def check_generator(generator: torch.Generator) -> None:
    """TypeError unless ``generator`` is a torch.Generator (samplers take no implicit randomness)."""
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator (all randomness is explicit), got {generator!r}")


def initial_noise(shape: tuple[int, ...], generator: torch.Generator, x_T: Tensor | None) -> Tensor:
    """``x_T`` if given (its shape checked), else N(0, I) of ``shape = (B, ...)`` on the generator's device."""
    shape = tuple(int(s) for s in shape)
    if len(shape) < 2 or any(s < 1 for s in shape):
        raise ValueError(f"shape must be (B, ...) with positive sizes, got {shape}")
    if x_T is not None:
        if tuple(x_T.shape) != shape:
            raise ValueError(f"x_T has shape {tuple(x_T.shape)}, expected {shape}")
        return x_T
    return torch.randn(shape, generator=generator, device=generator.device)


def sample_loop(
    model: nn.Module,
    shape: tuple[int, ...],
    diffusion: GaussianDiffusion,
    ts: Tensor,
    step_fn: Callable[[int, Tensor, Tensor], tuple[Tensor, Tensor]],
    *,
    generator: torch.Generator,
    cond: Tensor | None,
    callback: Callback | None,
    x_T: Tensor | None,
    return_trajectory: bool,
    progress: bool,
    name: str,
    extra_nfe: int = 0,
) -> SampleResult:
    """Shared loop: for i = S..1 call the model at t = ts[i-1] and let ``step_fn(i, x, out)`` move x.

    ``extra_nfe``: network calls that ``step_fn`` makes itself over the whole run (e.g. Langevin corrector
    steps), added to the S calls of the loop in ``SampleResult.nfe``."""
    x = initial_noise(shape, generator, x_T)
    B = x.shape[0]
    if cond is not None and cond.shape[:1] != (B,):
        raise ValueError(f"cond must have shape ({B},), got {tuple(cond.shape)}")
    xs, x0s = ([x], []) if return_trajectory else (None, None)
    S = ts.numel()
    order = list(range(S, 0, -1))
    logger.debug("%s: %d steps, t = %s..%s", name, S, int(ts[-1]), int(ts[0]))
    for n, i in enumerate(tqdm(order, desc=name, disable=not progress, leave=False)):
        t = int(ts[i - 1])
        t_prev = int(ts[i - 2]) if i > 1 else 0
        t_batch = torch.full((B,), t, dtype=torch.long, device=x.device)
        out = diffusion.model_forward(model, x, t_batch, cond)
        x, x0 = step_fn(i, x, out)
        if xs is not None and x0s is not None:
            xs.append(x)
            x0s.append(x0)
        if callback is not None:
            callback(StepInfo(n, t, t_prev, x, x0))
    nfe = (S + extra_nfe) * int(getattr(model, "nfe_per_call", 1))
    return SampleResult(
        sample=x,
        nfe=nfe,
        timesteps=ts.flip(0).clone(),
        xs=torch.stack(xs) if xs is not None else None,
        x0s=torch.stack(x0s) if x0s is not None else None,
    )


@torch.no_grad()
def ancestral(
    model: nn.Module,
    shape: tuple[int, ...],
    diffusion: GaussianDiffusion,
    *,
    steps: int | None = None,
    generator: torch.Generator,
    cond: Tensor | None = None,
    callback: Callback | None = None,
    spacing: Spacing | str = Spacing.LEADING,
    clip_x0: bool = False,
    x_T: Tensor | None = None,
    return_trajectory: bool = False,
    progress: bool = False,
) -> SampleResult:
    """Ancestral sampling from p_theta: exactly Algorithm 2 of Ho et al. 2020 when ``steps`` is None or T.

    With fewer steps, Algorithm 2 on the chain respaced to ``sampling_timesteps(T, steps, spacing)``.
    sigma_t^2 follows ``diffusion.variance`` (beta_t or beta_tilde_t). ``clip_x0`` clips x0_hat to [-1, 1]
    (images) before forming the mean. ``x_T``: start from this noise instead of drawing it.
    """
    check_generator(generator)
    S = diffusion.T if steps is None else steps
    ts = sampling_timesteps(diffusion.T, S, spacing).to(generator.device)
    chain = respace(diffusion, ts)

    def step_fn(i: int, x: Tensor, out: Tensor) -> tuple[Tensor, Tensor]:
        noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype) if i > 1 else None
        return ancestral_step(chain, out, x, i, noise, clip_x0=clip_x0)

    return sample_loop(
        model, shape, diffusion, ts, step_fn, generator=generator, cond=cond, callback=callback, x_T=x_T,
        return_trajectory=return_trajectory, progress=progress, name="ancestral",
    )


@torch.no_grad()
def ddim(
    model: nn.Module,
    shape: tuple[int, ...],
    diffusion: GaussianDiffusion,
    *,
    steps: int | None = None,
    generator: torch.Generator,
    cond: Tensor | None = None,
    callback: Callback | None = None,
    eta: float = 0.0,
    spacing: Spacing | str = Spacing.LEADING,
    clip_x0: bool = False,
    x_T: Tensor | None = None,
    return_trajectory: bool = False,
    progress: bool = False,
) -> SampleResult:
    """DDIM sampling (Song et al. 2021): deterministic for ``eta = 0``; ``eta = 1`` is ancestral sampling with
    sigma^2 = beta_tilde on the respaced chain. ``steps`` defaults to T; the last step goes to alpha_bar_0 = 1
    (diffusers' ``set_alpha_to_one=True``) and returns x0_hat. With ``clip_x0`` the x0 estimate is clipped to
    [-1, 1] and eps_hat recomputed from it.
    """
    if not 0.0 <= float(eta) <= 1.0:
        raise ValueError(f"eta = {eta!r} must be in [0, 1]")
    check_generator(generator)
    S = diffusion.T if steps is None else steps
    ts = sampling_timesteps(diffusion.T, S, spacing).to(generator.device)
    abar = diffusion.schedule.alpha_bars

    def step_fn(i: int, x: Tensor, out: Tensor) -> tuple[Tensor, Tensor]:
        t = int(ts[i - 1])
        t_prev = int(ts[i - 2]) if i > 1 else 0
        x0, eps = diffusion.x0_and_eps(out, x, torch.full((x.shape[0],), t, dtype=torch.long, device=x.device))
        if clip_x0:
            x0 = x0.clamp(-1.0, 1.0)
            eps = param.eps_from_x0(x, x0, abar[t])
        ab_t, ab_prev = float(abar[t]), float(abar[t_prev])
        sigma = ddim_sigma(ab_t, ab_prev, float(eta))
        noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype) if sigma > 0 else None
        return ddim_step(x0, eps, ab_prev, sigma, noise), x0

    return sample_loop(
        model, shape, diffusion, ts, step_fn, generator=generator, cond=cond, callback=callback, x_T=x_T,
        return_trajectory=return_trajectory, progress=progress, name="ddim",
    )


# names used by elbolab.score.samplers before these helpers were public
_check_generator, _initial_noise, _sample_loop = check_generator, initial_noise, sample_loop
