"""The variational autoencoder (Kingma & Welling 2014) and the plain autoencoder baseline.

Lecture notes (004, "Variational Autoencoders"): the encoder gives ``q_phi(z|x) = N(mu_{z|x}, Sigma_{z|x})``, the
prior is ``p(z) = N(0, I)``, the decoder gives ``p_theta(x|z)``, and training maximises

    ELBO = E_{z ~ q_phi(z|x)}[log p_theta(x|z)] - D_KL(q_phi(z|x) || p(z))

with the reparameterisation ``z = mu + sigma * eps`` (notes 000) and the closed-form KL
``-D_KL = 1/2 sum_j (1 + log sigma_j^2 - mu_j^2 - sigma_j^2)`` (notes 004).

Shapes: images ``x: (B, C, H, W)`` in [-1, 1]; latents ``z: (B, J)`` (or ``(S, B, J)`` with S samples per image);
decoder parameters ``(B, P*C, H, W)`` read by a :class:`~elbolab.vae.likelihoods.Likelihood`.
Network call convention of the library: ``model(x, t=None, y=None)`` returns the reconstruction (same shape as x).
"""

from __future__ import annotations

import abc
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from elbolab.config import coerce
from elbolab.vae.bounds import ELBOTerms
from elbolab.vae.config import EncoderInput
from elbolab.vae.distributions import DiagonalGaussian
from elbolab.vae.likelihoods import Likelihood

__all__ = ["LatentVariableModel", "VAE", "Autoencoder"]


def _image_shape(image_shape: Sequence[int]) -> tuple[int, int, int]:
    shape = tuple(int(s) for s in image_shape)
    if len(shape) != 3 or any(s <= 0 for s in shape):
        raise ValueError(f"image_shape = {list(image_shape)}: expected positive (C, H, W)")
    return shape  # type: ignore[return-value]


class LatentVariableModel(nn.Module, abc.ABC):
    """What the VAE and the Markovian HVAE share: an encoder network for ``q_phi(z_1|x)``, a decoder network
    and likelihood for ``p_theta(x|z_1)``, and the standard normal prior on the top layer.

    Subclasses define the bounds (``elbo``, ``log_importance_weights``, used by :mod:`elbolab.vae.bounds`),
    ``posterior_means`` (active units, editing) and the generative side (``sample_latent``, ``decode_latent``).

    ``encoder_input``: the encoder reads ``x`` as given (``"data"``, [-1, 1]) or ``(x + 1) / 2`` (``"unit"``,
    [0, 1]: binarised MNIST as {0, 1}, as in Burda et al. 2016). A function of ``x`` either way, so the bounds
    are unchanged; only the optimisation differs (see :class:`~elbolab.vae.config.VAEConfig`).
    """

    def __init__(self, encoder: nn.Module, decoder: nn.Module, likelihood: Likelihood,
                 latent_dims: Sequence[int], image_shape: Sequence[int],
                 encoder_input: EncoderInput | str = EncoderInput.DATA) -> None:
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.likelihood = likelihood
        self.encoder_input = coerce(encoder_input, EncoderInput, "encoder_input")
        self.latent_dims = tuple(int(j) for j in latent_dims)
        if not self.latent_dims or any(j <= 0 for j in self.latent_dims):
            raise ValueError(f"latent_dims = {list(latent_dims)}: need at least one positive integer")
        self.image_shape = _image_shape(image_shape)

    @property
    def num_layers(self) -> int:
        return len(self.latent_dims)

    # ---------------------------------------------------------------------------------------------- encoder
    def posterior(self, x: Tensor) -> DiagonalGaussian:
        """``q_phi(z_1|x) = N(mu_phi(x), diag sigma_phi^2(x))``; ``x: (B, C, H, W)`` -> params ``(B, J_1)``."""
        if tuple(x.shape[1:]) != self.image_shape:
            raise ValueError(f"expected images of shape (B, {', '.join(map(str, self.image_shape))}), "
                             f"got {tuple(x.shape)}")
        if self.encoder_input is EncoderInput.UNIT:
            x = (x + 1.0) * 0.5
        return DiagonalGaussian.from_params(self.encoder(x))

    def features(self, x: Tensor) -> Tensor:
        """Frozen-encoder features for a downstream task: the posterior mean ``mu_phi(x)``, ``(B, J_1)``."""
        return self.posterior(x).mu

    # ---------------------------------------------------------------------------------------------- decoder
    def decode(self, z1: Tensor) -> Tensor:
        """Decoder parameters of ``p_theta(x|z_1)``: ``z1: (..., J_1) -> (..., P*C, H, W)``."""
        lead = z1.shape[:-1]
        params = self.decoder(z1.reshape(-1, z1.shape[-1]))
        return params.view(*lead, *params.shape[1:])

    def reconstruction_log_prob(self, z1: Tensor, x: Tensor) -> Tensor:
        """``log p_theta(x|z_1)`` in nats: ``z1: (..., B, J_1)``, ``x: (B, C, H, W)`` -> ``(..., B)``."""
        return self.likelihood.log_prob(self.decode(z1), x)

    @torch.no_grad()
    def init_decoder_bias_(self, x: Tensor) -> bool:
        """Data-dependent initialisation: set the bias of the decoder's last layer so that, before training, the
        decoder's output is (near) the likelihood's parameters of the mean image of ``x: (B, C, H, W)`` in
        [-1, 1] (Bernoulli: the logit of the mean grey level, clipped to [0.001, 0.999]; Burda et al. 2016's code
        does this with the training-set mean). Without it every pixel starts at probability 1/2, the first
        epochs go into learning the mean image and a hierarchical VAE's latents collapse meanwhile.

        The last layer is the decoder's last submodule with a bias: one entry per output value (``Linear`` of
        the fc decoder) or per channel (``ConvTranspose2d``: the spatial mean). Under ``torch.distributed`` the
        mean is averaged over the processes, so every rank sets the same bias. Returns False (and changes
        nothing) for a likelihood without such a bias (only :class:`~elbolab.vae.likelihoods.Bernoulli` has
        one) or a decoder whose last bias has neither shape.
        """
        mean = x.detach().float().mean(0)  # (C, H, W)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(mean)
            mean /= torch.distributed.get_world_size()
        layers = [m for m in self.decoder.modules() if isinstance(getattr(m, "bias", None), nn.Parameter)]
        if not layers:
            return False
        bias = layers[-1].bias
        if bias.numel() == mean.numel():
            value = self.likelihood.bias_for_mean(mean)
        elif bias.numel() == mean.shape[0]:
            value = self.likelihood.bias_for_mean(mean.mean((-2, -1), keepdim=True))
        else:
            return False
        if value is None or value.numel() != bias.numel():
            return False
        bias.copy_(value.reshape(bias.shape).to(bias.dtype))
        return True

    def decode_mean(self, z1: Tensor) -> Tensor:
        """Image ``E[x|z_1]`` clamped to [-1, 1]: ``z1: (N, J_1) -> (N, C, H, W)``."""
        return self.likelihood.mean(self.decode(z1)).clamp(-1.0, 1.0)

    def forward(self, x: Tensor, t: Tensor | None = None, y: Tensor | None = None) -> Tensor:
        """Reconstruction ``E[x | z_1 = mu_phi(x)]``, same shape as ``x`` (``t`` and ``y`` are unused)."""
        return self.likelihood.mean(self.decode(self.posterior(x).mu))

    # ---------------------------------------------------------------------------------------------- bounds
    @abc.abstractmethod
    def elbo(self, x: Tensor, generator: torch.Generator | None) -> ELBOTerms:
        """Single-sample ELBO terms per example of likelihood targets ``x: (B, C, H, W)``."""

    @abc.abstractmethod
    def log_importance_weights(self, x: Tensor, num_samples: int, generator: torch.Generator | None) -> Tensor:
        """``log p(x, z_s) - log q(z_s|x)`` for ``num_samples`` draws ``z_s ~ q(.|x)``: ``(S, B)``."""

    @abc.abstractmethod
    def posterior_means(self, x: Tensor, generator: torch.Generator | None,
                        num_samples: int = 32) -> tuple[Tensor, ...]:
        """``E_q[z_l|x]`` of every latent layer, ``(B, J_l)`` each."""

    # ---------------------------------------------------------------------------------------------- generation
    @abc.abstractmethod
    def sample_latent(self, n: int, generator: torch.Generator | None, temperature: float = 1.0) -> Tensor:
        """``z_1`` of ``n`` ancestral samples from the prior, ``(n, J_1)``."""

    @abc.abstractmethod
    def decode_latent(self, z: Tensor, layer: int = 1) -> Tensor:
        """Images for codes ``z: (N, J_layer)`` of latent layer ``layer``, ``(N, C, H, W)`` in [-1, 1]."""

    def sample(self, n: int, generator: torch.Generator | None, temperature: float = 1.0) -> Tensor:
        """``n`` images from the prior: ancestral latents, then the decoder mean, ``(n, C, H, W)`` in [-1, 1]."""
        return self.decode_mean(self.sample_latent(n, generator, temperature))

    def _prior_noise(self, n: int, dim: int, generator: torch.Generator | None) -> Tensor:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"sample: n = {n!r} must be a positive integer")
        p = next(self.parameters())
        return torch.randn((n, dim), generator=generator, device=p.device, dtype=p.dtype)


class VAE(LatentVariableModel):
    """Single-latent VAE: ``p(x, z) = p(z) p_theta(x|z)``, ``q_phi(z|x)`` diagonal Gaussian, ``p(z) = N(0, I)``."""

    def __init__(self, encoder: nn.Module, decoder: nn.Module, likelihood: Likelihood, latent_dim: int,
                 image_shape: Sequence[int], encoder_input: EncoderInput | str = EncoderInput.DATA) -> None:
        super().__init__(encoder, decoder, likelihood, (latent_dim,), image_shape, encoder_input)

    @property
    def latent_dim(self) -> int:
        return self.latent_dims[0]

    def elbo(self, x: Tensor, generator: torch.Generator | None) -> ELBOTerms:
        """Single-sample reparameterised ELBO per example (``x``: likelihood targets ``(B, C, H, W)``).

        ``reconstruction = log p_theta(x | mu + sigma * eps)``; the KL to the prior is in closed form.
        """
        q = self.posterior(x)
        z = q.rsample(generator)
        return ELBOTerms(reconstruction=self.reconstruction_log_prob(z, x), kl_per_dim=(q.kl_to_standard_normal(),))

    def log_importance_weights(self, x: Tensor, num_samples: int, generator: torch.Generator | None) -> Tensor:
        """``log p(x, z_k) - log q(z_k|x)`` for ``z_k ~ q(z|x)``, ``k = 1..S``: ``(S, B)``."""
        q = self.posterior(x)
        z = q.rsample(generator, num_samples)  # (S, B, J)
        log_prior = DiagonalGaussian.standard(z).log_prob(z).sum(-1)
        return self.reconstruction_log_prob(z, x) + log_prior - q.log_prob(z).sum(-1)

    def posterior_means(self, x: Tensor, generator: torch.Generator | None = None,
                        num_samples: int = 32) -> tuple[Tensor]:
        """``(E_q[z|x],) = (mu_phi(x),)`` (exact; the generator is unused)."""
        return (self.posterior(x).mu,)

    def sample_latent(self, n: int, generator: torch.Generator | None, temperature: float = 1.0) -> Tensor:
        """``z ~ N(0, temperature^2 I)``: ``(n, J)``."""
        return temperature * self._prior_noise(n, self.latent_dim, generator)

    def decode_latent(self, z: Tensor, layer: int = 1) -> Tensor:
        """Decoder mean for latent ``z: (N, J)`` (the only layer), ``(N, C, H, W)`` in [-1, 1]."""
        if layer != 1:
            raise ValueError(f"decode_latent: layer = {layer!r}; a VAE has one latent layer (layer = 1)")
        return self.decode_mean(z)


class Autoencoder(nn.Module):
    """Plain (non-variational) autoencoder (notes 004): ``z = f_phi(x)``, ``x_hat = g_theta(z)``, L2 loss.

    Not probabilistic: no way to sample new data. After training, "throw away the decoder and use the encoder for
    a downstream task" (:func:`elbolab.vae.probe.linear_probe` on :meth:`features`).
    """

    def __init__(self, encoder: nn.Module, decoder: nn.Module, latent_dim: int, image_shape: Sequence[int]) -> None:
        super().__init__()
        if latent_dim <= 0:
            raise ValueError(f"latent_dim = {latent_dim!r} must be > 0")
        self.encoder = encoder
        self.decoder = decoder
        self.latent_dims = (int(latent_dim),)
        self.image_shape = _image_shape(image_shape)

    def features(self, x: Tensor) -> Tensor:
        """The code ``z = f_phi(x)``, ``(B, J)``."""
        return self.encoder(x)

    def forward(self, x: Tensor, t: Tensor | None = None, y: Tensor | None = None) -> Tensor:
        """Reconstruction ``g_theta(f_phi(x))``, same shape as ``x``."""
        return self.decoder(self.encoder(x))

    def reconstruction_error(self, x: Tensor) -> Tensor:
        """Mean squared error per example, ``(B,)``."""
        return F.mse_loss(self(x), x, reduction="none").flatten(1).mean(1)

    def decode_latent(self, z: Tensor, layer: int = 1) -> Tensor:
        """Decoder output for codes ``z: (N, J)``, ``(N, C, H, W)`` clamped to [-1, 1]."""
        if layer != 1:
            raise ValueError(f"decode_latent: layer = {layer!r}; an autoencoder has one code layer (layer = 1)")
        return self.decoder(z).clamp(-1.0, 1.0)
