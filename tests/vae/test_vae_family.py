"""The VAE family behind `elbolab train/sample/eval`: a tiny run folder end to end, shape adaptation, errors."""

import pytest
import torch

from elbolab.config import apply_overrides, preset
from elbolab.families import SampleRequest, get_family
from elbolab.vae import HVAE, VAE, Autoencoder


def test_spec_builds_adapts_and_guards():
    cfg = preset("hvae-mnist")
    spec = get_family("hvae")
    cfg3 = spec.adapt_to_data(cfg, (3, 32, 32), 10)
    assert (cfg3.model.vae.in_channels, cfg3.model.vae.image_size) == (3, 32)
    model = spec.build_model(cfg3)
    assert isinstance(model, HVAE) and model.image_shape == (3, 32, 32)
    batch = spec.sample(cfg3, model, 4, torch.Generator().manual_seed(0), SampleRequest(n=4))
    assert batch.images.shape == (4, 3, 32, 32) and batch.nfe == 1 and batch.labels is None
    with pytest.raises(ValueError, match="has no option 'steps'"):
        spec.sample(cfg3, model, 2, torch.Generator(), SampleRequest(n=2, options={"steps": 10}))
    with pytest.raises(ValueError, match="unconditional"):
        spec.sample(cfg3, model, 2, torch.Generator(), SampleRequest(n=2, label=3))
    assert spec.bound_fn(cfg3, model, exact=False) is None  # Bernoulli: no 8-bit bits/dim
    with pytest.raises(ValueError, match="square"):
        spec.adapt_to_data(cfg, (1, 28, 32), 10)
    ae_spec = get_family("ae")
    ae = ae_spec.build_model(preset("ae-mnist"))
    assert isinstance(ae, Autoencoder)
    with pytest.raises(ValueError, match="cannot sample"):
        ae_spec.sample(preset("ae-mnist"), ae, 2, torch.Generator(), SampleRequest(n=2))
    # the objective ignores labels (unconditional) and keeps the warm-up state for checkpoints
    obj = spec.build_objective(cfg3)
    out = obj.loss(model, torch.zeros(2, 3, 32, 32), torch.tensor([1, 2]), torch.Generator().manual_seed(0))
    assert out.loss.ndim == 0 and obj.state_dict() == {"step": 1}


@pytest.mark.slow
def test_tiny_run_folder_trains_samples_and_reports_bits_per_dim(tmp_path):
    from elbolab.runs import EvalRequest, evaluate_run, load_run, sample_run, train_run

    cfg = apply_overrides(preset("vae-mnist-fc"), [
        'data.name="mnist-embedded"', "data.limit=256", "train.steps=4", "train.minutes=0", "train.batch_size=32",
        "train.log_every=2", 'vae.likelihood="discretized"', "vae.hidden_sizes=[64]", "vae.iwae_samples=8"])
    res = train_run(cfg, tmp_path / "run", progress=False)
    assert res.step == 4 and (tmp_path / "run" / "config.toml").exists()
    run = load_run(tmp_path / "run")
    assert isinstance(run.model, VAE) and not run.model.training
    written = sample_run(run, SampleRequest(n=9), tmp_path / "s.png")
    assert [p.suffix for p in written] == [".png", ".npz"]
    report = evaluate_run(run, EvalRequest(metrics=["bpd"], bpd_n=16, exact=True))
    assert "iwae_8" in report.to_text() and (tmp_path / "run" / "metrics.json").exists()


def test_eval_cli_iwae_active_units_probe(tmp_path, capsys):
    """`elbolab eval RUN --iwae K --active-units --probe` on a tiny VAE run: ELBO <= IWAE (NLL order), the
    counts fit the latent size, a probe accuracy in [0, 1], a JSON record; wrong families are named."""
    import json

    from elbolab.cli import main
    from elbolab.runs import train_run

    cfg = apply_overrides(preset("vae-mnist-fc"), [
        'data.name="mnist-embedded"', "data.limit=300", "data.holdout=100", "train.steps=6", "train.minutes=0",
        "train.batch_size=50", "vae.hidden_sizes=[64]", "vae.latent_dims=[4]"])
    train_run(cfg, tmp_path / "run", progress=False)
    rc = main(["eval", str(tmp_path / "run"), "--iwae", "16", "--iwae-n", "40", "--active-units", "--probe"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "IWAE_16" in text and "active units per layer" in text and "linear probe" in text
    rec = json.loads((tmp_path / "run" / "diagnostics.json").read_text())
    lik = rec["likelihood"]
    assert lik["num_examples"] == 40 and lik["num_samples"] == 16
    assert lik["iwae_nll"] <= lik["elbo_nll"] + 3 * lik["elbo_nll_stderr"]  # IWAE_K >= ELBO (as NLLs: <=)
    assert rec["active_units"]["dims"] == [4] and 0 <= rec["active_units"]["counts"][0] <= 4
    assert 0.0 <= rec["probe"]["test_accuracy"] <= 1.0 and rec["probe"]["num_test"] == 100

    ae = apply_overrides(preset("ae-mnist"), ['data.name="mnist-embedded"', "data.limit=200", "data.holdout=50",
                                              "train.steps=2", "train.minutes=0", "train.batch_size=50"])
    train_run(ae, tmp_path / "ae", progress=False)
    capsys.readouterr()
    assert main(["eval", str(tmp_path / "ae"), "--iwae", "4"]) == 2
    assert "only --probe" in capsys.readouterr().err
    assert main(["eval", str(tmp_path / "ae"), "--probe"]) == 0

    ddpm = apply_overrides(preset("ddpm-tiny"), ["data.limit=64", "train.steps=1"])
    train_run(ddpm, tmp_path / "ddpm", progress=False)
    capsys.readouterr()
    assert main(["eval", str(tmp_path / "ddpm"), "--probe"]) == 2
    assert "'ddpm'" in capsys.readouterr().err
