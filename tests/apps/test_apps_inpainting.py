"""RePaint inpainting: the jump schedule, masks, known pixels kept exactly, and the distribution of the completions
under the exact Gaussian oracle (against the exact law of the algorithm and the closed-form conditional)."""

import pytest
import torch
from apps_helpers import correlated_gaussian, gaussian_conditional
from torch import nn

from elbolab.apps.inpainting import (
    InpaintRequest,
    MaskKind,
    check_mask,
    harmonic_fill,
    make_mask,
    masked_mse,
    mean_fill,
    repaint,
    repaint_schedule,
)
from elbolab.diffusion import GaussianOracle
from elbolab.diffusion.samplers import respace, sampling_timesteps


# --------------------------------------------------------------------------------------------------
# schedule
# --------------------------------------------------------------------------------------------------
def test_repaint_schedule_golden():
    # jumps at states 1 and 3 (k + 1 for k in range(0, 6 - 2, 2)), each taken r - 1 = 1 time, 2 states up
    assert repaint_schedule(6, jump_length=2, resample=2) == [6, 5, 4, 3, 4, 5, 4, 3, 2, 1, 2, 3, 2, 1, 0]
    assert repaint_schedule(5, jump_length=3, resample=1) == [5, 4, 3, 2, 1, 0]


@pytest.mark.parametrize("S,j,r", [(1, 1, 3), (10, 10, 4), (50, 5, 3), (250, 10, 10), (37, 4, 2)])
def test_repaint_schedule_properties(S, j, r):
    states = repaint_schedule(S, j, r)
    assert states[0] == S and states[-1] == 0 and min(states) == 0 and max(states) <= S
    steps = [b - a for a, b in zip(states[:-1], states[1:])]
    assert set(steps) <= {-1, 1}
    n_jump_points = len(range(0, S - j, j))
    assert steps.count(-1) == S + (r - 1) * j * n_jump_points  # network evaluations
    assert steps.count(1) == (r - 1) * j * n_jump_points
    assert states.count(0) == 1  # the last step to the image is taken once


@pytest.mark.parametrize("bad", [dict(steps=0), dict(jump_length=0), dict(resample=-1), dict(steps=2.5)])
def test_repaint_schedule_rejects_bad_values(bad):
    kw = dict(steps=10, jump_length=2, resample=2) | bad
    with pytest.raises(ValueError, match=next(iter(bad))):
        repaint_schedule(**kw)


# --------------------------------------------------------------------------------------------------
# masks
# --------------------------------------------------------------------------------------------------
def test_builtin_masks():
    c = make_mask("center", (28, 28), 2)
    assert c.shape == (2, 1, 28, 28) and set(c.unique().tolist()) == {0.0, 1.0}
    assert int((c[0] == 0).sum()) == 14 * 14 and bool((c[:, :, 7:21, 7:21] == 0).all())
    assert int((make_mask(MaskKind.CENTER, (28, 28), box_size=6) == 0).sum()) == 36
    left = make_mask("left-half", (4, 6))
    assert left[0, 0].tolist() == [[0, 0, 0, 1, 1, 1]] * 4
    g = torch.Generator().manual_seed(0)
    r = make_mask("random-pixels", (64, 64), 3, generator=g, missing_fraction=0.7)
    assert abs(float((r == 0).float().mean()) - 0.7) < 0.02
    assert not torch.equal(r[0], r[1])  # one draw per image
    assert torch.equal(r, make_mask("random-pixels", (64, 64), 3, generator=torch.Generator().manual_seed(0),
                                    missing_fraction=0.7))


def test_mask_errors():
    with pytest.raises(ValueError, match="'center', 'left-half', 'random-pixels'"):
        make_mask("square", (8, 8))
    with pytest.raises(ValueError, match="Generator"):
        make_mask("random-pixels", (8, 8))
    with pytest.raises(ValueError, match="box_size"):
        make_mask("center", (8, 8), box_size=9)
    x = torch.zeros(2, 3, 4, 4)
    with pytest.raises(ValueError, match="exactly 0"):
        check_mask(torch.full((2, 1, 4, 4), 0.5), x)
    with pytest.raises(ValueError, match="does not fit"):
        check_mask(torch.ones(2, 1, 4, 5), x)
    assert check_mask(torch.ones(1, 1, 4, 4), x).shape == (2, 3, 4, 4)


def test_masked_mse_golden():
    ref = torch.zeros(1, 1, 2, 2)
    x = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    mask = torch.tensor([[[[1.0, 0.0], [0.0, 1.0]]]])  # missing: 2 and 3
    assert masked_mse(x, ref, mask).tolist() == [pytest.approx((4 + 9) / 2)]


# --------------------------------------------------------------------------------------------------
# RePaint: known pixels
# --------------------------------------------------------------------------------------------------
class TinyEps(nn.Module):
    """A small random convolutional eps-model (untrained): enough to exercise the image code paths."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, x, t, y=None):
        return torch.tanh(self.conv(x)) + 1e-3 * t.float().view(-1, 1, 1, 1)


@pytest.mark.parametrize("kind", list(MaskKind))
@pytest.mark.parametrize("resample,clip", [(1, False), (3, True)])
def test_repaint_keeps_known_pixels_exactly(make_diffusion, kind, resample, clip):
    d = make_diffusion(40)
    g = torch.Generator().manual_seed(1)
    x = torch.rand(3, 3, 8, 8, generator=g) * 2 - 1
    mask = make_mask(kind, (8, 8), 3, generator=g)
    res = repaint(TinyEps(), x, mask, d, generator=g, steps=20, jump_length=4, resample=resample, clip_x0=clip)
    keep = mask.bool().expand_as(x)
    assert torch.equal(res.sample[keep], x[keep])
    assert torch.isfinite(res.sample).all()
    assert not torch.allclose(res.sample[~keep], x[~keep])  # the hole was filled by the model, not copied
    states = repaint_schedule(20, 4, resample)
    assert res.nfe == sum(b == a - 1 for a, b in zip(states[:-1], states[1:]))


def test_repaint_never_reads_hidden_pixels_and_is_reproducible(make_diffusion):
    d = make_diffusion(30)
    x = torch.rand(2, 3, 6, 6, generator=torch.Generator().manual_seed(0))
    mask = make_mask("center", (6, 6), 2)
    y = torch.where(mask.bool(), x, torch.full_like(x, 1e6))  # garbage under the hole
    run = lambda img: repaint(TinyEps(), img, mask, d, generator=torch.Generator().manual_seed(5), steps=10,  # noqa
                              jump_length=3, resample=2).sample
    assert torch.equal(run(x), run(y))


def test_repaint_rejects_bad_arguments(make_diffusion):
    d = make_diffusion(20)
    x = torch.zeros(1, 3, 4, 4)
    m = make_mask("center", (4, 4))
    with pytest.raises(ValueError, match="steps"):
        repaint(TinyEps(), x, m, d, generator=torch.Generator(), steps=21)
    with pytest.raises(ValueError, match="Generator"):
        repaint(TinyEps(), x, m, d, generator=None)
    with pytest.raises(ValueError, match="mask"):
        repaint(TinyEps(), x, m[..., :3], d, generator=torch.Generator())
    with pytest.raises(ValueError, match="mask kind"):
        InpaintRequest(mask_kind="top")
    with pytest.raises(ValueError, match="resample"):
        InpaintRequest(resample=0)


# --------------------------------------------------------------------------------------------------
# RePaint with the exact Gaussian denoiser
# --------------------------------------------------------------------------------------------------
KEEP = torch.tensor([1, 0, 1, 0, 1, 0, 1, 0], dtype=torch.bool)  # every other coordinate known


def repaint_law(oracle, diffusion, keep, x, steps, jump_length, resample):
    """The exact Gaussian law N(m, C) of RePaint's output for an affine eps-model (the Gaussian oracle):
    every reverse step is x -> A x + c + sigma z, the replacement sets the known block to N(sqrt(abar) x_b,
    (1 - abar) I) independent of the rest, a jump is x -> sqrt(alpha) x + sqrt(beta) z. Float64."""
    D = keep.numel()
    eye = torch.eye(D, dtype=torch.float64)
    ts = sampling_timesteps(diffusion.T, steps, "linspace")
    chain = respace(diffusion, ts)
    pts = torch.cat([torch.zeros(1, D), torch.eye(D)]).double()
    maps = {}
    for i in range(1, steps + 1):
        st = chain.p_mean_variance(oracle(pts, torch.full((D + 1,), int(ts[i - 1]))), pts, i)
        maps[i] = ((st.mean[1:] - st.mean[0]).T, st.mean[0], float(st.variance[0, 0]))
    abar, alphas = chain.schedule.alpha_bars, chain.schedule.alphas
    b = keep.nonzero().flatten()
    m, C = torch.zeros(D, dtype=torch.float64), eye.clone()
    states = repaint_schedule(steps, jump_length, resample)
    for cur, nxt in zip(states[:-1], states[1:]):
        if nxt == cur - 1:
            A, c, var = maps[cur]
            m, C = A @ m + c, A @ C @ A.T + (var * eye if cur > 1 else 0.0)
            ab = float(abar[nxt])
            m[b] = ab**0.5 * x[b]
            C[b, :], C[:, b] = 0.0, 0.0
            C[b, b] = 1.0 - ab
        else:
            al = float(alphas[nxt])
            m, C = al**0.5 * m, al * C + (1.0 - al) * eye
    a = (~keep).nonzero().flatten()
    return m[a], C[a][:, a]


def gaussian_kl(m, C, mu, Sigma):
    """KL(N(m, C) || N(mu, Sigma)) in nats."""
    k = m.numel()
    Si = torch.linalg.inv(Sigma)
    d = mu - m
    return float(0.5 * (torch.trace(Si @ C) + d @ Si @ d - k + torch.logdet(Sigma) - torch.logdet(C)))


def _observed(mean, cov):
    return mean + 0.5 * torch.linalg.cholesky(cov) @ torch.ones(mean.numel(), dtype=torch.float64)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_resampling_brings_repaint_close_to_the_exact_conditional(make_diffusion, seed):
    """Exact laws (no Monte Carlo) for the exact denoiser of 8-dim Gaussian data, odd coordinates missing.

    RePaint with resampling (T = 200, j = 10, r = 10) is within 0.03 nats (KL) of the closed-form conditional,
    its mean within 0.1 conditional standard deviations; the plain replacement method (r = 1) is 3x further
    away. (RePaint is approximate: it uses q(x_{t-1} | x_t) where q(x_{t-1} | x_t, x_0^known) would be exact;
    with the authors' setting, 250 steps of T = 1000, the KL is 0.015-0.021 nats on these examples.)"""
    d = make_diffusion(200)
    mean, cov = correlated_gaussian(8, seed)
    oracle = GaussianOracle(mean, cov, d)
    x = _observed(mean, cov)
    mu, Sigma = gaussian_conditional(mean, cov, KEEP, x)
    m, C = repaint_law(oracle, d, KEEP, x, 200, 10, 10)
    kl_repaint = gaussian_kl(m, C, mu, Sigma)
    kl_plain = gaussian_kl(*repaint_law(oracle, d, KEEP, x, 200, 10, 1), mu, Sigma)
    assert kl_repaint < 0.03
    assert ((m - mu).abs() / Sigma.diag().sqrt()).max() < 0.1
    assert kl_plain > 3 * kl_repaint


@pytest.mark.slow
def test_repaint_samples_the_gaussian_conditional(gaussian_oracle):
    """Monte Carlo with the implementation itself: 3000 completions of one 8-dim Gaussian "image" (1, 2, 4)
    whose odd coordinates are missing (T = 100, j = 10, r = 10). Their mean and covariance match (a) the exact
    law of the algorithm to Monte Carlo precision and (b) the closed-form conditional p(x_a | x_b) within
    RePaint's approximation (KL < 0.08 nats; 0.03-0.06 exactly, see the test above)."""
    oracle, d, mean, cov = gaussian_oracle
    x = _observed(mean, cov).float()
    N = 3000
    mask = KEEP.float().view(1, 1, 2, 4)
    res = repaint(oracle, x.view(1, 1, 2, 4).expand(N, 1, 2, 4), mask, d, generator=torch.Generator().manual_seed(0),
                  steps=100, jump_length=10, resample=10)
    flat = res.sample.reshape(N, 8).double()
    assert torch.equal(flat[:, KEEP], x[KEEP].double().expand(N, 4))
    a = flat[:, ~KEEP]
    m_hat, C_hat = a.mean(0), torch.cov(a.T)
    m_alg, C_alg = repaint_law(oracle, d, KEEP, x.double(), 100, 10, 10)
    sd = C_alg.diag().sqrt()
    # (a) the implementation samples the algorithm's law: 4 standard errors
    assert ((m_hat - m_alg).abs() / sd).max() < 4 / N**0.5
    assert ((C_hat - C_alg).abs() / (sd[:, None] * sd[None])).max() < 4 * (2 / N) ** 0.5
    # (b) ... which is the exact conditional up to RePaint's approximation
    mu, Sigma = gaussian_conditional(mean, cov, KEEP, x.double())
    assert gaussian_kl(m_hat, C_hat, mu, Sigma) < 0.08
    assert ((m_hat - mu).abs() / Sigma.diag().sqrt()).max() < 0.15


# --------------------------------------------------------------------------------------------------
# baselines
# --------------------------------------------------------------------------------------------------
def test_harmonic_fill_reproduces_harmonic_images():
    """A linear ramp is discrete-harmonic: filling any hole inside it from its boundary gives it back."""
    ii, jj = torch.meshgrid(torch.arange(12.0), torch.arange(12.0), indexing="ij")
    ramp = ((0.1 * ii - 0.05 * jj) - 0.3)[None, None].repeat(2, 3, 1, 1)
    mask = make_mask("center", (12, 12), 2, box_size=6)
    filled = harmonic_fill(torch.where(mask.bool(), ramp, torch.zeros_like(ramp)), mask, tol=1e-9)
    assert torch.allclose(filled, ramp, atol=1e-6)


def test_harmonic_fill_is_a_smooth_interpolant():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 1, 16, 16, generator=g) * 2 - 1
    mask = make_mask("random-pixels", (16, 16), 3, generator=g, missing_fraction=0.5)
    keep = mask.bool()
    u = harmonic_fill(x, mask, tol=1e-9)
    assert torch.equal(u[keep], x[keep])
    lap = torch.nn.functional.conv2d(torch.nn.functional.pad(u, (1, 1, 1, 1), mode="replicate"),
                                     torch.tensor([[[[0, 0.25, 0], [0.25, -1, 0.25], [0, 0.25, 0]]]]))
    assert lap[~keep].abs().max() < 1e-6  # discrete Laplace equation in the hole
    assert u.min() >= x[keep].min() - 1e-6 and u.max() <= x[keep].max() + 1e-6  # maximum principle
    with pytest.raises(ValueError, match="no known pixels"):
        harmonic_fill(x, torch.zeros_like(mask))


def test_mean_fill():
    x = torch.rand(2, 1, 4, 4)
    mask = make_mask("left-half", (4, 4), 2)
    mean = torch.full((1, 4, 4), 0.25)
    out = mean_fill(x, mask, mean)
    assert torch.equal(out[..., 2:], x[..., 2:]) and bool((out[..., :2] == 0.25).all())
    with pytest.raises(ValueError, match="shape of one image"):
        mean_fill(x, mask, torch.zeros(3))
