"""The diffusers bridge on run folders, through the CLI: a DDPM run whose network is diffusers' UNet2DModel
trains, resumes (replaying the uninterrupted run's losses and weights) and loads; ``import-diffusers`` of a
small random UNet2DModel saved with save_pretrained gives a run whose default (full ancestral) sampler equals
DDPMPipeline for the same generator, on which every DDPM sampler, ``eval --bpd``, ``eval --nll ode``, FID and
inpainting run; ``export --format diffusers`` of a trained run loads in DDPMPipeline and samples what elbolab
samples."""

from __future__ import annotations

import json
import math

import pytest
import torch

diffusers = pytest.importorskip("diffusers")  # the test extra installs it; the core never needs it
from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

from elbolab.bridges.diffusers import DiffusersUNet, Network  # noqa: E402
from elbolab.cli import main  # noqa: E402
from elbolab.config import apply_overrides, preset  # noqa: E402
from elbolab.runs import SampleRequest, draw_samples, load_run, train_run  # noqa: E402

T = 12
SAMPLERS = ("ancestral", "ddim", "euler", "heun", "dpmpp-2m", "dpmpp-2m-sde", "langevin", "pc")
NET = ['model.network="diffusers"', "model.diffusers_unet.block_out_channels=[8,16]",
       'model.diffusers_unet.down_block_types=["DownBlock2D","AttnDownBlock2D"]',
       'model.diffusers_unet.up_block_types=["AttnUpBlock2D","UpBlock2D"]', "model.diffusers_unet.norm_num_groups=4",
       "model.diffusers_unet.layers_per_block=1", "model.diffusers_unet.attention_head_dim=4",
       "model.diffusion.T=16", "data.image_size=8", "data.limit=32", "train.batch_size=4", "train.log_every=1",
       "train.checkpoint_every=2", "train.sample_every=0", "train.precision=fp32", "train.warmup_steps=0"]


def _cfg(steps: int):
    return apply_overrides(preset("ddpm-tiny"), [*NET, f"train.steps={steps}"])


def _losses(run) -> list[float]:
    return [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 4-step run straight, and the same run as 2 steps then --resume to 4."""
    root = tmp_path_factory.mktemp("diffusers-net")
    straight, resumed = root / "straight", root / "resumed"
    train_run(_cfg(4), straight, progress=False)
    train_run(_cfg(2), resumed, progress=False)
    train_run(_cfg(4), resumed, resume=True, progress=False)
    return straight, resumed


def test_diffusers_network_trains_resumes_and_loads(trained):
    straight, resumed = trained
    losses = _losses(straight)
    assert len(losses) == 4 and all(math.isfinite(v) for v in losses)
    assert _losses(resumed) == losses  # the resumed run replays the uninterrupted one bit for bit
    a, b = load_file(straight / "model.safetensors"), load_file(resumed / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    run = load_run(straight)
    assert isinstance(run.model, DiffusersUNet) and run.config.model.network is Network.DIFFUSERS
    assert run.step == 4 and run.config.model.diffusers_unet.sample_size == 8
    x = draw_samples(run, SampleRequest(n=2, sampler="ddim", options={"steps": 3})).images
    assert x.shape == (2, 1, 8, 8) and torch.isfinite(x).all()


def _pipeline_images(folder, n: int, seed: int, steps: int):
    pipe = DDPMPipeline.from_pretrained(folder, use_safetensors=True)
    pipe.set_progress_bar_config(disable=True)
    with torch.no_grad():
        return torch.from_numpy(pipe(batch_size=n, generator=torch.Generator().manual_seed(seed),
                                     num_inference_steps=steps, output_type="np").images)


def _elbolab_images(run, n: int, seed: int, **options):
    x = draw_samples(run, SampleRequest(n=n, seed=seed, sampler="ancestral", options=options)).images
    return (x / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1)  # DDPMPipeline's output_type="np"


def test_export_loads_in_ddpm_pipeline_and_samples_the_same(trained, tmp_path):
    straight, _ = trained
    out = tmp_path / "exported"
    assert main(["export", str(straight), "--format", "diffusers", "--out", str(out), "--device", "cpu"]) == 0
    assert (out / "unet" / "diffusion_pytorch_model.safetensors").is_file() and not list(out.rglob("*.bin"))
    theirs = _pipeline_images(out, 2, seed=3, steps=16)
    ours = _elbolab_images(load_run(straight), 2, seed=3, steps=16)
    assert theirs.std() > 0.02
    torch.testing.assert_close(ours, theirs, rtol=0, atol=2e-5)
    assert (_elbolab_images(load_run(straight), 2, seed=4, steps=16) - theirs).abs().max() > 0.02


def test_export_refuses_an_elbolab_network_run(tmp_path):
    cfg = apply_overrides(preset("ddpm-tiny"), ["model.unet.base_channels=4", "model.unet.channel_mults=[1]",
                                                "model.unet.attention_resolutions=[]", "model.unet.head_dim=4",
                                                "model.unet.groups=4", "data.image_size=8", "data.limit=8",
                                                "train.batch_size=4", "train.steps=1"])
    train_run(cfg, tmp_path / "run", progress=False)
    assert main(["export", str(tmp_path / "run"), "--out", str(tmp_path / "x"), "--device", "cpu"]) == 2
    assert not (tmp_path / "x").exists()


def _save_pipeline(folder, clip: bool = True):
    torch.manual_seed(0)
    unet = UNet2DModel(sample_size=8, in_channels=1, out_channels=1, layers_per_block=1, block_out_channels=(8, 16),
                       down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
                       norm_num_groups=4, attention_head_dim=4, flip_sin_to_cos=False, freq_shift=1,
                       downsample_padding=0, norm_eps=1e-6)
    sched = DDPMScheduler(num_train_timesteps=T, beta_start=1e-3, beta_end=0.2, clip_sample=clip)
    DDPMPipeline(unet=unet, scheduler=sched).save_pretrained(folder, safe_serialization=True)
    return folder


def _image_folder(root, n: int = 1008) -> str:
    """``n`` 8x8 grey PNGs (smooth random blobs, seeded): data at the UNet's native size for eval, FID and
    inpainting (the default hold-out of 1000 test images; ``eval --bpd`` reads the dataset with its defaults)."""
    from PIL import Image

    g = torch.Generator().manual_seed(0)
    root.mkdir()
    for i in range(n):
        img = torch.nn.functional.interpolate(torch.rand(1, 1, 3, 3, generator=g), size=8, mode="bilinear")
        Image.fromarray((img[0, 0] * 255).round().byte().numpy(), mode="L").save(root / f"{i:04d}.png")
    return f"imagefolder:{root}"


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    root = tmp_path_factory.mktemp("imported")
    src = _save_pipeline(root / "pipe")
    run = root / "run"
    assert main(["import-diffusers", str(src), "--out", str(run), "--data", _image_folder(root / "images")]) == 0
    return src, run


def test_import_writes_a_run_whose_ancestral_sampler_is_ddpm_pipeline(imported):
    src, run_dir = imported
    for f in ("config.toml", "model.safetensors", "ema.safetensors", "run.json"):
        assert (run_dir / f).is_file(), f
    run = load_run(run_dir)
    m = run.config.model
    assert m.network is Network.DIFFUSERS and m.diffusion.T == T and m.diffusers_unet.freq_shift == 1
    assert not m.diffusers_unet.flip_sin_to_cos and m.diffusers_unet.norm_eps == 1e-6
    assert run.config.sample.sampler == "ancestral" and run.config.sample.options["ancestral"].steps == T
    assert all(o.clip_x0 for o in run.config.sample.options.values())
    theirs = _pipeline_images(src, 3, seed=11, steps=T)
    ours = _elbolab_images(run, 3, seed=11)  # the run's own options: the full chain, clipped
    assert theirs.std() > 0.05
    torch.testing.assert_close(ours, theirs, rtol=0, atol=2e-5)
    assert (_elbolab_images(run, 3, seed=12) - theirs).abs().max() > 0.05
    assert main(["import-diffusers", str(src), "--out", str(run_dir)]) == 2  # never over an existing run


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_every_ddpm_sampler_runs_on_the_imported_run(imported, tmp_path, sampler):
    _, run = imported
    out = tmp_path / f"{sampler}.png"
    assert main(["sample", str(run), "--n", "2", "--sampler", sampler, "--steps", "3", "--out", str(out),
                 "--device", "cpu"]) == 0
    import numpy as np

    x = np.load(out.with_suffix(".npz"))["images"]
    assert out.is_file() and x.shape[0] == 2 and np.isfinite(x.astype(float)).all()


def test_eval_bpd_and_ode_nll_on_the_imported_run(imported, capsys):
    _, run = imported
    assert main(["eval", str(run), "--nll", "ode", "--nll-n", "2", "--device", "cpu"]) == 0
    nll = json.loads((run / "metrics.json").read_text())["nll_ode"]
    assert nll["kind"] == "ODE" and nll["n"] == 2 and nll["n_dequant"] == 1 and nll["nfe"] > 0
    # a random network is a poor density, but a finite one, above 0 bits/dim and below the naive 8 + slack
    assert math.isfinite(nll["value"]) and 0 < nll["value"] < 100
    assert "dequantisation" in capsys.readouterr().out
    assert main(["eval", str(run), "--bpd", "--bpd-n", "4", "--exact", "--device", "cpu"]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    bpd = metrics["bpd"]
    assert math.isfinite(bpd["value"]) and bpd["value"] > 0
    assert bpd["value"] == pytest.approx(sum(bpd["terms"][k] for k in ("reconstruction", "prior", "denoising")),
                                         rel=1e-9)
    assert metrics["nll_ode"] == nll  # eval --bpd rewrote metrics.json but kept the ODE NLL


def test_fid_and_inpainting_on_the_imported_run(imported, tmp_path):
    src, run = imported
    mnist = tmp_path / "mnist-run"  # FID's feature networks are MNIST's: the default data of a 1-channel UNet
    assert main(["import-diffusers", str(src), "--out", str(mnist)]) == 0
    assert load_run(mnist).config.data.name == "mnist-embedded"
    assert main(["eval", str(mnist), "--metrics", "fid", "--n", "16", "--steps", "3", "--sampler", "ddim",
                 "--device", "cpu"]) == 0
    fid = json.loads((mnist / "metrics.json").read_text())["fid"]["fid"]
    assert math.isfinite(fid) and fid > 0
    out = tmp_path / "inpaint"
    assert main(["inpaint", str(run), "--index", "0", "--samples", "1", "--steps", "4", "--jump-length", "1",
                 "--resample", "1", "--out", str(out), "--device", "cpu"]) == 0
    assert list(out.glob("*.png"))


def test_import_carries_the_ddpm_cifar10_32_architecture(tmp_path):
    """google/ddpm-cifar10-32's unet/config.json and scheduler_config.json at 1/4 of its widths: every setting
    that differs from UNet2DModel's defaults (attention_head_dim null, freq_shift 1, no sin/cos flip, padding 0,
    norm_eps 1e-6) and the fixed_large variance reach the run, and the rebuilt network computes the same."""
    torch.manual_seed(0)
    unet = UNet2DModel(sample_size=32, in_channels=3, out_channels=3, layers_per_block=2, attention_head_dim=None,
                       block_out_channels=(32, 64, 64, 64), norm_num_groups=32, norm_eps=1e-6, freq_shift=1,
                       flip_sin_to_cos=False, downsample_padding=0, center_input_sample=False, act_fn="silu",
                       down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
                       up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"))
    sched = DDPMScheduler(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear",
                          variance_type="fixed_large", clip_sample=True)
    DDPMPipeline(unet=unet, scheduler=sched).save_pretrained(tmp_path / "pipe", safe_serialization=True)
    assert main(["import-diffusers", str(tmp_path / "pipe"), "--out", str(tmp_path / "run")]) == 0
    run = load_run(tmp_path / "run")
    d, u = run.config.model.diffusion, run.config.model.diffusers_unet
    assert (d.schedule.value, d.T, d.beta_start, d.beta_end, d.variance.value, d.prediction.value) == (
        "linear", 1000, 1e-4, 0.02, "beta", "eps")
    assert u.attention_head_dim == 0 and u.freq_shift == 1 and not u.flip_sin_to_cos and u.downsample_padding == 0
    assert run.config.data.name == "cifar10" and run.config.data.image_size == 32
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(run.model(x, torch.tensor([500])), unet(x, 499).sample)
    ours = run.family.diffusion(run.config).schedule.alpha_bars[1:]
    torch.testing.assert_close(ours, sched.alphas_cumprod.double(), rtol=1e-5, atol=0)


def test_unsupported_beta_schedule_is_refused(tmp_path):
    from elbolab.bridges.diffusers import scheduler_to_diffusion_config

    cfg = dict(DDPMScheduler(num_train_timesteps=T, beta_schedule="scaled_linear").config)
    with pytest.raises(ValueError, match="beta_schedule = 'scaled_linear'.*choices: linear, squaredcos_cap_v2"):
        scheduler_to_diffusion_config(cfg)
    cos = dict(DDPMScheduler(num_train_timesteps=T, beta_schedule="squaredcos_cap_v2").config)
    d, clip = scheduler_to_diffusion_config(cos)
    assert d.schedule.value == "cosine" and clip  # DDPMScheduler's clip_sample defaults to True


def test_a_diffusers_network_without_diffusers_says_what_to_install(monkeypatch):
    import sys

    from elbolab.bridges.diffusers import DiffusersUnavailable
    from elbolab.families import get_family

    cfg = apply_overrides(preset("ddpm-tiny"), NET)
    monkeypatch.setitem(sys.modules, "diffusers", None)
    with pytest.raises(DiffusersUnavailable, match=r"pip install elbolab\[diffusers\]"):
        get_family("ddpm").build_model(cfg)
