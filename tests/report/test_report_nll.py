"""``elbolab eval RUN --nll ode`` on a tiny DDPM run (8x8 MNIST, 2 training steps): the value written to metrics.json is exactly
bits_per_dim of the same test images with a generator of the same seed (the oracle the CLI must reproduce),
it sits next to the ELBO, survives a later ``eval --bpd``, and the report shows it with its kind "ODE"."""

from __future__ import annotations

import dataclasses
import json
import math
from html.parser import HTMLParser
from pathlib import Path

import pytest
import torch

from elbolab.cli import main
from elbolab.report import build_report
from report_checks import check_all

RTOL = 1e-3  # dopri5 tolerance of the test: loose, so the two solves per image stay fast


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[list[str]] = []
        self._open: list[str] | None = None

    def handle_starttag(self, tag, attrs) -> None:
        a = dict(attrs)
        if "data-key" in a:
            self._open = [a["data-run"] or "", a["data-key"] or "", a["data-value"] or "", ""]

    def handle_data(self, data) -> None:
        if self._open is not None:
            self._open[3] += data

    def handle_endtag(self, tag) -> None:
        if self._open is not None and tag == "span":
            self.tags.append(self._open)
            self._open = None


def _image_folder(root: Path, n: int = 1008) -> str:
    """``n`` 8x8 grey PNGs (smooth random blobs, seeded): a dataset whose native size is the network's, so that
    ``eval --bpd`` and ``--nll`` read the same images the run trained on (``eval --bpd`` reads the dataset with
    its defaults, hence the default hold-out of 1000 test images: 8 images train)."""
    from PIL import Image

    g = torch.Generator().manual_seed(0)
    root.mkdir()
    for i in range(n):
        img = torch.nn.functional.interpolate(torch.rand(1, 1, 3, 3, generator=g), size=8, mode="bilinear")
        Image.fromarray((img[0, 0] * 255).round().byte().numpy(), mode="L").save(root / f"{i:02d}.png")
    return f"imagefolder:{root}"


TINY = ["model.unet.base_channels=4", "model.unet.channel_mults=[1,2]", "model.unet.attention_resolutions=[]",
        "model.unet.head_dim=4", "model.unet.groups=4", "model.diffusion.T=20",
        "train.batch_size=4", "train.steps=2", "train.log_every=1"]


def test_eval_nll_ode_matches_bits_per_dim_and_is_reported(tmp_path: Path, capsys) -> None:
    from elbolab.config import apply_overrides, preset
    from elbolab.data import load_dataset
    from elbolab.diffusion.likelihood import bits_per_dim
    from elbolab.runs import load_run, train_run

    run_dir = tmp_path / "run"
    data = _image_folder(tmp_path / "images")
    train_run(apply_overrides(preset("ddpm-tiny"), [*TINY, f'data.name="{data}"']), run_dir, progress=False)
    assert main(["eval", str(run_dir), "--bpd", "--bpd-n", "4", "--device", "cpu"]) == 0
    elbo = json.loads((run_dir / "metrics.json").read_text())["bpd"]
    assert main(["eval", str(run_dir), "--nll", "ode", "--nll-n", "2", "--nll-rtol", str(RTOL), "--seed", "5",
                 "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "NLL (ODE)" in out and "uniform dequantisation" in out and "+-" in out
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["bpd"] == elbo  # written next to the ELBO, which is kept
    nll = metrics["nll_ode"]
    assert nll["kind"] == "ODE" and nll["n"] == 2 and nll["n_dequant"] == 1 and nll["rtol"] == RTOL

    run = load_run(run_dir)  # the oracle: the library function on the same images and seed
    data = load_dataset(dataclasses.replace(run.config.data, split="test", limit=2))
    x, _ = data.batch(torch.arange(2))
    ref = bits_per_dim(run.model, x, run.family.diffusion(run.config), generator=torch.Generator().manual_seed(5),
                       rtol=RTOL, atol=RTOL)
    assert nll["value"] == pytest.approx(ref.mean, rel=1e-9) and nll["stderr"] == pytest.approx(ref.stderr, rel=1e-9)
    assert nll["nfe"] == ref.nfe and math.isfinite(nll["value"]) and nll["value"] > 0

    assert main(["eval", str(run_dir), "--bpd", "--bpd-n", "4", "--device", "cpu"]) == 0
    assert json.loads((run_dir / "metrics.json").read_text())["nll_ode"] == nll  # kept by a later eval --bpd

    # --nll-batch 2: the two images in one joint solve (same dequantisation and probes: one chunk draws what the
    # per-image call draws), equal within the joint solve's tolerance, and the batch is stated
    assert main(["eval", str(run_dir), "--nll", "ode", "--nll-n", "2", "--nll-rtol", str(RTOL), "--seed", "5",
                 "--nll-batch", "2", "--device", "cpu"]) == 0
    joint = json.loads((run_dir / "metrics.json").read_text())["nll_ode"]
    assert joint["batch_size"] == 2 and "joint batches of 2" in joint["note"]
    assert joint["value"] == pytest.approx(nll["value"], rel=30 * RTOL) and joint["value"] != nll["value"]
    assert main(["eval", str(run_dir), "--nll", "ode", "--nll-batch", "0", "--device", "cpu"]) == 2
    assert "--nll-batch = 0" in capsys.readouterr().err
    assert main(["eval", str(run_dir), "--nll", "ode", "--nll-n", "2", "--nll-rtol", str(RTOL), "--seed", "5",
                 "--device", "cpu"]) == 0  # the per-image value again, for the report below

    res = build_report([run_dir], tmp_path / "r.html")
    text = res.path.read_text()
    assert "bits/dim (ODE)" in text and "probability-flow ODE NLL" in text
    p = _Tags()
    p.feed(text)
    seen = check_all([run_dir], p.tags)
    for key in ("metrics.json:nll_ode.value", "metrics.json:nll_ode.stderr", "metrics.json:nll_ode.n"):
        assert (0, key) in seen, key


def test_eval_nll_needs_a_diffusion(tmp_path: Path) -> None:
    from elbolab.config import apply_overrides, preset
    from elbolab.runs import train_run

    cfg = apply_overrides(preset("vae-mnist-fc"), ['data.name="mnist-embedded"', "data.limit=8", "train.batch_size=4", "train.steps=1"])
    train_run(cfg, tmp_path / "vae", progress=False)
    assert main(["eval", str(tmp_path / "vae"), "--nll", "ode", "--nll-n", "1", "--device", "cpu"]) == 2


@pytest.mark.slow
@pytest.mark.parametrize("preset_name", ["vdm-mnist", "flow-mnist"])
def test_eval_nll_ode_on_a_vdm_run(tmp_path: Path, preset_name: str) -> None:
    """``--nll ode`` on a VDM run (learned schedule; and the flow-matching path) solves the VDM's own
    probability-flow ODE: the value is bits_per_dim of the VDM read on its T = 1000 grid
    (``elbolab.vdm.sampling.as_diffusion``), which the family's ``probability_flow`` hands over."""
    from elbolab.config import apply_overrides, preset
    from elbolab.data import load_dataset
    from elbolab.diffusion.likelihood import bits_per_dim
    from elbolab.families import get_family
    from elbolab.runs import load_run, train_run
    from elbolab.vdm.sampling import as_diffusion

    run_dir = tmp_path / "run"
    data = _image_folder(tmp_path / "images")
    tiny = [*get_family("vdm").tiny_overrides, "train.batch_size=4", "train.steps=2", f'data.name="{data}"']
    train_run(apply_overrides(preset(preset_name), tiny), run_dir, progress=False)
    assert main(["eval", str(run_dir), "--nll", "ode", "--nll-n", "2", "--nll-rtol", str(RTOL), "--seed", "5",
                 "--device", "cpu"]) == 0
    nll = json.loads((run_dir / "metrics.json").read_text())["nll_ode"]

    run = load_run(run_dir)
    data = load_dataset(dataclasses.replace(run.config.data, split="test", limit=2))
    x, _ = data.batch(torch.arange(2))
    diffusion, view = as_diffusion(run.model)
    ref = bits_per_dim(view, x, diffusion, generator=torch.Generator().manual_seed(5), rtol=RTOL, atol=RTOL)
    assert nll["value"] == pytest.approx(ref.mean, rel=1e-9) and nll["nfe"] == ref.nfe
    assert math.isfinite(nll["value"]) and nll["value"] > 0
