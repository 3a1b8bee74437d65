"""Variational diffusion models (DDPM): schedules, the Gaussian process, four parameterisations, the ELBO,
training losses and samplers (Ho et al. 2020; Luo 2022; lecture notes 000, 001, 003).

    from elbolab.diffusion import NoiseSchedule, GaussianDiffusion, Prediction, samplers
    d = GaussianDiffusion(NoiseSchedule.linear(T=1000), prediction=Prediction.EPS)
    result = samplers.ddim(model, (16, 1, 28, 28), d, steps=50, generator=torch.Generator().manual_seed(0))
"""

from elbolab.diffusion import samplers
from elbolab.diffusion.elbo import (
    DecoderKind,
    ELBOTerms,
    PerImageTerms,
    consistency_elbo_terms,
    elbo_terms,
    timestep_terms,
)
from elbolab.diffusion.losses import (
    DiffusionObjective,
    LogNormalTimestepSampler,
    LossAwareTimestepSampler,
    UniformTimestepSampler,
    build_diffusion,
    elbo_weight,
    min_snr_weight,
    simple_loss,
)
from elbolab.diffusion.oracles import GaussianMixtureOracle, GaussianOracle
from elbolab.diffusion.parameterization import Prediction
from elbolab.diffusion.process import Gaussian, GaussianDiffusion, Posterior, ReverseStep
from elbolab.diffusion import likelihood, loop
from elbolab.diffusion.likelihood import ODELikelihood
from elbolab.diffusion.samplers import SampleResult, StepInfo, TimeSpacing
from elbolab.diffusion.schedules import NoiseSchedule, ScheduleError

__all__ = [
    "DecoderKind",
    "DiffusionObjective",
    "ELBOTerms",
    "Gaussian",
    "GaussianDiffusion",
    "GaussianMixtureOracle",
    "GaussianOracle",
    "LogNormalTimestepSampler",
    "LossAwareTimestepSampler",
    "NoiseSchedule",
    "ODELikelihood",
    "PerImageTerms",
    "Posterior",
    "Prediction",
    "ReverseStep",
    "SampleResult",
    "ScheduleError",
    "StepInfo",
    "TimeSpacing",
    "UniformTimestepSampler",
    "build_diffusion",
    "consistency_elbo_terms",
    "elbo_terms",
    "elbo_weight",
    "likelihood",
    "loop",
    "min_snr_weight",
    "samplers",
    "simple_loss",
    "timestep_terms",
]
