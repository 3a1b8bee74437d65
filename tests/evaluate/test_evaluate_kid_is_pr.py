"""KID (unbiased MMD^2), the Inception-Score analogue, classifier confidence and improved precision/recall on
synthetic features with exact or brute-force oracles."""

import itertools
import math

import numpy as np
import pytest
import torch

from elbolab.evaluate.inception_score import confident_fraction, inception_score
from elbolab.evaluate.kid import kid_from_features, mmd2_unbiased, polynomial_kernel
from elbolab.evaluate.precision_recall import knn_radii, pairwise_sq_distances, precision_recall


# ---------------------------------------------------------------- KID
def brute_force_mmd2(x, y):
    d = x.shape[1]
    k = lambda a, b: (float(a @ b) / d + 1.0) ** 3  # noqa: E731
    m, n = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i, j in itertools.permutations(range(m), 2)) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i, j in itertools.permutations(range(n), 2)) / (n * (n - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return xx + yy - 2 * xy


def test_mmd2_matches_brute_force_double_sum():
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((7, 5)), rng.standard_normal((9, 5)) + 0.3
    assert mmd2_unbiased(torch.from_numpy(x), torch.from_numpy(y)) == pytest.approx(brute_force_mmd2(x, y), rel=1e-12)


def test_polynomial_kernel_definition():
    x, y = torch.tensor([[1.0, 2.0]]), torch.tensor([[3.0, -1.0]])
    assert polynomial_kernel(x, y).item() == pytest.approx(((1 * 3 - 2 * 1) / 2 + 1) ** 3)


def test_mmd2_estimator_is_unbiased_where_the_v_statistic_is_not():
    # Many independent pairs of small samples from the same distribution: the unbiased estimator averages to 0
    # within its standard error; keeping the diagonal (the biased V-statistic) gives a clearly positive mean.
    gen = torch.Generator().manual_seed(0)
    m, d, reps = 20, 4, 400
    unbiased, biased = [], []
    for _ in range(reps):
        x, y = torch.randn(m, d, generator=gen), torch.randn(m, d, generator=gen)
        unbiased.append(mmd2_unbiased(x, y))
        kxx, kyy, kxy = polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y)
        biased.append(float(kxx.mean() + kyy.mean() - 2 * kxy.mean()))
    u = np.array(unbiased)
    se = u.std(ddof=1) / math.sqrt(reps)
    assert abs(u.mean()) < 3 * se
    assert np.mean(biased) > 10 * se


def test_kid_near_zero_within_stderr_for_same_distribution_and_positive_otherwise():
    gen = torch.Generator().manual_seed(1)
    a, b = torch.randn(1000, 16, generator=gen), torch.randn(1000, 16, generator=gen)
    same = kid_from_features(a, b, subset_size=200, num_subsets=20, generator=torch.Generator().manual_seed(0))
    assert same.stderr > 0 and same.std > 0
    assert abs(same.mean) < 3 * same.stderr
    shifted = kid_from_features(a, b + 0.3, subset_size=200, num_subsets=20)
    assert shifted.mean > 10 * shifted.stderr
    assert (shifted.subset_size, shifted.num_subsets) == (200, 20)


def test_kid_caps_subset_size_and_rejects_bad_arguments():
    a = torch.randn(30, 4)
    assert kid_from_features(a, a + 1, subset_size=1000, num_subsets=3).subset_size == 30
    with pytest.raises(ValueError, match="num_subsets"):
        kid_from_features(a, a, num_subsets=1)
    with pytest.raises(ValueError, match="feature dimensions differ"):
        kid_from_features(a, torch.randn(30, 5))


# ---------------------------------------------------------------- IS and confidence
def test_inception_score_of_confident_balanced_predictions_is_num_classes():
    k = 10
    probs = torch.eye(k).repeat(50, 1)  # 500 one-hot predictions, 50 per class, each split balanced
    res = inception_score(probs, splits=5)
    assert res.mean == pytest.approx(k, rel=1e-12) and res.std == pytest.approx(0.0, abs=1e-12)


def test_inception_score_of_identical_predictions_is_one():
    p = torch.softmax(torch.randn(1, 10), 1).repeat(200, 1)
    assert inception_score(p, splits=10).mean == pytest.approx(1.0, abs=1e-12)


def test_inception_score_matches_direct_formula():
    gen = torch.Generator().manual_seed(2)
    p = torch.softmax(3 * torch.randn(100, 10, generator=gen), 1).double()
    res = inception_score(p, splits=1)
    py = p.mean(0, keepdim=True)
    expected = math.exp(float((p * (p.log() - py.log())).sum(1).mean()))
    assert res.mean == pytest.approx(expected, rel=1e-12)


def test_confident_fraction_counts_rows_over_threshold():
    p = torch.tensor([[0.95, 0.05], [0.5, 0.5], [0.1, 0.9], [0.2, 0.8]], dtype=torch.float64)
    res = confident_fraction(p, 0.9)
    assert res.fraction == 0.5 and res.class_counts == [2, 2] and res.n == 4
    with pytest.raises(ValueError, match="threshold"):
        confident_fraction(p, 0.0)
    with pytest.raises(ValueError, match="softmax"):
        inception_score(torch.ones(4, 3))


# ---------------------------------------------------------------- precision / recall
def brute_force_pr(real, gen, k):
    def radii(s):
        return [sorted(np.linalg.norm(s - s[i], axis=1))[k] for i in range(len(s))]  # index 0 is the point itself

    def covered(queries, support, r):
        return np.mean([any(np.linalg.norm(q - support[j]) <= r[j] for j in range(len(support))) for q in queries])

    return covered(gen, real, radii(real)), covered(real, gen, radii(gen))


def test_precision_recall_match_brute_force_and_do_not_depend_on_batching():
    rng = np.random.default_rng(3)
    real, gen = rng.standard_normal((60, 3)), rng.standard_normal((50, 3)) * 1.5 + 0.5
    p, r = brute_force_pr(real, gen, 3)
    for bs in (7, 1000):
        res = precision_recall(real, gen, k=3, batch_size=bs)
        assert (res.precision, res.recall) == (pytest.approx(p), pytest.approx(r))


def test_knn_radii_and_distances():
    x = torch.tensor([[0.0], [1.0], [3.0], [7.0]])
    np.testing.assert_allclose(pairwise_sq_distances(x, x)[0].numpy(), [0, 1, 9, 49])
    np.testing.assert_allclose(knn_radii(x, k=1).numpy(), [1, 1, 4, 16])
    with pytest.raises(ValueError, match="k = 4"):
        knn_radii(x, k=4)


def test_precision_recall_detect_mode_dropping_and_off_manifold_samples():
    gen = torch.Generator().manual_seed(4)
    centres = torch.eye(8) * 10.0  # 8 well separated modes
    def mixture(n, modes):
        idx = torch.tensor(modes)[torch.randint(len(modes), (n,), generator=gen)]
        return centres[idx] + torch.randn(n, 8, generator=gen)
    real = mixture(1000, list(range(8)))
    full = precision_recall(real, mixture(1000, list(range(8))))
    # k = 3 balls of an 8-d Gaussian cover ~87% of fresh samples of the same distribution
    assert full.precision > 0.8 and full.recall > 0.8
    dropped = precision_recall(real, mixture(1000, list(range(4))))  # half the modes missing
    assert dropped.precision > 0.8 and dropped.recall < 0.6
    noisy = precision_recall(real, mixture(1000, list(range(8))) + 2.0 * torch.randn(1000, 8, generator=gen))
    assert noisy.precision < 0.5
