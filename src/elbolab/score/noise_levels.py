"""Noise levels of a noise-conditional score network and the rules that choose them.

Score-based generative modelling with multiple noise levels (Song & Ermon 2019, "Generative Modeling by
Estimating Gradients of the Data Distribution", NCSN) perturbs the data with Gaussian noise of scales
sigma_1 > sigma_2 > ... > sigma_L (a geometric sequence), q_sigma(x~) = int p(x) N(x~; x, sigma^2 I) dx, and learns
the score grad log q_sigma(x~) of every level with one network s_theta(x~, sigma).

Song & Ermon 2020 ("Improved Techniques for Training Score-Based Generative Models", NCSNv2) give rules for
the hyper-parameters; they are implemented here and used whenever a :class:`~elbolab.config.ScoreConfig`
value is 0 ("automatic"):

- Technique 1: sigma_1 as large as the maximum Euclidean distance between pairs of training points
  (:func:`max_pairwise_distance`), so that Langevin dynamics at sigma_1 can move between any two data points.
- Technique 2: a geometric sequence whose ratio gamma = sigma_{i-1} / sigma_i satisfies
  Phi(sqrt(2D) (gamma - 1) + 3 gamma) - Phi(sqrt(2D) (gamma - 1) - 3 gamma) ~ 0.5 (:func:`ratio_rule`), so that
  neighbouring perturbed distributions overlap; then L = 1 + ceil(log(sigma_1 / sigma_L) / log gamma). The
  rule rests on the concentration of ||x~ - x|| ~ sigma sqrt(D) and has no solution for D <= 4: give L
  explicitly there.
- Technique 4: with T Langevin steps per level, choose the step constant eps so that the variance reached
  after T steps from the previous level matches the level (:func:`langevin_variance_ratio`,
  :func:`choose_eps`).

Step-size convention. We follow the lecture notes (004) and NCSN: one step is
x <- x + (alpha_i / 2) s(x, sigma_i) + sqrt(alpha_i) z with alpha_i = eps sigma_i^2 / sigma_L^2. NCSNv2 writes the
step as x + alpha s + sqrt(2 alpha) z, so its eps is half of ours: their eps = 6.2e-6 for CIFAR-10
(sigma_1 = 50, L = 232, T = 5, sigma_L = 0.01) is our eps = 1.24e-5 (a test checks :func:`choose_eps`
reproduces it).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass
from statistics import NormalDist

import torch
from torch import Tensor

from elbolab.config import coerce
from elbolab.score.config import LevelSampling, ScoreConfig

logger = logging.getLogger(__name__)

__all__ = [
    "NoiseLevels",
    "choose_eps",
    "langevin_variance_ratio",
    "level_probabilities",
    "levels_from_config",
    "max_pairwise_distance",
    "num_levels_for_ratio",
    "ratio_rule",
    "resolve_score_config",
]

_PHI = NormalDist().cdf


@dataclass(frozen=True)
class NoiseLevels:
    """sigma_1 > ... > sigma_L as a float64 ``sigmas: (L,)`` tensor (index 0 holds sigma_1, the largest)."""

    sigmas: Tensor

    def __post_init__(self) -> None:
        s = torch.as_tensor(self.sigmas, dtype=torch.float64).detach().cpu().reshape(-1)
        if s.numel() < 1 or not torch.isfinite(s).all() or (s <= 0).any():
            raise ValueError(f"noise levels must be finite and > 0, got {s.tolist()}")
        if s.numel() > 1 and not (s[1:] < s[:-1]).all():
            raise ValueError(f"noise levels must decrease strictly (sigma_1 > ... > sigma_L), got {s.tolist()}")
        object.__setattr__(self, "sigmas", s)

    @classmethod
    def geometric(cls, sigma_1: float, sigma_L: float, L: int) -> NoiseLevels:
        """sigma_i = sigma_1 (sigma_L / sigma_1)^((i - 1) / (L - 1)), i = 1..L (Song & Ermon 2019)."""
        if isinstance(L, bool) or not isinstance(L, int) or L < 2:
            raise ValueError(f"L = {L!r}: need an integer number of noise levels >= 2")
        if not (math.isfinite(sigma_1) and math.isfinite(sigma_L) and sigma_1 > sigma_L > 0):
            raise ValueError(f"need sigma_1 > sigma_L > 0, got sigma_1 = {sigma_1!r}, sigma_L = {sigma_L!r}")
        i = torch.arange(L, dtype=torch.float64)
        sigmas = torch.exp(math.log(sigma_1) + i / (L - 1) * (math.log(sigma_L) - math.log(sigma_1)))
        sigmas[0], sigmas[-1] = sigma_1, sigma_L
        return cls(sigmas)

    @property
    def L(self) -> int:
        return int(self.sigmas.numel())

    @property
    def sigma_1(self) -> float:
        return float(self.sigmas[0])

    @property
    def sigma_L(self) -> float:
        return float(self.sigmas[-1])

    @property
    def gamma(self) -> float:
        """The common ratio sigma_{i-1} / sigma_i of a geometric sequence (1 for a single level)."""
        return (self.sigma_1 / self.sigma_L) ** (1.0 / (self.L - 1)) if self.L > 1 else 1.0

    def step_sizes(self, eps: float) -> Tensor:
        """alpha_i = eps sigma_i^2 / sigma_L^2 (line 3 of Algorithm 1 of the notes), float64 ``(L,)``."""
        return eps * self.sigmas**2 / self.sigma_L**2

    def __repr__(self) -> str:
        return f"NoiseLevels(L={self.L}, sigma_1={self.sigma_1:.4g}, sigma_L={self.sigma_L:.4g}, gamma={self.gamma:.4f})"


# --------------------------------------------------------------------------------------------------
# Technique 1: sigma_1
# --------------------------------------------------------------------------------------------------
def max_pairwise_distance(x: Tensor, *, max_points: int = 10000, chunk: int = 2048,
                          generator: torch.Generator | None = None) -> float:
    """max_{i, j} ||x_i - x_j|| over the data ``x: (N, ...)`` (flattened per example), in float64.

    Exact for N <= ``max_points``; otherwise over a random subset of ``max_points`` examples drawn with
    ``generator`` (a lower bound of the full maximum: it costs O(max_points^2 D)).
    """
    if x.ndim < 2 or x.shape[0] < 2:
        raise ValueError(f"need at least 2 examples (N, ...), got shape {tuple(x.shape)}")
    flat = x.reshape(x.shape[0], -1)
    if flat.shape[0] > max_points:
        gen = generator if generator is not None else torch.Generator().manual_seed(0)
        flat = flat[torch.randperm(flat.shape[0], generator=gen)[:max_points]]
    flat = flat.double()
    best = 0.0
    for i in range(0, flat.shape[0], chunk):
        best = max(best, float(torch.cdist(flat[i : i + chunk], flat).max()))
    return best


# --------------------------------------------------------------------------------------------------
# Technique 2: the ratio gamma and the number of levels
# --------------------------------------------------------------------------------------------------
def _overlap(gamma: float, D: int) -> float:
    a = math.sqrt(2.0 * D) * (gamma - 1.0)
    return _PHI(a + 3.0 * gamma) - _PHI(a - 3.0 * gamma)


def ratio_rule(D: int, target: float = 0.5) -> float:
    """gamma > 1 with Phi(sqrt(2D)(gamma - 1) + 3 gamma) - Phi(sqrt(2D)(gamma - 1) - 3 gamma) = ``target``
    (Technique 2 of Song & Ermon 2020), by bisection to machine precision.

    Raises ValueError when no such gamma exists (sqrt(2D) <= 3, i.e. D <= 4: the left side then never falls
    below Phi(3) - Phi(-3) in the limit) -- choose the number of levels explicitly for such data.
    """
    if isinstance(D, bool) or not isinstance(D, int) or D < 1:
        raise ValueError(f"D = {D!r}: the data dimension must be a positive integer")
    if not 0.0 < target < _overlap(1.0, D):
        raise ValueError(f"target = {target!r} must be in (0, {_overlap(1.0, D):.4f})")
    if math.sqrt(2.0 * D) <= 3.0:
        raise ValueError(f"the ratio rule of Song & Ermon 2020 (Technique 2) has no solution for D = {D} <= 4 "
                         "(it assumes high-dimensional data); set the number of noise levels explicitly "
                         "(score.num_levels, e.g. 10 as in Song & Ermon 2019)")
    lo, hi = 1.0, 2.0
    while _overlap(hi, D) > target:
        lo, hi = hi, 2.0 * hi
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if mid in (lo, hi):
            break
        lo, hi = (mid, hi) if _overlap(mid, D) > target else (lo, mid)
    return lo


def num_levels_for_ratio(sigma_1: float, sigma_L: float, gamma: float) -> int:
    """L = 1 + ceil(log(sigma_1 / sigma_L) / log gamma): the fewest geometric levels from sigma_1 to sigma_L
    whose ratio does not exceed ``gamma`` (so neighbouring levels overlap at least as much as the rule asks)."""
    if not sigma_1 > sigma_L > 0 or not gamma > 1.0:
        raise ValueError(f"need sigma_1 > sigma_L > 0 and gamma > 1, got {sigma_1!r}, {sigma_L!r}, {gamma!r}")
    return 1 + max(1, math.ceil(math.log(sigma_1 / sigma_L) / math.log(gamma) - 1e-9))


# --------------------------------------------------------------------------------------------------
# Technique 4: the step constant eps
# --------------------------------------------------------------------------------------------------
def langevin_variance_ratio(eps: float, T: int, gamma: float, sigma_L: float) -> float:
    """s_T^2 / sigma_i^2 of annealed Langevin on single-point data (Song & Ermon 2020, Proposition 1 / eq. 6).

    For data x = 0 the level-i distribution is N(0, sigma_i^2 I) with score -x / sigma_i^2. Starting from a
    sample of the previous level, N(0, gamma^2 sigma_i^2 I), T steps x <- x + (alpha_i / 2) s + sqrt(alpha_i) z with
    alpha_i = eps sigma_i^2 / sigma_L^2 give x ~ N(0, s_T^2 I) with, for u = eps / sigma_L^2 and r = 1 - u / 2,

        s_T^2 / sigma_i^2 = r^(2T) gamma^2 + (1 - r^(2T)) / (1 - u / 4)

    (the same for every level). Stable for 0 < u < 4; outside, |r| >= 1 and the chain diverges.
    """
    u = eps / sigma_L**2
    r2T = (1.0 - 0.5 * u) ** (2 * T)
    return r2T * gamma**2 + (1.0 - r2T) / (1.0 - 0.25 * u)


def choose_eps(T: int, gamma: float, sigma_L: float) -> float:
    """eps making :func:`langevin_variance_ratio` as close to 1 as possible (Technique 4 of Song & Ermon 2020:
    "choose T as large as allowed by a computing budget and then select an eps that makes Eq. 6 maximally
    close to 1"), in the notes' step convention (twice NCSNv2's eps). Log-grid search, then golden section."""
    if isinstance(T, bool) or not isinstance(T, int) or T < 1:
        raise ValueError(f"T = {T!r}: the number of Langevin steps per level must be an integer >= 1")
    if not gamma >= 1.0 or not sigma_L > 0:
        raise ValueError(f"need gamma >= 1 and sigma_L > 0, got gamma = {gamma!r}, sigma_L = {sigma_L!r}")

    def cost(log_u: float) -> float:
        return abs(langevin_variance_ratio(math.exp(log_u) * sigma_L**2, T, gamma, sigma_L) - 1.0)

    grid = torch.linspace(math.log(1e-12), math.log(4.0 - 1e-9), 4001, dtype=torch.float64).tolist()
    costs = [cost(g) for g in grid]
    k = min(range(len(grid)), key=costs.__getitem__)
    a, b = grid[max(k - 1, 0)], grid[min(k + 1, len(grid) - 1)]
    invphi = (math.sqrt(5.0) - 1.0) / 2.0
    c, d = b - invphi * (b - a), a + invphi * (b - a)
    for _ in range(200):
        if cost(c) < cost(d):
            b, d = d, c
            c = b - invphi * (b - a)
        else:
            a, c = c, d
            d = a + invphi * (b - a)
    return math.exp(0.5 * (a + b)) * sigma_L**2


# --------------------------------------------------------------------------------------------------
# From a ScoreConfig
# --------------------------------------------------------------------------------------------------
def resolve_score_config(cfg: ScoreConfig, data: Tensor | None = None, *, dim: int | None = None) -> ScoreConfig:
    """``cfg`` with every automatic (0) value replaced by the rule of Song & Ermon 2020 (see the module doc).

    ``data: (N, ...)`` training examples (needed when ``sigma_1 = 0``; also gives D); ``dim``: the data
    dimension D when ``data`` is not given (needed when ``num_levels = 0``).
    """
    sigma_1 = cfg.sigma_1
    if not sigma_1:
        if data is None:
            raise ValueError("score.sigma_1 = 0 (automatic) needs the training data to measure the largest "
                             "pairwise distance; pass data or set score.sigma_1")
        sigma_1 = max_pairwise_distance(data)
        logger.info("sigma_1 = %.4g: the largest pairwise distance of the training data (Song & Ermon 2020, "
                    "Technique 1)", sigma_1)
    if not sigma_1 > cfg.sigma_L:
        raise ValueError(f"sigma_1 = {sigma_1:.4g} must exceed sigma_L = {cfg.sigma_L!r}")
    L = cfg.num_levels
    if not L:
        D = dim if dim is not None else (int(data[0].numel()) if data is not None else None)
        if D is None:
            raise ValueError("score.num_levels = 0 (automatic) needs the data dimension D; pass data or dim")
        gamma = ratio_rule(D)
        L = num_levels_for_ratio(sigma_1, cfg.sigma_L, gamma)
        logger.info("L = %d noise levels: ratio rule gamma = %.4f for D = %d (Song & Ermon 2020, Technique 2)",
                    L, gamma, D)
    eps = cfg.eps
    if not eps:
        levels = NoiseLevels.geometric(sigma_1, cfg.sigma_L, L)
        eps = choose_eps(cfg.steps_per_level, levels.gamma, cfg.sigma_L)
        logger.info("eps = %.4g for T = %d steps per level (Song & Ermon 2020, Technique 4; variance ratio %.4f)",
                    eps, cfg.steps_per_level,
                    langevin_variance_ratio(eps, cfg.steps_per_level, levels.gamma, cfg.sigma_L))
    return dataclasses.replace(cfg, sigma_1=float(sigma_1), num_levels=int(L), eps=float(eps))


def level_probabilities(levels: NoiseLevels, kind: LevelSampling | str = LevelSampling.UNIFORM) -> Tensor:
    """The training distribution of the level index, float64 ``(L,)`` summing to 1 (index 0 = sigma_1).

    - ``"uniform"``: p_i = 1 / L, the i ~ U{1..L} of Song & Ermon 2019 (their eq. 6) and 2020.
    - ``"cosine"``: p_i proportional to sech(ln sigma_i). A DDPM on the cosine schedule (Nichol & Dhariwal 2021,
      offset s -> 0) has alpha_bar(t) = cos^2(pi t / 2), i.e. VE noise sigma = sqrt(1 - alpha_bar) / sqrt(alpha_bar) =
      tan(pi t / 2) (the VE <-> VP map of :mod:`elbolab.score.ve`), so t ~ U(0, 1) gives u = ln sigma the
      hyperbolic-secant density sech(u) / pi (CDF (2 / pi) atan(e^u)): three quarters of the draws in
      0.2 < sigma < 5. On geometric levels (evenly spaced in u) the weights sech(u_i) are that density restricted
      to [sigma_L, sigma_1]. With lambda(sigma) = sigma^2 unchanged, the objective's minimiser at every level is the
      same score; only the share of the training each level gets moves (towards the levels a few-step sampler
      spends its steps on, as the DDPM's training does).
    """
    if coerce(kind, LevelSampling, "level_sampling") is LevelSampling.UNIFORM:
        return torch.full((levels.L,), 1.0 / levels.L, dtype=torch.float64)
    w = 1.0 / torch.cosh(torch.log(levels.sigmas))
    return w / w.sum()


def levels_from_config(cfg: ScoreConfig) -> NoiseLevels:
    """The geometric :class:`NoiseLevels` of a resolved :class:`~elbolab.config.ScoreConfig`."""
    if not cfg.sigma_1 or not cfg.num_levels:
        raise ValueError(f"score config has automatic values (sigma_1 = {cfg.sigma_1}, num_levels = "
                         f"{cfg.num_levels}); resolve them first with resolve_score_config(cfg, data)")
    return NoiseLevels.geometric(cfg.sigma_1, cfg.sigma_L, cfg.num_levels)
