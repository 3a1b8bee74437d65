"""Generated samples for evaluation: drawing them with a progress bar, and reusing them through ``.npz`` files.

Samples are quantised to 8 bit as soon as they are drawn (``to_uint8``), exactly like real images and like
saved PNGs, so metrics of fresh and of reloaded samples are identical. A samples file holds ``images``
(N, C, H, W) uint8, optionally ``labels`` (N,) int64, and ``meta``: a JSON string (sampler, steps, seed, ...).
"""

from __future__ import annotations

import io
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from tqdm import tqdm

from elbolab.io import atomic_write_bytes
from elbolab.data.transforms import to_uint8

logger = logging.getLogger(__name__)

#: ``sample_fn(batch_size, generator) -> (batch_size, C, H, W)`` float images in [-1, 1]
SampleFn = Callable[[int, torch.Generator], torch.Tensor]


@dataclass
class SampleSet:
    """``images``: (N, C, H, W) uint8; ``labels``: (N,) long or None; ``meta``: how they were made."""

    images: torch.Tensor
    labels: torch.Tensor | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0  # wall time spent drawing them (0 when loaded from a file)


def as_uint8_images(samples: torch.Tensor | np.ndarray) -> torch.Tensor:
    """(N, C, H, W) uint8 as is, or float in [-1, 1] rounded to the nearest 8-bit level."""
    x = torch.as_tensor(np.asarray(samples)) if not isinstance(samples, torch.Tensor) else samples
    if x.dim() != 4:
        raise ValueError(f"samples of shape {tuple(x.shape)}: expected (N, C, H, W)")
    if x.dtype == torch.uint8:
        return x.cpu()
    if not torch.is_floating_point(x):
        raise ValueError(f"samples of dtype {x.dtype}: expected uint8 or float images in [-1, 1]")
    return to_uint8(x.cpu())


def save_samples_npz(path: str | os.PathLike[str], samples: torch.Tensor | np.ndarray,
                     labels: torch.Tensor | np.ndarray | None = None, meta: dict[str, Any] | None = None) -> Path:
    """Write samples (N, C, H, W) (uint8, or float in [-1, 1], quantised) to ``path`` atomically."""
    path = Path(path)
    images = as_uint8_images(samples).numpy()
    arrays: dict[str, np.ndarray] = {"images": images, "meta": np.array(json.dumps(meta or {}))}
    if labels is not None:
        lab = np.asarray(torch.as_tensor(labels).cpu()).astype(np.int64).reshape(-1)
        if lab.shape[0] != images.shape[0]:
            raise ValueError(f"{lab.shape[0]} labels for {images.shape[0]} samples")
        arrays["labels"] = lab
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())
    return path


def load_samples_npz(path: str | os.PathLike[str]) -> SampleSet:
    """Read a samples file written by :func:`save_samples_npz` (or any .npz with a uint8 ``images`` array)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"samples file {path} does not exist")
    try:
        with np.load(path, allow_pickle=False) as z:
            if "images" not in z:
                raise ValueError(f"{path}: no 'images' array (found {', '.join(z.files) or 'nothing'})")
            images = z["images"]
            labels = z["labels"] if "labels" in z else None
            meta = json.loads(str(z["meta"])) if "meta" in z else {}
    except (OSError, EOFError) as e:
        raise ValueError(f"{path}: not a readable .npz samples file ({e})") from None
    if images.dtype != np.uint8 or images.ndim != 4:
        raise ValueError(f"{path}: images of dtype {images.dtype} and shape {images.shape}: "
                         "expected uint8 (N, C, H, W)")
    return SampleSet(images=torch.from_numpy(images.copy()),
                     labels=None if labels is None else torch.from_numpy(labels.astype(np.int64)), meta=meta)


@dataclass
class SampleBatch:
    """Samples ``images: (N, C, H, W)`` float in [-1, 1], optional ``labels: (N,)``, network evaluations ``nfe``
    per sample, and ``method``: how they were drawn (e.g. "ddim-50", "ancestral-1000", "generator")."""

    images: torch.Tensor
    labels: torch.Tensor | None
    nfe: int
    method: str = ""


#: ``batch_fn(batch_size, generator) -> SampleBatch`` (or a tensor of float images)
BatchFn = Callable[[int, torch.Generator], "SampleBatch | torch.Tensor"]


def draw_in_batches(batch_fn: BatchFn, n: int, batch_size: int, generator: torch.Generator, *,
                    progress: bool = False) -> SampleBatch:
    """The one sample-batching loop: ``n`` samples, ``batch_size`` at a time, all from one ``generator`` (so the
    same seed gives the same samples for any ``n``'s prefix with the same batch size); images moved to the CPU."""
    if n <= 0 or batch_size <= 0:
        raise ValueError(f"n = {n}, batch_size = {batch_size}: both must be > 0")
    images, labels, nfe, method = [], [], 0, ""
    with tqdm(total=n, desc="sampling", unit="img", disable=not progress) as bar:
        done = 0
        while done < n:
            b = min(batch_size, n - done)
            out = batch_fn(b, generator)
            batch = out if isinstance(out, SampleBatch) else SampleBatch(images=out, labels=None, nfe=0)
            x = batch.images
            if x.dim() != 4 or x.shape[0] != b:
                raise ValueError(f"the sampler returned shape {tuple(x.shape)} for a batch of {b}: "
                                 f"expected ({b}, C, H, W)")
            images.append(x.float().cpu())
            if batch.labels is not None:
                labels.append(batch.labels.cpu())
            nfe, method = batch.nfe, batch.method
            done += b
            bar.update(b)
    return SampleBatch(images=torch.cat(images), labels=torch.cat(labels) if labels else None, nfe=nfe,
                       method=method)


def generate_samples(sample_fn: BatchFn, n: int, batch_size: int = 256, generator: torch.Generator | None = None,
                     progress: bool = True, meta: dict[str, Any] | None = None) -> SampleSet:
    """Draw ``n`` samples with :func:`draw_in_batches`, quantised to uint8, with a progress bar."""
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    t0 = time.perf_counter()
    batch = draw_in_batches(sample_fn, n, batch_size, gen, progress=progress)
    seconds = time.perf_counter() - t0
    logger.info("drew %d samples in %.1f s (%.4f s/img)", n, seconds, seconds / n)
    return SampleSet(images=as_uint8_images(batch.images), labels=batch.labels, meta=dict(meta or {}),
                     seconds=seconds)
