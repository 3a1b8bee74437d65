"""The Trainer: resume equality, NaN guard, LR warm-up, clipping, stopping rules, samples, bf16, errors."""

import math
import signal
import time

import pytest
import torch
from PIL import Image
from torch.utils.data import TensorDataset
from train_toys import MLP, NoisyBatchDataset, Regression, SimulatedCrash, read_metrics, regression_data, tiny_cfg

from elbolab.config import LRSchedule, Precision, RunConfig, load_toml
from elbolab.train import (
    NonFiniteLossError,
    StopReason,
    Trainer,
    checkpoint_step,
    load_checkpoint,
    lr_factor,
    warmup_lr,
)


def _dataset(kind: str, n: int = 48):
    x, y = regression_data(n)
    return TensorDataset(x, y) if kind == "tensor" else NoisyBatchDataset(x, y)


def _params(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("interruption", ["crash", "stop"])
@pytest.mark.parametrize("kind", ["tensor", "batch"])
def test_resume_reproduces_the_uninterrupted_run_bit_for_bit(tmp_path, kind, interruption):
    """Dropout (global RNG), input noise (loss generator), dataset noise (data generator), objective state,
    AdamW moments, EMA and the mid-epoch data position must all be restored for the losses to match."""
    n_steps = 11
    cfg = tiny_cfg(steps=n_steps, checkpoint_every=4)
    ref_model = MLP(dropout=0.2)
    ref = Trainer(ref_model, Regression(noise=0.1), _dataset(kind), cfg, tmp_path / "ref", progress=False)
    ref_result = ref.fit()
    assert ref_result.step == n_steps and len(ref_result.losses) == n_steps

    run = tmp_path / "run"
    if interruption == "crash":  # dies at step 7, after the checkpoint of step 4 and with steps 5, 6 logged
        with pytest.raises(SimulatedCrash):
            Trainer(MLP(dropout=0.2), Regression(noise=0.1, crash_at=7), _dataset(kind), cfg, run,
                    progress=False).fit()
        assert checkpoint_step(run) == 4
        assert [m["step"] for m in read_metrics(run)] == [1, 2, 3, 4, 5, 6]
    else:  # a clean stop at step 6 (5 and 6 after the periodic checkpoint), continued with more steps
        first = Trainer(MLP(dropout=0.2), Regression(noise=0.1), _dataset(kind), tiny_cfg(steps=6, checkpoint_every=4),
                        run, progress=False).fit()
        assert first.checkpoint_step == 6
    resumed_model = MLP(dropout=0.2, seed=123)  # initialised differently: everything must come from the run
    resumed = Trainer(resumed_model, Regression(noise=0.1), _dataset(kind), cfg, run, resume=True, progress=False)
    result = resumed.fit()
    assert result.start_step == (4 if interruption == "crash" else 6)
    assert result.step == n_steps
    assert result.losses == ref_result.losses[result.start_step:]
    assert [m["loss"] for m in read_metrics(run)] == [m["loss"] for m in read_metrics(tmp_path / "ref")]
    assert [m["step"] for m in read_metrics(run)] == list(range(1, n_steps + 1))
    for k, v in _params(ref_model).items():
        assert torch.equal(resumed_model.state_dict()[k], v), k
    for k, v in ref.ema.shadow.items():
        assert torch.equal(resumed.ema.shadow[k], v), k
    assert result.images_seen == ref_result.images_seen and result.epoch == ref_result.epoch


def test_existing_checkpoint_needs_resume(tmp_path):
    Trainer(MLP(), Regression(), _dataset("tensor"), tiny_cfg(steps=2), tmp_path, progress=False).fit()
    with pytest.raises(ValueError, match="resume=True"):
        Trainer(MLP(), Regression(), _dataset("tensor"), tiny_cfg(steps=4), tmp_path, progress=False)
    # a second fit() of the same Trainer continues from memory
    t = Trainer(MLP(), Regression(), _dataset("tensor"), tiny_cfg(steps=2), tmp_path / "twice", progress=False)
    t.fit()
    t.cfg.steps = 5
    r = t.fit()
    assert (r.start_step, r.step, r.checkpoint_step) == (2, 5, 5)
    # resume=True on an empty folder starts a fresh run
    r = Trainer(MLP(), Regression(), _dataset("tensor"), tiny_cfg(steps=2), tmp_path / "new", resume=True,
                progress=False).fit()
    assert r.start_step == 0 and r.step == 2


class NaNAt(Regression):
    def __init__(self, at: int, where: str = "loss"):
        super().__init__()
        self.at, self.where = at, where

    def loss(self, model, x, y, generator):
        out = super().loss(model, x, y, generator)
        if self.calls == self.at:
            if self.where == "loss":
                out.loss = out.loss * float("nan")
            else:  # finite loss, NaN gradient: d/du sqrt(|u|) at u = 0
                out.loss = out.loss + (model(x) * 0).abs().sqrt().mean()
        return out


@pytest.mark.parametrize("where", ["loss", "grad"])
def test_non_finite_loss_stops_with_step_and_keeps_checkpoint(tmp_path, where):
    model = MLP()
    trainer = Trainer(model, NaNAt(3, where), _dataset("tensor"), tiny_cfg(steps=10, checkpoint_every=2), tmp_path,
                      progress=False)
    with pytest.raises(NonFiniteLossError, match="step 3") as err:
        trainer.fit()
    assert err.value.step == 3
    assert ("gradient norm" if where == "grad" else "non-finite loss") in str(err.value)
    assert "last checkpoint (step 2)" in str(err.value)
    ckpt = load_checkpoint(tmp_path)
    assert ckpt.step == 2
    for k, v in model.state_dict().items():  # the bad step never reached the weights
        assert torch.isfinite(v).all()
        assert torch.equal(v, ckpt.model[k]), k
    assert [m["step"] for m in read_metrics(tmp_path)] == [1, 2]


def test_lr_warmup_values(tmp_path):
    assert [warmup_lr(1.0, s, 4) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert warmup_lr(0.3, 0, 0) == 0.3
    Trainer(MLP(), Regression(), _dataset("tensor"), tiny_cfg(steps=6, warmup_steps=4, lr=1e-2), tmp_path,
            progress=False).fit()
    assert [m["lr"] for m in read_metrics(tmp_path)] == pytest.approx([2.5e-3, 5e-3, 7.5e-3, 1e-2, 1e-2, 1e-2])


def test_lr_factor_values():
    cos, lin = LRSchedule.COSINE, LRSchedule.LINEAR
    assert [lr_factor(cos, p) for p in (0.0, 0.5, 1.0)] == pytest.approx([1.0, 0.5, 0.0], abs=1e-15)
    assert lr_factor(cos, 0.25, 0.2) == pytest.approx(0.2 + 0.8 * (1 + math.cos(math.pi / 4)) / 2)
    assert [lr_factor(lin, p, 0.1) for p in (0.0, 0.5, 1.0)] == pytest.approx([1.0, 0.55, 0.1])
    assert lr_factor(cos, 1.7, 0.1) == pytest.approx(0.1) and lr_factor(cos, -1.0) == 1.0  # clamped to [0, 1]
    assert {lr_factor(LRSchedule.CONSTANT, p) for p in (0.0, 0.5, 1.0)} == {1.0}
    with pytest.raises(ValueError, match="cosine"):
        lr_factor("exponential", 0.5)


@pytest.mark.parametrize("schedule", [LRSchedule.COSINE, LRSchedule.LINEAR])
def test_lr_decays_over_a_step_budget(tmp_path, schedule):
    """Update n (after n completed steps) uses warmup(n) * factor(n / steps); metrics log the last update's lr."""
    steps, lr = 8, 1e-2
    Trainer(MLP(), Regression(), _dataset("tensor"), tiny_cfg(steps=steps, warmup_steps=2, lr=lr,
            lr_schedule=schedule, lr_min_ratio=0.1), tmp_path, progress=False).fit()
    want = [warmup_lr(lr, n, 2) * lr_factor(schedule, n / steps, 0.1) for n in range(steps)]
    assert [m["lr"] for m in read_metrics(tmp_path)] == pytest.approx(want, rel=1e-12)


class _FakeClock:
    """Stands in for the trainer module's ``time``: ``monotonic()`` advances ``tick`` seconds per call, so a
    minutes budget runs out without waiting (the real ``time`` module elsewhere is untouched)."""

    def __init__(self, tick: float) -> None:
        self.now, self.tick = 1000.0, tick

    def monotonic(self) -> float:
        self.now += self.tick
        return self.now


def test_lr_decays_over_a_minutes_budget_and_a_resume_continues_it(tmp_path, monkeypatch, caplog):
    import elbolab.train.trainer as trainer_module

    monkeypatch.setattr(trainer_module, "time", _FakeClock(1.0))
    lr, floor = 1e-2, 0.1
    cfg = tiny_cfg(minutes=0.5, warmup_steps=0, lr=lr, lr_schedule=LRSchedule.COSINE, lr_min_ratio=floor)
    first = Trainer(MLP(), Regression(), _dataset("tensor"), cfg, tmp_path, progress=False).fit()
    assert first.stopped_by == StopReason.MINUTES
    lrs = [m["lr"] for m in read_metrics(tmp_path)]
    assert len(lrs) >= 8 and all(b < a for a, b in zip(lrs, lrs[1:]))  # strictly decreasing with the time spent
    assert lrs[0] > 0.95 * lr and lrs[-1] < (floor + 0.05) * lr
    # a resumed run does not restart the decay: its schedule had ended, so it trains at the floor, and says so
    with caplog.at_level("WARNING", logger="elbolab.train.trainer"):
        Trainer(MLP(), Regression(), _dataset("tensor"), cfg, tmp_path, resume=True, progress=False).fit()
    assert "ended with the minutes budget" in caplog.text
    resumed = [m["lr"] for m in read_metrics(tmp_path)][len(lrs):]
    assert resumed and resumed == pytest.approx([floor * lr] * len(resumed))


class _InterruptedAt(Regression):
    """Sends this process SIGINT during its ``n``-th loss (the Trainer finishes the step and checkpoints)."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.n = n

    def loss(self, model, x, y, generator):
        if self.calls + 1 == self.n:  # Regression.loss counts the calls
            signal.raise_signal(signal.SIGINT)
        return super().loss(model, x, y, generator)


def test_a_resume_spreads_the_rest_of_the_decay_over_its_minutes(tmp_path, monkeypatch):
    import elbolab.train.trainer as trainer_module

    monkeypatch.setattr(trainer_module, "time", _FakeClock(1.0))
    cfg = tiny_cfg(minutes=0.5, warmup_steps=0, lr=1e-2, lr_schedule=LRSchedule.LINEAR)
    first = Trainer(MLP(), _InterruptedAt(5), _dataset("tensor"), cfg, tmp_path, progress=False).fit()
    assert first.stopped_by == StopReason.INTERRUPTED and first.step == 5
    part = [m["lr"] / 1e-2 for m in read_metrics(tmp_path)]
    assert 0.5 < part[-1] < 0.9  # 2 clock ticks per step of 30: about a third of the budget spent
    Trainer(MLP(), Regression(), _dataset("tensor"), cfg, tmp_path, resume=True, progress=False).fit()
    rest = [m["lr"] / 1e-2 for m in read_metrics(tmp_path)][len(part):]
    assert len(rest) >= 10 and rest[0] < part[-1] and all(b < a for a, b in zip(rest, rest[1:]))
    assert rest[-1] < 0.07  # the rest of the decay fitted into the new call's 30 s


class Huge(Regression):
    def loss(self, model, x, y, generator):
        out = super().loss(model, x, y, generator)
        out.loss = out.loss * 1000.0
        return out


@pytest.mark.parametrize("clip", [0.5, 0.0])
def test_gradient_clipping_bounds_the_norm(tmp_path, clip):
    trainer = Trainer(MLP(), Huge(), _dataset("tensor"), tiny_cfg(steps=5, grad_clip=clip), tmp_path, progress=False)
    seen = []

    def at_step(opt, args, kwargs):
        seen.append(float(torch.linalg.vector_norm(torch.stack(
            [torch.linalg.vector_norm(p.grad) for g in opt.param_groups for p in g["params"]]))))

    trainer.groups["model"].optimizer.register_step_pre_hook(at_step)
    trainer.fit()
    logged = [m["grad_norm"] for m in read_metrics(tmp_path)]
    assert min(logged) > 1.0  # the logged norm is before clipping
    if clip:
        assert max(seen) <= clip * (1 + 1e-5) and min(seen) > clip * 0.99
    else:
        assert seen == pytest.approx(logged, rel=1e-5)


def test_stop_by_steps_epochs_and_first_rule(tmp_path):
    data = _dataset("tensor", n=40)  # 5 batches of 8 per epoch
    r = Trainer(MLP(), Regression(), data, tiny_cfg(steps=3, epochs=100), tmp_path / "a", progress=False).fit()
    assert (r.stopped_by, r.step) == (StopReason.STEPS, 3)
    r = Trainer(MLP(), Regression(), data, tiny_cfg(epochs=2), tmp_path / "b", progress=False).fit()
    assert (r.stopped_by, r.step, r.epoch) == (StopReason.EPOCHS, 10, 2.0)
    r = Trainer(MLP(), Regression(), data, tiny_cfg(epochs=0.5, steps=100), tmp_path / "c", progress=False).fit()
    assert (r.stopped_by, r.step) == (StopReason.EPOCHS, 3)
    assert r.images_seen == 24


class Slow(Regression):
    def loss(self, model, x, y, generator):
        time.sleep(0.03)
        return super().loss(model, x, y, generator)


def test_stop_by_minutes(tmp_path):
    t0 = time.monotonic()
    r = Trainer(MLP(), Slow(), _dataset("tensor"), tiny_cfg(minutes=0.4 / 60), tmp_path, progress=False).fit()
    assert r.stopped_by == StopReason.MINUTES
    assert 0.4 <= r.wall_seconds < 0.4 + 1.0 and time.monotonic() - t0 < 10
    assert 2 <= r.step <= 14 and r.checkpoint_step == r.step


def test_no_stopping_rule_and_bad_batch_are_errors(tmp_path):
    with pytest.raises(ValueError, match="steps, train.epochs, train.minutes"):
        Trainer(MLP(), Regression(), _dataset("tensor"), tiny_cfg(), tmp_path)
    with pytest.raises(ValueError, match="fewer than batch_size"):
        Trainer(MLP(), Regression(), _dataset("tensor", n=4), tiny_cfg(steps=1), tmp_path)
    with pytest.raises(TypeError, match="not a training objective"):
        Trainer(MLP(), object(), _dataset("tensor"), tiny_cfg(steps=1), tmp_path)


def test_samples_use_ema_weights_without_touching_training_rng(tmp_path):
    calls = []

    def sample_fn(model, n, generator):
        calls.append((model.training, {k: v.clone() for k, v in model.state_dict().items()}))
        torch.rand(3)  # a sampler that (wrongly) uses the global RNG must not change training
        return torch.rand(n, 1, 6, 6, generator=generator) * 2 - 1

    run_cfg = RunConfig()
    model = MLP(dropout=0.3)
    t = Trainer(model, Regression(noise=0.1), _dataset("tensor"), tiny_cfg(steps=4, sample_every=2), tmp_path / "s",
                run_config=run_cfg, sample_fn=sample_fn, n_samples=5, progress=False)
    r = t.fit()
    plain = Trainer(MLP(dropout=0.3), Regression(noise=0.1), _dataset("tensor"), tiny_cfg(steps=4), tmp_path / "p",
                    progress=False).fit()
    assert r.losses == plain.losses
    assert sorted(p.name for p in (tmp_path / "s" / "samples").iterdir()) == ["step_0000002.png", "step_0000004.png"]
    img = Image.open(tmp_path / "s" / "samples" / "step_0000004.png")
    assert img.size == (3 * 8 + 2, 2 * 8 + 2) and img.mode == "L"  # 5 images, 3 per row, 6x6 with padding 2
    training, weights = calls[-1]
    assert not training and model.training
    for k, v in t.ema.shadow.items():
        assert torch.equal(weights[k], v)
    assert not torch.equal(model.state_dict()["net.0.weight"], t.ema.shadow["net.0.weight"])
    assert load_toml(tmp_path / "s" / "config.toml") == run_cfg


def test_bf16_autocast_on_cpu(tmp_path, monkeypatch):
    monkeypatch.setenv("ELBOLAB_BF16", "force")  # the bf16 path itself, also where the CPU emulates bf16
    seen = []

    class Probe(Regression):
        def loss(self, model, x, y, generator):
            seen.append((torch.is_autocast_enabled("cpu"), model(x).dtype))
            out = super().loss(model, x, y, generator)
            return out

    r = Trainer(MLP(), Probe(), _dataset("tensor"), tiny_cfg(steps=3, precision=Precision.BF16), tmp_path,
                progress=False).fit()
    assert seen[0] == (True, torch.bfloat16)
    assert all(math.isfinite(v) for v in r.losses)
    metrics = read_metrics(tmp_path)
    assert set(metrics[0]) >= {"step", "epoch", "loss", "lr", "grad_norm", "img/s", "mse"}
    import elbolab.nn.precision as P  # without native bf16 the Trainer runs float32 instead

    monkeypatch.delenv("ELBOLAB_BF16")
    monkeypatch.setattr(P, "native_bf16", lambda device: False)
    seen.clear()
    Trainer(MLP(), Probe(), _dataset("tensor"), tiny_cfg(steps=1, precision=Precision.BF16), tmp_path / "f",
            progress=False).fit()
    assert seen[0] == (False, torch.float32)


def test_objective_metric_named_like_a_trainer_key_is_prefixed(tmp_path):
    class Named(Regression):
        def loss(self, model, x, y, generator):
            out = super().loss(model, x, y, generator)
            out.metrics["loss"] = 123.0  # e.g. an unweighted loss
            return out

    r = Trainer(MLP(), Named(), _dataset("tensor"), tiny_cfg(steps=2), tmp_path, progress=False).fit()
    m = read_metrics(tmp_path)[-1]
    assert m["objective/loss"] == 123.0 and m["loss"] == r.losses[-1]


def test_on_step_is_called_after_every_step_with_the_trainer(tmp_path):
    seen = []

    def on_step(trainer):
        seen.append((trainer.step, trainer.images_seen))

    cfg = tiny_cfg(steps=5, checkpoint_every=2)
    Trainer(MLP(), Regression(), _dataset("tensor"), cfg, tmp_path, progress=False, on_step=on_step).fit()
    assert [s for s, _ in seen] == [1, 2, 3, 4, 5]
    assert seen[-1][1] == 5 * cfg.batch_size and (tmp_path / "checkpoint.json").exists()
