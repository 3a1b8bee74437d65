"""The fault-injection suite: the ``elbolab`` command run as a user runs it, over the faults a user meets.

Every scenario asserts the exit code of its class, one error line naming the bad thing, no traceback, and
that the run it touched still loads and samples the same (or, where the fault is in the run itself, that
nothing else changed and the run is whole again once the file is restored). One tiny run is trained per
session (``base_run``) and copied per scenario. Config keys and exit codes are spelled in faults_keys.py.

Each scenario is a function registered with :func:`scenario`; the test ``test_fault[NAME]`` reports it.
Since nearly all of a scenario's time is the subprocesses' torch import, the selected scenarios all start
at once in a thread pool (``launched``, longest first) and each test waits for its own and re-raises its
failure: the suite costs its total CPU time divided by the cores, not the sum of its subprocesses' waits.
"""

from __future__ import annotations

import errno
import os
import random
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

import faults_images as images
import faults_keys as K
from conftest import CURRENT, BaseRun, assert_error, assert_intact, draw, elbolab, sets, sha, start_elbolab, train_args

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "runs_v1"
VAE_RUN = FIXTURES / "vae-v1"  # a run folder of another family (written by elbolab 0.1.0)

Scenario = Callable[[Path, BaseRun], None]  # (its own empty folder, the shared run); raises on failure
SCENARIOS: dict[str, tuple[Scenario, int]] = {}  # name -> (function, cost: subprocesses it runs, for ordering)


def scenario(scenario_id: str, /, cost: int = 1, **params):
    """Register ``fn(work, base, **params)`` as scenario ``scenario_id``; ``cost``: its CLI runs (ordering)."""
    def register(fn):
        assert scenario_id not in SCENARIOS, scenario_id
        SCENARIOS[scenario_id] = ((lambda work, base: fn(work, base, **params)), cost)
        return fn
    return register


def _copy(base: BaseRun, work: Path) -> Path:
    return base.copy(work / "run")


def _sample(run: Path, out: Path) -> subprocess.CompletedProcess:
    return elbolab("sample", str(run), "--n", "2", "--steps", "2", "--out", str(out))


def _checkpoint_step(run: Path) -> int:
    from elbolab.train import load_checkpoint

    return load_checkpoint(run).step  # verifies every file against the manifest's SHA-256


def _folder_args(folder: Path) -> list[str]:
    return ["--data", f"imagefolder:{folder}"]


# --------------------------------------------------------------------------------------------------
# The four failures of the issue
# --------------------------------------------------------------------------------------------------
@scenario("issue-nonfinite-loss")
def _nonfinite(work: Path, base: BaseRun) -> None:
    run = _copy(base, work)
    p = elbolab(*train_args(run, f"{K.LR}=1e9", f"{K.GRAD_CLIP}=0", f"{K.WARMUP}=0", steps=8, resume=True))
    assert_error(p, "diverged", "non-finite", f"step {K.STEPS}", K.LR)
    assert_intact(run, base, changed=(K.CONFIG,))


def _mount_tmpfs(path: Path, kib: int) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={kib}k", "tmpfs", str(path)],
                          capture_output=True).returncode == 0


@scenario("issue-disk-full")
def _disk_full(work: Path, base: BaseRun) -> None:
    """A tmpfs just larger than the run, so that the next checkpoint cannot be staged; where mounting is not
    allowed (not root), ENOSPC is injected at the first write into the staging folder."""
    mnt = work / "small"
    used_kib = sum(f.stat().st_size for f in base.folder.rglob("*") if f.is_file()) // 1024
    mounted = _mount_tmpfs(mnt, used_kib + 96)
    try:
        run = base.copy(mnt / "run")
        fault = None if mounted else {"action": "raise", "errno": errno.ENOSPC, "ops": ["fsync"],
                                      "under": str(run), "names": [K.STAGING], "k": 1}
        p = elbolab(*train_args(run, f"{K.CHECKPOINT_EVERY}=2", steps=8, resume=True), fault=fault)
        assert_error(p, "disk_full", "No space left on device", "step 6",
                     f"last good checkpoint is step {K.STEPS}", "--resume")
        assert_intact(run, base, changed=(K.CONFIG,))
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(mnt)], check=False)


def _wait_training(run: Path, proc: subprocess.Popen, timeout: float = 240.0) -> None:
    """Until the resumed run has logged a step (metrics.jsonl gains a line): it is inside the training loop."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if proc.poll() is not None:
            raise AssertionError(f"the training process ended early ({proc.returncode}):\n{proc.stderr.read()}")
        if (run / K.METRICS).exists() and (run / K.METRICS).read_text().strip():
            return
        time.sleep(0.2)
    raise AssertionError("the training process did not reach its first logged step")


def _interrupt(work: Path, base: BaseRun, sig: signal.Signals, second_writer: bool) -> None:
    run = _copy(base, work)
    holder = start_elbolab(*train_args(run, f"{K.LOG_EVERY}=1", f"{K.CHECKPOINT_EVERY}=100000", steps=100000,
                                       resume=True), "--minutes", "3")
    try:
        _wait_training(run, holder)
        if second_writer:  # the two writers: the second is refused at once, naming the first
            holder.send_signal(signal.SIGSTOP)  # paused meanwhile (it keeps its lock and spends no CPU)
            try:
                second = elbolab(*train_args(run, steps=200, resume=True))
            finally:
                holder.send_signal(signal.SIGCONT)
            assert_error(second, "locked", str(holder.pid), "train", str(run))
        holder.send_signal(sig)
        _, err = holder.communicate(timeout=180)
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
    assert holder.returncode == K.EXIT["interrupted"], err
    assert "Traceback" not in err and sig.name in err  # the Trainer names the signal it stopped on
    assert _checkpoint_step(run) > K.STEPS and not (run / K.STAGING).exists()  # saved at the current step
    assert draw(run).shape == base.samples.shape


scenario("issue-two-writers-then-sigint", cost=3, sig=signal.SIGINT, second_writer=True)(_interrupt)
scenario("sigterm", cost=2, sig=signal.SIGTERM, second_writer=False)(_interrupt)


@scenario("issue-imagefolder-28px-with-tiny-preset")
def _imagefolder_28(work: Path, base: BaseRun) -> None:
    images.digits(work / "digits", n=16, size=28)
    out = work / "run"
    p = elbolab(*train_args(out, f"{K.HOLDOUT}=0", steps=1), *_folder_args(work / "digits"))
    assert p.returncode == 0 and "Traceback" not in p.stderr, p.stderr
    assert f"{K.IMAGE_SIZE_IN_CONFIG} = 28" in (out / K.CONFIG).read_text()
    assert draw(out).shape[-2:] == (28, 28)


# --------------------------------------------------------------------------------------------------
# Corrupt, truncated and foreign files in every file of a run folder
# --------------------------------------------------------------------------------------------------
def _truncate_toml(path: Path) -> None:
    text = path.read_text()
    cut = text.index(" = ", len(text) // 2) + 2  # ends inside a "key =" line: not valid TOML
    path.write_text(text[:cut])


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _foreign_png(path: Path) -> None:
    images.save_png(path.with_name("x.png"), np.zeros((8, 8), np.uint8)).replace(path)


def _foreign_from(other: Path):
    def put(path: Path) -> None:
        shutil.copyfile(other / path.name, path)
    return put


def _spoiled_sample(work: Path, base: BaseRun, name: str, spoil, code: str, named: str) -> None:
    run = _copy(base, work)
    spoil(run / name)
    p = _sample(run, work / "grid.png")
    assert_error(p, code, named)
    assert not (work / "grid.png").exists()
    shutil.copyfile(base.folder / name, run / name)  # restored: nothing else was touched
    assert_intact(run, base)


for _case, _spec in {  # file, how it is spoiled, the class of error, what the error line must name
    "config-truncated": (K.CONFIG, _truncate_toml, "config", K.CONFIG),
    "config-foreign-binary": (K.CONFIG, _foreign_png, "config", K.CONFIG),
    "model-truncated": (K.MODEL, _truncate, "run", K.MODEL),
    "model-foreign": (K.MODEL, _foreign_from(VAE_RUN), "run", K.MODEL),
    "model-missing": (K.MODEL, Path.unlink, "run", K.MODEL),
    "ema-truncated": (K.EMA, _truncate, "run", K.EMA),
    "ema-foreign": (K.EMA, _foreign_png, "run", K.EMA),
    "manifest-truncated": (K.MANIFEST, _truncate, "run", K.MANIFEST),
    "manifest-foreign": (K.MANIFEST, _foreign_from(VAE_RUN), "run", "manifest"),
}.items():
    scenario(f"run-file-{_case}", name=_spec[0], spoil=_spec[1], code=_spec[2], named=_spec[3])(_spoiled_sample)


def _spoiled_resume(work: Path, base: BaseRun, name: str, spoil) -> None:
    run = _copy(base, work)
    spoil(run / name)
    p = elbolab(*train_args(run, steps=8, resume=True))
    assert_error(p, "run", name)
    shutil.copyfile(base.folder / name, run / name)
    assert_intact(run, base, changed=(K.CONFIG,))


scenario("run-file-state-tensors-truncated", name=K.STATE_TENSORS, spoil=_truncate)(_spoiled_resume)
scenario("run-file-state-json-foreign", name=K.STATE_JSON, spoil=_foreign_from(VAE_RUN))(_spoiled_resume)


@scenario("run-file-metrics-torn")
def _torn_metrics(work: Path, base: BaseRun) -> None:
    run = _copy(base, work)
    (run / K.METRICS).write_bytes(b'{"step": 2, "loss": 1.0}\n{"step": 3, "lo')
    p = elbolab(*train_args(run, steps=5, resume=True))
    assert p.returncode == 0 and "Traceback" not in p.stderr, p.stderr
    assert K.METRICS in p.stderr and "unreadable line" in p.stderr  # named, dropped, and the run goes on
    assert _checkpoint_step(run) == 5


@scenario("run-folder-missing")
def _missing_folder(work: Path, base: BaseRun) -> None:
    p = _sample(work / "nowhere", work / "g.png")
    assert_error(p, "run", str(work / "nowhere"), "elbolab train")


@scenario("run-folder-not-a-run")
def _not_a_run(work: Path, base: BaseRun) -> None:
    (work / "empty").mkdir()
    p = _sample(work / "empty", work / "g.png")
    assert_error(p, "run", str(work / "empty"), K.CONFIG)


# --------------------------------------------------------------------------------------------------
# Another family's run folder, weights or config key
# --------------------------------------------------------------------------------------------------
@scenario("family-ddpm-verb-on-vae-run")
def _ddpm_verb_on_vae(work: Path, base: BaseRun) -> None:
    run = shutil.copytree(VAE_RUN, work / "vae")
    p = elbolab(*K.DDPM_ONLY_VERB[:1], str(run), *K.DDPM_ONLY_VERB[1:], "--out", str(work / "o"))
    assert_error(p, "run", "vae", str(run))


@scenario("family-ddpm-resume-into-vae-run")
def _resume_into_vae(work: Path, base: BaseRun) -> None:
    run = shutil.copytree(VAE_RUN, work / "vae")
    before = {n: sha(run / n) for n in K.CHECKPOINT_FILES}
    p = elbolab(*train_args(run, steps=5, resume=True))
    assert_error(p, "run", "vae", K.PRESET.split("-")[0])
    assert {n: sha(run / n) for n in K.CHECKPOINT_FILES} == before


@scenario("family-vae-weights-in-ddpm-run")
def _foreign_weights(work: Path, base: BaseRun) -> None:
    run = _copy(base, work)
    for name in K.CHECKPOINT_FILES:
        shutil.copyfile(VAE_RUN / name, run / name)
    p = _sample(run, work / "g.png")
    assert_error(p, "run", str(run), "does not fit")


@scenario("config-set-key-of-another-family")
def _wrong_family_key(work: Path, base: BaseRun) -> None:
    p = elbolab(*train_args(work / "run"), *sets(K.WRONG_FAMILY_KEY))
    assert_error(p, "config", K.WRONG_FAMILY_NAME)
    assert not (work / "run" / K.MANIFEST).exists()


@scenario("config-file-with-section-of-another-family")
def _wrong_family_toml(work: Path, base: BaseRun) -> None:
    toml = work / "mixed.toml"
    toml.write_text(K.WRONG_FAMILY_TOML)
    p = elbolab("train", str(toml), "--out", str(work / "run"), "--steps", "1")
    assert_error(p, "config", K.WRONG_FAMILY_TOML_NAME, str(toml))


# --------------------------------------------------------------------------------------------------
# An unwritable run folder (as root, chmod does not stop a write: the PermissionError is injected)
# --------------------------------------------------------------------------------------------------
def _denied(folder: Path) -> dict:
    return {"action": "raise", "errno": errno.EACCES, "ops": ["open", "mkdir", "replace"], "under": str(folder),
            "k": 0}


@scenario("unwritable-run-folder-resume")
def _unwritable_resume(work: Path, base: BaseRun) -> None:
    run = _copy(base, work)
    p = elbolab(*train_args(run, steps=8, resume=True), fault=_denied(run))
    assert_error(p, "permission", "Permission denied", str(run))
    assert_intact(run, base)


@scenario("unwritable-sample-output")
def _unwritable_sample(work: Path, base: BaseRun) -> None:
    run = _copy(base, work)
    out = work / "locked"
    out.mkdir()
    p = elbolab("sample", str(run), "--n", "2", "--steps", "2", "--out", str(out / "g.png"), fault=_denied(out))
    assert_error(p, "permission", "Permission denied", str(out))
    assert_intact(run, base)


# --------------------------------------------------------------------------------------------------
# SIGKILL at the k-th write or rename of a checkpoint (k drawn from a seed)
# --------------------------------------------------------------------------------------------------
EVENTS_PER_SAVE = 15  # 4 files + manifest: 5 fsyncs and 5 renames into the staging folder, 5 installs


def _sigkill(work: Path, base: BaseRun, seed: int) -> None:
    run = _copy(base, work)
    k = random.Random(seed).randint(1, 2 * EVENTS_PER_SAVE)  # saves at steps 6 and 8
    fault = {"action": "kill", "ops": ["fsync", "replace"], "under": str(run),
             "names": [*K.CHECKPOINT_FILES, K.STAGING], "k": k}
    p = elbolab(*train_args(run, f"{K.CHECKPOINT_EVERY}=2", steps=8, resume=True), fault=fault)
    assert p.returncode == -signal.SIGKILL, (k, p.stderr)
    # event 10 of a save is the rename of its manifest into the staging folder (the commit); the kill comes
    # before the call, so a save is the checkpoint from k = 11 on (installed by the resume's recovery)
    expected = 4 if k <= 10 else 6 if k <= EVENTS_PER_SAVE + 10 else 8
    assert _checkpoint_step(run) == expected, (k, expected)  # one whole checkpoint, whatever the instant
    if seed == 0:  # the resume finishes (or discards) the interrupted save and trains on to step 8
        p = elbolab(*train_args(run, f"{K.CHECKPOINT_EVERY}=2", steps=8, resume=True))
        assert p.returncode == 0 and "Traceback" not in p.stderr, p.stderr
        assert _checkpoint_step(run) == 8
    else:  # the same recovery in-process (what a resume runs first), to spare a CLI run
        from elbolab.train import recover

        recover(run)
        assert _checkpoint_step(run) == expected
    assert not (run / K.STAGING).exists()


for _seed in (0, 1, 2):
    scenario(f"sigkill-checkpoint-seed{_seed}", cost=2 if _seed == 0 else 1, seed=_seed)(_sigkill)


# --------------------------------------------------------------------------------------------------
# Image folders
# --------------------------------------------------------------------------------------------------
BAD_IMAGES = {
    "truncated.jpg": (images.truncated_jpeg, "truncated image data"),
    "huge.png": (images.bomb_png, "decompression-bomb guard"),
    "notes.png": (images.text_file, "not a PNG/JPG/JPEG image"),
    "empty.png": (images.empty_file, "empty file (0 bytes)"),
    "loop.png": (images.symlink_loop, "symbolic link loop"),
}


def _bad_folder(work: Path) -> Path:
    folder = work / "bad"
    images.digits(folder, n=12, size=28)
    for name, (make, _) in BAD_IMAGES.items():
        make(folder / name)
    return folder


@scenario("imagefolder-bad-files-named")
def _bad_images(work: Path, base: BaseRun) -> None:
    folder = _bad_folder(work)
    p = elbolab(*train_args(work / "run", f"{K.HOLDOUT}=0", steps=1), *_folder_args(folder))
    line = assert_error(p, "data", "6 unreadable image file(s)", K.ON_ERROR)  # the loop is two links
    for name, (_, reason) in BAD_IMAGES.items():
        assert f"{folder / name}: " in line and reason in line, name
    assert not (work / "run" / K.MANIFEST).exists()


@scenario("imagefolder-bad-files-skipped")
def _bad_images_skipped(work: Path, base: BaseRun) -> None:
    folder = _bad_folder(work)
    p = elbolab(*train_args(work / "run", f"{K.HOLDOUT}=0", f'{K.ON_ERROR}="skip"', steps=1), *_folder_args(folder))
    assert p.returncode == 0 and "Traceback" not in p.stderr, p.stderr
    assert "skipped 6 unreadable image file(s)" in p.stderr
    for name in BAD_IMAGES:
        assert str(folder / name) in p.stderr
    assert draw(work / "run").shape[-2:] == (28, 28)


@scenario("imagefolder-grey-rgb-mix")
def _grey_rgb_mix(work: Path, base: BaseRun) -> None:
    images.digits(work / "mix", n=10, size=28)
    rgb = images.digits(work / "colour", n=1, size=28, rgb=True)[0].rename(work / "mix" / "rgb.png")
    p = elbolab(*train_args(work / "run", f"{K.HOLDOUT}=0", steps=1), *_folder_args(work / "mix"))
    assert p.returncode == 0 and "Traceback" not in p.stderr, p.stderr
    assert "10 grey and 1 colour images" in p.stderr and str(rgb) in p.stderr and "data.channels" in p.stderr


# --------------------------------------------------------------------------------------------------
# The runner
# --------------------------------------------------------------------------------------------------
WORKERS = int(os.environ.get("ELBOLAB_FAULT_WORKERS", str(min(4, (os.cpu_count() or 1) + 1))))


def _named(name: str, fn: Scenario) -> Scenario:
    def run(work: Path, base: BaseRun) -> None:
        CURRENT.name = name  # for the message log of assert_error (ELBOLAB_FAULT_REPORT)
        fn(work, base)
    return run


@pytest.fixture(scope="session")
def launched(request, base_run, tmp_path_factory) -> dict[str, Future]:
    """Start every selected scenario at once (longest first) in a pool of WORKERS threads."""
    wanted = [item.callspec.params["name"] for item in request.session.items
              if getattr(item, "originalname", None) == "test_fault" and hasattr(item, "callspec")]
    wanted.sort(key=lambda n: -SCENARIOS[n][1])
    pool = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="fault")
    futures = {n: pool.submit(_named(n, SCENARIOS[n][0]), tmp_path_factory.mktemp(n), base_run) for n in wanted}
    yield futures
    pool.shutdown(wait=True, cancel_futures=True)


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_fault(name: str, launched: dict[str, Future]) -> None:
    launched[name].result()  # re-raises the scenario's assertion, with its traceback


def test_there_are_at_least_25_scenarios():
    assert len(SCENARIOS) >= 25, sorted(SCENARIOS)
