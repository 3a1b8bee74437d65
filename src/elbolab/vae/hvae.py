"""Markovian hierarchical VAE with L latent layers (lecture notes 000, 002, 004; Luo 2022, eq. 23-25).

    p(x, z_{1:L})    = p(z_L) p_theta(x|z_1) prod_{l=2}^{L} p_theta(z_{l-1}|z_l),        p(z_L) = N(0, I)
    q_phi(z_{1:L}|x) = q_phi(z_1|x) prod_{l=2}^{L} q_phi(z_l|z_{l-1})

All transitions are diagonal Gaussians. With ``z_0 = x`` the ELBO ``E_q[log p(x, z_{1:L}) / q(z_{1:L}|x)]``
splits into one term per latent layer:

    ELBO = E_q[log p_theta(x|z_1)]                                           (reconstruction)
           - sum_{l=1}^{L-1} E_q[log q_phi(z_l|z_{l-1}) - log p_theta(z_l|z_{l+1})]   (consistency, layer l)
           - E_q[KL(q_phi(z_L|z_{L-1}) || p(z_L))]                           (prior matching, layer L)

The top term is a KL between two Gaussians given the sample ``z_{L-1}``: closed form. For ``l < L`` the
prior side ``p_theta(z_l|z_{l+1})`` is evaluated at ``z_{l+1} ~ q_phi(z_{l+1}|z_l)``, which itself depends on
``z_l``, so the term is not a KL between two fixed Gaussians (replacing it by
``KL(q(z_l|z_{l-1}) || p(z_l|z_{l+1}))`` at a sampled ``z_{l+1}``, as in the "consistency term" of Luo 2022's
first VDM decomposition, would bias the bound): it is the single-sample Monte Carlo estimate ``log q(z_l|z_{l-1}) - log p(z_l|z_{l+1})``.
The per-layer terms therefore sum to an unbiased estimate of the same ELBO as ``log p(x, z) - log q(z|x)``.
A variational diffusion model is the special case with fixed linear-Gaussian ``q`` and ``dim z_l = dim x``.

Shapes: ``x: (B, C, H, W)``; layer l latents ``z_l: (B, J_l)`` or ``(S, B, J_l)`` with S samples per image.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from elbolab.vae.bounds import ELBOTerms
from elbolab.vae.config import EncoderInput
from elbolab.vae.distributions import DiagonalGaussian
from elbolab.vae.likelihoods import Likelihood
from elbolab.vae.vae import LatentVariableModel

__all__ = ["HVAE"]


class HVAE(LatentVariableModel):
    """Markovian HVAE. ``latent_dims = (J_1, ..., J_L)``.

    ``encoder``: ``x -> [mu, log sigma^2]`` of ``q(z_1|x)`` (``2 J_1`` features); ``decoder``: ``z_1 ->`` likelihood
    params; ``up[l-2]``: ``z_{l-1} -> [mu, log sigma^2]`` of ``q(z_l|z_{l-1})`` (``J_{l-1} -> 2 J_l``);
    ``down[l-2]``: ``z_l -> [mu, log sigma^2]`` of ``p(z_{l-1}|z_l)`` (``J_l -> 2 J_{l-1}``), for l = 2..L.
    With L = 1 (no ``up``/``down``) the module has exactly the parameters of a :class:`~elbolab.vae.VAE`.
    """

    def __init__(self, encoder: nn.Module, decoder: nn.Module, likelihood: Likelihood, latent_dims: Sequence[int],
                 image_shape: Sequence[int], up: Sequence[nn.Module] = (), down: Sequence[nn.Module] = (),
                 encoder_input: EncoderInput | str = EncoderInput.DATA) -> None:
        super().__init__(encoder, decoder, likelihood, latent_dims, image_shape, encoder_input)
        if len(up) != self.num_layers - 1 or len(down) != self.num_layers - 1:
            raise ValueError(
                f"HVAE with latent_dims = {list(self.latent_dims)} needs {self.num_layers - 1} up and down "
                f"transitions, got {len(up)} up and {len(down)} down"
            )
        self.up = nn.ModuleList(up)
        self.down = nn.ModuleList(down)

    # ---------------------------------------------------------------------------------------------- transitions
    def q_transition(self, layer: int, z_prev: Tensor) -> DiagonalGaussian:
        """``q_phi(z_layer | z_{layer-1})`` for ``layer`` in 2..L; ``z_prev: (..., J_{layer-1})``."""
        return DiagonalGaussian.from_params(self.up[layer - 2](z_prev))

    def p_transition(self, layer: int, z: Tensor) -> DiagonalGaussian:
        """``p_theta(z_{layer-1} | z_layer)`` for ``layer`` in 2..L; ``z: (..., J_layer)``."""
        return DiagonalGaussian.from_params(self.down[layer - 2](z))

    def encode_chain(self, x: Tensor, generator: torch.Generator | None,
                     num_samples: int | None = None) -> tuple[list[Tensor], list[DiagonalGaussian]]:
        """Ancestral sample ``z_1 ~ q(z_1|x)``, ``z_l ~ q(z_l|z_{l-1})``: latents and the q's they came from.

        Each ``z_l`` is ``(B, J_l)``, or ``(S, B, J_l)`` with ``num_samples = S``.
        """
        q = self.posterior(x)
        z = q.rsample(generator, num_samples)
        zs, qs = [z], [q]
        for layer in range(2, self.num_layers + 1):
            q = self.q_transition(layer, z)
            z = q.rsample(generator)
            zs.append(z)
            qs.append(q)
        return zs, qs

    # ---------------------------------------------------------------------------------------------- bounds
    def elbo(self, x: Tensor, generator: torch.Generator | None) -> ELBOTerms:
        """Single-sample ELBO with one term per layer (see the module docstring); ``x``: likelihood targets."""
        zs, qs = self.encode_chain(x, generator)
        kl_per_dim = []
        for layer in range(1, self.num_layers):
            p = self.p_transition(layer + 1, zs[layer])  # p(z_layer | z_{layer+1})
            kl_per_dim.append(qs[layer - 1].log_prob(zs[layer - 1]) - p.log_prob(zs[layer - 1]))
        kl_per_dim.append(qs[-1].kl_to_standard_normal())
        return ELBOTerms(reconstruction=self.reconstruction_log_prob(zs[0], x), kl_per_dim=tuple(kl_per_dim))

    def log_importance_weights(self, x: Tensor, num_samples: int, generator: torch.Generator | None) -> Tensor:
        """``log p(x, z_{1:L}) - log q(z_{1:L}|x)`` for S ancestral samples of q: ``(S, B)``."""
        zs, qs = self.encode_chain(x, generator, num_samples)
        log_w = self.reconstruction_log_prob(zs[0], x)
        log_w = log_w + DiagonalGaussian.standard(zs[-1]).log_prob(zs[-1]).sum(-1)
        for layer in range(1, self.num_layers):
            log_w = log_w + self.p_transition(layer + 1, zs[layer]).log_prob(zs[layer - 1]).sum(-1)
        for z, q in zip(zs, qs):
            log_w = log_w - q.log_prob(z).sum(-1)
        return log_w

    def posterior_means(self, x: Tensor, generator: torch.Generator | None,
                        num_samples: int = 32) -> tuple[Tensor, ...]:
        """``E_q[z_l|x]`` per layer, ``(B, J_l)``: exact for l = 1, averaged over ``num_samples`` chains above."""
        q = self.posterior(x)
        means = [q.mu]
        z = q.rsample(generator, num_samples)
        for layer in range(2, self.num_layers + 1):
            q = self.q_transition(layer, z)
            means.append(q.mu.mean(0))
            z = q.rsample(generator)
        return tuple(means)

    # ---------------------------------------------------------------------------------------------- generation
    def sample_latent(self, n: int, generator: torch.Generator | None, temperature: float = 1.0) -> Tensor:
        """Ancestral ``z_L ~ N(0, I)``, ``z_{l-1} ~ p(z_{l-1}|z_l)`` (stds scaled by ``temperature``): ``z_1, (n, J_1)``."""
        z = temperature * self._prior_noise(n, self.latent_dims[-1], generator)
        for layer in range(self.num_layers, 1, -1):
            p = self.p_transition(layer, z)
            eps = torch.randn(p.mu.shape, generator=generator, device=z.device, dtype=z.dtype)
            z = p.mu + temperature * p.std * eps
        return z

    def decode_latent(self, z: Tensor, layer: int = 1) -> Tensor:
        """Images for latents ``z: (N, J_layer)`` of layer ``layer``: the means of ``p(z_{l-1}|z_l)`` down to z_1,
        then the decoder mean; ``(N, C, H, W)`` in [-1, 1]."""
        if not 1 <= layer <= self.num_layers:
            raise ValueError(f"decode_latent: layer = {layer!r} must be in 1..{self.num_layers}")
        for l in range(layer, 1, -1):
            z = self.p_transition(l, z).mu
        return self.decode_mean(z)
