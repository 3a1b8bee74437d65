"""Exact results for Gaussian data, the oracles of the VDM tests (all float64).

Data x ~ N(mu, s^2 I) in D dimensions, z_t = alpha x + sigma eps (alpha^2 = sigmoid(-gamma)). Then
z_t ~ N(alpha mu, v I) with v = alpha^2 s^2 + sigma^2, and the exact denoiser is the posterior mean

    eps_hat(z; gamma) = E[eps | z] = sigma (z - alpha mu) / v,
    E ||eps - eps_hat||^2 = D alpha^2 s^2 / v = D s^2 SNR / (s^2 SNR + 1)      (averaged over x and eps).

Averaged over the data, with that denoiser (derivations in the docstrings below):

    L_inf = D/2 [log(1 + s^2 SNR_0) - log(1 + s^2 SNR_1)]            (only the endpoints: VDM Sec. 5.1)
    L_T   = 1/2 sum_{i=1}^T expm1(gamma(i/T) - gamma((i-1)/T)) D s^2 SNR(i/T) / (s^2 SNR(i/T) + 1)
    prior = D/2 [alpha_1^2 (|mu|^2/D + s^2) + sigma_1^2 - log sigma_1^2 - 1]
    reconstruction (Gaussian decoder N(z_0/alpha_0, e^{gamma_0})) = D/2 (log 2 pi + gamma_0 + 1)
    entropy of the data H = D/2 (log 2 pi s^2 + 1)  (= E[-log q(x)], the best any model can reach)

and the gap of the continuous-time bound to H is a sum of an endpoint term at each end,
gap = reconstruction + prior + L_inf - H = D/2 log(1 + e^{gamma_0} / s^2) + KL(q(z_1) || N(0, I)), which
vanishes as gamma_0 -> -inf and gamma_1 -> +inf.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from elbolab.math import append_dims
from elbolab.vdm.schedules import alpha_sigma

__all__ = [
    "GaussianDataDenoiser",
    "gaussian_entropy",
    "gaussian_gap",
    "gaussian_l_inf",
    "gaussian_l_t",
    "gaussian_prior",
    "gaussian_reconstruction",
]


class GaussianDataDenoiser(nn.Module):
    """The exact eps-denoiser of x ~ N(mean, var I), called like a network ``(z: (B, D), c: (B,), y) -> (B, D)``.

    ``c`` is :class:`~elbolab.vdm.model.VDMModel`'s network time; ``gamma_range`` and ``time_scale`` must be
    those of the model it sits in (gamma = lo + (hi - lo) c / time_scale). A fixed denoiser in x-space
    (a function of (z, gamma) only), so L_inf does not depend on the schedule's shape.
    """

    def __init__(self, mean: Tensor | float, var: float, gamma_range: tuple[float, float],
                 time_scale: float = 1000.0) -> None:
        super().__init__()
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float64))
        self.var = float(var)
        self.lo, self.hi = (float(v) for v in gamma_range)
        self.time_scale = float(time_scale)

    def forward(self, z: Tensor, c: Tensor, y: Tensor | None = None) -> Tensor:
        gamma = self.lo + (self.hi - self.lo) * c.double() / self.time_scale
        alpha, sigma = alpha_sigma(gamma)
        alpha, sigma = append_dims(alpha, z.ndim), append_dims(sigma, z.ndim)
        v = alpha**2 * self.var + sigma**2
        return (sigma * (z.double() - alpha * self.mean.to(z.device)) / v).to(z.dtype)


def _log1p_s2_snr(s2: float, gamma: Tensor) -> Tensor:
    """log(1 + s^2 exp(-gamma)), stable for large |gamma|."""
    return torch.logaddexp(torch.zeros_like(gamma), math.log(s2) - gamma)


def gaussian_l_inf(D: int, s2: float, gamma_0: float, gamma_1: float) -> float:
    """L_inf with the exact denoiser, nats per example (averaged over x).

    1/2 int_0^1 gamma' D u/(1 + u) dt with u = s^2 e^{-gamma}: substituting du = -u dgamma gives
    D/2 [log(1 + u)]_{gamma_1}^{gamma_0}, which depends on the endpoints only.
    """
    g = torch.tensor([gamma_0, gamma_1], dtype=torch.float64)
    lg = _log1p_s2_snr(s2, g)
    return float(0.5 * D * (lg[0] - lg[1]))


def gaussian_l_t(D: int, s2: float, gammas: Tensor) -> float:
    """L_T with the exact denoiser, nats per example; ``gammas: (T + 1,)`` = gamma(i / T), i = 0..T.

    Sum over the T steps of 1/2 expm1(gamma_t - gamma_s) E||eps - eps_hat(z_t)||^2 (eq. 13 with the optimal
    x_hat = E[x | z_t], whose error in eps units is D s^2 SNR_t / (s^2 SNR_t + 1)).
    """
    g = gammas.double()
    g_t, g_s = g[1:], g[:-1]
    mse = D * torch.exp(math.log(s2) - g_t - _log1p_s2_snr(s2, g_t))
    return float(0.5 * (torch.expm1(g_t - g_s) * mse).sum())


def gaussian_prior(mean: Tensor, s2: float, gamma_1: float) -> float:
    """E_x KL(q(z_1|x) || N(0, I)) for x ~ N(mean, s2 I), ``mean: (D,)``; nats per example."""
    g1 = torch.tensor(gamma_1, dtype=torch.float64)
    a2, sig2 = torch.sigmoid(-g1), torch.sigmoid(g1)
    m = mean.double()
    D = m.numel()
    return float(0.5 * (a2 * ((m**2).sum() + D * s2) + D * (sig2 - torch.log(sig2) - 1.0)))


def gaussian_reconstruction(D: int, gamma_0: float) -> float:
    """E -log N(x; z_0/alpha_0, e^{gamma_0} I) = D/2 (log 2 pi + gamma_0 + 1): z_0/alpha_0 = x + e^{gamma_0/2} eps."""
    return 0.5 * D * (math.log(2 * math.pi) + gamma_0 + 1.0)


def gaussian_entropy(D: int, s2: float) -> float:
    """E[-log N(x; mu, s2 I)] = D/2 (log 2 pi s2 + 1), nats."""
    return 0.5 * D * (math.log(2 * math.pi * s2) + 1.0)


def gaussian_gap(mean: Tensor, s2: float, gamma_0: float, gamma_1: float) -> float:
    """reconstruction + prior + L_inf - entropy, in closed form (nats per example, >= 0).

    = D/2 log(1 + e^{gamma_0}/s^2)                      (decoder end: the reconstruction term's excess)
      + KL(N(alpha_1 mu, (alpha_1^2 s^2 + sigma_1^2) I) || N(0, I))   (prior end: q(z_1) vs p(z_1))
    """
    m = mean.double()
    D = m.numel()
    g1 = torch.tensor(gamma_1, dtype=torch.float64)
    a2, sig2 = torch.sigmoid(-g1), torch.sigmoid(g1)
    v = a2 * s2 + sig2
    kl_marginal = 0.5 * (a2 * (m**2).sum() + D * (v - torch.log(v) - 1.0))
    return float(0.5 * D * math.log1p(math.exp(gamma_0) / s2) + kl_marginal)
