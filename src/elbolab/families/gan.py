"""The GAN family: a generator / discriminator pair trained by an adversarial game (elbolab.gan).

A GAN has no likelihood, so there is no bound and no bits/dim: ``bpd_method`` is None and ``bound_fn``
returns None; ``elbolab eval`` reports sample metrics only (FID, KID, IS, precision/recall).
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from elbolab.config import RunConfig
from elbolab.families.base import BoundFn, SampleBatch, SampleRequest, check_num_classes, with_image_shape
from elbolab.gan import GAN, GANObjective, build_gan, sample_gan


class GANFamily:
    """Builds and samples GAN runs (``family = "gan"``); samples are one generator pass (nfe = 1)."""

    bpd_method = None  # no likelihood: a GAN defines p_g only implicitly, through its sampler

    def adapt_to_data(self, cfg: RunConfig, image_shape: tuple[int, int, int], num_classes: int) -> RunConfig:
        g = with_image_shape(cfg.gan, image_shape, "GAN")
        check_num_classes(g.num_classes, num_classes, "gan.num_classes")
        return dataclasses.replace(cfg, gan=g)

    def build_model(self, cfg: RunConfig) -> GAN:
        return build_gan(cfg.gan)

    def build_objective(self, cfg: RunConfig) -> GANObjective:
        return GANObjective.from_config(cfg.gan)

    def sample(self, cfg: RunConfig, model: nn.Module, n: int, generator: torch.Generator,
               request: SampleRequest) -> SampleBatch:
        if not isinstance(model, GAN):
            raise TypeError(f"GANFamily samples an elbolab.gan.GAN, got {type(model).__name__}")
        if request.guidance is not None:
            raise ValueError("--guidance is classifier-free guidance of a diffusion model; a GAN has none")
        if request.sampler is not None or request.steps is not None or request.eta is not None:
            raise ValueError("a GAN samples in one generator pass: --sampler, --steps and --eta do not apply")
        out = sample_gan(model, n, generator, labels=request.label)
        return SampleBatch(images=out.images.clamp(-1, 1), labels=out.labels, nfe=1, method="generator")

    def bound_fn(self, cfg: RunConfig, model: nn.Module, exact: bool) -> BoundFn | None:
        return None  # no likelihood, no bits/dim
