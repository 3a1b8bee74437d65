"""Checkpoints of a run folder that survive ``SIGKILL`` at any moment and are never half-read.

A run folder (DESIGN.md) holds one checkpoint, the *set* of four files plus a manifest::

    model.safetensors          model weights, keyed like ``model.state_dict()``
    ema.safetensors            EMA weights (same keys, or the EMA group's subset, e.g. the GAN generator)
    trainer_state.safetensors  every tensor of the trainer state: optimiser moments, RNG states, objective state
    trainer_state.json         the rest of it: step, epoch, position, TrainConfig, optimiser hyper-parameters,
                               with ``{"__tensor__": key}`` where a tensor of trainer_state.safetensors belongs
    checkpoint.json            the manifest: format, step, and SHA-256 and size of each of the four files

(``config.toml``, ``metrics.jsonl`` and ``samples/`` sit beside them and are not part of the set.)

Write-ahead, roll-forward protocol (each file write is itself atomic: temporary file, fsync, rename, fsync
of the folder, see :func:`elbolab.io.atomic_write_bytes`):

1. *Stage*: write the four files into ``RUN/.checkpoint-next/``; the checkpoint in ``RUN/`` is untouched.
2. *Commit*: write ``RUN/.checkpoint-next/checkpoint.json`` (the manifest, with each file's SHA-256). From
   this instant the staged step is the checkpoint.
3. *Install*: ``os.replace`` each staged file into ``RUN/``, then the manifest, then remove the staging folder.

The checkpoint *is*, at every instant: if ``RUN/.checkpoint-next/checkpoint.json`` exists, that manifest's
step, each file taken from the staging folder if still there, else from ``RUN/`` (already installed);
otherwise ``RUN/checkpoint.json`` and the files in ``RUN/``. A kill before the commit leaves the previous
checkpoint untouched (the incomplete staging folder is discarded); a kill after it, even between two renames
of step 3, leaves a complete new one that :func:`recover` (run by the writer before its next save or on
resume) finishes installing. Readers never write: they resolve the same rule read-only, verify every file
against the manifest's SHA-256 *on the bytes they then parse*, and retry a few times if a concurrent writer
moved a file under them; a file that stays truncated or corrupt raises :class:`CheckpointError` naming it.

A save that fails before its commit (disk full, permission denied, I/O error: any ``OSError`` of steps 1-2)
removes its staging folder, leaves the previous checkpoint as it was and raises
:class:`CheckpointWriteError` (an ``OSError`` with the original ``errno``) naming the step it could not
write and the last good one. A failure after the commit (a rename of step 3) cannot be undone, because the
staged step already *is* the checkpoint: its error says so, and the next save or ``--resume`` finishes it.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import safetensors.torch
import torch
from torch import Tensor, nn

from elbolab.errors import ExitCode, StorageError
from elbolab.io import atomic_write_bytes, fsync_dir

logger = logging.getLogger(__name__)

FORMAT = 1
MODEL_FILE = "model.safetensors"
EMA_FILE = "ema.safetensors"
STATE_TENSORS_FILE = "trainer_state.safetensors"
STATE_JSON_FILE = "trainer_state.json"
FILES = (MODEL_FILE, EMA_FILE, STATE_TENSORS_FILE, STATE_JSON_FILE)
MANIFEST_FILE = "checkpoint.json"
STAGING_DIR = ".checkpoint-next"
PARTS = {"model": MODEL_FILE, "ema": EMA_FILE, "state": (STATE_TENSORS_FILE, STATE_JSON_FILE)}


class CheckpointError(ValueError):
    """A run folder has no checkpoint, or a checkpoint file is missing, truncated or corrupt."""

    exit_code = ExitCode.RUN_FOLDER


class NoCheckpointError(CheckpointError):
    """The run folder holds no checkpoint at all (no manifest)."""


class CheckpointWriteError(StorageError):
    """Saving the checkpoint of ``step`` failed with an ``OSError`` (``errno`` kept: ENOSPC, EACCES, EIO ...);
    ``last_good_step`` is the step of the checkpoint the run folder holds now (None: none yet)."""

    def __init__(self, err: int | None, message: str, filename: str | os.PathLike[str] | None,
                 step: int, last_good_step: int | None):
        super().__init__(err, message, filename)
        self.step, self.last_good_step = step, last_good_step


@dataclass
class Checkpoint:
    """One consistent checkpoint: everything from the same ``step``.

    ``model`` / ``ema``: name -> CPU tensor (empty when not requested); ``state``: the trainer state tree with
    its tensors (CPU) put back (empty when not requested).
    """

    run_dir: Path
    step: int
    model: dict[str, Tensor] = field(default_factory=dict)
    ema: dict[str, Tensor] = field(default_factory=dict)
    state: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------------
# Nested state <-> (JSON tree, flat tensors)
# --------------------------------------------------------------------------------------------------
def flatten_state(tree: Any, prefix: str = "") -> tuple[Any, dict[str, Tensor]]:
    """Split a nested state (dicts, lists, tuples, numbers, strings, tensors, numpy arrays) into a JSON tree
    and a flat ``{key: tensor}`` for safetensors. Round trip with :func:`unflatten_state` is exact
    (non-string dict keys and tuples are tagged; floats are written with full precision, NaN/inf allowed).
    """
    tensors: dict[str, Tensor] = {}

    def enc(obj: Any, path: str) -> Any:
        if isinstance(obj, Tensor):
            key = path or "_"
            tensors[key] = obj.detach().to("cpu").contiguous().clone()
            return {"__tensor__": key}
        if isinstance(obj, np.ndarray):
            return {"__ndarray__": obj.tolist(), "dtype": str(obj.dtype)}
        if isinstance(obj, np.generic):
            return obj.item()
        if isinstance(obj, dict):
            if all(isinstance(k, str) and not k.startswith("__") for k in obj):
                return {k: enc(v, f"{path}/{k}") for k, v in obj.items()}
            for k in obj:
                if not isinstance(k, (str, int, float, bool)) and k is not None:
                    raise TypeError(f"cannot store dict key {k!r} ({type(k).__name__}) at {path or '/'}")
            return {"__items__": [[k, enc(v, f"{path}/{k}")] for k, v in obj.items()]}
        if isinstance(obj, tuple):
            return {"__tuple__": [enc(v, f"{path}/{i}") for i, v in enumerate(obj)]}
        if isinstance(obj, list):
            return [enc(v, f"{path}/{i}") for i, v in enumerate(obj)]
        if obj is None or isinstance(obj, (bool, int, float, str)):
            return obj
        raise TypeError(f"cannot store {type(obj).__name__} at {path or '/'} in a checkpoint")

    return enc(tree, prefix), tensors


def unflatten_state(tree: Any, tensors: dict[str, Tensor]) -> Any:
    """Inverse of :func:`flatten_state`."""
    if isinstance(tree, dict):
        if "__tensor__" in tree:
            key = tree["__tensor__"]
            if key not in tensors:
                raise CheckpointError(f"trainer state refers to tensor {key!r}, absent from {STATE_TENSORS_FILE}")
            return tensors[key]
        if "__ndarray__" in tree:
            return np.asarray(tree["__ndarray__"], dtype=tree["dtype"])
        if "__tuple__" in tree:
            return tuple(unflatten_state(v, tensors) for v in tree["__tuple__"])
        if "__items__" in tree:
            return {k: unflatten_state(v, tensors) for k, v in tree["__items__"]}
        return {k: unflatten_state(v, tensors) for k, v in tree.items()}
    if isinstance(tree, list):
        return [unflatten_state(v, tensors) for v in tree]
    return tree


def _tensor_bytes(tensors: dict[str, Tensor]) -> bytes:
    flat = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    return safetensors.torch.save(flat)


# --------------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------------
def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _read_manifest(path: Path) -> dict[str, Any]:
    try:
        manifest = json.loads(path.read_bytes())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: corrupt checkpoint manifest ({e})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT or "files" not in manifest:
        raise CheckpointError(f"{path}: not an elbolab checkpoint manifest of format {FORMAT}")
    return manifest


def _install(run_dir: Path) -> None:
    """Step 3 of the protocol: move a committed staging folder's files into the run folder (idempotent)."""
    staging = run_dir / STAGING_DIR
    manifest = _read_manifest(staging / MANIFEST_FILE)
    for name in manifest["files"]:
        if (staging / name).exists():
            os.replace(staging / name, run_dir / name)
    fsync_dir(run_dir)
    os.replace(staging / MANIFEST_FILE, run_dir / MANIFEST_FILE)
    fsync_dir(run_dir)
    shutil.rmtree(staging, ignore_errors=True)
    fsync_dir(run_dir)


def recover(run_dir: str | os.PathLike[str]) -> None:
    """Writer side: finish installing a save that reached its commit point, discard one that did not."""
    run_dir = Path(run_dir)
    staging = run_dir / STAGING_DIR
    if not staging.exists():
        return
    if (staging / MANIFEST_FILE).exists():
        logger.info("%s: finishing the installation of an interrupted checkpoint save", run_dir)
        _install(run_dir)
    else:
        logger.info("%s: discarding an incomplete checkpoint save", run_dir)
        shutil.rmtree(staging)
        fsync_dir(run_dir)


def save_checkpoint(run_dir: str | os.PathLike[str], step: int, model: dict[str, Tensor],
                    ema: dict[str, Tensor], state: dict[str, Any]) -> Path:
    """Save one consistent checkpoint of ``step`` into ``run_dir`` (see the module docstring).

    ``model`` / ``ema``: name -> tensor; ``state``: nested trainer state (see :func:`flatten_state`).
    Returns the path of the manifest.
    """
    run_dir = Path(run_dir)
    step = int(step)
    json_tree, state_tensors = flatten_state(state)
    blobs = {
        MODEL_FILE: _tensor_bytes(model),
        EMA_FILE: _tensor_bytes(ema),
        STATE_TENSORS_FILE: _tensor_bytes(state_tensors),
        STATE_JSON_FILE: json.dumps({"format": FORMAT, "step": step, "state": json_tree}).encode("utf-8"),
    }
    manifest = {"format": FORMAT, "step": step, "time": time.time(),
                "files": {name: {"sha256": _sha256(data), "bytes": len(data)} for name, data in blobs.items()}}
    staging = run_dir / STAGING_DIR
    last_good: int | None = None
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        recover(run_dir)
        last_good = _last_good_step(run_dir)
        staging.mkdir()
        for name, data in blobs.items():  # 1. stage
            atomic_write_bytes(staging / name, data)
        atomic_write_bytes(staging / MANIFEST_FILE, json.dumps(manifest, indent=1).encode("utf-8"))  # 2. commit
    except OSError as e:
        _discard_staging(run_dir)
        kept = (f"the last good checkpoint is step {last_good}, intact in {run_dir}" if last_good is not None
                else f"{run_dir} holds no checkpoint yet")
        raise CheckpointWriteError(
            e.errno, f"could not write the checkpoint of step {step} into {run_dir} ({_reason(e)}); {kept}; "
            f"{_HINTS.get(e.errno, 'fix the cause')}, then continue with elbolab train --resume",
            e.filename, step, last_good) from None
    try:
        _install(run_dir)  # 3. install
    except OSError as e:
        raise CheckpointWriteError(
            e.errno, f"the checkpoint of step {step} is committed in {staging} but could not be moved into "
            f"{run_dir} ({_reason(e)}); step {step} is the last good checkpoint and the next save or "
            "elbolab train --resume finishes moving it", e.filename, step, step) from None
    return run_dir / MANIFEST_FILE


def _reason(e: OSError) -> str:
    if isinstance(e, StorageError):  # already names its file
        return e.message
    return f"{e.strerror or e}{': ' + os.fspath(e.filename) if e.filename else ''}"


_HINTS = {errno.ENOSPC: "free some disk space", errno.EDQUOT: "free some disk quota",
          errno.EACCES: "make the run folder writable", errno.EPERM: "make the run folder writable",
          errno.EROFS: "use a writable file system"}


def _last_good_step(run_dir: Path) -> int | None:
    try:
        return checkpoint_step(run_dir)
    except CheckpointError:  # a corrupt manifest: no loadable checkpoint to keep
        return None


def _discard_staging(run_dir: Path) -> None:
    """Remove an uncommitted staging folder after a failed save (removing files needs no space)."""
    staging = run_dir / STAGING_DIR
    if (staging / MANIFEST_FILE).exists():  # committed after all: it is the checkpoint, keep it
        return
    shutil.rmtree(staging, ignore_errors=True)
    if staging.exists():
        logger.warning("%s: could not remove the incomplete checkpoint save; the next save discards it", staging)
    else:
        fsync_dir(run_dir)


# --------------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------------
def _resolve(run_dir: Path) -> tuple[dict[str, Any], dict[str, Path]]:
    staging = run_dir / STAGING_DIR
    try:
        manifest = _read_manifest(staging / MANIFEST_FILE)
        return manifest, {n: (staging / n if (staging / n).exists() else run_dir / n) for n in manifest["files"]}
    except FileNotFoundError:
        pass
    try:
        manifest = _read_manifest(run_dir / MANIFEST_FILE)
    except FileNotFoundError:
        raise NoCheckpointError(f"{run_dir} holds no checkpoint (no {MANIFEST_FILE})") from None
    return manifest, {n: run_dir / n for n in manifest["files"]}


def checkpoint_step(run_dir: str | os.PathLike[str]) -> int | None:
    """Step of the checkpoint in ``run_dir``, or None when there is none (files are not verified; a corrupt
    manifest raises :class:`CheckpointError`)."""
    for _ in range(3):  # a concurrent writer may move the staged manifest between our two reads
        try:
            return int(_resolve(Path(run_dir))[0]["step"])
        except NoCheckpointError:
            return None
        except FileNotFoundError:
            continue
    return None


def _read_verified(path: Path, entry: dict[str, Any], step: int) -> bytes:
    data = path.read_bytes()
    if len(data) != entry["bytes"] or _sha256(data) != entry["sha256"]:
        raise CheckpointError(
            f"{path}: {len(data)} bytes whose SHA-256 does not match the manifest of step {step} "
            f"({entry['bytes']} bytes): the file is truncated or corrupt"
        )
    return data


def _parse_tensors(path: Path, data: bytes) -> dict[str, Tensor]:
    try:
        return safetensors.torch.load(data)
    except Exception as e:  # safetensors raises its own error types
        raise CheckpointError(f"{path}: not a valid safetensors file ({e})") from None


def load_checkpoint(run_dir: str | os.PathLike[str], parts: Iterable[str] = ("model", "ema", "state"),
                    attempts: int = 3) -> Checkpoint:
    """Load the checkpoint of ``run_dir``: the requested ``parts`` among ``"model"``, ``"ema"``, ``"state"``.

    Every file read is checked against the manifest (size and SHA-256) before it is parsed. Raises
    :class:`CheckpointError` when there is no checkpoint or a file is missing, truncated or corrupt.
    """
    run_dir = Path(run_dir)
    parts = tuple(parts)
    for p in parts:
        if p not in PARTS:
            raise ValueError(f"checkpoint part {p!r}: choose among {', '.join(PARTS)}")
    error: CheckpointError | None = None
    for attempt in range(max(1, attempts)):
        if attempt:
            time.sleep(0.05 * attempt)  # a concurrent writer may have moved files under us
        try:
            return _load_once(run_dir, parts)
        except FileNotFoundError as e:
            error = CheckpointError(f"{run_dir}: checkpoint file {e.filename} is missing")
        except NoCheckpointError:
            raise
        except CheckpointError as e:
            error = e
    assert error is not None
    raise error


def _load_once(run_dir: Path, parts: tuple[str, ...]) -> Checkpoint:
    manifest, paths = _resolve(run_dir)
    step = int(manifest["step"])
    for name in FILES:
        if name not in manifest["files"]:
            raise CheckpointError(f"{run_dir}: the manifest of step {step} lists no {name}")

    def read(name: str) -> bytes:
        return _read_verified(paths[name], manifest["files"][name], step)

    ckpt = Checkpoint(run_dir=run_dir, step=step)
    if "model" in parts:
        ckpt.model = _parse_tensors(paths[MODEL_FILE], read(MODEL_FILE))
    if "ema" in parts:
        ckpt.ema = _parse_tensors(paths[EMA_FILE], read(EMA_FILE))
    if "state" in parts:
        tensors = _parse_tensors(paths[STATE_TENSORS_FILE], read(STATE_TENSORS_FILE))
        try:
            doc = json.loads(read(STATE_JSON_FILE))
        except json.JSONDecodeError as e:
            raise CheckpointError(f"{paths[STATE_JSON_FILE]}: invalid JSON ({e})") from None
        if doc.get("step") != step:
            raise CheckpointError(f"{paths[STATE_JSON_FILE]}: step {doc.get('step')} != manifest step {step}")
        ckpt.state = unflatten_state(doc["state"], tensors)
    return ckpt


def has_checkpoint(run_dir: str | os.PathLike[str]) -> bool:
    """Whether ``run_dir`` holds a (committed) checkpoint."""
    return checkpoint_step(run_dir) is not None


def load_weights(run_dir: str | os.PathLike[str], model: nn.Module, ema: bool = True) -> int:
    """Load a run's weights into ``model`` (the EMA weights over them when ``ema``); returns the step.

    What ``elbolab sample`` / ``eval`` use. The EMA may cover only part of the model (a GAN's generator):
    the rest keeps the raw trained weights.
    """
    ckpt = load_checkpoint(run_dir, parts=("model", "ema") if ema else ("model",))
    weights = dict(ckpt.model)
    if ema:
        unknown = sorted(set(ckpt.ema) - set(weights))
        if unknown:
            raise CheckpointError(f"{run_dir}/{EMA_FILE}: names absent from the model weights: {unknown[:5]}")
        weights.update(ckpt.ema)
    mismatch = describe_mismatch(model.state_dict(), weights)
    if mismatch:
        raise CheckpointError(f"{run_dir}: the checkpoint does not fit {type(model).__name__} ({mismatch}): "
                              "it was written for another model; check the run's config.toml") from None
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"{run_dir}: the checkpoint does not fit {type(model).__name__}: {e}") from None
    return ckpt.step


def describe_mismatch(expected: dict[str, Tensor], found: dict[str, Tensor], show: int = 3) -> str:
    """A short description of how ``found`` (a checkpoint's weights) differs from ``expected`` (a model's
    ``state_dict()``) in names and shapes; empty when they match."""
    missing = [k for k in expected if k not in found]
    unexpected = sorted(k for k in found if k not in expected)
    shapes = [f"{k} {tuple(found[k].shape)} != {tuple(v.shape)}" for k, v in expected.items()
              if k in found and tuple(found[k].shape) != tuple(v.shape)]
    parts = []
    for what, names in (("missing", missing), ("unexpected", unexpected), ("of another shape", shapes)):
        if names:
            more = f", ... {len(names) - show} more" if len(names) > show else ""
            parts.append(f"{len(names)} weight(s) {what}: {', '.join(names[:show])}{more}")
    return "; ".join(parts)
