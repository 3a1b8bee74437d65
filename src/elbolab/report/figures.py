"""The report's figures, drawn with matplotlib's object API (no pyplot state, Agg canvas) and returned as
PNG bytes for inlining: training curves, the ELBO decomposition, the per-timestep terms L_t, FID against
the number of network evaluations, and loss curves of several runs overlaid.

Every figure has a title and labelled axes; colours come from one palette so that a run keeps its colour.
"""

from __future__ import annotations

import io
import math
from typing import Any, Sequence

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from elbolab.report.rundata import PerTimestep, SamplerQualityRow

PALETTE = ["#2f6db5", "#d9622b", "#3a9a5b", "#8e5bb5", "#b5a22f", "#c2417a", "#4aa3b5", "#6b6b6b"]
TERM_COLOURS = {"reconstruction": "#2f6db5", "prior": "#3a9a5b", "denoising": "#d9622b"}
_SKIP = {"step", "epoch", "time"}
_DPI = 110


def to_png(fig: Figure) -> bytes:
    """Render ``fig`` to PNG bytes (tight bounding box)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=_DPI, bbox_inches="tight", facecolor="white")
    return buf.getvalue()


def _style(ax: Any) -> None:
    ax.grid(True, which="major", color="#e3e6ea", linewidth=0.8)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    ax.tick_params(labelsize=8)


def curve_groups(records: Sequence[dict[str, Any]]) -> dict[str, list[str]]:
    """metrics.jsonl keys sorted into panels: ``"loss[/group]"`` (the loss terms of each parameter group),
    ``"lr"``, ``"grad_norm"``, ``"img/s"``. Keys that are never numbers are left out."""
    keys: list[str] = []
    for rec in records:
        for k, v in rec.items():
            if k not in keys and k not in _SKIP and isinstance(v, (int, float)) and not isinstance(v, bool):
                keys.append(k)
    panels: dict[str, list[str]] = {}
    for k in keys:
        if k == "img/s":
            panel = "img/s"
        elif k == "lr" or k.startswith("lr/"):
            panel = "lr"
        elif k == "grad_norm" or k.startswith("grad_norm/"):
            panel = "grad_norm"
        elif k.startswith("loss/"):
            panel = "loss/" + k.split("/", 1)[1]
        elif "/" in k and not k.startswith("objective/"):
            panel = "loss/" + k.split("/", 1)[0]
        else:
            panel = "loss"
        panels.setdefault(panel, []).append(k)
    order = sorted(panels, key=lambda p: (not p.startswith("loss"), p != "loss", p))
    return {p: panels[p] for p in order}


_PANEL_TITLES = {"loss": "loss terms", "lr": "learning rate", "grad_norm": "gradient norm (before clipping)",
                 "img/s": "throughput"}
_PANEL_YLABELS = {"lr": "lr", "grad_norm": "‖g‖₂", "img/s": "images / s"}


def _series(records: Sequence[dict[str, Any]], key: str) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for rec in records:
        v = rec.get(key)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            xs.append(float(rec["step"]))
            ys.append(float(v))
    return xs, ys


def _wide(ys: Sequence[float]) -> bool:
    """True when positive values span more than a factor 10 (worth a log axis)."""
    return bool(ys) and min(ys) > 0 and max(ys) / min(ys) > 10.0


def _distinct(records: Sequence[dict[str, Any]], keys: Sequence[str]) -> list[tuple[str, list[float], list[float]]]:
    """(label, steps, values) per key; keys with identical series share one line, labelled "a = b"."""
    out: list[tuple[str, list[float], list[float]]] = []
    for k in keys:
        xs, ys = _series(records, k)
        if not xs:
            continue
        for j, (label, xs2, ys2) in enumerate(out):
            if xs2 == xs and ys2 == ys:
                out[j] = (f"{label} = {k}", xs2, ys2)
                break
        else:
            out.append((k, xs, ys))
    return out


def training_curves(records: Sequence[dict[str, Any]], title: str) -> bytes:
    """One panel per group of :func:`curve_groups` against the step; loss panels whose positive values span
    more than a factor 10 on a log axis; identical series (``loss`` and ``mse``) drawn once."""
    panels = curve_groups(records)
    n = max(len(panels), 1)
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(4.2 * cols, 3.0 * rows))
    for i, (panel, keys) in enumerate(panels.items()):
        ax = fig.add_subplot(rows, cols, i + 1)
        _style(ax)
        lines = _distinct(records, keys)
        for j, (label, xs, ys) in enumerate(lines):
            ax.plot(xs, ys, color=PALETTE[j % len(PALETTE)], linewidth=1.3, label=label,
                    marker="o" if len(xs) < 12 else None, markersize=3)
        if panel.startswith("loss") and _wide([y for _, _, ys in lines for y in ys]):
            ax.set_yscale("log")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        group = panel.split("/", 1)[1] if panel.startswith("loss/") else ""
        ax.set_title(f"loss terms of group {group}" if group else _PANEL_TITLES.get(panel, panel), fontsize=10)
        ax.set_xlabel("step", fontsize=9)
        ax.set_ylabel(_PANEL_YLABELS.get(panel, "value"), fontsize=9)
        if len(lines) > 1 or (lines and " = " in lines[0][0]):
            ax.legend(fontsize=7, frameon=False)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return to_png(fig)


def elbo_bars(sources: dict[str, dict[str, float]], title: str) -> bytes:
    """The ELBO decomposition: one horizontal bar per term (bits/dim) for each source (``eval --bpd``,
    ``demo``), the value written beside each bar (the prior term is often 1e-5 and invisible otherwise)."""
    terms: list[str] = []
    for t in ("reconstruction", "prior", "denoising"):
        if any(t in s for s in sources.values()):
            terms.append(t)
    for s in sources.values():
        terms += [t for t in s if t not in terms]
    names = list(sources)
    fig = Figure(figsize=(6.4, 0.55 * len(terms) * len(names) + 1.4))
    ax = fig.add_subplot(1, 1, 1)
    _style(ax)
    h = 0.8 / len(names)
    top = max((v for s in sources.values() for v in s.values()), default=1.0)
    for j, name in enumerate(names):
        ys = [i + (j - (len(names) - 1) / 2) * h for i in range(len(terms))]
        vals = [sources[name].get(t, 0.0) for t in terms]
        colours = [TERM_COLOURS.get(t, PALETTE[(k + 3) % len(PALETTE)]) for k, t in enumerate(terms)]
        ax.barh(ys, vals, height=h * 0.9, color=colours, alpha=1.0 if j == 0 else 0.6,
                label=name, edgecolor="white")
        for y, v in zip(ys, vals):
            ax.text(v + top * 0.01, y, f"{v:.4g}" + (f"  ({name})" if len(names) > 1 else ""), va="center",
                    fontsize=8, color="#333")
    ax.set_yticks(range(len(terms)), terms, fontsize=9)
    ax.invert_yaxis()
    ax.set_xlim(0, top * 1.3 if top > 0 else 1)
    ax.set_xlabel("bits / dim", fontsize=9)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return to_png(fig)


def per_timestep_plot(per_t: PerTimestep, title: str) -> bytes:
    """L_{t-1} (bits/dim) against t, both axes logarithmic, with the cumulative share of the bound's
    denoising-plus-reconstruction bits spent at steps <= t on a second axis (where the bits go)."""
    fig = Figure(figsize=(6.4, 3.4))
    ax = fig.add_subplot(1, 1, 1)
    _style(ax)
    t, v = per_t.t, per_t.bpd
    pos = [(ti, vi) for ti, vi in zip(t, v) if vi > 0]
    ax.plot([p[0] for p in pos if p[0] > 1], [p[1] for p in pos if p[0] > 1], color=TERM_COLOURS["denoising"],
            linewidth=1.4, label=r"denoising $L_{t-1}$, $t \geq 2$")
    if pos and pos[0][0] == 1:
        ax.plot([1], [pos[0][1]], "o", color=TERM_COLOURS["reconstruction"], label=r"reconstruction $L_0$ ($t = 1$)")
    ax.set_xscale("log")
    if pos:
        ax.set_yscale("log")
    ax.set_xlabel("timestep t", fontsize=9)
    ax.set_ylabel(r"$L_{t-1}$  (bits / dim)", fontsize=9)
    ax.set_title(title, fontsize=10)
    total = sum(max(x, 0.0) for x in v)
    if total > 0:
        ax2 = ax.twinx()
        acc, cum = 0.0, []
        for x in v:
            acc += max(x, 0.0)
            cum.append(acc / total)
        ax2.plot(t, cum, color="#6b6b6b", linewidth=1.0, linestyle="--", label="cumulative share")
        ax2.set_ylim(0, 1.02)
        ax2.set_ylabel(r"share of the bits at steps $\leq t$", fontsize=9)
        ax2.tick_params(labelsize=8)
        ax2.spines["top"].set_visible(False)
        lines = ax.get_legend_handles_labels()
        lines2 = ax2.get_legend_handles_labels()
        ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], fontsize=7, frameon=True, framealpha=0.9, loc="best")
    fig.tight_layout()
    return to_png(fig)


def fid_vs_nfe(rows: Sequence[SamplerQualityRow], title: str) -> bytes:
    """FID against NFE (log axis), one line per sampler."""
    fig = Figure(figsize=(6.4, 3.4))
    ax = fig.add_subplot(1, 1, 1)
    _style(ax)
    samplers: list[str] = []
    for r in rows:
        if r.sampler not in samplers:
            samplers.append(r.sampler)
    for j, s in enumerate(samplers):
        pts = sorted((r.nfe, r.fid) for r in rows if r.sampler == s)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", markersize=4, linewidth=1.4,
                color=PALETTE[j % len(PALETTE)], label=s)
    ax.set_xscale("log")
    ax.set_xlabel("network evaluations (NFE)", fontsize=9)
    ax.set_ylabel("FID", fontsize=9)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, frameon=False)
    fig.tight_layout()
    return to_png(fig)


def compare_losses(runs: Sequence[tuple[str, Sequence[dict[str, Any]]]], title: str) -> bytes:
    """The ``loss`` of several runs against the step, overlaid (one colour per run)."""
    fig = Figure(figsize=(6.4, 3.4))
    ax = fig.add_subplot(1, 1, 1)
    _style(ax)
    every: list[float] = []
    for j, (name, records) in enumerate(runs):
        xs, ys = _series(records, "loss")
        if xs:
            every += ys
            ax.plot(xs, ys, color=PALETTE[j % len(PALETTE)], linewidth=1.3, label=name,
                    marker="o" if len(xs) < 12 else None, markersize=3)
    if _wide(every):
        ax.set_yscale("log")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("step", fontsize=9)
    ax.set_ylabel("loss", fontsize=9)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, frameon=False)
    fig.tight_layout()
    return to_png(fig)
