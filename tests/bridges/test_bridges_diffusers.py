"""The diffusers bridge on a small random UNet2DModel saved with save_pretrained: elbolab's ancestral sampler
(Algorithm 2 of Ho et al. 2020) with the same generator gives DDPMPipeline's images, for each prediction
type, variance and clipping; the ELBO of the imported model is finite and its terms add up; an exported
folder loads in DDPMPipeline and samples the same; unsupported configs and a missing diffusers say why."""

from __future__ import annotations

import json
import math
import sys

import pytest
import torch

diffusers = pytest.importorskip("diffusers")  # the test extra installs it; the core never needs it
from diffusers import DDIMScheduler, DDPMPipeline, DDPMScheduler, UNet2DModel  # noqa: E402

from elbolab.bridges.diffusers import (  # noqa: E402
    DiffusersUnavailable,
    DiffusersUNet,
    export_diffusers,
    load_diffusers_folder,
    require_diffusers,
    scheduler_to_diffusion,
)
from elbolab.diffusion import Prediction, elbo_terms, samplers  # noqa: E402
from elbolab.diffusion.config import VarianceKind  # noqa: E402

T = 12


def _unet(seed: int = 0) -> UNet2DModel:
    torch.manual_seed(seed)
    return UNet2DModel(sample_size=8, in_channels=1, out_channels=1, layers_per_block=1, block_out_channels=(8, 16),
                       down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
                       norm_num_groups=4).eval()


def _save(tmp_path, prediction="epsilon", variance="fixed_small", clip=True, scheduler=DDPMScheduler):
    kw = {"variance_type": variance} if scheduler is DDPMScheduler else {}
    sched = scheduler(num_train_timesteps=T, beta_start=1e-3, beta_end=0.2, prediction_type=prediction,
                      clip_sample=clip, **kw)
    folder = tmp_path / "pipe"
    DDPMPipeline(unet=_unet(), scheduler=sched).save_pretrained(folder, safe_serialization=True)
    return folder


def _pipeline_images(folder, n: int, seed: int):
    pipe = DDPMPipeline.from_pretrained(folder, use_safetensors=True)
    pipe.set_progress_bar_config(disable=True)
    with torch.no_grad():
        return torch.from_numpy(pipe(batch_size=n, generator=torch.Generator().manual_seed(seed),
                                     num_inference_steps=T, output_type="np").images)


def _ours(m, n: int, seed: int):
    with torch.no_grad():
        res = samplers.ancestral(m.model, (n, *m.shape), m.diffusion, generator=torch.Generator().manual_seed(seed),
                                 clip_x0=m.clip_x0)
    assert res.nfe == T
    return (res.sample / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1)  # DDPMPipeline's output_type="np"


@pytest.mark.parametrize("prediction, variance, clip", [
    ("epsilon", "fixed_small", True), ("epsilon", "fixed_large", False), ("sample", "fixed_small", False),
    ("v_prediction", "fixed_small_log", True),
])
def test_ancestral_sampler_equals_ddpm_pipeline(tmp_path, prediction, variance, clip):
    folder = _save(tmp_path, prediction, variance, clip)
    m = load_diffusers_folder(folder)
    assert m.diffusion.T == T and m.shape == (1, 8, 8) and m.clip_x0 is clip
    assert m.diffusion.prediction is {"epsilon": Prediction.EPS, "sample": Prediction.X0,
                                      "v_prediction": Prediction.V}[prediction]
    sched = DDPMScheduler.from_pretrained(folder, subfolder="scheduler")
    torch.testing.assert_close(m.diffusion.schedule.alpha_bars[1:], sched.alphas_cumprod.double(), rtol=1e-6, atol=0)
    theirs = _pipeline_images(folder, 3, seed=11)
    ours = _ours(m, 3, seed=11)
    assert ours.shape == theirs.shape == (3, 8, 8, 1)
    assert theirs.std() > 0.05  # not a constant image
    torch.testing.assert_close(ours, theirs, rtol=0, atol=2e-5)
    other = _ours(m, 3, seed=12)  # another seed gives other images: the match is not by accident
    assert (other - theirs).abs().max() > 0.05


def test_the_model_sees_diffusers_timestep_t_minus_one(tmp_path):
    unet = _unet()
    wrapped = DiffusersUNet(unet).eval()
    x = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours = wrapped(x, torch.tensor([1, 7]))
        theirs = torch.cat([unet(x[:1], 0).sample, unet(x[1:], 6).sample])
        shifted = torch.cat([unet(x[:1], 1).sample, unet(x[1:], 7).sample])
    torch.testing.assert_close(ours, theirs)
    assert (ours - shifted).abs().max() > 1e-4
    with pytest.raises(ValueError, match="unconditional"):
        wrapped(x, torch.tensor([1, 2]), torch.tensor([0, 1]))


def test_elbo_of_the_imported_model_is_finite_and_adds_up(tmp_path):
    m = load_diffusers_folder(_save(tmp_path))
    g = torch.Generator().manual_seed(0)
    x0 = (torch.randint(0, 256, (4, 1, 8, 8), generator=g).float() / 127.5 - 1)  # 8-bit data in [-1, 1]
    terms = elbo_terms(m.diffusion, m.model, x0, generator=torch.Generator().manual_seed(1))
    for v in (terms.reconstruction, terms.prior, terms.denoising, terms.total):
        assert math.isfinite(v) and v >= 0
    assert terms.total == pytest.approx(terms.reconstruction + terms.prior + terms.denoising, rel=1e-12)
    assert sum(terms.per_timestep[1:].tolist()) == pytest.approx(terms.denoising, rel=1e-9)


def test_export_loads_in_ddpm_pipeline_and_samples_the_same(tmp_path):
    m = load_diffusers_folder(_save(tmp_path, "v_prediction", "fixed_large", True))
    out = export_diffusers(m.model, m.diffusion, tmp_path / "exported", clip_x0=m.clip_x0)
    assert (out / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    assert not list(out.rglob("*.bin"))
    theirs = _pipeline_images(out, 2, seed=5)
    torch.testing.assert_close(_ours(m, 2, seed=5), theirs, rtol=0, atol=2e-5)
    back = load_diffusers_folder(out)  # and back again: the same process
    torch.testing.assert_close(back.diffusion.schedule.alpha_bars, m.diffusion.schedule.alpha_bars, rtol=1e-7, atol=0)
    assert back.diffusion.variance is VarianceKind.BETA and back.diffusion.prediction is Prediction.V


def test_ddim_scheduler_config_is_read(tmp_path):
    m = load_diffusers_folder(_save(tmp_path, scheduler=DDIMScheduler, clip=False))
    ref = DDIMScheduler(num_train_timesteps=T, beta_start=1e-3, beta_end=0.2)
    torch.testing.assert_close(m.diffusion.schedule.betas[1:], ref.betas.double())
    assert m.diffusion.variance is VarianceKind.BETA_TILDE and not m.clip_x0


@pytest.mark.parametrize("key, value, match", [
    ("variance_type", "learned_range", "variance_type = 'learned_range'.*choices: fixed_small"),
    ("prediction_type", "score", "prediction_type = 'score'.*choices: epsilon"),
    ("thresholding", True, "thresholding"),
    ("_class_name", "EulerDiscreteScheduler", "supported: DDPMScheduler, DDIMScheduler"),
])
def test_unsupported_scheduler_configs_are_refused(key, value, match):
    cfg = dict(DDPMScheduler(num_train_timesteps=T).config)
    cfg["_class_name"] = "DDPMScheduler"
    cfg[key] = value
    with pytest.raises(ValueError, match=match):
        scheduler_to_diffusion(cfg)


def test_missing_folder_and_missing_diffusers(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="save_pretrained"):
        load_diffusers_folder(tmp_path)
    monkeypatch.setitem(sys.modules, "diffusers", None)
    with pytest.raises(DiffusersUnavailable, match=r"pip install elbolab\[diffusers\]"):
        require_diffusers()
