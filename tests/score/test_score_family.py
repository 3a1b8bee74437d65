"""Run-level glue: the NCSN family (train/load/sample a tiny run), presets, and guidance / score samplers
reached through the DDPM family."""

import dataclasses

import pytest
import torch

from elbolab.config import DataConfig, Precision, RunConfig, SampleConfig, TrainConfig, load_toml, preset
from elbolab.diffusion.config import DiffusionConfig
from elbolab.diffusion.guidance import ClassifierFreeGuidance, LabelDropout
from elbolab.families import SampleRequest, get_family
from elbolab.families.base import DropLabels
from elbolab.families.ddpm import DDPMConfig
from elbolab.families.ncsn import NCSNConfig
from elbolab.nn.config import unet_preset
from elbolab.score.config import ScoreConfig
from elbolab.score import NCSN, DenoisingScoreMatching, choose_eps, max_pairwise_distance, ratio_rule
from elbolab.score.noise_levels import NoiseLevels, level_probabilities, num_levels_for_ratio


def _tiny(family: str, **kw) -> RunConfig:
    unet = dataclasses.replace(unet_preset("tiny"), num_classes=kw.pop("num_classes", 0))
    model = (NCSNConfig(unet=unet, score=kw.pop("score", ScoreConfig(steps_per_level=2))) if family == "ncsn" else
             DDPMConfig(unet=unet, diffusion=DiffusionConfig(T=20, beta_start=1e-3, beta_end=0.3)))
    cfg = RunConfig(
        family=family,
        data=DataConfig(name="mnist-embedded", limit=64),
        model=model,
        train=TrainConfig(batch_size=16, steps=2, warmup_steps=0, log_every=1, checkpoint_every=2,
                          precision=Precision.FP32),
        sample=kw.pop("sample", SampleConfig(n=4)),
    )
    if family == "ddpm":  # 4 sampling steps for every sampler of the family
        cfg.sample.options = {k: dataclasses.replace(v, steps=4) for k, v in cfg.sample.options.items()}
    return cfg


@pytest.mark.slow
def test_ncsn_run_resolves_levels_trains_and_samples(tmp_path):
    from elbolab.data import load_dataset
    from elbolab.runs import draw_samples, load_run, train_run

    cfg = _tiny("ncsn", sample=SampleConfig(sampler="annealed_langevin", n=4),
                score=ScoreConfig(sigma_L=0.5, steps_per_level=2))  # sigma_L = 0.5: ~50 levels, a cheap test
    result = train_run(cfg, tmp_path / "run", progress=False)
    saved = load_toml(tmp_path / "run" / "config.toml", RunConfig)
    s = saved.model.score
    data, _ = load_dataset(cfg.data).batch(torch.arange(64))
    assert s.sigma_1 == pytest.approx(max_pairwise_distance(data))  # Technique 1
    assert s.num_levels == num_levels_for_ratio(s.sigma_1, 0.5, ratio_rule(784))  # Technique 2
    gamma = (s.sigma_1 / 0.5) ** (1 / (s.num_levels - 1))
    assert s.eps == pytest.approx(choose_eps(2, gamma, 0.5))  # Technique 4
    assert result.step == 2
    run = load_run(tmp_path / "run")
    assert isinstance(run.model, NCSN)
    batch = draw_samples(run, SampleRequest(n=3, seed=0, batch_size=3, options={"steps": 1}))  # T = 1 step per level
    assert batch.images.shape == (3, 1, 28, 28) and torch.isfinite(batch.images).all()
    assert batch.nfe == s.num_levels * 1 + 1 and batch.labels is None
    again = draw_samples(run, SampleRequest(n=3, seed=0, batch_size=3, options={"steps": 1}))
    assert torch.equal(again.images, batch.images)
    with pytest.raises(ValueError, match="not a sampler of family 'ncsn'; choices: annealed_langevin, ddim"):
        draw_samples(run, SampleRequest(n=2, sampler="ancestral"))
    # the diffusion solvers on the VE form of the run's levels (elbolab.score.ve): exact NFE, seeded
    fast = draw_samples(run, SampleRequest(n=2, seed=0, batch_size=2, sampler="dpmpp-2m", options={"steps": 4}))
    assert fast.images.shape == (2, 1, 28, 28) and torch.isfinite(fast.images).all() and fast.nfe == 4
    assert torch.equal(draw_samples(run, SampleRequest(n=2, seed=0, batch_size=2, sampler="dpmpp-2m",
                                                       options={"steps": 4})).images, fast.images)
    with pytest.raises(ValueError, match="unconditional"):
        draw_samples(run, SampleRequest(n=2, guidance=1.0))


def test_family_objectives():
    spec = get_family("ncsn")
    cfg = _tiny("ncsn", score=ScoreConfig(num_levels=4, sigma_1=10.0, eps=1e-5))
    assert spec.bpd_method is None and spec.bound_fn(cfg, None, False) is None
    assert isinstance(spec.build_objective(cfg), DropLabels)
    assert spec.adapt_to_data(cfg, (1, 28, 28), 10) == cfg  # nothing automatic: the data is not read
    cond = dataclasses.replace(cfg, model=dataclasses.replace(
        cfg.model, unet=dataclasses.replace(cfg.model.unet, num_classes=10)))
    obj = spec.build_objective(cond)
    assert isinstance(obj, LabelDropout) and isinstance(obj.objective, DenoisingScoreMatching)
    assert obj.p_uncond == 0.1
    ddpm = _tiny("ddpm", num_classes=10)
    assert isinstance(get_family("ddpm").build_objective(ddpm), LabelDropout)
    assert isinstance(get_family("ddpm").build_objective(_tiny("ddpm")), DropLabels)


@torch.no_grad()
@pytest.mark.parametrize("sampler", ["ddim", "ancestral", "pc", "langevin"])
def test_ddpm_family_guided_sampling(sampler):
    spec = get_family("ddpm")
    cfg = _tiny("ddpm", num_classes=10)
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
    with pytest.raises(ValueError, match="not a sampler of family 'ddpm'; choices: ancestral, ddim"):
        spec.sample(cfg, model, 2, torch.Generator(), SampleRequest(n=2, sampler="annealed_langevin"))
    uncond = _tiny("ddpm")
    with pytest.raises(ValueError, match="unconditional"):
        spec.sample(uncond, spec.build_model(uncond), 2, torch.Generator(), SampleRequest(n=2, guidance=1.0))


def test_presets():
    cfg = preset("ddpm-cfg-mnist")
    assert cfg.family == "ddpm" and cfg.model.unet.num_classes == 10 and cfg.model.diffusion.p_uncond == 0.1
    ncsn = preset("ncsn-mnist")
    assert ncsn.family == "ncsn" and ncsn.sample.sampler == "annealed_langevin"
    assert ncsn.model.score.sigma_1 == 0 and ncsn.model.score.num_levels == 0 and ncsn.model.score.eps == 0  # the rules decide
    assert ncsn.model.score.level_sampling == "cosine"
    resolved = dataclasses.replace(ncsn, model=dataclasses.replace(ncsn.model, score=dataclasses.replace(
        ncsn.model.score, num_levels=12, sigma_1=20.0, sigma_L=0.05, eps=1e-5)))
    dsm = get_family("ncsn").build_objective(resolved).objective
    torch.testing.assert_close(dsm.probs, level_probabilities(NoiseLevels.geometric(20.0, 0.05, 12), "cosine"))
    uniform = dataclasses.replace(resolved, model=dataclasses.replace(resolved.model, score=dataclasses.replace(
        resolved.model.score, level_sampling="uniform")))
    assert get_family("ncsn").build_objective(uniform).objective.probs is None  # i ~ U{1..L} by randint
    assert isinstance(get_family("ncsn").build_model(dataclasses.replace(ncsn, model=dataclasses.replace(
        ncsn.model, score=ScoreConfig(num_levels=4, sigma_1=10.0, eps=1e-5)))), NCSN)
    assert ClassifierFreeGuidance  # the wrapper the families use
