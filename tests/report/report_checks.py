"""Checks shared by the report tests: every tagged number against the run's own files, read independently
of the report code (json.load of the file the tag names, the dotted path followed by hand)."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any, Iterable


def read_source(run: Path, name: str) -> Any:
    path = run / name
    if name.endswith(".jsonl"):
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return json.loads(path.read_text())


def follow(data: Any, path: str) -> Any:
    for part in path.split("."):
        data = data[int(part)] if isinstance(data, list) else data[part]
    return data


def check_number(run: Path, key: str, value_repr: str, shown: str) -> float:
    """The tag ``key`` = ``FILE:PATH`` of ``run`` holds exactly ``value_repr``, and ``shown`` (the text on
    the page) is that value rounded at its displayed precision: |shown - value| <= half a unit in the last
    shown digit. Returns the value."""
    source, path = key.split(":", 1)
    truth = follow(read_source(run, source), path)
    assert isinstance(truth, (int, float)), f"{key}: {truth!r} in {run / source} is not a number"
    assert float(value_repr) == float(truth), f"{key}: data-value {value_repr} but {source} holds {truth!r}"
    text = shown.strip().replace("−", "-")
    d = Decimal(text)  # raises on anything that is not a plain number
    half_unit = Decimal(5) * Decimal(10) ** (d.as_tuple().exponent - 1)
    err = abs(d - Decimal(repr(float(truth))))
    assert err <= half_unit * (1 + Decimal("1e-9")), (
        f"{key}: page shows {text!r} for {truth!r} (off by {err}, allowed {half_unit})")
    return float(truth)


def check_all(runs: list[Path], tags: Iterable[tuple[str, str, str, str]]) -> dict[tuple[int, str], float]:
    """``tags``: (data-run, data-key, data-value, shown text) of every tagged element; returns
    {(run, key): value} of those checked."""
    seen = {}
    for run_idx, key, value, shown in tags:
        seen[(int(run_idx), key)] = check_number(runs[int(run_idx)], key, value, shown)
    return seen
