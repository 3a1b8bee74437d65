"""`elbolab toy`: inverse-CDF sampling, the toy eps-model, flow fields, and the figures it writes."""

import numpy as np
import pytest
import torch
from PIL import Image

from elbolab.apps.toy import (
    ToyRequest,
    flow_velocity,
    forward_trajectory,
    inverse_cdf_figure,
    run_toy,
    train_toy_denoiser,
)
from elbolab.data.toy import GaussianMixture, Mixture1D
from elbolab.diffusion import GaussianOracle


def test_inverse_cdf_samples_follow_the_cdf(tmp_path):
    dist = Mixture1D(weights=(0.3, 0.5, 0.2), means=(-2.0, 0.5, 2.5), stds=(0.5, 0.7, 0.3))
    u, x = inverse_cdf_figure(dist, 5000, torch.Generator().manual_seed(0), tmp_path / "icdf.png")
    assert torch.allclose(dist.cdf(x), u, atol=1e-9)  # x = P^{-1}(u)
    xs = x.sort().values
    ks = (dist.cdf(xs) - torch.arange(1, 5001, dtype=torch.float64) / 5000).abs().max()
    assert ks < 1.63 / 5000**0.5  # Kolmogorov-Smirnov at the 1 % level
    assert Image.open(tmp_path / "icdf.png").size[0] > 500


def test_flow_velocity_of_the_exact_score(make_diffusion):
    """For data N(0, s^2 I): grad log q_t(x) = -x / (abar s^2 + 1 - abar), so the probability-flow velocity is
    -beta_t / 2 * x * (1 - 1 / (abar s^2 + 1 - abar))."""
    d = make_diffusion(100)
    s2 = 4.0
    oracle = GaussianOracle(torch.zeros(2), torch.full((2,), s2), d)
    x = torch.randn(10, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    t = 30
    ab, beta = float(d.schedule.alpha_bars[t]), float(d.schedule.betas[t])
    expected = -0.5 * beta * x * (1 - 1 / (ab * s2 + 1 - ab))
    assert torch.allclose(flow_velocity(oracle, x, t, d), expected, rtol=1e-6, atol=1e-12)


def test_forward_trajectory_marginals(make_diffusion):
    d = make_diffusion(50)
    x0 = torch.full((4000, 2), 1.5)
    out = forward_trajectory(x0, d, [0, 10, 50], torch.Generator().manual_seed(0))
    assert out.shape == (3, 4000, 2) and torch.equal(out[0], x0)
    for k, t in ((1, 10), (2, 50)):  # q(x_t | x_0) = N(sqrt(abar) x0, (1 - abar) I)
        ab = float(d.schedule.alpha_bars[t])
        assert abs(float(out[k].mean()) - ab**0.5 * 1.5) < 0.05
        assert abs(float(out[k].var()) - (1 - ab)) < 0.05


def test_toy_denoiser_learns(make_diffusion):
    d = make_diffusion(100)
    mix = GaussianMixture.ring(4, radius=2.0, std=0.2)
    trained = train_toy_denoiser(lambda n, g: mix.sample(n, g), d, steps=60, batch_size=128,
                                 generator=torch.Generator().manual_seed(0))
    assert trained.losses.shape == (60,)
    assert trained.losses[-15:].mean() < 0.8 * trained.losses[:5].mean()


@pytest.mark.slow
def test_run_toy_writes_every_figure(tmp_path):
    out = run_toy(ToyRequest(out_dir=tmp_path, train_steps=30, batch_size=128, particles=300, T=100, steps=25,
                             frames=3, panels=3))
    names = sorted(p.name for p in out.paths)
    assert names == sorted(["toy_inverse_cdf.png", "toy_forward_reverse.png", "toy_flow.png", "toy_forward.gif",
                            "toy_reverse.gif", "toy.npz"])
    for p in out.paths:
        assert p.exists() and p.stat().st_size > 0
    gif = Image.open(tmp_path / "toy_reverse.gif")
    assert gif.n_frames == 3
    with np.load(tmp_path / "toy.npz") as z:
        assert z["exact"].shape == (300, 2) and z["losses"].shape == (30,)
    # the exact reverse process brings N(0, I) back to the data; the energy distance says so
    assert out.energy["exact"] < 0.25 * out.energy["noise"]


def test_toy_request_validation():
    with pytest.raises(ValueError, match="2-D"):
        ToyRequest(distribution="mixture-1d")
    with pytest.raises(ValueError, match="unknown toy distribution"):
        ToyRequest(distribution="spiral")
    with pytest.raises(ValueError, match="steps = 200 must be <= T = 100"):
        ToyRequest(T=100, steps=200)
    with pytest.raises(ValueError, match="frames"):
        ToyRequest(frames=1)
