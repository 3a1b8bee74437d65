"""Score-based samplers: annealed Langevin dynamics (NCSN) and, for a trained DDPM used as a score model, a
Langevin corrector and predictor-corrector sampling.

All three keep the signature of :mod:`elbolab.diffusion.samplers`,

    sampler(model, shape, process, *, steps, generator, cond=None, callback=None, ...) -> SampleResult

where ``process`` is the noise process: :class:`~elbolab.score.noise_levels.NoiseLevels` for an NCSN and a
:class:`~elbolab.diffusion.process.GaussianDiffusion` for a DDPM network. They are built from the shared
Langevin step of :mod:`elbolab.score.langevin`, run on the one reverse loop of :mod:`elbolab.diffusion.loop`
(the DDPM ones with its :class:`~elbolab.diffusion.loop.Denoiser` and the ancestral step of
:mod:`elbolab.diffusion.samplers`), take all randomness from ``generator`` and raise
:class:`~elbolab.score.langevin.LangevinDivergenceError` instead of returning NaN samples.

- :func:`annealed_langevin`: Algorithm 1 of the lecture notes (004) / Song & Ermon 2019 for
  ``model(x, sigma, y) = s_theta(x, sigma)``: for i = 1..L, alpha_i = eps sigma_i^2 / sigma_L^2, T steps
  x <- x + (alpha_i / 2) s_theta(x, sigma_i) + sqrt(alpha_i) z; optionally a final denoising step
  x <- x + sigma_L^2 s_theta(x, sigma_L) = E[x | x~] (Tweedie's formula; Song & Ermon 2020, Appendix; it removes
  the residual noise of scale sigma_L). x~_0 ~ N(0, sigma_1^2 I), the noise-dominated law of the first level.
- :func:`langevin`: the same annealing over the (respaced) DDPM marginals q(x_t), with the score of
  :class:`~elbolab.score.network.EpsAsScore`, s = -eps_hat / sqrt(1 - alpha_bar_t), ``corrector_steps`` Langevin
  steps per level with the signal-to-noise step rule ("corrector only" of Song et al. 2021), then x0_hat.
- :func:`predictor_corrector`: Algorithm 5 of Song et al. 2021 for a variance-preserving model: each step is the
  ancestral predictor x_{t-1} = mu_theta(x_t, t) + sigma_t z (Algorithm 2 of Ho et al. 2020, or its respaced
  version) followed by ``corrector_steps`` Langevin steps on q(x_{t-1}) with the signal-to-noise rule (none
  after the last step, which returns the noise-free mean).
"""

from __future__ import annotations

import logging
import math
from typing import Callable, Sequence

import torch
from torch import Tensor, nn

from elbolab.diffusion.config import Spacing
from elbolab.diffusion import parameterization as param
from elbolab.diffusion.loop import CallCounter, Denoised, Denoiser, SampleResult, StepInfo, run_loop
from elbolab.diffusion.process import GaussianDiffusion
from elbolab.diffusion.samplers import (
    _ancestral_update,
    check_generator,
    initial_noise,
    respace,
    time_grid,
)
from elbolab.score.langevin import (
    DEFAULT_GROWTH_LIMIT,
    DivergenceGuard,
    annealed_step_size,
    check_langevin_state,
    langevin_step,
    snr_step_size,
)
from elbolab.score.noise_levels import NoiseLevels, choose_eps

logger = logging.getLogger(__name__)

__all__ = ["annealed_langevin", "langevin", "predictor_corrector"]

Callback = Callable[[StepInfo], None]

#: T of Song & Ermon 2020 (5 Langevin steps per noise level)
DEFAULT_STEPS_PER_LEVEL = 5


def _positive_int(value: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} = {value!r} must be an integer >= 1")
    return value


def _positive_float(value: float, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} = {value!r} must be a finite number > 0")
    return float(value)


def _randn(x: Tensor, generator: torch.Generator) -> Tensor:
    return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)


# --------------------------------------------------------------------------------------------------
# NCSN: annealed Langevin dynamics
# --------------------------------------------------------------------------------------------------
@torch.no_grad()
def annealed_langevin(
    model: nn.Module,
    shape: tuple[int, ...],
    levels: NoiseLevels,
    *,
    steps: int | None = None,
    generator: torch.Generator,
    cond: Tensor | None = None,
    callback: Callback | None = None,
    eps: float | None = None,
    final_denoise: bool = True,
    x_init: Tensor | None = None,
    return_trajectory: bool = False,
    progress: bool = False,
    growth_limit: float = DEFAULT_GROWTH_LIMIT,
) -> SampleResult:
    """Annealed Langevin dynamics (Algorithm 1 of the notes; Song & Ermon 2019) with a score model
    ``model(x: (B, ...), sigma: (B,) float, y) -> (B, ...)``.

    ``steps``: T, the Langevin steps per level (default 5); ``eps``: the step constant of alpha_i = eps
    sigma_i^2 / sigma_L^2 (default :func:`~elbolab.score.noise_levels.choose_eps` for T, Technique 4 of Song &
    Ermon 2020); ``final_denoise``: finish with x + sigma_L^2 s_theta(x, sigma_L); ``x_init``: the initial state
    (default N(0, sigma_1^2 I) drawn from ``generator``). Raises
    :class:`~elbolab.score.langevin.LangevinDivergenceError` when max |x| exceeds ``growth_limit`` times its
    starting scale or becomes NaN (e.g. eps >= 4 sigma_L^2).

    Returns :class:`SampleResult` with ``timesteps`` = the level indices 1..L in the order visited,
    ``nfe = (L T + final_denoise)`` times the model's ``nfe_per_call``; with ``return_trajectory`` ``xs: (L + 1,
    B, ...)`` the state before level 1 and after each level (the last includes the final denoising) and
    ``x0s: (L, B, ...)`` the Tweedie estimate x + sigma_i^2 s_theta(x, sigma_i) at each level's last step.
    ``callback`` gets one :class:`StepInfo` per level with ``t = i`` and ``t_prev = i + 1`` (0 after level L).
    """
    check_generator(generator)
    if not isinstance(levels, NoiseLevels):
        raise TypeError(f"annealed_langevin: levels must be NoiseLevels, got {type(levels).__name__}")
    T = DEFAULT_STEPS_PER_LEVEL if steps is None else _positive_int(steps, "steps (Langevin steps per level)")
    sigma_L, L = levels.sigma_L, levels.L
    recommended = choose_eps(T, levels.gamma, sigma_L)
    eps = recommended if eps is None else _positive_float(eps, "eps")
    x = initial_noise(shape, generator, x_init)
    if x_init is None:
        x = x * levels.sigma_1
    B = x.shape[0]
    if cond is not None and cond.shape[:1] != (B,):
        raise ValueError(f"cond must have shape ({B},), got {tuple(cond.shape)}")
    guard = DivergenceGuard.for_start(
        x, levels.sigma_1, "annealed Langevin",
        fix=f"Use a smaller eps (now {eps:.4g}): eps < 4 sigma_L^2 = {4 * sigma_L**2:.4g} is necessary, and "
            f"choose_eps(T={T}, gamma={levels.gamma:.4f}, sigma_L={sigma_L:.4g}) = {recommended:.4g} is the value "
            "of Song & Ermon 2020, Technique 4.",
        growth_limit=growth_limit,
    )
    logger.debug("annealed Langevin: %r, T = %d, eps = %.4g", levels, T, eps)

    net = CallCounter(model)

    def score(x: Tensor, sigma: float) -> Tensor:
        out = net(x, torch.full((B,), sigma, dtype=torch.float32, device=x.device), cond)
        if out.shape != x.shape:
            raise ValueError(f"score model output has shape {tuple(out.shape)}, expected {tuple(x.shape)}")
        return out.to(x.dtype)

    sigmas = levels.sigmas.tolist()

    def step(k: int, i: int, i_next: int, x: Tensor) -> tuple[Tensor, Tensor]:
        """Level i (1..L): T Langevin steps at sigma_i, then (after level L) the final denoising."""
        sigma = sigmas[i - 1]
        alpha = annealed_step_size(eps, sigma, sigma_L)
        for n in range(1, T + 1):
            s = score(x, sigma)
            x0 = x + sigma**2 * s
            x = langevin_step(x, s, alpha, _randn(x, generator))
            check_langevin_state(x, guard, level=i, num_levels=L, sigma=sigma, step_size=alpha, step=n, steps=T)
        if i == L and final_denoise:
            x = x + sigma_L**2 * score(x, sigma_L)
            check_langevin_state(x, guard, level=L, num_levels=L, sigma=sigma_L, step_size=sigma_L**2,
                                 step=T + 1, steps=T + 1)
        return x, x0

    return run_loop(x, [*range(1, L + 1), 0], step, counter=net, callback=callback,
                    return_trajectory=return_trajectory, progress=progress, name="annealed Langevin",
                    visited=torch.arange(1, L + 1))


# --------------------------------------------------------------------------------------------------
# DDPM networks as score models: Langevin corrector, predictor-corrector
# --------------------------------------------------------------------------------------------------
class _Corrector:
    """Langevin corrector on q(x_t) for a DDPM network: score s = -eps_hat / sqrt(1 - alpha_bar_t) from the
    loop's :class:`~elbolab.diffusion.loop.Denoiser`, step size by the signal-to-noise rule with a = alpha_t =
    alpha_bar(t) / alpha_bar(t') of the (respaced) chain (t' the next visited time); checks divergence after
    every step."""

    def __init__(self, den: Denoiser, generator: torch.Generator, snr: float, growth_limit: float,
                 name: str) -> None:
        self.den, self.generator, self.snr = den, generator, snr
        self.growth_limit, self.name = growth_limit, name
        self.guard: DivergenceGuard | None = None

    def start(self, x: Tensor) -> None:
        if self.guard is None:
            self.guard = DivergenceGuard.for_start(
                x, 1.0, self.name, fix=f"Use a smaller snr (now {self.snr:.4g}; e.g. {self.snr / 2:.4g}) or fewer "
                                       "corrector steps.", growth_limit=self.growth_limit)

    def alpha(self, t: int | float, t_next: int | float) -> float:
        """alpha_t of the respaced chain: alpha_bar(t) / alpha_bar(t_next) (alpha_bar(0) = 1)."""
        return float(self.den.alpha_bar(t)) / float(self.den.alpha_bar(t_next))

    def run(self, x: Tensor, t: int | float, a_t: float, n_steps: int, first: Denoised | None = None) -> Tensor:
        """``n_steps`` Langevin steps targeting q(x_t); ``first``: the network evaluation at the current x, if
        already made (saves the first evaluation)."""
        self.start(x)
        assert self.guard is not None
        abar = self.den.alpha_bar(t)
        sigma = math.sqrt(1.0 - float(abar))
        for step in range(1, n_steps + 1):
            pred = first if step == 1 and first is not None else self.den(x, t)
            s = param.score_from_eps(pred.eps, abar)
            z = _randn(x, self.generator)
            alpha = snr_step_size(s, z, self.snr, a_t)
            x = langevin_step(x, s, alpha, z)
            check_langevin_state(x, self.guard, level=t, num_levels=self.den.diffusion.T, sigma=sigma,
                                 step_size=alpha, step=step, steps=n_steps)
        return x


def _enter_ddpm(model: nn.Module, shape: tuple[int, ...], diffusion: GaussianDiffusion, generator: torch.Generator,
                cond: Tensor | None, x_T: Tensor | None) -> tuple[Tensor, Denoiser]:
    check_generator(generator)
    x = initial_noise(shape, generator, x_T)
    if cond is not None and cond.shape[:1] != (x.shape[0],):
        raise ValueError(f"cond must have shape ({x.shape[0]},), got {tuple(cond.shape)}")
    return x, Denoiser(model, diffusion, cond)


@torch.no_grad()
def langevin(
    model: nn.Module,
    shape: tuple[int, ...],
    diffusion: GaussianDiffusion,
    *,
    steps: int | None = None,
    generator: torch.Generator,
    cond: Tensor | None = None,
    callback: Callback | None = None,
    corrector_steps: int = 1,
    snr: float = 0.16,
    spacing: Spacing | str = Spacing.LEADING,
    timesteps: Sequence[int | float] | Tensor | None = None,
    final_denoise: bool = True,
    clip_x0: bool = False,
    x_T: Tensor | None = None,
    return_trajectory: bool = False,
    progress: bool = False,
    growth_limit: float = DEFAULT_GROWTH_LIMIT,
) -> SampleResult:
    """Annealed Langevin dynamics with a DDPM network as the score model (the "corrector only" sampler).

    x ~ N(0, I); for each visited t (``steps`` of them, descending, from ``sampling_timesteps``):
    ``corrector_steps`` Langevin steps on q(x_t) with s = -eps_hat / sqrt(1 - alpha_bar_t) and the
    signal-to-noise step rule (ratio ``snr``); with ``final_denoise`` the result is x0_hat(x, t_min) (Tweedie's
    estimate, clipped to [-1, 1] with ``clip_x0``). ``nfe = (S corrector_steps + final_denoise)`` network calls
    (times the model's ``nfe_per_call``). ``StepInfo.x0`` / ``x0s``: x0_hat at the start of each level.
    """
    M = _positive_int(corrector_steps, "corrector_steps")
    snr = _positive_float(snr, "snr")
    x, den = _enter_ddpm(model, shape, diffusion, generator, cond, x_T)
    times = time_grid(diffusion, steps, spacing, timesteps=timesteps)
    corrector = _Corrector(den, generator, snr, growth_limit, "Langevin (DDPM score)")

    def step(k: int, t: int | float, t_next: int | float, x: Tensor) -> tuple[Tensor, Tensor]:
        pred = den(x, t)
        x0 = pred.x0
        x = corrector.run(x, t, corrector.alpha(t, t_next), M, pred)
        if t_next == 0 and final_denoise:
            x0 = den(x, t).x0
            x = x0.clamp(-1.0, 1.0) if clip_x0 else x0
            return x, x
        return x, x0.clamp(-1.0, 1.0) if clip_x0 else x0

    return run_loop(x, times, step, counter=den, callback=callback, return_trajectory=return_trajectory,
                    progress=progress, name="langevin")


@torch.no_grad()
def predictor_corrector(
    model: nn.Module,
    shape: tuple[int, ...],
    diffusion: GaussianDiffusion,
    *,
    steps: int | None = None,
    generator: torch.Generator,
    cond: Tensor | None = None,
    callback: Callback | None = None,
    corrector_steps: int = 1,
    snr: float = 0.16,
    spacing: Spacing | str = Spacing.LEADING,
    timesteps: Sequence[int | float] | Tensor | None = None,
    clip_x0: bool = False,
    x_T: Tensor | None = None,
    return_trajectory: bool = False,
    progress: bool = False,
    growth_limit: float = DEFAULT_GROWTH_LIMIT,
) -> SampleResult:
    """Predictor-corrector sampling (Song et al. 2021, Algorithm 5): ancestral predictor + Langevin corrector.

    For each visited step i = S..1 (t = tau_i): the ancestral step of the respaced chain x_{tau_{i-1}} =
    mu_theta(x_{tau_i}) + sigma z (:func:`elbolab.diffusion.samplers.ancestral_step`; z = 0 at the last step),
    then, if i > 1, ``corrector_steps`` Langevin steps on q(x_{tau_{i-1}}) with the signal-to-noise rule.
    ``nfe = S + corrector_steps (S - 1)`` (times ``nfe_per_call``); ``x0s``: the predictor's x0_hat.
    """
    M = _positive_int(corrector_steps, "corrector_steps")
    snr = _positive_float(snr, "snr")
    x, den = _enter_ddpm(model, shape, diffusion, generator, cond, x_T)
    times = time_grid(diffusion, steps, spacing, timesteps=timesteps)
    S = len(times) - 1
    chain = respace(diffusion, torch.tensor(times[-2::-1]))
    corrector = _Corrector(den, generator, snr, growth_limit, "predictor-corrector")

    def step(k: int, t: int | float, t_next: int | float, x: Tensor) -> tuple[Tensor, Tensor]:
        corrector.start(x)
        pred = den(x, t)
        i = S - k  # the index of t in the respaced chain
        x, x0 = _ancestral_update(chain, i, x, pred.x0, pred.eps, _randn(x, generator) if i > 1 else None, clip_x0)
        if i > 1:
            x = corrector.run(x, t_next, corrector.alpha(t_next, times[k + 2]), M)
        return x, x0

    return run_loop(x, times, step, counter=den, callback=callback, return_trajectory=return_trajectory,
                    progress=progress, name="predictor-corrector")
