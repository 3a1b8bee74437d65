"""elbolab.math: closed forms against Monte Carlo and exact references."""

import math

import pytest
import torch

from elbolab.math import (
    append_dims,
    approx_standard_normal_cdf,
    discretized_gaussian_log_likelihood,
    energy_distance,
    gaussian_log_likelihood,
    mean_and_stderr,
    mean_flat,
    nats_to_bpd,
    normal_kl,
    num_dims,
    slerp,
    standard_normal_cdf,
    sum_flat,
)


def test_append_dims_and_flat_reductions():
    t = torch.arange(3.0)
    assert append_dims(t, 4).shape == (3, 1, 1, 1)
    assert append_dims(t, 1) is not None and append_dims(t, 1).shape == (3,)
    with pytest.raises(ValueError, match="more than target_ndim"):
        append_dims(torch.zeros(2, 2), 1)
    x = torch.arange(24.0).reshape(2, 3, 4)
    assert num_dims(x) == 12
    torch.testing.assert_close(sum_flat(x), x.reshape(2, -1).sum(1))
    torch.testing.assert_close(mean_flat(x), x.reshape(2, -1).mean(1))


def test_normal_kl_matches_monte_carlo():
    g = torch.Generator().manual_seed(0)
    m1, lv1, m2, lv2 = 0.3, math.log(0.5), -0.4, math.log(2.0)
    n = 400_000
    x = m1 + math.exp(0.5 * lv1) * torch.randn(n, generator=g, dtype=torch.float64)
    lv = lambda v: torch.full_like(x, v)  # noqa: E731
    log_ratio = gaussian_log_likelihood(x, torch.full_like(x, m1), lv(lv1)) - gaussian_log_likelihood(
        x, torch.full_like(x, m2), lv(lv2)
    )
    mc = mean_and_stderr(log_ratio)
    kl = float(normal_kl(torch.tensor(m1), torch.tensor(lv1), torch.tensor(m2), torch.tensor(lv2)))
    assert abs(mc.mean - kl) < 4 * mc.stderr
    assert kl > 0
    assert float(normal_kl(torch.tensor(1.0), torch.tensor(0.2), torch.tensor(1.0), torch.tensor(0.2))) == 0.0


def test_gaussian_log_likelihood_matches_torch_distributions():
    x, mu, lv = torch.randn(10), torch.randn(10), torch.randn(10)
    ref = torch.distributions.Normal(mu, torch.exp(0.5 * lv)).log_prob(x)
    torch.testing.assert_close(gaussian_log_likelihood(x, mu, lv), ref)


def test_standard_normal_cdf_exact_and_approximation():
    x = torch.linspace(-6, 6, 101, dtype=torch.float64)
    exact = 0.5 * (1 + torch.erf(x / math.sqrt(2)))
    torch.testing.assert_close(standard_normal_cdf(x), exact)
    assert float((approx_standard_normal_cdf(x) - exact).abs().max()) < 1e-3


GRID = torch.linspace(-1, 1, 256, dtype=torch.float64)


@pytest.mark.parametrize("mean,log_var", [(0.0, math.log(0.1)), (0.9, math.log(1e-6)), (-1.3, math.log(4.0)),
                                          (0.37, math.log(1e-9)), (5.0, math.log(1e-4))])
def test_discretized_likelihood_is_a_distribution_over_the_256_bins(mean, log_var):
    lp = discretized_gaussian_log_likelihood(GRID, torch.full_like(GRID, mean), torch.full_like(GRID, log_var))
    assert torch.isfinite(lp).all()
    assert float(torch.logsumexp(lp, 0).exp()) == pytest.approx(1.0, abs=1e-9)


def test_discretized_likelihood_matches_cdf_differences_and_is_symmetric():
    mean, std = torch.tensor(0.1, dtype=torch.float64), 0.3
    log_var = torch.full((256,), 2 * math.log(std), dtype=torch.float64)
    lp = discretized_gaussian_log_likelihood(GRID, mean.expand(256), log_var)
    h = 1 / 255
    cdf = lambda v: standard_normal_cdf((v - mean) / std)  # noqa: E731
    ref = cdf(GRID + h) - cdf(GRID - h)
    ref[0], ref[-1] = cdf(GRID[0] + h), 1 - cdf(GRID[-1] - h)
    torch.testing.assert_close(lp, torch.log(ref), rtol=1e-9, atol=1e-9)
    # reflection symmetry x -> -x, mean -> -mean exercises both tails of the stable formula
    lv = torch.full((256,), math.log(1e-5))
    far = discretized_gaussian_log_likelihood(GRID, torch.full((256,), 0.8), lv)
    mirrored = discretized_gaussian_log_likelihood(-GRID, torch.full((256,), -0.8), lv)
    torch.testing.assert_close(far, mirrored, rtol=1e-12, atol=0.0)
    assert float(far.min()) < -1e4  # deep in the tail yet finite
    assert torch.isfinite(far).all()


def test_discretized_likelihood_has_finite_gradients_everywhere():
    x = GRID.clone().float()
    mean = torch.zeros(256, requires_grad=True)
    lv = torch.full((256,), math.log(1e-3), requires_grad=True)
    discretized_gaussian_log_likelihood(x, mean, lv).sum().backward()
    assert torch.isfinite(mean.grad).all() and torch.isfinite(lv.grad).all()


def test_discretized_likelihood_rejects_out_of_range_data():
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        discretized_gaussian_log_likelihood(torch.tensor([1.5]), torch.zeros(1), torch.zeros(1))
    with pytest.raises(ValueError, match="num_bins"):
        discretized_gaussian_log_likelihood(torch.zeros(1), torch.zeros(1), torch.zeros(1), num_bins=1)


def test_nats_to_bpd():
    assert nats_to_bpd(784 * math.log(2.0), 784) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="num_dims"):
        nats_to_bpd(1.0, 0)


def test_mean_and_stderr():
    v = torch.tensor([1.0, 2.0, 3.0, 6.0])
    m, se = mean_and_stderr(v)
    assert m == pytest.approx(3.0)
    assert se == pytest.approx(float(v.std()) / 2.0)
    assert math.isnan(mean_and_stderr(torch.tensor([1.0])).stderr)
    with pytest.raises(ValueError, match="empty"):
        mean_and_stderr(torch.tensor([]))


def test_energy_distance_detects_a_shift_and_not_a_resample():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(1500, 2, generator=g), torch.randn(1500, 2, generator=g)
    same = float(energy_distance(a, b))
    shifted = float(energy_distance(a, b + torch.tensor([0.5, 0.0])))
    assert abs(same) < 0.01
    assert shifted > 0.1
    with pytest.raises(ValueError, match="energy_distance"):
        energy_distance(a, torch.zeros(3, 3))


def test_slerp_keeps_norm_and_hits_the_ends():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(2, 64, generator=g, dtype=torch.float64)
    b = b * a.norm() / b.norm()
    path = slerp(a, b, torch.linspace(0, 1, 7, dtype=torch.float64))
    torch.testing.assert_close(path[0], a)
    torch.testing.assert_close(path[-1], b)
    torch.testing.assert_close(path.norm(dim=1), a.norm().expand(7))
