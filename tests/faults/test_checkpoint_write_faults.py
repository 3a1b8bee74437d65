"""A checkpoint save that fails (ENOSPC, EIO, EACCES) at any of its writes leaves the last good checkpoint,
no staging debris, and an error naming the step it could not write and the last good one."""

from __future__ import annotations

import errno
import os
import stat
import subprocess
from pathlib import Path

import pytest
import torch

from elbolab.errors import ExitCode, describe
from elbolab.train import load_checkpoint, save_checkpoint
from elbolab.train.checkpoint import MANIFEST_FILE, STAGING_DIR, CheckpointWriteError


def _payload(step: int, n: int = 64):
    model = {"w": torch.full((n, n), float(step))}
    ema = {"w": torch.full((n, n), float(step) + 0.5)}
    return model, ema, {"step": step, "m": torch.full((3,), float(step))}


def _entries(run: Path) -> list[str]:
    return sorted(p.name for p in run.iterdir())


class _FailingFsync:
    """os.fsync that raises OSError(err) at its k-th call on a regular file (each staged file is fsynced once)."""

    def __init__(self, k: int, err: int):
        self.k, self.err, self.calls = k, err, 0
        self._real = os.fsync

    def __call__(self, fd: int) -> None:
        if stat.S_ISREG(os.fstat(fd).st_mode):
            self.calls += 1
            if self.calls == self.k:
                raise OSError(self.err, os.strerror(self.err))
        self._real(fd)


@pytest.mark.parametrize("err, code", [(errno.ENOSPC, ExitCode.DISK_FULL), (errno.EIO, ExitCode.IO),
                                       (errno.EACCES, ExitCode.PERMISSION)])
@pytest.mark.parametrize("k", [1, 3, 5])  # model, trainer_state.safetensors, the manifest (the commit)
def test_failed_save_keeps_last_good_and_leaves_no_debris(tmp_path, monkeypatch, err, code, k):
    run = tmp_path / "run"
    save_checkpoint(run, 3, *_payload(3))
    before = _entries(run)
    fsync = _FailingFsync(k, err)
    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(CheckpointWriteError) as e:
        save_checkpoint(run, 7, *_payload(7))
    monkeypatch.undo()
    assert e.value.errno == err and e.value.step == 7 and e.value.last_good_step == 3
    message, got = describe(e.value)
    assert got == int(code)
    assert "step 7" in message and "last good checkpoint is step 3" in message and "--resume" in message
    assert _entries(run) == before and not (run / STAGING_DIR).exists()  # no .checkpoint-next, no .tmp files
    ckpt = load_checkpoint(run)
    assert ckpt.step == 3 and torch.equal(ckpt.model["w"], torch.full((64, 64), 3.0))
    save_checkpoint(run, 8, *_payload(8))  # the next save works once the cause is gone
    assert load_checkpoint(run).step == 8


def test_failed_first_save_says_there_is_no_checkpoint(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "fsync", _FailingFsync(2, errno.ENOSPC))
    with pytest.raises(CheckpointWriteError) as e:
        save_checkpoint(tmp_path / "run", 1, *_payload(1))
    assert e.value.last_good_step is None and "holds no checkpoint yet" in str(e.value)
    assert _entries(tmp_path / "run") == []


def test_real_full_disk_on_a_tmpfs(tmp_path, monkeypatch):
    """ENOSPC from a real 600 KiB tmpfs: the 8 KiB checkpoint fits, the 2 x 1 MiB one does not. Where no
    tmpfs can be mounted (not root), the same assertions run with ENOSPC injected at the first write."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=600k", "tmpfs", str(mnt)],
                             capture_output=True).returncode == 0
    try:
        run = mnt / "run"
        save_checkpoint(run, 2, *_payload(2, n=32))
        before = _entries(run)
        if not mounted:
            monkeypatch.setattr(os, "fsync", _FailingFsync(1, errno.ENOSPC))
        with pytest.raises(CheckpointWriteError) as e:
            save_checkpoint(run, 5, *_payload(5, n=512))
        monkeypatch.undo()
        assert e.value.errno == errno.ENOSPC and e.value.last_good_step == 2
        assert _entries(run) == before and load_checkpoint(run).step == 2
        assert (run / MANIFEST_FILE).exists()
    finally:
        if mounted:
            subprocess.run(["umount", str(mnt)], check=False)


def test_weights_of_another_model_are_described_briefly(tmp_path):
    from torch import nn

    from elbolab.train import CheckpointError, load_weights

    save_checkpoint(tmp_path / "run", 1, {"w": torch.zeros(3, 3), "extra": torch.zeros(1)}, {}, {})
    with pytest.raises(CheckpointError) as e:
        load_weights(tmp_path / "run", nn.Linear(3, 4), ema=False)
    msg = str(e.value)
    assert "does not fit Linear" in msg and "2 weight(s) missing: weight, bias" in msg
    assert "2 weight(s) unexpected: extra, w" in msg and "\n" not in msg
    save_checkpoint(tmp_path / "run", 2, {"weight": torch.zeros(3, 3), "bias": torch.zeros(4)}, {}, {})
    with pytest.raises(CheckpointError, match=r"1 weight\(s\) of another shape: weight \(3, 3\) != \(4, 3\)"):
        load_weights(tmp_path / "run", nn.Linear(3, 4), ema=False)
