"""GANs as the adversarial contrast to the likelihood models: minimax, non-saturating, Wasserstein
(gradient penalty) and hinge games, the R1 penalty, spectral normalisation of D, the optimal-discriminator
theory, trained by the shared Trainer.

- :mod:`elbolab.gan.losses`: the losses as pure functions of logits, interpolates and the gradient penalty;
- :mod:`elbolab.gan.gan`: the :class:`GAN` module, :func:`sample_gan`, :func:`build_gan` and the
  :class:`GANObjective` (an ``AdversarialObjective``);
- :mod:`elbolab.gan.theory`: D* = p_r / (p_r + p_g), JS divergence and L(G, D*) by quadrature.

Networks live in :mod:`elbolab.nn.gan_nets`.
"""

from elbolab.gan.gan import GAN, GANObjective, GANSamples, build_gan, sample_gan
from elbolab.gan.losses import (
    HINGE,
    discriminator_loss,
    generator_loss,
    gradient_penalty,
    hinge_discriminator_loss,
    hinge_generator_loss,
    interpolates,
    minimax_discriminator_loss,
    minimax_generator_loss,
    non_saturating_generator_loss,
    r1_penalty,
    wasserstein_critic_loss,
    wasserstein_generator_loss,
)
from elbolab.gan.theory import FreshDiscriminatorCheck, fresh_discriminator_check, gan_dstar_check

__all__ = [
    "GAN", "GANObjective", "GANSamples", "build_gan", "sample_gan",
    "discriminator_loss", "generator_loss", "gradient_penalty", "interpolates", "minimax_discriminator_loss",
    "minimax_generator_loss", "non_saturating_generator_loss", "wasserstein_critic_loss",
    "wasserstein_generator_loss", "HINGE", "hinge_discriminator_loss", "hinge_generator_loss", "r1_penalty",
    "FreshDiscriminatorCheck", "fresh_discriminator_check", "gan_dstar_check",
]
