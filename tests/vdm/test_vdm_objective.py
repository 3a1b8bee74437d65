"""VDMObjective: the variance-minimising schedule update (issue 16, test 3), gradient routing, the Trainer
interface on a tiny U-Net, and the model's state-dict round trip."""

import math

import pytest
import torch
from safetensors.torch import load, save
from torch import nn

from elbolab.nn.config import UNetConfig
from elbolab.nn.unet import UNet
from elbolab.objectives import LossOutput, Objective
from elbolab.vdm import FixedLinearSchedule, LearnedMonotoneSchedule, VDMModel, VDMObjective, loss_terms
from elbolab.vdm.oracles import GaussianDataDenoiser, gaussian_l_inf

D, S2 = 4, 0.3
MU = torch.tensor([0.5, -0.2, 0.1, 0.0], dtype=torch.float64)
REF = (-6.0, 6.0)


def gaussian_data(n: int, g: torch.Generator) -> torch.Tensor:
    return MU + math.sqrt(S2) * torch.randn(n, D, generator=g, dtype=torch.float64)


def estimator_stats(model: VDMModel, seed: int, n: int = 40_000) -> tuple[float, float, float]:
    """(mean, variance, standard error) of the one-sample L_inf estimator, common random numbers by seed."""
    g = torch.Generator().manual_seed(seed)
    x = gaussian_data(n, g)
    with torch.no_grad():
        ell = loss_terms(model, x, None, g, decoder="gaussian", time_sampling="uniform").denoising
    return float(ell.mean()), float(ell.var()), float(ell.std() / math.sqrt(n))


def test_variance_minimising_update_lowers_variance_keeps_expectation():
    sched = LearnedMonotoneSchedule(*REF, hidden=64).double()
    model = VDMModel(GaussianDataDenoiser(MU, S2, REF), sched, gamma_range=REF).double()
    for p in sched.endpoint_parameters():
        p.requires_grad_(False)  # endpoints frozen: only the shape moves
    before = estimator_stats(model, seed=100)
    ends_before = [float(v) for v in sched.endpoints()]
    objective = VDMObjective(decoder="gaussian")
    opt = torch.optim.Adam(sched.shape_parameters(), lr=0.05)
    g = torch.Generator().manual_seed(0)
    for _ in range(150):
        out = objective.loss(model, gaussian_data(256, g), None, g)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    after = estimator_stats(model, seed=100)
    l_inf = gaussian_l_inf(D, S2, *REF)
    assert after[1] < 0.6 * before[1], (before, after)  # the estimator's variance fell
    assert abs(before[0] - l_inf) < 4 * before[2] and abs(after[0] - l_inf) < 4 * after[2]
    assert abs(after[0] - before[0]) < 4 * math.hypot(before[2], after[2])  # the bound did not move
    assert [float(v) for v in sched.endpoints()] == ends_before
    t = torch.linspace(0, 1, 1001, dtype=torch.float64)
    with torch.no_grad():
        assert (sched(t).diff() > 0).all()  # still monotone after training


class TinyMLP(nn.Module):
    """eps-model on (B, D) data with a float time input."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(D + 1, 16), nn.SiLU(), nn.Linear(16, D))

    def forward(self, z, c, y=None):
        return self.net(torch.cat([z, c[:, None] / 1000], dim=1))


def test_gradients_shape_on_squared_loss_rest_on_bound():
    """One backward: the shape gets grad of mean(ell^2), the endpoints and the network grad of the bound."""
    sched = LearnedMonotoneSchedule(*REF, hidden=32).double()
    model = VDMModel(TinyMLP(), sched, gamma_range=REF).double()
    x = gaussian_data(64, torch.Generator().manual_seed(1))
    out = VDMObjective(decoder="gaussian").loss(model, x, None, torch.Generator().manual_seed(2))
    params = list(model.parameters())
    out.loss.backward()
    got = {id(p): p.grad.clone() for p in params}

    terms = loss_terms(model, x, None, torch.Generator().manual_seed(2), decoder="gaussian")  # same draws
    to_bpd = 1 / (D * math.log(2))
    bound = (terms.total * to_bpd).mean()
    squared = ((terms.denoising * to_bpd) ** 2).mean()
    shape = sched.shape_parameters()
    rest = [p for p in params if all(p is not q for q in shape)]
    g_shape = torch.autograd.grad(squared, shape, retain_graph=True)
    g_rest = torch.autograd.grad(bound, rest)
    assert float(bound.detach()) == pytest.approx(float(out.loss.detach()), rel=1e-12)
    for p, g in zip(shape, g_shape):
        assert torch.allclose(got[id(p)], g, rtol=1e-9, atol=1e-12)
    for p, g in zip(rest, g_rest):
        assert torch.allclose(got[id(p)], g, rtol=1e-9, atol=1e-12)
    assert any(g.abs().sum() > 0 for g in g_shape)

    # without variance reduction every parameter follows the bound
    model.zero_grad()
    VDMObjective(decoder="gaussian", variance_reduction=False).loss(
        model, x, None, torch.Generator().manual_seed(2)).loss.backward()
    terms = loss_terms(model, x, None, torch.Generator().manual_seed(2), decoder="gaussian")
    g_all = torch.autograd.grad((terms.total * to_bpd).mean(), params)
    for p, g in zip(params, g_all):
        assert torch.allclose(p.grad, g, rtol=1e-9, atol=1e-12)


def tiny_unet_model(learned: bool) -> VDMModel:
    cfg = UNetConfig(in_channels=1, image_size=8, base_channels=8, channel_mults=(1, 2), num_res_blocks=1,
                     attention_resolutions=(), mid_attention=False, groups=4, head_dim=8)
    torch.manual_seed(0)
    sched = LearnedMonotoneSchedule(hidden=16) if learned else FixedLinearSchedule()
    return VDMModel(UNet(cfg), sched)


@pytest.mark.parametrize("T", [0, 1000])
def test_objective_on_8bit_images(T):
    model = tiny_unet_model(learned=True)
    objective = VDMObjective(T=T)
    assert isinstance(objective, Objective) and objective.state_dict() == {}
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (4, 1, 8, 8), generator=g).float() / 127.5 - 1.0
    out = objective.loss(model, x, None, torch.Generator().manual_seed(3))
    assert isinstance(out, LossOutput) and out.loss.ndim == 0 and torch.isfinite(out.loss)
    m = out.metrics
    assert m["loss"] == pytest.approx(m["reconstruction_bpd"] + m["prior_bpd"] + m["denoising_bpd"], rel=1e-5)
    assert m["gamma_0"] == pytest.approx(-13.3, abs=1e-5) and m["gamma_1"] == pytest.approx(5.0, abs=1e-5)
    assert 0 < m["reconstruction_bpd"] < 0.1 and m["prior_bpd"] > 0
    out.loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    replay = objective.loss(model, x, None, torch.Generator().manual_seed(3))
    assert torch.equal(replay.loss.detach(), out.loss.detach())  # the generator fixes every draw


def test_objective_checks():
    with pytest.raises(ValueError, match="vdm time_sampling"):
        VDMObjective(time_sampling="sobol")
    with pytest.raises(ValueError, match="T = 1.5"):
        VDMObjective(T=1.5)
    with pytest.raises(TypeError, match="VDMModel"):
        VDMObjective().loss(nn.Linear(2, 2), torch.zeros(2, 2), None, torch.Generator())
    with pytest.raises(ValueError, match="keeps no state"):
        VDMObjective().load_state_dict({"x": torch.zeros(1)})


def test_model_state_dict_round_trip():
    a = tiny_unet_model(learned=True)
    with torch.no_grad():
        a.schedule.gamma_0.add_(0.25)
        a.schedule.w2.mul_(-2.0)
    sd = a.state_dict()
    assert {"schedule.gamma_0", "schedule.gap", "schedule.w1", "schedule.w2", "gamma_range"} <= set(sd)
    blob = save({k: v.contiguous() for k, v in sd.items()})
    b = tiny_unet_model(learned=True)
    b.load_state_dict(load(blob))
    z = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([0.2, 0.9])
    with torch.no_grad():
        assert torch.equal(a(z, t), b(z, t))
    x = z.clamp(-1, 1)
    la = VDMObjective().loss(a, x, None, torch.Generator().manual_seed(1)).loss
    lb = VDMObjective().loss(b, x, None, torch.Generator().manual_seed(1)).loss
    assert torch.equal(la, lb)


def test_network_time_is_gamma_normalised():
    model = VDMModel(TinyMLP(), FixedLinearSchedule(-10.0, 6.0))
    gamma = torch.tensor([-10.0, -2.0, 6.0])
    assert torch.allclose(model.network_time(gamma), torch.tensor([0.0, 500.0, 1000.0]))
    assert torch.allclose(model.gamma_from_network_time(model.network_time(gamma)), gamma)
