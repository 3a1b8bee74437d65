"""The reverse chain started at any t (truncated diffusion) and DDIM inversion."""

import pytest
import torch

from elbolab.apps.chain import ddim_decode, ddim_invert, reverse_from, truncate
from elbolab.diffusion import samplers


def test_truncate_keeps_the_first_t_steps(make_diffusion):
    d = make_diffusion(50)
    short = truncate(d, 20)
    assert short.T == 20
    assert torch.allclose(short.schedule.alpha_bars, d.schedule.alpha_bars[:21], rtol=1e-12, atol=0)
    assert torch.allclose(short.table("reverse_variance"), d.table("reverse_variance")[:21], rtol=1e-10, atol=0)
    assert truncate(d, 50) is d
    with pytest.raises(ValueError, match="t = 0 must be an integer in 1..50"):
        truncate(d, 0)


def test_reverse_from_T_is_the_library_sampler(gaussian_oracle):
    oracle, d, _, _ = gaussian_oracle
    x_T = torch.randn(5, 1, 2, 4, generator=torch.Generator().manual_seed(0))
    ours = reverse_from(oracle, x_T, d.T, d, generator=torch.Generator().manual_seed(1))
    ref = samplers.ancestral(oracle, (5, 1, 2, 4), d, generator=torch.Generator().manual_seed(1), x_T=x_T)
    assert torch.equal(ours.sample, ref.sample) and ours.nfe == d.T
    same = reverse_from(oracle, x_T, 0, d, generator=torch.Generator(), return_trajectory=True)
    assert same.sample is x_T and same.nfe == 0 and same.xs.shape == (1, 5, 1, 2, 4)
    with pytest.raises(ValueError, match="t = 101"):
        reverse_from(oracle, x_T, 101, d, generator=torch.Generator())


def test_reverse_from_t_visits_t_down_to_1(gaussian_oracle):
    oracle, d, _, _ = gaussian_oracle
    x = torch.zeros(2, 1, 2, 4)
    res = reverse_from(oracle, x, 30, d, generator=torch.Generator().manual_seed(0), steps=7)
    assert res.timesteps[0] == 30 and res.timesteps[-1] == 1 and res.timesteps.numel() == 7 and res.nfe == 7
    one = reverse_from(oracle, x, 30, d, generator=torch.Generator().manual_seed(0), steps=1)
    assert one.timesteps.tolist() == [30, 1]  # never treats x_30 as x_1


def test_ddim_inversion_one_step_golden_and_round_trip(gaussian_oracle):
    oracle, d, _, _ = gaussian_oracle
    x0 = oracle.sample_data(4, torch.Generator().manual_seed(0)).view(4, 1, 2, 4)
    # two steps 0 -> 1 -> t (the fewest: the visited timesteps include 1 and t), each
    # x_next = sqrt(abar_next) x0_hat + sqrt(1 - abar_next) eps_theta(x, t_next)
    t = 40
    ab1, abt = float(d.schedule.alpha_bars[1]), float(d.schedule.alpha_bars[t])
    eps1 = oracle(x0, torch.full((4,), 1))
    x1 = ab1**0.5 * x0 + (1 - ab1) ** 0.5 * eps1
    eps2 = oracle(x1, torch.full((4,), t))
    x0_hat = (x1 - (1 - ab1) ** 0.5 * eps2) / ab1**0.5
    expected = abt**0.5 * x0_hat + (1 - abt) ** 0.5 * eps2
    assert torch.allclose(ddim_invert(oracle, x0, t, d, steps=1), expected, atol=1e-5)
    assert torch.allclose(ddim_invert(oracle, x0, t, d, steps=2), expected, atol=1e-5)
    errors = []
    for steps in (10, 100):
        x_T = ddim_invert(oracle, x0, d.T, d, steps=steps)
        errors.append(float((ddim_decode(oracle, x_T, d.T, d, steps=steps) - x0).abs().max()))
    assert errors[1] < 0.05 and errors[1] < errors[0]


def test_run_diffusion_needs_a_diffusion_run(tmp_path):
    import types

    from elbolab.apps.chain import run_diffusion
    from elbolab.config import RunConfig
    from elbolab.families import get_family

    vae = types.SimpleNamespace(config=RunConfig(family="vae"), folder=tmp_path, family=get_family("vae"))
    with pytest.raises(ValueError, match="'vae' run: this application needs a diffusion run"):
        run_diffusion(vae)
    ddpm = types.SimpleNamespace(config=RunConfig(family="ddpm"), folder=tmp_path, family=get_family("ddpm"))
    assert run_diffusion(ddpm).T == RunConfig().model.diffusion.T
