"""Configuration of a noise-conditional score network (NCSN, ``elbolab.score``)."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from elbolab.config import ConfigError, check_range, coerce


class LevelSampling(str, enum.Enum):
    """How the training level i is drawn (:func:`elbolab.score.noise_levels.level_probabilities`)."""

    UNIFORM = "uniform"  # i ~ U{1..L} (Song & Ermon 2019, 2020)
    COSINE = "cosine"  # p_i proportional to sech(ln sigma_i): a cosine-schedule DDPM's share of each level


@dataclass
class ScoreConfig:
    """Noise levels and annealed Langevin dynamics of an NCSN (Song & Ermon 2019, 2020).

    Geometric noise levels sigma_1 > ... > sigma_L; a 0 means "chosen by the rules of Song & Ermon 2020,
    'Improved Techniques for Training Score-Based Generative Models'" when training starts, and the resolved
    values are written to the run's config.toml: ``sigma_1`` = the largest pairwise distance of the training
    data (Technique 1), ``num_levels`` from the ratio rule of Technique 2, ``eps`` from Technique 4.
    """

    num_levels: int = 0  # L; 0 = Technique 2
    sigma_1: float = 0.0  # largest noise level; 0 = max pairwise distance of the data (Technique 1)
    sigma_L: float = 0.01  # smallest noise level
    eps: float = 0.0  # Langevin step alpha_i = eps sigma_i^2 / sigma_L^2; 0 = Technique 4
    steps_per_level: int = 5  # T of the notes' Algorithm 1
    final_denoise: bool = True  # one Tweedie step x + sigma_L^2 s(x, sigma_L) after the last level
    p_uncond: float = 0.1  # conditional network: label dropout into the null class (Ho & Salimans 2022)
    # the network sees x~ / sqrt(1 + sigma^2) (EDM's c_in, = the DDPM's x_t); False = the original NCSN input x~
    # (the default, so runs trained before this option load unchanged; the presets turn it on)
    scale_input: bool = False
    # the training distribution of the level i: "uniform" (i ~ U{1..L}, Song & Ermon 2019, 2020) or "cosine"
    # (p_i proportional to sech(ln sigma_i): the density of ln sigma that the cosine schedule's uniform t gives a
    # DDPM, Nichol & Dhariwal 2021); default uniform so runs trained before this option load unchanged
    level_sampling: LevelSampling = LevelSampling.UNIFORM

    def validate(self, prefix: str) -> None:
        check_range(self, prefix, positive=("sigma_L", "steps_per_level"),
                    non_negative=("num_levels", "sigma_1", "eps"))
        if self.num_levels == 1:
            raise ConfigError(f"{prefix}.num_levels = 1: need at least 2 noise levels (or 0 = automatic)")
        if self.sigma_1 and self.sigma_1 <= self.sigma_L:
            raise ConfigError(f"{prefix}.sigma_1 = {self.sigma_1!r} must exceed {prefix}.sigma_L = "
                              f"{self.sigma_L!r} (or be 0 = automatic)")
        self.level_sampling = coerce(self.level_sampling, LevelSampling, f"{prefix}.level_sampling")
        if not 0.0 <= self.p_uncond < 1.0:
            raise ConfigError(f"{prefix}.p_uncond = {self.p_uncond!r} must be in [0, 1)")
