"""The several-optimiser interface on a 2-D toy GAN: plan order, frozen groups, per-group settings, EMA of
the generator only, resume equality, and that the game actually converges to the data."""

import pytest
import torch
from torch.utils.data import TensorDataset
from train_toys import ToyGAN, ToyGANObjective, read_metrics, tiny_cfg

from elbolab.train import AdversarialObjective, ParamGroup, Trainer, UpdatePhase
from elbolab.objectives import validate_plan


def _data(n: int = 256, seed: int = 0) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    return TensorDataset(torch.tensor([2.0, -1.0]) + 0.5 * torch.randn(n, 2, generator=g))


class Spy(ToyGANObjective):
    """Checks, at every call, that the Trainer froze the other group and that it did not move in between."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.frozen_ok = []
        self.last = None

    def group_loss(self, group, model, x, y, generator):
        other = "generator" if group == "discriminator" else "discriminator"
        mine = [p.requires_grad for p in getattr(model, group).parameters()]
        theirs = [p.requires_grad for p in getattr(model, other).parameters()]
        self.frozen_ok.append(all(mine) and not any(theirs))
        snap = {n: p.detach().clone() for n, p in model.named_parameters()}
        if self.last is not None:
            prev_group, prev = self.last
            for n, p in snap.items():  # only the group updated last may have moved
                moved = not torch.equal(p, prev[n])
                assert not moved or n.startswith(prev_group), (n, prev_group)
        self.last = (group, snap)
        return super().group_loss(group, model, x, y, generator)


def test_plan_order_freezing_groups_and_ema(tmp_path):
    model = ToyGAN()
    obj = Spy(n_critic=3, d_lr=4e-2)
    assert isinstance(obj, AdversarialObjective)
    trainer = Trainer(model, obj, _data(), tiny_cfg(steps=4, batch_size=16, warmup_steps=1, lr=1e-2), tmp_path,
                      progress=False)
    r = trainer.fit()
    assert obj.trace == (["discriminator"] * 3 + ["generator"]) * 4
    assert all(obj.frozen_ok)
    assert all(p.requires_grad for p in model.parameters())  # restored after the step
    assert r.images_seen == 4 * 3 * 16  # the generator phase reuses the last batch
    assert set(trainer.ema.shadow) == {"generator.mu", "generator.log_s"}
    d_opt, g_opt = trainer.groups["discriminator"].optimizer, trainer.groups["generator"].optimizer
    assert d_opt.param_groups[0]["lr"] == 4e-2 and g_opt.param_groups[0]["lr"] == 1e-2
    assert d_opt.param_groups[0]["betas"] == (0.5, 0.9)
    m = read_metrics(tmp_path)[-1]
    assert {"loss", "loss/discriminator", "loss/generator", "grad_norm/generator", "lr/discriminator",
            "discriminator/r1"} <= set(m)
    assert m["loss"] == m["loss/generator"]


def test_adversarial_resume_is_exact(tmp_path):
    cfg = tiny_cfg(steps=6, batch_size=16, checkpoint_every=3)
    ref_model = ToyGAN()
    ref = Trainer(ref_model, ToyGANObjective(), _data(), cfg, tmp_path / "ref", progress=False).fit()
    Trainer(ToyGAN(), ToyGANObjective(), _data(), tiny_cfg(steps=3, batch_size=16), tmp_path / "run",
            progress=False).fit()
    model = ToyGAN()
    with torch.no_grad():
        model.generator["mu"].fill_(5.0)
    r = Trainer(model, ToyGANObjective(), _data(), cfg, tmp_path / "run", resume=True, progress=False).fit()
    assert r.losses == ref.losses[3:]
    for k, v in ref_model.state_dict().items():
        assert torch.equal(model.state_dict()[k], v), k


def test_toy_gan_converges_to_the_data(tmp_path):
    """Non-saturating GAN + R1 penalty, 2 critic steps per generator step: the EMA generator's mean and scale
    approach those of the data N((2, -1), 0.5^2 I) from mu = (0, 0), s = 1."""
    model = ToyGAN()
    trainer = Trainer(model, ToyGANObjective(n_critic=2), _data(512),
                      tiny_cfg(steps=120, batch_size=64, lr=0.05, warmup_steps=10, ema_decay=0.95, log_every=20),
                      tmp_path, progress=False)
    trainer.fit()
    mu = trainer.ema.shadow["generator.mu"]
    s = trainer.ema.shadow["generator.log_s"].exp()
    assert torch.linalg.vector_norm(mu - torch.tensor([2.0, -1.0])) < 0.25, mu
    assert ((s - 0.5).abs() < 0.2).all(), s


class _Bad(ToyGANObjective):
    def __init__(self, groups=None, plan=None, ema="generator"):
        super().__init__()
        self._g, self._p, self._e = groups, plan, ema

    def param_groups(self):
        return self._g if self._g is not None else super().param_groups()

    def update_plan(self):
        return self._p if self._p is not None else super().update_plan()

    def ema_group(self):
        return self._e


@pytest.mark.parametrize("bad, match", [
    (dict(plan=[("critic", 5)]), "declared groups"),
    (dict(plan=[UpdatePhase("discriminator", 0)]), "repeats"),
    (dict(plan=[UpdatePhase("generator", 1, new_batch=False)]), "first update phase"),
    (dict(ema="critic"), "ema_group"),
    (dict(groups={"g": ParamGroup(("generator",), betas=(0.9,))}, plan=[("g", 1)]), "betas"),
])
def test_bad_plans_are_clear_errors(bad, match):
    with pytest.raises(ValueError, match=match):
        validate_plan(_Bad(**bad))


def test_overlapping_or_unknown_modules_are_errors(tmp_path):
    both = {"a": ParamGroup(("",)), "b": ParamGroup(("generator",))}
    with pytest.raises(ValueError, match="share parameters"):
        Trainer(ToyGAN(), _Bad(groups=both, plan=[("a", 1), ("b", 1)], ema=None), _data(), tiny_cfg(steps=1), tmp_path)
    with pytest.raises(ValueError, match="no submodule 'critic'"):
        Trainer(ToyGAN(), _Bad(groups={"c": ParamGroup(("critic",))}, plan=[("c", 1)], ema=None), _data(),
                tiny_cfg(steps=1), tmp_path)
