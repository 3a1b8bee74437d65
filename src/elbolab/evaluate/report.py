"""Metrics as JSON and as tables: ``metrics.json`` of a run, the table ``elbolab eval`` prints, and the
quality table of ``benchmarks/quality.py`` (one row per model family, the first row the real-data floor).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass
from typing import Any

from elbolab.io import atomic_write_text
from elbolab.evaluate.pipeline import EvalResult


def _plain(v: Any) -> Any:
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        if hasattr(v, "to_dict"):
            return _plain(v.to_dict())
        return {f.name: _plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if hasattr(v, "value") and isinstance(getattr(v, "value"), str):  # str Enums
        return v.value
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def result_to_dict(result: EvalResult) -> dict[str, Any]:
    """JSON-ready dict of an :class:`EvalResult`; metrics that were not requested are left out."""
    d = _plain(result)
    return {k: v for k, v in d.items() if v is not None}


def write_metrics_json(path: str | os.PathLike[str], result: EvalResult) -> None:
    """Write ``metrics.json`` atomically (temp file + rename)."""
    atomic_write_text(path, json.dumps(result_to_dict(result), indent=2) + "\n")


def _fmt(x: float | None, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    if x != 0 and (abs(x) >= 1e5 or abs(x) < 10 ** (-digits)):
        return f"{x:.{digits}g}"
    return f"{x:.{digits}f}"


def eval_rows(result: EvalResult) -> list[tuple[str, str, str, str]]:
    """(metric, value, uncertainty, note) rows of an evaluation."""
    rows: list[tuple[str, str, str, str]] = []
    n = f"n={result.n_samples} vs {result.reference} (n={result.n_reference})"
    if result.fid is not None:
        rows.append(("FID", _fmt(result.fid.fid), "", n))
    if result.kid is not None:
        k = result.kid
        rows.append(("KID", _fmt(k.mean, 5), f"± {_fmt(k.stderr, 5)}", f"{k.num_subsets} subsets of {k.subset_size}"))
    if result.inception is not None:
        i = result.inception
        rows.append(("IS", _fmt(i.mean), f"± {_fmt(i.std)}", f"std over {i.splits} splits"))
    if result.pr is not None:
        rows.append(("precision", _fmt(result.pr.precision), "", f"k={result.pr.k}"))
        rows.append(("recall", _fmt(result.pr.recall), "", f"k={result.pr.k}"))
    if result.confidence is not None:
        c = result.confidence
        rows.append((f"confident (p>={c.threshold:g})", _fmt(c.fraction), "", f"n={c.n}"))
    if result.bpd is not None:
        b = result.bpd
        rows.append(("bits/dim", _fmt(b.value, 4), f"± {_fmt(b.stderr, 4)}", f"{b.method.value}, n={b.n}"))
        for name, v in b.terms.items():
            rows.append((f"  {name}", _fmt(v, 4), "", ""))
    return rows


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    """A GitHub-flavoured markdown table with padded columns."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    def line(r: list[str]) -> str:
        return "| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths)) + " |"
    return "\n".join([line(header), "| " + " | ".join("-" * w for w in widths) + " |", *map(line, rows)])


def format_eval_table(result: EvalResult) -> str:
    """The table ``elbolab eval`` prints."""
    return markdown_table(["metric", "value", "±", "note"], [list(r) for r in eval_rows(result)])


@dataclass
class QualityRow:
    """One row of the quality table (None = not applicable / not measured, shown as '-')."""

    family: str
    params: int | None = None
    train_minutes: float | None = None
    train_img_per_s: float | None = None
    test_bpd: float | None = None
    fid: float | None = None
    kid: float | None = None
    kid_stderr: float | None = None
    inception: float | None = None
    precision: float | None = None
    recall: float | None = None
    sample_s_per_img: float | None = None
    nfe: int | None = None
    note: str = ""
    nll_kind: str = ""  # what test_bpd is: "ELBO", "IWAE-5000", "ODE", "exact" ("" = not stated)
    n_samples: int | None = None  # samples behind FID, KID, IS, precision and recall

    @classmethod
    def from_eval(cls, family: str, result: EvalResult, **kw: Any) -> "QualityRow":
        return cls(
            family=family,
            test_bpd=result.bpd.value if result.bpd else None,
            fid=result.fid.fid if result.fid else None,
            kid=result.kid.mean if result.kid else None,
            kid_stderr=result.kid.stderr if result.kid else None,
            inception=result.inception.mean if result.inception else None,
            precision=result.pr.precision if result.pr else None,
            recall=result.pr.recall if result.pr else None,
            **kw,
        )


QUALITY_HEADER = ["family", "params", "train minutes", "train img/s", "test bits/dim", "FID", "KID", "IS",
                  "precision", "recall", "sample s/img", "NFE"]


def format_quality_table(rows: list[QualityRow]) -> str:
    """Markdown quality table: family | params | train minutes | ... | NFE."""
    def kid(r: QualityRow) -> str:
        if r.kid is None:
            return "-"
        return _fmt(r.kid, 5) + (f" ± {_fmt(r.kid_stderr, 5)}" if r.kid_stderr is not None else "")

    body = [[r.family + (f" ({r.note})" if r.note else ""),
             "-" if r.params is None else f"{r.params / 1e6:.2f}M",
             _fmt(r.train_minutes, 1), _fmt(r.train_img_per_s, 0),
             _fmt(r.test_bpd, 3) + (f" ({r.nll_kind})" if r.nll_kind and r.test_bpd is not None else ""),
             _fmt(r.fid, 2) + (f" (n={r.n_samples})" if r.n_samples and r.fid is not None else ""), kid(r),
             _fmt(r.inception, 2), _fmt(r.precision, 3), _fmt(r.recall, 3), _fmt(r.sample_s_per_img, 4),
             "-" if r.nfe is None else str(r.nfe)] for r in rows]
    return markdown_table(QUALITY_HEADER, body)


def quality_rows_to_json(rows: list[QualityRow]) -> list[dict[str, Any]]:
    return [_plain(r) for r in rows]
