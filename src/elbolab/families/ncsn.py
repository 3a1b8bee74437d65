"""The NCSN family: a noise-conditional score network on the project's U-Net, trained by denoising score
matching over geometric noise levels and sampled by annealed Langevin dynamics (Song & Ermon 2019, 2020)."""

from __future__ import annotations

import dataclasses
import logging

import torch
from torch import nn

from elbolab.config import RunConfig, SamplerKind
from elbolab.diffusion.guidance import LabelDropout, guided_sampling
from elbolab.families.base import BoundFn, DropLabels, SampleBatch, SampleRequest
from elbolab.families.ddpm import DDPMFamily
from elbolab.nn.precision import with_precision
from elbolab.nn.unet import build_unet
from elbolab.score import (NCSN, DenoisingScoreMatching, annealed_langevin, choose_eps, levels_from_config,
                           resolve_score_config)

logger = logging.getLogger(__name__)

#: examples used to measure the largest pairwise distance (Technique 1) when score.sigma_1 = 0
SIGMA_1_SUBSET = 10000


class NCSNFamily:
    """Builds and samples NCSN runs (``family = "ncsn"``). NCSNs have no likelihood bound (``bpd_method = None``)."""

    bpd_method = None

    def adapt_to_data(self, cfg: RunConfig, image_shape: tuple[int, int, int], num_classes: int) -> RunConfig:
        """The U-Net input as for a DDPM, and the automatic (0) values of ``[score]`` resolved from the data."""
        cfg = DDPMFamily().adapt_to_data(cfg, image_shape, num_classes)
        s = cfg.score
        if s.sigma_1 and s.num_levels and s.eps:
            return cfg
        data = None
        if not s.sigma_1:
            from elbolab.data import load_dataset

            ds = load_dataset(cfg.data)
            idx = torch.randperm(len(ds), generator=torch.Generator().manual_seed(0))[:SIGMA_1_SUBSET]
            data, _ = ds.batch(idx)
        resolved = resolve_score_config(s, data, dim=int(image_shape[0] * image_shape[1] * image_shape[2]))
        logger.info("noise levels: sigma_1 = %.4g, sigma_L = %.4g, L = %d; Langevin eps = %.4g, T = %d",
                    resolved.sigma_1, resolved.sigma_L, resolved.num_levels, resolved.eps, resolved.steps_per_level)
        return dataclasses.replace(cfg, score=resolved)

    def build_model(self, cfg: RunConfig) -> nn.Module:
        return NCSN(build_unet(cfg.unet))

    def build_objective(self, cfg: RunConfig) -> LabelDropout | DropLabels:
        objective = DenoisingScoreMatching(levels_from_config(cfg.score))
        if not cfg.unet.num_classes:
            return DropLabels(objective)
        return LabelDropout(objective, cfg.diffusion.p_uncond)

    def sample(self, cfg: RunConfig, model: nn.Module, n: int, generator: torch.Generator,
               request: SampleRequest) -> SampleBatch:
        """Annealed Langevin with the run's levels; ``request.steps`` overrides T (steps per level), and then eps
        is re-chosen for it by Technique 4 unless T is the config's."""
        kind = SamplerKind(request.sampler or cfg.sample.sampler)
        if kind is not SamplerKind.ANNEALED_LANGEVIN:
            raise ValueError(f"sampler {kind.value!r}: an NCSN run samples with "
                             f"{SamplerKind.ANNEALED_LANGEVIN.value!r} (annealed Langevin dynamics)")
        levels = levels_from_config(cfg.score)
        T = request.steps or cfg.score.steps_per_level
        eps = cfg.score.eps if T == cfg.score.steps_per_level else choose_eps(T, levels.gamma, levels.sigma_L)
        device = next(model.parameters()).device
        model = with_precision(model, cfg.sample.precision)
        guided = guided_sampling(model, cfg.unet.num_classes, n, label=request.label, w=request.guidance,
                                 device=device)
        shape = (n, cfg.unet.in_channels, cfg.unet.image_size, cfg.unet.image_size)
        res = annealed_langevin(guided.model, shape, levels, steps=T, eps=eps, generator=generator,
                                cond=guided.labels, final_denoise=cfg.score.final_denoise)
        return SampleBatch(images=res.sample.clamp(-1, 1), labels=guided.labels, nfe=res.nfe)

    def bound_fn(self, cfg: RunConfig, model: nn.Module, exact: bool) -> BoundFn | None:
        return None
