"""GANs through the shared Trainer: the plan (n_critic discriminator updates, then the generator), an EMA of the
generator only, each game learning a 2-D toy, exact resume from a checkpoint, load_weights, and the CLI
(`elbolab train gan-mnist`, `sample`, `eval`) on a tiny run."""

import json

import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset

from elbolab.cli import main
from elbolab.config import Precision, TrainConfig, preset
from elbolab.gan.config import GANArchitecture, GANConfig, GANLoss
from elbolab.gan import GAN, GANObjective, build_gan, sample_gan
from elbolab.train import AdversarialObjective, Trainer, load_weights

MU, STD = torch.tensor([2.0, -1.0]), 0.5


def _toy(n: int = 512) -> TensorDataset:
    g = torch.Generator().manual_seed(0)
    return TensorDataset(MU + STD * torch.randn(n, 2, generator=g))


def _cfg(**kw) -> TrainConfig:
    base = dict(batch_size=64, lr=2e-3, betas=(0.5, 0.9), warmup_steps=0, grad_clip=0.0, ema_decay=0.95,
                precision=Precision.FP32, log_every=10, checkpoint_every=1000, seed=0)
    base.update(kw)
    return TrainConfig(**base)


def _toy_gan(**kw) -> GAN:
    torch.manual_seed(0)
    return build_gan(GANConfig(architecture=GANArchitecture.MLP, latent_dim=2, hidden=32, depth=2, **kw),
                     data_shape=(2,))


def _ema_generator_samples(trainer: Trainer, n: int = 2000) -> torch.Tensor:
    with trainer.ema.swap(trainer.model), torch.no_grad():
        return sample_gan(trainer.model, n, torch.Generator().manual_seed(1)).images


def test_objective_interface_and_config():
    obj = GANObjective.from_config(GANConfig(loss=GANLoss.WASSERSTEIN_GP, n_critic=5, d_lr=4e-4))
    assert isinstance(obj, AdversarialObjective)
    assert [(p.group, p.repeats, p.new_batch) for p in obj.update_plan()] == [("discriminator", 5, True),
                                                                             ("generator", 1, False)]
    groups = obj.param_groups()
    assert groups["discriminator"].modules == ("discriminator",) and groups["discriminator"].lr == 4e-4
    assert groups["generator"].lr is None  # falls back to train.lr
    assert obj.ema_group() == "generator"
    bads = ((dict(loss="squared"), "hinge"), (dict(r1_gamma=-1.0), "r1_gamma"), (dict(n_critic=0), "n_critic"),
            (dict(gp_weight=-1.0), "gp_weight"))
    for bad, match in bads:
        with pytest.raises(ValueError, match=match):
            GANObjective(**bad)
    with pytest.raises(TypeError, match="elbolab.gan.GAN"):
        obj.group_loss("generator", torch.nn.Linear(2, 2), torch.zeros(4, 2), None, torch.Generator())


@pytest.mark.slow
@pytest.mark.parametrize("loss, n_critic, steps, ema_decay", [
    (GANLoss.NON_SATURATING, 1, 300, 0.95),
    (GANLoss.MINIMAX, 1, 300, 0.95),
    (GANLoss.WASSERSTEIN_GP, 3, 800, 0.99),  # slower: the critic's spread estimate oscillates
])
def test_each_game_learns_a_2d_gaussian(tmp_path, loss, n_critic, steps, ema_decay):
    """From G(z) near 0 the EMA generator's sample mean moves to (2, -1) (2.2 away) and its spread to about
    0.5 (WGAN-GP overestimates it: about 0.6-0.7 after 800 steps)."""
    model = _toy_gan()
    obj = GANObjective(loss, n_critic=n_critic)
    betas = (0.0, 0.9) if loss is GANLoss.WASSERSTEIN_GP else (0.5, 0.9)
    cfg = _cfg(steps=steps, betas=betas, ema_decay=ema_decay)
    trainer = Trainer(model, obj, _toy(), cfg, tmp_path, progress=False)
    r = trainer.fit()
    assert r.images_seen == steps * n_critic * 64  # the generator reuses the last critic batch
    assert set(trainer.ema.shadow) == {k for k in model.state_dict() if k.startswith("generator.")}
    x = _ema_generator_samples(trainer)
    mean, std = x.mean(0), x.std(0)
    assert torch.linalg.vector_norm(mean - MU) < 0.3, (loss, mean, std)
    assert ((std - STD).abs() < 0.3).all(), (loss, mean, std)
    last = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[-1])
    assert {"loss/discriminator", "loss/generator", "discriminator/d_real", "generator/d_fake"} <= set(last)
    if loss is GANLoss.WASSERSTEIN_GP:
        assert "discriminator/gp" in last and "discriminator/w_estimate" in last


def test_conditional_gan_uses_labels(tmp_path):
    """A class-conditional GAN trains on labelled data (labels reach G and D) and refuses unlabelled data."""
    g = torch.Generator().manual_seed(0)
    y = torch.randint(2, (256,), generator=g)
    x = torch.stack([torch.tensor([2.0, 0.0]), torch.tensor([-2.0, 0.0])])[y] + 0.3 * torch.randn(256, 2, generator=g)
    model = _toy_gan(num_classes=2)
    trainer = Trainer(model, GANObjective(), TensorDataset(x, y), _cfg(steps=3), tmp_path, progress=False)
    trainer.fit()
    out = sample_gan(model, 4, torch.Generator().manual_seed(0), labels=1)
    assert out.labels.tolist() == [1, 1, 1, 1]
    with pytest.raises(ValueError, match="labelled data"):
        GANObjective().group_loss("discriminator", model, x[:4], None, torch.Generator())


def _image_data(n: int = 48) -> TensorDataset:
    g = torch.Generator().manual_seed(0)
    return TensorDataset(torch.rand(n, 1, 28, 28, generator=g) * 2 - 1)


def _tiny_dcgan() -> GAN:
    torch.manual_seed(0)
    return build_gan(GANConfig(latent_dim=8, g_channels=4, d_channels=4))


@pytest.mark.slow
def test_resume_is_exact_and_weights_load(tmp_path):
    """WGAN-GP (n_critic = 2, interpolates drawn from the loss generator): 3 steps + resume 3 more steps equal 6
    uninterrupted steps bit for bit; load_weights puts the EMA generator over the raw discriminator."""
    obj = lambda: GANObjective(GANLoss.WASSERSTEIN_GP, n_critic=2)  # noqa: E731
    cfg6 = _cfg(steps=6, batch_size=8, checkpoint_every=3, log_every=1)
    ref_model = _tiny_dcgan()
    ref = Trainer(ref_model, obj(), _image_data(), cfg6, tmp_path / "ref", progress=False).fit()
    Trainer(_tiny_dcgan(), obj(), _image_data(), _cfg(steps=3, batch_size=8, log_every=1), tmp_path / "run",
            progress=False).fit()
    model = _tiny_dcgan()
    resumed = Trainer(model, obj(), _image_data(), cfg6, tmp_path / "run", resume=True, progress=False)
    r = resumed.fit()
    assert r.start_step == 3 and r.losses == ref.losses[3:]
    for k, v in ref_model.state_dict().items():
        assert torch.equal(model.state_dict()[k], v), k

    loaded = _tiny_dcgan()
    assert load_weights(tmp_path / "run", loaded, ema=True) == 6
    state = loaded.state_dict()
    for k, v in resumed.ema.shadow.items():
        assert torch.equal(state[k], v), k
    for k, v in model.state_dict().items():
        if k.startswith("discriminator."):
            assert torch.equal(state[k], v), k
    assert any(not torch.equal(state[k], model.state_dict()[k]) for k in resumed.ema.shadow)


def test_presets():
    a, b = preset("gan-mnist"), preset("wgan-gp-mnist")
    assert a.family == b.family == "gan"
    assert a.model.gan.loss is GANLoss.NON_SATURATING and a.model.gan.n_critic == 1 and a.train.betas == (0.5, 0.999)
    assert b.model.gan.loss is GANLoss.WASSERSTEIN_GP and b.model.gan.n_critic == 5 and b.model.gan.gp_weight == 10.0
    assert b.train.betas == (0.0, 0.9) and b.train.lr == 1e-4  # Algorithm 1 of Gulrajani et al. 2017


TINY = ["--set", "data.name=mnist-embedded", "--set", "data.limit=64", "--set", "gan.g_channels=4",
        "--set", "gan.d_channels=4", "--set", "gan.latent_dim=8", "--set", "train.batch_size=16",
        "--set", "train.log_every=1", "--set", "train.sample_every=0", "--set", "sample.n=4"]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["gan-mnist", "wgan-gp-mnist"])
def test_cli_train_sample_eval(tmp_path, capsys, name):
    run = tmp_path / "run"
    extra = ["--set", "gan.n_critic=2"] if name == "wgan-gp-mnist" else []
    assert main(["train", name, "--out", str(run), "--steps", "3", *TINY, *extra]) == 0
    for f in ("config.toml", "model.safetensors", "ema.safetensors", "metrics.jsonl", "checkpoint.json"):
        assert (run / f).exists(), f
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and all(np.isfinite(r["loss/discriminator"]) for r in rows)
    assert main(["train", name, "--out", str(run), "--steps", "4", "--resume", *TINY, *extra]) == 0
    assert json.loads((run / "checkpoint.json").read_text())["step"] == 4

    grid = tmp_path / "grid.png"
    assert main(["sample", str(run), "--n", "6", "--seed", "3", "--out", str(grid)]) == 0
    with np.load(tmp_path / "grid.npz") as z:
        assert z["images"].shape == (6, 1, 28, 28)
        first = z["images"].copy()
    assert main(["sample", str(run), "--n", "6", "--seed", "3", "--out", str(grid)]) == 0
    with np.load(tmp_path / "grid.npz") as z:
        np.testing.assert_array_equal(z["images"], first)  # same seed, same samples
    assert main(["sample", str(run), "--steps", "5", "--out", str(grid)]) == 2
    assert "has no option 'steps'" in capsys.readouterr().err

    assert main(["eval", str(run), "--metrics", "is,pr", "--n", "32"]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert "precision" in json.dumps(metrics) and "bpd" not in json.dumps(metrics).lower().replace("bpd_", "")
    assert main(["eval", str(run), "--metrics", "bpd"]) == 2
    assert "no likelihood bound" in capsys.readouterr().err
