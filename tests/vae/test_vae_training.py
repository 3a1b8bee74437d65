"""CI-sized training through the library Trainer on the embedded MNIST: the VAE learns (held-out IWAE NLL far
below the untrained model's), the bounds are ordered, per-layer metrics are logged, KL warm-up state resumes.
The full-budget figures come from benchmarks/vae_quality.py."""

import json

import pytest
import torch

from elbolab.config import apply_overrides, preset
from elbolab.data import load_dataset
from elbolab.train import Trainer
from elbolab.vae import active_units, build_objective, build_vae, evaluate_likelihood, sample_fn


def _setup(name, overrides):
    cfg = apply_overrides(preset(name), ['data.name="mnist-embedded"', "train.minutes=0", *overrides])
    train = load_dataset(cfg.data)
    test = load_dataset(apply_overrides(cfg, ['data.split="test"', "data.limit=0"]).data)
    torch.manual_seed(0)
    return cfg, train, test, build_vae(cfg.model.vae, train.shape, cfg.family), build_objective(cfg.model.vae, cfg.family)


@pytest.mark.slow
def test_fc_vae_learns_mnist(tmp_path):
    cfg, train, test, model, objective = _setup(
        "vae-mnist-fc", ["data.limit=4096", "train.steps=80", "train.batch_size=64", "train.log_every=40"])
    x_test = test.batch(torch.arange(100))[0]
    before = evaluate_likelihood(model, [x_test], 20, torch.Generator().manual_seed(0), progress=False)
    Trainer(model, objective, train, cfg.train, tmp_path, cfg, sample_fn, progress=False).fit()
    after = evaluate_likelihood(model, [x_test], 20, torch.Generator().manual_seed(0), progress=False)
    # untrained: ~784 ln 2 = 543 nats; 80 steps of 64 images already remove more than half of it
    assert before.iwae_nll > 500 and after.iwae_nll < 260
    assert after.iwae_nll <= after.elbo_nll + 2 * after.elbo_nll_stderr
    assert after.iwae_bpd == pytest.approx(after.iwae_nll / (784 * 0.6931471805599453))
    au = active_units(model, [x_test], torch.Generator().manual_seed(1))
    assert au.counts[0] >= 1
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == 80 and {"elbo", "bpd", "kl_1", "reconstruction"} <= set(rows[-1])
    assert rows[-1]["elbo"] > rows[0]["elbo"]
    assert list((tmp_path / "samples").glob("*.png"))


@pytest.mark.slow
def test_hvae_trains_logs_per_layer_kl_and_resumes_its_warmup(tmp_path):
    cfg, train, _, model, objective = _setup(
        "hvae-mnist", ["data.limit=512", "train.steps=6", "train.batch_size=32", "train.log_every=3",
                       "train.checkpoint_every=6", "vae.kl_warmup_steps=10", "vae.latent_dims=[8,4]",
                       "vae.hidden_sizes=[64]", "vae.layer_hidden=32"])
    Trainer(model, objective, train, cfg.train, tmp_path, cfg, sample_fn, progress=False).fit()
    assert objective.step == 6
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert {"kl_1", "kl_2", "kl_weight"} <= set(rows[-1])
    assert rows[-1]["kl"] == pytest.approx(rows[-1]["kl_1"] + rows[-1]["kl_2"], rel=1e-5)
    # resume: a fresh objective picks up the warm-up where the checkpoint left it
    cfg2 = apply_overrides(cfg, ["train.steps=8", "train.log_every=1"])
    model2 = build_vae(cfg2.model.vae, train.shape, cfg2.family)
    objective2 = build_objective(cfg2.model.vae, cfg2.family)
    Trainer(model2, objective2, train, cfg2.train, tmp_path, cfg2, sample_fn, resume=True, progress=False).fit()
    assert objective2.step == 8
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["kl_weight"]) for r in rows[-2:]] == [(7, 0.6), (8, 0.7)]  # beta_t = t / 10, t = 6, 7
