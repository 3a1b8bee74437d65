"""VDM schedules: gamma(t) monotone for any weights, exact endpoints, gamma' in closed form vs autograd."""


import pytest
import torch
from safetensors.torch import load, save

from elbolab.vdm import FixedLinearSchedule, LearnedMonotoneSchedule, alpha_sigma
from elbolab.vdm.schedules import snr


def _randomise(s: LearnedMonotoneSchedule, seed: int, scale: float = 3.0) -> None:
    """Random raw parameters of both signs (incl. negative endpoints' gap)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in s.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * scale)


def test_alpha_sigma_variance_preserving():
    gamma = torch.linspace(-20, 20, 101, dtype=torch.float64)
    a, s = alpha_sigma(gamma)
    assert torch.allclose(a**2 + s**2, torch.ones_like(a), atol=1e-12)
    assert torch.allclose(a**2 / s**2, snr(gamma), rtol=1e-10)
    assert torch.allclose(torch.log(s**2 / a**2), gamma, atol=1e-9)


def test_fixed_linear():
    s = FixedLinearSchedule(-13.3, 5.0).double()
    t = torch.linspace(0, 1, 11, dtype=torch.float64)
    assert torch.allclose(s(t), -13.3 + 18.3 * t)
    assert torch.allclose(s.gamma_prime(t), torch.full_like(t, 18.3))
    with pytest.raises(ValueError, match="gamma_0 < gamma_1"):
        FixedLinearSchedule(1.0, 0.0)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_learned_schedule_monotone_for_any_weights_and_endpoints_exact(seed):
    s = LearnedMonotoneSchedule(-7.0, 4.0, hidden=64).double()
    if seed:
        _randomise(s, seed)
        assert (s.gap < 0).item() or (s.w1 < 0).item() or (s.w2 < 0).any().item()  # negative raw params present
    t = torch.linspace(0, 1, 2001, dtype=torch.float64)
    g = s(t)
    assert g.shape == t.shape
    assert (g[1:] > g[:-1]).all(), "gamma must be strictly increasing"
    g0, g1 = s.endpoints()
    assert g1 > g0
    assert torch.allclose(g[0], g0, atol=1e-10) and torch.allclose(g[-1], g1, atol=1e-10)
    assert (s.gamma_prime(t) > 0).all()


@pytest.mark.parametrize("seed", [0, 5])
def test_learned_gamma_prime_matches_autograd(seed):
    s = LearnedMonotoneSchedule(-5.0, 6.0, hidden=128).double()
    if seed:
        _randomise(s, seed, scale=1.5)
    t = torch.rand(50, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    closed = s.gamma_prime(t)
    auto = s.gamma_prime_autograd(t)
    assert torch.allclose(closed, auto, rtol=1e-9, atol=1e-9)
    # and a central difference
    h = 1e-6
    fd = (s(t + h) - s(t - h)) / (2 * h)
    assert torch.allclose(closed, fd, rtol=1e-5, atol=1e-6)


def test_learned_init_close_to_linear_and_shape_parameters_split():
    s = LearnedMonotoneSchedule(-13.3, 5.0)
    lin = FixedLinearSchedule(-13.3, 5.0)
    t = torch.linspace(0, 1, 101)
    assert (s(t) - lin(t)).abs().max() < 1.0  # VDM's init: the linear part dominates
    names = {n for n, _ in s.named_parameters()}
    assert names == {"gamma_0", "gap", "w1", "w2", "b2", "w3"}
    assert {id(p) for p in s.shape_parameters()} | {id(p) for p in s.endpoint_parameters()} == {
        id(p) for p in s.parameters()}


def test_shape_tensors_carry_the_shape_only():
    s = LearnedMonotoneSchedule(-5.0, 5.0, hidden=16).double()
    at = s.evaluate(torch.tensor([0.3, 0.7], dtype=torch.float64))
    for tensor in at.shape:
        grads = torch.autograd.grad(tensor.sum(), s.endpoint_parameters(), allow_unused=True)
        assert all(g is None for g in grads)


def test_state_dict_round_trip_safetensors():
    a = LearnedMonotoneSchedule(-6.0, 3.0, hidden=32)
    _randomise(a, 7, scale=0.5)
    blob = save({k: v.contiguous() for k, v in a.state_dict().items()})
    b = LearnedMonotoneSchedule(0.0, 1.0, hidden=32, generator=torch.Generator().manual_seed(99))
    b.load_state_dict(load(blob))
    t = torch.rand(20, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a(t), b(t)) and torch.equal(a.gamma_prime(t), b.gamma_prime(t))


def test_bad_t_shape():
    with pytest.raises(ValueError, match=r"shape \(B,\)"):
        LearnedMonotoneSchedule(hidden=4)(torch.zeros(2, 2))
