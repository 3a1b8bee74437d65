"""The VDM family: variational diffusion models in continuous time (Kingma, Salimans, Poole & Ho 2021), and
flow matching as one more schedule and parameterisation of the same process (Kingma & Gao 2023).

Its ``[model]`` section is :class:`VDMFamilyConfig` (``[model.unet]``, ``[model.vdm]``). The model is a
:class:`elbolab.vdm.VDMModel` (the U-Net and its noise schedule gamma(t) in one module, so the schedule is
trained, averaged by the EMA, checkpointed and resumed with the network); the objective is the VDM bound
(:class:`elbolab.vdm.VDMObjective`, continuous time or discrete T, with the variance-minimising update of the
learned schedule's shape) or flow matching (:class:`elbolab.vdm.flow.FlowMatchingObjective`).

Samplers: ``ancestral`` (VDM's p(z_s | z_t) on a uniform grid in t, Appendix A), ``flow-euler`` /
``flow-heun`` (the probability-flow ODE in flow coordinates), and the solvers of
:mod:`elbolab.diffusion.samplers` (``ddim``, ``euler``, ``heun``, ``dpmpp-2m``, ``dpmpp-2m-sde``) on the VDM's
schedule read on a grid of 1000 points (:func:`elbolab.vdm.sampling.as_diffusion`).

The bound (``elbolab eval --bpd``): reconstruction (VDM's softmax decoder over the 256 values at gamma_0, a
bound on the *discrete* P(x) as the DDPM's discretised Gaussian decoder is), prior KL(q(z_1|x) || N(0, I)) and
the denoising term L_T (T = ``vdm.T``; 0 = L_inf), in bits/dim, Monte Carlo over t (``exact``: more draws).

Learning rate: the schedule shares the run's ``train.lr`` (one AdamW over the whole model, as VDM trains it).
The Trainer's parameter groups update in turn, each with its own loss evaluation, while the variance-minimising
update needs the schedule and the network to step together on one backward pass, so no separate group.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from dataclasses import dataclass, field

import torch
from torch import nn

from elbolab.config import ConfigError, RunConfig, check_range
from elbolab.diffusion.process import GaussianDiffusion
from elbolab.evaluate.bpd import BPDMethod
from elbolab.families import register
from elbolab.families.base import (BoundFn, DropLabels, ModelFamily, SampleBatch, SampleRequest, SamplerSpec,
                                   options_kwargs)
from elbolab.families.ddpm import solver_specs, unet_for_data
from elbolab.nn.config import UNetConfig
from elbolab.nn.precision import with_precision
from elbolab.nn.unet import build_unet
from elbolab.objectives import Objective
from elbolab.vdm import FixedLinearSchedule, LearnedMonotoneSchedule, VDMModel, VDMObjective, elbo_terms
from elbolab.vdm.elbo import TimeSampling, VDMDecoder
from elbolab.vdm.flow import FlowMatchingObjective
from elbolab.vdm.model import VDMPrediction
from elbolab.vdm.sampling import ancestral, as_diffusion, flow_ode
from elbolab.vdm.schedules import FlowSchedule, GammaSchedule

__all__ = ["VDMFamily", "VDMFamilyConfig", "VDMLoss", "VDMScheduleKind", "VDMSection", "build_schedule"]


class VDMScheduleKind(str, enum.Enum):
    """gamma(t) = -log SNR(t) of a VDM run."""

    FIXED_LINEAR = "fixed_linear"  # gamma_0 + (gamma_1 - gamma_0) t
    LEARNED = "learned"  # VDM's monotone network with learned endpoints
    FLOW = "flow"  # the rectified-flow path, u linear in t


class VDMLoss(str, enum.Enum):
    """What a VDM run trains on."""

    ELBO = "elbo"  # the VDM bound (VDMObjective)
    FLOW = "flow"  # flow matching, the velocity loss (needs prediction = "velocity")


@dataclass
class VDMSection:
    """``[model.vdm]``: the schedule (``schedule``, endpoints ``gamma_0`` < ``gamma_1``, ``hidden`` units of the
    learned schedule), ``T`` (0 = continuous-time bound L_inf, else L_T), the ``decoder`` of the reconstruction term,
    ``variance_reduction`` (the learned schedule's shape descends on the estimator's variance), ``time_sampling``
    of t in a batch, what the network predicts (``prediction``), the training ``loss`` and the Monte Carlo draws of
    t per image of the bound at evaluation (``eval_t_samples``; ``exact`` evaluations use ``eval_t_samples_exact``).
    """

    schedule: VDMScheduleKind = VDMScheduleKind.LEARNED
    gamma_0: float = -13.3
    gamma_1: float = 5.0
    hidden: int = 1024
    T: int = 0
    decoder: VDMDecoder = VDMDecoder.SOFTMAX
    variance_reduction: bool = True
    time_sampling: TimeSampling = TimeSampling.LOW_DISCREPANCY
    prediction: VDMPrediction = VDMPrediction.EPS
    loss: VDMLoss = VDMLoss.ELBO
    eval_t_samples: int = 4
    eval_t_samples_exact: int = 64

    def validate(self, prefix: str) -> None:
        check_range(self, prefix, positive=("hidden", "eval_t_samples", "eval_t_samples_exact"),
                    non_negative=("T",))
        if not (math.isfinite(self.gamma_0) and math.isfinite(self.gamma_1) and self.gamma_0 < self.gamma_1):
            raise ConfigError(f"{prefix}.gamma_0 = {self.gamma_0!r}, {prefix}.gamma_1 = {self.gamma_1!r}: need finite "
                              f"gamma_0 < gamma_1 (gamma = -log SNR increases with t)")
        if self.loss is VDMLoss.FLOW and self.prediction is not VDMPrediction.VELOCITY:
            raise ConfigError(f"{prefix}.loss = 'flow' trains a velocity: set {prefix}.prediction = 'velocity' "
                              f"(got {self.prediction.value!r})")


@dataclass
class VDMFamilyConfig:
    """``[model]`` of a VDM run: the U-Net (its ``input_fourier`` option adds VDM's Fourier features) and the VDM."""

    unet: UNetConfig = field(default_factory=UNetConfig)
    vdm: VDMSection = field(default_factory=VDMSection)

    def validate(self, prefix: str) -> None:
        if self.unet.num_classes:
            raise ConfigError(f"{prefix}.unet.num_classes = {self.unet.num_classes}: the vdm family is "
                              f"unconditional (set 0)")


def build_schedule(section: VDMSection) -> GammaSchedule:
    """The :class:`~elbolab.vdm.schedules.GammaSchedule` of ``[model.vdm]`` (the learned one seeded with 0)."""
    if section.schedule is VDMScheduleKind.FIXED_LINEAR:
        return FixedLinearSchedule(section.gamma_0, section.gamma_1)
    if section.schedule is VDMScheduleKind.FLOW:
        return FlowSchedule(section.gamma_0, section.gamma_1)
    return LearnedMonotoneSchedule(section.gamma_0, section.gamma_1, hidden=section.hidden,
                                   generator=torch.Generator().manual_seed(0))


# ---- sampler options ([sample.<name>]) -----------------------------------------------------------
@dataclass(frozen=True)
class VDMAncestralOptions:
    """VDM's ancestral sampler: ``steps`` uniform steps in t; x_hat clipped to [-1, 1] when ``clip_x0``."""

    steps: int = 1000
    clip_x0: bool = True

    def validate(self, prefix: str) -> None:
        check_range(self, prefix, positive=("steps",))


@dataclass(frozen=True)
class FlowODEOptions:
    """The flow ODE in ``steps`` steps uniform in the flow time u."""

    steps: int = 50

    def validate(self, prefix: str) -> None:
        check_range(self, prefix, positive=("steps",))


def _ancestral(model, shape, *, generator, decoder, **opts):
    return ancestral(model, shape, generator=generator, decoder=decoder, **opts)


def _flow(solver: str):
    def fn(model, shape, *, generator, decoder, **opts):
        return flow_ode(model, shape, generator=generator, decoder=decoder, solver=solver, **opts)
    fn.__name__ = f"flow_{solver}"
    return fn


#: samplers that run on the discretised diffusion (called with the DiffusionView and the diffusion)
_ON_DIFFUSION = set(solver_specs())

SAMPLERS = {
    "ancestral": SamplerSpec(_ancestral, VDMAncestralOptions, "VDM's p(z_s|z_t), Kingma et al. 2021 Appendix A"),
    "flow-euler": SamplerSpec(_flow("euler"), FlowODEOptions, "the flow ODE dz/du = v, Euler, uniform in u"),
    "flow-heun": SamplerSpec(_flow("heun"), FlowODEOptions, "the flow ODE, Heun (2 NFE per step but the last)"),
    **solver_specs("on the VDM's schedule, T = 1000 grid"),
}


class VDMFamily(ModelFamily):
    """Builds, trains and samples VDM runs (``family = "vdm"``), flow matching included."""

    name = "vdm"
    config_cls = VDMFamilyConfig
    samplers = SAMPLERS
    default_sampler = "ancestral"
    # VDM's softmax decoder is a discrete decoder as the DDPM's is: the bound is on the 8-bit P(x) (no
    # dequantisation); BPDMethod has no value of its own for it yet
    bpd_method = BPDMethod.VDM_SOFTMAX.value
    tiny_overrides = ("unet.base_channels=4", "unet.channel_mults=[1,2]", "unet.num_res_blocks=1",
                      "unet.level_res_blocks=[]",
                      "unet.attention_resolutions=[]", "unet.head_dim=4", "unet.groups=4", "vdm.hidden=8",
                      "sample.ancestral.steps=3", "sample.flow-euler.steps=3", "sample.flow-heun.steps=2",
                      "sample.ddim.steps=3", "sample.euler.steps=3", "sample.heun.steps=2",
                      "sample.dpmpp-2m.steps=3", "sample.dpmpp-2m-sde.steps=3")

    def adapt_to_data(self, cfg: RunConfig, image_shape: tuple[int, int, int], num_classes: int) -> RunConfig:
        m = cfg.model
        return dataclasses.replace(cfg, model=dataclasses.replace(m, unet=unet_for_data(m.unet, image_shape, 0)))

    def build_model(self, cfg: RunConfig) -> VDMModel:
        v = cfg.model.vdm
        return VDMModel(build_unet(cfg.model.unet), build_schedule(v), gamma_range=(v.gamma_0, v.gamma_1),
                        prediction=v.prediction)

    def build_objective(self, cfg: RunConfig) -> Objective:
        v = cfg.model.vdm
        if v.loss is VDMLoss.FLOW:
            return DropLabels(FlowMatchingObjective(v.time_sampling))
        return DropLabels(VDMObjective(T=v.T, decoder=v.decoder, time_sampling=v.time_sampling,
                                       variance_reduction=v.variance_reduction))

    def image_shape(self, cfg: RunConfig) -> tuple[int, int, int]:
        u = cfg.model.unet
        return (u.in_channels, u.image_size, u.image_size)

    def sample(self, cfg: RunConfig, model: nn.Module, n: int, generator: torch.Generator,
               request: SampleRequest) -> SampleBatch:
        name, opts = self.sampler_options(cfg, request)
        u = cfg.model.unet
        shape = (n, u.in_channels, u.image_size, u.image_size)
        vdm = model.with_denoiser(with_precision(model.denoiser, cfg.sample.precision))
        fn = self.samplers[name].fn
        if name in _ON_DIFFUSION:
            diffusion, view = as_diffusion(vdm)
            res = fn(view, shape, diffusion, generator=generator, **options_kwargs(opts))
        else:
            res = fn(vdm, shape, generator=generator, decoder=cfg.model.vdm.decoder, **options_kwargs(opts))
        return SampleBatch(images=res.sample.clamp(-1, 1), labels=None, nfe=res.nfe, method=f"{name}-{opts.steps}")

    def probability_flow(self, cfg: RunConfig, model: nn.Module) -> tuple[nn.Module, GaussianDiffusion]:
        """The VDM read on the T = 1000 grid (:func:`elbolab.vdm.sampling.as_diffusion`): its network at the
        diffusion's noise level for every float t, so the ODE is the VDM's own between grid points too."""
        diffusion, view = as_diffusion(model)
        return view, diffusion

    def bound_fn(self, cfg: RunConfig, model: nn.Module, exact: bool) -> BoundFn | None:
        v = cfg.model.vdm
        k = v.eval_t_samples_exact if exact else v.eval_t_samples

        def bound(x: torch.Tensor, generator: torch.Generator) -> dict[str, torch.Tensor]:
            per = elbo_terms(model, x, generator=generator, T=v.T, t_samples=k, decoder=v.decoder).per_image
            return {"reconstruction": per.reconstruction, "prior": per.prior, "denoising": per.denoising}

        return bound


register(VDMFamily())
