"""The error taxonomy of elbolab: what the ``elbolab`` command tells a user when something goes wrong.

Two kinds of failure reach the command line:

- a *user or environment error*: a bad config or argument, an unreadable data file, a missing or corrupt
  run folder, a run folder another process is writing, a training run whose loss became NaN/inf, a full disk,
  a permission denied, an I/O error, an interrupt. The CLI prints **one line** naming what failed and what to
  do, and exits with the class's own non-zero code (:class:`ExitCode`, listed in :data:`EXIT_CODES_HELP`);
  the traceback is shown only with ``--debug`` or ``ELBOLAB_DEBUG=1`` (:func:`debug_enabled`).
- a *programming error* (a real bug: ``TypeError``, ``AttributeError``, ``KeyError``, an assertion, a
  ``ValueError`` raised inside torch rather than by our own checks ...): it keeps its traceback and exit
  code 1, so that it gets reported and fixed instead of being mistaken for bad input.

:func:`describe` makes that decision for one exception: ``(one-line message, exit code)`` or ``None`` for a
programming error. The library's own exception classes map onto the taxonomy either by subclassing
:class:`ElbolabError` (the classes below) or by the ``exit_code`` class attribute of the classes that live
elsewhere (``ConfigError``, ``DataError``, ``CheckpointError``, ``NonFiniteLossError``); an ``OSError``
maps by its ``errno`` (``ENOSPC`` -> disk full, ``EACCES`` -> permission denied, ``EIO`` -> I/O error) from
wherever it was raised, because the environment, not our code, produced it. :func:`elbolab.cli.run_cli` is
the one place the CLI turns an exception into a message and an exit code (and prints it).

This module imports nothing heavy (no torch): the CLI may import it before it knows what it will run.
"""

from __future__ import annotations

import enum
import errno
import logging
import os
import signal
import sys
from pathlib import Path
from types import TracebackType
from typing import Any

logger = logging.getLogger(__name__)

DEBUG_ENV = "ELBOLAB_DEBUG"


class ExitCode(enum.IntEnum):
    """The exit status of ``elbolab``, one per class of failure (0 = success)."""

    OK = 0
    INTERNAL = 1  # a bug in elbolab: the traceback is printed, please report it
    USAGE = 2  # a bad command-line argument or value
    CONFIG = 3  # a config file, preset, key or value is wrong
    DATA = 4  # a dataset file is missing, corrupt or unreadable, or a download failed
    RUN_FOLDER = 5  # a run folder or input file is missing, not a run, of another family, or corrupt
    LOCKED = 6  # another elbolab process is writing into the run folder
    DIVERGED = 7  # training stopped on a non-finite (NaN/inf) loss or gradient
    DISK_FULL = 8  # no space left on the device (or quota exceeded)
    PERMISSION = 9  # permission denied, or a read-only file system
    IO = 10  # another operating-system I/O error (EIO, ELOOP, ...)
    INTERRUPTED = 130  # SIGINT / SIGTERM (128 + SIGINT, as shells report Ctrl-C)


_WHAT = {
    ExitCode.INTERNAL: "a bug in elbolab (the traceback is printed; please report it)",
    ExitCode.USAGE: "a bad command-line argument or value",
    ExitCode.CONFIG: "a config file, preset, key or value is wrong",
    ExitCode.DATA: "a dataset file is missing, corrupt or unreadable, or a download failed",
    ExitCode.RUN_FOLDER: "a run folder or input file is missing, not a run, of another family, or corrupt",
    ExitCode.LOCKED: "another elbolab process is writing into the run folder",
    ExitCode.DIVERGED: "training stopped on a non-finite (NaN/inf) loss or gradient",
    ExitCode.DISK_FULL: "no space left on the device (or disk quota exceeded)",
    ExitCode.PERMISSION: "permission denied, or a read-only file system",
    ExitCode.IO: "another operating-system I/O error",
    ExitCode.INTERRUPTED: "interrupted by SIGINT (Ctrl-C) or SIGTERM; a training run saved a checkpoint first",
}

EXIT_CODES_HELP: str = (
    "exit codes:\n"
    + "\n".join(f"  {int(c):>3}  {_WHAT[c]}" for c in ExitCode if c is not ExitCode.OK)
    + f"\nerrors are one line; --debug (or {DEBUG_ENV}=1) adds the traceback."
)


# --------------------------------------------------------------------------------------------------
# The taxonomy
# --------------------------------------------------------------------------------------------------
class ElbolabError(Exception):
    """Base of the errors elbolab raises for a user's input or environment; ``exit_code`` is its class."""

    exit_code: ExitCode = ExitCode.INTERNAL


class UsageError(ElbolabError, ValueError):
    """A bad command-line argument or value."""

    exit_code = ExitCode.USAGE


class ConfigurationError(ElbolabError, ValueError):
    """A config file, preset, key or value is wrong (``elbolab.config.ConfigError`` maps here)."""

    exit_code = ExitCode.CONFIG


class DataInputError(ElbolabError, ValueError):
    """A dataset file is missing, corrupt or unreadable (``elbolab.data.DataError`` maps here)."""

    exit_code = ExitCode.DATA


class RunFolderError(ElbolabError, ValueError):
    """A run folder is missing, not a run folder, of another family, or holds a corrupt checkpoint
    (``elbolab.train.CheckpointError`` maps here)."""

    exit_code = ExitCode.RUN_FOLDER


class RunLockedError(ElbolabError, RuntimeError):
    """Another process holds the run folder's lock (:mod:`elbolab.runlock`): ``pid`` and ``command`` are the
    holder's, as it recorded them (None when it had not written them yet)."""

    exit_code = ExitCode.LOCKED

    def __init__(self, run_dir: str | os.PathLike[str], pid: int | None, command: str | None):
        self.run_dir, self.pid, self.command = Path(run_dir), pid, command
        who = f"process {pid}" if pid is not None else "another process"
        what = f" ({command})" if command else ""
        super().__init__(
            f"run folder {self.run_dir} is in use by {who}{what}: wait for it to finish or stop it, "
            "or choose another --out"
        )


class TrainingDivergedError(ElbolabError, RuntimeError):
    """Training stopped on a non-finite loss (``elbolab.train.NonFiniteLossError`` maps here)."""

    exit_code = ExitCode.DIVERGED


class StorageError(ElbolabError, OSError):
    """An operating-system error while writing (disk full, permission denied, I/O error) that elbolab
    re-raises with a message naming what it was writing; ``errno`` is the original one, and the exit code
    follows it (see :func:`exit_code_for_errno`)."""

    def __init__(self, err: int | None, message: str, filename: str | os.PathLike[str] | None = None):
        super().__init__(err, message)
        self.message = message
        if filename is not None:
            self.filename = os.fspath(filename)

    def __str__(self) -> str:
        return self.message

    @property  # type: ignore[override]
    def exit_code(self) -> ExitCode:  # noqa: D401 - a computed class attribute
        return exit_code_for_errno(self.errno) or ExitCode.IO


_ERRNO_CODES = {
    errno.ENOSPC: ExitCode.DISK_FULL,
    errno.EDQUOT: ExitCode.DISK_FULL,
    errno.EFBIG: ExitCode.DISK_FULL,
    errno.EACCES: ExitCode.PERMISSION,
    errno.EPERM: ExitCode.PERMISSION,
    errno.EROFS: ExitCode.PERMISSION,
    errno.EIO: ExitCode.IO,
    errno.ELOOP: ExitCode.IO,
    errno.ENAMETOOLONG: ExitCode.IO,
    errno.ENOTDIR: ExitCode.IO,
    errno.EISDIR: ExitCode.IO,
    errno.EMFILE: ExitCode.IO,
    errno.ENFILE: ExitCode.IO,
    errno.ESTALE: ExitCode.IO,
    errno.ENXIO: ExitCode.IO,
}

_ERRNO_HINTS = {
    ExitCode.DISK_FULL: "free some space (or choose another --out), then continue with --resume",
    ExitCode.PERMISSION: "check the folder's permissions and owner, or choose another --out",
    ExitCode.IO: "check the disk and the path",
}


def exit_code_for_errno(err: int | None) -> ExitCode | None:
    """The class of an ``OSError`` by its ``errno``; None for an errno that is not an environment error."""
    return _ERRNO_CODES.get(err) if err is not None else None


# --------------------------------------------------------------------------------------------------
# Exception -> (one line, exit code)
# --------------------------------------------------------------------------------------------------
_PACKAGE_DIR = Path(__file__).resolve().parent


def _raised_by_elbolab(exc: BaseException) -> bool:
    """Whether the innermost frame of ``exc``'s traceback is elbolab's code (a deliberate ``raise`` of a
    check), rather than torch's, numpy's or the standard library's."""
    tb: TracebackType | None = exc.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    try:
        Path(tb.tb_frame.f_code.co_filename).resolve().relative_to(_PACKAGE_DIR)
    except (ValueError, OSError):
        return False
    return True


def _library_code(exc: BaseException) -> ExitCode | None:
    """The ``exit_code`` an exception class defined elsewhere in elbolab declares (``ConfigError``,
    ``DataError``, ``CheckpointError``, ``NonFiniteLossError``, ``DiffusersUnavailable``: ValueError & co.
    subclasses that import :class:`ExitCode` from here); only an :class:`ExitCode` counts, so another library's
    ``exit_code`` attribute is not mistaken for ours."""
    code = getattr(type(exc), "exit_code", None)
    return code if isinstance(code, ExitCode) else None


def one_line(text: str) -> str:
    """``text`` on one line: its lines stripped and joined with ``"; "`` (empty lines dropped)."""
    parts = [p.strip() for p in str(text).splitlines()]
    return "; ".join(p for p in parts if p) or "(no message)"


def _os_message(exc: OSError, code: ExitCode) -> str:
    if isinstance(exc, StorageError):
        return exc.message
    what = exc.strerror or str(exc)
    where = ", ".join(os.fspath(f) for f in (exc.filename, exc.filename2) if f is not None)
    text = f"{what}: {where}" if where else what
    hint = _ERRNO_HINTS.get(code)
    return f"{text} ({hint})" if hint else text


def describe(exc: BaseException) -> tuple[str, int] | None:
    """``(one-line message, exit code)`` for a user/environment error, or None for a programming error.

    The message names what failed and what to do (the library's messages do; an ``OSError`` gets the file
    and a hint added); it never spans lines.
    """
    if isinstance(exc, KeyboardInterrupt):
        return ("interrupted (SIGINT or SIGTERM); a training run continues from its last checkpoint with "
                "elbolab train --resume"), int(ExitCode.INTERRUPTED)
    if isinstance(exc, ElbolabError):
        code = exc.exit_code
        if isinstance(exc, OSError):
            return one_line(_os_message(exc, code)), int(code)
        return one_line(str(exc)), int(code)
    code = _library_code(exc)
    if code is not None:
        return one_line(str(exc)), int(code)
    if isinstance(exc, OSError):
        code = exit_code_for_errno(exc.errno)
        if code is not None:  # the environment's doing, wherever it surfaced
            return one_line(_os_message(exc, code)), int(code)
        if isinstance(exc, FileNotFoundError) and _raised_by_elbolab(exc):
            return one_line(_os_message(exc, ExitCode.RUN_FOLDER) if exc.filename else str(exc)), \
                int(ExitCode.RUN_FOLDER)
        return None
    if isinstance(exc, ValueError) and _raised_by_elbolab(exc):
        return one_line(str(exc)), int(ExitCode.USAGE)  # one of our own argument checks
    return None


def exit_code_and_message(exc: BaseException) -> tuple[int, str] | None:
    """:func:`describe` with the pair the other way round: ``(exit code, message)`` or None."""
    d = describe(exc)
    return None if d is None else (d[1], d[0])


def debug_enabled(flag: bool = False) -> bool:
    """Whether tracebacks are wanted: the ``--debug`` flag, or ``ELBOLAB_DEBUG`` set to 1/true/yes/on."""
    return bool(flag) or os.environ.get(DEBUG_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def sigterm_as_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")
