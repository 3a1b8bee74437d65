"""The VDM bound on Gaussian data with the exact denoiser (issue 16, tests 1 and 2), the decoders, the times."""

import math

import pytest
import torch

from elbolab.diffusion.elbo import ELBOTerms
from elbolab.vdm import FixedLinearSchedule, LearnedMonotoneSchedule, VDMModel, elbo_terms, loss_terms
from elbolab.vdm.elbo import decoder_log_probs, discretise_times, low_discrepancy_times, prior_kl, reconstruction_nll
from elbolab.vdm.oracles import (
    GaussianDataDenoiser,
    gaussian_entropy,
    gaussian_gap,
    gaussian_l_inf,
    gaussian_l_t,
    gaussian_prior,
    gaussian_reconstruction,
)

D, S2 = 4, 0.3
MU = torch.tensor([0.5, -0.2, 0.1, 0.0], dtype=torch.float64)
REF = (-6.0, 6.0)  # the network-time reference range of every model below


def oracle_model(schedule) -> VDMModel:
    return VDMModel(GaussianDataDenoiser(MU, S2, REF), schedule.double(), gamma_range=REF).double()


def gaussian_data(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return MU + math.sqrt(S2) * torch.randn(n, D, generator=g, dtype=torch.float64)


def mean_se(v: torch.Tensor) -> tuple[float, float]:
    return float(v.mean()), float(v.std() / math.sqrt(v.numel()))


def shaped_schedule(g0: float, g1: float, seed: int = 3) -> LearnedMonotoneSchedule:
    """A learned schedule with a strongly non-linear shape: most of its rise is a sigmoid step near t = 0.15."""
    s = LearnedMonotoneSchedule(g0, g1, hidden=64)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        s.w1.fill_(0.5)
        s.w2.copy_(8.0 + torch.rand(64, generator=g))
        s.b2.copy_(5.6 + torch.rand(64, generator=g))
        s.w3.copy_(30.0 * torch.randn(64, generator=g))
    return s


# ---------------------------------------------------------------- test 1: closed forms on Gaussian data
@pytest.mark.parametrize("T", [0, 10])
def test_gaussian_terms_match_closed_forms(T):
    g0, g1 = REF
    sched = FixedLinearSchedule(g0, g1)
    m = oracle_model(sched)
    x = gaussian_data(100_000, seed=1)
    with torch.no_grad():
        terms = loss_terms(m, x, None, torch.Generator().manual_seed(2), T=T, decoder="gaussian",
                           time_sampling="uniform")
    grid = torch.arange(T + 1, dtype=torch.float64) / max(T, 1)
    expected = gaussian_l_inf(D, S2, g0, g1) if T == 0 else gaussian_l_t(D, S2, sched.double()(grid))
    for name, value in [("denoising", expected), ("reconstruction", gaussian_reconstruction(D, g0)),
                        ("prior", gaussian_prior(MU, S2, g1))]:
        m_, se = mean_se(getattr(terms, name))
        assert abs(m_ - value) < 4 * se + 1e-9, (name, m_, value, se)


def test_l_t_decreases_to_l_inf_as_t_doubles():
    g0, g1 = REF
    for sched in (FixedLinearSchedule(g0, g1).double(), shaped_schedule(g0, g1).double()):
        l_inf = gaussian_l_inf(D, S2, g0, g1)
        with torch.no_grad():
            values = [gaussian_l_t(D, S2, sched(torch.arange(T + 1, dtype=torch.float64) / T))
                      for T in (1, 2, 4, 8, 16, 32, 64, 128, 256, 1024, 8192, 65536)]
        assert all(a > b for a, b in zip(values, values[1:])), values  # more steps: a tighter bound
        assert all(v > l_inf for v in values)
        assert values[-1] - l_inf < 2e-3 * l_inf
        # first-order convergence: the excess L_T - L_inf falls like 1/T
        excess = [v - l_inf for v in values[-2:]]
        assert 7.0 < excess[0] / excess[1] < 9.0


def test_bound_gap_to_exact_likelihood_is_the_endpoint_terms():
    x = gaussian_data(100_000, seed=4)
    g0, g1 = REF
    m = oracle_model(FixedLinearSchedule(g0, g1))
    with torch.no_grad():
        terms = loss_terms(m, x, None, torch.Generator().manual_seed(5), decoder="gaussian", time_sampling="uniform")
    entropy = gaussian_entropy(D, S2)  # E[-log q(x)]: the exact negative log-likelihood of the data
    m_, se = mean_se(terms.total)
    gap = gaussian_gap(MU, S2, g0, g1)
    assert gap > 0 and m_ > entropy
    assert abs((m_ - entropy) - gap) < 4 * se
    # the closed-form pieces add up to that gap ...
    total = gaussian_reconstruction(D, g0) + gaussian_prior(MU, S2, g1) + gaussian_l_inf(D, S2, g0, g1)
    assert total - entropy == pytest.approx(gap, rel=1e-10, abs=1e-12)
    # ... which vanishes as the endpoints widen (the bound becomes tight)
    gaps = [gaussian_gap(MU, S2, -w, w) for w in (4.0, 8.0, 12.0, 16.0)]
    assert all(a > b for a, b in zip(gaps, gaps[1:])) and gaps[-1] < 1e-5


# ---------------------------------------------------------------- test 2: invariance to the shape
def test_l_inf_invariant_to_shape_not_to_endpoints():
    g0, g1 = REF
    x = gaussian_data(60_000, seed=6)
    lin, shaped = FixedLinearSchedule(g0, g1).double(), shaped_schedule(g0, g1).double()
    t = torch.linspace(0, 1, 201, dtype=torch.float64)
    with torch.no_grad():
        assert (lin(t) - shaped(t)).abs().max() > 2.0  # really a different schedule
    results = []
    for sched in (lin, shaped, FixedLinearSchedule(-4.0, g1), shaped_schedule(-4.0, g1)):
        with torch.no_grad():
            terms = loss_terms(oracle_model(sched), x, None, torch.Generator().manual_seed(7), decoder="gaussian",
                               time_sampling="uniform")
        results.append(mean_se(terms.denoising))
    (a, sa), (b, sb), (c, sc), (d, sd) = results
    assert abs(a - b) < 4 * math.hypot(sa, sb)  # same endpoints: same L_inf
    assert abs(c - d) < 4 * math.hypot(sc, sd)
    assert abs(a - c) > 10 * math.hypot(sa, sc)  # different gamma_0: different L_inf
    assert abs(a - gaussian_l_inf(D, S2, g0, g1)) < 4 * sa
    assert abs(c - gaussian_l_inf(D, S2, -4.0, g1)) < 4 * sc


# ---------------------------------------------------------------- pieces
def test_low_discrepancy_times():
    g = torch.Generator().manual_seed(0)
    t = low_discrepancy_times(8, g)
    assert t.shape == (8,) and ((t >= 0) & (t < 1)).all()
    gaps = torch.sort(t).values.diff()
    assert torch.allclose(gaps, torch.full_like(gaps, 1 / 8), atol=1e-6)  # one point in each 1/B interval
    assert not torch.equal(t, low_discrepancy_times(8, g))  # a fresh u per batch
    # each t_i is U(0, 1): the mean over batches of t_0 is 1/2
    t0 = torch.stack([low_discrepancy_times(4, g)[0] for _ in range(4000)])
    assert abs(float(t0.mean()) - 0.5) < 4 * (1 / math.sqrt(12 * 4000))


def test_discretise_times():
    t = torch.tensor([0.0, 1e-9, 0.1, 0.1000001, 0.99, 1.0], dtype=torch.float64)
    assert torch.allclose(discretise_times(t, 10), torch.tensor([0.1, 0.1, 0.1, 0.2, 1.0, 1.0], dtype=torch.float64))


def test_softmax_decoder_golden():
    """The decoder's log-probabilities against a direct per-value computation, and its limits."""
    g0 = torch.tensor(-3.0)
    z = torch.tensor([[0.31, -0.7]])
    logp = decoder_log_probs(z, g0)
    assert logp.shape == (1, 2, 256)
    assert torch.allclose(logp.exp().sum(-1), torch.ones(1, 2), atol=1e-5)
    a0 = math.sqrt(1 / (1 + math.exp(-3.0)))
    for j, zj in enumerate([0.31, -0.7]):
        logits = [-(zj / a0 - (2 * k / 255 - 1)) ** 2 / (2 * math.exp(-3.0)) for k in range(256)]
        lse = max(logits) + math.log(sum(math.exp(v - max(logits)) for v in logits))
        for k in (0, 85, 140, 255):
            assert logp[0, j, k].item() == pytest.approx(logits[k] - lse, abs=1e-4)
    x = torch.tensor([[2 * 170 / 255 - 1, -1.0]])
    # sharp decoders: at gamma_0 = -13.3 the noise sigma_0/alpha_0 = 1.3e-3 is a third of a half-bin (1/255),
    # so z_0 = alpha_0 x + sigma_0 eps reconstructs 8-bit x nearly always; sharper is better
    eps = torch.randn(4000, 2, generator=torch.Generator().manual_seed(0))
    means = []
    for gv in (-11.0, -13.3, -16.0):
        g = torch.tensor(gv)
        a, s = math.sqrt(torch.sigmoid(-g)), math.sqrt(torch.sigmoid(g))
        means.append(float(reconstruction_nll(x.expand(4000, 2), a * x + s * eps, g).mean()))
    assert means[0] > means[1] > means[2] and means[1] < 0.05 and means[2] < 1e-4
    # a very noisy z_0 at gamma_0 = +10 gives ~ log 256 per dim
    assert reconstruction_nll(x, torch.zeros(1, 2), torch.tensor(10.0)).item() == pytest.approx(2 * math.log(256),
                                                                                                rel=1e-2)


def test_prior_kl_closed_form():
    x = torch.tensor([[0.3, -1.0, 0.0]], dtype=torch.float64)
    g1 = torch.tensor(2.0, dtype=torch.float64)
    a2, s2 = 1 / (1 + math.exp(2.0)), 1 / (1 + math.exp(-2.0))
    expected = sum(0.5 * (a2 * v**2 + s2 - math.log(s2) - 1) for v in (0.3, -1.0, 0.0))
    assert prior_kl(x, g1).item() == pytest.approx(expected, rel=1e-12)


def test_elbo_terms_report_in_bits_per_dim():
    m = oracle_model(FixedLinearSchedule(*REF))
    x = gaussian_data(3000, seed=8)
    rep = elbo_terms(m, x, generator=torch.Generator().manual_seed(9), decoder="gaussian", t_samples=2,
                     max_batch=1000)
    assert isinstance(rep, ELBOTerms) and rep.per_image.total.shape == (3000,) and rep.t_samples == 2
    to_bpd = 1 / (D * math.log(2))
    assert abs(rep.denoising - gaussian_l_inf(D, S2, *REF) * to_bpd) < 4 * rep.denoising_stderr
    assert rep.total == pytest.approx(rep.reconstruction + rep.prior + rep.denoising, rel=1e-9)
    with pytest.raises(ValueError, match="t_samples"):
        elbo_terms(m, x, generator=torch.Generator(), t_samples=0)


def test_loss_terms_replayable_and_checked():
    m = oracle_model(FixedLinearSchedule(*REF))
    x = gaussian_data(16, seed=0)
    a = loss_terms(m, x, None, torch.Generator().manual_seed(3), decoder="gaussian")
    b = loss_terms(m, x, None, torch.Generator().manual_seed(3), decoder="gaussian")
    assert torch.equal(a.total, b.total)
    with pytest.raises(ValueError, match="vdm decoder"):
        loss_terms(m, x, None, torch.Generator(), decoder="bernoulli")
    with pytest.raises(ValueError, match="T = -1"):
        loss_terms(m, x, None, torch.Generator(), T=-1)


@pytest.mark.parametrize("g0", [-13.3, -9.0, -5.0, 0.0, 4.0])
def test_windowed_softmax_decoder_equals_full_softmax(g0):
    """The reconstruction term sums the normaliser over a window of bins; it must equal the full 256-way
    log-softmax gathered at x, in value and in its gradients (z_0 and gamma_0), also for z_0 off the grid."""
    from elbolab.vdm.elbo import _softmax_log_prob_at

    gen = torch.Generator().manual_seed(3)
    x = torch.randint(0, 256, (4, 1, 6, 6), generator=gen).double() * 2 / 255 - 1
    z = (x + 0.02 * torch.randn(x.shape, generator=gen, dtype=torch.float64)) * 0.999
    z[0, 0, 0, :3] = torch.tensor([-1.7, 1.4, 0.0])  # beyond the grid and between bins
    outs = []
    for windowed in (True, False):
        zz = z.clone().requires_grad_(True)
        gg = torch.tensor(g0, dtype=torch.float64, requires_grad=True)
        if windowed:
            lp = _softmax_log_prob_at(x, zz, gg, 256)
        else:
            k = torch.round((x + 1) * 255 / 2).long()
            lp = torch.gather(decoder_log_probs(zz, gg), -1, k[..., None]).squeeze(-1)
        lp.sum().backward()
        outs.append((lp.detach(), zz.grad, gg.grad))
    for a, b in zip(outs[0], outs[1]):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)
