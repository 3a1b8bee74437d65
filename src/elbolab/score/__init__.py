"""Score-based generative modelling (lecture notes 004, "Alternate viewpoint: score-based generative modeling").

A noise-conditional score network s_theta(x, sigma) ~ grad log q_sigma(x) trained by denoising score matching
over geometric noise levels, sampled by annealed Langevin dynamics (Song & Ermon 2019, with the rules of Song &
Ermon 2020); the bridge that reads a DDPM noise predictor as a score model, s = -eps_hat / sqrt(1 - alpha_bar_t),
sampled by a Langevin corrector or predictor-corrector (Song et al. 2021).

    from elbolab.score import NoiseLevels, annealed_langevin, predictor_corrector
    levels = NoiseLevels.geometric(sigma_1=32.0, sigma_L=0.01, L=104)
    result = annealed_langevin(ncsn, (16, 1, 28, 28), levels, steps=5, generator=torch.Generator().manual_seed(0))
"""

from elbolab.score.dsm import DenoisingScoreMatching, dsm_loss
from elbolab.score.langevin import (
    LangevinDivergenceError,
    annealed_step_size,
    langevin_step,
    snr_step_size,
)
from elbolab.score.network import NCSN, EpsAsScore, noise_conditioning
from elbolab.score.noise_levels import (
    NoiseLevels,
    choose_eps,
    langevin_variance_ratio,
    level_probabilities,
    levels_from_config,
    max_pairwise_distance,
    num_levels_for_ratio,
    ratio_rule,
    resolve_score_config,
)
from elbolab.score.oracles import ClassConditionalMixtureOracle, MixtureScoreOracle
from elbolab.score.samplers import annealed_langevin, langevin, predictor_corrector

__all__ = [
    "NCSN",
    "ClassConditionalMixtureOracle",
    "DenoisingScoreMatching",
    "EpsAsScore",
    "LangevinDivergenceError",
    "MixtureScoreOracle",
    "NoiseLevels",
    "annealed_langevin",
    "annealed_step_size",
    "choose_eps",
    "dsm_loss",
    "langevin",
    "langevin_step",
    "langevin_variance_ratio",
    "level_probabilities",
    "levels_from_config",
    "max_pairwise_distance",
    "noise_conditioning",
    "num_levels_for_ratio",
    "predictor_corrector",
    "ratio_rule",
    "resolve_score_config",
    "snr_step_size",
]
