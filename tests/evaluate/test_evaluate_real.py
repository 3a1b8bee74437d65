"""The shipped feature networks on real data: hash check, accuracy, and the metrics' behaviour on real images
(FID small for test vs train, large for MNIST vs Fashion-MNIST, monotone in noise and blur; precision/recall
of real data high and falling for mode-dropped or noisy sets; IS near 10 for real digits, 1 for one image)."""

import json
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from elbolab.data.transforms import to_float, to_uint8
from elbolab.evaluate import (EvalSettings, Metric, WeightsHashError, classifier_confidence, evaluate_samples, extract_features,
                              feature_stats, fid_from_features, frechet_distance, inception_score,
                              kid_from_features, load_feature_network, load_reference, precision_recall)
from elbolab.evaluate.features import logits_to_probs, sha256_file, weights_paths
from elbolab.evaluate.train_features import accuracy

pytestmark = pytest.mark.slow


# ---------------------------------------------------------------- shipped weights
@pytest.mark.parametrize("dataset,threshold", [("mnist", 0.993), ("fashion-mnist", 0.91)])
def test_shipped_card_records_accuracy_and_hash(dataset, threshold):
    st_path, card_path = weights_paths(dataset)
    card = json.loads(card_path.read_text())
    assert card["test_accuracy"] >= threshold
    assert card["sha256"] == sha256_file(st_path)
    assert card["training_data"]["train_images"] == 60000 and card["training_data"]["test_images"] == 10000
    assert st_path.stat().st_size < 1_000_000
    net = load_feature_network(dataset)
    assert net.sha256 == card["sha256"] and net.feature_dim == 128 and net.num_classes == 10


def test_flipped_byte_in_weights_is_a_clear_error(tmp_path):
    st_path, card_path = weights_paths("mnist")
    for p in (st_path, card_path):
        shutil.copy(p, tmp_path / p.name)
    assert load_feature_network("mnist", tmp_path, use_cache=False).sha256 == sha256_file(st_path)
    data = bytearray((tmp_path / st_path.name).read_bytes())
    data[len(data) // 2] ^= 0x01
    (tmp_path / st_path.name).write_bytes(bytes(data))
    with pytest.raises(WeightsHashError, match="SHA-256 .* corrupted"):
        load_feature_network("mnist", tmp_path, use_cache=False)
    (tmp_path / st_path.name).unlink()
    with pytest.raises(FileNotFoundError, match="train_features --dataset mnist"):
        load_feature_network("mnist", tmp_path, use_cache=False)
    with pytest.raises(ValueError, match="no feature network for dataset 'cifar10'"):
        load_feature_network("cifar10")


def test_mnist_classifier_accuracy_from_shipped_weights(mnist_features, mnist_test):
    test_f, _ = mnist_features  # the first 2000 test images through the shipped, hash-checked weights
    acc = float((test_f.logits.argmax(1) == mnist_test[1].numpy()).mean())
    assert acc >= 0.99
    net = load_feature_network("mnist")
    assert accuracy(net.net, to_float(mnist_test[0][:500]), mnist_test[1][:500]) == pytest.approx(
        float((test_f.logits[:500].argmax(1) == mnist_test[1][:500].numpy()).mean()))


def test_fashion_classifier_accuracy_on_a_subset(fashion_test):
    net = load_feature_network("fashion-mnist")
    assert accuracy(net.net, to_float(fashion_test[0]), fashion_test[1]) >= 0.90


# ---------------------------------------------------------------- FID / KID on real data
def test_fid_small_for_test_vs_train_and_large_for_mnist_vs_fashion(mnist_features, mnist_net, fashion_test,
                                                                      independent_fid):
    test_f, train_f = mnist_features
    fid_real = frechet_distance(test_f.stats, train_f.stats).fid
    fashion_f = extract_features(mnist_net, fashion_test[0])
    fid_fashion = frechet_distance(fashion_f.stats, train_f.stats).fid
    assert fid_real < 2.0
    assert fid_fashion > 100 * fid_real
    # agreement with the independent eigvals formula on real features
    s1, s2 = fashion_f.stats, train_f.stats
    assert fid_fashion == pytest.approx(independent_fid(s1.mu, s1.sigma, s2.mu, s2.sigma), rel=1e-4)
    s1 = test_f.stats
    assert fid_real == pytest.approx(independent_fid(s1.mu, s1.sigma, s2.mu, s2.sigma), rel=1e-4)


def test_statistics_in_batches_equal_statistics_at_once(mnist_net, mnist_test):
    x = mnist_test[0][:300]
    a = extract_features(mnist_net, x, batch_size=300)
    b = extract_features(mnist_net, x, batch_size=77)
    np.testing.assert_allclose(b.features, a.features, rtol=1e-4, atol=1e-5)
    one_shot = feature_stats(b.features.astype(np.float64))
    np.testing.assert_allclose(b.stats.mu, a.stats.mu, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(b.stats.sigma, one_shot.sigma, rtol=1e-5, atol=1e-6)


def gaussian_blur(x, sigma):
    """x: (N, 1, H, W) in [-1, 1]; separable Gaussian blur with background (-1) padding."""
    r = int(np.ceil(3 * sigma))
    k = torch.exp(-torch.arange(-r, r + 1, dtype=torch.float32) ** 2 / (2 * sigma**2))
    k = k / k.sum()
    y = F.pad(x + 1, (r, r, r, r))
    y = F.conv2d(y, k.view(1, 1, 1, -1))
    y = F.conv2d(y, k.view(1, 1, -1, 1))
    return y - 1


@pytest.mark.parametrize("kind,levels", [("noise", [0.0, 0.1, 0.25, 0.5]), ("blur", [0.0, 0.7, 1.2, 2.0])])
def test_fid_and_kid_grow_monotonically_with_corruption(kind, levels, mnist_net, mnist_test, mnist_features):
    _, train_f = mnist_features
    x = to_float(mnist_test[0][:400])
    gen = torch.Generator().manual_seed(0)
    fids, kids = [], []
    for level in levels:
        if level == 0:
            y = x
        elif kind == "noise":
            y = (x + level * torch.randn(x.shape, generator=gen)).clamp(-1, 1)
        else:
            y = gaussian_blur(x, level)
        f = extract_features(mnist_net, to_uint8(y))
        fids.append(frechet_distance(f.stats, train_f.stats).fid)
        kids.append(kid_from_features(f.features, train_f.features, subset_size=300, num_subsets=20).mean)
    assert all(a < b for a, b in zip(fids, fids[1:])), fids
    assert all(a < b for a, b in zip(kids, kids[1:])), kids


def test_kid_of_two_real_sets_is_zero_within_its_standard_error(mnist_features):
    test_f, train_f = mnist_features
    res = kid_from_features(test_f.features, train_f.features, subset_size=500, num_subsets=20)
    assert abs(res.mean) < 3 * res.stderr


# ---------------------------------------------------------------- precision / recall, IS on real data
def test_precision_recall_real_high_and_drop_for_dropped_modes_and_noise(mnist_features, mnist_test, mnist_train,
                                                                         mnist_net):
    test_f, train_f = mnist_features
    real = train_f.features[:2000]
    full = precision_recall(real, test_f.features)
    assert full.precision > 0.7 and full.recall > 0.7
    labels = mnist_test[1].numpy()
    one_dropped = precision_recall(real, test_f.features[labels != 3])
    half_dropped = precision_recall(real, test_f.features[labels >= 5])
    assert half_dropped.recall < one_dropped.recall < full.recall - 0.03
    assert half_dropped.recall < 0.7 * full.recall
    x = to_float(mnist_test[0][:400])
    noise = 0.5 * torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    noisy = extract_features(mnist_net, to_uint8((x + noise).clamp(-1, 1)))
    assert precision_recall(real, noisy.features).precision < full.precision - 0.2


def test_inception_score_of_real_digits_near_ten_and_of_one_image_one(mnist_features, mnist_test, mnist_net):
    test_f, _ = mnist_features
    probs = logits_to_probs(torch.from_numpy(test_f.logits))
    assert inception_score(probs, splits=10).mean > 9.0
    one = extract_features(mnist_net, mnist_test[0][:1].repeat(200, 1, 1, 1))
    assert inception_score(logits_to_probs(torch.from_numpy(one.logits))).mean == pytest.approx(1.0, abs=1e-9)
    ones = test_f.logits[mnist_test[1].numpy() == 1]
    assert inception_score(logits_to_probs(torch.from_numpy(ones)), splits=2).mean < 1.5
    assert classifier_confidence(mnist_test[0][:300]).fraction > 0.95


# ---------------------------------------------------------------- entry point and reference cache
def test_evaluate_samples_end_to_end_with_cached_reference(tmp_path, monkeypatch, mnist_test, mnist_features,
                                                           shared_data):
    monkeypatch.setenv("ELBOLAB_CACHE", str(tmp_path))
    data_dir = str(shared_data / "mnist")
    ref = load_reference("mnist", "train", data_dir=data_dir, limit=1000, progress=False)
    files = list((tmp_path / "reference").glob("mnist-train-n1000-*.npz"))
    assert len(files) == 1 and ref.n == 1000 and ref.sha256 in str(np.load(files[0])["sha256"])
    again = load_reference("mnist", "train", data_dir=data_dir, limit=1000, progress=False)
    np.testing.assert_array_equal(again.data.features, ref.data.features)
    np.testing.assert_array_equal(again.data.stats.sigma, ref.data.stats.sigma)
    settings = EvalSettings(kid_subset_size=200, kid_subsets=10, is_splits=5)
    res = evaluate_samples(to_float(mnist_test[0][:500]), "mnist", "fid,kid,is,pr,conf", reference=ref,
                           settings=settings, progress=False)
    direct = fid_from_features(mnist_features[0].features[:500], ref.data.features)
    assert res.fid.fid == pytest.approx(direct.fid, rel=1e-4)
    assert res.inception.mean > 8.5 and res.confidence.fraction > 0.95 and res.pr.recall > 0.5
    assert res.n_samples == 500 and res.reference == "mnist/train" and res.n_reference == 1000
    assert set(Metric) - {Metric.BPD} == {Metric.FID, Metric.KID, Metric.IS, Metric.PR, Metric.CONF}


def test_evaluate_run_writes_metrics_json_and_reuses_samples(tmp_path, monkeypatch, mnist_test, shared_data):
    from elbolab.config import DataConfig, RunConfig, save_toml
    from elbolab.evaluate import evaluate_folder as evaluate_run

    monkeypatch.setenv("ELBOLAB_CACHE", str(tmp_path / "cache"))
    run = tmp_path / "run"
    save_toml(RunConfig(data=DataConfig(name="mnist", data_dir=str(shared_data / "mnist"))), run / "config.toml")
    real = to_float(mnist_test[0][:200])

    def sample_fn(b, g):  # a "model" that returns real test digits in a random order
        return real[torch.randint(0, 200, (b,), generator=g)]

    def bound_fn(x0, g):  # a fake bound: two per-image terms in bits/dim
        return {"reconstruction": x0.flatten(1).mean(1).double() + 2.0, "prior": torch.full((x0.shape[0],), 0.5)}

    res = evaluate_run(run, "fid,is,conf,bpd", n=200, sample_fn=sample_fn, bound_fn=bound_fn, bpd_n=64,
                       reference_limit=500, sample_batch_size=64, progress=False)
    saved = json.loads((run / "metrics.json").read_text())
    assert saved["fid"]["fid"] == pytest.approx(res.fid.fid) and saved["bpd"]["n"] == 64
    assert saved["bpd"]["terms"]["prior"] == pytest.approx(0.5) and saved["reference"] == "mnist/train"
    assert res.confidence.fraction > 0.9 and res.fid.fid < 20
    npz = run / "samples" / "eval_200.npz"
    again = evaluate_run(run, "fid,is", samples_path=npz, reference_limit=500, write=False, progress=False)
    assert again.fid.fid == pytest.approx(res.fid.fid, rel=1e-9) and again.inception.mean == pytest.approx(
        res.inception.mean, rel=1e-9)
    with pytest.raises(ValueError, match="samples_path"):
        evaluate_run(run, "fid", write=False)
