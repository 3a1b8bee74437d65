"""Score-based samplers with exact oracles: annealed Langevin (NCSN), Langevin corrector and predictor-corrector
(DDPM score bridge) sample a 2-D Gaussian mixture; divergence is reported; one sampler contract."""

import pytest
import torch
from torch import nn

from elbolab.data.toy import GaussianMixture
from elbolab.diffusion import GaussianDiffusion, GaussianMixtureOracle, NoiseSchedule, SampleResult
from elbolab.math import energy_distance
from elbolab.score import (EpsAsScore, LangevinDivergenceError, MixtureScoreOracle, NoiseLevels, annealed_langevin,
                           choose_eps, langevin, max_pairwise_distance, predictor_corrector)
from elbolab.score.langevin import langevin_step, snr_step_size

# Three well-separated modes with unequal weights: weights are what Langevin without annealing gets wrong.
WEIGHTS = [0.6, 0.3, 0.1]
MIX = GaussianMixture.isotropic(WEIGHTS, [[-2.0, 0.0], [2.0, 0.0], [0.0, 2.5]], 0.3)
N = 1000


@pytest.fixture(scope="module")
def data():
    return MIX.sample(N, torch.Generator().manual_seed(1))


def _mode_weights(x):
    return torch.bincount(torch.cdist(x.double(), MIX.means).argmin(1), minlength=3).double() / x.shape[0]


def _assert_samples_mixture(x, data, ed_tol=0.01, w_tol=0.04):
    assert torch.isfinite(x).all()
    assert float(energy_distance(x, data)) < ed_tol
    assert (_mode_weights(x) - torch.tensor(WEIGHTS, dtype=torch.float64)).abs().max() < w_tol


def _levels(data, L=10):
    return NoiseLevels.geometric(max_pairwise_distance(data), 0.01, L)  # Technique 1 for sigma_1


def _ddpm(T=100):
    k = min(1000.0 / T, 40.0)  # Ho et al.'s linear schedule stretched to T steps (beta_T <= 0.8)
    return GaussianDiffusion(NoiseSchedule.linear(T, 1e-4 * k, 0.02 * k))


# ------------------------------------------------------------------------------------------------
# exact oracles: every sampler samples the mixture
# ------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_annealed_langevin_with_the_true_score_samples_the_mixture(data):
    # sigma_1 by Technique 1, eps by Technique 4 (the default). Technique 4 fixes the variance reached per level,
    # not the time to cross between modes, so the unequal weights need a fine ladder (gamma ~ 1.1).
    levels = _levels(data, L=60)
    res = annealed_langevin(MixtureScoreOracle(MIX), (N, 2), levels, steps=10,
                            generator=torch.Generator().manual_seed(0))
    assert res.nfe == 60 * 10 + 1
    _assert_samples_mixture(res.sample, data, w_tol=0.045)  # 3 standard errors of a weight at N = 1000
    # the same number of Langevin steps at the smallest level only (no annealing) finds the modes but not
    # their weights: chains stay in the basin they start in (the motivation of annealing, Song & Ermon 2019)
    single = NoiseLevels(torch.tensor([0.01], dtype=torch.float64))
    x0 = levels.sigma_1 * torch.randn(N, 2, generator=torch.Generator().manual_seed(0))
    flat = annealed_langevin(MixtureScoreOracle(MIX), (N, 2), single, steps=200, eps=choose_eps(10, levels.gamma, 0.01),
                             x_init=x0, generator=torch.Generator().manual_seed(0)).sample
    assert (_mode_weights(flat) - torch.tensor(WEIGHTS, dtype=torch.float64)).abs().max() > 0.1


@pytest.mark.slow
def test_predictor_corrector_with_the_exact_eps_oracle_samples_the_mixture(data):
    d = _ddpm()
    res = predictor_corrector(GaussianMixtureOracle(MIX, d), (N, 2), d, generator=torch.Generator().manual_seed(0))
    assert res.nfe == 100 + 99
    _assert_samples_mixture(res.sample, data)


@pytest.mark.slow
def test_langevin_corrector_only_with_the_ddpm_score_samples_the_mixture(data):
    d = _ddpm()
    res = langevin(GaussianMixtureOracle(MIX, d), (N, 2), d, corrector_steps=3, snr=0.3,
                   generator=torch.Generator().manual_seed(0))
    assert res.nfe == 100 * 3 + 1
    _assert_samples_mixture(res.sample, data, ed_tol=0.02, w_tol=0.05)


def test_eps_as_score_is_the_exact_noisy_score():
    d = _ddpm(50)
    bridge = EpsAsScore(GaussianMixtureOracle(MIX, d), d)
    x = torch.randn(64, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    t = torch.randint(1, 51, (64,), generator=torch.Generator().manual_seed(1))
    abar = d.schedule.alpha_bars[t]
    torch.testing.assert_close(bridge(x, t), MIX.noisy_score(x, abar))
    assert bridge.sigma(50) == pytest.approx(float((1 - d.schedule.alpha_bars[50]).sqrt()))


# ------------------------------------------------------------------------------------------------
# divergence is detected and reported
# ------------------------------------------------------------------------------------------------
def test_annealed_langevin_diverging_step_size_raises_a_clear_error(data):
    levels = _levels(data, L=5)
    bad_eps = 5 * 0.01**2  # alpha_i = 5 sigma_i^2 > 4 sigma_i^2: |1 - alpha / (2 sigma^2)| = 1.5 > 1 near a mode
    with pytest.raises(LangevinDivergenceError, match=r"noise level \d+ of 5.*eps.*4 sigma_L\^2") as info:
        annealed_langevin(MixtureScoreOracle(MIX), (200, 2), levels, steps=20, eps=bad_eps,
                          generator=torch.Generator().manual_seed(0))
    err = info.value
    assert isinstance(err, ValueError) and 1 <= err.level <= 5
    assert err.step_size == pytest.approx(bad_eps * err.sigma**2 / 0.01**2)


def test_nan_scores_are_reported_not_returned(data):
    class NaNAfterLevel2(nn.Module):
        def forward(self, x, sigma, y=None):
            out = MixtureScoreOracle(MIX)(x, sigma)
            return out * float("nan") if float(sigma[0]) < 1.0 else out

    with pytest.raises(LangevinDivergenceError, match="NaN or inf"):
        annealed_langevin(NaNAfterLevel2(), (50, 2), _levels(data, L=5), steps=2,
                          generator=torch.Generator().manual_seed(0))


def test_predictor_corrector_too_large_snr_raises():
    d = _ddpm(20)
    with pytest.raises(LangevinDivergenceError, match="smaller snr"):
        predictor_corrector(GaussianMixtureOracle(MIX, d), (200, 2), d, snr=50.0, corrector_steps=3,
                            generator=torch.Generator().manual_seed(0))


# ------------------------------------------------------------------------------------------------
# contract and step helpers
# ------------------------------------------------------------------------------------------------
class Recorder(nn.Module):
    def __init__(self):
        super().__init__()
        self.calls = []

    def forward(self, x, t, y=None):
        self.calls.append((t.clone(), None if y is None else y.clone()))
        return -0.5 * x


@pytest.mark.parametrize("name", ["annealed_langevin", "langevin", "predictor_corrector"])
def test_sampler_contract(name):
    levels = NoiseLevels.geometric(3.0, 0.1, 4)
    d = _ddpm(20)
    run = {
        "annealed_langevin": lambda m, **kw: annealed_langevin(m, (3, 1, 2, 2), levels, steps=2, **kw),
        "langevin": lambda m, **kw: langevin(m, (3, 1, 2, 2), d, steps=4, corrector_steps=2, **kw),
        "predictor_corrector": lambda m, **kw: predictor_corrector(m, (3, 1, 2, 2), d, steps=4, corrector_steps=2,
                                                                   **kw),
    }[name]
    expected_nfe = {"annealed_langevin": 4 * 2 + 1, "langevin": 4 * 2 + 1, "predictor_corrector": 4 + 2 * 3}[name]
    model, seen = Recorder(), []
    y = torch.tensor([0, 1, 2])
    res = run(model, generator=torch.Generator().manual_seed(0), cond=y, callback=seen.append,
              return_trajectory=True)
    assert isinstance(res, SampleResult) and res.sample.shape == (3, 1, 2, 2)
    assert res.nfe == expected_nfe == len(model.calls)
    assert all(c[1].tolist() == [0, 1, 2] for c in model.calls)
    assert len(seen) == res.timesteps.numel() == res.xs.shape[0] - 1 == res.x0s.shape[0] == 4
    torch.testing.assert_close(res.xs[-1], res.sample)
    assert seen[-1].t_prev == 0
    again = run(Recorder(), generator=torch.Generator().manual_seed(0), cond=y)
    assert torch.equal(again.sample, res.sample)
    other = run(Recorder(), generator=torch.Generator().manual_seed(1), cond=y)
    assert not torch.equal(other.sample, res.sample)

    class Guided(Recorder):
        nfe_per_call = 2

    assert run(Guided(), generator=torch.Generator(), cond=y).nfe == 2 * expected_nfe
    with pytest.raises(TypeError, match="Generator"):
        run(Recorder(), generator=None)


def test_annealed_langevin_follows_algorithm_1_of_the_notes():
    """Verbatim: alpha_i = eps sigma_i^2 / sigma_L^2; x <- x + alpha_i / 2 s(x, sigma_i) + sqrt(alpha_i) z."""
    levels, eps, T = NoiseLevels.geometric(2.0, 0.5, 3), 0.01, 2
    model = Recorder()
    x_init = torch.randn(4, 3, generator=torch.Generator().manual_seed(5))
    res = annealed_langevin(model, (4, 3), levels, steps=T, eps=eps, x_init=x_init, final_denoise=False,
                            generator=torch.Generator().manual_seed(0))
    g, x = torch.Generator().manual_seed(0), x_init.clone()
    for sigma in levels.sigmas.tolist():
        alpha = eps * sigma**2 / 0.5**2
        for _ in range(T):
            x = x + alpha / 2 * (-0.5 * x) + alpha**0.5 * torch.randn(x.shape, generator=g)
    torch.testing.assert_close(res.sample, x)
    assert [float(c[0][0]) for c in model.calls] == pytest.approx([s for s in levels.sigmas.tolist() for _ in range(T)])
    denoised = annealed_langevin(Recorder(), (4, 3), levels, steps=T, eps=eps, x_init=x_init,
                                 generator=torch.Generator().manual_seed(0)).sample
    torch.testing.assert_close(denoised, x + 0.5**2 * (-0.5 * x))  # Tweedie: x + sigma_L^2 s(x, sigma_L)


def test_step_helpers_and_validation():
    x, s, z = torch.randn(5, 4), torch.randn(5, 4), torch.randn(5, 4)
    torch.testing.assert_close(langevin_step(x, s, 0.3, z), x + 0.15 * s + 0.3**0.5 * z)
    torch.testing.assert_close(langevin_step(x, s, 0.3, None), x + 0.15 * s)
    alpha = snr_step_size(s, z, 0.16, 0.9)
    assert alpha == pytest.approx(4 * 0.9 * (0.16 * float(z.norm(dim=1).mean()) / float(s.norm(dim=1).mean())) ** 2)
    assert snr_step_size(torch.zeros(5, 4), z, 0.16) == 0.0
    levels = NoiseLevels.geometric(3.0, 0.1, 4)
    g = torch.Generator()
    for bad in [dict(steps=0), dict(eps=-1.0), dict(eps=float("nan"))]:
        with pytest.raises(ValueError):
            annealed_langevin(Recorder(), (2, 3), levels, generator=g, **bad)
    with pytest.raises(ValueError, match="corrector_steps"):
        predictor_corrector(Recorder(), (2, 3), _ddpm(10), corrector_steps=0, generator=g)
    with pytest.raises(ValueError, match="snr"):
        langevin(Recorder(), (2, 3), _ddpm(10), snr=0.0, generator=g)
