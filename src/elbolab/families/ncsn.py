"""The NCSN family: a noise-conditional score network on the project's U-Net, trained by denoising score
matching over geometric noise levels and sampled by annealed Langevin dynamics (Song & Ermon 2019, 2020).

Its ``[model]`` section is :class:`NCSNConfig` (``[model.unet]``, ``[model.score]``).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field

import torch
from torch import nn

from elbolab.config import RunConfig, check_range, coerce
from elbolab.families import register
from elbolab.families.base import ModelFamily, SampleBatch, SampleRequest, SamplerSpec, options_kwargs
from elbolab.families.ddpm import check_guidance, conditional_objective, prepare_sampling, solver_specs, unet_for_data
from elbolab.nn.config import UNetConfig
from elbolab.nn.unet import build_unet
from elbolab.objectives import Objective
from elbolab.score import (NCSN, DenoisingScoreMatching, annealed_langevin, choose_eps, level_probabilities,
                           levels_from_config, resolve_score_config)
from elbolab.score.config import LevelSampling, ScoreConfig
from elbolab.score.ve import ncsn_as_diffusion

logger = logging.getLogger(__name__)

#: the diffusion solvers, run on the VE form of the run's level range (elbolab.score.ve)
_SOLVERS = solver_specs("on the VE levels read as a VP diffusion")

#: examples used to measure the largest pairwise distance (Technique 1) when score.sigma_1 = 0
SIGMA_1_SUBSET = 10000


@dataclass
class NCSNConfig:
    """``[model]`` of an NCSN run: the U-Net and the noise levels / Langevin settings."""

    unet: UNetConfig = field(default_factory=UNetConfig)
    score: ScoreConfig = field(default_factory=ScoreConfig)


@dataclass(frozen=True)
class AnnealedLangevinOptions:
    """``steps``: Langevin steps per noise level (T of Algorithm 1; 0 = ``score.steps_per_level``); ``eps``: the
    step-size constant (0 = the run's ``score.eps`` at its own T, else Technique 4 of Song & Ermon 2020 for T)."""

    steps: int = 0
    eps: float = 0.0

    def validate(self, prefix: str) -> None:
        check_range(self, prefix, non_negative=("steps", "eps"))


class NCSNFamily(ModelFamily):
    """Builds and samples NCSN runs (``family = "ncsn"``). NCSNs have no likelihood bound."""

    name = "ncsn"
    config_cls = NCSNConfig
    samplers = {
        "annealed_langevin": SamplerSpec(annealed_langevin, AnnealedLangevinOptions, "Algorithm 1 of Song & Ermon 2019"),
        **_SOLVERS,
    }
    default_sampler = "annealed_langevin"
    supports_guidance = True
    tiny_overrides = ("unet.base_channels=4", "unet.channel_mults=[1,2]", "unet.num_res_blocks=1",
                      "unet.level_res_blocks=[]",
                      "unet.attention_resolutions=[]", "unet.head_dim=4", "unet.groups=4", "score.num_levels=4",
                      "score.sigma_1=20.0", "score.sigma_L=0.1", "score.steps_per_level=1",
                      "sample.ddim.steps=3", "sample.euler.steps=3", "sample.heun.steps=2",
                      "sample.dpmpp-2m.steps=3", "sample.dpmpp-2m-sde.steps=3")

    def adapt_to_data(self, cfg: RunConfig, image_shape: tuple[int, int, int], num_classes: int) -> RunConfig:
        """The U-Net input as for a DDPM, and the automatic (0) values of ``[model.score]`` resolved from the data."""
        check_guidance(cfg, cfg.model.unet.num_classes)
        m = dataclasses.replace(cfg.model, unet=unet_for_data(cfg.model.unet, image_shape, num_classes))
        s = m.score
        if not (s.sigma_1 and s.num_levels and s.eps):
            data = None
            if not s.sigma_1:
                from elbolab.data import load_dataset

                ds = load_dataset(cfg.data)
                idx = torch.randperm(len(ds), generator=torch.Generator().manual_seed(0))[:SIGMA_1_SUBSET]
                data, _ = ds.batch(idx)
            s = resolve_score_config(s, data, dim=int(image_shape[0] * image_shape[1] * image_shape[2]))
            logger.info("noise levels: sigma_1 = %.4g, sigma_L = %.4g, L = %d; Langevin eps = %.4g, T = %d",
                        s.sigma_1, s.sigma_L, s.num_levels, s.eps, s.steps_per_level)
        return dataclasses.replace(cfg, model=dataclasses.replace(m, score=s))

    def num_classes(self, cfg: RunConfig) -> int:
        return cfg.model.unet.num_classes

    def image_shape(self, cfg: RunConfig) -> tuple[int, int, int]:
        u = cfg.model.unet
        return (u.in_channels, u.image_size, u.image_size)

    def build_model(self, cfg: RunConfig) -> nn.Module:
        return NCSN(build_unet(cfg.model.unet), scale_input=cfg.model.score.scale_input)

    def build_objective(self, cfg: RunConfig) -> Objective:
        m = cfg.model
        levels = levels_from_config(m.score)
        kind = coerce(m.score.level_sampling, LevelSampling, "model.score.level_sampling")
        probs = None if kind is LevelSampling.UNIFORM else level_probabilities(levels, kind)
        dsm = DenoisingScoreMatching(levels, probs)  # uniform: i ~ U{1..L} by randint, as before the option
        return conditional_objective(dsm, m.unet.num_classes, m.score.p_uncond)

    def sample(self, cfg: RunConfig, model: nn.Module, n: int, generator: torch.Generator,
               request: SampleRequest) -> SampleBatch:
        """Annealed Langevin with the run's levels; the option ``steps`` overrides T (steps per level), and eps is
        then re-chosen for it by Technique 4 unless given."""
        name, opts = self.sampler_options(cfg, request)
        s = cfg.model.score
        levels = levels_from_config(s)
        if name in _SOLVERS:
            guided, shape = prepare_sampling(cfg, cfg.model.unet, model, n, request, generator)
            diffusion, view = ncsn_as_diffusion(guided.model, levels.sigma_L, levels.sigma_1)
            res = self.samplers[name].fn(view, shape, diffusion, generator=generator, cond=guided.labels,
                                         **options_kwargs(opts))
            return SampleBatch(images=res.sample.clamp(-1, 1), labels=guided.labels, nfe=res.nfe,
                               method=f"{name}-{opts.steps}")
        T = opts.steps or s.steps_per_level
        eps = opts.eps or (s.eps if T == s.steps_per_level else choose_eps(T, levels.gamma, levels.sigma_L))
        guided, shape = prepare_sampling(cfg, cfg.model.unet, model, n, request, generator)
        res = self.samplers[name].fn(guided.model, shape, levels, steps=T, eps=eps, generator=generator,
                                     cond=guided.labels, final_denoise=s.final_denoise)
        return SampleBatch(images=res.sample.clamp(-1, 1), labels=guided.labels, nfe=res.nfe,
                           method=f"{name}-{T}")

    def upgrade_legacy_model(self, sections, model_fields):
        model = super().upgrade_legacy_model(sections, model_fields)
        if "p_uncond" in sections.get("diffusion", {}):  # format 1 kept the label dropout in [diffusion]
            model.setdefault("score", {})["p_uncond"] = sections["diffusion"]["p_uncond"]
        return model

    def upgrade_legacy_sample(self, sample):
        # format 1 ignored [sample] steps for NCSN runs (T came from [score]): keep it so
        return {k: v for k, v in sample.items() if k in ("n", "precision")}


register(NCSNFamily())
