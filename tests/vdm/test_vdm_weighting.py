"""Each diffusion objective is the weighted ELBO of Kingma & Gao 2023 under its w(lambda) (issue 16, test 5):
on the same x, eps and t, 1/2 w(lambda) (-d lambda/dt) ||eps - eps_hat||^2 reproduces the objective's own
loss, computed by elbolab's DDPM losses where they exist and by direct formulas for EDM and flow matching."""

import math

import pytest
import torch
from torch import nn

from elbolab.diffusion import GaussianDiffusion, NoiseSchedule
from elbolab.diffusion.elbo import timestep_terms
from elbolab.diffusion.losses import elbo_weight, min_snr_weight, simple_loss
from elbolab.vdm.elbo import discrete_diffusion_loss
from elbolab.vdm.weighting import (
    Weighting,
    edm_density,
    flow_density,
    flow_log_snr,
    flow_neg_dlambda_dt,
    time_density,
    weight,
    weighted_loss,
)

B, SHAPE = 16, (1, 4, 4)
DIM = math.prod(SHAPE)


class Fixed(nn.Module):
    """A 'network' that returns a fixed output whatever its input (any output is a valid test point)."""

    def __init__(self, out: torch.Tensor) -> None:
        super().__init__()
        self.out = out

    def forward(self, x, t, y=None):
        return self.out


def draws(seed: int):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand((B,) + SHAPE, generator=g, dtype=torch.float64) * 2 - 1
    eps = torch.randn(x.shape, generator=g, dtype=torch.float64)
    out = torch.randn(x.shape, generator=g, dtype=torch.float64)
    t = torch.randint(2, 1001, (B,), generator=g)
    return x, eps, out, t


def ddpm_lambda(d: GaussianDiffusion, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """lambda_t = log SNR at integer t and -d lambda/dt on the time axis t/T (backward difference)."""
    abar = d.table("alpha_bars")
    lam = torch.log(abar / (1 - abar))
    return lam[t], d.T * (lam[t - 1] - lam[t])


@pytest.mark.parametrize("kind", ["eps", "x0", "v"])
def test_ddpm_simple_losses_are_weighted_elbos(kind):
    d = GaussianDiffusion(NoiseSchedule.linear(T=1000), prediction=kind)
    x, eps, out, t = draws(0)
    x_t = d.q_sample(x, t, eps)
    own = simple_loss(d, out, x, eps, t)  # elbolab's L_simple: a mean over dimensions
    eps_hat = d.predict_eps(out, x_t, t)
    lam, neg_dlam = ddpm_lambda(d, t)
    w = weight(kind, lam, time_density(neg_dlam))
    assert torch.allclose(weighted_loss(w, neg_dlam, eps, eps_hat), 0.5 * DIM * own, rtol=1e-9)


@pytest.mark.parametrize("kind", ["eps", "v"])
def test_ddpm_min_snr_is_a_weighted_elbo(kind):
    d = GaussianDiffusion(NoiseSchedule.cosine(T=1000), prediction=kind)
    x, eps, out, t = draws(1)
    x_t = d.q_sample(x, t, eps)
    own = min_snr_weight(d, t, 5.0) * simple_loss(d, out, x, eps, t)
    lam, neg_dlam = ddpm_lambda(d, t)
    w = weight(Weighting.MIN_SNR, lam, time_density(neg_dlam), min_snr_gamma=5.0)
    got = weighted_loss(w, neg_dlam, eps, d.predict_eps(out, x_t, t))
    assert torch.allclose(got, 0.5 * DIM * own, rtol=1e-9)
    # w = p(lambda) min(1, 5 e^{-lambda}): flat where SNR < 5, falling as 1/SNR above
    assert torch.allclose(w / time_density(neg_dlam), torch.clamp(5 * torch.exp(-lam), max=1.0))


def test_ddpm_true_elbo_term_is_the_discrete_vdm_term():
    """elbolab's DDPM KL term L_{t-1} (sigma_t^2 = beta~_t) equals 1/2 expm1(lambda_{t-1} - lambda_t)
    ||eps - eps_hat||^2, VDM's discrete bound (eq. 13) for one step with gamma = -lambda: the ELBO is w = 1 in
    discrete time too."""
    d = GaussianDiffusion(NoiseSchedule.linear(T=1000), prediction="eps", variance="beta_tilde")
    x, eps, out, t = draws(2)
    kl = timestep_terms(d, Fixed(out), x, t, eps, decoder="gaussian")
    abar = d.table("alpha_bars")
    lam = torch.log(abar / (1 - abar))
    vdm = discrete_diffusion_loss(-lam[t], -lam[t - 1], eps, out, T=1)
    assert torch.allclose(kl, vdm, rtol=1e-8)
    assert torch.allclose(elbo_weight(d, t), 0.5 * torch.expm1(lam[t - 1] - lam[t]), rtol=1e-10)
    assert torch.equal(weight("elbo", lam[t]), torch.ones(B, dtype=torch.float64))


def test_edm_loss_is_a_weighted_elbo():
    """EDM (Karras et al. 2022): log s ~ N(-1.2, 1.2^2), loss l(s) ||D(x + s eps; s) - x||^2 / 2 with
    l(s) = (s^2 + s_d^2) / (s s_d)^2, s_d = 0.5."""
    x, eps, D_out, _ = draws(3)
    n = torch.randn(B, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    p_mean, p_std, s_d = -1.2, 1.2, 0.5
    s = torch.exp(p_mean + p_std * n)[:, None, None, None]
    z = x + s * eps
    own = 0.5 * ((s**2 + s_d**2) / (s * s_d) ** 2).flatten() * ((D_out - x) ** 2).flatten(1).sum(1)
    lam = -2 * torch.log(s.flatten())
    eps_hat = (z - D_out) / s
    # lambda(u) for u = Phi(n) ~ U(0, 1): -d lambda/du = 2 P_std / phi(n) = 1 / p(lambda)
    neg_dlam = 2 * p_std / (torch.exp(-0.5 * n**2) / math.sqrt(2 * math.pi))
    p = edm_density(lam, p_mean, p_std)
    assert torch.allclose(p, 1 / neg_dlam, rtol=1e-10)
    w = weight(Weighting.EDM, lam, p, sigma_data=s_d)
    assert torch.allclose(weighted_loss(w, neg_dlam, eps, eps_hat), own, rtol=1e-10)


def test_flow_matching_loss_is_a_weighted_elbo():
    """Rectified flow: z_t = (1 - t) x + t eps, t ~ U(0, 1), loss ||(eps - x) - v_hat||^2 / 2; w = e^{-lambda/2} / 2."""
    x, eps, v_hat, _ = draws(5)
    t = torch.rand(B, generator=torch.Generator().manual_seed(6), dtype=torch.float64).clamp(1e-3, 1 - 1e-3)
    tt = t[:, None, None, None]
    z = (1 - tt) * x + tt * eps
    own = 0.5 * (((eps - x) - v_hat) ** 2).flatten(1).sum(1)
    eps_hat = z + (1 - tt) * v_hat  # x_hat = z - t v_hat, eps_hat = x_hat + v_hat
    lam, neg_dlam = flow_log_snr(t), flow_neg_dlambda_dt(t)
    assert torch.allclose(lam, torch.log((1 - t) ** 2 / t**2))
    h = 1e-6
    assert torch.allclose(neg_dlam, -(flow_log_snr(t + h) - flow_log_snr(t - h)) / (2 * h), rtol=1e-6)
    p = flow_density(lam)
    assert torch.allclose(p, 1 / neg_dlam, rtol=1e-10)
    w = weight(Weighting.FLOW, lam, p)
    assert torch.allclose(w, 0.5 * torch.exp(-0.5 * lam), rtol=1e-10)
    assert torch.allclose(weighted_loss(w, neg_dlam, eps, eps_hat), own, rtol=1e-10)


def test_densities_integrate_to_one():
    lam = torch.linspace(-60, 60, 200_001, dtype=torch.float64)
    for p in (edm_density(lam), flow_density(lam)):
        assert float(torch.trapezoid(p, lam)) == pytest.approx(1.0, abs=1e-6)


def test_weight_checks():
    with pytest.raises(ValueError, match="weighting = 'karras'"):
        weight("karras", torch.zeros(1), torch.ones(1))
    with pytest.raises(ValueError, match="needs the density"):
        weight("eps", torch.zeros(1))
