"""elbolab.errors: every class of user/environment error -> one line and its own exit code; bugs keep tracebacks."""

from __future__ import annotations

import errno
import importlib
import io
import os
import subprocess
import sys
import textwrap
from argparse import Namespace
from contextlib import redirect_stderr

import pytest

from elbolab import errors
from elbolab.cli import run_cli
from elbolab.errors import ExitCode, describe


def _raise(exc: BaseException) -> BaseException:
    """``exc`` as raised from this test module (not elbolab's code), with a traceback."""
    try:
        raise exc
    except BaseException as e:  # noqa: BLE001
        return e


@pytest.mark.parametrize("module,name,code", [
    ("elbolab.config", "ConfigError", ExitCode.CONFIG), ("elbolab.data.errors", "DataError", ExitCode.DATA),
    ("elbolab.train.checkpoint", "CheckpointError", ExitCode.RUN_FOLDER),
    ("elbolab.train.trainer", "NonFiniteLossError", ExitCode.DIVERGED),
    ("elbolab.bridges.diffusers", "DiffusersUnavailable", ExitCode.USAGE)])
def test_library_error_classes_declare_their_exit_code(module, name, code):
    cls = getattr(importlib.import_module(module), name)
    assert cls.exit_code is code
    exc = _raise(cls.__new__(cls))
    Exception.__init__(exc, "the message")
    assert errors.describe(exc) == ("the message", int(code))


def test_another_librarys_exit_code_attribute_is_not_ours():
    class Foreign(Exception):
        exit_code = 3  # e.g. click's exceptions carry an int exit_code

    assert errors.describe(_raise(Foreign("x"))) is None


def test_exit_codes_are_distinct_and_documented():
    codes = [int(c) for c in ExitCode]
    assert len(codes) == len(set(codes))
    for c in ExitCode:
        if c is not ExitCode.OK:
            assert f"{int(c):>3}  " in errors.EXIT_CODES_HELP
    assert errors.DEBUG_ENV in errors.EXIT_CODES_HELP


def test_library_errors_map_to_their_class():
    from elbolab.config import ConfigError
    from elbolab.data.errors import DataError
    from elbolab.train.checkpoint import CheckpointError, NoCheckpointError
    from elbolab.train.trainer import NonFiniteLossError
    from pathlib import Path

    cases = [
        (ConfigError("unknown key unet.foo; choices: a, b"), ExitCode.CONFIG),
        (DataError("x.png: truncated\n  y.png: empty"), ExitCode.DATA),
        (CheckpointError("model.safetensors: corrupt"), ExitCode.RUN_FOLDER),
        (NoCheckpointError("no checkpoint"), ExitCode.RUN_FOLDER),
        (NonFiniteLossError(3, "loss", "loss", float("nan"), Path("run"), None), ExitCode.DIVERGED),
        (errors.RunLockedError("run", 123, "elbolab train x"), ExitCode.LOCKED),
        (errors.UsageError("--n -3"), ExitCode.USAGE),
        (KeyboardInterrupt(), ExitCode.INTERRUPTED),
    ]
    for exc, code in cases:
        got = describe(_raise(exc))
        assert got is not None and got[1] == int(code), (exc, got)
        assert "\n" not in got[0]
    assert describe(_raise(DataError("a\n  b\n"))) == ("a; b", int(ExitCode.DATA))
    msg = describe(errors.RunLockedError("run", 123, "elbolab train x"))[0]
    assert "123" in msg and "elbolab train x" in msg


@pytest.mark.parametrize("err, code", [(errno.ENOSPC, ExitCode.DISK_FULL), (errno.EDQUOT, ExitCode.DISK_FULL),
                                       (errno.EACCES, ExitCode.PERMISSION), (errno.EROFS, ExitCode.PERMISSION),
                                       (errno.EIO, ExitCode.IO)])
def test_os_errors_map_by_errno_from_anywhere_and_name_the_file(err, code):
    exc = _raise(OSError(err, os.strerror(err), "/runs/x/model.safetensors"))
    message, got = describe(exc)
    assert got == int(code) and "/runs/x/model.safetensors" in message and os.strerror(err) in message
    storage = errors.StorageError(err, "could not write step 8; the last good checkpoint is step 4")
    assert describe(storage) == ("could not write step 8; the last good checkpoint is step 4", int(code))
    assert isinstance(storage, OSError) and storage.errno == err


def test_programming_errors_are_not_described():
    for exc in (TypeError("bad"), AttributeError("x"), KeyError("k"), AssertionError(), ZeroDivisionError(),
                OSError(errno.EBADF, "Bad file descriptor")):
        assert describe(_raise(exc)) is None, exc
    # a ValueError or FileNotFoundError counts as a user error only when elbolab's own code raised it
    assert describe(_raise(ValueError("from torch"))) is None
    assert describe(_raise(FileNotFoundError(2, "No such file", "x"))) is None
    from elbolab.data.imagefolder import split_indices

    with pytest.raises(ValueError) as e:
        split_indices(4, "val", 0, "x")
    assert describe(e.value) == ("split = 'val': expected 'train' or 'test'", int(ExitCode.USAGE))


def test_run_cli_prints_one_line_and_returns_the_code(monkeypatch):
    from elbolab.config import ConfigError

    def bad(args):
        raise ConfigError("unet.foo: unknown key\nchoose among a, b")

    monkeypatch.delenv(errors.DEBUG_ENV, raising=False)
    err = io.StringIO()
    with redirect_stderr(err):
        assert run_cli(bad, Namespace(), "train") == ExitCode.CONFIG
    assert err.getvalue() == "elbolab train: error: unet.foo: unknown key; choose among a, b\n"
    err = io.StringIO()
    with redirect_stderr(err):
        assert run_cli(bad, Namespace(debug=True), "train") == ExitCode.CONFIG
    assert "Traceback (most recent call last)" in err.getvalue() and err.getvalue().endswith("a, b\n")
    monkeypatch.setenv(errors.DEBUG_ENV, "1")
    err = io.StringIO()
    with redirect_stderr(err):
        assert run_cli(bad, Namespace(), "train") == ExitCode.CONFIG
    assert "Traceback" in err.getvalue()
    assert run_cli(lambda a: 0, Namespace(), "x") == 0 and run_cli(lambda a: None, Namespace(), "x") == 0

    def bug(args):
        return args.missing_attribute

    with pytest.raises(AttributeError):
        run_cli(bug, Namespace(), "train")


def test_debug_enabled(monkeypatch):
    monkeypatch.delenv(errors.DEBUG_ENV, raising=False)
    assert not errors.debug_enabled() and errors.debug_enabled(True)
    for value, on in (("1", True), ("yes", True), ("0", False), ("", False)):
        monkeypatch.setenv(errors.DEBUG_ENV, value)
        assert errors.debug_enabled() is on


def test_sigterm_becomes_an_interrupt_line(tmp_path):
    """A SIGTERM outside the Trainer's own handler ends as the 'interrupted' line and exit code 130."""
    script = tmp_path / "term.py"
    script.write_text(textwrap.dedent("""
        import os, signal, sys, time
        from argparse import Namespace
        from elbolab.cli import run_cli
        def verb(args):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
            return 0
        sys.exit(run_cli(verb, Namespace(), "sample"))
    """))
    p = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert p.returncode == 130, p.stderr
    assert p.stderr.startswith("elbolab sample: error: interrupted") and p.stderr.count("\n") == 1
