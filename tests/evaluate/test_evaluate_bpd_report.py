"""Bits/dim format, sample files, metric parsing and the report writers."""

import json

import numpy as np
import pytest
import torch

from elbolab.evaluate.bpd import BitsPerDim, BPDAccumulator, BPDMethod, diffusion_bound_fn, summarize_bpd
from elbolab.evaluate.fid import FIDResult
from elbolab.evaluate.kid import KIDResult
from elbolab.evaluate.pipeline import EvalResult, Metric, evaluate_samples, parse_metrics
from elbolab.evaluate.report import (QualityRow, format_eval_table, format_quality_table, result_to_dict,
                                     write_metrics_json)
from elbolab.evaluate.samples import generate_samples, load_samples_npz, save_samples_npz


def test_summarize_bpd_totals_terms_and_standard_error():
    terms = {"reconstruction": torch.tensor([1.0, 2.0, 3.0, 4.0]), "prior": torch.tensor([0.1, 0.1, 0.1, 0.1])}
    res = summarize_bpd(terms, BPDMethod.DISCRETIZED_GAUSSIAN)
    total = np.array([1.1, 2.1, 3.1, 4.1])
    assert res.value == pytest.approx(total.mean())
    assert res.stderr == pytest.approx(total.std(ddof=1) / 2.0)
    assert res.terms == {"reconstruction": pytest.approx(2.5), "prior": pytest.approx(0.1)}
    assert sum(res.terms.values()) == pytest.approx(res.value)
    assert res.method is BPDMethod.DISCRETIZED_GAUSSIAN and res.n == 4
    assert res.to_dict()["method"] == "discretized Gaussian decoder"


def test_bpd_accumulator_over_batches_equals_one_shot():
    gen = torch.Generator().manual_seed(0)
    a, b = torch.rand(10, generator=gen), torch.rand(10, generator=gen)
    acc = BPDAccumulator()
    acc.update({"x": a[:3], "y": b[:3]})
    acc.update({"x": a[3:], "y": b[3:]})
    batched = acc.result("uniform dequantisation")
    one = summarize_bpd({"x": a, "y": b}, BPDMethod.UNIFORM_DEQUANTIZATION)
    assert batched.value == pytest.approx(one.value, rel=1e-12) and batched.stderr == pytest.approx(one.stderr)
    with pytest.raises(ValueError, match="differ from earlier"):
        acc.update({"x": a})
    with pytest.raises(ValueError, match="method 'nats'"):
        acc.result("nats")


def test_diffusion_bound_fn_matches_elbo_terms_through_evaluate_bpd():
    from elbolab.diffusion import GaussianDiffusion, NoiseSchedule, elbo_terms
    from elbolab.evaluate.pipeline import evaluate_bpd

    class Zero(torch.nn.Module):  # predicts eps = 0: a valid (poor) model with a finite bound
        def forward(self, x, t, y=None):
            return torch.zeros_like(x)

    d = GaussianDiffusion(NoiseSchedule.linear(T=20))
    images = torch.randint(0, 256, (6, 1, 4, 4), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    res = evaluate_bpd(diffusion_bound_fn(d, Zero()), "toy", "discretized Gaussian decoder", images=images,
                       batch_size=4, seed=3, progress=False)
    from elbolab.data.transforms import to_float
    x = to_float(images)
    gen = torch.Generator().manual_seed(3)  # same draws: batches of 4 then 2
    parts = [elbo_terms(d, Zero(), x[:4], generator=gen), elbo_terms(d, Zero(), x[4:], generator=gen)]
    total = torch.cat([p.per_image.total for p in parts])
    assert res.value == pytest.approx(float(total.mean()), rel=1e-12)
    assert set(res.terms) == {"reconstruction", "prior", "denoising"} and res.n == 6
    assert sum(res.terms.values()) == pytest.approx(res.value, rel=1e-12)


def test_samples_npz_round_trip_quantises_like_real_images(tmp_path):
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(5, 1, 4, 4, generator=gen) * 2 - 1
    path = save_samples_npz(tmp_path / "s.npz", x, labels=torch.arange(5), meta={"sampler": "ddim", "steps": 50})
    s = load_samples_npz(path)
    assert s.images.dtype == torch.uint8 and s.images.shape == (5, 1, 4, 4)
    assert torch.equal(s.images, ((x + 1) * 127.5).round().to(torch.uint8))
    assert s.labels.tolist() == list(range(5)) and s.meta == {"sampler": "ddim", "steps": 50}
    assert not list(tmp_path.glob("*.tmp"))  # atomic write left nothing behind
    np.savez(tmp_path / "bad.npz", pixels=np.zeros(3))
    with pytest.raises(ValueError, match="no 'images' array"):
        load_samples_npz(tmp_path / "bad.npz")
    with pytest.raises(FileNotFoundError):
        load_samples_npz(tmp_path / "missing.npz")


def test_generate_samples_batches_and_is_reproducible():
    calls = []

    def sample_fn(b, g):
        calls.append(b)
        return torch.rand(b, 1, 2, 2, generator=g) * 2 - 1

    s1 = generate_samples(sample_fn, 10, batch_size=4, generator=torch.Generator().manual_seed(3), progress=False)
    s2 = generate_samples(sample_fn, 10, batch_size=4, generator=torch.Generator().manual_seed(3), progress=False)
    assert calls == [4, 4, 2, 4, 4, 2]
    assert torch.equal(s1.images, s2.images) and s1.images.shape == (10, 1, 2, 2)
    with pytest.raises(ValueError, match="returned shape"):
        generate_samples(lambda b, g: torch.zeros(1, 1, 2, 2), 3, progress=False)


def test_parse_metrics():
    assert parse_metrics("fid,kid,is,pr,bpd") == {Metric.FID, Metric.KID, Metric.IS, Metric.PR, Metric.BPD}
    assert parse_metrics("all") == set(Metric)
    with pytest.raises(ValueError, match="unknown metric 'lpips'; choices: fid, kid"):
        parse_metrics("fid,lpips")


def test_evaluate_samples_requires_a_bound_for_bpd():
    with pytest.raises(ValueError, match="evaluate_bpd"):
        evaluate_samples(torch.zeros(4, 1, 28, 28, dtype=torch.uint8), "mnist", "bpd")


def test_metrics_json_and_tables(tmp_path):
    bpd = BitsPerDim(value=3.5, stderr=0.01, terms={"reconstruction": 1.0, "denoising": 2.5},
                     method=BPDMethod.DISCRETIZED_GAUSSIAN, n=100)
    res = EvalResult(dataset="mnist", reference="mnist/train", n_samples=100, n_reference=60000,
                     feature_sha256="ab" * 32, fid=FIDResult(fid=1.25, mean_term=0.25, trace_term=1.0, n_a=100, n_b=60000),
                     kid=KIDResult(mean=0.001, std=0.002, stderr=0.0005, subset_size=100, num_subsets=10), bpd=bpd)
    write_metrics_json(tmp_path / "metrics.json", res)
    d = json.loads((tmp_path / "metrics.json").read_text())
    assert d["fid"]["fid"] == 1.25 and d["bpd"]["method"] == "discretized Gaussian decoder"
    assert "inception" not in d and d == result_to_dict(res)
    table = format_eval_table(res)
    assert "| FID " in table and "1.250" in table and "3.5000" in table and "0.00100" in table
    q = format_quality_table([QualityRow(family="real test vs real train", fid=0.5, kid=1e-4, kid_stderr=2e-5,
                                         inception=9.8, precision=0.9, recall=0.91),
                              QualityRow.from_eval("ddpm", res, params=1_500_000, nfe=50)])
    lines = q.splitlines()
    assert lines[0].startswith("| family") and "NFE" in lines[0] and len(lines) == 4
    assert "1.50M" in lines[3] and "| 50 " in lines[3] + " " and "3.500" in lines[3]
    q = format_quality_table([QualityRow.from_eval("ddpm", res, nll_kind="ELBO", n_samples=1000)])
    assert "3.500 (ELBO)" in q and "1.25 (n=1000)" in q  # the kind of bound and the sample count, when stated
