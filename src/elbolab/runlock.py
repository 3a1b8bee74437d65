"""One writer per run folder: an OS advisory lock on ``RUN/.lock``.

Every command that writes into a run folder (``train``; ``eval`` and ``report`` where they write metrics into
it) holds :class:`RunLock` while it writes; a second writer is refused at once with
:class:`~elbolab.errors.RunLockedError`, naming the PID and command line of the first, which the holder
writes into the lock file after taking the lock. A command that only reads a run (sampling to a path
outside it) takes no lock.

The lock is ``fcntl.flock(LOCK_EX | LOCK_NB)`` on Linux and macOS: the kernel releases it when the holder's
file descriptor is closed, so a process killed with ``SIGKILL`` never leaves a stale lock, and the file
itself is left in place (deleting it would let two processes lock two different files of the same name).
On Windows, ``msvcrt.locking`` of the first byte does the same; elsewhere the lock is a no-op (logged).
Under ``torchrun`` only rank 0 (``RANK``) takes it: the ranks of one job are one writer.
"""

from __future__ import annotations

import logging
import os
import shlex
import sys
import time
from pathlib import Path
from types import TracebackType

from elbolab.errors import RunLockedError

try:  # POSIX
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]
try:  # Windows
    import msvcrt  # type: ignore[import-not-found]
except ImportError:
    msvcrt = None  # type: ignore[assignment]

logger = logging.getLogger(__name__)

LOCK_FILE = ".lock"
_HEADER_BYTES = 1  # Windows locks this byte; the holder's record starts after it so others can read it


def _rank() -> int:
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0


def _command_line() -> str:
    """This process's command line as a user typed it (``python -m elbolab`` shows as ``elbolab``)."""
    prog = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "python"
    if prog == "__main__.py" and Path(sys.argv[0]).parent.name == "elbolab":
        prog = "elbolab"
    return shlex.join([prog, *sys.argv[1:]])


def read_holder(run_dir: str | os.PathLike[str]) -> tuple[int | None, str | None]:
    """``(pid, command)`` recorded in ``run_dir/.lock`` (None, None when absent or not yet written)."""
    try:
        text = (Path(run_dir) / LOCK_FILE).read_bytes()[_HEADER_BYTES:].decode("utf-8", "replace")
    except OSError:
        return None, None
    pid: int | None = None
    command: str | None = None
    for line in text.splitlines():
        key, _, value = line.partition("=")
        if key == "pid":
            try:
                pid = int(value)
            except ValueError:
                pid = None
        elif key == "command":
            command = value or None
    return pid, command


class RunLock:
    """Exclusive advisory lock of a run folder; a context manager (also :meth:`acquire` / :meth:`release`).

    ``command``: what to record for a refused second writer (default: this process's command line).
    Creates ``run_dir`` if needed. Raises :class:`~elbolab.errors.RunLockedError` when another process
    holds the lock. Re-entrant within one object only: acquire once, release once.
    """

    def __init__(self, run_dir: str | os.PathLike[str], command: str | None = None):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_FILE
        self.command = command if command is not None else _command_line()
        self._fd: int | None = None
        self.active = False  # whether this object holds an OS lock (False on ranks > 0 and where unsupported)

    def acquire(self) -> RunLock:
        if self._fd is not None:
            raise RuntimeError(f"{self.path}: already acquired by this RunLock")
        if _rank() != 0:
            return self
        if fcntl is None and msvcrt is None:  # pragma: no cover
            logger.warning("%s: no file locking on this platform; a second writer will not be refused", self.path)
            return self
        self.run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            else:  # pragma: no cover - Windows
                os.lseek(fd, 0, os.SEEK_SET)
                msvcrt.locking(fd, msvcrt.LK_NBLCK, _HEADER_BYTES)
        except OSError:  # BlockingIOError (EWOULDBLOCK) or, on Windows, EACCES/EDEADLK
            os.close(fd)
            pid, command = read_holder(self.run_dir)
            raise RunLockedError(self.run_dir, pid, command) from None
        except BaseException:
            os.close(fd)
            raise
        # the header byte ("\n"), then the record; one line each, the command with its newlines escaped
        command = self.command.replace("\n", "\\n")
        record = f"\npid={os.getpid()}\ncommand={command}\nsince={time.time():.3f}\n".encode()
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, record)
        self._fd = fd
        self.active = True
        return self

    def release(self) -> None:
        fd, self._fd = self._fd, None
        self.active = False
        if fd is None:
            return
        try:
            os.ftruncate(fd, 0)  # the record names a holder only while there is one
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_UN)
            else:  # pragma: no cover - Windows
                os.lseek(fd, 0, os.SEEK_SET)
                msvcrt.locking(fd, msvcrt.LK_UNLCK, _HEADER_BYTES)
        except OSError as e:  # closing the descriptor releases it anyway
            logger.debug("%s: unlocking: %s", self.path, e)
        finally:
            os.close(fd)

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()
