"""Run-level glue: the NCSN family (train/load/sample a tiny run), presets, and guidance / score samplers
reached through the DDPM family."""

import dataclasses

import pytest
import torch

from elbolab.config import (DataConfig, DiffusionConfig, Family, Precision, RunConfig, SampleConfig, SamplerKind,
                            ScoreConfig, TrainConfig, load_toml, preset, unet_preset)
from elbolab.diffusion.guidance import ClassifierFreeGuidance, LabelDropout
from elbolab.families import SampleRequest, family_spec
from elbolab.families.base import DropLabels
from elbolab.score import NCSN, DenoisingScoreMatching, choose_eps, max_pairwise_distance, ratio_rule
from elbolab.score.noise_levels import num_levels_for_ratio


def _tiny(family: Family, **kw) -> RunConfig:
    unet = dataclasses.replace(unet_preset("tiny"), num_classes=kw.pop("num_classes", 0))
    return RunConfig(
        family=family,
        data=DataConfig(name="mnist-embedded", limit=64),
        unet=unet,
        diffusion=DiffusionConfig(T=20, beta_start=1e-3, beta_end=0.3),
        score=kw.pop("score", ScoreConfig(steps_per_level=2)),
        train=TrainConfig(batch_size=16, steps=2, warmup_steps=0, log_every=1, checkpoint_every=2,
                          precision=Precision.FP32),
        sample=kw.pop("sample", SampleConfig(steps=4, n=4)),
    )


@pytest.mark.slow
def test_ncsn_run_resolves_levels_trains_and_samples(tmp_path):
    from elbolab.data import load_dataset
    from elbolab.runs import draw_samples, load_run, train_run

    cfg = _tiny(Family.NCSN, sample=SampleConfig(sampler=SamplerKind.ANNEALED_LANGEVIN, n=4),
                score=ScoreConfig(sigma_L=0.5, steps_per_level=2))  # sigma_L = 0.5: ~50 levels, a cheap test
    result = train_run(cfg, tmp_path / "run", progress=False)
    saved = load_toml(tmp_path / "run" / "config.toml", RunConfig)
    s = saved.score
    data, _ = load_dataset(cfg.data).batch(torch.arange(64))
    assert s.sigma_1 == pytest.approx(max_pairwise_distance(data))  # Technique 1
    assert s.num_levels == num_levels_for_ratio(s.sigma_1, 0.5, ratio_rule(784))  # Technique 2
    gamma = (s.sigma_1 / 0.5) ** (1 / (s.num_levels - 1))
    assert s.eps == pytest.approx(choose_eps(2, gamma, 0.5))  # Technique 4
    assert result.step == 2
    run = load_run(tmp_path / "run")
    assert isinstance(run.model, NCSN)
    batch = draw_samples(run, SampleRequest(n=3, seed=0, batch_size=3, steps=1))  # T = 1 step per level
    assert batch.images.shape == (3, 1, 28, 28) and torch.isfinite(batch.images).all()
    assert batch.nfe == s.num_levels * 1 + 1 and batch.labels is None
    again = draw_samples(run, SampleRequest(n=3, seed=0, batch_size=3, steps=1))
    assert torch.equal(again.images, batch.images)
    with pytest.raises(ValueError, match="annealed_langevin"):
        draw_samples(run, SampleRequest(n=2, sampler="ddim"))
    with pytest.raises(ValueError, match="unconditional"):
        draw_samples(run, SampleRequest(n=2, guidance=1.0))


def test_family_objectives():
    spec = family_spec(Family.NCSN)
    cfg = _tiny(Family.NCSN, score=ScoreConfig(num_levels=4, sigma_1=10.0, eps=1e-5))
    assert spec.bpd_method is None and spec.bound_fn(cfg, None, False) is None
    assert isinstance(spec.build_objective(cfg), DropLabels)
    assert spec.adapt_to_data(cfg, (1, 28, 28), 10) == cfg  # nothing automatic: the data is not read
    cond = dataclasses.replace(cfg, unet=dataclasses.replace(cfg.unet, num_classes=10))
    obj = spec.build_objective(cond)
    assert isinstance(obj, LabelDropout) and isinstance(obj.objective, DenoisingScoreMatching)
    assert obj.p_uncond == 0.1
    ddpm = _tiny(Family.DDPM, num_classes=10)
    assert isinstance(family_spec(Family.DDPM).build_objective(ddpm), LabelDropout)
    assert isinstance(family_spec(Family.DDPM).build_objective(_tiny(Family.DDPM)), DropLabels)


@torch.no_grad()
@pytest.mark.parametrize("sampler", ["ddim", "ancestral", "pc", "langevin"])
def test_ddpm_family_guided_sampling(sampler):
    spec = family_spec(Family.DDPM)
    cfg = _tiny(Family.DDPM, num_classes=10)
    torch.manual_seed(0)
    model = spec.build_model(cfg).eval()
    calls = []
    model.register_forward_hook(lambda m, args, out: calls.append(args[0].shape[0]))
    req = SampleRequest(n=4, sampler=sampler, guidance=2.0)
    batch = spec.sample(cfg, model, 4, torch.Generator().manual_seed(0), req)
    assert batch.labels.tolist() == [0, 1, 2, 3] and batch.images.shape == (4, 1, 28, 28)
    assert set(calls) == {8}  # every network call is one batched pass over both branches
    assert batch.nfe == 2 * len(calls)
    plain = spec.sample(cfg, model, 4, torch.Generator().manual_seed(0),
                        SampleRequest(n=4, sampler=sampler, label=3))
    assert plain.labels.tolist() == [3, 3, 3, 3] and plain.nfe == len(calls) // 1 - len(calls) // 2
    with pytest.raises(ValueError, match="NCSN"):
        spec.sample(cfg, model, 2, torch.Generator(), SampleRequest(n=2, sampler="annealed_langevin"))
    uncond = _tiny(Family.DDPM)
    with pytest.raises(ValueError, match="unconditional"):
        spec.sample(uncond, spec.build_model(uncond), 2, torch.Generator(), SampleRequest(n=2, guidance=1.0))


def test_presets():
    cfg = preset("ddpm-cfg-mnist")
    assert cfg.family is Family.DDPM and cfg.unet.num_classes == 10 and cfg.diffusion.p_uncond == 0.1
    ncsn = preset("ncsn-mnist")
    assert ncsn.family is Family.NCSN and ncsn.sample.sampler is SamplerKind.ANNEALED_LANGEVIN
    assert ncsn.score.sigma_1 == 0 and ncsn.score.num_levels == 0 and ncsn.score.eps == 0  # the rules decide
    assert isinstance(family_spec(Family.NCSN).build_model(dataclasses.replace(
        ncsn, score=ScoreConfig(num_levels=4, sigma_1=10.0, eps=1e-5))), NCSN)
    assert ClassifierFreeGuidance  # the wrapper the families use
