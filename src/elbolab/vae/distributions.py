"""Diagonal Gaussians of the latent layers: reparameterised sampling, log-density, entropy, closed-form KL.

Notation of the lecture notes (Kingma & Welling 2014; Luo 2022, eq. 19-22):
``q_phi(z|x) = N(z; mu_phi(x), diag sigma_phi^2(x))``, ``p(z) = N(z; 0, I)`` and the reparameterisation
``z = mu + sigma * eps`` with ``eps ~ N(0, I)``. Every per-dimension quantity keeps its last axis ``J`` (one
entry per latent dimension) so that callers can sum it, or apply free bits per dimension.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from elbolab.math import LOG_2PI, gaussian_log_likelihood

__all__ = ["DiagonalGaussian"]


@dataclass
class DiagonalGaussian:
    """``N(mu, diag exp(logvar))`` with ``mu, logvar: (..., J)``."""

    mu: Tensor
    logvar: Tensor

    def __post_init__(self) -> None:
        if self.mu.shape != self.logvar.shape:
            raise ValueError(f"DiagonalGaussian: mu {tuple(self.mu.shape)} and logvar {tuple(self.logvar.shape)} differ")

    @classmethod
    def from_params(cls, h: Tensor) -> DiagonalGaussian:
        """Split a network output ``h: (..., 2J)`` into ``mu = h[..., :J]`` and ``log sigma^2 = h[..., J:]``."""
        if h.shape[-1] % 2:
            raise ValueError(f"DiagonalGaussian.from_params: last axis {h.shape[-1]} must be even (mu and logvar)")
        mu, logvar = h.chunk(2, dim=-1)
        return cls(mu, logvar)

    @classmethod
    def standard(cls, like: Tensor) -> DiagonalGaussian:
        """The prior ``p(z) = N(0, I)`` with the shape, dtype and device of ``like``."""
        return cls(torch.zeros_like(like), torch.zeros_like(like))

    @property
    def std(self) -> Tensor:
        return torch.exp(0.5 * self.logvar)

    def rsample(self, generator: torch.Generator | None, num_samples: int | None = None) -> Tensor:
        """Reparameterised sample ``z = mu + sigma * eps`` (differentiable in mu and sigma).

        Returns ``(..., J)``, or ``(num_samples, ..., J)`` when ``num_samples`` is given.
        """
        shape = self.mu.shape if num_samples is None else (num_samples, *self.mu.shape)
        eps = torch.randn(shape, generator=generator, device=self.mu.device, dtype=self.mu.dtype)
        return self.mu + self.std * eps

    def log_prob(self, z: Tensor) -> Tensor:
        """Elementwise ``log q(z)`` per dimension, ``(..., J)`` (``z`` may carry extra leading sample axes)."""
        return gaussian_log_likelihood(z, self.mu, self.logvar)

    def entropy(self) -> Tensor:
        """Per-dimension entropy ``1/2 (log 2 pi e + log sigma^2)``, ``(..., J)``."""
        return 0.5 * (LOG_2PI + 1.0 + self.logvar)

    def kl_to_standard_normal(self) -> Tensor:
        """Closed-form ``KL(N(mu, sigma^2) || N(0, 1))`` per dimension, ``(..., J)``.

        The lecture notes (004, "Encoder output should match the prior"):
        ``-KL = 1/2 sum_j (1 + log sigma_j^2 - mu_j^2 - sigma_j^2)``.
        """
        return -0.5 * (1.0 + self.logvar - self.mu.pow(2) - torch.exp(self.logvar))
