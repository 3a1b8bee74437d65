"""The VDM as one ``nn.Module``: a noise-prediction network and the noise schedule it is trained with.

The schedule is part of the model (Kingma et al. 2021, Sec. 5.2): its parameters are trained with the
network, averaged by the EMA and saved in the same state dict (``schedule.*`` keys).

What the network sees. ``denoiser(z_t, c, y)`` is any eps-model with elbolab's calling convention
(``z_t: (B, C, H, W)`` or ``(B, D)``, ``c: (B,)`` float, ``y: (B,)`` labels or None) returning eps_hat with
z_t's shape. Its noise-level input is the *gamma-normalised time* of VDM's score network
(``model_vdm.ScoreUNet``: t = (gamma - gamma_min) / (gamma_max - gamma_min), embedded at 1000 t)::

    c = time_scale * (gamma(t) - gamma_lo) / (gamma_hi - gamma_lo),   time_scale = 1000,

with (gamma_lo, gamma_hi) a *fixed* reference range (a buffer, by default the schedule's endpoints at
construction), so that c runs over ~[0, 1000] like elbolab's discrete timesteps (the U-Net's sinusoidal
embedding expects that scale). Conditioning on gamma rather than t makes the network a function of
(z_t, SNR) only: changing the schedule's shape then does not change what it predicts at a given noise level,
which is what makes the continuous-time bound invariant to the shape (Sec. 5.1) and lets the shape be trained
for variance alone.

What the network predicts (:class:`VDMPrediction`): ``EPS`` (VDM's eps-model, input the VP z_t) or
``VELOCITY`` (flow matching, Lipman et al. 2023 / Liu et al. 2023): the network sees the flow coordinates
z^flow = (1 - u) x + u eps = z_t sqrt((1 - u)^2 + u^2) with u = sigmoid(gamma / 2) and predicts the velocity
v = eps - x; :meth:`VDMModel.eps_at_gamma` turns it into eps_hat = z^flow + (1 - u) v_hat, so the bound and
every sampler see an eps-model either way.
"""

from __future__ import annotations

import enum

import torch
from torch import Tensor, nn

from elbolab.math import append_dims
from elbolab.vdm._choices import parse_choice
from elbolab.vdm.schedules import GammaSchedule, alpha_sigma

__all__ = ["VDMModel", "VDMPrediction", "flow_coordinates"]


class VDMPrediction(str, enum.Enum):
    """What the network of a :class:`VDMModel` outputs."""

    EPS = "eps"  # eps_hat(z_t; gamma), input the variance-preserving z_t
    VELOCITY = "velocity"  # v_hat = eps - x on the flow path, input z^flow (module docstring)


def flow_coordinates(gamma: Tensor) -> tuple[Tensor, Tensor]:
    """(u, scale) for ``gamma: (B,)``: the flow time u = sigmoid(gamma / 2) and z^flow / z_t = sqrt((1-u)^2 + u^2)."""
    u = torch.sigmoid(0.5 * gamma)
    return u, torch.sqrt((1.0 - u) ** 2 + u**2)


class VDMModel(nn.Module):
    """``denoiser`` (an eps-model) + ``schedule`` (a :class:`~elbolab.vdm.schedules.GammaSchedule`).

    ``model(z_t, t, y)`` with ``t: (B,)`` VDM time in [0, 1] returns eps_hat(z_t; gamma(t)) of z_t's shape;
    :meth:`eps_at_gamma` takes gamma directly. ``gamma_range``: the reference (gamma_lo, gamma_hi) of the
    network's input (default: the schedule's endpoints now); ``time_scale``: the network input at gamma_hi;
    ``prediction``: what the denoiser outputs (:class:`VDMPrediction`).
    """

    def __init__(
        self,
        denoiser: nn.Module,
        schedule: GammaSchedule,
        *,
        gamma_range: tuple[float, float] | None = None,
        time_scale: float = 1000.0,
        prediction: VDMPrediction | str = VDMPrediction.EPS,
    ) -> None:
        super().__init__()
        self.prediction = parse_choice(prediction, VDMPrediction, "vdm prediction")
        if not isinstance(schedule, GammaSchedule):
            raise TypeError(f"schedule must be a GammaSchedule, got {type(schedule).__name__}")
        if gamma_range is None:
            g0, g1 = schedule.endpoints()
            gamma_range = (float(g0.detach()), float(g1.detach()))
        lo, hi = (float(v) for v in gamma_range)
        if not lo < hi:
            raise ValueError(f"gamma_range = {gamma_range!r} must be (lo, hi) with lo < hi")
        if not time_scale > 0:
            raise ValueError(f"time_scale = {time_scale!r} must be > 0")
        self.denoiser = denoiser
        self.schedule = schedule
        self.register_buffer("gamma_range", torch.tensor([lo, hi], dtype=torch.float64))
        self.time_scale = float(time_scale)

    def network_time(self, gamma: Tensor) -> Tensor:
        """c = time_scale (gamma - gamma_lo) / (gamma_hi - gamma_lo), ``(B,)`` in gamma's dtype."""
        lo, hi = self.gamma_range.to(gamma.dtype)
        return self.time_scale * (gamma - lo) / (hi - lo)

    def gamma_from_network_time(self, c: Tensor) -> Tensor:
        """The inverse of :meth:`network_time` (for denoisers written as functions of gamma)."""
        lo, hi = self.gamma_range.to(c.dtype)
        return lo + (hi - lo) * c / self.time_scale

    def q_sample(self, x: Tensor, gamma: Tensor, eps: Tensor) -> Tensor:
        """z = alpha x + sigma eps with alpha^2 = sigmoid(-gamma), sigma^2 = sigmoid(gamma); ``gamma: (B,)``."""
        alpha, sigma = alpha_sigma(gamma)
        return append_dims(alpha, x.ndim).to(x.dtype) * x + append_dims(sigma, x.ndim).to(x.dtype) * eps

    def eps_at_gamma(self, z: Tensor, gamma: Tensor, y: Tensor | None = None) -> Tensor:
        """eps_hat(z; gamma) of the VP ``z: (B, ...)`` at ``gamma: (B,)``, z's shape: the denoiser's output
        (``EPS``), or z^flow + (1 - u) v_hat with v_hat = denoiser(z^flow, c, y) (``VELOCITY``)."""
        c = self.network_time(gamma)
        if self.prediction is VDMPrediction.EPS:
            return self.denoiser(z, c, y)
        u, scale = (append_dims(v, z.ndim).to(z.dtype) for v in flow_coordinates(gamma))
        z_flow = z * scale
        return z_flow + (1.0 - u) * self.denoiser(z_flow, c, y).to(z.dtype)

    def velocity_at_gamma(self, z_flow: Tensor, gamma: Tensor, y: Tensor | None = None) -> Tensor:
        """v_hat(z^flow; gamma) = eps_hat - x_hat on the flow path, ``z_flow: (B, ...)`` at ``gamma: (B,)``.

        ``VELOCITY``: the denoiser's output; ``EPS``: (eps_hat - z^flow) / (1 - u) from the eps-model."""
        c = self.network_time(gamma)
        if self.prediction is VDMPrediction.VELOCITY:
            return self.denoiser(z_flow, c, y)
        u, scale = (append_dims(v, z_flow.ndim).to(z_flow.dtype) for v in flow_coordinates(gamma))
        eps = self.denoiser(z_flow / scale, c, y).to(z_flow.dtype)
        return (eps - z_flow) / (1.0 - u)

    def with_denoiser(self, denoiser: nn.Module) -> VDMModel:
        """The same model (shared schedule and reference range) around another denoiser, e.g. an autocast
        wrapper of this one for sampling in bf16."""
        lo, hi = (float(v) for v in self.gamma_range)
        return VDMModel(denoiser, self.schedule, gamma_range=(lo, hi), time_scale=self.time_scale,
                        prediction=self.prediction)

    def forward(self, z: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        if t.ndim == 0:
            t = t.expand(z.shape[0])
        return self.eps_at_gamma(z, self.schedule(t), y)
