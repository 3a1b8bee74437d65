"""Exact score models for Gaussian-mixture data, to test samplers and guidance without training.

- :class:`MixtureScoreOracle`: the true score of the perturbed data of an NCSN, grad log q_sigma(x~) with
  q_sigma = p * N(0, sigma^2 I) (again a Gaussian mixture: covariances Sigma_k + sigma^2 I), with the NCSN call
  convention ``model(x~: (B, D), sigma: (B,), y=None)``.
- :class:`ClassConditionalMixtureOracle`: a class-conditional DDPM network whose classes are the mixture's
  components: ``model(x_t, t, y)`` is the exact optimal prediction for the data p(x | y = k) = N(mu_k, Sigma_k),
  and for the null class (y = -1 or K, or y = None) for the whole mixture p(x) = sum_k w_k N(mu_k, Sigma_k) --
  the two branches classifier-free guidance combines, with p(y = k) = w_k.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from elbolab.data.toy import GaussianMixture
from elbolab.diffusion.oracles import GaussianMixtureOracle
from elbolab.diffusion.process import GaussianDiffusion

__all__ = ["ClassConditionalMixtureOracle", "MixtureScoreOracle"]


class MixtureScoreOracle(nn.Module):
    """s(x~, sigma) = grad log q_sigma(x~) exactly, for ``x~: (B, D)``, ``sigma: (B,)`` > 0 (float64 inside)."""

    def __init__(self, mixture: GaussianMixture) -> None:
        super().__init__()
        self.mixture = mixture

    def forward(self, x: Tensor, sigma: Tensor | float, y: Tensor | None = None) -> Tensor:
        sigma = torch.as_tensor(sigma, dtype=torch.float64).reshape(-1).expand(x.shape[0])
        out = torch.empty_like(x)
        for s in torch.unique(sigma).tolist():
            mask = (sigma == s).to(x.device)
            out[mask] = self.mixture.perturbed(s).score(x[mask])
        return out


class ClassConditionalMixtureOracle(nn.Module):
    """Exact class-conditional predictor of ``diffusion``'s kind: class k = component k of ``mixture``.

    ``y: (B,)`` long in 0..K-1, or -1 / K (the null class, the whole mixture); ``y = None`` means all null.
    """

    def __init__(self, mixture: GaussianMixture, diffusion: GaussianDiffusion) -> None:
        super().__init__()
        self.K = mixture.num_components
        self.unconditional = GaussianMixtureOracle(mixture, diffusion)
        self.classes = nn.ModuleList(
            GaussianMixtureOracle(GaussianMixture([1.0], mixture.means[k : k + 1], mixture.covariances[k : k + 1]),
                                  diffusion)
            for k in range(self.K)
        )

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        if y is None:
            return self.unconditional(x, t)
        if y.shape != (x.shape[0],):
            raise ValueError(f"y must have shape ({x.shape[0]},), got {tuple(y.shape)}")
        if y.numel() and (int(y.min()) < -1 or int(y.max()) > self.K):
            raise ValueError(f"labels must lie in 0..{self.K - 1} (or -1 / {self.K} for the null class), "
                             f"got {int(y.min())}..{int(y.max())}")
        out = torch.empty_like(x)
        null = (y < 0) | (y == self.K)
        if null.any():
            out[null] = self.unconditional(x[null], t[null])
        for k in torch.unique(y[~null]).tolist():
            m = y == k
            out[m] = self.classes[k](x[m], t[m])
        return out
