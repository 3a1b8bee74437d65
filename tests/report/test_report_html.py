"""The HTML run report without a browser: number formatting, the run-folder reader, self-containment, every
tagged figure against the run's files, several runs, and the per-timestep terms against elbo_terms."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
import torch

from elbolab.report import (
    PER_T_FILE,
    build_report,
    compute_per_timestep,
    format_number,
    load_run_data,
    lookup,
)
from elbolab.report.figures import curve_groups
from report_checks import check_all

FIXTURE_RUN = Path(__file__).resolve().parents[1] / "fixtures" / "runs_v1" / "ddpm-v1"


class _Tags(HTMLParser):
    """Collects (data-run, data-key, data-value, text) of tagged numbers and every src/href."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[list[str]] = []
        self.links: list[str] = []
        self.imgs = 0
        self._open: list[str] | None = None
        self.tag_names: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        self.tag_names.add(tag)
        self.imgs += tag == "img"
        for k in ("src", "href"):
            if a.get(k) is not None:
                self.links.append(a[k] or "")
        if "data-key" in a:
            self._open = [a["data-run"] or "", a["data-key"] or "", a["data-value"] or "", ""]

    def handle_data(self, data: str) -> None:
        if self._open is not None:
            self._open[3] += data

    def handle_endtag(self, tag: str) -> None:
        if self._open is not None and tag == "span":
            self.tags.append(self._open)
            self._open = None


def _parse(path: Path) -> _Tags:
    p = _Tags()
    p.feed(path.read_text(encoding="utf-8"))
    return p


@pytest.mark.parametrize("x, digits, text", [
    (18.22515712991395, 4, "18.2252"), (1.3547616719707191e-05, 4, "1.355e-05"), (4, 0, "4"),
    (0.5, 3, "0.500"), (123456.7, 2, "1.2e+05"), (float("nan"), 2, "–"), (0.0, 3, "0.000"),
])
def test_format_number(x: float, digits: int, text: str) -> None:
    assert format_number(x, digits) == text


def test_lookup_follows_dicts_and_lists() -> None:
    data = {"bpd": {"terms": {"prior": 1e-5}}, "rows": [{"a": 1}, {"a": 2}]}
    assert lookup(data, "bpd.terms.prior") == 1e-5
    assert lookup(data["rows"], "-1.a") == 2
    with pytest.raises(KeyError):
        lookup(data, "bpd.value")


def test_curve_groups_split_groups_lr_and_throughput() -> None:
    single = [{"step": 1, "epoch": 0.1, "loss": 1.0, "lr": 1e-4, "grad_norm": 2.0, "mse": 1.0,
               "objective/loss": 1.0, "img/s": 50.0, "time": 0.1}]
    assert curve_groups(single) == {"loss": ["loss", "mse", "objective/loss"], "grad_norm": ["grad_norm"],
                                    "img/s": ["img/s"], "lr": ["lr"]}
    gan = [{"step": 1, "loss": 0.7, "loss/generator": 0.7, "loss/discriminator": 1.3, "lr/generator": 2e-4,
            "lr/discriminator": 2e-4, "discriminator/d_real": 0.4, "img/s": 9.0}]
    groups = curve_groups(gan)
    assert groups["loss/discriminator"] == ["loss/discriminator", "discriminator/d_real"]
    assert groups["loss/generator"] == ["loss/generator"] and groups["lr"] == ["lr/generator", "lr/discriminator"]


def test_sampler_quality_rows_are_validated(tmp_path: Path) -> None:
    (tmp_path / "sampler_quality.json").write_text(json.dumps([{"sampler": "ddim", "nfe": 10}]))
    with pytest.raises(ValueError, match="lacks fid"):
        load_run_data(tmp_path)
    with pytest.raises(FileNotFoundError):
        load_run_data(tmp_path / "missing")


def test_report_is_self_contained_and_numbers_match(tiny_run: Path, tmp_path: Path) -> None:
    res = build_report([tiny_run], tmp_path / "r.html")
    page = _parse(res.path)
    assert res.size_bytes == res.path.stat().st_size
    assert not {"script", "iframe", "object", "embed"} & page.tag_names
    assert all(link.startswith(("data:", "#")) for link in page.links), [l[:40] for l in page.links]
    assert "http://" not in res.path.read_text() and "https://" not in res.path.read_text()
    n_grids = len(list((tiny_run / "samples").glob("step_*.png")))
    # training curves + grids + ELBO bars + FID-vs-NFE
    assert page.imgs == res.images == 1 + n_grids + 1 + 1
    seen = check_all([tiny_run], page.tags)
    assert res.numbers == len(page.tags) >= len(seen) >= 15
    for key in ("metrics.json:bpd.value", "metrics.json:bpd.stderr", "metrics.json:bpd.terms.reconstruction",
                "metrics.json:bpd.terms.prior", "metrics.json:bpd.terms.denoising", "metrics.jsonl:-1.loss",
                "metrics.jsonl:-1.step", "sampler_quality.json:0.fid", "sampler_quality.json:2.nfe"):
        assert (0, key) in seen, key
    assert "discretized Gaussian decoder" in res.path.read_text()  # the bits/dim kind


def test_report_of_several_runs_has_one_comparison_and_a_grid_per_run(tiny_run: Path, tmp_path: Path) -> None:
    res = build_report([tiny_run, FIXTURE_RUN], tmp_path / "two.html")
    text = res.path.read_text()
    comparison = text.split('<section id="comparison">')[1].split("</section>")[0]
    assert comparison.count("<tr>") == 1 + 2  # header + one row per run
    assert 'id="run-0"' in text and 'id="run-1"' in text
    run1 = text.split('id="run-1"')[1]
    assert "samples at step 3" in run1  # the fixture run's own grid
    check_all([tiny_run, FIXTURE_RUN], _parse(res.path).tags)


def test_per_timestep_terms_match_elbo_terms(tiny_run: Path, tmp_path: Path) -> None:
    from elbolab.data import load_dataset
    from elbolab.diffusion import build_diffusion, elbo_terms
    from elbolab.runs import load_run
    import dataclasses

    pt = compute_per_timestep(tiny_run, 2, seed=3)
    assert pt is not None and pt.n_images == 2
    run = load_run(tiny_run)
    diffusion = build_diffusion((getattr(run.config, "model", None) or run.config).diffusion)
    x0, _ = load_dataset(dataclasses.replace(run.config.data, split="test", limit=2)).batch(torch.arange(2))
    ref = elbo_terms(diffusion, run.model, x0, generator=torch.Generator().manual_seed(3))
    T = diffusion.T
    assert pt.t == list(range(1, T + 1)) and len(pt.bpd) == T
    assert pt.bpd[0] == pytest.approx(ref.reconstruction, rel=1e-12)  # t = 1: -log p(x0|x1)
    assert sum(pt.bpd[1:]) == pytest.approx(ref.denoising, rel=1e-9)  # the denoising term is the sum over t >= 2
    # the same terms through elbo_per_t.json: read back, drawn, no recomputation
    (tiny_run / PER_T_FILE).write_text(json.dumps({"t": pt.t, "bpd": pt.bpd, "n_images": 2}))
    try:
        assert load_run_data(tiny_run).per_timestep.bpd == pt.bpd
        res = build_report([tiny_run], tmp_path / "pt.html")
        assert 'alt="per-timestep terms"' in res.path.read_text()
    finally:
        (tiny_run / PER_T_FILE).unlink()
