"""NCSN's levels as the VE form of the one Gaussian process (``elbolab.score.ve``): the exact VE score of Gaussian-
mixture data, read through :class:`VEAsVP`, is the exact VP noise prediction of the same data on
``ncsn_as_diffusion``'s schedule, at grid and at fractional t; the diffusion solvers then sample the mixture
from a score model; bad level ranges are clear errors."""

from __future__ import annotations

import math

import pytest
import torch

from elbolab.data.toy import make_toy
from elbolab.diffusion import GaussianMixtureOracle, samplers
from elbolab.math import energy_distance
from elbolab.score.oracles import MixtureScoreOracle
from elbolab.score.ve import VEAsVP, ncsn_as_diffusion

SIGMA_MIN, SIGMA_MAX = 0.01, 50.0


def test_the_grid_is_geometric_in_sigma_and_alpha_bar_is_one_over_one_plus_sigma_squared():
    d, _ = ncsn_as_diffusion(MixtureScoreOracle(make_toy("gaussian-mixture")), SIGMA_MIN, SIGMA_MAX, T=100)
    sig = d.sigma_ve_at(torch.arange(1, 101, dtype=torch.float64))
    expected = SIGMA_MIN * (SIGMA_MAX / SIGMA_MIN) ** (torch.arange(100, dtype=torch.float64) / 99)
    torch.testing.assert_close(sig, expected, rtol=1e-9, atol=0.0)
    torch.testing.assert_close(d.table("alpha_bars")[1:], 1.0 / (1.0 + expected**2), rtol=1e-12, atol=0.0)
    mid = float(d.sigma_ve_at(torch.tensor([50.5], dtype=torch.float64)))  # between grid points: in between
    assert float(sig[49]) < mid < float(sig[50])


@pytest.mark.parametrize("fractional", [False, True])
def test_the_ve_score_is_the_vp_noise_prediction(fractional):
    mix = make_toy("gaussian-mixture")
    d, view = ncsn_as_diffusion(MixtureScoreOracle(mix), SIGMA_MIN, SIGMA_MAX, T=100)
    exact = GaussianMixtureOracle(mix, d)
    g = torch.Generator().manual_seed(0)
    x0 = mix.sample(64, g).double()
    t = torch.randint(1, 101, (64,), generator=g)
    if fractional:
        t = t.double() - torch.rand(64, generator=g, dtype=torch.float64) * 0.9
    abar = d.alpha_bar_at(t.double()) if fractional else d.table("alpha_bars")[t]
    x_t = abar.sqrt()[:, None] * x0 + (1 - abar).sqrt()[:, None] * torch.randn(64, 2, generator=g, dtype=torch.float64)
    torch.testing.assert_close(view(x_t, t), exact(x_t, t), rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("sampler,steps", [(samplers.dpmpp_2m, 20), (samplers.heun, 13), (samplers.ddim, 50)])
def test_diffusion_solvers_sample_the_mixture_from_its_score(sampler, steps):
    """8 Gaussians on a ring of radius 2 (std 0.2): every mode within 3 points of 1/8, samples on the modes."""
    mix = make_toy("gaussian-mixture")
    d, view = ncsn_as_diffusion(MixtureScoreOracle(mix), SIGMA_MIN, SIGMA_MAX)
    n = 2000
    x = sampler(view, (n, 2), d, steps=steps, generator=torch.Generator().manual_seed(0), clip_x0=False).sample
    data = mix.sample(n, torch.Generator().manual_seed(1))
    assert float(energy_distance(x.double(), data.double())) < 0.01
    w = torch.bincount(torch.cdist(x.double(), mix.means).argmin(1), minlength=8).double() / n
    assert (w - 1 / 8).abs().max() < 0.03
    assert float((torch.cdist(x.double(), mix.means).min(1).values < 3 * 0.2).double().mean()) > 0.95


@pytest.mark.parametrize("lo,hi", [(0.0, 1.0), (2.0, 1.0), (1.0, math.inf), (-1.0, 3.0)])
def test_bad_level_ranges_are_named(lo, hi):
    with pytest.raises(ValueError, match="sigma_min"):
        ncsn_as_diffusion(MixtureScoreOracle(make_toy("gaussian-mixture")), lo, hi)


def test_view_passes_the_guided_models_cost_through():
    class Twice(torch.nn.Module):
        nfe_per_call = 2

        def forward(self, x, sigma, y=None):
            return -x

    _, view = ncsn_as_diffusion(Twice(), SIGMA_MIN, SIGMA_MAX)
    assert view.nfe_per_call == 2 and isinstance(view, VEAsVP)
