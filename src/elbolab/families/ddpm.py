"""The DDPM family: a U-Net epsilon/x0/v/score model trained with the DDPM objective (Ho et al. 2020).

Its ``[model]`` section is :class:`DDPMConfig` (``[model.unet]``, ``[model.diffusion]``); its samplers are the
functions of :mod:`elbolab.diffusion.samplers` and the score-based ones of :mod:`elbolab.score`, all called
``fn(model, shape, diffusion, *, generator, cond, **options)``.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field

import torch
from torch import nn

from elbolab.bridges.diffusers import DiffusersUNetConfig, Network, build_diffusers_unet
from elbolab.config import ConfigError, RunConfig, check_range
from elbolab.diffusion import DiffusionObjective, GaussianDiffusion, build_diffusion, samplers
from elbolab.diffusion.config import DiffusionConfig, Spacing
from elbolab.diffusion.guidance import LabelDropout, guided_sampling
from elbolab.evaluate.bpd import BPDMethod, diffusion_bound_fn
from elbolab.families import register
from elbolab.families.base import (BoundFn, DropLabels, ModelFamily, SampleBatch, SampleRequest, SamplerSpec,
                                   check_num_classes, options_kwargs, with_image_shape)
from elbolab.nn.config import UNetConfig
from elbolab.nn.precision import with_precision
from elbolab.nn.unet import build_unet
from elbolab.objectives import Objective
from elbolab.score import langevin, predictor_corrector

logger = logging.getLogger(__name__)


@dataclass
class DDPMConfig:
    """``[model]`` of a DDPM run: the U-Net and the Gaussian diffusion it denoises.

    ``network`` picks the U-Net: ``"elbolab"`` (``[model.unet]``, the default) or ``"diffusers"`` (diffusers'
    ``UNet2DModel`` built from ``[model.diffusers_unet]``, ``pip install elbolab[diffusers]``; unconditional;
    such a run exports with ``elbolab export RUN --format diffusers``)."""

    network: Network = Network.ELBOLAB
    unet: UNetConfig = field(default_factory=UNetConfig)
    diffusers_unet: DiffusersUNetConfig = field(default_factory=DiffusersUNetConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)

    def validate(self, prefix: str) -> None:
        if self.network is Network.DIFFUSERS and self.unet.num_classes:
            raise ConfigError(f"{prefix}.network = \"diffusers\" is unconditional, but {prefix}.unet.num_classes = "
                              f"{self.unet.num_classes}: set it to 0 (or use network = \"elbolab\")")


# ---- sampler options ([sample.<name>]) -----------------------------------------------------------
@dataclass(frozen=True)
class ChainOptions:
    """A reverse chain of ``steps`` timesteps picked by ``spacing``; x0_hat clipped to [-1, 1] when ``clip_x0``."""

    steps: int = 50
    spacing: Spacing = Spacing.LEADING
    clip_x0: bool = True

    def validate(self, prefix: str) -> None:
        check_range(self, prefix, positive=("steps",))


@dataclass(frozen=True)
class DDIMOptions(ChainOptions):
    """DDIM (Song et al. 2021): ``eta`` = 0 deterministic, 1 the respaced ancestral sampler's variance."""

    eta: float = 0.0

    def validate(self, prefix: str) -> None:
        super().validate(prefix)
        if not 0.0 <= self.eta <= 1.0:
            raise ConfigError(f"{prefix}.eta = {self.eta!r} must be in [0, 1]")


@dataclass(frozen=True)
class CorrectorOptions(ChainOptions):
    """Langevin corrector steps per level and their signal-to-noise ratio r (Song et al. 2021, Algorithms 4-5)."""

    corrector_steps: int = 1
    snr: float = 0.16

    def validate(self, prefix: str) -> None:
        super().validate(prefix)
        check_range(self, prefix, positive=("corrector_steps", "snr"))


@dataclass(frozen=True)
class SolverOptions:
    """An ODE/SDE solver on a fractional time grid: ``steps`` steps spaced by ``spacing`` down to ``t_min``
    (then one step to the data), ``rho`` of the Karras grid."""

    steps: int = 20
    spacing: Spacing = Spacing.KARRAS
    t_min: float = 1.0
    rho: float = 7.0
    clip_x0: bool = True

    def validate(self, prefix: str) -> None:
        check_range(self, prefix, positive=("steps", "t_min", "rho"))


@dataclass(frozen=True)
class ChurnOptions(SolverOptions):
    """Karras et al. 2022 Algorithm 2's stochasticity: ``S_churn`` (0 = the deterministic solver) applied for t
    in [``S_tmin``, ``S_tmax``] with noise scale ``S_noise`` (``S_tmax`` 1e9 stands for infinity)."""

    S_churn: float = 0.0
    S_tmin: float = 0.0
    S_tmax: float = 1e9
    S_noise: float = 1.0

    def validate(self, prefix: str) -> None:
        super().validate(prefix)
        check_range(self, prefix, positive=("S_noise",), non_negative=("S_churn", "S_tmin", "S_tmax"))


@dataclass(frozen=True)
class DPMOptions(SolverOptions):
    """DPM-Solver++ on the log-SNR grid (Lu et al. 2022)."""

    spacing: Spacing = Spacing.LOGSNR


@dataclass(frozen=True)
class DPMSDEOptions(DPMOptions):
    """The SDE variant: ``eta`` = 1 the full SDE noise, 0 = the ODE solver."""

    eta: float = 1.0

    def validate(self, prefix: str) -> None:
        super().validate(prefix)
        if not 0.0 <= self.eta <= 1.0:
            raise ConfigError(f"{prefix}.eta = {self.eta!r} must be in [0, 1]")


def solver_specs(on: str = "") -> dict[str, SamplerSpec]:
    """The solvers of :mod:`elbolab.diffusion.samplers` that every family with a Gaussian diffusion (or a view of
    one: VDM, NCSN's VE levels) registers; ``on`` names that view in the help ("" = the run's own diffusion)."""
    where = f" ({on})" if on else ""
    return {
        "ddim": SamplerSpec(samplers.ddim, DDIMOptions, f"DDIM, Song et al. 2021{where}"),
        "euler": SamplerSpec(samplers.euler, ChurnOptions,
                             f"probability-flow ODE by Euler in VE coordinates (= DDIM, eta 0){where}"),
        "heun": SamplerSpec(samplers.heun, ChurnOptions,
                            f"Karras et al. 2022, Algorithm 2 (2 NFE per step but the last){where}"),
        "dpmpp-2m": SamplerSpec(samplers.dpmpp_2m, DPMOptions, f"DPM-Solver++(2M), data prediction, multistep{where}"),
        "dpmpp-2m-sde": SamplerSpec(samplers.dpmpp_2m_sde, DPMSDEOptions, f"DPM-Solver++(2M) SDE{where}"),
    }


SAMPLERS = {
    "ancestral": SamplerSpec(samplers.ancestral, ChainOptions, "Algorithm 2 of Ho et al. 2020 (respaced)"),
    **solver_specs(),
    "langevin": SamplerSpec(langevin, CorrectorOptions, "the eps-model as a score model, Langevin corrector only"),
    "pc": SamplerSpec(predictor_corrector, CorrectorOptions,
                      "predictor-corrector: ancestral predictor + Langevin corrector (Song et al. 2021)"),
}


def adapt_attention(unet: UNetConfig, new_size: int) -> tuple[int, ...]:
    """``unet.attention_resolutions`` (pixels at ``unet.image_size``) moved to the same U-Net levels at
    ``new_size``: a preset written for 28x28 keeps attention at its second level on 32x32 data."""
    old = unet.resolutions()
    new = dataclasses.replace(unet, image_size=new_size).resolutions()
    return tuple(new[old.index(r)] if r in old else r for r in unet.attention_resolutions)


def unet_for_data(unet: UNetConfig, image_shape: tuple[int, int, int], num_classes: int) -> UNetConfig:
    """The U-Net config with the data's shape (attention kept at its levels) and its class count checked."""
    u = with_image_shape(unet, image_shape, "U-Net")
    if u.image_size != unet.image_size:
        u = dataclasses.replace(u, attention_resolutions=adapt_attention(unet, u.image_size))
    check_num_classes(u.num_classes, num_classes, "unet.num_classes")
    return u


def conditional_objective(objective: Objective, num_classes: int, p_uncond: float) -> Objective:
    """Classifier-free guidance training for a conditional network (Ho & Salimans 2022), else unconditional."""
    return LabelDropout(objective, p_uncond) if num_classes else DropLabels(objective)


def uses_diffusers(cfg: RunConfig) -> bool:
    """Whether the run's network is diffusers' UNet2DModel (``model.network = "diffusers"``)."""
    return cfg.model.network is Network.DIFFUSERS


def guidance_weight(cfg: RunConfig, request: SampleRequest) -> float | None:
    """The guidance weight a sampling request gets: its own ``guidance``; else, when it names no ``label``, the
    run's ``sample.guidance`` (-1, the default, = None: the null class, unconditional); else None (conditional
    on the label)."""
    if request.guidance is not None:
        return request.guidance
    if request.label is not None or cfg.sample.guidance == -1.0:
        return None
    return cfg.sample.guidance


def check_guidance(cfg: RunConfig, num_classes: int) -> None:
    """ValueError when ``sample.guidance`` asks for guidance from a network without classes."""
    if cfg.sample.guidance != -1.0 and num_classes == 0:
        raise ValueError(f"sample.guidance = {cfg.sample.guidance!r} needs a class-conditional network "
                         "(unet.num_classes > 0, labelled data); this one is unconditional (leave it at -1)")


def prepare_sampling(cfg: RunConfig, unet: UNetConfig, model: nn.Module, n: int, request: SampleRequest,
                     generator: torch.Generator):
    """The model in the run's sampling precision with guidance applied, and the shape of ``n`` samples
    (``generator`` draws the labels of ``request.labels = "prior"``)."""
    device = next(model.parameters()).device
    guided = guided_sampling(with_precision(model, cfg.sample.precision), unet.num_classes, n, label=request.label,
                             w=guidance_weight(cfg, request), device=device, labels=request.labels,
                             generator=generator)
    return guided, (n, unet.in_channels, unet.image_size, unet.image_size)


class DDPMFamily(ModelFamily):
    """Builds and samples DDPM runs (``family = "ddpm"``)."""

    name = "ddpm"
    config_cls = DDPMConfig
    samplers = SAMPLERS
    default_sampler = "ddim"
    bpd_method = BPDMethod.DISCRETIZED_GAUSSIAN.value
    supports_guidance = True
    tiny_overrides = ("unet.base_channels=4", "unet.channel_mults=[1,2]", "unet.num_res_blocks=1",
                      "unet.level_res_blocks=[]",
                      "unet.attention_resolutions=[]", "unet.head_dim=4", "unet.groups=4", "diffusion.T=20",
                      "sample.ddim.steps=3", "sample.ancestral.steps=3", "sample.langevin.steps=3",
                      "sample.pc.steps=3", "sample.euler.steps=3", "sample.heun.steps=2",
                      "sample.dpmpp-2m.steps=3", "sample.dpmpp-2m-sde.steps=3")

    def adapt_to_data(self, cfg: RunConfig, image_shape: tuple[int, int, int], num_classes: int) -> RunConfig:
        m = cfg.model
        check_guidance(cfg, 0 if uses_diffusers(cfg) else m.unet.num_classes)
        if uses_diffusers(cfg):
            c, h, w = image_shape
            if h != w:
                raise ValueError(f"the UNet2DModel network needs square images, the data has H = {h}, W = {w}")
            d = dataclasses.replace(m.diffusers_unet, in_channels=c, sample_size=h)
            return dataclasses.replace(cfg, model=dataclasses.replace(m, diffusers_unet=d))
        return dataclasses.replace(cfg, model=dataclasses.replace(m, unet=unet_for_data(m.unet, image_shape,
                                                                                         num_classes)))

    def build_model(self, cfg: RunConfig) -> nn.Module:
        if uses_diffusers(cfg):
            return build_diffusers_unet(cfg.model.diffusers_unet)
        return build_unet(cfg.model.unet)

    def build_objective(self, cfg: RunConfig) -> Objective:
        m = cfg.model
        return conditional_objective(DiffusionObjective.from_config(m.diffusion), self.num_classes(cfg),
                                     m.diffusion.p_uncond)

    def num_classes(self, cfg: RunConfig) -> int:
        return 0 if uses_diffusers(cfg) else cfg.model.unet.num_classes

    def image_shape(self, cfg: RunConfig) -> tuple[int, int, int]:
        if uses_diffusers(cfg):
            d = cfg.model.diffusers_unet
            return (d.in_channels, d.sample_size, d.sample_size)
        u = cfg.model.unet
        return (u.in_channels, u.image_size, u.image_size)

    def diffusion(self, cfg: RunConfig) -> GaussianDiffusion:
        return build_diffusion(cfg.model.diffusion)

    def sample(self, cfg: RunConfig, model: nn.Module, n: int, generator: torch.Generator,
               request: SampleRequest) -> SampleBatch:
        name, opts = self.sampler_options(cfg, request)
        if uses_diffusers(cfg):
            device = next(model.parameters()).device
            guided = guided_sampling(with_precision(model, cfg.sample.precision), 0, n, label=request.label,
                                     w=guidance_weight(cfg, request), device=device)
            shape = (n, *self.image_shape(cfg))
        else:
            guided, shape = prepare_sampling(cfg, cfg.model.unet, model, n, request, generator)
        res = self.samplers[name].fn(guided.model, shape, self.diffusion(cfg), generator=generator,
                                     cond=guided.labels, **options_kwargs(opts))
        return SampleBatch(images=res.sample.clamp(-1, 1), labels=guided.labels, nfe=res.nfe,
                           method=f"{name}-{opts.steps}")

    def bound_fn(self, cfg: RunConfig, model: nn.Module, exact: bool) -> BoundFn | None:
        return diffusion_bound_fn(self.diffusion(cfg), model, t_samples=None if exact else 32)


register(DDPMFamily())
