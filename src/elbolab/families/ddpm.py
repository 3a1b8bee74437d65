"""The DDPM family: a U-Net epsilon/x0/v/score model trained with the DDPM objective (Ho et al. 2020)."""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from elbolab.config import RunConfig, SamplerKind
from elbolab.diffusion import DiffusionObjective, build_diffusion, samplers
from elbolab.diffusion.guidance import LabelDropout, guided_sampling
from elbolab.evaluate.bpd import BPDMethod, diffusion_bound_fn
from elbolab.families.base import (BoundFn, DropLabels, SampleBatch, SampleRequest, check_num_classes,
                                   with_image_shape)
from elbolab.nn.precision import with_precision
from elbolab.nn.unet import build_unet



class DDPMFamily:
    """Builds and samples DDPM runs (``family = "ddpm"``)."""

    bpd_method = BPDMethod.DISCRETIZED_GAUSSIAN.value

    def adapt_to_data(self, cfg: RunConfig, image_shape: tuple[int, int, int], num_classes: int) -> RunConfig:
        u = with_image_shape(cfg.unet, image_shape, "U-Net")
        check_num_classes(u.num_classes, num_classes, "unet.num_classes")
        return dataclasses.replace(cfg, unet=u)

    def build_model(self, cfg: RunConfig) -> nn.Module:
        return build_unet(cfg.unet)

    def build_objective(self, cfg: RunConfig) -> LabelDropout | DropLabels:
        objective = DiffusionObjective.from_config(cfg.diffusion)
        if not cfg.unet.num_classes:
            return DropLabels(objective)
        return LabelDropout(objective, cfg.diffusion.p_uncond)  # classifier-free guidance training

    def sample(self, cfg: RunConfig, model: nn.Module, n: int, generator: torch.Generator,
               request: SampleRequest) -> SampleBatch:
        d = build_diffusion(cfg.diffusion)
        kind = SamplerKind(request.sampler or cfg.sample.sampler)
        steps = request.steps or cfg.sample.steps
        device = next(model.parameters()).device
        model = with_precision(model, cfg.sample.precision)
        guided = guided_sampling(model, cfg.unet.num_classes, n, label=request.label, w=request.guidance,
                                 device=device)
        model, labels = guided.model, guided.labels
        shape = (n, cfg.unet.in_channels, cfg.unet.image_size, cfg.unet.image_size)
        if kind is SamplerKind.DDIM:
            eta = cfg.sample.eta if request.eta is None else request.eta
            res = samplers.ddim(model, shape, d, steps=steps, generator=generator, cond=labels, eta=eta,
                                spacing=cfg.sample.spacing, clip_x0=True)
        elif kind in (SamplerKind.PC, SamplerKind.LANGEVIN):
            from elbolab.score import langevin, predictor_corrector

            sampler = predictor_corrector if kind is SamplerKind.PC else langevin
            res = sampler(model, shape, d, steps=steps, generator=generator, cond=labels,
                          corrector_steps=cfg.sample.corrector_steps, snr=cfg.sample.snr,
                          spacing=cfg.sample.spacing, clip_x0=True)
        elif kind is SamplerKind.ANCESTRAL:
            res = samplers.ancestral(model, shape, d, steps=steps, generator=generator, cond=labels,
                                     spacing=cfg.sample.spacing, clip_x0=True)
        else:
            raise ValueError(f"sampler {kind.value!r} is for NCSN runs; a DDPM samples with ancestral, ddim, pc "
                             "or langevin")
        return SampleBatch(images=res.sample.clamp(-1, 1), labels=labels, nfe=res.nfe, method=f"{kind.value}-{steps}")

    def bound_fn(self, cfg: RunConfig, model: nn.Module, exact: bool) -> BoundFn | None:
        return diffusion_bound_fn(build_diffusion(cfg.diffusion), model, t_samples=None if exact else 32)
