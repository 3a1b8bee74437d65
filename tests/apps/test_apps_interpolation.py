"""Interpolation through q(x_t | x_0) codes (DDPM Figs. 8-9), DDIM-inversion interpolation, and the VAE path."""

import types

import pytest
import torch

from elbolab.apps.chain import reverse_from, reverse_from_shared_noise
from elbolab.apps.interpolation import (
    InterpolateRequest,
    coarse_to_fine,
    coarse_to_fine_times,
    ddim_interpolate,
    diffusion_interpolate,
    interpolate_run,
    interpolation_weights,
    mix,
)
from elbolab.config import RunConfig
from elbolab.families import get_family
from elbolab.families.vae import VAEModelConfig
from elbolab.vae.config import VAEConfig
from elbolab.data.toy import GaussianMixture
from elbolab.diffusion import GaussianMixtureOracle

MEANS = torch.tensor([[1.0, 1.0, -1.0, -1.0], [-1.0, 1.0, 1.0, -1.0], [0.0, -1.0, 0.0, 1.0]])


@pytest.fixture
def mixture(make_diffusion):
    """Exact eps-model of a 3-component mixture in R^4, used as (B, 1, 2, 2) "images"; T = 100; 2M examples."""
    d = make_diffusion(100)
    oracle = GaussianMixtureOracle(GaussianMixture.isotropic([1.0, 1.0, 1.0], MEANS, 0.3), d)
    xs = oracle.sample_data(24, torch.Generator().manual_seed(0)).view(24, 1, 2, 2)
    return oracle, d, xs


def test_t0_row_is_the_pixel_blend_and_weights(mixture):
    oracle, d, xs = mixture
    res = coarse_to_fine(oracle, xs[:1], xs[1:2], d, [0, 3], 5, generator=torch.Generator().manual_seed(0))
    w = interpolation_weights(5)
    assert res.images.shape == (2, 5, 1, 2, 2) and res.times.tolist() == [0, 3]
    blend = (1 - w.float().view(-1, 1, 1, 1)) * xs[0] + w.float().view(-1, 1, 1, 1) * xs[1]
    assert torch.allclose(res.images[0], blend, atol=1e-6)
    assert res.endpoint_error[0].tolist() == [0.0, 0.0]


@pytest.mark.slow
def test_endpoints_reconstructed_at_small_t_unrelated_at_T_and_distance_grows(mixture):
    """Over 12 pairs: the decoded end points are near-copies at t = 1 (< 5 % of the distance between
    independent samples), unrelated samples at t = T (as far from their own input as from the other one, at
    the distance of independent samples), and the distance grows with t."""
    oracle, d, xs = mixture
    times = [1, 10, 20, 35, 100]
    g = torch.Generator().manual_seed(1)
    errors, cross = [], []
    for i in range(12):
        a, b = xs[2 * i:2 * i + 1], xs[2 * i + 1:2 * i + 2]
        res = coarse_to_fine(oracle, a, b, d, times, 3, generator=g)
        errors.append(res.endpoint_error.mean(1))
        cross.append((res.images[-1, 0] - b[0]).pow(2).mean().sqrt())  # decoded "a" at t = T vs the other input
    err = torch.stack(errors).mean(0)  # (len(times),)
    independent = (xs[0::2] - xs[1::2]).pow(2).flatten(1).mean(1).sqrt().mean()
    assert err[0] < 0.05 * independent
    assert bool((err[1:] > err[:-1]).all()), err
    assert 0.75 * independent < err[-1] < 1.25 * independent
    assert 0.75 < float(err[-1] / torch.stack(cross).mean()) < 1.33


def test_the_reverse_noise_is_shared_across_the_batch(mixture):
    """Interpolants are decoded with the same reverse noise: equal x_t give equal x_0 (Ho et al.: "we fixed
    the noise"), while the ordinary sampler gives different draws of p(x_0 | x_t)."""
    oracle, d, xs = mixture
    x_t = d.q_sample(xs[:1], 50, torch.randn(1, 1, 2, 2, generator=torch.Generator().manual_seed(0)))
    batch = x_t.expand(4, 1, 2, 2).contiguous()
    shared = reverse_from_shared_noise(oracle, batch, 50, d, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(shared, shared[:1].expand_as(shared), atol=1e-6)
    free = reverse_from(oracle, batch, 50, d, generator=torch.Generator().manual_seed(0)).sample
    assert (free - free[:1]).abs().max() > 0.05


def test_ddim_interpolation_reconstructs_endpoints_at_T(mixture):
    """Deterministic encoder: even from t = T the end points come back, the closer the more ODE steps."""
    oracle, d, xs = mixture
    coarse = ddim_interpolate(oracle, xs[:1], xs[1:2], d, 5, steps=20)
    fine = ddim_interpolate(oracle, xs[:1], xs[1:2], d, 5, steps=100)
    assert fine.images.shape == (1, 5, 1, 2, 2) and fine.times.tolist() == [100]
    assert fine.endpoint_error.max() < 0.05
    assert fine.endpoint_error.mean() < coarse.endpoint_error.mean()


@pytest.mark.parametrize("kind", ["linear", "slerp"])
def test_mix_endpoints(kind):
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(3, 4, generator=g), torch.randn(3, 4, generator=g)
    path = mix(a, b, interpolation_weights(7), kind)
    assert path.shape == (7, 3, 4)
    assert torch.allclose(path[0], a, atol=1e-6) and torch.allclose(path[-1], b, atol=1e-6)
    if kind == "slerp":  # constant norm between two codes of equal norm
        c = b / b.norm() * a.norm()
        norms = mix(a, c, interpolation_weights(7), kind).flatten(1).norm(dim=1)
        assert torch.allclose(norms, a.norm().expand(7), rtol=1e-5)


def test_interpolation_errors(mixture):
    oracle, d, xs = mixture
    g = torch.Generator()
    with pytest.raises(ValueError, match="'linear', 'slerp'"):
        mix(xs[0], xs[1], interpolation_weights(3), "cubic")
    with pytest.raises(ValueError, match="num"):
        interpolation_weights(1)
    with pytest.raises(ValueError, match="t = 101"):
        diffusion_interpolate(oracle, xs[:1], xs[1:2], d, 101, interpolation_weights(3), generator=g)
    with pytest.raises(ValueError, match="two single examples"):
        diffusion_interpolate(oracle, xs[:2], xs[2:4], d, 5, interpolation_weights(3), generator=g)
    with pytest.raises(ValueError, match="both"):
        InterpolateRequest(a="a.png")
    assert coarse_to_fine_times(1000) == [0, 100, 250, 500, 750, 1000]


@pytest.mark.slow
def test_vae_runs_use_latent_interpolation_and_editing(tmp_path):
    """A VAE run (untrained network, embedded MNIST test images) goes through elbolab.vae.editing."""
    from elbolab.vae import build_vae

    cfg = RunConfig(family="vae", model=VAEModelConfig(vae=VAEConfig(latent_dims=(4,), hidden_sizes=(32,))))
    torch.manual_seed(0)
    model = build_vae(cfg.model.vae, (1, 28, 28), cfg.family).eval()
    run = types.SimpleNamespace(config=cfg, model=model, device=torch.device("cpu"), folder=tmp_path,
                                family=get_family("vae"))
    out = interpolate_run(run, InterpolateRequest(out_dir=tmp_path / "out", index_a=0, index_b=1, num=5))
    names = sorted(p.name for p in out.paths)
    assert names == ["vae_edit.png", "vae_interpolate.npz", "vae_interpolate.png"]
    assert all(p.stat().st_size > 0 for p in out.paths) and out.family == "vae"
    import numpy as np

    with np.load(tmp_path / "out" / "vae_interpolate.npz") as z:
        assert z["interpolation"].shape == (2, 5, 1, 28, 28) and z["edited"].shape == (5, 1, 28, 28)
