"""Run-folder operations: the demo end to end (tiny budget), and a second demo keeping the previous one."""

import json
import math

import pytest
from PIL import Image

from elbolab.demo import run_demo


@pytest.mark.slow
def test_demo_end_to_end_tiny_budget(tmp_path):
    out = tmp_path / "demo"
    small = ["sample.ddim.steps=10", "sample.n=4"]  # the preset's 64 x 200-step grid would dominate the test
    report = run_demo(out, minutes=0.03, confidence_samples=8, elbo_images=4, progress=False, overrides=small)
    grid = Image.open(report.grid)
    assert grid.size[0] >= 8 * 28 or grid.size[0] >= 2 * 28
    data = json.loads((out / "demo.json").read_text())
    for key in ("reconstruction", "prior", "denoising", "total"):
        assert math.isfinite(data["elbo_bpd"][key])
    e = data["elbo_bpd"]
    assert e["total"] == pytest.approx(e["reconstruction"] + e["prior"] + e["denoising"], rel=1e-6)
    assert 0.0 <= data["confident_fraction"] <= 1.0 and data["confidence_n"] == 8
    text = report.to_text()
    assert str(out) in text and "bits/dim" in text
    assert (out / "report.html").is_file() and str(out / "report.html") in text
    # a second demo moves the first aside instead of failing or deleting it
    run_demo(out, minutes=0.01, confidence_samples=4, elbo_images=2, progress=False, per_t_images=0, overrides=small)
    assert (tmp_path / "demo.prev" / "demo.json").exists()
