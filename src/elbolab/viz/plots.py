"""Figures beyond plain image grids: grids with row/column labels, scatter plots of particles, flow fields,
density contours, and animated GIFs. matplotlib (Agg backend, no display) draws; files are written atomically.

Shapes: image rows ``(R, N, C, H, W)`` in [-1, 1]; particles ``(P, 2)``; grids of points ``(G, 2)`` with
vectors ``(G, 2)``; animation frames ``(H, W, 3)`` uint8.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Callable, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from PIL import Image  # noqa: E402
from torch import Tensor  # noqa: E402

from elbolab.io import atomic_write_bytes  # noqa: E402
from elbolab.viz.grid import make_grid  # noqa: E402

__all__ = [
    "density_image",
    "figure_to_array",
    "flow_field",
    "particles",
    "save_annotated_grid",
    "save_figure",
    "save_gif",
]


def save_figure(fig: Figure, path: str | os.PathLike[str], dpi: int = 100) -> Path:
    """Save ``fig`` as a PNG at ``path`` (atomically) and close it."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)


def figure_to_array(fig: Figure, close: bool = True) -> np.ndarray:
    """Render ``fig`` to an ``(H, W, 3)`` uint8 array (one animation frame)."""
    fig.canvas.draw()
    arr = np.asarray(fig.canvas.buffer_rgba())[:, :, :3].copy()
    if close:
        plt.close(fig)
    return arr


def save_gif(frames: Sequence[np.ndarray], path: str | os.PathLike[str], duration_ms: int = 120,
             final_pause_ms: int = 1200) -> Path:
    """An animated GIF (looping) from ``frames: [(H, W, 3) uint8]``; the last frame is held ``final_pause_ms``."""
    if not len(frames):
        raise ValueError("save_gif: no frames")
    shapes = {f.shape for f in frames}
    if len(shapes) != 1:
        raise ValueError(f"save_gif: frames differ in shape: {sorted(shapes)}")
    images = [Image.fromarray(f).convert("P", palette=Image.Palette.ADAPTIVE, colors=255) for f in frames]
    durations = [duration_ms] * (len(images) - 1) + [max(duration_ms, final_pause_ms)]
    buf = io.BytesIO()
    images[0].save(buf, format="GIF", save_all=True, append_images=images[1:], duration=durations, loop=0,
                   disposal=2)
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)


def save_annotated_grid(rows: Tensor, path: str | os.PathLike[str], *, row_labels: Sequence[str] | None = None,
                        col_labels: Sequence[str] | None = None, title: str | None = None,
                        scale: float = 1.0) -> Path:
    """Images ``rows: (R, N, C, H, W)`` in [-1, 1] as one grid (row r, column n) with text labels, as a PNG."""
    if rows.ndim != 5:
        raise ValueError(f"rows must have shape (R, N, C, H, W), got {tuple(rows.shape)}")
    R, N, C, H, W = rows.shape
    for name, labels, count in (("row_labels", row_labels, R), ("col_labels", col_labels, N)):
        if labels is not None and len(labels) != count:
            raise ValueError(f"{name} has {len(labels)} entries for {count} {name[:3]}s")
    pad = 2
    arr = make_grid(rows.reshape(R * N, C, H, W), nrow=N, padding=pad)
    inch = max(H, W) / 28.0 * 0.6 * scale  # ~0.6 inch per MNIST-sized image
    fig = plt.figure(figsize=(0.9 + N * inch, 0.5 + R * inch + (0.3 if title else 0.0)))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.imshow(arr[:, :, 0] if C == 1 else arr, cmap="gray" if C == 1 else None, vmin=0, vmax=255,
              interpolation="nearest")
    ax.set_xticks([pad + W / 2 - 0.5 + n * (W + pad) for n in range(N)] if col_labels else [])
    ax.set_xticklabels(list(col_labels) if col_labels else [], fontsize=7, rotation=0)
    ax.xaxis.set_ticks_position("top")
    ax.set_yticks([pad + H / 2 - 0.5 + r * (H + pad) for r in range(R)] if row_labels else [])
    ax.set_yticklabels(list(row_labels) if row_labels else [], fontsize=7)
    ax.tick_params(length=0)
    for s in ax.spines.values():
        s.set_visible(False)
    if title:
        ax.set_title(title, fontsize=8, pad=14 if col_labels else 4)
    return save_figure(fig, path, dpi=int(100 * max(1.0, 28.0 / max(H, W))))


def particles(ax: Axes, points: Tensor, *, lim: float, color: str = "C0", size: float = 2.0,
              alpha: float = 0.5, title: str | None = None) -> None:
    """Scatter ``points: (P, 2)`` on ``ax`` in the square [-lim, lim]^2."""
    p = points.detach().cpu().float().numpy()
    ax.scatter(p[:, 0], p[:, 1], s=size, c=color, alpha=alpha, linewidths=0)
    _square(ax, lim, title)


def flow_field(ax: Axes, grid: Tensor, vectors: Tensor, *, lim: float, color: str = "k",
               title: str | None = None) -> None:
    """Arrows ``vectors: (G, 2)`` at ``grid: (G, 2)``, normalised per panel so that every panel reads alike: the
    90th-percentile length is one grid cell, longer arrows (e.g. far outside the data) are clipped to it."""
    g = grid.detach().cpu().float().numpy()
    v = vectors.detach().cpu().float().numpy()
    lengths = np.linalg.norm(v, axis=1)
    ref = float(np.quantile(lengths, 0.9)) or 1.0
    v = v / ref / np.maximum(lengths / ref, 1.0)[:, None]
    ax.quiver(g[:, 0], g[:, 1], v[:, 0], v[:, 1], color=color, angles="xy", scale_units="xy",
              scale=1.0 / (0.9 * 2 * lim / max(2, int(round(np.sqrt(len(g)))))), width=0.004, alpha=0.8)
    _square(ax, lim, title)


def density_image(ax: Axes, log_prob: Callable[[Tensor], Tensor], *, lim: float, resolution: int = 120,
                  cmap: str = "Greys") -> None:
    """Shade ``exp(log_prob)`` of a 2-D density on [-lim, lim]^2 (``log_prob: (G, 2) -> (G,)``)."""
    xs = torch.linspace(-lim, lim, resolution, dtype=torch.float64)
    xx, yy = torch.meshgrid(xs, xs, indexing="xy")
    pts = torch.stack([xx.flatten(), yy.flatten()], 1)
    dens = log_prob(pts).exp().reshape(resolution, resolution).float().numpy()
    ax.imshow(dens, extent=(-lim, lim, -lim, lim), origin="lower", cmap=cmap, alpha=0.6, interpolation="bilinear")
    _square(ax, lim, None)


def _square(ax: Axes, lim: float, title: str | None) -> None:
    ax.set_xlim(-lim, lim)
    ax.set_ylim(-lim, lim)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=8)
