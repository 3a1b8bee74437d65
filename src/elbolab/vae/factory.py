"""Build VAE-family models and objectives from a :class:`~elbolab.vae.config.VAEConfig`; the Trainer's sample hook."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from elbolab.vae.config import VAEArchitecture, VAEConfig, VAEKind
from elbolab.nn.convnets import ConvDecoder, ConvEncoder, FeedForward, MLPDecoder, MLPEncoder
from elbolab.vae.hvae import HVAE
from elbolab.vae.likelihoods import make_likelihood
from elbolab.vae.objectives import AEObjective, ELBOObjective
from elbolab.vae.vae import VAE, Autoencoder, LatentVariableModel

__all__ = ["VAE_FAMILIES", "build_vae", "build_objective", "sample_fn"]

VAE_FAMILIES = tuple(VAEKind)


def _family(family: VAEKind | str) -> VAEKind:
    try:
        return VAEKind(family)
    except ValueError:
        choices = ", ".join(repr(f.value) for f in VAEKind)
        raise ValueError(f"family = {family!r} is not a VAE family: expected one of {choices}") from None


def _networks(cfg: VAEConfig, image_shape: tuple[int, int, int], enc_out: int, dec_out_channels: int,
              latent: int) -> tuple[nn.Module, nn.Module]:
    c, h, w = image_shape
    arch = VAEArchitecture(cfg.architecture)
    if arch is VAEArchitecture.FC:
        return (MLPEncoder(image_shape, cfg.hidden_sizes, enc_out, cfg.activation),
                MLPDecoder(latent, tuple(reversed(cfg.hidden_sizes)), dec_out_channels, (h, w), cfg.activation))
    if h != w:
        raise ValueError(f"architecture 'conv' needs square images, got image_shape = {list(image_shape)}")
    return (ConvEncoder(c, h, cfg.channels, cfg.conv_hidden, enc_out),
            ConvDecoder(latent, dec_out_channels, h, cfg.channels, cfg.conv_hidden))


def build_vae(cfg: VAEConfig, image_shape: Sequence[int] | None = None,
              family: VAEKind | str = VAEKind.VAE) -> nn.Module:
    """The model of a VAE-family run: :class:`VAE`, :class:`HVAE` or :class:`Autoencoder`.

    ``image_shape = (C, H, W)`` of the data (e.g. ``(1, 28, 28)``; default ``cfg.in_channels`` x
    ``cfg.image_size`` squared); ``family`` is the run's ``cfg.family``.
    ``cfg.latent_dims`` must have one entry for ``vae`` and ``ae``, any number (the HVAE's L) for ``hvae``.
    """
    family = _family(family)
    if image_shape is None:
        image_shape = (cfg.in_channels, cfg.image_size, cfg.image_size)
    image_shape = tuple(int(s) for s in image_shape)
    if len(image_shape) != 3 or any(s <= 0 for s in image_shape):
        raise ValueError(f"image_shape = {list(image_shape)}: expected positive (C, H, W)")
    dims = tuple(cfg.latent_dims)
    if family in (VAEKind.VAE, VAEKind.AE) and len(dims) != 1:
        raise ValueError(f"family {family.value!r} has one latent layer but vae.latent_dims = {list(dims)}; "
                         "use family 'hvae' for several layers")
    c = image_shape[0]
    if family is VAEKind.AE:
        encoder, decoder = _networks(cfg, image_shape, dims[0], c, dims[0])
        return Autoencoder(encoder, decoder, dims[0], image_shape)
    likelihood = make_likelihood(cfg.likelihood, cfg.gaussian_std)
    encoder, decoder = _networks(cfg, image_shape, 2 * dims[0], likelihood.params_per_channel * c, dims[0])
    if family is VAEKind.VAE:
        return VAE(encoder, decoder, likelihood, dims[0], image_shape, cfg.encoder_input)
    hidden = (cfg.layer_hidden,) * cfg.layer_depth
    up = [FeedForward(dims[i - 1], hidden, 2 * dims[i], cfg.activation) for i in range(1, len(dims))]
    down = [FeedForward(dims[i], hidden, 2 * dims[i - 1], cfg.activation) for i in range(1, len(dims))]
    return HVAE(encoder, decoder, likelihood, dims, image_shape, up, down, cfg.encoder_input)


def build_objective(cfg: VAEConfig, family: VAEKind | str = VAEKind.VAE) -> ELBOObjective | AEObjective:
    """The training objective of a VAE-family run (``beta``, ``kl_warmup_steps``, ``free_bits``,
    ``init_decoder_bias`` from ``cfg``)."""
    if _family(family) is VAEKind.AE:
        return AEObjective()
    return ELBOObjective(beta=cfg.beta, kl_warmup_steps=cfg.kl_warmup_steps, free_bits=cfg.free_bits,
                         init_decoder_bias=cfg.init_decoder_bias)


@torch.no_grad()
def sample_fn(model: nn.Module, n: int, generator: torch.Generator | None) -> Tensor:
    """Sample grid hook for the Trainer: ``n`` prior samples ``(n, C, H, W)`` in [-1, 1] (decoder means).

    Raises ValueError for an :class:`Autoencoder`, which has no prior to sample from.
    """
    if not isinstance(model, LatentVariableModel):
        raise ValueError(f"sample_fn: {type(model).__name__} is not a generative latent-variable model "
                         "(a plain autoencoder cannot sample new data; use reconstructions instead)")
    was_training = model.training
    model.eval()
    try:
        return model.sample(n, generator)
    finally:
        model.train(was_training)
