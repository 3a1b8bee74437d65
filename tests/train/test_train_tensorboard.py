"""TensorBoard round trip: the scalars of a real Trainer run's metrics.jsonl (single loss and a two-group
two-group, GAN-shaped run) and a sample grid, written through TensorBoardWriter, read back from the event file with tensorboard's
EventAccumulator: the same tags, steps and values (float32, as TensorBoard stores them) and the same pixels
as the PNG grid. Without the package the writer names the extra to install."""

from __future__ import annotations

import io
import sys

import numpy as np
import pytest
import torch
from PIL import Image
import torch.nn.functional as F
from torch import nn
from torch.utils.data import TensorDataset
from train_toys import read_metrics, tiny_cfg

from elbolab.train import AdversarialObjective, LossOutput, Objective, ParamGroup, Trainer, UpdatePhase
from elbolab.train.tensorboard import TENSORBOARD_DIR, TensorBoardUnavailable, TensorBoardWriter
from elbolab.viz.grid import make_grid


def _events(run_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir / TENSORBOARD_DIR), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    return acc


class _Denoise(Objective):
    """A tiny denoising regression (B, 2) -> (B, 2): loss = mse, with the extra term ``mse`` logged."""

    def loss(self, model, x, y, generator):
        noisy = x + 0.3 * torch.randn(x.shape, generator=generator)
        mse = F.mse_loss(model.g(noisy), x)
        return LossOutput(mse, {"mse": mse.item()})


class _TwoGroups(AdversarialObjective):
    """Two parameter groups updated in turn (a GAN's shape): "d" twice, then "g"; logs ``loss/<group>``."""

    def param_groups(self):
        return {"d": ParamGroup(("d",)), "g": ParamGroup(("g",))}

    def update_plan(self):
        return [UpdatePhase("d", repeats=2), UpdatePhase("g", 1, new_batch=False)]

    def ema_group(self):
        return "g"

    def group_loss(self, group, model, x, y, generator):
        z = torch.randn(x.shape, generator=generator)
        fake = model.g(z)
        if group == "d":
            loss = F.softplus(-model.d(x)).mean() + F.softplus(model.d(fake.detach())).mean()
            return LossOutput(loss, {"d_real": torch.sigmoid(model.d(x)).mean().item()})
        return LossOutput(F.softplus(-model.d(fake)).mean(), {})


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.g, self.d = nn.Linear(2, 2), nn.Linear(2, 1)


def _train(kind: str, run_dir) -> list[dict]:
    g = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.tensor([2.0, -1.0]) + 0.5 * torch.randn(64, 2, generator=g))
    objective = _Denoise() if kind == "single" else _TwoGroups()
    Trainer(_Net(), objective, data, tiny_cfg(steps=6, log_every=2), run_dir, progress=False).fit()
    return read_metrics(run_dir)


@pytest.mark.parametrize("kind", ["single", "two-groups"])
def test_scalars_round_trip_through_the_event_file(tmp_path, kind):
    records = _train(kind, tmp_path)
    assert len(records) >= 3
    with TensorBoardWriter(tmp_path) as tb:  # what the Trainer does after each metrics.jsonl line
        for rec in records:
            tb.log_scalars(rec["step"], rec)
    acc = _events(tmp_path)
    keys = {k for rec in records for k, v in rec.items() if k != "step" and isinstance(v, (int, float))}
    assert set(acc.Tags()["scalars"]) == keys
    losses = [k for k in keys if k == "loss" or k.startswith("loss/")]
    assert losses == ["loss"] if kind == "single" else {"loss", "loss/g", "loss/d"} <= set(losses)
    for key in keys:
        got = [(e.step, e.value) for e in acc.Scalars(key)]
        want = [(rec["step"], float(np.float32(rec[key]))) for rec in records if key in rec]
        assert got == want, key


def test_sample_grid_round_trips_with_the_png_pixels(tmp_path):
    g = torch.Generator().manual_seed(1)
    images = torch.rand(6, 1, 8, 8, generator=g) * 2 - 1  # (B, C, H, W) in [-1, 1], like a sample_fn's output
    with TensorBoardWriter(tmp_path) as tb:
        tb.log_images(4, images)
        tb.log_images(8, -images)
    events = _events(tmp_path).Images("samples")
    assert [e.step for e in events] == [4, 8]
    for e, x in zip(events, (images, -images)):
        png = np.asarray(Image.open(io.BytesIO(e.encoded_image_string)))
        grid = make_grid(x, nrow=3)  # ceil(sqrt(6)) per row, as the Trainer's PNG grid
        assert png.shape == (grid.shape[0], grid.shape[1], 3)  # grey stored as RGB
        assert np.array_equal(png[..., 0], grid[..., 0]) and np.array_equal(png[..., 2], grid[..., 0])
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        TensorBoardWriter(tmp_path / "x").log_images(0, images[0])


def test_missing_tensorboard_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import of it raises ImportError
    with pytest.raises(TensorBoardUnavailable, match=r"pip install elbolab\[tensorboard\]"):
        TensorBoardWriter(tmp_path)
    assert not (tmp_path / TENSORBOARD_DIR).exists()


def test_train_tensorboard_true_writes_the_losses_of_metrics_jsonl_and_the_grid(tmp_path):
    """``train.tensorboard = true``: the Trainer itself writes RUN/tensorboard/, with the same losses as
    metrics.jsonl (float32) at the same steps and the end-of-run sample grid."""
    g = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.tensor([2.0, -1.0]) + 0.5 * torch.randn(64, 2, generator=g))

    def sample_fn(model, n, generator):
        return torch.rand(n, 1, 4, 4, generator=generator) * 2 - 1

    Trainer(_Net(), _Denoise(), data, tiny_cfg(steps=6, log_every=2, tensorboard=True), tmp_path,
            sample_fn=sample_fn, n_samples=4, progress=False).fit()
    records = read_metrics(tmp_path)
    acc = _events(tmp_path)
    loss = acc.Scalars("loss")
    assert [e.step for e in loss] == [r["step"] for r in records] == [2, 4, 6]
    assert [e.value for e in loss] == [float(np.float32(r["loss"])) for r in records]
    assert [e.step for e in acc.Images("samples")] == [6]
    Trainer(_Net(), _Denoise(), data, tiny_cfg(steps=2), tmp_path / "plain", progress=False).fit()
    assert not (tmp_path / "plain" / TENSORBOARD_DIR).exists()  # only when asked
