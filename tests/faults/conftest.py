"""The fault suite's shared state: one tiny run trained once per session, the CLI as a subprocess, and the
checks every scenario makes (exit code, one error line naming the bad thing, no traceback, run intact)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

import faults_keys as K

HERE = Path(__file__).parent
INJECT = HERE / "inject"  # sitecustomize.py: faults described by $ELBOLAB_TEST_FAULT
TIMEOUT = 240


def _src_dir() -> str:
    import elbolab

    return str(Path(elbolab.__file__).resolve().parent.parent)  # the same code the test process imports


def cli_env(fault: dict | None = None, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("ELBOLAB_DEBUG", None)
    env["PYTHONPATH"] = os.pathsep.join([str(INJECT), _src_dir()])
    env["OMP_NUM_THREADS"] = "1"
    env["TQDM_DISABLE"] = "1"
    if fault is not None:
        env["ELBOLAB_TEST_FAULT"] = json.dumps(fault)
    env.update(extra)
    return env


def elbolab(*args: str, fault: dict | None = None, timeout: float = TIMEOUT, **popen) -> subprocess.CompletedProcess:
    """Run ``python -m elbolab ARGS`` as a user would; returns the finished process (text stdout/stderr)."""
    return subprocess.run([sys.executable, "-m", "elbolab", *args], capture_output=True, text=True,
                          env=cli_env(fault), timeout=timeout, **popen)


def start_elbolab(*args: str, fault: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "elbolab", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=cli_env(fault))


def sets(*pairs: str) -> list[str]:
    return [a for p in pairs for a in ("--set", p)]


def train_args(out: Path, *more_sets: str, steps: int = K.STEPS, resume: bool = False) -> list[str]:
    return ["train", K.PRESET, "--out", str(out), *sets(*K.TINY, *more_sets), "--steps", str(steps),
            *(["--resume"] if resume else [])]


CURRENT = threading.local()  # .name: the scenario running in this thread


def _log_message(code: int, line: str) -> None:
    """With ELBOLAB_FAULT_REPORT=PATH, append each scenario's exit code and error line there (JSON lines)."""
    path = os.environ.get("ELBOLAB_FAULT_REPORT")
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"scenario": getattr(CURRENT, "name", "?"), "exit": code, "line": line}) + "\n")


def assert_error(p: subprocess.CompletedProcess, code: str, *names: str) -> str:
    """Exit code of class ``code``, no traceback, exactly one error line, last on stderr, naming ``names``."""
    err = p.stderr
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if ": error: " in line]
    assert p.returncode == K.EXIT[code], f"exit {p.returncode}, expected {K.EXIT[code]} ({code}):\n{err}"
    assert len(errors) == 1 and lines[-1] == errors[0], err
    _log_message(p.returncode, errors[0])
    for name in names:
        assert str(name) in errors[0], f"{name!r} not named in: {errors[0]}"
    return errors[0]


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass
class BaseRun:
    folder: Path
    hashes: dict[str, str]  # the checkpoint files and config.toml
    samples: torch.Tensor  # 4 samples, seed 7, 2 DDIM steps, from the EMA weights

    def copy(self, to: Path) -> Path:
        shutil.copytree(self.folder, to, symlinks=True)
        return to


_DRAW_LOCK = threading.Lock()  # scenarios run in threads (test_faults_cli.launched); one in-process load at a time


def draw(folder: Path) -> torch.Tensor:
    """Load the run in-process and sample it (the API the CLI's sample verb calls)."""
    from elbolab.runs import SampleRequest, draw_samples, load_run

    fields = {f.name for f in dataclasses.fields(SampleRequest)}
    steps = {"options": {"steps": 2}} if "options" in fields else {"steps": 2}  # the registry's spelling, or 0.1's
    with _DRAW_LOCK:
        run = load_run(folder)
        return draw_samples(run, SampleRequest(n=4, seed=7, sampler="ddim", **steps)).images


def assert_intact(folder: Path, base: BaseRun, *, changed: tuple[str, ...] = ()) -> None:
    """The run's checkpoint files (and config, unless in ``changed``: a resume rewrites its [train]) are byte
    for byte the shared run's, no staging or temporary files are left, and it loads and samples the same."""
    for name, digest in base.hashes.items():
        if name not in changed:
            assert sha(folder / name) == digest, f"{folder / name} changed"
    assert not (folder / K.STAGING).exists(), "staging debris left behind"
    assert not list(folder.glob(".*.tmp")), "temporary files left behind"
    assert torch.equal(draw(folder), base.samples)


@pytest.fixture(scope="session")
def base_run(tmp_path_factory) -> BaseRun:
    folder = tmp_path_factory.mktemp("faults") / "base"
    p = elbolab(*train_args(folder))
    assert p.returncode == 0, p.stderr
    hashes = {n: sha(folder / n) for n in (*K.CHECKPOINT_FILES, K.CONFIG)}
    return BaseRun(folder=folder, hashes=hashes, samples=draw(folder))
