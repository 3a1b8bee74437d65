"""Langevin dynamics: the step every score-based sampler shares, its two step-size rules, divergence checks.

One step (lecture notes 004, Algorithm 1, line 6; Song & Ermon 2019):

    x <- x + (alpha / 2) s(x) + sqrt(alpha) z,    z ~ N(0, I),

which for small alpha and many steps samples from the density whose score is s. Step sizes:

- annealed (NCSN): alpha_i = eps sigma_i^2 / sigma_L^2 at noise level sigma_i (:func:`annealed_step_size`);
- signal-to-noise (Song et al. 2021, Algorithms 4-5, the Langevin corrector):
  alpha = 2 * 2 a (r ||z|| / ||s||)^2 with the target ratio r = ``snr`` and a = alpha_t = 1 - beta_t of a
  variance-preserving chain (1 for variance-exploding levels) (:func:`snr_step_size`). Song et al. write the
  step as x + e s + sqrt(2 e) z, i.e. e = alpha / 2; their e = 2 a (r ||z|| / ||s||)^2. As in their code
  (score_sde ``LangevinCorrector``) ||z|| and ||s|| are per-example norms averaged over the batch: one step
  size per batch. (Per-example ratios fluctuate wildly in low dimension, where ||s|| can be ~0 near a mode.)

On a Gaussian of scale sigma (score -x / sigma^2) the step multiplies x by 1 - alpha / (2 sigma^2): it is stable
only for alpha < 4 sigma^2. A larger step grows |x| geometrically; :func:`check_langevin_state` turns that
(and NaN/inf) into a :class:`LangevinDivergenceError` that names the level, the step size and the fix, instead
of returning NaN images.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from elbolab.math import append_dims

__all__ = [
    "DivergenceGuard",
    "LangevinDivergenceError",
    "annealed_step_size",
    "check_langevin_state",
    "langevin_step",
    "snr_step_size",
]

#: a chain whose largest |x| exceeds this multiple of its starting scale is declared divergent
DEFAULT_GROWTH_LIMIT = 100.0


class LangevinDivergenceError(ValueError):
    """Langevin dynamics diverged (NaN/inf, or |x| grew far past the noise scale).

    ``level``: the noise level (1-based) or timestep where it happened; ``sigma``: its noise scale;
    ``step_size``: the alpha in use (the largest over the batch for per-example rules).
    """

    def __init__(self, message: str, *, level: int, sigma: float, step_size: float) -> None:
        super().__init__(message)
        self.level = level
        self.sigma = sigma
        self.step_size = step_size


def langevin_step(x: Tensor, score: Tensor, alpha: Tensor | float, noise: Tensor | None) -> Tensor:
    """x + (alpha / 2) score + sqrt(alpha) noise; ``alpha`` a float or a per-example ``(B,)`` tensor.

    ``x, score, noise: (B, ...)``; ``noise = None`` takes the mean step (no noise)."""
    if isinstance(alpha, Tensor):
        alpha = append_dims(alpha.to(x.dtype), x.ndim)
        out = x + 0.5 * alpha * score
        return out if noise is None else out + alpha.sqrt() * noise
    out = x + (0.5 * alpha) * score
    return out if noise is None else out + math.sqrt(alpha) * noise


def annealed_step_size(eps: float, sigma: float, sigma_L: float) -> float:
    """alpha_i = eps sigma_i^2 / sigma_L^2 (Song & Ermon 2019, Algorithm 1, line 3)."""
    return eps * sigma**2 / sigma_L**2


def snr_step_size(score: Tensor, noise: Tensor, snr: float, alpha_t: float = 1.0) -> float:
    """alpha = 4 a (r mean_b ||z_b|| / mean_b ||s_b||)^2 (the signal-to-noise rule of Song et al. 2021 in the
    notes' step convention; see the module doc) for ``score, noise: (B, ...)``; 0 if the score is exactly 0."""
    s_norm = float(score.reshape(score.shape[0], -1).double().norm(dim=1).mean())
    z_norm = float(noise.reshape(noise.shape[0], -1).double().norm(dim=1).mean())
    return 4.0 * alpha_t * (snr * z_norm / s_norm) ** 2 if s_norm > 0 else 0.0


@dataclass(frozen=True)
class DivergenceGuard:
    """What :func:`check_langevin_state` compares against: ``bound`` on max |x| (growth limit times the
    chain's starting scale), the sampler's ``name`` and the ``fix`` to suggest."""

    bound: float
    name: str
    fix: str

    @classmethod
    def for_start(cls, x0: Tensor, scale: float, name: str, fix: str,
                  growth_limit: float = DEFAULT_GROWTH_LIMIT) -> DivergenceGuard:
        """Bound = ``growth_limit`` x max(max |x0|, ``scale``) for the initial state ``x0``."""
        start = float(x0.detach().abs().amax()) if x0.numel() else 0.0
        if not math.isfinite(start):
            raise ValueError(f"{name}: the initial state contains NaN or inf")
        return cls(bound=growth_limit * max(start, scale), name=name, fix=fix)


def check_langevin_state(x: Tensor, guard: DivergenceGuard, *, level: int, num_levels: int, sigma: float,
                         step_size: float, step: int, steps: int) -> None:
    """Raise :class:`LangevinDivergenceError` if ``x`` has NaN/inf or max |x| > ``guard.bound``."""
    peak = float(x.detach().abs().amax()) if x.numel() else 0.0
    if math.isfinite(peak) and peak <= guard.bound:
        return
    what = "NaN or inf" if not math.isfinite(peak) else f"max |x| = {peak:.3g} > {guard.bound:.3g}"
    raise LangevinDivergenceError(
        f"{guard.name} diverged at noise level {level} of {num_levels} (sigma = {sigma:.4g}), Langevin step "
        f"{step} of {steps} with step size alpha = {step_size:.4g}: {what}. A Langevin step on a Gaussian of "
        f"scale sigma is stable only for alpha < 4 sigma^2 (here 4 sigma^2 = {4 * sigma**2:.4g}). {guard.fix}",
        level=level, sigma=sigma, step_size=step_size,
    )
