"""The guidance sweep (the notes' figure and table) on a tiny class-conditional run."""

import json

import pytest
import torch
from PIL import Image

from elbolab.apps.guidance_sweep import GuidanceRow, guidance_sweep, parse_guidance_weights
from elbolab.config import DataConfig, Precision, RunConfig, SampleConfig, TrainConfig, apply_overrides
from elbolab.nn.config import unet_preset
from elbolab.diffusion.config import DiffusionConfig
from elbolab.families.ddpm import DDPMConfig


def test_parse_guidance_weights():
    assert parse_guidance_weights("-1,-0.2,0,1,2") == [-1.0, -0.2, 0.0, 1.0, 2.0]
    assert parse_guidance_weights([1, 2.5]) == [1.0, 2.5]
    for bad in ["1,x", "", "1,,2", "nan", "1,inf"]:
        with pytest.raises(ValueError):
            parse_guidance_weights(bad)


@pytest.mark.slow
def test_guidance_sweep_writes_figure_and_table(tmp_path):
    from elbolab.runs import load_run, train_run

    unet = unet_preset("tiny")
    unet.num_classes = 10
    cfg = RunConfig(family="ddpm", data=DataConfig(name="mnist-embedded", limit=64),
                    model=DDPMConfig(unet=unet, diffusion=DiffusionConfig(T=20, beta_start=1e-3, beta_end=0.3)),
                    train=TrainConfig(batch_size=16, steps=1, warmup_steps=0, checkpoint_every=1,
                                      precision=Precision.FP32),
                    sample=SampleConfig(n=2))
    cfg = apply_overrides(cfg, ["sample.ddim.steps=2"])
    train_run(cfg, tmp_path / "run", progress=False)
    run = load_run(tmp_path / "run")
    sweep = guidance_sweep(run, "-1,0,2", tmp_path / "sweep.png", n=20, batch_size=20, reference_limit=200,
                           progress=False)
    assert [r.w for r in sweep.rows] == [-1.0, 0.0, 2.0]
    for r in sweep.rows:
        assert isinstance(r, GuidanceRow) and 0.0 <= r.accuracy <= 1.0 and r.fid > 0
        assert 0.0 <= r.precision <= 1.0 and 0.0 <= r.recall <= 1.0
    assert sweep.nfe == 2 * 2  # DDIM 2 steps, two branches in one batched pass each
    img = Image.open(sweep.png)
    assert img.size[0] > 10 * 28 and img.size[1] > 3 * 28  # one row of 10 classes per w
    table = json.loads(sweep.json.read_text())
    assert [r["w"] for r in table["rows"]] == [-1.0, 0.0, 2.0] and table["n"] == 20
    assert "| w | classifier accuracy | FID |" in sweep.to_text()
    with pytest.raises(ValueError, match=".png"):
        guidance_sweep(run, "1", tmp_path / "sweep.jpg", n=20)
    uncond = apply_overrides(cfg, ["unet.num_classes=0"])
    train_run(uncond, tmp_path / "u", progress=False)
    with pytest.raises(ValueError, match="unconditional"):
        guidance_sweep(load_run(tmp_path / "u"), "1", tmp_path / "u.png", n=20)
