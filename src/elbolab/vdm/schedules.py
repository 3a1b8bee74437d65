"""Noise schedules of a variational diffusion model in continuous time (Kingma, Salimans, Poole & Ho 2021).

The forward process of a VDM is q(z_t | x) = N(alpha_t x, sigma_t^2 I) for t in [0, 1], variance preserving
(alpha_t^2 + sigma_t^2 = 1), and fixed entirely by the negative log signal-to-noise ratio (Sec. 3.2-3.3)

    gamma(t) = -log SNR(t) = log(sigma_t^2 / alpha_t^2),   alpha_t^2 = sigmoid(-gamma(t)),
    sigma_t^2 = sigmoid(gamma(t)),                          SNR(t) = exp(-gamma(t)),

with gamma strictly increasing (the SNR decreases with t). In Kingma & Gao 2023's notation lambda = -gamma.
A VDM's z_0 is not noise-free: its noise level is gamma_0 = gamma(0), and z_1 at gamma_1 = gamma(1) is
close to, not equal to, N(0, I). Both endpoints enter the bound (reconstruction and prior terms); by Sec. 5.1
of the paper the continuous-time diffusion loss depends on the schedule *only* through them.

Three schedules, all ``nn.Module`` with ``gamma = schedule(t)``, ``t: (B,)`` in [0, 1] -> ``(B,)``:

- :class:`FixedLinearSchedule`: gamma(t) = gamma_0 + (gamma_1 - gamma_0) t (VDM's fixed baseline).
- :class:`LearnedMonotoneSchedule`: VDM's monotone network (Sec. 5.2 and its appendix), a linear term plus
  a 1024-unit sigmoid layer, both with positive weights (absolute values of the raw parameters), so that the
  unnormalised gamma~(t) increases for *any* parameter values; it is then rescaled affinely to the learned
  endpoints, gamma(t) = gamma_0 + (gamma_1 - gamma_0) (gamma~(t) - gamma~(0)) / (gamma~(1) - gamma~(0)), so
  that gamma_0, gamma_1 (the endpoint parameters) and the shape in between (the network's weights) are
  separate parameters trained on different objectives (:class:`elbolab.vdm.objective.VDMObjective`).
- :class:`FlowSchedule`: the rectified-flow path alpha = 1 - u, sigma = u in VP coordinates,
  gamma(t) = 2 logit(u(t)) with u linear in t (flow matching, Kingma & Gao 2023).

:meth:`GammaSchedule.evaluate` returns gamma(t), gamma'(t) and the *shape tensors* s(t), s'(t) of the
normalised shape, the only way the shape parameters reach the loss (used by the variance-minimising update).
Everything is computed in the parameters' dtype (float32 by default; ``.double()`` for oracle tests) with
autocast disabled.
"""

from __future__ import annotations

import abc

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "FixedLinearSchedule",
    "FlowSchedule",
    "GammaAt",
    "GammaSchedule",
    "LearnedMonotoneSchedule",
    "alpha_sigma",
    "alpha_squared",
    "sigma_squared",
    "snr",
]

DEFAULT_GAMMA_0 = -13.3  # VDM's gamma_min for 8-bit images in [-1, 1] (configs/cifar10.py)
DEFAULT_GAMMA_1 = 5.0  # VDM's gamma_max


def alpha_squared(gamma: Tensor) -> Tensor:
    """alpha^2 = sigmoid(-gamma) (elementwise)."""
    return torch.sigmoid(-gamma)


def sigma_squared(gamma: Tensor) -> Tensor:
    """sigma^2 = sigmoid(gamma) (elementwise)."""
    return torch.sigmoid(gamma)


def alpha_sigma(gamma: Tensor) -> tuple[Tensor, Tensor]:
    """(alpha, sigma) = (sqrt(sigmoid(-gamma)), sqrt(sigmoid(gamma))), computed stably in log space."""
    return torch.exp(0.5 * F.logsigmoid(-gamma)), torch.exp(0.5 * F.logsigmoid(gamma))


def snr(gamma: Tensor) -> Tensor:
    """SNR = alpha^2 / sigma^2 = exp(-gamma)."""
    return torch.exp(-gamma)


def _check_t(t: Tensor, where: str) -> None:
    if not isinstance(t, Tensor) or t.ndim != 1 or not t.dtype.is_floating_point:
        shape = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
        raise ValueError(f"{where}: t must be a float tensor of shape (B,) with values in [0, 1], got {shape}")


@dataclass(frozen=True)
class GammaAt:
    """A schedule evaluated at ``t: (B,)``: ``gamma: (B,)``, ``gamma_prime: (B,)`` = d gamma / dt, and ``shape``:
    the tensors (each ``(B,)``) through which the shape parameters (not the endpoints) reach gamma and
    gamma'; empty for a schedule without shape parameters."""

    gamma: Tensor
    gamma_prime: Tensor
    shape: tuple[Tensor, ...] = ()


class GammaSchedule(nn.Module, abc.ABC):
    """Base class: ``forward(t: (B,)) -> gamma: (B,)``, increasing in t, with endpoints gamma(0) and gamma(1)."""

    def forward(self, t: Tensor) -> Tensor:
        return self.evaluate(t).gamma

    @abc.abstractmethod
    def evaluate(self, t: Tensor) -> GammaAt:
        """gamma, gamma' and the shape tensors at ``t: (B,)``."""

    @abc.abstractmethod
    def endpoints(self) -> tuple[Tensor, Tensor]:
        """(gamma_0, gamma_1) as 0-dim tensors (differentiable in the endpoint parameters)."""

    def gamma_prime(self, t: Tensor) -> Tensor:
        """d gamma / dt at ``t: (B,)`` -> ``(B,)``."""
        return self.evaluate(t).gamma_prime

    def gamma_prime_autograd(self, t: Tensor) -> Tensor:
        """d gamma / dt by reverse-mode autograd (a check on the closed form of :meth:`gamma_prime`)."""
        _check_t(t, type(self).__name__)
        with torch.enable_grad():
            tt = t.detach().clone().requires_grad_(True)
            (g,) = torch.autograd.grad(self(tt).sum(), tt, create_graph=torch.is_grad_enabled())
        return g

    def shape_parameters(self) -> list[nn.Parameter]:
        """Parameters that change the shape of gamma between its endpoints (not the endpoints themselves)."""
        return []

    def endpoint_parameters(self) -> list[nn.Parameter]:
        """Parameters of the endpoints gamma_0, gamma_1."""
        return []


class FixedLinearSchedule(GammaSchedule):
    """gamma(t) = gamma_0 + (gamma_1 - gamma_0) t, not trained (VDM's ``NoiseSchedule_FixedLinear``).

    The endpoints are buffers (saved in the state dict)."""

    def __init__(self, gamma_0: float = DEFAULT_GAMMA_0, gamma_1: float = DEFAULT_GAMMA_1) -> None:
        super().__init__()
        if not (math.isfinite(gamma_0) and math.isfinite(gamma_1) and gamma_0 < gamma_1):
            raise ValueError(f"FixedLinearSchedule: need finite gamma_0 < gamma_1, got {gamma_0!r}, {gamma_1!r}")
        self.register_buffer("gamma_0", torch.tensor(float(gamma_0)))
        self.register_buffer("gamma_1", torch.tensor(float(gamma_1)))

    def endpoints(self) -> tuple[Tensor, Tensor]:
        return self.gamma_0, self.gamma_1

    def evaluate(self, t: Tensor) -> GammaAt:
        _check_t(t, "FixedLinearSchedule")
        t = t.to(self.gamma_0.dtype)
        gap = self.gamma_1 - self.gamma_0
        return GammaAt(self.gamma_0 + gap * t, gap.expand_as(t))


def _softplus_inverse(y: float) -> float:
    """x with softplus(x) = y > 0."""
    return y + math.log(-math.expm1(-y))


class LearnedMonotoneSchedule(GammaSchedule):
    """VDM's learned monotone schedule gamma_eta(t) with learned endpoints (Kingma et al. 2021, Sec. 5.2).

    Unnormalised network (``K = hidden`` units, phi(u) = 2 sigmoid(u) - 1, absolute values make every weight
    positive so gamma~ increases for any raw parameters)::

        gamma~(t) = (|w1| + 1e-6) t + (1/K) sum_j |w3_j| phi(|w2_j| (2t - 1) + b2_j)

    (VDM's ``NoiseSchedule_NNet``: ``l1`` linear + ``l3(2 (sigmoid(l2(2(t - 1/2))) - 1/2)) / K``; the 1e-6 keeps
    gamma~ strictly increasing when every weight is zero). Normalised shape and schedule::

        s(t) = (gamma~(t) - gamma~(0)) / (gamma~(1) - gamma~(0)) in [0, 1],  s(0) = 0, s(1) = 1
        gamma(t) = gamma_0 + (gamma_1 - gamma_0) s(t),   gamma_1 = gamma_0 + softplus(gap)

    so gamma_1 > gamma_0 for any value of the raw parameter ``gap``. Parameters: endpoints ``gamma_0``,
    ``gap``; shape ``w1``, ``w2``, ``b2``, ``w3``. Initialisation as VDM (``w1`` = gamma_1 - gamma_0 so the
    linear part dominates, ``w2``, ``w3`` ~ N(0, 1), ``b2`` = 0): close to :class:`FixedLinearSchedule` with the
    same endpoints. gamma'(t) = (gamma_1 - gamma_0) s'(t) is computed in closed form (checked against
    autograd in the tests). ``generator`` draws the initial weights (default: seed 0).
    """

    def __init__(
        self,
        gamma_0: float = DEFAULT_GAMMA_0,
        gamma_1: float = DEFAULT_GAMMA_1,
        hidden: int = 1024,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        if not (math.isfinite(gamma_0) and math.isfinite(gamma_1) and gamma_0 < gamma_1):
            raise ValueError(
                f"LearnedMonotoneSchedule: need finite gamma_0 < gamma_1, got {gamma_0!r}, {gamma_1!r}"
            )
        if isinstance(hidden, bool) or not isinstance(hidden, int) or hidden < 1:
            raise ValueError(f"LearnedMonotoneSchedule: hidden = {hidden!r} must be an integer >= 1")
        g = generator if generator is not None else torch.Generator().manual_seed(0)
        self.hidden = hidden
        self.gamma_0 = nn.Parameter(torch.tensor(float(gamma_0)))
        self.gap = nn.Parameter(torch.tensor(_softplus_inverse(gamma_1 - gamma_0)))
        self.w1 = nn.Parameter(torch.tensor(float(gamma_1 - gamma_0)))
        self.w2 = nn.Parameter(torch.randn(hidden, generator=g))
        self.b2 = nn.Parameter(torch.zeros(hidden))
        self.w3 = nn.Parameter(torch.randn(hidden, generator=g))

    @property
    def gamma_1(self) -> Tensor:
        """gamma_1 = gamma_0 + softplus(gap) (0-dim tensor)."""
        return self.gamma_0 + F.softplus(self.gap)

    def endpoints(self) -> tuple[Tensor, Tensor]:
        return self.gamma_0, self.gamma_1

    def shape_parameters(self) -> list[nn.Parameter]:
        return [self.w1, self.w2, self.b2, self.w3]

    def endpoint_parameters(self) -> list[nn.Parameter]:
        return [self.gamma_0, self.gap]

    def unnormalised(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """(gamma~(t), gamma~'(t)) for ``t: (N,)``, both ``(N,)``."""
        a = self.w1.abs() + 1e-6
        u = self.w2.abs() * (2.0 * t[:, None] - 1.0) + self.b2  # (N, K)
        sig = torch.sigmoid(u)
        c = self.w3.abs() / self.hidden
        value = a * t + (2.0 * sig - 1.0) @ c
        slope = a + (2.0 * sig * (1.0 - sig)) @ (2.0 * self.w2.abs() * c)
        return value, slope

    def normalised_shape(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """(s(t), s'(t)) for ``t: (B,)``: the shape rescaled to s(0) = 0, s(1) = 1, both ``(B,)``."""
        ends = torch.tensor([0.0, 1.0], dtype=t.dtype, device=t.device)
        value, slope = self.unnormalised(torch.cat([t, ends]))
        v0, v1 = value[-2], value[-1]
        scale = v1 - v0
        return (value[:-2] - v0) / scale, slope[:-2] / scale

    def evaluate(self, t: Tensor) -> GammaAt:
        _check_t(t, "LearnedMonotoneSchedule")
        with torch.autocast(t.device.type, enabled=False):
            t = t.to(self.w1.dtype)
            s, s_prime = self.normalised_shape(t)
            g0, g1 = self.endpoints()
            gap = g1 - g0
            return GammaAt(g0 + gap * s, gap * s_prime, (s, s_prime))


class FlowSchedule(GammaSchedule):
    """The rectified-flow / flow-matching path (Liu et al. 2023; Lipman et al. 2023) as a VDM schedule.

    The path z^flow_u = (1 - u) x + u eps is, divided by sqrt((1 - u)^2 + u^2), the variance-preserving
    process with gamma = 2 log(u / (1 - u)) (Kingma & Gao 2023: the same process in other coordinates). Time
    runs linearly in u between the endpoints' values u_0 = sigmoid(gamma_0 / 2), u_1 = sigmoid(gamma_1 / 2)::

        u(t) = u_0 + (u_1 - u_0) t,   gamma(t) = 2 logit(u(t)),   gamma'(t) = 2 (u_1 - u_0) / (u (1 - u)),

    so t ~ U(0, 1) is flow matching's uniform u on [u_0, u_1]. Not trained; the endpoints are buffers.
    """

    def __init__(self, gamma_0: float = -13.8, gamma_1: float = 13.8) -> None:
        super().__init__()
        if not (math.isfinite(gamma_0) and math.isfinite(gamma_1) and gamma_0 < gamma_1):
            raise ValueError(f"FlowSchedule: need finite gamma_0 < gamma_1, got {gamma_0!r}, {gamma_1!r}")
        self.register_buffer("gamma_0", torch.tensor(float(gamma_0)))
        self.register_buffer("gamma_1", torch.tensor(float(gamma_1)))

    def endpoints(self) -> tuple[Tensor, Tensor]:
        return self.gamma_0, self.gamma_1

    def flow_time(self, t: Tensor) -> Tensor:
        """u(t) = u_0 + (u_1 - u_0) t, ``(B,)``."""
        u0, u1 = torch.sigmoid(0.5 * self.gamma_0), torch.sigmoid(0.5 * self.gamma_1)
        return u0 + (u1 - u0) * t

    def evaluate(self, t: Tensor) -> GammaAt:
        _check_t(t, "FlowSchedule")
        t = t.to(self.gamma_0.dtype)
        u = self.flow_time(t)
        du = torch.sigmoid(0.5 * self.gamma_1) - torch.sigmoid(0.5 * self.gamma_0)
        gamma = 2.0 * (torch.log(u) - torch.log1p(-u))
        return GammaAt(gamma, 2.0 * du / (u * (1.0 - u)))
