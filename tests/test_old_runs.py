"""Run folders written by elbolab 0.1 (run format 1, tests/fixtures/runs_v1) still load and sample the samples
recorded with them; today's folders record the elbolab version and run format; a newer format is refused."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from elbolab.families import SampleRequest
from elbolab.run_format import RUN_FORMAT, RunFormatError, run_format
from elbolab.runs import draw_samples, load_run

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "runs_v1"


@pytest.mark.parametrize("name", ["ddpm-v1", "vae-v1"])
def test_format_1_run_loads_and_reproduces_its_recorded_samples(name):
    folder = FIXTURES / name
    assert run_format(folder) == 1
    run = load_run(folder)
    recorded = np.load(folder / "recorded_samples.npz")
    meta = json.loads(str(recorded["meta"]))
    assert run.step == meta["step"]
    batch = draw_samples(run, SampleRequest(n=4, seed=meta["seed"]))
    assert batch.nfe == meta["nfe"] and batch.method == meta["method"]
    # recorded in fp32 as uint8 images; the same fp32 computation here, so at most one 8-bit level apart
    # (summation order of a different CPU's kernels can flip a rounding at a bin edge)
    ours = torch.round((batch.images.clamp(-1, 1) + 1) * 127.5).to(torch.int64)
    theirs = torch.from_numpy(recorded["images"].astype(np.int64))
    diff = (ours - theirs).abs()
    assert diff.max() <= 1 and (diff > 0).float().mean() < 0.01, f"max {diff.max()}, share {(diff > 0).float().mean()}"


def test_a_newer_run_format_is_a_clear_error(tmp_path):
    folder = tmp_path / "future"
    shutil.copytree(FIXTURES / "ddpm-v1", folder)
    (folder / "run.json").write_text(json.dumps({"elbolab_version": "9.0", "run_format": RUN_FORMAT + 1}))
    with pytest.raises(RunFormatError, match=f"elbolab 9.0 in run format {RUN_FORMAT + 1}.*upgrade elbolab"):
        load_run(folder)
    (folder / "run.json").write_text("{not json")
    with pytest.raises(RunFormatError, match="run.json is unreadable"):
        load_run(folder)


def test_a_new_run_records_version_and_format(tmp_path):
    from elbolab import __version__
    from elbolab.config import apply_overrides, preset
    from elbolab.runs import train_run

    cfg = apply_overrides(preset("ddpm-tiny"), ["data.limit=16", "train.steps=1", "train.batch_size=8",
                                                "unet.base_channels=4", "unet.head_dim=4"])
    train_run(cfg, tmp_path / "r", progress=False)
    info = json.loads((tmp_path / "r" / "run.json").read_text())
    assert info == {"elbolab_version": __version__, "run_format": RUN_FORMAT} and run_format(tmp_path / "r") == 2
    text = (tmp_path / "r" / "config.toml").read_text()
    assert "[model.unet]" in text and "[vae]" not in text and "[model.vae]" not in text
