"""Configuration of the GAN family (``elbolab.gan``): networks, latent prior, the game, its optimisers."""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

from elbolab.config import check_range


class GANArchitecture(str, enum.Enum):
    DCGAN = "dcgan"  # Radford et al. 2016 conv generator / discriminator (28x28x1, 32x32x3)
    MLP = "mlp"  # fully-connected pair (Goodfellow et al. 2014; toy data or flattened images)


class GANLoss(str, enum.Enum):
    """The game a GAN plays (elbolab.gan.losses)."""

    MINIMAX = "minimax"  # the notes' min_G max_D E log D(x) + E log(1 - D(G(z))) (saturates)
    NON_SATURATING = "non_saturating"  # same D; G maximises E log D(G(z)) (Goodfellow et al. 2014, Sec. 3)
    WASSERSTEIN_GP = "wasserstein_gp"  # critic E f(G(z)) - E f(x) + gradient penalty (Gulrajani et al. 2017)
    HINGE = "hinge"  # D: E max(0, 1 - l(x)) + E max(0, 1 + l(G(z))); G: -E l(G(z)) (Miyato et al. 2018)


class GANNorm(str, enum.Enum):
    """Normalisation inside the DCGAN generator (the discriminator has none)."""

    BATCH = "batch"  # BatchNorm2d (Radford et al. 2016); sampling uses its running statistics
    PIXEL = "pixel"  # pixelwise feature normalisation (Karras et al. 2018, Sec. 4.2): per example, no state
    NONE = "none"


@dataclass
class GANConfig:
    """GAN: networks, latent prior z ~ N(0, I), the game and its optimiser settings.

    ``in_channels`` / ``image_size`` are set from the data. ``g_lr`` / ``d_lr``: Adam learning rates of the
    generator / discriminator (0 = ``train.lr``; a larger ``d_lr`` is TTUR, Heusel et al. 2017); both groups
    use ``train.betas``. ``n_critic``: discriminator updates per generator update (Algorithm 1 of Gulrajani
    et al. 2017 uses 5). ``num_classes > 0`` makes G and D class-conditional.
    """

    architecture: GANArchitecture = GANArchitecture.DCGAN
    in_channels: int = 1
    image_size: int = 28
    latent_dim: int = 64
    g_channels: int = 64  # dcgan: width of the generator's last stage (earlier stages double it)
    d_channels: int = 64  # dcgan: width of the discriminator's first stage (later stages double it)
    g_norm: GANNorm = GANNorm.PIXEL  # batch: its running statistics do not match the EMA weights
    hidden: int = 256  # mlp: hidden width
    depth: int = 2  # mlp: hidden layers
    num_classes: int = 0
    loss: GANLoss = GANLoss.NON_SATURATING
    n_critic: int = 1
    gp_weight: float = 10.0  # lambda of the gradient penalty (wasserstein_gp only)
    g_lr: float = 0.0
    d_lr: float = 0.0
    spectral_norm: bool = False  # spectral normalisation of every D layer (Miyato et al. 2018)
    r1_gamma: float = 0.0  # R1 penalty gamma/2 E ||grad D(x_real)||^2 (Mescheder et al. 2018); 0 = off
    output_stretch: float = 1.0  # image output clamp(stretch * tanh(h), -1, 1): > 1 reaches exact black/white

    def validate(self, prefix: str) -> None:
        check_range(self, prefix, positive=("in_channels", "image_size", "latent_dim", "g_channels", "d_channels",
                                            "hidden", "depth", "n_critic"),
                    non_negative=("num_classes", "gp_weight", "g_lr", "d_lr", "r1_gamma"))
        if not (math.isfinite(self.output_stretch) and self.output_stretch >= 1.0):
            raise ValueError(f"{prefix}.output_stretch = {self.output_stretch!r} must be a finite number >= 1 (1 = plain tanh; "
                             "1.1 reaches exact black and white at |h| = 1.52)")
