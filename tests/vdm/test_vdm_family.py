"""The vdm family end to end (issue 16, test 6 and the registry): save/resume bit-exact with the learned schedule,
the schedule in the checkpoint, the EMA and the config; config checks; the sampler dispatch; the flow preset."""

import dataclasses

import pytest
import torch
from safetensors.torch import load_file

from elbolab.config import ConfigError, RunConfig, apply_overrides, load_toml, preset
from elbolab.families import SampleRequest, get_family
from elbolab.runs import draw_samples, load_run, train_run
from elbolab.vdm import LearnedMonotoneSchedule, VDMModel
from elbolab.vdm.flow import FlowMatchingObjective
from elbolab.vdm.schedules import FlowSchedule

FAST = ["data.name=mnist-embedded", "data.limit=48", "data.holdout=16", "train.batch_size=8", "train.minutes=0",
        "train.epochs=0", "train.checkpoint_every=2", "train.log_every=1", "train.warmup_steps=0",
        "train.precision=fp32", "sample.precision=fp32"]


def tiny(name: str, *more: str) -> RunConfig:
    cfg = preset(name)
    return apply_overrides(cfg, FAST + list(get_family("vdm").tiny_overrides) + list(more))


def _losses(folder):
    import json

    return [json.loads(line)["loss"] for line in (folder / "metrics.jsonl").read_text().splitlines()
            if "loss" in json.loads(line)]


def test_resume_is_bit_exact_with_the_learned_schedule(tmp_path):
    cfg = tiny("vdm-mnist", "train.steps=4", "train.lr_schedule=constant")  # the same lr in both runs
    assert cfg.model.vdm.schedule.value == "learned" and cfg.model.unet.input_fourier
    one, two = tmp_path / "one", tmp_path / "two"
    train_run(cfg, one, progress=False)
    train_run(apply_overrides(cfg, ["train.steps=2"]), two, progress=False)
    train_run(cfg, two, resume=True, progress=False)
    assert _losses(one) == _losses(two) and len(_losses(one)) == 4
    fresh = get_family("vdm").build_model(cfg).state_dict()
    for name in ("model.safetensors", "ema.safetensors"):
        a, b = load_file(one / name), load_file(two / name)
        assert set(a) == set(b)
        sched = [k for k in a if "schedule." in k]
        assert {"gamma_0", "gap", "w1", "w2", "b2", "w3"} <= {k.rsplit(".", 1)[-1] for k in sched}, name
        for k in a:
            assert torch.equal(a[k], b[k]), (name, k)
    # the schedule trained (so the comparison above is not between two initial states), and the EMA follows it
    model = load_file(one / "model.safetensors")
    for k in ("schedule.gamma_0", "schedule.gap", "schedule.w2"):
        assert not torch.equal(model[k], fresh[k]), k
    saved = load_toml(one / "config.toml")
    assert saved.family == "vdm" and saved.model.vdm == cfg.model.vdm
    run = load_run(one)
    assert isinstance(run.model, VDMModel) and isinstance(run.model.schedule, LearnedMonotoneSchedule)
    g0 = run.model.schedule.endpoints()[0].detach()
    ema = load_file(one / "ema.safetensors")
    assert float(g0) == float(ema["schedule.gamma_0"])  # a loaded run uses the EMA weights, schedule included


def test_config_checks_name_the_key():
    fam = get_family("vdm")
    with pytest.raises(ConfigError, match="vdm.schedule = 'cubic' is not valid"):
        apply_overrides(preset("vdm-mnist"), ["vdm.schedule=cubic"])
    with pytest.raises(ConfigError, match="gamma_0 < gamma_1"):
        apply_overrides(preset("vdm-mnist"), ["vdm.gamma_0=6.0"])
    with pytest.raises(ConfigError, match="prediction = 'velocity'"):
        apply_overrides(preset("vdm-mnist"), ["vdm.loss=flow"])
    with pytest.raises(ConfigError, match="unconditional"):
        apply_overrides(preset("vdm-mnist"), ["unet.num_classes=10"])
    assert fam.capabilities.sample and fam.capabilities.bound is not None and not fam.capabilities.diffusion


def test_flow_preset_is_flow_matching_on_the_flow_path(tmp_path):
    cfg = tiny("flow-mnist", "train.steps=2")
    fam = get_family("vdm")
    model = fam.build_model(cfg)
    assert isinstance(model.schedule, FlowSchedule) and model.prediction.value == "velocity"
    assert isinstance(fam.build_objective(cfg).objective, FlowMatchingObjective)
    train_run(cfg, tmp_path / "flow", progress=False)
    run = load_run(tmp_path / "flow")
    batch = draw_samples(run, SampleRequest(n=2, seed=3, batch_size=2))
    assert batch.method == "flow-heun-2" and batch.nfe == 3  # Heun: 2 N - 1
    # samples are 8-bit values (the decoder's mode)
    k = (batch.images + 1) * 127.5
    assert torch.allclose(k, k.round(), atol=1e-4)


@pytest.mark.parametrize("sampler,nfe", [("ancestral", 3), ("ddim", 3), ("heun", 3), ("flow-euler", 3)])
def test_sampler_table_dispatch_and_options(tmp_path, sampler, nfe):
    cfg = tiny("vdm-mnist", "train.steps=1")
    train_run(cfg, tmp_path / "r", progress=False)
    run = load_run(tmp_path / "r")
    b = draw_samples(run, SampleRequest(n=2, sampler=sampler, seed=0, batch_size=2, options={"steps": 3 if sampler != "heun" else 2}))
    assert b.nfe == nfe and b.images.shape == (2, 1, 28, 28)
    with pytest.raises(ValueError, match="has no option 'eta'"):
        draw_samples(run, SampleRequest(n=2, sampler="ancestral", options={"eta": 1.0}))
