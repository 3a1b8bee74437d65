"""``build_report(runs, out)``: one self-contained HTML file for one or several run folders.

Everything is inline: the CSS in a ``<style>`` tag, images and matplotlib figures as ``data:image/png;base64``
URIs; there is no script, no font, no network request, so the file reads offline and travels as an e-mail
attachment. Sections per run: the config (``config.toml``, collapsible), training curves (every metrics.jsonl
term per parameter group, lr, gradient norm, img/s against the step), the sample grids over training steps,
the ELBO decomposition (reconstruction / prior / denoising, bits/dim) with the per-timestep terms L_t on log
axes when known, the metrics table (FID, KID, IS, precision/recall, classifier confidence, bits/dim and how
8-bit data got a likelihood: "ELBO" rows are the discretised-decoder bound, "ODE" the probability-flow ODE NLL
of ``elbolab eval --nll ode``) and FID against NFE from ``sampler_quality.json``. Several runs add a
comparison table and their loss curves overlaid.

Every number on the page sits in an element ``<span class="num" data-run="I" data-key="FILE:PATH"
data-value="REPR">ROUNDED</span>``: run ``I`` (0-based, in the order given), the JSON file and the dotted path
of the value in it (:func:`elbolab.report.rundata.lookup`), and the full ``repr`` of the float, so that a
test can check every displayed figure against the run's files.
"""

from __future__ import annotations

import base64
import datetime
import html
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from elbolab.io import atomic_write_text
from elbolab.report import figures
from elbolab.report.rundata import (
    DEMO_FILE,
    METRICS_FILE,
    METRICS_LOG,
    SAMPLER_QUALITY_FILE,
    RunData,
    compute_per_timestep,
    load_run_data,
    lookup,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReportResult:
    """What :func:`build_report` wrote: ``path`` (``size_bytes``), ``runs`` (their folders), ``images``: the
    number of inline images, ``numbers``: the number of tagged figures, ``notes``: what was missing."""

    path: Path
    size_bytes: int
    runs: tuple[Path, ...]
    images: int
    numbers: int
    notes: tuple[str, ...] = field(default_factory=tuple)

    def to_text(self) -> str:
        kib = self.size_bytes / 1024
        lines = [f"report of {len(self.runs)} run(s) written to {self.path} ({kib:.0f} KiB, {self.images} images)"]
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


def format_number(x: float | int, digits: int) -> str:
    """``digits`` decimals; ``digits`` significant figures in exponent form for |x| < 10^-digits or >= 1e5
    (the rule of ``elbolab eval``'s table); integers as integers."""
    if isinstance(x, int) and not isinstance(x, bool):
        return str(x)
    if not math.isfinite(x):
        return "–"
    if x != 0 and (abs(x) >= 1e5 or abs(x) < 10 ** (-digits)):
        return f"{x:.{digits}g}"
    return f"{x:.{digits}f}"


class _Page:
    """Collects the HTML of the page and counts what it tags."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.images = 0
        self.numbers = 0

    def add(self, s: str) -> None:
        self.parts.append(s)

    def img(self, png: bytes, alt: str, cls: str = "fig") -> str:
        self.images += 1
        b64 = base64.b64encode(png).decode("ascii")
        return f'<img class="{cls}" alt="{html.escape(alt)}" src="data:image/png;base64,{b64}">'

    def num(self, run: int, data: RunData, source: str, path: str, digits: int) -> str:
        """The value at ``source:path`` of run ``run`` as a tagged, rounded number ('–' if absent/null)."""
        try:
            v = lookup(data.json_source(source), path)
        except KeyError:
            return '<span class="na">–</span>'
        if v is None or isinstance(v, bool) or not isinstance(v, (int, float)):
            return '<span class="na">–</span>'
        self.numbers += 1
        return (f'<span class="num" data-run="{run}" data-key="{source}:{path}" data-value="{v!r}">'
                f"{format_number(v, digits)}</span>")


def _has(data: RunData, source: str, path: str) -> bool:
    try:
        v = lookup(data.json_source(source), path)
    except KeyError:
        return False
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _family(data: RunData) -> str:
    if data.config_text is None:
        return "?"
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]
    try:
        return str(tomllib.loads(data.config_text).get("family", "?"))
    except Exception:  # a config that does not parse is still shown verbatim
        return "?"


# --------------------------------------------------------------------------------------------------
# sections
# --------------------------------------------------------------------------------------------------
def _metric_rows(i: int, d: RunData, page: _Page) -> list[tuple[str, str, str, str]]:
    """(metric, value, ±, note) rows from metrics.json and demo.json."""
    m, M, D = d.metrics, METRICS_FILE, DEMO_FILE
    rows: list[tuple[str, str, str, str]] = []
    if m is not None:
        n_note = ""
        if _has(d, M, "n_samples") and m.get("n_samples"):
            n_note = f"n = {page.num(i, d, M, 'n_samples', 0)} vs {html.escape(str(m.get('reference', '')))}"
            if _has(d, M, "n_reference"):
                n_note += f" (n = {page.num(i, d, M, 'n_reference', 0)})"
        if _has(d, M, "fid.fid"):
            rows.append(("FID", page.num(i, d, M, "fid.fid", 2), "", n_note))
        if _has(d, M, "kid.mean"):
            rows.append(("KID", page.num(i, d, M, "kid.mean", 5), "± " + page.num(i, d, M, "kid.stderr", 5),
                         f"{page.num(i, d, M, 'kid.num_subsets', 0)} subsets of "
                         f"{page.num(i, d, M, 'kid.subset_size', 0)}"))
        if _has(d, M, "inception.mean"):
            rows.append(("IS", page.num(i, d, M, "inception.mean", 3), "± " + page.num(i, d, M, "inception.std", 3),
                         f"std over {page.num(i, d, M, 'inception.splits', 0)} splits"))
        for k in ("precision", "recall"):
            if _has(d, M, f"pr.{k}"):
                rows.append((k, page.num(i, d, M, f"pr.{k}", 3), "", f"k = {page.num(i, d, M, 'pr.k', 0)}"))
        if _has(d, M, "confidence.fraction"):
            thr = m["confidence"].get("threshold", 0.9)
            rows.append((f"confident (p ≥ {thr:g})", page.num(i, d, M, "confidence.fraction", 3), "",
                         f"n = {page.num(i, d, M, 'confidence.n', 0)}"))
        if _has(d, M, "bpd.value"):
            method = html.escape(str(m["bpd"].get("method", "")))
            rows.append(("bits/dim", page.num(i, d, M, "bpd.value", 4), "± " + page.num(i, d, M, "bpd.stderr", 4),
                         f"{method}; n = {page.num(i, d, M, 'bpd.n', 0)} test images"))
            for term in m["bpd"].get("terms", {}):
                rows.append((f"&nbsp;&nbsp;{html.escape(term)}", page.num(i, d, M, f"bpd.terms.{term}", 4), "", ""))
        if _has(d, M, "nll_ode.value"):  # elbolab eval --nll ode (elbolab.report.ode_nll)
            e = m["nll_ode"]
            kind = html.escape(str(e.get("kind", "ODE")))
            se = "± " + page.num(i, d, M, "nll_ode.stderr", 4) if _has(d, M, "nll_ode.stderr") else ""
            rows.append((f"bits/dim ({kind})", page.num(i, d, M, "nll_ode.value", 4), se,
                         f"{kind}: probability-flow ODE NLL, uniform dequantisation "
                         f"({page.num(i, d, M, 'nll_ode.n_dequant', 0)} draw(s) per image); n = "
                         f"{page.num(i, d, M, 'nll_ode.n', 0)} test images, "
                         f"{page.num(i, d, M, 'nll_ode.nfe', 0)} NFE"))
    if d.demo is not None:
        if _has(d, D, "confident_fraction"):
            rows.append(("demo: confident (p ≥ 0.9)", page.num(i, d, D, "confident_fraction", 3), "",
                         f"n = {page.num(i, d, D, 'confidence_n', 0)} samples, {html.escape(str(d.demo.get('sampler', '')))}"))
        if _has(d, D, "fidelity.fid"):
            rows.append(("demo: FID", page.num(i, d, D, "fidelity.fid", 2), "",
                         f"real-data floor {page.num(i, d, D, 'fidelity.real_fid', 2)} at n = "
                         f"{page.num(i, d, D, 'fidelity.n', 0)}"))
        for k in ("precision", "recall"):
            if _has(d, D, f"fidelity.{k}"):
                rows.append((f"demo: {k}", page.num(i, d, D, f"fidelity.{k}", 3), "",
                             f"real-data floor {page.num(i, d, D, f'fidelity.real_{k}', 3)}"))
        if _has(d, D, "elbo_bpd.total"):
            rows.append(("demo: bits/dim (ELBO)", page.num(i, d, D, "elbo_bpd.total", 4),
                         "± " + page.num(i, d, D, "elbo_bpd.total_stderr", 4),
                         f"discretized Gaussian decoder; n = {page.num(i, d, D, 'elbo_images', 0)} test images"))
        if _has(d, D, "sample_seconds_per_image"):
            rows.append(("demo: sampling s/image", page.num(i, d, D, "sample_seconds_per_image", 4), "", ""))
    return rows


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], cls: str = "") -> str:
    head = "".join(f"<th>{h}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _training_summary(i: int, d: RunData, page: _Page) -> str:
    if not d.records:
        return ""
    L = METRICS_LOG
    bits = [f"step {page.num(i, d, L, '-1.step', 0)}"]
    if _has(d, L, "-1.epoch"):
        bits.append(f"epoch {page.num(i, d, L, '-1.epoch', 3)}")
    if _has(d, L, "-1.loss"):
        bits.append(f"last logged loss {page.num(i, d, L, '-1.loss', 4)}")
    if _has(d, L, "-1.img/s"):
        bits.append(f"{page.num(i, d, L, '-1.img/s', 1)} img/s")
    if _has(d, L, "-1.time"):
        bits.append(f"{page.num(i, d, L, '-1.time', 1)} s of training")
    return '<p class="summary">' + " · ".join(bits) + f" · {len(d.records)} log lines</p>"


def _pick_grids(grids: list[tuple[int, Path]], max_grids: int) -> list[tuple[int, Path]]:
    if len(grids) <= max_grids:
        return grids
    idx = sorted({round(k * (len(grids) - 1) / (max_grids - 1)) for k in range(max_grids)})
    return [grids[k] for k in idx]


def _elbo_sources(d: RunData) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    if d.metrics and isinstance(d.metrics.get("bpd"), dict):
        terms = {k: float(v) for k, v in d.metrics["bpd"].get("terms", {}).items() if isinstance(v, (int, float))}
        if terms:
            out["eval --bpd"] = terms
    if d.demo and isinstance(d.demo.get("elbo_bpd"), dict):
        e = d.demo["elbo_bpd"]
        terms = {k: float(e[k]) for k in ("reconstruction", "prior", "denoising") if isinstance(e.get(k), (int, float))}
        if terms:
            out["demo"] = terms
    return out


def _run_section(i: int, d: RunData, page: _Page, max_grids: int) -> None:
    name = html.escape(d.name)
    page.add(f'<section class="run" id="run-{i}"><h2><span class="tag">{i + 1}</span> {name}'
             f' <small>{html.escape(_family(d))} · {html.escape(str(d.folder))}</small></h2>')
    page.add(_training_summary(i, d, page))
    if d.config_text is not None:
        page.add(f"<details><summary>config.toml</summary><pre>{html.escape(d.config_text)}</pre></details>")
    if d.records:
        png = figures.training_curves(d.records, f"training curves: {d.name}")
        page.add("<h3>Training curves</h3>" + page.img(png, f"training curves of {d.name}"))
    grids = _pick_grids(d.grids, max_grids)
    if grids or d.demo_grid:
        page.add("<h3>Samples over training</h3>")
        if len(grids) < len(d.grids):
            page.add(f'<p class="muted">{len(grids)} of {len(d.grids)} grids, evenly spaced.</p>')
        page.add('<div class="grids">')
        for step, path in grids:
            page.add(f"<figure>{page.img(path.read_bytes(), f'samples at step {step}', 'grid')}"
                     f"<figcaption>step {step}</figcaption></figure>")
        if d.demo_grid:
            page.add(f"<figure>{page.img(d.demo_grid.read_bytes(), 'demo samples', 'grid')}"
                     f"<figcaption>demo samples ({html.escape(str((d.demo or {}).get('sampler', '')))})"
                     "</figcaption></figure>")
        page.add("</div>")
    sources = _elbo_sources(d)
    if sources or d.per_timestep:
        page.add("<h3>Where the bound's bits go</h3><div class=\"row\">")
        if sources:
            page.add(page.img(figures.elbo_bars(sources, "ELBO decomposition (negative ELBO, bits/dim)"),
                              "ELBO decomposition"))
        if d.per_timestep:
            pt = d.per_timestep
            src = "computed from the weights" if pt.source == "computed" else pt.source
            page.add(page.img(figures.per_timestep_plot(pt, f"per-timestep terms $L_{{t-1}}$, {pt.n_images} "
                                                            f"test images ({src})"), "per-timestep terms"))
        else:
            page.add('<p class="muted">Per-timestep terms L<sub>t</sub>: not in the run (pass '
                     "<code>--per-t N</code> / per_timestep_images to compute them from the weights).</p>")
        page.add("</div>")
    rows = _metric_rows(i, d, page)
    if rows:
        page.add("<h3>Metrics</h3>" + _table(["metric", "value", "±", "note"], rows, "metrics"))
    if d.sampler_quality:
        page.add("<h3>FID against network evaluations</h3>")
        page.add(page.img(figures.fid_vs_nfe(d.sampler_quality, "FID vs NFE"), "FID against NFE"))
        S = SAMPLER_QUALITY_FILE
        srows = [[html.escape(r.sampler), page.num(i, d, S, f"{k}.nfe", 0), page.num(i, d, S, f"{k}.fid", 2),
                  page.num(i, d, S, f"{k}.precision", 3), page.num(i, d, S, f"{k}.recall", 3),
                  page.num(i, d, S, f"{k}.seconds_per_image", 4)] for k, r in enumerate(d.sampler_quality)]
        page.add(_table(["sampler", "NFE", "FID", "precision", "recall", "s / image"], srows, "metrics"))
    if d.notes:
        page.add('<p class="muted">' + "; ".join(html.escape(n) for n in d.notes) + "</p>")
    page.add("</section>")


def _first(d: RunData, candidates: Sequence[tuple[str, str]]) -> tuple[str, str] | None:
    for source, path in candidates:
        if _has(d, source, path):
            return source, path
    return None


_COMPARE = [  # column, digits, candidate (file, path) in order of preference
    ("step", 0, [(METRICS_LOG, "-1.step"), (DEMO_FILE, "train.step")]),
    ("last loss", 4, [(METRICS_LOG, "-1.loss"), (DEMO_FILE, "train.final_loss")]),
    ("img/s", 1, [(METRICS_LOG, "-1.img/s"), (DEMO_FILE, "train.img_per_s")]),
    ("bits/dim", 4, [(METRICS_FILE, "bpd.value"), (DEMO_FILE, "elbo_bpd.total")]),
    ("bits/dim (ODE)", 4, [(METRICS_FILE, "nll_ode.value")]),
    ("FID", 2, [(METRICS_FILE, "fid.fid"), (DEMO_FILE, "fidelity.fid")]),
    ("KID", 5, [(METRICS_FILE, "kid.mean")]),
    ("IS", 3, [(METRICS_FILE, "inception.mean")]),
    ("precision", 3, [(METRICS_FILE, "pr.precision"), (DEMO_FILE, "fidelity.precision")]),
    ("recall", 3, [(METRICS_FILE, "pr.recall"), (DEMO_FILE, "fidelity.recall")]),
    ("confident", 3, [(METRICS_FILE, "confidence.fraction"), (DEMO_FILE, "confident_fraction")]),
]


def _comparison(data: list[RunData], page: _Page) -> None:
    cols = [c for c in _COMPARE if any(_first(d, c[2]) for d in data)]
    rows = []
    for i, d in enumerate(data):
        row = [f'<a href="#run-{i}"><span class="tag">{i + 1}</span> {html.escape(d.name)}</a>',
               html.escape(_family(d))]
        for _, digits, cands in cols:
            hit = _first(d, cands)
            row.append(page.num(i, d, hit[0], hit[1], digits) if hit else '<span class="na">–</span>')
        rows.append(row)
    title = "Comparison" if len(data) > 1 else "Summary"
    page.add(f'<section id="comparison"><h2>{title}</h2>')
    page.add(_table(["run", "family", *[c[0] for c in cols]], rows, "compare"))
    if len(data) > 1 and any(d.records for d in data):
        png = figures.compare_losses([(f"{i + 1}: {d.name}", d.records) for i, d in enumerate(data)],
                                     "training loss of each run")
        page.add(page.img(png, "loss of every run"))
    page.add('<p class="muted">bits/dim: the eval bound when present, else the demo\'s; FID/precision/recall '
             "likewise. Sources are tagged on every number (data-key).</p></section>")


_CSS = """
:root { --fg:#1f2328; --muted:#656d76; --line:#d8dee4; --bg:#f6f8fa; --accent:#2f6db5; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.5 -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; color: var(--fg);
       background: #fff; }
header { padding: 22px 36px 14px; border-bottom: 1px solid var(--line); background: var(--bg); }
header h1 { margin: 0; font-size: 24px; }
header p { margin: 4px 0 0; color: var(--muted); font-size: 13px; }
main { max-width: 1320px; margin: 0 auto; padding: 8px 36px 48px; }
section { margin: 26px 0; padding-bottom: 18px; border-bottom: 1px solid var(--line); }
h2 { font-size: 20px; margin: 0 0 10px; }
h2 small { font-weight: normal; color: var(--muted); font-size: 13px; margin-left: 8px; }
h3 { font-size: 15px; margin: 22px 0 8px; text-transform: uppercase; letter-spacing: .04em; color: #444; }
.tag { display: inline-block; min-width: 1.6em; padding: 0 .4em; border-radius: 1em; background: var(--accent);
       color: #fff; font-size: .8em; text-align: center; }
table { border-collapse: collapse; font-size: 14px; margin: 6px 0 12px; }
th, td { padding: 5px 12px; border-bottom: 1px solid var(--line); text-align: left; vertical-align: top; }
th { background: var(--bg); font-weight: 600; }
td .num, td.num { font-variant-numeric: tabular-nums; }
table.compare td:nth-child(n+3), table.compare th:nth-child(n+3) { text-align: right; }
tbody tr:hover { background: #fafbfc; }
.na { color: #aab; }
.muted { color: var(--muted); font-size: 13px; }
.summary { color: #333; }
details { margin: 6px 0 10px; }
summary { cursor: pointer; color: var(--accent); }
pre { background: var(--bg); border: 1px solid var(--line); border-radius: 6px; padding: 10px 14px;
      max-height: 420px; overflow: auto; font-size: 12px; }
img.fig { max-width: 100%; height: auto; display: block; margin: 6px 0 10px; }
.row { display: flex; flex-wrap: wrap; gap: 18px; align-items: flex-start; }
.row img.fig { max-width: 600px; }
.grids { display: flex; flex-wrap: wrap; gap: 14px; }
figure { margin: 0; text-align: center; }
img.grid { width: 200px; height: auto; image-rendering: pixelated; border: 1px solid var(--line);
           border-radius: 4px; background: #000; }
figcaption { font-size: 12px; color: var(--muted); margin-top: 2px; }
a { color: var(--accent); text-decoration: none; }
"""


def build_report(runs: Sequence[str | os.PathLike[str]], out: str | os.PathLike[str], *,
                 per_timestep_images: int = 0, max_grids: int = 12, title: str = "elbolab run report",
                 seed: int = 0) -> ReportResult:
    """Write the report of the run folders ``runs`` to ``out`` (atomically) and return what it holds.

    ``per_timestep_images > 0`` computes the per-timestep terms L_{t-1} of each DDPM run on that many test
    images from its weights (:func:`elbolab.report.rundata.compute_per_timestep`, T network evaluations per
    image) when the run has no ``elbo_per_t.json``; ``max_grids`` caps the sample grids shown per run (evenly
    spaced, the last included).
    """
    if not runs:
        raise ValueError("build_report needs at least one run folder")
    if max_grids < 1:
        raise ValueError(f"max_grids = {max_grids!r} must be >= 1")
    out = Path(out)
    names = [Path(r).resolve().name for r in runs]
    data = []
    for k, r in enumerate(runs):
        name = names[k] if names.count(names[k]) == 1 else f"{Path(r).resolve().parent.name}/{names[k]}"
        d = load_run_data(r, name)
        if per_timestep_images > 0 and d.per_timestep is None and d.config_text is not None:
            d.per_timestep = compute_per_timestep(r, per_timestep_images, seed=seed)
        data.append(d)
    page = _Page()
    from elbolab import __version__

    stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    page.add(f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
             f'<meta name="viewport" content="width=device-width, initial-scale=1">'
             f'<link rel="icon" href="data:,"><title>{html.escape(title)}</title><style>{_CSS}</style></head><body>')
    page.add(f"<header><h1>{html.escape(title)}</h1><p>{len(data)} run(s) · elbolab {html.escape(__version__)} · "
             f"{stamp} · self-contained: no network needed</p></header><main>")
    _comparison(data, page)
    for i, d in enumerate(data):
        _run_section(i, d, page, max_grids)
    page.add("</main></body></html>\n")
    text = "".join(page.parts)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, text)
    notes = tuple(f"{d.name}: {n}" for d in data for n in d.notes)
    size = len(text.encode("utf-8"))
    logger.info("report of %d run(s): %s (%.0f KiB)", len(data), out, size / 1024)
    return ReportResult(path=out, size_bytes=size, runs=tuple(Path(r) for r in runs), images=page.images,
                        numbers=page.numbers, notes=notes)
