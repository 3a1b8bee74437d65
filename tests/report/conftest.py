"""A real tiny DDPM run for the report tests: trained and evaluated through the CLI once per session.

``elbolab train ddpm-tiny`` for 4 steps (a log line per step, a sample grid every 2 steps) and
``elbolab eval RUN --bpd --bpd-n 8`` (writes ``metrics.json``); then a ``sampler_quality.json`` in the format
the report defines (rows ``{sampler, nfe, fid, precision, recall, seconds_per_image}``), since
``benchmarks/sampler_quality.py`` is too slow for a unit test.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from elbolab.config import RunConfig

# the family's sections sit under [model] since the family registry (older layout: top level)
_M = "model." if "model" in {f.name for f in dataclasses.fields(RunConfig)} else ""
TRAIN_ARGS = ["train", "ddpm-tiny", "--steps", "4", "--set", f"{_M}unet.base_channels=4", "--set",
              f"{_M}unet.head_dim=4", "--set", "data.limit=64", "--set", "train.batch_size=8", "--set",
              "train.log_every=1", "--set", "train.sample_every=2"]

SAMPLER_QUALITY = [
    {"sampler": "ddim", "nfe": 10, "fid": 41.23456789, "precision": 0.41234, "recall": 0.30987,
     "seconds_per_image": 0.0123456},
    {"sampler": "ddim", "nfe": 50, "fid": 20.5, "precision": 0.5, "recall": 0.45, "seconds_per_image": 0.061},
    {"sampler": "ancestral", "nfe": 100, "fid": 15.0049, "precision": None, "recall": None,
     "seconds_per_image": None},
]


def _elbolab(*args: str) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "elbolab", *args], capture_output=True, text=True, env=env,
                          timeout=300)
    if proc.returncode != 0:
        raise AssertionError(f"elbolab {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("report") / "ddpm-tiny"
    _elbolab(*TRAIN_ARGS, "--out", str(run))
    _elbolab("eval", str(run), "--bpd", "--bpd-n", "8")
    (run / "sampler_quality.json").write_text(json.dumps(SAMPLER_QUALITY, indent=2))
    assert (run / "metrics.json").is_file() and list((run / "samples").glob("step_*.png"))
    return run
