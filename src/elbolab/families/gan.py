"""The GAN family: a generator / discriminator pair trained by an adversarial game (elbolab.gan).

A GAN has no likelihood, so there is no bound and no bits/dim (``bpd_method = None``); ``elbolab eval``
reports sample metrics only (FID, KID, IS, precision/recall). Its ``[model]`` section is :class:`GANModelConfig`
(``[model.gan]``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch
from torch import nn

from elbolab.config import RunConfig
from elbolab.families import register
from elbolab.families.base import (ModelFamily, NoOptions, SampleBatch, SampleRequest, SamplerSpec,
                                   check_num_classes, with_image_shape)
from elbolab.gan import GAN, GANObjective, build_gan, sample_gan
from elbolab.gan.config import GANConfig


@dataclass
class GANModelConfig:
    """``[model]`` of a GAN run."""

    gan: GANConfig = field(default_factory=GANConfig)


class GANFamily(ModelFamily):
    """Builds and samples GAN runs (``family = "gan"``); samples are one generator pass (nfe = 1)."""

    name = "gan"
    config_cls = GANModelConfig
    samplers = {"generator": SamplerSpec(sample_gan, NoOptions, "one pass of the generator G(z), z ~ N(0, I)")}
    default_sampler = "generator"
    tiny_overrides = ("gan.g_channels=4", "gan.d_channels=4", "gan.latent_dim=8")

    def adapt_to_data(self, cfg: RunConfig, image_shape: tuple[int, int, int], num_classes: int) -> RunConfig:
        g = with_image_shape(cfg.model.gan, image_shape, "GAN")
        check_num_classes(g.num_classes, num_classes, "gan.num_classes")
        return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, gan=g))

    def num_classes(self, cfg: RunConfig) -> int:
        return cfg.model.gan.num_classes

    def image_shape(self, cfg: RunConfig) -> tuple[int, int, int]:
        g = cfg.model.gan
        return (g.in_channels, g.image_size, g.image_size)

    def build_model(self, cfg: RunConfig) -> GAN:
        return build_gan(cfg.model.gan)

    def build_objective(self, cfg: RunConfig) -> GANObjective:
        return GANObjective.from_config(cfg.model.gan)

    def sample(self, cfg: RunConfig, model: nn.Module, n: int, generator: torch.Generator,
               request: SampleRequest) -> SampleBatch:
        if not isinstance(model, GAN):
            raise TypeError(f"GANFamily samples an elbolab.gan.GAN, got {type(model).__name__}")
        if request.guidance is not None:
            raise ValueError("--guidance is classifier-free guidance of a diffusion model; a GAN has none")
        name, _ = self.sampler_options(cfg, request)
        out = self.samplers[name].fn(model, n, generator, labels=request.label)
        return SampleBatch(images=out.images.clamp(-1, 1), labels=out.labels, nfe=1, method=name)


register(GANFamily())
