"""Image grids: a batch of images ``(N, C, H, W)`` in [-1, 1] tiled into one picture, saved as PNG."""

from __future__ import annotations

import io
import math
import os

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from elbolab.io import atomic_write_bytes


def make_grid(images: Tensor, nrow: int = 8, padding: int = 2, pad_value: float = 1.0) -> np.ndarray:
    """Tile ``images: (N, C, H, W)`` float in [-1, 1] (C = 1 or 3) into ``(H', W', C)`` uint8.

    ``nrow`` images per row, ``ceil(N / nrow)`` rows, ``padding`` pixels of ``pad_value`` (in [-1, 1])
    between and around them. Values outside [-1, 1] are clipped; NaN/inf raise ValueError.
    """
    if not isinstance(images, Tensor) or images.ndim != 4:
        raise ValueError(f"images must be a (N, C, H, W) tensor; got {getattr(images, 'shape', type(images))}")
    n, c, h, w = images.shape
    if n == 0:
        raise ValueError("images is empty (N = 0)")
    if c not in (1, 3):
        raise ValueError(f"images have C = {c} channels; expected 1 (grey) or 3 (RGB)")
    if nrow <= 0 or padding < 0:
        raise ValueError(f"nrow = {nrow} must be > 0 and padding = {padding} >= 0")
    x = images.detach().to("cpu", torch.float32)
    if not torch.isfinite(x).all():
        raise ValueError("images contain NaN or inf values")
    ncol, rows = min(nrow, n), math.ceil(n / nrow)
    grid = torch.full((c, rows * (h + padding) + padding, ncol * (w + padding) + padding), float(pad_value))
    for i in range(n):
        r, k = divmod(i, nrow)
        top, left = padding + r * (h + padding), padding + k * (w + padding)
        grid[:, top:top + h, left:left + w] = x[i]
    u8 = ((grid.clamp(-1.0, 1.0) + 1.0) * 127.5).round().to(torch.uint8)
    return u8.permute(1, 2, 0).numpy()


def save_image_grid(images: Tensor, path: str | os.PathLike[str], nrow: int = 8, padding: int = 2) -> None:
    """Save ``images: (N, C, H, W)`` in [-1, 1] as one PNG grid at ``path``, written atomically."""
    arr = make_grid(images, nrow=nrow, padding=padding)
    img = Image.fromarray(arr[:, :, 0] if arr.shape[2] == 1 else arr)  # uint8: "L" or "RGB"
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())
