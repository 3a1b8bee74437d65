"""Reading the applications' inputs (PNG images and masks, test images of a run's dataset) and writing their
outputs (PNG grids beside ``.npz`` files with the numbers), atomically.

Images inside the library are float tensors in [-1, 1] of shape ``(B, C, H, W)``; a PNG read here is converted
to the run's channels (L or RGB) and resized (bilinear, antialiased) to its ``H x W``.
"""

from __future__ import annotations

import dataclasses
import io
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from elbolab.config import RunConfig
from elbolab.io import atomic_write_bytes

__all__ = ["data_shape", "load_image_file", "load_mask_file", "save_npz", "source_images", "test_images"]


def data_shape(cfg: RunConfig) -> tuple[int, int, int]:
    """(C, H, W) of the images a run was trained on (from its data config; reads one test image)."""
    from elbolab.data import load_dataset

    ds = load_dataset(dataclasses.replace(cfg.data, split="test", limit=1), download=False)
    shape = getattr(ds, "shape", None)
    if shape is None or len(shape) != 3:
        raise ValueError(f"dataset {cfg.data.name!r} holds points, not images: the image applications need an "
                         f"image dataset")
    return tuple(int(s) for s in shape)  # type: ignore[return-value]


def test_images(cfg: RunConfig, indices: Sequence[int] | None) -> tuple[Tensor, Tensor]:
    """Images ``(B, C, H, W)`` in [-1, 1] and labels ``(B,)`` of the test split of the run's dataset
    (``indices=None``: all of them)."""
    from elbolab.data import load_dataset

    if indices is not None and not len(indices):
        raise ValueError("indices is empty: give at least one test image index")
    ds = load_dataset(dataclasses.replace(cfg.data, split="test", limit=0), download=False)
    if indices is None:
        indices = range(len(ds))
    bad = [i for i in indices if not 0 <= int(i) < len(ds)]
    if bad:
        raise ValueError(f"test image indices {bad} out of range: the test split of {cfg.data.name!r} has "
                         f"{len(ds)} images (0..{len(ds) - 1})")
    x, y = ds.batch(torch.as_tensor(list(indices), dtype=torch.long))
    return x.float(), y


def source_images(cfg: RunConfig, image: str | os.PathLike[str] | None,
                  indices: Sequence[int]) -> tuple[Tensor, Tensor | None]:
    """The images an application starts from: the file ``image`` (``(1, C, H, W)``, resized to the run's images,
    labels None) or else the test images ``indices`` of the run's dataset (with their labels)."""
    if image is not None:
        return load_image_file(image, data_shape(cfg)), None
    return test_images(cfg, indices)


def _open(path: str | os.PathLike[str], what: str) -> Image.Image:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} does not exist")
    try:
        img = Image.open(path)
        img.load()
    except OSError as e:
        raise ValueError(f"{what} {path} is not a readable image: {e}") from None
    return img


def load_image_file(path: str | os.PathLike[str], shape: tuple[int, int, int]) -> Tensor:
    """A PNG/JPEG as ``(1, C, H, W)`` float in [-1, 1] for ``shape = (C, H, W)`` (C = 1 grey or 3 RGB)."""
    c, h, w = shape
    if c not in (1, 3):
        raise ValueError(f"images must have 1 or 3 channels, the run has {c}")
    img = _open(path, "image").convert("L" if c == 1 else "RGB")
    if img.size != (w, h):
        img = img.resize((w, h), Image.Resampling.BILINEAR)
    arr = np.asarray(img, dtype=np.float32).reshape(h, w, c)
    return torch.from_numpy(arr).permute(2, 0, 1)[None] / 127.5 - 1.0


def load_mask_file(path: str | os.PathLike[str], size: tuple[int, int]) -> Tensor:
    """A mask image as ``(1, 1, H, W)`` float in {0, 1}: white (>= 128) = 1 = keep, black = 0 = fill in.

    Resized to ``size = (H, W)`` with nearest-neighbour sampling so that it stays binary.
    """
    h, w = size
    img = _open(path, "mask").convert("L")
    if img.size != (w, h):
        img = img.resize((w, h), Image.Resampling.NEAREST)
    arr = np.asarray(img) >= 128
    return torch.from_numpy(arr.astype(np.float32))[None, None]


def save_npz(path: str | os.PathLike[str], **arrays: Tensor | np.ndarray | float | int | str) -> Path:
    """Write named arrays (tensors are moved to the CPU) to a compressed ``.npz`` at ``path``, atomically."""
    path = Path(path)
    out = {}
    for name, value in arrays.items():
        if isinstance(value, Tensor):
            value = value.detach().cpu()
            value = value.float().numpy() if value.is_floating_point() else value.numpy()
        out[name] = np.asarray(value)
    buf = io.BytesIO()
    np.savez_compressed(buf, **out)
    atomic_write_bytes(path, buf.getvalue())
    return path
