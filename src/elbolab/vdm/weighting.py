"""Diffusion objectives as weighted ELBOs (Kingma & Gao 2023, "Understanding diffusion objectives as the ELBO
with simple data augmentation").

With lambda = log SNR = log(alpha_t^2 / sigma_t^2) (= -gamma of :mod:`elbolab.vdm.schedules`), any diffusion
objective is, per example, the weighted loss (K&G eq. 7, the VDM bound when w = 1)

    L_w(x) = 1/2 E_{t ~ U(0,1), eps} [ w(lambda_t) (-d lambda / dt) ||eps - eps_hat(z_t; lambda_t)||^2 ],

and for t ~ U(0, 1), -d lambda / dt = 1 / p(lambda), the density of lambda the objective samples. Writing an
objective's own per-example loss as 1/2 c(lambda) ||eps - eps_hat||^2 (all of them are weighted squared
errors of some parameterisation, and every parameterisation is an affine function of eps_hat at fixed z_t),
its weighting is w(lambda) = c(lambda) p(lambda). The c(lambda) (:func:`objective_factor`), with
e^{-lambda} = sigma^2 / alpha^2, any process z = alpha x + sigma eps:

| kind | own loss (1/2 of) | c(lambda) | w(lambda) |
| --- | --- | --- | --- |
| ``ELBO`` | the bound | -d lambda/dt | 1 |
| ``EPS`` (L_simple, Ho et al. 2020) | ||eps - eps_hat||^2 | 1 | p(lambda) |
| ``X0`` | ||x - x_hat||^2 | e^{-lambda} | p(lambda) e^{-lambda} |
| ``V`` (Salimans & Ho 2022; VP) | ||v - v_hat||^2, v = alpha eps - sigma x | 1 + e^{-lambda} | p (1 + e^{-lambda}) |
| ``MIN_SNR`` (Hang et al. 2023) | min(SNR, g) ||x - x_hat||^2 | min(1, g e^{-lambda}) | p min(1, g e^{-lambda}) |
| ``EDM`` (Karras+ 2022) | l(s) ||D(x + s eps; s) - x||^2 | (e^{-lambda} + s_d^2)/s_d^2 | p (e^{-lambda} + s_d^2)/s_d^2 |
| ``FLOW`` (rectified flow) | ||(eps - x) - v_hat||^2 | (1 + e^{-lambda/2})^2 | p (1 + e^{-lambda/2})^2 |

Derivations: x - x_hat = -(sigma/alpha)(eps - eps_hat); for VP v - v_hat = (eps - eps_hat) / alpha and
1/alpha^2 = 1 + e^{-lambda}; EDM's VE noise level s = sigma/alpha = e^{-lambda/2} with
l(s) = (s^2 + s_d^2)/(s s_d)^2; flow matching has alpha = 1 - t, sigma = t, so
(eps - x) - v_hat = (1 + sigma/alpha)(eps - eps_hat). Densities: EDM samples log s ~ N(P_mean, P_std^2), so
lambda = -2 log s ~ N(-2 P_mean, 4 P_std^2) (:func:`edm_density`); flow matching samples t ~ U(0, 1) with
lambda = 2 log((1 - t)/t), p(lambda) = t (1 - t) / 2 = sech^2(lambda/4) / 8 (:func:`flow_density`), so
w = e^{-lambda/2} / 2; the DDPM objectives sample their own schedule's t uniformly,
p(lambda) = 1 / (-d lambda / dt) (:func:`time_density`). The factor 1/2 in every own loss is the convention
of K&G; elbolab's L_simple is the mean over dimensions, (2/D) times it.
"""

from __future__ import annotations

import enum
import math

import torch
from torch import Tensor

from elbolab.math import sum_flat
from elbolab.vdm._choices import parse_choice

__all__ = [
    "Weighting",
    "edm_density",
    "flow_density",
    "flow_log_snr",
    "flow_neg_dlambda_dt",
    "objective_factor",
    "time_density",
    "weight",
    "weighted_loss",
]


class Weighting(str, enum.Enum):
    """The diffusion objectives whose weighting w(lambda) :func:`weight` gives (see the module table)."""

    ELBO = "elbo"
    EPS = "eps"
    X0 = "x0"
    V = "v"
    MIN_SNR = "min-snr"
    EDM = "edm"
    FLOW = "flow"


def parse_weighting(kind: Weighting | str) -> Weighting:
    return parse_choice(kind, Weighting, "weighting")


def objective_factor(
    kind: Weighting | str, lam: Tensor, *, neg_dlambda_dt: Tensor | None = None, min_snr_gamma: float = 5.0,
    sigma_data: float = 0.5,
) -> Tensor:
    """c(lambda) with the objective's own per-example loss = 1/2 c(lambda) ||eps - eps_hat||^2, ``lam``'s shape.

    ``ELBO`` needs ``neg_dlambda_dt`` (c = -d lambda/dt); ``min_snr_gamma`` is Min-SNR's g, ``sigma_data``
    EDM's s_d.
    """
    kind = parse_weighting(kind)
    if kind is Weighting.ELBO:
        if neg_dlambda_dt is None:
            raise ValueError("objective_factor('elbo') needs neg_dlambda_dt (c = -d lambda / dt)")
        return neg_dlambda_dt
    if kind is Weighting.EPS:
        return torch.ones_like(lam)
    if kind is Weighting.X0:
        return torch.exp(-lam)
    if kind is Weighting.V:
        return 1.0 + torch.exp(-lam)
    if kind is Weighting.MIN_SNR:
        if not min_snr_gamma > 0:
            raise ValueError(f"min_snr_gamma = {min_snr_gamma!r} must be > 0")
        return torch.clamp(min_snr_gamma * torch.exp(-lam), max=1.0)
    if kind is Weighting.EDM:
        if not sigma_data > 0:
            raise ValueError(f"sigma_data = {sigma_data!r} must be > 0")
        return (torch.exp(-lam) + sigma_data**2) / sigma_data**2
    return (1.0 + torch.exp(-0.5 * lam)) ** 2  # FLOW


def weight(
    kind: Weighting | str, lam: Tensor, density: Tensor | None = None, *, min_snr_gamma: float = 5.0,
    sigma_data: float = 0.5,
) -> Tensor:
    """w(lambda) = c(lambda) p(lambda) of objective ``kind`` (1 for ``ELBO``), ``lam``'s shape.

    ``density``: p(lambda) of the objective's sampling of lambda (:func:`time_density` for a schedule sampled
    uniformly in t, :func:`edm_density`, :func:`flow_density`); not needed for ``ELBO``.
    """
    kind = parse_weighting(kind)
    if kind is Weighting.ELBO:
        return torch.ones_like(lam)
    if density is None:
        raise ValueError(f"weight({kind.value!r}) needs the density p(lambda) of the objective's noise levels")
    return objective_factor(kind, lam, min_snr_gamma=min_snr_gamma, sigma_data=sigma_data) * density


def weighted_loss(w: Tensor, neg_dlambda_dt: Tensor, eps: Tensor, eps_hat: Tensor) -> Tensor:
    """1/2 w(lambda_t) (-d lambda/dt) ||eps - eps_hat||^2 per example, ``w, neg_dlambda_dt: (B,)`` -> ``(B,)``."""
    dt = torch.float64 if eps.dtype == torch.float64 else torch.float32
    mse = sum_flat((eps.to(dt) - eps_hat.to(dt)) ** 2)
    return 0.5 * w.to(dt) * neg_dlambda_dt.to(dt) * mse


def time_density(neg_dlambda_dt: Tensor) -> Tensor:
    """p(lambda) = 1 / (-d lambda / dt) of lambda(t) with t ~ U(0, 1)."""
    return 1.0 / neg_dlambda_dt


def edm_density(lam: Tensor, p_mean: float = -1.2, p_std: float = 1.2) -> Tensor:
    """p(lambda) of EDM's training noise, log s ~ N(P_mean, P_std^2): N(lambda; -2 P_mean, (2 P_std)^2)."""
    mu, sd = -2.0 * p_mean, 2.0 * p_std
    return torch.exp(-0.5 * ((lam - mu) / sd) ** 2) / (sd * math.sqrt(2.0 * math.pi))


def flow_log_snr(t: Tensor) -> Tensor:
    """lambda(t) = 2 log((1 - t) / t) of the rectified-flow path alpha_t = 1 - t, sigma_t = t."""
    return 2.0 * (torch.log1p(-t) - torch.log(t))


def flow_neg_dlambda_dt(t: Tensor) -> Tensor:
    """-d lambda / dt = 2 / (t (1 - t)) on the rectified-flow path."""
    return 2.0 / (t * (1.0 - t))


def flow_density(lam: Tensor) -> Tensor:
    """p(lambda) of the rectified-flow path with t ~ U(0, 1): sech^2(lambda / 4) / 8."""
    return 1.0 / (8.0 * torch.cosh(0.25 * lam) ** 2)
