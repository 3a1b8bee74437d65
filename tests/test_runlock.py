"""elbolab.runlock: one writer per run folder; the kernel releases the lock of a dead process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from elbolab.errors import ExitCode, RunLockedError, describe
from elbolab.runlock import LOCK_FILE, RunLock, read_holder

_HOLDER = textwrap.dedent("""
    import sys, time
    from elbolab.runlock import RunLock
    lock = RunLock(sys.argv[1], command="elbolab train ddpm-tiny --out twin").acquire()
    print("locked", flush=True)
    time.sleep(120)
""")


def _start_holder(run_dir):
    p = subprocess.Popen([sys.executable, "-c", _HOLDER, str(run_dir)], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "locked"
    return p


def test_second_writer_is_refused_with_pid_and_command_and_sigkill_releases(tmp_path):
    run = tmp_path / "twin"
    holder = _start_holder(run)
    try:
        assert read_holder(run) == (holder.pid, "elbolab train ddpm-tiny --out twin")
        with pytest.raises(RunLockedError) as e:
            RunLock(run, command="elbolab train ddpm-tiny --out twin --resume").acquire()
        assert e.value.pid == holder.pid and e.value.command == "elbolab train ddpm-tiny --out twin"
        message, code = describe(e.value)
        assert code == ExitCode.LOCKED and str(holder.pid) in message and "--out twin" in message
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
    assert (run / LOCK_FILE).exists()  # a stale file, but no stale lock
    with RunLock(run, command="second") as lock:
        assert lock.active and read_holder(run) == (os.getpid(), "second")
    assert read_holder(run) == (None, None)  # released: the record is cleared


def test_lock_is_exclusive_within_one_process_and_reusable(tmp_path):
    a = RunLock(tmp_path / "r", command="a").acquire()
    with pytest.raises(RunLockedError):  # flock is per open file description: a second open is refused too
        RunLock(tmp_path / "r", command="b").acquire()
    with pytest.raises(RuntimeError):
        a.acquire()
    a.release()
    a.release()  # idempotent
    with RunLock(tmp_path / "r", command="b"):
        pass


def test_only_rank_zero_takes_the_lock(tmp_path, monkeypatch):
    with RunLock(tmp_path / "r", command="rank0"):
        monkeypatch.setenv("RANK", "1")
        other = RunLock(tmp_path / "r", command="rank1").acquire()  # not refused: rank 0 of its job holds it
        assert not other.active
        other.release()


def test_default_command_is_this_process_command_line(tmp_path):
    p = subprocess.run([sys.executable, "-c", "import sys; sys.argv = ['/x/elbolab/__main__.py', 'train', 'a b'];"
                        "from elbolab.runlock import RunLock; print(RunLock(sys.argv[1]).command)"],
                       capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert p.stdout.strip() == "elbolab train 'a b'", p.stderr


def test_the_ode_nll_entry_is_written_under_the_run_lock(tmp_path):
    """eval --nll ode rewrites metrics.json (read-modify-write): refused while another process holds the run."""
    from elbolab.report.ode_nll import read_metrics, write_nll_metrics

    run = tmp_path / "run"
    holder = _start_holder(run)
    try:
        with pytest.raises(RunLockedError):
            write_nll_metrics(run, {"bpd": 1.0})
        assert not (run / "metrics.json").exists()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
    write_nll_metrics(run, {"bpd": 1.0})
    assert read_metrics(run)["nll_ode"] == {"bpd": 1.0}
