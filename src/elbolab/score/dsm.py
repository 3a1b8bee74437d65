"""Denoising score matching over L noise levels (Vincent 2011; Song & Ermon 2019, eqs. 5-6).

For one level sigma, with x~ = x + sigma z, z ~ N(0, I), the perturbation kernel's score is
grad_x~ log N(x~; x, sigma^2 I) = -(x~ - x) / sigma^2 = -z / sigma, and

    l(theta; sigma) = 1/2 E_{x, z} || s_theta(x~, sigma) + z / sigma ||^2

is minimised by s_theta(x~, sigma) = grad log q_sigma(x~), the score of the perturbed data (Vincent 2011). The
objective of NCSN weights the levels by lambda(sigma) = sigma^2, which makes every level's term of the same size
(||sigma s_theta + z||^2 = O(D) for every sigma):

    L(theta) = (1 / L) sum_i lambda(sigma_i) l(theta; sigma_i) = 1/2 E_{i, x, z} || sigma_i s_theta(x~, sigma_i) + z ||^2.

Here the level i ~ U{1..L} is drawn per example (or from other level probabilities p_i,
:func:`elbolab.score.noise_levels.level_probabilities`: the sum over levels then weights each by L p_i) and the squared norm is averaged over the D data dimensions
(the paper sums them; the minimiser is the same, and a per-dimension loss keeps learning rates and gradient
clipping comparable across image sizes): a score of 0 scores 1/2 at every level.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from elbolab.math import append_dims, mean_flat
from elbolab.score.noise_levels import NoiseLevels
from elbolab.objectives import LossOutput, Objective

__all__ = ["DenoisingScoreMatching", "dsm_loss"]


def dsm_loss(score: Tensor, noise: Tensor, sigma: Tensor) -> Tensor:
    """Per-example 1/2 lambda(sigma) ||score + noise / sigma||^2 / D = 1/2 mean_d (sigma score + noise)^2, ``(B,)``.

    ``score``: s_theta(x + sigma noise, sigma) ``(B, ...)``; ``noise``: z ``(B, ...)``; ``sigma``: ``(B,)``."""
    if score.shape != noise.shape:
        raise ValueError(f"score has shape {tuple(score.shape)} but noise has {tuple(noise.shape)}")
    s = append_dims(sigma.to(score.dtype), score.ndim)
    return 0.5 * mean_flat((s * score + noise) ** 2)


class DenoisingScoreMatching(Objective):
    """The NCSN training objective for the Trainer (implements :class:`elbolab.objectives.Objective`).

    ``loss(model, x, y, generator)``: i ~ U{1..L} (or i ~ ``probs``: ``(L,)``, index 0 = sigma_1) and z ~ N(0, I)
    per example (from ``generator``), x~ = x + sigma_i z, and the mean over the batch of :func:`dsm_loss` of
    ``model(x~, sigma_i, y)``. Metrics: ``loss``.
    """

    def __init__(self, levels: NoiseLevels, probs: torch.Tensor | None = None) -> None:
        if not isinstance(levels, NoiseLevels):
            raise TypeError(f"levels must be NoiseLevels, got {type(levels).__name__}")
        self.levels = levels
        self.probs = None
        if probs is not None:
            p = torch.as_tensor(probs, dtype=torch.float64).reshape(-1)
            if p.numel() != levels.L or not bool(torch.isfinite(p).all()) or bool((p < 0).any()) or not p.sum() > 0:
                raise ValueError(f"probs must be {levels.L} finite non-negative level probabilities with a positive "
                                 f"sum, got {p.tolist()}")
            self.probs = p / p.sum()

    def loss(self, model: nn.Module, x: Tensor, y: Tensor | None, generator: torch.Generator) -> LossOutput:
        """x: (B, C, H, W) in [-1, 1] (or (B, D) toy data); y: (B,) long labels or None."""
        B = x.shape[0]
        if self.probs is None:
            i = torch.randint(0, self.levels.L, (B,), generator=generator, device=x.device)
        else:
            i = torch.multinomial(self.probs.to(x.device), B, replacement=True, generator=generator)
        sigma = self.levels.sigmas.to(device=x.device, dtype=torch.float32)[i]
        noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        x_tilde = x + append_dims(sigma.to(x.dtype), x.ndim) * noise
        score = model(x_tilde, sigma, y)
        if score.shape != x.shape:
            raise ValueError(f"score model output has shape {tuple(score.shape)}, expected {tuple(x.shape)}")
        loss = dsm_loss(score.float(), noise.float(), sigma).mean()
        return LossOutput(loss=loss, metrics={"loss": float(loss.detach())})
