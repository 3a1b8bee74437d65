"""Figures of a VDM run (matplotlib's object API on the Agg canvas, files written atomically).

- :func:`snr_curves`: log-SNR(t) = -gamma(t) of a run's schedule against the fixed ones on the same time axis
  t in [0, 1]: VDM's fixed-linear gamma with the run's endpoints, and the DDPM's linear (Ho et al. 2020) and
  cosine (Nichol & Dhariwal 2021) schedules at t = i / T.
- :func:`plot_snr_curves` writes that figure to a PNG; :func:`plot_estimator_variance` the batch variance of the
  bound's denoising term over training (``denoising_var`` of ``metrics.jsonl``, :class:`~elbolab.vdm.VDMObjective`).
"""

from __future__ import annotations

import copy
import io
import os
from typing import Any, Mapping, Sequence

import torch
from matplotlib.figure import Figure

from elbolab.diffusion.schedules import NoiseSchedule
from elbolab.io import atomic_write_bytes
from elbolab.vdm.schedules import FixedLinearSchedule, GammaSchedule

__all__ = ["plot_estimator_variance", "plot_snr_curves", "snr_curves"]


@torch.no_grad()
def snr_curves(schedule: GammaSchedule, points: int = 1001, T: int = 1000) -> dict[str, tuple[list[float], list[float]]]:
    """``{label: (t, log_snr)}``: the run's schedule and fixed-linear gamma on ``points`` times in [0, 1], and the
    DDPM linear / cosine schedules of length ``T`` at t = i / T (i = 1..T), all as float lists."""
    sched = copy.deepcopy(schedule).double().cpu()
    t = torch.linspace(0.0, 1.0, points, dtype=torch.float64)
    g0, g1 = (float(v) for v in sched.endpoints())
    fixed = FixedLinearSchedule(g0, g1).double()
    grid = torch.arange(1, T + 1, dtype=torch.float64) / T
    name = type(schedule).__name__
    return {
        f"this run ({name})": (t.tolist(), (-sched(t)).tolist()),
        f"VDM fixed linear, gamma {g0:.2f}..{g1:.2f}": (t.tolist(), (-fixed(t)).tolist()),
        f"DDPM linear, T = {T}": (grid.tolist(), NoiseSchedule.linear(T).log_snr[1:].tolist()),
        f"DDPM cosine, T = {T}": (grid.tolist(), NoiseSchedule.cosine(T).log_snr[1:].tolist()),
    }


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight", facecolor="white")
    return buf.getvalue()


def plot_snr_curves(schedule: GammaSchedule, path: str | os.PathLike[str], *, title: str = "") -> None:
    """Write a PNG of log-SNR(t) of ``schedule`` against the fixed schedules (:func:`snr_curves`) to ``path``."""
    fig = Figure(figsize=(6.0, 4.0))
    ax = fig.add_subplot(1, 1, 1)
    styles = ["-", "--", ":", "-."]
    for (label, (t, lam)), ls in zip(snr_curves(schedule).items(), styles):
        ax.plot(t, lam, ls, label=label, linewidth=2.0 if ls == "-" else 1.3)
    ax.set_xlabel("t (VDM time; DDPM step i at t = i / T)")
    ax.set_ylabel("log SNR(t) = -gamma(t)")
    ax.set_title(title or "noise schedules: log signal-to-noise ratio")
    ax.grid(True, color="#e3e6ea")
    ax.legend(fontsize=8)
    atomic_write_bytes(path, _png(fig))


def plot_estimator_variance(records: Sequence[dict[str, Any]] | Mapping[str, Sequence[dict[str, Any]]],
                            path: str | os.PathLike[str], *, key: str = "denoising_var", title: str = "") -> None:
    """Write a PNG of ``key`` (default the batch variance of the denoising term, bits/dim squared) against the
    training step, from ``metrics.jsonl`` records, or from several runs' records (``{label: records}``, one line
    each); a ValueError when no record has ``key``."""
    runs = dict(records) if isinstance(records, Mapping) else {"": records}
    series = {label: [(r["step"], r[key]) for r in recs if isinstance(r.get(key), (int, float)) and "step" in r]
              for label, recs in runs.items()}
    if not any(series.values()):
        seen = sorted({k for recs in runs.values() for r in recs for k in r})[:12]
        raise ValueError(f"no record has {key!r} (a VDM run logs it; keys seen: {seen})")
    fig = Figure(figsize=(6.0, 3.5))
    ax = fig.add_subplot(1, 1, 1)
    for label, pts in series.items():
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], linewidth=1.2, label=label or None)
    ax.set_yscale("log")
    ax.set_xlabel("training step")
    ax.set_ylabel(f"{key} (bits/dim)^2")
    ax.set_title(title or "variance of the bound's estimator over training")
    ax.grid(True, color="#e3e6ea")
    if any(series) and len(series) > 1:
        ax.legend(fontsize=8)
    atomic_write_bytes(path, _png(fig))
