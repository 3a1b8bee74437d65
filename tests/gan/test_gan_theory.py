"""The notes' GAN theory, numerically, on 1-D densities with exact log-densities (Mixture1D):
D* = p_r / (p_r + p_g) maximises L(G, D), L(G, D*) = 2 JS - 2 log 2 (by quadrature, two independent ways),
a discriminator trained on samples approaches D*, and the minimax generator gradient vanishes where
D(G(z)) -> 0 while the non-saturating one does not."""

import math

import pytest
import torch

from elbolab.data.toy import Mixture1D, make_toy
from elbolab.gan import losses as L
from elbolab.gan import theory as T

LOG2 = math.log(2.0)
GRID = torch.linspace(-12.0, 12.0, 24001, dtype=torch.float64)
P_R = make_toy("mixture-1d")  # 0.3 N(-2, 0.5^2) + 0.5 N(0.5, 0.7^2) + 0.2 N(2.5, 0.3^2)
P_G = Mixture1D(weights=(0.6, 0.4), means=(-0.5, 1.5), stds=(1.0, 0.8))


def _dens(p):
    return p.log_prob(GRID).exp()


def test_optimal_discriminator_maximises_the_value():
    pr, pg = _dens(P_R), _dens(P_G)
    d_star = T.optimal_discriminator(pr, pg)
    best = T.game_value(pr, pg, d_star, GRID)
    # any perturbation of D*, in either direction, lowers L(G, D) (pointwise concavity in D)
    bump = torch.exp(-0.5 * (GRID - 0.3) ** 2)
    for scale in (-0.3, -0.05, 0.05, 0.3):
        d = (d_star + scale * bump * d_star * (1 - d_star)).clamp(0, 1)
        assert T.game_value(pr, pg, d, GRID) < best
    torch.testing.assert_close(T.optimal_discriminator_logit(P_R.log_prob(GRID), P_G.log_prob(GRID)).sigmoid(),
                               d_star)


def test_value_at_d_star_is_2_js_minus_2_log_2():
    """L(G, D*) from the definition of the game equals 2 JS - 2 log 2 with JS from its KL definition."""
    pr, pg = _dens(P_R), _dens(P_G)
    value = T.game_value(pr, pg, T.optimal_discriminator(pr, pg), GRID).item()
    js = T.js_divergence(pr, pg, GRID).item()
    assert 0.02 < js < LOG2
    assert value == pytest.approx(2 * js - 2 * LOG2, abs=1e-8)


def test_js_limits_and_closed_form_kl():
    """Identical laws: JS = 0, L(G, D*) = -2 log 2, D* = 1/2. Disjoint laws: JS = log 2, L = 0. And the
    quadrature KL between two Gaussians matches the closed form (checks the integrator itself)."""
    same = _dens(P_R)
    assert T.js_divergence(same, same, GRID).item() == pytest.approx(0.0, abs=1e-12)
    assert T.game_value(same, same, T.optimal_discriminator(same, same), GRID).item() == pytest.approx(-2 * LOG2,
                                                                                                      abs=1e-8)
    far_a, far_b = Mixture1D((1.0,), (-8.0,), (0.3,)), Mixture1D((1.0,), (8.0,), (0.3,))
    assert T.js_divergence(_dens(far_a), _dens(far_b), GRID).item() == pytest.approx(LOG2, abs=1e-8)
    a, b = Mixture1D((1.0,), (0.3,), (0.8,)), Mixture1D((1.0,), (-1.0,), (1.3,))
    closed = math.log(1.3 / 0.8) + (0.8**2 + 1.3**2) / (2 * 1.3**2) - 0.5
    assert T.kl_divergence(_dens(a), _dens(b), GRID).item() == pytest.approx(closed, abs=1e-9)


def test_bad_grids_are_errors():
    with pytest.raises(ValueError, match="increasing"):
        T.js_divergence(torch.ones(3), torch.ones(3), torch.tensor([0.0, 2.0, 1.0]))
    with pytest.raises(ValueError, match="shape"):
        T.kl_divergence(torch.ones(3), torch.ones(4), torch.arange(3.0))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        T.game_value(torch.ones(3), torch.ones(3), torch.full((3,), 1.5), torch.arange(3.0))


@pytest.mark.slow
def test_trained_discriminator_approaches_d_star():
    """A discriminator trained on samples to convergence approaches D* (error reported in the assertion
    message; measured 3000 Adam steps of 512 + 512 samples: 0.005 mean (weighted by (p_r + p_g) / 2) and 0.033
    max absolute error where the data are, L(G, D*) - L(G, D) = 7e-4), and L(G, D) <= L(G, D*)."""
    fit = T.fit_discriminator(P_R, P_G, torch.Generator().manual_seed(0), steps=3000)
    msg = (f"mean |D - D*| = {fit.mean_abs_error:.4f}, max = {fit.max_abs_error:.4f}, "
           f"L(G, D) = {fit.value:.5f}, L(G, D*) = {fit.value_star:.5f}")
    print(msg)
    assert fit.mean_abs_error < 0.015, msg
    assert fit.max_abs_error < 0.08, msg
    assert fit.value <= fit.value_star + 1e-6, msg
    assert fit.value_star - fit.value < 2e-3, msg
    # the constant discriminator D = 1/2 (an untrained one) is far worse
    assert float((0.5 - fit.d_star).abs().max()) > 4 * fit.max_abs_error, msg


def _generator_grads(theta: float) -> tuple[float, float, float]:
    """Toy: p_r = N(3, 0.5^2), G(z) = theta + 0.5 z, D held at the optimal D* for the current theta. Returns
    (mean D(G(z)), d/dtheta of the minimax G loss, d/dtheta of the non-saturating G loss)."""
    p_r = Mixture1D((1.0,), (3.0,), (0.5,))
    p_g = Mixture1D((1.0,), (theta,), (0.5,))
    z = torch.randn(4096, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    out = []
    for loss_fn in (L.minimax_generator_loss, L.non_saturating_generator_loss):
        th = torch.tensor(theta, dtype=torch.float64, requires_grad=True)
        x = th + 0.5 * z
        # D = D* of the current generator, held fixed while G moves: p_g's parameters are plain floats, so the
        # gradient reaches theta only through the samples x
        logits = T.optimal_discriminator_logit(p_r.log_prob(x), p_g.log_prob(x))
        (g,) = torch.autograd.grad(loss_fn(logits), th)
        out.append(g.item())
    with torch.no_grad():
        x = theta + 0.5 * z
        d_fake = torch.sigmoid(T.optimal_discriminator_logit(p_r.log_prob(x), p_g.log_prob(x))).mean().item()
    return d_fake, out[0], out[1]


def test_minimax_generator_gradient_vanishes_non_saturating_does_not():
    """As the fakes move away from the data, D*(G(z)) -> 0: |grad| of the minimax G loss collapses (to 3e-17
    here) while the non-saturating gradient grows; both point the same way (towards the data)."""
    rows = [_generator_grads(theta) for theta in (2.0, 1.0, 0.0, -1.0, -3.0)]
    d_fake = [r[0] for r in rows]
    mm = [abs(r[1]) for r in rows]
    ns = [abs(r[2]) for r in rows]
    assert all(a > b for a, b in zip(d_fake, d_fake[1:])) and d_fake[-1] < 1e-15
    assert all(a > b for a, b in zip(mm, mm[1:])), mm
    assert mm[-1] < 1e-15 and ns[-1] > 20.0, (mm, ns)
    assert all(a < b for a, b in zip(ns, ns[1:])), ns
    assert all(n > 1.0 for n in ns), ns
    assert all(r[1] < 0 and r[2] < 0 for r in rows)  # decreasing the loss moves theta towards 3
