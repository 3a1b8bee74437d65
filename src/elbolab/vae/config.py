"""Configuration of the VAE family (VAE, Markovian HVAE, plain autoencoder; ``elbolab.vae``)."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from elbolab.nn.config import Activation  # noqa: F401  (a field type of VAEConfig, re-exported)

from elbolab.config import ConfigError, check_range


class VAEKind(str, enum.Enum):
    """Which latent-variable model a VAE-family run trains (the run's ``family``)."""

    VAE = "vae"  # Kingma & Welling 2014, elbolab.vae.VAE
    HVAE = "hvae"  # Markovian hierarchical VAE, elbolab.vae.HVAE
    AE = "ae"  # plain (non-variational) autoencoder baseline, elbolab.vae.Autoencoder


class VAEArchitecture(str, enum.Enum):
    FC = "fc"  # the notes' fully-connected 784 -> ... -> 20 model
    CONV = "conv"  # stride-2 conv encoder / transposed-conv decoder (28x28x1, 32x32x3)


class DecoderLikelihood(str, enum.Enum):
    """p_theta(x|z) of a VAE."""

    BERNOULLI = "bernoulli"  # dynamically binarised data
    GAUSSIAN_FIXED = "gaussian_fixed"  # N(mu_theta(z), sigma^2 I), sigma = VAEConfig.gaussian_std
    GAUSSIAN_LEARNED = "gaussian_learned"  # N(mu_theta(z), diag sigma_theta^2(z))
    DISCRETIZED = "discretized"  # discretised Gaussian on 8-bit data (Ho et al. 2020), bits/dim comparable


class EncoderInput(str, enum.Enum):
    """What the encoder of ``q_phi(z_1|x)`` reads: the likelihood target in which units."""

    DATA = "data"  # as scored, in the library's [-1, 1] convention (binarised data: {-1, 1}); earlier versions
    UNIT = "unit"  # mapped to [0, 1] by (x + 1) / 2 (binarised data: {0, 1}, the input of Burda et al. 2016)


@dataclass
class VAEConfig:
    """VAE / Markovian HVAE / autoencoder: architecture, latents, decoder likelihood, KL schedule.

    ``latent_dims`` has one entry per latent layer: ``(J,)`` for a VAE or autoencoder, ``(J_1, ..., J_L)``
    for an L-layer HVAE (its length is the number of HVAE layers).
    """

    in_channels: int = 1  # data shape (set from the data by `elbolab train`)
    image_size: int = 28
    architecture: VAEArchitecture = VAEArchitecture.FC
    latent_dims: tuple[int, ...] = (20,)
    hidden_sizes: tuple[int, ...] = (400,)  # fc: widths of the encoder's hidden layers (decoder mirrors)
    channels: tuple[int, ...] = (32, 64)  # conv: one stride-2 stage per entry (decoder mirrors)
    conv_hidden: int = 256  # conv: width of the fully-connected layer after the conv stages
    layer_hidden: int = 256  # hvae: hidden width of q(z_l|z_{l-1}) and p(z_{l-1}|z_l)
    layer_depth: int = 1  # hvae: hidden layers of that width in each transition (Burda et al. 2016: 2)
    activation: Activation = Activation.RELU  # fc networks and hvae transitions
    likelihood: DecoderLikelihood = DecoderLikelihood.BERNOULLI
    gaussian_std: float = 0.1  # gaussian_fixed: decoder std in units of [-1, 1] data
    beta: float = 1.0  # weight of the KL terms (1 = the ELBO)
    kl_warmup_steps: int = 0  # beta ramps linearly from 0 over this many steps (0 = off)
    free_bits: float = 0.0  # minimum KL in nats per latent dimension (Kingma et al. 2016; 0 = off)
    iwae_samples: int = 5000  # K of the importance-weighted bound reported by eval
    # "unit": the encoder reads (x + 1) / 2, so that always-black background pixels are 0 (no input, no gradient
    # on their weights) rather than -1; "data" (the default, what run folders without this key were trained with)
    # reads x as scored. The Burda presets use "unit" (see their header for what it gains).
    encoder_input: EncoderInput = EncoderInput.DATA
    # training starts with the Bernoulli decoder's output bias at the logit of the first batch's mean grey level
    # (Burda et al. 2016's code: the training-set mean), so p(x|z) starts at the mean image instead of 1/2 per pixel
    init_decoder_bias: bool = True

    def validate(self, prefix: str) -> None:
        check_range(self, prefix, positive=("in_channels", "image_size", "conv_hidden", "layer_hidden", "layer_depth",
                                            "gaussian_std", "beta", "iwae_samples"),
                    non_negative=("kl_warmup_steps", "free_bits"))
        for f in ("latent_dims", "hidden_sizes", "channels"):
            v = getattr(self, f)
            if any(d <= 0 for d in v) or (f != "hidden_sizes" and not v):
                raise ConfigError(f"{prefix}.{f} = {list(v)}: need positive integers"
                                  + ("" if f == "hidden_sizes" else " (at least one)"))
