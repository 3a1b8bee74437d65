"""Noise schedules of a variational diffusion model: beta_t, alpha_t = 1 - beta_t, alpha_bar_t = prod_s alpha_s.

Notation of Ho et al. 2020 and Luo 2022 (lecture notes 000/001): the forward step is
q(x_t | x_{t-1}) = N(sqrt(alpha_t) x_{t-1}, (1 - alpha_t) I) and its closed form q(x_t | x_0) =
N(sqrt(alpha_bar_t) x_0, (1 - alpha_bar_t) I).

Convention (DESIGN.md): discrete time t in {1, ..., T}; every schedule tensor has length T + 1 and index 0
means "no noise" (betas[0] = 0, alphas[0] = 1, alpha_bars[0] = 1, snr[0] = inf). Tensors are float64 on the
CPU; :class:`~elbolab.diffusion.process.GaussianDiffusion` casts the entries it gathers.

Continuous time (Kingma et al. 2021, "VDM"; Luo 2022, Sec. "VDM"): the process is fixed by its log
signal-to-noise ratio lambda(t) = log(alpha_bar(t) / (1 - alpha_bar(t))), with alpha_bar = sigmoid(lambda)
and 1 - alpha_bar = sigmoid(-lambda) (variance preserving). A discrete schedule is this process read at the
grid t = 1..T; between grid points :meth:`NoiseSchedule.log_snr_at` is the monotone cubic Hermite
interpolant of lambda (Fritsch & Carlson 1980, "PCHIP": C^1, strictly decreasing, exact at integer t) and on
(0, 1) the power law SNR(t) = SNR(1) t^{lambda'(1)} (log-linear in t, C^1 at t = 1, lambda(0+) = +inf).
"""

from __future__ import annotations

import bisect
import logging
import math
from typing import Sequence

import torch
from torch import Tensor

from elbolab.config import ConfigError, coerce
from elbolab.diffusion.config import ScheduleKind

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

    def __init__(self, betas: Tensor, kind: str = "custom", *, warn_terminal: bool = True) -> None:
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
        if warn_terminal and self.alpha_bars[-1] > ALPHA_BAR_T_WARNING:
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
    def from_alpha_bars(cls, alpha_bars: Sequence[float] | Tensor, *, warn_terminal: bool = True) -> NoiseSchedule:
        """A schedule from alpha_bar_1..alpha_bar_T (length T): must be strictly decreasing, in (0, 1).
        ``warn_terminal=False``: no warning for a large alpha_bar_T (a view of another process that ends there
        by design, e.g. a VDM with a small gamma_1 or NCSN's sigma_max)."""
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
        return cls(1.0 - full[1:] / full[:-1], warn_terminal=warn_terminal)

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

    # ---------------------------------------------------------------------------------------------
    # continuous time: log-SNR interpolation
    # ---------------------------------------------------------------------------------------------
    def _hermite(self) -> tuple[Tensor, Tensor]:
        """(lambda_1..lambda_T, d_1..d_T): grid values and PCHIP slopes d_k = lambda'(k), float64 (T,).

        Interior slopes are the harmonic mean of the neighbouring secants (Fritsch & Carlson 1980 for a
        uniform grid), the end slopes the one-sided secants; every |d_k| <= 2 min(|secants|), which keeps the
        cubic strictly decreasing. T = 1 has no secant: d_1 = -1 (SNR(t) = SNR(1) / t on (0, 1])."""
        cache = getattr(self, "_hermite_cache", None)
        if cache is not None:
            return cache
        lam = self.log_snr[1:].clone()
        if lam.numel() == 1:
            d = torch.full_like(lam, -1.0)
        else:
            sec = lam[1:] - lam[:-1]  # (T - 1,), all < 0
            d = torch.empty_like(lam)
            d[0], d[-1] = sec[0], sec[-1]
            if lam.numel() > 2:
                d[1:-1] = 2.0 / (1.0 / sec[:-1] + 1.0 / sec[1:])
        self._hermite_cache = (lam, d)
        return lam, d

    def log_snr_of(self, t: Tensor) -> Tensor:
        """lambda at ``t: (B,)``: the table ``log_snr[t]`` for integer t, :meth:`log_snr_at` for float t;
        float64 on the CPU. What a network view of another process (VDM, NCSN's VE levels) reads per call."""
        tc = t.detach().cpu()
        return self.log_snr_at(tc.double()) if tc.dtype.is_floating_point else self.log_snr[tc.long()]

    def log_snr_at(self, t: Tensor | float) -> Tensor:
        """lambda(t) for float ``t`` in (0, T] (any shape), float64 on the CPU; equals ``log_snr[t]`` at
        integer t. Values outside (0, T] raise a ValueError (checked here: call it once per sampler step,
        not per element of a batch)."""
        t = torch.as_tensor(t, dtype=torch.float64).cpu()
        T = self.T
        if t.numel() and (not bool(torch.isfinite(t).all()) or float(t.min()) <= 0.0 or float(t.max()) > T):
            raise ValueError(f"continuous time t must lie in (0, {T}] (T = {T}), got values in "
                             f"{float(t.min())!r}..{float(t.max())!r}")
        lam, d = self._hermite()
        if T == 1:
            return lam[0] + d[0] * torch.log(t)
        k = t.floor().clamp(1, T - 1).long()  # segment [k, k + 1]
        u = t - k
        l0, l1, d0, d1 = lam[k - 1], lam[k], d[k - 1], d[k]
        u2, u3 = u * u, u * u * u
        inner = (2 * u3 - 3 * u2 + 1) * l0 + (u3 - 2 * u2 + u) * d0 + (-2 * u3 + 3 * u2) * l1 + (u3 - u2) * d1
        below = lam[0] + d[0] * torch.log(t.clamp_max(1.0))  # (0, 1): SNR(1) t^{d_1}
        return torch.where(t < 1.0, below, inner)

    def alpha_bar_at(self, t: Tensor | float) -> Tensor:
        """alpha_bar(t) = sigmoid(lambda(t)) for float t in (0, T], float64; exactly ``alpha_bars[t]`` at integer t."""
        t = torch.as_tensor(t, dtype=torch.float64).cpu()
        out = torch.sigmoid(self.log_snr_at(t))
        on_grid = t == t.round()
        if bool(on_grid.any()):
            out = torch.where(on_grid, self.alpha_bars[t.round().long().clamp(0, self.T)], out)
        return out

    def one_minus_alpha_bar_at(self, t: Tensor | float) -> Tensor:
        """1 - alpha_bar(t) = sigmoid(-lambda(t)) without cancellation, float64; ``1 - alpha_bars[t]`` on the grid."""
        t = torch.as_tensor(t, dtype=torch.float64).cpu()
        out = torch.sigmoid(-self.log_snr_at(t))
        on_grid = t == t.round()
        if bool(on_grid.any()):
            out = torch.where(on_grid, (1.0 - self.alpha_bars)[t.round().long().clamp(0, self.T)], out)
        return out

    def t_from_log_snr(self, log_snr: Tensor | float) -> Tensor:
        """The inverse of :meth:`log_snr_at`: t in (0, T] with lambda(t) = ``log_snr`` (float64, any shape).

        Exact on (0, 1) (the power law), Newton's method to machine precision on the PCHIP segments; values above
        lambda(T) only (more noise than t = T) raise a ValueError."""
        if isinstance(log_snr, float) or (isinstance(log_snr, Tensor) and log_snr.numel() == 1 and log_snr.ndim == 0):
            return torch.tensor(self._t_from_log_snr_scalar(float(log_snr)), dtype=torch.float64)
        lam_in = torch.as_tensor(log_snr, dtype=torch.float64).cpu()
        lam, d = self._hermite()
        T = self.T
        lo_lam = float(lam[-1])
        if lam_in.numel() and float(lam_in.min()) < lo_lam - 1e-12 * max(1.0, abs(lo_lam)):
            raise ValueError(f"log-SNR {float(lam_in.min())!r} is below lambda(T) = {lo_lam!r}: no t in (0, {T}]")
        lam_c = lam_in.clamp_min(lo_lam)
        below = torch.exp((lam_c - lam[0]) / d[0])  # t < 1: lambda = lambda_1 + d_1 log t
        if T == 1:
            return below.clamp_max(1.0)
        # segment k (lambda_k >= target >= lambda_{k+1}), then Newton on the (strictly monotone) cubic in u
        k = (torch.searchsorted(-lam, -lam_c.reshape(-1), right=False).clamp(1, T - 1)).reshape(lam_c.shape)
        l0, l1, d0, d1 = lam[k - 1], lam[k], d[k - 1], d[k]
        u = ((lam_c - l0) / (l1 - l0)).clamp(0.0, 1.0)
        for _ in range(30):
            u2, u3 = u * u, u * u * u
            f = (2 * u3 - 3 * u2 + 1) * l0 + (u3 - 2 * u2 + u) * d0 + (-2 * u3 + 3 * u2) * l1 + (u3 - u2) * d1
            df = (6 * u2 - 6 * u) * l0 + (3 * u2 - 4 * u + 1) * d0 + (-6 * u2 + 6 * u) * l1 + (3 * u2 - 2 * u) * d1
            u = (u - (f - lam_c) / df).clamp(0.0, 1.0)
        inner = k.double() + u
        return torch.where(lam_c > lam[0], below, inner)

    def _t_from_log_snr_scalar(self, target: float) -> float:
        """:meth:`t_from_log_snr` for one value in plain floats (the likelihood ODE asks once per evaluation)."""
        cache = getattr(self, "_hermite_lists", None)
        if cache is None:
            lam_t, d_t = self._hermite()
            cache = self._hermite_lists = ([-v for v in lam_t.tolist()], lam_t.tolist(), d_t.tolist())
        neg, lam, d = cache
        T = self.T
        if not math.isfinite(target) or target < lam[-1] - 1e-12 * max(1.0, abs(lam[-1])):
            raise ValueError(f"log-SNR {target!r} is below lambda(T) = {lam[-1]!r}: no t in (0, {T}]")
        target = max(target, lam[-1])
        if target > lam[0] or T == 1:
            return min(math.exp((target - lam[0]) / d[0]), 1.0)
        k = min(max(bisect.bisect_left(neg, -target), 1), T - 1)
        l0, l1, d0, d1 = lam[k - 1], lam[k], d[k - 1], d[k]
        u = min(max((target - l0) / (l1 - l0), 0.0), 1.0)
        for _ in range(30):
            u2, u3 = u * u, u * u * u
            f = (2 * u3 - 3 * u2 + 1) * l0 + (u3 - 2 * u2 + u) * d0 + (-2 * u3 + 3 * u2) * l1 + (u3 - u2) * d1
            df = (6 * u2 - 6 * u) * l0 + (3 * u2 - 4 * u + 1) * d0 + (-6 * u2 + 6 * u) * l1 + (3 * u2 - 2 * u) * d1
            step = (f - target) / df
            u = min(max(u - step, 0.0), 1.0)
            if abs(step) < 1e-15:
                break
        return k + u

    def __repr__(self) -> str:
        return (
            f"NoiseSchedule(kind={self.kind!r}, T={self.T}, beta_1={self.betas[1].item():.3g}, "
            f"beta_T={self.betas[-1].item():.3g}, alpha_bar_T={self.alpha_bars[-1].item():.3g})"
        )


def _check_T(T: int) -> None:
    if isinstance(T, bool) or not isinstance(T, int) or T < 1:
        raise ScheduleError(f"T = {T!r} must be an integer >= 1 (number of diffusion steps)")
