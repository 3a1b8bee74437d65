"""Samplers: one contract for ancestral and DDIM, Algorithm 2 verbatim, and exact oracles."""

import math

import pytest
import torch

from elbolab.diffusion.config import Spacing, VarianceKind
from elbolab.data.toy import make_toy
from elbolab.diffusion import GaussianMixtureOracle, GaussianOracle, SampleResult, samplers
from elbolab.math import energy_distance

SAMPLERS = [samplers.ancestral, samplers.ddim]
MU = torch.tensor([0.3, -0.2])
COV = torch.tensor([[0.5, 0.2], [0.2, 0.3]])


class Recorder(torch.nn.Module):
    """A deterministic stand-in network that records how it is called."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def forward(self, x, t, y=None):
        self.calls.append((t.clone(), None if y is None else y.clone(), x.dtype))
        tt = t.to(x.dtype).reshape(-1, *([1] * (x.ndim - 1)))
        return 0.5 * torch.tanh(x) + 0.01 * tt


# ------------------------------------------------------------------------------------------------
# contract, over every sampler
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("sampler", SAMPLERS)
def test_sampler_contract(sampler, make_diffusion):
    d = make_diffusion(20)
    model = Recorder()
    shape = (3, 1, 4, 4)
    res = sampler(model, shape, d, steps=5, generator=torch.Generator().manual_seed(0),
                  cond=torch.tensor([0, 1, 2]), return_trajectory=True)
    assert isinstance(res, SampleResult)
    assert res.sample.shape == shape and res.sample.dtype == torch.float32
    assert res.nfe == 5 == len(model.calls)
    assert res.timesteps.tolist() == [17, 13, 9, 5, 1]  # leading spacing, visited in descending order
    assert res.xs.shape == (6, *shape) and res.x0s.shape == (5, *shape)
    torch.testing.assert_close(res.xs[-1], res.sample)
    for (t, y, dtype), expected in zip(model.calls, res.timesteps.tolist()):
        assert t.dtype == torch.long and t.shape == (3,) and (t == expected).all()
        assert y.tolist() == [0, 1, 2] and dtype == torch.float32
    # same seed, same samples; another seed, other samples
    again = sampler(Recorder(), shape, d, steps=5, generator=torch.Generator().manual_seed(0),
                    cond=torch.tensor([0, 1, 2]))
    assert torch.equal(again.sample, res.sample) and again.xs is None and again.x0s is None
    torch.testing.assert_close(res.xs[0], torch.randn(shape, generator=torch.Generator().manual_seed(0)))
    other = sampler(Recorder(), shape, d, steps=5, generator=torch.Generator().manual_seed(1))
    assert not torch.equal(other.sample, res.sample)


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_sampler_callback_and_defaults(sampler, make_diffusion):
    d = make_diffusion(8)
    seen = []
    res = sampler(Recorder(), (2, 3), d, generator=torch.Generator().manual_seed(0), callback=seen.append,
                  return_trajectory=True)
    assert res.nfe == 8 and res.timesteps.tolist() == list(range(8, 0, -1))  # steps defaults to T
    assert [(s.index, s.t, s.t_prev) for s in seen] == [(i, 8 - i, 7 - i) for i in range(8)]
    for s in seen:
        torch.testing.assert_close(s.x, res.xs[s.index + 1])
        torch.testing.assert_close(s.x0, res.x0s[s.index])

    class Guided(Recorder):
        nfe_per_call = 2  # e.g. classifier-free guidance: two network passes per step

    assert sampler(Guided(), (2, 3), d, steps=4, generator=torch.Generator()).nfe == 8


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_sampler_input_validation(sampler, make_diffusion):
    d = make_diffusion(10)
    g = torch.Generator()
    with pytest.raises(ValueError, match=r"steps = 0 must be an integer in 1\.\.T = 10"):
        sampler(Recorder(), (2, 3), d, steps=0, generator=g)
    with pytest.raises(ValueError, match="steps = 11"):
        sampler(Recorder(), (2, 3), d, steps=11, generator=g)
    with pytest.raises(ValueError, match="spacing = 'even' is not valid"):
        sampler(Recorder(), (2, 3), d, steps=5, spacing="even", generator=g)
    with pytest.raises(ValueError, match="shape must be"):
        sampler(Recorder(), (2,), d, generator=g)
    with pytest.raises(ValueError, match="x_T has shape"):
        sampler(Recorder(), (2, 3), d, generator=g, x_T=torch.zeros(2, 4))
    with pytest.raises(ValueError, match="cond must have shape"):
        sampler(Recorder(), (2, 3), d, generator=g, cond=torch.zeros(3, dtype=torch.long))
    with pytest.raises(TypeError, match="generator"):
        sampler(Recorder(), (2, 3), d, generator=0)


def test_ddim_rejects_eta_outside_unit_interval(make_diffusion):
    with pytest.raises(ValueError, match=r"eta = 1.5 must be in \[0, 1\]"):
        samplers.ddim(Recorder(), (2, 3), make_diffusion(10), eta=1.5, generator=torch.Generator())


def test_sampling_timesteps_spacings():
    st = samplers.sampling_timesteps
    assert st(1000, 10, Spacing.LEADING).tolist() == [1 + 100 * i for i in range(10)]
    assert st(1000, 10, Spacing.TRAILING).tolist() == [100 * i for i in range(1, 11)]
    lin = st(1000, 10, Spacing.LINSPACE).tolist()
    assert lin[0] == 1 and lin[-1] == 1000 and len(set(lin)) == 10
    for spacing in (Spacing.LEADING, Spacing.LINSPACE, Spacing.TRAILING):  # the integer spacings
        assert st(7, 7, spacing).tolist() == list(range(1, 8))
        ts = st(50, 13, spacing)
        assert ts.dtype == torch.long and len(set(ts.tolist())) == 13 and (ts.diff() > 0).all()
        assert 1 <= ts.min() and ts.max() <= 50
    with pytest.raises(ValueError, match="fractional; use time_grid"):
        st(50, 13, Spacing.KARRAS)


# ------------------------------------------------------------------------------------------------
# the algorithms themselves
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("variance", list(VarianceKind))
def test_ancestral_is_algorithm_2(variance, make_diffusion):
    """Algorithm 2 of Ho et al. 2020 written out line by line, with the same generator."""
    d = make_diffusion(25, variance=variance)
    model = Recorder()
    s = d.schedule
    sigma2 = s.betas if variance is VarianceKind.BETA else s.posterior_variances
    g = torch.Generator().manual_seed(4)
    x = torch.randn(6, 2, generator=g)  # 1: x_T ~ N(0, I)
    for t in range(d.T, 0, -1):  # 2: for t = T, ..., 1
        eps = model(x, torch.full((6,), t))
        z = torch.randn(6, 2, generator=g) if t > 1 else torch.zeros(6, 2)  # 3
        x = (x - (1 - s.alphas[t]) / (1 - s.alpha_bars[t]).sqrt() * eps) / s.alphas[t].sqrt() \
            + sigma2[t].sqrt() * z  # 4
        x = x.float()
    res = samplers.ancestral(model, (6, 2), d, generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(res.sample, x, rtol=1e-5, atol=1e-5)


def test_ddim_with_eta_one_is_respaced_ancestral_with_beta_tilde(make_diffusion):
    d = make_diffusion(40, variance=VarianceKind.BETA_TILDE)
    a = samplers.ddim(Recorder(), (5, 2), d, steps=8, eta=1.0, generator=torch.Generator().manual_seed(2))
    b = samplers.ancestral(Recorder(), (5, 2), d, steps=8, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(a.sample, b.sample, rtol=1e-5, atol=1e-5)
    assert samplers.respace(d, torch.arange(1, 41)) is d


# ------------------------------------------------------------------------------------------------
# exact oracles reproduce the data distribution
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("variance", list(VarianceKind))
def test_gaussian_oracle_ancestral_reproduces_the_data(variance, make_diffusion, reverse_law):
    d = make_diffusion(100, variance=variance)
    oracle = GaussianOracle(MU, COV, d)
    # exact law of Algorithm 2 with the optimal predictor (the reverse chain is linear-Gaussian)
    m, C = reverse_law(oracle, d, decoder_noise=False)
    assert (m - MU).abs().max() < 1e-4
    assert (C - COV).abs().max() < 0.05
    # Monte Carlo: the sampler draws from that law
    n = 3000
    x = samplers.ancestral(oracle, (n, 2), d, generator=torch.Generator().manual_seed(0)).sample.double()
    se = (torch.diag(C) / n).sqrt()
    assert ((x.mean(0) - m).abs() < 4 * se).all()
    assert (torch.cov(x.T) - C).abs().max() < 4 * math.sqrt(2.0 / n) * C.abs().max()


@pytest.mark.parametrize("spacing", list(Spacing))
def test_gaussian_oracle_ddim_reproduces_the_data(spacing, make_diffusion):
    """Deterministic DDIM maps x_T ~ N(0, I) affinely to x_0 = A x_T + b, so its law N(b, A A^T) is exact.
    Its discretisation error shrinks as the number of steps grows."""
    d = make_diffusion(100)
    oracle = GaussianOracle(MU, COV, d)

    def law(steps):
        basis = torch.cat([torch.zeros(1, 2), torch.eye(2)]).double()
        out = samplers.ddim(oracle, (3, 2), d, steps=steps, spacing=spacing, x_T=basis,
                            generator=torch.Generator()).sample
        b = out[0]
        A = (out[1:] - b).T
        return b, A @ A.T

    errors = []
    for steps in (25, 100):
        b, C = law(steps)
        assert (b - MU).abs().max() < 0.01
        errors.append(float((C - COV).abs().max()))
    assert errors[1] < 0.03 and errors[1] < errors[0] / 2
    x = samplers.ddim(oracle, (3000, 2), d, steps=100, spacing=spacing,
                      generator=torch.Generator().manual_seed(1)).sample.double()
    assert (x.mean(0) - MU).abs().max() < 0.05
    assert (torch.cov(x.T) - COV).abs().max() < 0.06


def _mode_weights(x, means):
    nearest = torch.cdist(x.double(), means).argmin(1)
    return torch.bincount(nearest, minlength=means.shape[0]).double() / x.shape[0]


@pytest.mark.slow
@pytest.mark.parametrize("sampler,kw", [(samplers.ancestral, {}), (samplers.ddim, {"steps": 50}),
                                        (samplers.ddim, {"steps": 50, "spacing": "trailing", "eta": 0.5})])
def test_mixture_oracle_samples_the_mixture(sampler, kw, make_diffusion, gaussian_baseline):
    mix = make_toy("gaussian-mixture")  # 8 Gaussians on a ring of radius 2, std 0.2
    d = make_diffusion(100)
    n = 2000
    x = sampler(GaussianMixtureOracle(mix, d), (n, 2), d, generator=torch.Generator().manual_seed(0), **kw).sample
    data = mix.sample(n, torch.Generator().manual_seed(1))
    ed = float(energy_distance(x, data))
    # the moment-matched Gaussian, a sampler that ignores the modes, is far worse
    assert ed < 0.01 < 0.05 < gaussian_baseline(data)
    w = _mode_weights(x, mix.means)
    assert (w - 1 / 8).abs().max() < 0.03
    dist = torch.cdist(x.double(), mix.means).min(1).values
    assert float((dist < 3 * 0.2).double().mean()) > 0.95  # within 3 std of a mode
