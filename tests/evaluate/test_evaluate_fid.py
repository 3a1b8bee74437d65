"""FID: closed forms for Gaussians, an exact matrix square root (also near-singular), agreement with the
formulas of independent implementations, and streaming statistics equal to one-shot statistics."""

import numpy as np
import pytest
import torch

from elbolab.evaluate.fid import (FeatureStats, StatsAccumulator, feature_stats, fid_from_features,
                                  frechet_distance, sqrtm_psd, trace_sqrt_product)


def random_orthogonal(d, rng):
    q, r = np.linalg.qr(rng.standard_normal((d, d)))
    return q * np.sign(np.diag(r))


def random_spd(d, rng, cond=10.0):
    q = random_orthogonal(d, rng)
    return (q * np.geomspace(1.0, 1.0 / cond, d)) @ q.T


def commuting_pair(d, rng, a, b):
    q = random_orthogonal(d, rng)
    return (q * a) @ q.T, (q * b) @ q.T


def closed_form_commuting(mu1, mu2, a, b):
    # S1 = Q diag(a) Q^T, S2 = Q diag(b) Q^T commute: Tr(S1) + Tr(S2) - 2 Tr(sqrt(S1 S2)) = sum (sqrt a - sqrt b)^2
    return float(np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2))


def fid_denman_beavers(mu1, s1, mu2, s2, iters=60):
    """pytorch-fid's formula Tr sqrtm(S1 S2), with the square root of the non-symmetric product taken by the
    Denman-Beavers iteration Y <- (Y + Z^-1)/2, Z <- (Z + Y^-1)/2 (Y -> A^1/2) instead of scipy's Schur method."""
    y, z = s1 @ s2, np.eye(s1.shape[0])
    for _ in range(iters):
        y, z = 0.5 * (y + np.linalg.inv(z)), 0.5 * (z + np.linalg.inv(y))
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(y))


def test_sqrtm_psd_squares_back_and_clips_roundoff():
    rng = np.random.default_rng(0)
    a = random_spd(20, rng, cond=1e6)
    r = sqrtm_psd(a)
    np.testing.assert_allclose(r @ r, a, atol=1e-12)
    np.testing.assert_allclose(r, r.T, atol=0)
    # rank-deficient PSD matrix: eigh returns tiny negative eigenvalues; the root stays real and exact
    x = rng.standard_normal((5, 20))
    singular = x.T @ x
    assert abs(np.linalg.eigvalsh(singular)).min() < 1e-12  # rank 5: round-off eigenvalues of either sign
    r = sqrtm_psd(singular)
    assert np.all(np.isfinite(r))
    np.testing.assert_allclose(r @ r, singular, atol=1e-10)


def test_fid_equals_closed_form_for_commuting_gaussians():
    rng = np.random.default_rng(1)
    d = 32
    a, b = rng.uniform(0.1, 3.0, d), rng.uniform(0.1, 3.0, d)
    s1, s2 = commuting_pair(d, rng, a, b)
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    res = frechet_distance(FeatureStats(mu1, s1, 100), FeatureStats(mu2, s2, 100))
    expected = closed_form_commuting(mu1, mu2, a, b)
    assert res.fid == pytest.approx(expected, rel=1e-10)
    assert res.mean_term == pytest.approx(float(np.sum((mu1 - mu2) ** 2)), rel=1e-12)


def test_fid_exact_for_near_singular_and_singular_covariances():
    rng = np.random.default_rng(2)
    d = 64
    # eigenvalues spanning 1 .. 1e-14 and exact zeros: no eps*I offset needed, no imaginary part
    a = np.concatenate([np.geomspace(1.0, 1e-14, 48), np.zeros(16)])
    b = np.concatenate([np.zeros(8), np.geomspace(2.0, 1e-12, 56)])
    s1, s2 = commuting_pair(d, rng, a, b)
    mu = np.zeros(d)
    res = frechet_distance(FeatureStats(mu, s1, 10), FeatureStats(mu, s2, 10))
    expected = closed_form_commuting(mu, mu, a, b)
    assert np.isfinite(res.fid)
    # sqrt is not Lipschitz at 0: a zero eigenvalue perturbed by round-off eps*||S|| ~ 1e-16 moves its root by
    # ~1e-8, so d * sqrt(eps * ||S||) ~ 1e-6 is the attainable accuracy of any float64 method here
    assert res.fid == pytest.approx(expected, abs=64 * np.sqrt(np.finfo(float).eps * 2.0))


def test_fid_of_identical_statistics_is_zero_even_when_singular():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((10, 40))  # 10 samples in 40-d: covariance of rank 9
    s = feature_stats(x)
    res = frechet_distance(s, s)
    assert 0.0 <= res.fid < 1e-9 * np.trace(s.sigma)


def test_trace_sqrt_product_is_symmetric_in_its_arguments():
    rng = np.random.default_rng(4)
    s1, s2 = random_spd(16, rng, 1e3), random_spd(16, rng, 1e2)
    assert trace_sqrt_product(s1, s2) == pytest.approx(trace_sqrt_product(s2, s1), rel=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fid_agrees_with_independent_formulas_on_random_gaussians(seed, independent_fid):
    rng = np.random.default_rng(seed)
    d = 24
    s1, s2 = random_spd(d, rng, 100.0), random_spd(d, rng, 1000.0)
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d) * 0.1
    ours = frechet_distance(FeatureStats(mu1, s1, 2), FeatureStats(mu2, s2, 2)).fid
    assert ours == pytest.approx(independent_fid(mu1, s1, mu2, s2), rel=1e-4)
    assert ours == pytest.approx(fid_denman_beavers(mu1, s1, mu2, s2), rel=1e-4)


def test_fid_of_gaussian_samples_approaches_the_population_value():
    rng = np.random.default_rng(5)
    d = 8
    a, b = rng.uniform(0.5, 2.0, d), rng.uniform(0.5, 2.0, d)
    s1, s2 = commuting_pair(d, rng, a, b)
    mu1, mu2 = np.zeros(d), np.full(d, 0.5)
    x1 = rng.multivariate_normal(mu1, s1, 100_000)
    x2 = rng.multivariate_normal(mu2, s2, 100_000)
    res = fid_from_features(torch.from_numpy(x1), x2)
    assert res.fid == pytest.approx(closed_form_commuting(mu1, mu2, a, b), rel=0.03)
    assert res.n_a == res.n_b == 100_000


def test_streaming_statistics_equal_one_shot():
    rng = np.random.default_rng(6)
    x = rng.standard_normal((1000, 16)) * 3.0 + 100.0  # large mean: the naive sum-of-squares would lose digits
    acc = StatsAccumulator()
    for lo, hi in [(0, 1), (1, 8), (8, 500), (500, 501), (501, 1000)]:
        acc.update(x[lo:hi])
    s = acc.stats()
    np.testing.assert_allclose(s.mu, x.mean(0), rtol=1e-13)
    np.testing.assert_allclose(s.sigma, np.cov(x, rowvar=False), rtol=1e-10, atol=1e-12)
    assert s.n == 1000


def test_bad_inputs_are_clear_errors():
    with pytest.raises(ValueError, match="feature dimensions differ"):
        frechet_distance(FeatureStats(np.zeros(2), np.eye(2), 2), FeatureStats(np.zeros(3), np.eye(3), 2))
    with pytest.raises(ValueError, match="at least 2"):
        feature_stats(np.zeros((1, 4)))
    with pytest.raises(ValueError, match=r"expected \(N, D\)"):
        feature_stats(np.zeros(4))
    with pytest.raises(ValueError, match=r"expected \(D,\) and \(D, D\)"):
        FeatureStats(np.zeros(3), np.eye(2), 5)
