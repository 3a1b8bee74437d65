"""A GAN (Goodfellow et al. 2014): a generator G, a discriminator D, a latent prior z ~ N(0, I), and the
adversarial objective that trains them through the shared :class:`~elbolab.train.Trainer`.

The objective is an :class:`~elbolab.train.AdversarialObjective`: two parameter groups (``discriminator``,
``generator``), a plan of ``n_critic`` discriminator updates (each on a fresh batch) followed by one
generator update (on the last batch, whose labels a conditional generator reuses), and an EMA of the
generator. Which game is played is :class:`~elbolab.gan.config.GANLoss`:

- ``minimax``: D minimises -L(D, G), G minimises E log(1 - D(G(z))) -- the notes' min_G max_D L(D, G);
- ``non_saturating``: same D, G minimises -E log D(G(z)) (Goodfellow et al. 2014, Sec. 3);
- ``wasserstein_gp``: the critic minimises E f(G(z)) - E f(x) + lambda E (||grad f(x_hat)|| - 1)^2 over
  interpolates x_hat, G minimises -E f(G(z)) (Algorithm 1 of Gulrajani et al. 2017);
- ``hinge``: D minimises E max(0, 1 - l(x)) + E max(0, 1 + l(G(z))), G minimises -E l(G(z)) (Miyato et al.
  2018, eq. 17-18), usually with a spectrally normalised D (``spectral_norm``).

Any game may add the R1 penalty of Mescheder et al. 2018 (eq. 9) to the discriminator's loss,
``gamma / 2 E_{x ~ p_r} ||grad_x l(x)||^2`` (``r1_gamma``); the generator's EMA comes from the Trainer
(``ema_group() = "generator"``), the two time-scale learning rates (TTUR, Heusel et al. 2017) from ``g_lr`` /
``d_lr``.

A GAN has no likelihood: there is no ELBO and no bits/dim, only sample metrics (FID, KID, IS, precision/recall).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from elbolab.gan.config import GANArchitecture, GANConfig, GANLoss
from elbolab.gan.losses import (discriminator_loss, game, generator_loss, gradient_penalty, interpolates,
                                squared_input_gradient_norm)
from elbolab.nn.gan_nets import DCGANDiscriminator, DCGANGenerator, MLPDiscriminator, MLPGenerator
from elbolab.objectives import AdversarialObjective, LossOutput, ParamGroup, UpdatePhase

logger = logging.getLogger(__name__)

__all__ = ["GAN", "GANSamples", "GANObjective", "build_gan", "sample_gan"]

DISCRIMINATOR = "discriminator"
GENERATOR = "generator"


class GAN(nn.Module):
    """``generator(z: (B, latent_dim), y) -> x: (B, *data_shape)``, ``discriminator(x, y) -> logits: (B,)``.

    ``forward(z, y=None)`` is the generator. ``num_classes``: 0, or the classes both networks are
    conditioned on (they must agree).
    """

    def __init__(self, generator: nn.Module, discriminator: nn.Module, latent_dim: int, num_classes: int = 0) -> None:
        super().__init__()
        if isinstance(latent_dim, bool) or not isinstance(latent_dim, int) or latent_dim < 1:
            raise ValueError(f"GAN: latent_dim = {latent_dim!r} must be a positive integer")
        for name, net in (("generator", generator), ("discriminator", discriminator)):
            k = getattr(net, "num_classes", 0)
            if k != num_classes:
                raise ValueError(f"GAN: the {name} has num_classes = {k}, the GAN {num_classes}")
        self.generator = generator
        self.discriminator = discriminator
        self.latent_dim = latent_dim
        self.num_classes = num_classes

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def sample_latent(self, n: int, generator: torch.Generator) -> Tensor:
        """z ~ N(0, I): (n, latent_dim), on the model's device, drawn from ``generator``."""
        return torch.randn(n, self.latent_dim, generator=generator, device=self.device)

    def forward(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        return self.generator(z, y)


@dataclass
class GANSamples:
    """``images: (N, *data_shape)`` (in [-1, 1] for images) and the ``labels: (N,)`` they were drawn with
    (None for an unconditional GAN)."""

    images: Tensor
    labels: Tensor | None


def sample_gan(model: GAN, n: int, generator: torch.Generator, labels: Tensor | int | None = None) -> GANSamples:
    """x = G(z, y), z ~ N(0, I): one generator pass. ``labels``: a class for all n, an (n,) tensor, or None
    (a conditional GAN then draws labels uniformly from ``generator`` before z)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n = {n!r} must be a positive integer")
    y: Tensor | None = None
    if model.num_classes:
        if labels is None:
            y = torch.randint(model.num_classes, (n,), generator=generator, device=model.device)
        elif isinstance(labels, int):
            if not 0 <= labels < model.num_classes:
                raise ValueError(f"label = {labels}: this GAN has classes 0..{model.num_classes - 1}")
            y = torch.full((n,), labels, dtype=torch.long, device=model.device)
        else:
            y = labels.to(model.device).long()
    elif labels is not None:
        raise ValueError(f"label = {labels!r}: this GAN is unconditional (num_classes = 0)")
    z = model.sample_latent(n, generator)
    return GANSamples(images=model.generator(z, y), labels=y)


def build_gan(cfg: GANConfig, data_shape: Sequence[int] | None = None) -> GAN:
    """The GAN of ``cfg`` for data of shape ``data_shape`` (default ``(in_channels, image_size, image_size)``;
    ``(D,)`` for toy data, which needs ``architecture = "mlp"``)."""
    shape = tuple(data_shape) if data_shape is not None else (cfg.in_channels, cfg.image_size, cfg.image_size)
    arch = GANArchitecture(cfg.architecture)
    sn = cfg.spectral_norm  # Miyato et al. 2018 on every D layer
    if arch is GANArchitecture.DCGAN:
        if len(shape) != 3 or shape[1] != shape[2]:
            raise ValueError(f"gan.architecture = 'dcgan' needs square images (C, S, S), got data shape {shape}; "
                             "use 'mlp' for toy data")
        c, s, _ = shape
        g: nn.Module = DCGANGenerator(cfg.latent_dim, c, s, cfg.g_channels, cfg.num_classes, cfg.g_norm,
                                         output_stretch=cfg.output_stretch)
        d: nn.Module = DCGANDiscriminator(c, s, cfg.d_channels, cfg.num_classes, spectral_norm=sn)
    else:
        g = MLPGenerator(cfg.latent_dim, shape, cfg.hidden, cfg.depth, cfg.num_classes, tanh_output=len(shape) == 3,
                         output_stretch=cfg.output_stretch)
        d = MLPDiscriminator(shape, cfg.hidden, cfg.depth, cfg.num_classes, spectral_norm=sn)
    return GAN(g, d, cfg.latent_dim, cfg.num_classes)


class GANObjective(AdversarialObjective):
    """The adversarial objective of a :class:`GAN` (an :class:`~elbolab.train.AdversarialObjective`).

    ``loss``: the game (:class:`~elbolab.gan.config.GANLoss` or ``"hinge"``); ``n_critic``: discriminator
    updates per generator update; ``gp_weight``: lambda of the gradient penalty (``wasserstein_gp``); ``g_lr`` /
    ``d_lr``: per-group learning rates (None = ``TrainConfig.lr``; d_lr > g_lr is TTUR); ``r1_gamma``: gamma of
    the R1 penalty (0 = off). Logged per step: ``discriminator/d_real`` and
    ``discriminator/d_fake`` (mean D(x), D(G(z)) as probabilities, or mean critic values for WGAN-GP),
    ``discriminator/gp`` and ``discriminator/w_estimate`` = E f(x) - E f(G(z)) (WGAN-GP), ``generator/d_fake``;
    ``r1_gamma > 0`` adds ``gamma / 2 E ||grad_x l(x)||^2`` on the real batch (logged: ``discriminator/r1``,
    the expectation without the factor). For the hinge game d_real / d_fake are sigmoid(logit) too, though
    its logits are not log-odds.
    """

    def __init__(self, loss: GANLoss | str = GANLoss.NON_SATURATING, n_critic: int = 1, gp_weight: float = 10.0,
                 g_lr: float | None = None, d_lr: float | None = None, r1_gamma: float = 0.0) -> None:
        value = game(loss)
        # a GANLoss member where the enum has the value (str Enum: compares equal to its value either way)
        self.kind: GANLoss | str = GANLoss(value) if value in {k.value for k in GANLoss} else value
        if not r1_gamma >= 0:
            raise ValueError(f"r1_gamma = {r1_gamma!r} must be >= 0")
        self.r1_gamma = float(r1_gamma)
        if isinstance(n_critic, bool) or not isinstance(n_critic, int) or n_critic < 1:
            raise ValueError(f"n_critic = {n_critic!r} must be an integer >= 1")
        if gp_weight < 0:
            raise ValueError(f"gp_weight = {gp_weight!r} must be >= 0")
        self.n_critic, self.gp_weight, self.g_lr, self.d_lr = n_critic, float(gp_weight), g_lr, d_lr

    @classmethod
    def from_config(cls, cfg: GANConfig) -> "GANObjective":
        return cls(cfg.loss, cfg.n_critic, cfg.gp_weight, g_lr=cfg.g_lr or None, d_lr=cfg.d_lr or None,
                   r1_gamma=cfg.r1_gamma)

    # ---- AdversarialObjective ----------------------------------------------------------------------
    def param_groups(self) -> dict[str, ParamGroup]:
        return {DISCRIMINATOR: ParamGroup((DISCRIMINATOR,), lr=self.d_lr),
                GENERATOR: ParamGroup((GENERATOR,), lr=self.g_lr)}

    def update_plan(self) -> list[UpdatePhase]:
        return [UpdatePhase(DISCRIMINATOR, self.n_critic), UpdatePhase(GENERATOR, 1, new_batch=False)]

    def ema_group(self) -> str | None:
        return GENERATOR

    def group_loss(self, group: str, model: nn.Module, x: Tensor, y: Tensor | None,
                   generator: torch.Generator) -> LossOutput:
        """x: (B, *data_shape) real data; y: (B,) labels (used only by a conditional GAN)."""
        if not isinstance(model, GAN):
            raise TypeError(f"GANObjective trains an elbolab.gan.GAN, got {type(model).__name__}")
        labels = None
        if model.num_classes:
            if y is None:
                raise ValueError("a class-conditional GAN needs labelled data (the batch has no labels)")
            labels = y
        z = model.sample_latent(x.shape[0], generator)
        if group == DISCRIMINATOR:
            return self._discriminator_loss(model, x, labels, z, generator)
        if group == GENERATOR:
            fake_logits = model.discriminator(model.generator(z, labels), labels)
            return LossOutput(generator_loss(self.kind, fake_logits), {"d_fake": self._score(fake_logits)})
        raise ValueError(f"unknown parameter group {group!r}; groups: {DISCRIMINATOR}, {GENERATOR}")

    def _score(self, logits: Tensor) -> float:
        """Mean D as a probability (critic value for WGAN-GP), for logging."""
        logits = logits.detach().float()
        return float(logits.mean() if self.kind is GANLoss.WASSERSTEIN_GP else torch.sigmoid(logits).mean())

    def _discriminator_loss(self, model: GAN, x: Tensor, y: Tensor | None, z: Tensor,
                            generator: torch.Generator) -> LossOutput:
        with torch.no_grad():
            fake = model.generator(z, y)
        fake = fake.to(x.dtype)
        if self.r1_gamma > 0:
            x = x.detach().requires_grad_(True)
        both = model.discriminator(torch.cat([x, fake]), None if y is None else torch.cat([y, y]))
        real_logits, fake_logits = both.split(x.shape[0])
        loss = discriminator_loss(self.kind, real_logits, fake_logits)
        metrics = {"d_real": self._score(real_logits), "d_fake": self._score(fake_logits)}
        if self.kind is GANLoss.WASSERSTEIN_GP:
            metrics["w_estimate"] = -float(loss.detach())
            if self.gp_weight > 0:
                gp = gradient_penalty(lambda h: model.discriminator(h, y), interpolates(x.detach(), fake, generator))
                loss = loss + self.gp_weight * gp
                metrics["gp"] = float(gp.detach())
        if self.r1_gamma > 0:
            r1 = squared_input_gradient_norm(real_logits, x).mean()
            loss = loss + 0.5 * self.r1_gamma * r1
            metrics["r1"] = float(r1.detach())
        return LossOutput(loss, metrics)
