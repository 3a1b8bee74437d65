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
    e = data["elbo_bpd"]  # the demo's model is class-conditional: the class prior's log2(10)/784 is in the bound
    assert e["class_prior"] == pytest.approx(math.log2(10) / 784)
    assert e["total"] == pytest.approx(e["reconstruction"] + e["prior"] + e["denoising"] + e["class_prior"], rel=1e-6)
    assert "(the class prior), guidance w = 0" in data["conditioning"]
    # the calibrated decoder's bound: the same terms with its L_0, and its sigmas fitted per bucket
    assert e["total_calibrated"] == pytest.approx(e["total"] - e["reconstruction"] + e["reconstruction_calibrated"])
    cal = data["decoder_calibration"]
    assert len(cal["sigmas"]) == len(cal["edges"]) + 1 and cal["train_bpd"] <= cal["train_fixed_bpd"]
    assert 0.0 <= data["confident_fraction"] <= 1.0 and data["confidence_n"] == 8
    text = report.to_text()
    assert str(out) in text and "bits/dim" in text
    assert (out / "report.html").is_file() and str(out / "report.html") in text
    # a second demo moves the first aside instead of failing or deleting it
    run_demo(out, minutes=0.01, confidence_samples=4, elbo_images=2, progress=False, per_t_images=0, overrides=small)
    assert (tmp_path / "demo.prev" / "demo.json").exists()


@pytest.mark.slow
def test_demo_of_a_guided_and_of_an_unconditional_model(tmp_path):
    """The demo says how it sampled (labels from the class prior, the guidance weight of sample.guidance); an
    unconditional model (unet.num_classes = 0, guidance -1) has no class prior in its bound."""
    small = ["sample.ddim.steps=4", "sample.n=4", "sample.guidance=0.5"]
    report = run_demo(tmp_path / "c", minutes=0.02, confidence_samples=20, elbo_images=4, progress=False,
                      per_t_images=0, overrides=small)
    assert "labels i.i.d. uniform over 0..9 (the class prior), guidance w = 0.5" in report.to_text()
    run_demo(tmp_path / "u", minutes=0.02, confidence_samples=4, elbo_images=4, progress=False, per_t_images=0,
             overrides=["sample.ddim.steps=4", "sample.n=4", "unet.num_classes=0", "sample.guidance=-1"])
    data = json.loads((tmp_path / "u" / "demo.json").read_text())
    e = data["elbo_bpd"]
    assert e["class_prior"] == 0.0 and data["conditioning"] == ""
    assert e["total"] == pytest.approx(e["reconstruction"] + e["prior"] + e["denoising"], rel=1e-6)


def test_demo_refuses_an_empty_decoder_calibration(tmp_path):
    with pytest.raises(ValueError, match="calibration_images = 0: need >= 1 training image"):
        run_demo(tmp_path / "d", calibration_images=0, progress=False)
    assert not (tmp_path / "d").exists()  # refused before anything was written
