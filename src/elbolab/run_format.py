"""The run folder's layout and format version (DESIGN.md: "a trained run is a folder").

``config.toml`` (the :class:`~elbolab.config.RunConfig`), ``model.safetensors``, ``ema.safetensors``,
``trainer_state.*``, ``checkpoint.json``, ``metrics.jsonl``, ``samples/`` and ``run.json``: the elbolab version
that wrote the folder and its run-format version. Format 1 (elbolab 0.1) had no ``run.json`` and every family's
sections in ``config.toml`` (read by :mod:`elbolab.families.legacy`); format 2 has one ``[model]`` section typed
by the family. A folder of a newer format than this elbolab reads is a clear error, never half-read.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from elbolab import __version__
from elbolab.errors import RunFolderError
from elbolab.io import atomic_write_json

CONFIG_FILE = "config.toml"
RUN_FILE = "run.json"
RUN_FORMAT = 2  # the format this elbolab writes, and the newest it reads


class RunFormatError(RunFolderError):
    """A run folder written by a newer elbolab, or with an unreadable ``run.json``."""


def write_run_info(folder: str | os.PathLike[str]) -> None:
    """Record the elbolab version and run format in ``folder/run.json``."""
    atomic_write_json(Path(folder) / RUN_FILE, {"elbolab_version": __version__, "run_format": RUN_FORMAT})


def run_format(folder: str | os.PathLike[str]) -> int:
    """The run format of ``folder`` (1 without ``run.json``); newer than :data:`RUN_FORMAT` is an error."""
    path = Path(folder) / RUN_FILE
    if not path.exists():
        return 1
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
        fmt = info["run_format"]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as e:
        raise RunFormatError(f"{path} is unreadable ({type(e).__name__}: {e}); expected "
                             '{"elbolab_version": ..., "run_format": N}') from None
    if not isinstance(fmt, int) or fmt < 1:
        raise RunFormatError(f"{path}: run_format = {fmt!r} is not a format number")
    if fmt > RUN_FORMAT:
        raise RunFormatError(f"{folder} was written by elbolab {info.get('elbolab_version', '?')} in run format "
                             f"{fmt}; this elbolab {__version__} reads formats up to {RUN_FORMAT}: upgrade elbolab")
    return fmt
