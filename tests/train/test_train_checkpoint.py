"""Checkpoints: exact round trips, corruption reported, a crash at every rename leaves one consistent step,
and SIGKILL of a process that saves in a loop never leaves a checkpoint that fails to load."""

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from elbolab.train import (
    CheckpointError,
    NoCheckpointError,
    checkpoint_step,
    has_checkpoint,
    load_checkpoint,
    load_weights,
    recover,
    save_checkpoint,
)
from elbolab.train.checkpoint import MANIFEST_FILE, STAGING_DIR, flatten_state, unflatten_state

HERE = Path(__file__).parent


def _payload(step: int) -> tuple[dict, dict, dict]:
    model = {"w": torch.full((64, 64), float(step)), "b": torch.arange(5) + step}
    ema = {"w": torch.full((64, 64), float(step) + 0.5)}
    state = {"step": step, "opt": {0: {"exp_avg": torch.full((3,), float(step))}}, "betas": (0.9, 0.999)}
    return model, ema, state


def _assert_consistent(ckpt, step=None):
    s = ckpt.step if step is None else step
    assert ckpt.step == s
    assert torch.equal(ckpt.model["w"], torch.full((64, 64), float(s)))
    assert torch.equal(ckpt.model["b"], torch.arange(5) + s)
    assert torch.equal(ckpt.ema["w"], torch.full((64, 64), float(s) + 0.5))
    assert ckpt.state["step"] == s
    assert torch.equal(ckpt.state["opt"][0]["exp_avg"], torch.full((3,), float(s)))


def test_flatten_round_trip_is_exact():
    tree = {
        "ints": {0: 1, 5: [2, 3]},
        "tuple": (0.1, 1e-300, float("inf")),
        "t": torch.tensor([1.5, -2.0]),
        "rng": torch.get_rng_state(),
        "np": np.random.get_state(),
        "none": None,
        "nested": [{"a": torch.zeros(2, 3, dtype=torch.bfloat16)}],
        "__odd": "keys starting with __ are tagged",
    }
    js, tensors = flatten_state(tree)
    back = unflatten_state(js, tensors)
    assert back["ints"] == {0: 1, 5: [2, 3]}
    assert back["tuple"] == (0.1, 1e-300, float("inf"))
    assert torch.equal(back["t"], tree["t"]) and torch.equal(back["rng"], tree["rng"])
    assert back["np"][0] == "MT19937" and np.array_equal(back["np"][1], tree["np"][1])
    assert back["np"][1].dtype == tree["np"][1].dtype
    assert back["nested"][0]["a"].dtype == torch.bfloat16
    assert back["__odd"] == tree["__odd"] and back["none"] is None
    with pytest.raises(TypeError, match="cannot store"):
        flatten_state({"x": object()})


def test_save_load_round_trip(tmp_path):
    assert not has_checkpoint(tmp_path)
    with pytest.raises(NoCheckpointError):
        load_checkpoint(tmp_path)
    for step in (1, 2):
        save_checkpoint(tmp_path, step, *_payload(step))
    assert checkpoint_step(tmp_path) == 2
    _assert_consistent(load_checkpoint(tmp_path), 2)
    assert not (tmp_path / STAGING_DIR).exists()
    only_model = load_checkpoint(tmp_path, parts=("model",))
    assert only_model.ema == {} and only_model.state == {} and "w" in only_model.model
    with pytest.raises(ValueError, match="choose among"):
        load_checkpoint(tmp_path, parts=("weights",))


def test_corrupt_or_truncated_files_are_reported(tmp_path):
    save_checkpoint(tmp_path, 3, *_payload(3))
    path = tmp_path / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"model\.safetensors.*truncated or corrupt"):
        load_checkpoint(tmp_path, attempts=1)
    load_checkpoint(tmp_path, parts=("ema", "state"))  # the other files are fine

    save_checkpoint(tmp_path, 4, *_payload(4))
    state = tmp_path / "trainer_state.json"
    state.write_bytes(state.read_bytes()[:-10])
    with pytest.raises(CheckpointError, match=r"trainer_state\.json.*truncated or corrupt"):
        load_checkpoint(tmp_path, attempts=1)

    (tmp_path / MANIFEST_FILE).write_text("{not json")
    with pytest.raises(CheckpointError, match="corrupt checkpoint manifest"):
        load_checkpoint(tmp_path, attempts=1)


class _Killed(BaseException):
    """Stands for SIGKILL: not an Exception, so nothing on the way catches it."""


def _count_renames(tmp_path) -> int:
    calls = []
    real = os.replace

    def counting(a, b):
        calls.append((a, b))
        real(a, b)

    d = tmp_path / "count"
    save_checkpoint(d, 1, *_payload(1))
    os.replace = counting
    try:
        save_checkpoint(d, 2, *_payload(2))
    finally:
        os.replace = real
    return len(calls)


def test_crash_at_every_rename_leaves_one_consistent_step(tmp_path, monkeypatch):
    n_renames = _count_renames(tmp_path)
    assert n_renames >= 10  # 4 staged files + manifest + 4 installs + manifest
    real = os.replace
    for crash_after in range(n_renames):
        run = tmp_path / f"crash{crash_after}"
        save_checkpoint(run, 1, *_payload(1))
        done = []

        def flaky(a, b):
            if len(done) == crash_after:
                raise _Killed
            done.append(b)
            real(a, b)

        monkeypatch.setattr(os, "replace", flaky)
        with pytest.raises(_Killed):
            save_checkpoint(run, 2, *_payload(2))
        monkeypatch.setattr(os, "replace", real)
        committed = any(str(b).endswith(os.path.join(STAGING_DIR, MANIFEST_FILE)) for b in done)
        # a reader resolves the checkpoint read-only: the old step before the commit, the new one after
        ckpt = load_checkpoint(run, attempts=1)
        _assert_consistent(ckpt, 2 if committed else 1)
        if committed:
            assert (run / STAGING_DIR).exists()  # a half-installed save really happened
        recover(run)  # the writer's recovery does not change which step the checkpoint is
        assert not (run / STAGING_DIR).exists()
        _assert_consistent(load_checkpoint(run, attempts=1), 2 if committed else 1)
        save_checkpoint(run, 3, *_payload(3))
        _assert_consistent(load_checkpoint(run, attempts=1), 3)


def test_load_weights_prefers_ema(tmp_path):
    model = nn.Linear(3, 2)
    raw = {k: v.clone() for k, v in model.state_dict().items()}
    ema = {"weight": raw["weight"] + 1.0}  # an EMA of part of the model
    save_checkpoint(tmp_path, 7, raw, ema, {"step": 7})
    fresh = nn.Linear(3, 2)
    assert load_weights(tmp_path, fresh, ema=True) == 7
    assert torch.equal(fresh.weight, raw["weight"] + 1.0) and torch.equal(fresh.bias, raw["bias"])
    load_weights(tmp_path, fresh, ema=False)
    assert torch.equal(fresh.weight, raw["weight"])
    with pytest.raises(CheckpointError, match="does not fit"):
        load_weights(tmp_path, nn.Linear(4, 2))


@pytest.mark.slow
def test_sigkill_during_saving_loop_leaves_a_loadable_checkpoint(tmp_path):
    """Processes save ~4 MB checkpoints in a loop; SIGKILL each at a random moment (after a few saves), then
    load read-only (every file from the same step), and let a new writer recover and save on top."""
    rng = random.Random(0)
    runs = [tmp_path / f"run{i}" for i in range(3)]
    procs = [subprocess.Popen([sys.executable, str(HERE / "train_worker.py"), "save-loop", str(run)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for run in runs]
    try:
        for run, proc in zip(runs, procs):
            deadline = time.monotonic() + 120
            while (checkpoint_step(run) or 0) < 2:
                assert proc.poll() is None, proc.stderr.read().decode()
                assert time.monotonic() < deadline, "the worker did not start saving"
                time.sleep(0.01)
            time.sleep(rng.uniform(0.0, 0.4))
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            assert proc.returncode == -signal.SIGKILL
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    for run in runs:
        ckpt = load_checkpoint(run, attempts=1)  # read-only, before any recovery
        s = ckpt.step
        assert s >= 2
        assert torch.equal(ckpt.model["w"], torch.full((1024, 512), float(s)))
        assert torch.equal(ckpt.ema["w"], torch.full((1024, 512), float(s) + 0.5))
        assert ckpt.state["step"] == s and torch.equal(ckpt.state["t"], torch.full((256, 256), float(s)))
        save_checkpoint(run, s + 1, *_payload(s + 1))  # a new writer recovers and carries on
        _assert_consistent(load_checkpoint(run, attempts=1), s + 1)
