"""Denoising score matching: its minimiser on Gaussian data is the true noisy score (closed form)."""

import pytest
import torch
from torch import nn
from torch.autograd.functional import hessian
from torch.func import functional_call

from elbolab.score.dsm import DenoisingScoreMatching, dsm_loss
from elbolab.score.noise_levels import NoiseLevels
from elbolab.objectives import Objective

MU = torch.tensor([0.5, -1.0], dtype=torch.float64)
SIGMA = torch.tensor([[1.0, 0.3], [0.3, 0.5]], dtype=torch.float64)
LEVELS = NoiseLevels(torch.tensor([2.0, 0.6, 0.15], dtype=torch.float64))


class AffinePerLevel(nn.Module):
    """s(x~, sigma_l) = A_l x~ + b_l, one affine map per noise level (float64)."""

    def __init__(self, levels: NoiseLevels):
        super().__init__()
        self.register_buffer("sigmas", levels.sigmas.float())
        self.A = nn.Parameter(torch.zeros(levels.L, 2, 2, dtype=torch.float64))
        self.b = nn.Parameter(torch.zeros(levels.L, 2, dtype=torch.float64))

    def forward(self, x, sigma, y=None):
        idx = (sigma.float()[:, None] == self.sigmas[None]).double().argmax(1)
        assert bool((self.sigmas[idx] == sigma.float()).all())
        return torch.einsum("bij,bj->bi", self.A[idx], x) + self.b[idx]


def _data(n, seed):
    g = torch.Generator().manual_seed(seed)
    return MU + torch.randn(n, 2, generator=g, dtype=torch.float64) @ torch.linalg.cholesky(SIGMA).T


def test_dsm_minimiser_is_the_true_noisy_score():
    """The DSM loss is quadratic in (A, b): one Newton step from 0 lands on its minimiser for a fixed batch,
    which must be grad log N(x~; mu, Sigma + sigma^2 I) = -(Sigma + sigma^2 I)^{-1} (x~ - mu) at every level."""
    model = AffinePerLevel(LEVELS)
    objective = DenoisingScoreMatching(LEVELS)
    assert isinstance(objective, Objective)
    x = _data(60_000, 0)
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    sizes = [p.numel() for p in model.parameters()]

    def loss_of(flat):
        params = {n: c.reshape(s) for n, c, s in zip(names, flat.split(sizes), shapes)}
        call = lambda xx, sig, y=None: functional_call(model, params, (xx, sig, y))  # noqa: E731
        return objective.loss(call, x, None, torch.Generator().manual_seed(1)).loss

    def grad(flat):
        flat = flat.detach().requires_grad_(True)
        return torch.autograd.grad(loss_of(flat), flat)[0]

    theta0 = torch.zeros(sum(sizes), dtype=torch.float64)
    g, H = grad(theta0), hessian(loss_of, theta0)
    theta = theta0 - torch.linalg.solve(H, g)
    assert float(grad(theta).abs().max()) < 1e-8  # a stationary point of the quadratic
    A, b = (c.reshape(s) for c, s in zip(theta.split(sizes), shapes))
    for l, sigma in enumerate(LEVELS.sigmas.tolist()):
        prec = torch.linalg.inv(SIGMA + sigma**2 * torch.eye(2, dtype=torch.float64))
        torch.testing.assert_close(A[l], -prec, rtol=0.05, atol=0.03)
        torch.testing.assert_close(b[l], prec @ MU, rtol=0.05, atol=0.03)


def test_dsm_loss_values_and_lambda_weighting():
    """lambda(sigma) = sigma^2 puts every level on the same scale: the zero score costs 1/2 per dimension, and the
    true score attains 1/2 (1 - sigma^2 tr((Sigma + sigma^2 I)^{-1}) / D) at level sigma."""
    x = _data(100_000, 2)
    zero = lambda xx, sig, y=None: torch.zeros_like(xx)  # noqa: E731
    obj = DenoisingScoreMatching(LEVELS)
    assert float(obj.loss(zero, x, None, torch.Generator().manual_seed(3)).loss) == pytest.approx(0.5, rel=0.01)

    def true_score(xx, sig, y=None):
        out = torch.empty_like(xx)
        for s in sig.unique().tolist():
            m = sig == s
            prec = torch.linalg.inv(SIGMA + s**2 * torch.eye(2, dtype=torch.float64))
            out[m] = -(xx[m] - MU) @ prec
        return out

    expected = sum(0.5 * (1 - s**2 * float(torch.linalg.inv(SIGMA + s**2 * torch.eye(2, dtype=torch.float64)).trace())
                          / 2) for s in LEVELS.sigmas.tolist()) / LEVELS.L
    out = obj.loss(true_score, x, None, torch.Generator().manual_seed(3))
    assert float(out.loss) == pytest.approx(expected, rel=0.02)
    assert out.metrics["loss"] == float(out.loss)
    again = obj.loss(true_score, x, None, torch.Generator().manual_seed(3))
    assert float(again.loss) == float(out.loss)  # all randomness from the generator


def test_dsm_loss_shapes_and_errors():
    score, noise = torch.randn(4, 1, 3, 3), torch.randn(4, 1, 3, 3)
    sigma = torch.tensor([0.1, 0.5, 1.0, 2.0])
    expected = 0.5 * ((sigma[:, None, None, None] * score + noise) ** 2).mean(dim=(1, 2, 3))
    torch.testing.assert_close(dsm_loss(score, noise, sigma), expected)
    with pytest.raises(ValueError, match="shape"):
        dsm_loss(score, noise[:, :, :2], sigma)
    with pytest.raises(ValueError, match="output"):
        DenoisingScoreMatching(LEVELS).loss(lambda x, s, y=None: x[:, :1], torch.randn(3, 2), None,
                                            torch.Generator())


def test_ncsn_scale_input_feeds_the_network_the_vp_x_t():
    """scale_input: the U-Net sees x~ / sqrt(1 + sigma^2) = alpha x~ (the DDPM's x_t of the VE <-> VP map), the
    noise code c_noise(sigma) either way, and the output is divided by sigma in both cases."""
    from elbolab.score.network import NCSN, noise_conditioning

    class Record(nn.Module):
        def forward(self, x, c, y=None):
            self.x, self.c = x, c
            return torch.ones_like(x)

    x = torch.randn(3, 1, 2, 2, generator=torch.Generator().manual_seed(0))
    sigma = torch.tensor([0.01, 1.0, 40.0])
    plain, scaled = NCSN(Record()), NCSN(Record(), scale_input=True)
    s_plain, s_scaled = plain(x, sigma), scaled(x, sigma)
    torch.testing.assert_close(plain.net.x, x)
    torch.testing.assert_close(scaled.net.x, x / torch.sqrt(1 + sigma**2).view(3, 1, 1, 1))
    torch.testing.assert_close(scaled.net.c, noise_conditioning(sigma))
    torch.testing.assert_close(s_scaled, s_plain)
    torch.testing.assert_close(s_plain, (1 / sigma).view(3, 1, 1, 1).expand_as(x))
    # the unit-scale input at every level: x~ = x0 + sigma z has std sqrt(1 + sigma^2) for unit-variance x0
    big = torch.randn(4000) * torch.sqrt(torch.tensor(1 + 40.0**2))
    scaled(big.view(1000, 1, 2, 2), 40.0)
    assert abs(float(scaled.net.x.std()) - 1.0) < 0.05


class SigmaRecorder(nn.Module):
    def __init__(self):
        super().__init__()
        self.sigmas = []

    def forward(self, x, sigma, y=None):
        self.sigmas.append(sigma.clone())
        return torch.zeros_like(x)


def test_dsm_draws_levels_from_the_given_probabilities():
    """i ~ probs per example (a chi-square-sized tolerance on 60000 draws); None keeps i ~ U{1..L}."""
    probs = torch.tensor([0.1, 0.6, 0.3], dtype=torch.float64)
    x = torch.zeros(60000, 2)
    for p in (probs, None):
        model = SigmaRecorder()
        out = DenoisingScoreMatching(LEVELS, p).loss(model, x, None, torch.Generator().manual_seed(0))
        assert float(out.loss) == pytest.approx(0.5, rel=0.02)  # a zero score scores 1/2 at every level
        seen = model.sigmas[0].double()
        freq = torch.stack([(seen == float(s)).double().mean() for s in LEVELS.sigmas.float()])
        want = probs if p is not None else torch.full((3,), 1 / 3, dtype=torch.float64)
        assert float(freq.sum()) == pytest.approx(1.0)
        assert ((freq - want).abs() < 4 * (want * (1 - want) / 60000).sqrt()).all()
    for bad in (torch.tensor([0.5, 0.5]), torch.tensor([0.5, -0.1, 0.6]), torch.zeros(3)):
        with pytest.raises(ValueError, match="probs must be 3"):
            DenoisingScoreMatching(LEVELS, bad)
