"""NCSN's noise levels as the variance-exploding (VE) form of elbolab's one Gaussian process, so that every
solver of :mod:`elbolab.diffusion.samplers` (DDIM, Euler, Heun, DPM-Solver++) samples a score network.

Luo 2022 (lecture notes 000, "score-based view") and Song et al. 2021 ("Score-based generative modeling through
SDEs"): a diffusion is fixed by its signal-to-noise ratio. The VE perturbation of NCSN, x~ = x + sigma eps, and
the variance-preserving one of the DDPM, x_t = alpha x + sigma_VP eps with alpha^2 + sigma_VP^2 = 1, are the same
process in other coordinates (Kingma et al. 2021, Appendix; Karras et al. 2022, Sec. 2)::

    x_VP = alpha x~,   alpha = 1 / sqrt(1 + sigma^2),   sigma_VP = alpha sigma,   SNR = alpha^2 / sigma_VP^2 = 1 / sigma^2,

with the *same* eps. The score of the VE marginal therefore gives the DDPM's noise prediction:
eps_hat = -sigma s(x~, sigma) (Tweedie: E[eps | x~] = -sigma grad log q_sigma(x~)), and alpha_bar = alpha^2 =
1 / (1 + sigma^2). :func:`ncsn_as_diffusion` reads NCSN's range of levels [sigma_L, sigma_1] on a grid of T points
geometric in sigma (uniform in log-SNR) as a :class:`~elbolab.diffusion.GaussianDiffusion`, and :class:`VEAsVP`
calls the score network like a DDPM eps-network of it, at the level the diffusion has at any (float) t. The VP
prior N(0, I) at t = T is NCSN's N(0, (1 + sigma_1^2) I) scaled by alpha_1, the start of annealed Langevin.

A solver's final step to sigma = 0 is then the denoiser D(x~; sigma_L) = x~ + sigma_L^2 s(x~, sigma_L), the
"final denoising" of Song & Ermon 2020 (Technique of their Appendix; Jolicoeur-Martineau et al. 2021).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from elbolab.diffusion.process import GaussianDiffusion
from elbolab.diffusion.schedules import NoiseSchedule
from elbolab.math import append_dims

__all__ = ["VE_GRID", "VEAsVP", "ncsn_as_diffusion"]

#: grid points of :func:`ncsn_as_diffusion` (the DDPM's T = 1000)
VE_GRID = 1000


class VEAsVP(nn.Module):
    """A score model ``score_model(x~, sigma, y)`` (the NCSN call convention) called like a DDPM eps-network of
    ``diffusion``: ``forward(x_VP: (B, ...), t: (B,), y)`` with t in (0, T] (long on the grid, or float) returns
    eps_hat = -sigma s(x_VP / alpha, sigma), sigma = sigma_VE(t) = exp(-lambda(t) / 2). Passes ``nfe_per_call``
    of the wrapped model through (a guided model costs 2 evaluations per call)."""

    def __init__(self, score_model: nn.Module, diffusion: GaussianDiffusion) -> None:
        super().__init__()
        self.score_model = score_model
        self.diffusion = diffusion

    @property
    def nfe_per_call(self) -> int:
        return int(getattr(self.score_model, "nfe_per_call", 1))

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        if t.ndim == 0:
            t = t.expand(x.shape[0])
        lam = self.diffusion.schedule.log_snr_of(t)
        dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
        sigma = torch.exp(-0.5 * lam).to(device=x.device, dtype=dtype)  # sigma_VE
        inv_alpha = torch.sqrt(1.0 + sigma**2)
        score = self.score_model(x * append_dims(inv_alpha, x.ndim).to(x.dtype), sigma, y)
        return -append_dims(sigma, x.ndim).to(score.dtype) * score


def ncsn_as_diffusion(score_model: nn.Module, sigma_min: float, sigma_max: float,
                      T: int = VE_GRID) -> tuple[GaussianDiffusion, VEAsVP]:
    """(diffusion, view): the VE levels sigma_i = sigma_min (sigma_max / sigma_min)^((i - 1) / (T - 1)),
    i = 1..T, as an eps-prediction :class:`GaussianDiffusion` with alpha_bar_i = 1 / (1 + sigma_i^2) and beta_tilde
    reverse variances (so ``sigma_ve_at(t)`` is sigma_i on the grid and geometric between), and the score model as
    its network (:class:`VEAsVP`)."""
    if isinstance(T, bool) or not isinstance(T, int) or T < 2:
        raise ValueError(f"T = {T!r} must be an integer >= 2")
    lo, hi = float(sigma_min), float(sigma_max)
    if not (0.0 < lo < hi and hi < float("inf")):
        raise ValueError(f"the noise levels need 0 < sigma_min < sigma_max < inf, got sigma_min = {sigma_min!r}, "
                         f"sigma_max = {sigma_max!r}")
    u = torch.arange(T, dtype=torch.float64) / (T - 1)
    sigmas = lo * (hi / lo) ** u
    # a small sigma_max ends above the DDPM's warning level for alpha_bar_T: as asked
    schedule = NoiseSchedule.from_alpha_bars(1.0 / (1.0 + sigmas**2), warn_terminal=False)
    diffusion = GaussianDiffusion(schedule, prediction="eps", variance="beta_tilde")
    return diffusion, VEAsVP(score_model, diffusion)
