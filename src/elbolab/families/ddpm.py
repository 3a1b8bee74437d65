"""The DDPM family: a U-Net epsilon/x0/v/score model trained with the DDPM objective (Ho et al. 2020)."""

from __future__ import annotations

import dataclasses
import logging

import torch
from torch import nn

from elbolab.config import RunConfig, SamplerKind
from elbolab.diffusion import DiffusionObjective, build_diffusion, samplers
from elbolab.evaluate.bpd import BPDMethod, diffusion_bound_fn
from elbolab.families.base import BoundFn, DropLabels, SampleBatch, SampleRequest
from elbolab.nn.unet import build_unet

logger = logging.getLogger(__name__)


class DDPMFamily:
    """Builds and samples DDPM runs (``family = "ddpm"``)."""

    bpd_method = BPDMethod.DISCRETIZED_GAUSSIAN.value

    def adapt_to_data(self, cfg: RunConfig, image_shape: tuple[int, int, int], num_classes: int) -> RunConfig:
        c, h, w = image_shape
        if h != w:
            raise ValueError(f"the U-Net needs square images, the data has H = {h}, W = {w}")
        u = cfg.unet
        if (u.in_channels, u.image_size) != (c, h):
            logger.info("U-Net input set from the data: %d channels, %dx%d (config had %d, %d)",
                        c, h, w, u.in_channels, u.image_size)
            u = dataclasses.replace(u, in_channels=c, image_size=h)
        if u.num_classes and num_classes and u.num_classes != num_classes:
            raise ValueError(f"unet.num_classes = {u.num_classes} but the data has {num_classes} classes")
        return dataclasses.replace(cfg, unet=u)

    def build_model(self, cfg: RunConfig) -> nn.Module:
        return build_unet(cfg.unet)

    def build_objective(self, cfg: RunConfig) -> DiffusionObjective | DropLabels:
        objective = DiffusionObjective.from_config(cfg.diffusion)
        return objective if cfg.unet.num_classes else DropLabels(objective)

    def sample(self, cfg: RunConfig, model: nn.Module, n: int, generator: torch.Generator,
               request: SampleRequest) -> SampleBatch:
        if request.guidance is not None:
            raise ValueError("--guidance needs a classifier-free-guidance run (unet.num_classes > 0 trained with "
                             "label dropout); this run has none")
        d = build_diffusion(cfg.diffusion)
        kind = SamplerKind(request.sampler or cfg.sample.sampler)
        steps = request.steps or cfg.sample.steps
        device = next(model.parameters()).device
        labels = None
        if request.label is not None:
            if not 0 <= request.label < cfg.unet.num_classes:
                raise ValueError(f"label = {request.label}: this model has "
                                 f"{cfg.unet.num_classes or 'no'} classes")
            labels = torch.full((n,), request.label, dtype=torch.long, device=device)
        shape = (n, cfg.unet.in_channels, cfg.unet.image_size, cfg.unet.image_size)
        if kind is SamplerKind.DDIM:
            eta = cfg.sample.eta if request.eta is None else request.eta
            res = samplers.ddim(model, shape, d, steps=steps, generator=generator, cond=labels, eta=eta,
                                spacing=cfg.sample.spacing, clip_x0=True)
        else:
            res = samplers.ancestral(model, shape, d, steps=steps, generator=generator, cond=labels,
                                     spacing=cfg.sample.spacing, clip_x0=True)
        return SampleBatch(images=res.sample.clamp(-1, 1), labels=labels, nfe=res.nfe)

    def bound_fn(self, cfg: RunConfig, model: nn.Module, exact: bool) -> BoundFn | None:
        return diffusion_bound_fn(build_diffusion(cfg.diffusion), model, t_samples=None if exact else 32)
