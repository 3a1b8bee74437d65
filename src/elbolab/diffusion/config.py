"""Configuration of a Gaussian diffusion (DDPM family): noise schedule, parameterisation, reverse variance, loss.

The option sets are ``str`` Enums so that TOML stays readable (``prediction = "v"``); range checks sit next to
the fields in :meth:`DiffusionConfig.validate` (called by :func:`elbolab.config.from_dict`).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from elbolab.config import ConfigError, check_range


class ScheduleKind(str, enum.Enum):
    LINEAR = "linear"  # Ho et al. 2020: beta from 1e-4 to 0.02
    COSINE = "cosine"  # Nichol & Dhariwal 2021, s = 0.008


class PredictionKind(str, enum.Enum):
    """What the network outputs (``elbolab.diffusion.Prediction`` is this enum)."""

    EPS = "eps"
    X0 = "x0"
    V = "v"
    SCORE = "score"


class VarianceKind(str, enum.Enum):
    """Reverse-process variance sigma_t^2 of Ho et al. 2020, Sec. 3.2."""

    BETA = "beta"  # sigma_t^2 = beta_t ("fixed large")
    BETA_TILDE = "beta_tilde"  # sigma_t^2 = beta~_t = (1 - abar_{t-1}) / (1 - abar_t) beta_t ("fixed small")


class LossKind(str, enum.Enum):
    SIMPLE = "simple"  # L_simple of Algorithm 1 (unweighted MSE on the predicted quantity)
    ELBO = "elbo"  # the true ELBO weighting of the denoising-matching KL
    MIN_SNR = "min_snr"  # L_simple weighted to min(SNR_t, gamma) on x0 (Min-SNR-gamma, Hang et al. 2023)


class TimeSampling(str, enum.Enum):
    """How training draws t."""

    UNIFORM = "uniform"  # t ~ U{1..T} (Algorithm 1 of Ho et al. 2020; importance_sampling reweights it)
    LOGNORMAL = "lognormal"  # ln sigma_VE ~ N(lognormal_mean, lognormal_std^2), float t (Karras et al. 2022)


class Spacing(str, enum.Enum):
    """How a sampler with fewer steps than T picks its timesteps."""

    LEADING = "leading"  # DDIM paper: t = 1, 1 + k, 1 + 2k, ...
    LINSPACE = "linspace"  # evenly spaced from 1 to T inclusive
    TRAILING = "trailing"  # starts at t = T: T, T - k, ...
    LOGSNR = "logsnr"  # fractional t, uniform in log-SNR (the ODE solvers' grid, Lu et al. 2022)
    KARRAS = "karras"  # fractional t, sigma_i^(1/rho) uniform with rho = 7 (Karras et al. 2022, eq. 5)
    ANGLE = "angle"  # fractional t, uniform in atan(sigma_VE): a cosine-schedule DDPM's trailing grid, any schedule


class ReverseSampler(str, enum.Enum):
    """The two reverse chains the applications run from an intermediate x_t (``elbolab.apps``)."""

    ANCESTRAL = "ancestral"  # Algorithm 2 of Ho et al. 2020
    DDIM = "ddim"  # deterministic DDIM, eta = 0 (Song et al. 2021)


@dataclass
class DiffusionConfig:
    """Noise schedule, parameterisation and training loss of a Gaussian diffusion (DDPM)."""

    schedule: ScheduleKind = ScheduleKind.LINEAR
    T: int = 1000
    beta_start: float = 1e-4
    beta_end: float = 0.02
    cosine_s: float = 0.008
    prediction: PredictionKind = PredictionKind.EPS
    variance: VarianceKind = VarianceKind.BETA_TILDE
    loss: LossKind = LossKind.SIMPLE
    importance_sampling: bool = False  # sample t by the running loss (improved DDPM)
    # EDM's training noise distribution (P_mean = -1.2, P_std = 1.2) in continuous t; only with loss = "simple"
    t_sampling: TimeSampling = TimeSampling.UNIFORM
    lognormal_mean: float = -1.2
    lognormal_std: float = 1.2
    min_snr_gamma: float = 5.0  # gamma of LossKind.MIN_SNR
    p_uncond: float = 0.1  # conditional U-Net: label dropout into the null class (Ho & Salimans 2022)

    def validate(self, prefix: str) -> None:
        check_range(self, prefix, positive=("T", "min_snr_gamma", "cosine_s"))
        if not 0.0 < self.beta_start <= self.beta_end < 1.0:
            raise ConfigError(f"{prefix}.beta_start = {self.beta_start!r}, {prefix}.beta_end = {self.beta_end!r}: "
                              "need 0 < beta_start <= beta_end < 1")
        if not 0.0 <= self.p_uncond < 1.0:
            raise ConfigError(f"{prefix}.p_uncond = {self.p_uncond!r} must be in [0, 1)")
        if self.t_sampling == TimeSampling.LOGNORMAL:
            if self.loss != LossKind.SIMPLE or self.importance_sampling:
                raise ConfigError(f"{prefix}.t_sampling = 'lognormal' needs {prefix}.loss = 'simple' and "
                                  f"{prefix}.importance_sampling = false (got loss = {LossKind(self.loss).value!r}, "
                                  f"importance_sampling = {self.importance_sampling})")
            if not self.lognormal_std > 0:
                raise ConfigError(f"{prefix}.lognormal_std = {self.lognormal_std!r} must be > 0")
