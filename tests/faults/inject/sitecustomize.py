"""Fault injection for the CLI fault suite: put this folder on PYTHONPATH and describe the fault in the
environment variable ELBOLAB_TEST_FAULT (JSON); no library code knows about it.

    {"action": "kill" | "raise", "errno": 28, "ops": ["fsync", "replace", "open", "mkdir"],
     "under": "/abs/run/dir", "names": ["model.safetensors", ...], "k": 3}

An *event* is a call of one of ``ops`` on a path inside ``under`` whose path contains one of ``names``
(any path when ``names`` is empty): ``fsync`` of a regular file (each atomic write fsyncs its file once),
``replace`` (os.replace / os.rename), ``open`` (os.open, builtins.open, io.open for writing), ``mkdir``.
At the ``k``-th event (1-based) the process SIGKILLs itself (``kill``) or the call raises
``OSError(errno)`` naming the path (``raise``; with ``"k": 0`` every event raises). Nothing here imports
more than the standard library.
"""

from __future__ import annotations

import builtins
import io
import json
import os
import signal
import stat

_SPEC = os.environ.get("ELBOLAB_TEST_FAULT")


def _install(spec: dict) -> None:
    under = os.path.realpath(spec["under"])
    names = tuple(spec.get("names") or ())
    ops = set(spec["ops"])
    k = int(spec.get("k", 1))
    err = int(spec.get("errno", 0))
    count = [0]

    def hit(op: str, path) -> None:
        if op not in ops or path is None:
            return
        try:
            p = os.path.realpath(os.fsdecode(path))
        except (TypeError, ValueError):
            return
        if not (p == under or p.startswith(under + os.sep)):
            return
        if names and not any(n in p for n in names):
            return
        count[0] += 1
        if k and count[0] != k:
            return
        if spec["action"] == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        raise OSError(err, os.strerror(err), os.fsdecode(path))

    real_fsync, real_replace, real_rename = os.fsync, os.replace, os.rename
    real_os_open, real_open, real_mkdir = os.open, builtins.open, os.mkdir

    def fsync(fd):
        try:
            regular = stat.S_ISREG(os.fstat(fd).st_mode)
            path = os.readlink(f"/proc/self/fd/{fd}") if regular else None
        except OSError:
            path = None
        hit("fsync", path)
        return real_fsync(fd)

    def replace(src, dst, *a, **kw):
        hit("replace", dst)
        return real_replace(src, dst, *a, **kw)

    def rename(src, dst, *a, **kw):
        hit("replace", dst)
        return real_rename(src, dst, *a, **kw)

    def os_open(path, flags, *a, **kw):
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC):
            hit("open", path)
        return real_os_open(path, flags, *a, **kw)

    def open_(file, mode="r", *a, **kw):
        if isinstance(file, (str, bytes, os.PathLike)) and any(c in mode for c in "wax+"):
            hit("open", file)
        return real_open(file, mode, *a, **kw)

    def mkdir(path, *a, **kw):
        hit("mkdir", path)
        return real_mkdir(path, *a, **kw)

    os.fsync, os.replace, os.rename, os.open, os.mkdir = fsync, replace, rename, os_open, mkdir
    builtins.open = io.open = open_


if _SPEC:
    _install(json.loads(_SPEC))
