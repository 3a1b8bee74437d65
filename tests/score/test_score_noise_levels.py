"""Noise levels and the hyper-parameter rules of Song & Ermon 2020 (closed forms, golden values, Monte Carlo)."""

import math
from statistics import NormalDist

import pytest
import torch

from elbolab.score.config import ScoreConfig
from elbolab.score.noise_levels import (
    NoiseLevels,
    choose_eps,
    langevin_variance_ratio,
    levels_from_config,
    max_pairwise_distance,
    num_levels_for_ratio,
    ratio_rule,
    resolve_score_config,
)


def test_geometric_levels():
    lv = NoiseLevels.geometric(50.0, 0.01, 232)
    s = lv.sigmas
    assert s.dtype == torch.float64 and s.shape == (232,) and lv.L == 232
    assert s[0] == 50.0 and s[-1] == 0.01
    ratios = s[:-1] / s[1:]
    torch.testing.assert_close(ratios, torch.full_like(ratios, lv.gamma), rtol=1e-12, atol=0)
    torch.testing.assert_close(lv.step_sizes(1e-5), 1e-5 * s**2 / 0.01**2)
    for bad in [dict(sigma_1=0.01, sigma_L=0.01, L=5), dict(sigma_1=1.0, sigma_L=-1.0, L=5),
                dict(sigma_1=1.0, sigma_L=0.1, L=1)]:
        with pytest.raises(ValueError):
            NoiseLevels.geometric(**bad)
    with pytest.raises(ValueError, match="decrease"):
        NoiseLevels(torch.tensor([1.0, 2.0]))


def test_ratio_rule_solves_technique_2():
    phi = NormalDist().cdf
    for D in [5, 784, 3072]:
        g = ratio_rule(D)
        a = math.sqrt(2 * D) * (g - 1)
        assert phi(a + 3 * g) - phi(a - 3 * g) == pytest.approx(0.5, abs=1e-9)
    # CIFAR-10 (D = 3072, sigma_1 = 50): Song & Ermon 2020 used L = 232; the rule gives ~220 levels
    L = num_levels_for_ratio(50.0, 0.01, ratio_rule(3072))
    assert 200 <= L <= 240
    assert NoiseLevels.geometric(50.0, 0.01, L).gamma <= ratio_rule(3072)
    with pytest.raises(ValueError, match="D = 2"):
        ratio_rule(2)


def test_choose_eps_reproduces_song_ermon_2020_cifar10():
    # CIFAR-10 setting of Song & Ermon 2020: sigma_1 = 50, L = 232, sigma_L = 0.01, T = 5 -> their eps = 6.2e-6
    # in the step x + eps s + sqrt(2 eps) z, i.e. 2 * 6.2e-6 in the notes' x + (alpha/2) s + sqrt(alpha) z.
    lv = NoiseLevels.geometric(50.0, 0.01, 232)
    eps = choose_eps(5, lv.gamma, 0.01)
    assert eps / 2 == pytest.approx(6.2e-6, rel=0.01)
    r = langevin_variance_ratio(eps, 5, lv.gamma, 0.01)
    for other in (0.5 * eps, 2 * eps):  # a minimiser of |ratio - 1|
        assert abs(r - 1) < abs(langevin_variance_ratio(other, 5, lv.gamma, 0.01) - 1)


def test_variance_ratio_matches_langevin_on_single_point_data():
    """Closed form of eq. 6 vs exact variance recursion and vs a Monte Carlo run of the Langevin steps."""
    gamma, sigma_L, T, eps, sigma = 1.3, 0.01, 7, 1.5e-4, 0.37
    alpha = eps * sigma**2 / sigma_L**2
    var = (gamma * sigma) ** 2
    for _ in range(T):  # x <- (1 - alpha / (2 sigma^2)) x + sqrt(alpha) z
        var = (1 - alpha / (2 * sigma**2)) ** 2 * var + alpha
    assert var / sigma**2 == pytest.approx(langevin_variance_ratio(eps, T, gamma, sigma_L), rel=1e-12)
    g = torch.Generator().manual_seed(0)
    x = gamma * sigma * torch.randn(200_000, generator=g, dtype=torch.float64)
    for _ in range(T):
        x = x + alpha / 2 * (-x / sigma**2) + math.sqrt(alpha) * torch.randn(x.shape, generator=g, dtype=x.dtype)
    assert float(x.var()) / sigma**2 == pytest.approx(langevin_variance_ratio(eps, T, gamma, sigma_L), rel=0.01)


def test_max_pairwise_distance_is_exact_brute_force():
    x = torch.randn(300, 3, 4, generator=torch.Generator().manual_seed(0))
    flat = x.reshape(300, -1).double()
    brute = float(((flat[:, None, :] - flat[None, :, :]) ** 2).sum(-1).sqrt().max())  # all pairs, no cdist
    assert max_pairwise_distance(x, chunk=64) == pytest.approx(brute, rel=1e-12)
    sub = max_pairwise_distance(x, max_points=50)  # subset: a lower bound
    assert 0 < sub <= brute


def test_resolve_score_config():
    data = torch.rand(400, 1, 4, 4, generator=torch.Generator().manual_seed(0)) * 2 - 1
    cfg = resolve_score_config(ScoreConfig(steps_per_level=3), data)
    assert cfg.sigma_1 == pytest.approx(max_pairwise_distance(data))
    assert cfg.num_levels == num_levels_for_ratio(cfg.sigma_1, 0.01, ratio_rule(16))
    lv = levels_from_config(cfg)
    assert cfg.eps == pytest.approx(choose_eps(3, lv.gamma, 0.01))
    fixed = ScoreConfig(num_levels=10, sigma_1=2.0, eps=1e-5)
    assert resolve_score_config(fixed) == fixed  # nothing automatic: no data needed
    with pytest.raises(ValueError, match="training data"):
        resolve_score_config(ScoreConfig())
    with pytest.raises(ValueError, match="resolve"):
        levels_from_config(ScoreConfig())


def test_level_probabilities_cosine_is_the_cosine_schedules_density_of_ln_sigma():
    """Monte Carlo oracle: t ~ U(0, 1) on the cosine schedule (s -> 0) gives sigma_VE = tan(pi t / 2); the share of
    draws nearest (in ln sigma) to each geometric level, among those inside the range, is the level's probability."""
    from elbolab.score.noise_levels import level_probabilities

    lv = NoiseLevels.geometric(20.0, 0.05, 12)
    uni = level_probabilities(lv)
    torch.testing.assert_close(uni, torch.full((12,), 1 / 12, dtype=torch.float64))
    p = level_probabilities(lv, "cosine")
    assert p.shape == (12,) and p.dtype == torch.float64 and float(p.sum()) == pytest.approx(1.0, abs=1e-12)
    t = torch.rand(2_000_000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    u = torch.log(torch.tan(0.5 * math.pi * t))
    grid = torch.log(lv.sigmas)
    h = float(grid[0] - grid[1])
    inside = (u <= grid[0] + h / 2) & (u >= grid[-1] - h / 2)
    cell = (u[inside, None] - grid[None]).abs().argmin(1)
    freq = torch.bincount(cell, minlength=12).double() / inside.sum()
    # the cell shares are the sech density integrated over the cells; p_i is its value at the centres (midpoint
    # rule, relative error <= h^2 / 24 max sech"/sech = 1.2 % here, plus 0.6 % Monte Carlo noise at the tails):
    # within 3 % at every level, and far from uniform
    torch.testing.assert_close(p, freq, rtol=0.03, atol=0)
    assert float(p.max() / p.min()) > 9.0
    from elbolab.config import ConfigError

    with pytest.raises(ConfigError, match="level_sampling = 'lognormal' is not valid: expected one of 'uniform', 'cosine'"):
        level_probabilities(lv, "lognormal")
    with pytest.raises(ConfigError, match="model.score.level_sampling = 'sech' is not valid"):
        ScoreConfig(level_sampling="sech").validate("model.score")
