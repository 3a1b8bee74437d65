"""Noise schedules of a variational diffusion model: beta_t, alpha_t = 1 - beta_t, alpha_bar_t = prod_s alpha_s.

Notation of Ho et al. 2020 and Luo 2022 (lecture notes 000/001): the forward step is
q(x_t | x_{t-1}) = N(sqrt(alpha_t) x_{t-1}, (1 - alpha_t) I) and its closed form q(x_t | x_0) =
N(sqrt(alpha_bar_t) x_0, (1 - alpha_bar_t) I).

Convention (DESIGN.md): discrete time t in {1, ..., T}; every schedule tensor has length T + 1 and index 0
means "no noise" (betas[0] = 0, alphas[0] = 1, alpha_bars[0] = 1, snr[0] = inf). Tensors are float64 on the
CPU; :class:`~elbolab.diffusion.process.GaussianDiffusion` casts the entries it gathers.
"""

from __future__ import annotations

import logging
import math
from typing import Sequence

import torch
from torch import Tensor

from elbolab.config import ConfigError, ScheduleKind, coerce

__all__ = ["NoiseSchedule", "ScheduleError"]

logger = logging.getLogger(__name__)

#: alpha_bar_T above this leaves visible signal in x_T, so that p(x_T) = N(0, I) is a poor prior.
ALPHA_BAR_T_WARNING = 1e-2


class ScheduleError(ValueError):
    """An invalid noise schedule; the message names the bad value and what is allowed."""


def _as_float64_vector(values: Sequence[float] | Tensor, name: str) -> Tensor:
    t = torch.as_tensor(values, dtype=torch.float64).detach().cpu().clone()
    if t.ndim != 1:
        raise ScheduleError(f"{name} must be a 1-D sequence of length T >= 1, got shape {tuple(t.shape)}")
    if t.numel() < 1:
        raise ScheduleError(f"{name} is empty: need T >= 1 values (t = 1..T)")
    bad = ~torch.isfinite(t)
    if bad.any():
        i = int(bad.nonzero()[0])
        raise ScheduleError(f"{name}[t={i + 1}] = {t[i].item()!r} is not finite")
    return t


class NoiseSchedule:
    """A fixed variance schedule beta_1..beta_T with its derived quantities (all float64, shape (T+1,)).

    Build with :meth:`linear` (Ho et al. 2020), :meth:`cosine` (Nichol & Dhariwal 2021), :meth:`from_betas`
    or :meth:`from_alpha_bars`. Validation: T >= 1, every beta_t in (0, 1), alpha_bar strictly decreasing
    from alpha_bar_0 = 1 and positive; violations raise :class:`ScheduleError` (a ValueError).
    """

    def __init__(self, betas: Tensor, kind: str = "custom") -> None:
        betas = _as_float64_vector(betas, "betas")
        bad = (betas <= 0.0) | (betas >= 1.0)
        if bad.any():
            i = int(bad.nonzero()[0])
            raise ScheduleError(
                f"betas[t={i + 1}] = {betas[i].item()!r} is outside (0, 1): every beta_t must satisfy 0 < beta_t < 1"
            )
        self.kind = kind
        self.betas = torch.cat([torch.zeros(1, dtype=torch.float64), betas])
        self.alphas = 1.0 - self.betas
        self.alpha_bars = torch.cumprod(self.alphas, dim=0)
        if self.alpha_bars[-1] > ALPHA_BAR_T_WARNING:
            logger.warning(
                "noise schedule ends at alpha_bar_T = %.3g: x_T keeps signal and the prior N(0, I) mismatches "
                "q(x_T); for short chains scale beta (e.g. linear(T, 1e-4 * 1000 / T, 0.02 * 1000 / T))",
                float(self.alpha_bars[-1]),
            )

    # ---------------------------------------------------------------------------------------------
    # constructors
    # ---------------------------------------------------------------------------------------------
    @classmethod
    def linear(cls, T: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> NoiseSchedule:
        """beta_t linear from ``beta_start`` (t = 1) to ``beta_end`` (t = T): Ho et al. 2020, Sec. 4.

        The defaults are the paper's values for T = 1000. For shorter chains scale both by 1000 / T (as
        improved-diffusion does); otherwise alpha_bar_T stays large (T = 100: 0.36) and a warning is logged.
        """
        _check_T(T)
        if not 0.0 < beta_start < 1.0 or not 0.0 < beta_end < 1.0:
            raise ScheduleError(
                f"linear schedule: beta_start = {beta_start!r}, beta_end = {beta_end!r}: both must be in (0, 1)"
            )
        betas = torch.linspace(beta_start, beta_end, T, dtype=torch.float64)
        return cls(betas, kind=ScheduleKind.LINEAR.value)

    @classmethod
    def cosine(cls, T: int = 1000, s: float = 0.008, max_beta: float = 0.999) -> NoiseSchedule:
        """Cosine schedule of Nichol & Dhariwal 2021, eq. 17: alpha_bar(t) = f(t) / f(0) with
        f(t) = cos^2(pi/2 (t/T + s) / (1 + s)).

        beta_t = 1 - alpha_bar(t)/alpha_bar(t-1) clipped at ``max_beta`` (0.999) to avoid the singularity at t = T.
        """
        _check_T(T)
        if not s > 0.0:
            raise ScheduleError(f"cosine schedule: s = {s!r} must be > 0")
        if not 0.0 < max_beta < 1.0:
            raise ScheduleError(f"cosine schedule: max_beta = {max_beta!r} must be in (0, 1)")
        steps = torch.arange(T + 1, dtype=torch.float64)
        f = torch.cos((steps / T + s) / (1.0 + s) * math.pi / 2.0) ** 2
        abar = f / f[0]
        betas = (1.0 - abar[1:] / abar[:-1]).clamp(max=max_beta)
        return cls(betas, kind=ScheduleKind.COSINE.value)

    @classmethod
    def from_betas(cls, betas: Sequence[float] | Tensor) -> NoiseSchedule:
        """A schedule from beta_1..beta_T (length T, without the index-0 entry)."""
        return cls(_as_float64_vector(betas, "betas"))

    @classmethod
    def from_alpha_bars(cls, alpha_bars: Sequence[float] | Tensor) -> NoiseSchedule:
        """A schedule from alpha_bar_1..alpha_bar_T (length T): must be strictly decreasing, in (0, 1)."""
        ab = _as_float64_vector(alpha_bars, "alpha_bars")
        full = torch.cat([torch.ones(1, dtype=torch.float64), ab])
        if (ab <= 0.0).any():
            i = int((ab <= 0.0).nonzero()[0])
            raise ScheduleError(f"alpha_bars[t={i + 1}] = {ab[i].item()!r} must be > 0")
        increasing = full[1:] >= full[:-1]
        if increasing.any():
            i = int(increasing.nonzero()[0]) + 1
            raise ScheduleError(
                f"alpha_bar must be strictly decreasing from alpha_bar_0 = 1: alpha_bar_{i} = "
                f"{full[i].item()!r} >= alpha_bar_{i - 1} = {full[i - 1].item()!r}"
            )
        return cls(1.0 - full[1:] / full[:-1])

    @classmethod
    def from_kind(
        cls, kind: ScheduleKind | str, T: int, *, beta_start: float = 1e-4, beta_end: float = 0.02, s: float = 0.008
    ) -> NoiseSchedule:
        """Dispatch on a :class:`~elbolab.config.ScheduleKind` (or its string value)."""
        try:
            kind = coerce(kind, ScheduleKind, "schedule")
        except ConfigError as e:
            raise ScheduleError(str(e)) from None
        if kind is ScheduleKind.LINEAR:
            return cls.linear(T, beta_start, beta_end)
        return cls.cosine(T, s)

    # ---------------------------------------------------------------------------------------------
    # derived quantities
    # ---------------------------------------------------------------------------------------------
    @property
    def T(self) -> int:
        """Number of diffusion steps."""
        return self.betas.numel() - 1

    @property
    def snr(self) -> Tensor:
        """Signal-to-noise ratio alpha_bar_t / (1 - alpha_bar_t), shape (T+1,); snr[0] = inf."""
        return self.alpha_bars / (1.0 - self.alpha_bars)

    @property
    def log_snr(self) -> Tensor:
        """log SNR, shape (T+1,); log_snr[0] = inf. Strictly decreasing in t."""
        return torch.log(self.alpha_bars) - torch.log1p(-self.alpha_bars)

    @property
    def posterior_variances(self) -> Tensor:
        """beta_tilde_t = (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) beta_t (Ho et al. 2020, eq. 7), shape (T+1,).

        beta_tilde_1 = 0 (x_0 is known exactly given x_1 and x_0); index 0 is 0 by convention.
        """
        out = torch.zeros_like(self.betas)
        out[1:] = (1.0 - self.alpha_bars[:-1]) / (1.0 - self.alpha_bars[1:]) * self.betas[1:]
        return out

    def __repr__(self) -> str:
        return (
            f"NoiseSchedule(kind={self.kind!r}, T={self.T}, beta_1={self.betas[1].item():.3g}, "
            f"beta_T={self.betas[-1].item():.3g}, alpha_bar_T={self.alpha_bars[-1].item():.3g})"
        )


def _check_T(T: int) -> None:
    if isinstance(T, bool) or not isinstance(T, int) or T < 1:
        raise ScheduleError(f"T = {T!r} must be an integer >= 1 (number of diffusion steps)")
