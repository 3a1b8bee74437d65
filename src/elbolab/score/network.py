"""Score models: the noise-conditional score network on the project's U-Net, and the bridge that turns a
trained DDPM noise predictor into a score model.

- :class:`NCSN` (Song & Ermon 2019): s_theta(x~, sigma, y) = F_theta(x~, c_noise(sigma), y) / sigma with F_theta the
  U-Net (:class:`elbolab.nn.unet.UNet`, label embedding optional). Dividing by sigma is Technique 3 of Song &
  Ermon 2020: the true score of q_sigma has norm ~ sqrt(D) / sigma, so F_theta only needs outputs of unit scale
  (as eps-prediction does). The U-Net's time embedding sees c_noise(sigma) = 100 ln sigma (a smooth,
  range-independent code: a geometric sequence of levels becomes evenly spaced "times"). With ``scale_input``
  the U-Net sees c_in(sigma) x~ = x~ / sqrt(1 + sigma^2) instead of x~ (Karras et al. 2022's c_in with
  sigma_data = 1): exactly the DDPM's x_t = alpha x~ of the VE <-> VP map (:mod:`elbolab.score.ve`), of unit
  scale at every level. Without it the input's scale runs from 1 to sigma_1 ~ 40 and the network must undo
  that scale itself, which is what NCSN (Song & Ermon 2019, 2020) asks of it.
- :class:`EpsAsScore` (lecture notes 004, "score-based view"): eps_theta(x_t, t) ~ -sqrt(1 - alpha_bar_t) grad log
  q(x_t), so s(x_t, t) = -eps_hat(x_t, t) / sqrt(1 - alpha_bar_t) (Luo 2022, eq. 151) for a network of any
  parameterisation (:meth:`GaussianDiffusion.predict_score`).

Both keep the network convention ``model(x: (B, ...), t: (B,), y: (B,) | None) -> (B, ...)``; for :class:`NCSN`
``t`` is the float noise level sigma of each example.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from elbolab.diffusion.process import GaussianDiffusion
from elbolab.math import append_dims

__all__ = ["EpsAsScore", "NCSN", "noise_conditioning"]

#: c_noise(sigma) = NOISE_CODE_SCALE * ln sigma
NOISE_CODE_SCALE = 100.0


def noise_conditioning(sigma: Tensor) -> Tensor:
    """c_noise(sigma) = 100 ln sigma, ``(B,) -> (B,)`` float32: what the U-Net's time embedding receives."""
    return NOISE_CODE_SCALE * torch.log(sigma.to(torch.float32))


class NCSN(nn.Module):
    """s_theta(x~, sigma, y) = net(c_in(sigma) x~, c_noise(sigma), y) / sigma; ``x~: (B, C, H, W)``, ``sigma:
    (B,)`` float > 0 (a Python float or 0-d tensor is broadcast), ``y: (B,)`` labels or None. Returns the score,
    x~'s shape. ``scale_input``: c_in = 1 / sqrt(1 + sigma^2) (else 1, the original NCSN)."""

    def __init__(self, net: nn.Module, scale_input: bool = False) -> None:
        super().__init__()
        self.net = net
        self.scale_input = bool(scale_input)

    def forward(self, x: Tensor, sigma: Tensor | float, y: Tensor | None = None) -> Tensor:
        B = x.shape[0]
        sigma = torch.as_tensor(sigma, device=x.device)
        if sigma.ndim == 0:
            sigma = sigma.expand(B)
        if sigma.shape != (B,) or not sigma.dtype.is_floating_point:
            raise ValueError(f"NCSN: sigma must be a float tensor of shape ({B},) (one noise level per example), "
                             f"got {tuple(sigma.shape)} {sigma.dtype}")
        if sigma.numel() and not bool((sigma > 0).all()):
            raise ValueError(f"NCSN: noise levels must be > 0, got min {float(sigma.min())}")
        if self.scale_input:
            x = x * append_dims(torch.rsqrt(1.0 + sigma.to(torch.float32) ** 2).to(x.dtype), x.ndim)
        out = self.net(x, noise_conditioning(sigma), y)
        return out / append_dims(sigma.to(out.dtype), out.ndim)


class EpsAsScore(nn.Module):
    """The bridge: ``EpsAsScore(model, diffusion)(x_t, t, y) = -eps_hat(x_t, t, y) / sqrt(1 - alpha_bar_t)``.

    ``model``: a DDPM network of ``diffusion``'s prediction kind (eps, x0, v or score); ``t: (B,)`` long in 1..T.
    Passes ``nfe_per_call`` of the wrapped model through (e.g. a guided model costs 2 evaluations per call).
    """

    def __init__(self, model: nn.Module, diffusion: GaussianDiffusion) -> None:
        super().__init__()
        self.model = model
        self.diffusion = diffusion

    @property
    def nfe_per_call(self) -> int:
        return int(getattr(self.model, "nfe_per_call", 1))

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        out = self.diffusion.model_forward(self.model, x, t, y)
        return self.diffusion.predict_score(out, x, t)

    def sigma(self, t: int) -> float:
        """The noise scale sqrt(1 - alpha_bar_t) of q(x_t | x_0) at timestep ``t``."""
        return math.sqrt(float(self.diffusion.table("one_minus_alpha_bars")[t]))
