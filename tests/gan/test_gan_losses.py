"""GAN losses: golden values of a peer's suite, equivalence with the probability form of the notes, the
dispatch by Enum, and the gradient penalty (computed on interpolates, differentiable, checked by autograd)."""

import math

import pytest
import torch
import torch.nn.functional as F

from elbolab.gan.config import GANLoss
from elbolab.gan import losses as L

REAL = torch.tensor([1.3, 2.9, 8.4, 6.3])
FAKE = torch.tensor([4.8, 1.2, -3.5, 5.9])


def test_golden_values():
    """Discriminator logits D(x) = [1.3, 2.9, 8.4, 6.3], D(G(z)) = [4.8, 1.2, -3.5, 5.9] (a peer's suite)."""
    assert L.minimax_discriminator_loss(REAL, FAKE).item() == pytest.approx(3.1251488, abs=1e-6)
    assert L.non_saturating_generator_loss(FAKE).item() == pytest.approx(0.9509912, abs=1e-6)
    assert L.wasserstein_critic_loss(REAL, FAKE).item() == pytest.approx(-2.625, abs=1e-6)
    assert L.wasserstein_generator_loss(FAKE).item() == pytest.approx(-2.1, abs=1e-6)


def test_losses_equal_the_probability_form_of_the_notes():
    """-L(D, G) = -mean log D(x) - mean log(1 - D(G(z))) with D = sigmoid(logit), and the G losses."""
    d_real, d_fake = torch.sigmoid(REAL.double()), torch.sigmoid(FAKE.double())
    value = d_real.log().mean() + (1 - d_fake).log().mean()
    d_loss = L.minimax_discriminator_loss(REAL.double(), FAKE.double())
    assert d_loss.item() == pytest.approx(-value.item(), rel=1e-12)
    assert L.minimax_generator_loss(FAKE.double()).item() == pytest.approx((1 - d_fake).log().mean().item(), rel=1e-12)
    assert L.non_saturating_generator_loss(FAKE.double()).item() == pytest.approx(-d_fake.log().mean().item(),
                                                                                  rel=1e-12)
    # the BCE of "real" vs "fake" labels
    bce = (F.binary_cross_entropy_with_logits(REAL, torch.ones(4))
           + F.binary_cross_entropy_with_logits(FAKE, torch.zeros(4)))
    assert L.minimax_discriminator_loss(REAL, FAKE).item() == pytest.approx(bce.item(), rel=1e-6)


def test_losses_are_stable_at_extreme_logits():
    big = torch.tensor([-500.0, 500.0])
    values = (L.minimax_discriminator_loss(big, big), L.minimax_generator_loss(big),
              L.non_saturating_generator_loss(big))
    for v in values:
        assert torch.isfinite(v)
    assert L.non_saturating_generator_loss(torch.tensor([-500.0])).item() == pytest.approx(500.0)


def test_bf16_logits_give_float32_losses():
    assert L.minimax_discriminator_loss(REAL.bfloat16(), FAKE.bfloat16()).dtype == torch.float32
    assert L.wasserstein_generator_loss(FAKE.bfloat16()).dtype == torch.float32


@pytest.mark.parametrize("kind", list(GANLoss))
def test_dispatch_by_enum(kind):
    d = L.discriminator_loss(kind.value, REAL, FAKE)
    g = L.generator_loss(kind, FAKE)
    hinge_d = (torch.relu(1 - REAL).mean() + torch.relu(1 + FAKE).mean()).item()  # Miyato et al. 2018, eq. 17
    expect_d = {GANLoss.WASSERSTEIN_GP: -2.625, GANLoss.HINGE: hinge_d}.get(kind, 3.1251488)
    expect_g = {GANLoss.MINIMAX: L.minimax_generator_loss(FAKE).item(), GANLoss.NON_SATURATING: 0.9509912,
                GANLoss.WASSERSTEIN_GP: -2.1, GANLoss.HINGE: -FAKE.mean().item()}[kind]
    assert d.item() == pytest.approx(expect_d, abs=1e-6) and g.item() == pytest.approx(expect_g, abs=1e-6)


def test_unknown_loss_lists_choices():
    with pytest.raises(ValueError, match="'squared'.*minimax.*non_saturating.*wasserstein_gp.*hinge"):
        L.generator_loss("squared", FAKE)


# ------------------------------------------------------------------------------------------------------
# Gradient penalty
# ------------------------------------------------------------------------------------------------------
def test_interpolates_lie_on_segments_with_one_eps_per_example():
    g = torch.Generator().manual_seed(0)
    real = torch.randn(6, 3, 4, 4, generator=g)
    fake = torch.randn(6, 3, 4, 4, generator=g)
    x_hat = L.interpolates(real, fake, torch.Generator().manual_seed(1))
    eps = torch.rand(6, generator=torch.Generator().manual_seed(1))  # the same draw
    torch.testing.assert_close(x_hat, eps[:, None, None, None] * real + (1 - eps[:, None, None, None]) * fake)
    # and, independently of the draw: x_hat - fake is a per-example multiple in [0, 1] of real - fake
    ratio = (x_hat - fake) / (real - fake)
    assert torch.allclose(ratio, ratio[:, :1, :1, :1].expand_as(ratio), atol=1e-4)
    assert bool(((ratio >= 0) & (ratio <= 1)).all())
    with pytest.raises(ValueError, match="differ in shape"):
        L.interpolates(real, fake[:3], g)


def test_gradient_penalty_closed_forms():
    """Linear critic f(x) = w.x: grad = w, penalty (|w| - 1)^2; quadratic f = |x|^2 / 2: grad = x."""
    w = torch.tensor([3.0, 4.0])
    x = torch.randn(5, 2)
    assert L.gradient_penalty(lambda h: h @ w, x).item() == pytest.approx(16.0)
    gp = L.gradient_penalty(lambda h: 0.5 * h.pow(2).sum(1), x)
    assert gp.item() == pytest.approx(((x.norm(dim=1) - 1) ** 2).mean().item(), rel=1e-6)


def test_gradient_penalty_gradient_flows_to_the_critic():
    """d/dw (|w| - 1)^2 = 2 (|w| - 1) w / |w| through the double backward; and torch's gradcheck in float64."""
    w = torch.tensor([3.0, 4.0], requires_grad=True)
    x = torch.randn(7, 2)
    L.gradient_penalty(lambda h: h @ w, x).backward()
    torch.testing.assert_close(w.grad, 2 * (5.0 - 1) * torch.tensor([3.0, 4.0]) / 5.0)

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1)).double()
    x_hat = torch.randn(4, 3, dtype=torch.float64)
    params = tuple(net.parameters())

    def penalty(*ps):
        def critic(h):
            w1, b1, w2, b2 = ps
            return (torch.tanh(h @ w1.T + b1) @ w2.T + b2).squeeze(1)
        return L.gradient_penalty(critic, x_hat)

    assert torch.autograd.gradcheck(penalty, tuple(p.detach().requires_grad_(True) for p in params))
    assert math.isfinite(penalty(*params).item())
