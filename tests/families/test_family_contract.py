"""One contract test per concept, over every registered family and every preset (networks shrunk through the
family's ``tiny_overrides``): build from the preset, train 3 steps, save, resume, load, sample with each of the
family's samplers, and its likelihood bound where it has one. A new family gets this coverage by registering
(``toy_family`` below is a test-only family registered exactly as docs/adding-a-family.md says)."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import toy_family  # noqa: F401  (registers the test-only family "toy" and its preset folder)

from elbolab.config import RunConfig, apply_overrides, load_toml, preset, preset_names
from elbolab.families import SampleRequest, all_families, get_family
from elbolab.objectives import AdversarialObjective, Objective
from elbolab.runs import draw_samples, load_run, train_run

FAST = ["data.name=mnist-embedded", "data.limit=64", "data.holdout=16", "train.batch_size=8", "train.steps=3",
        "train.minutes=0", "train.epochs=0", "train.checkpoint_every=2", "train.log_every=1",
        "train.warmup_steps=0", "train.precision=fp32", "sample.n=4", "sample.precision=fp32"]


def tiny(name: str) -> RunConfig:
    cfg = preset(name)
    return apply_overrides(cfg, FAST + list(get_family(cfg.family).tiny_overrides))


def test_every_family_has_a_preset_and_a_complete_description():
    families = {f.name for f in all_families()}
    assert {"ddpm", "ncsn", "vae", "hvae", "ae", "gan", "toy"} <= families
    with_preset = {preset(n).family for n in preset_names()}
    assert families <= with_preset, f"families without a preset: {families - with_preset}"
    for f in all_families():
        assert dataclasses.is_dataclass(f.config_cls) and isinstance(f.config_cls(), f.config_cls)
        assert (f.default_sampler in f.samplers) or (not f.samplers and not f.default_sampler)
        for name, spec in f.samplers.items():
            assert callable(spec.fn) and dataclasses.is_dataclass(spec.options), (f.name, name)
            spec.options()  # every option has a default


@pytest.mark.slow
@pytest.mark.parametrize("name", preset_names())
def test_preset_trains_resumes_loads_samples_and_bounds(tmp_path, name):
    cfg = tiny(name)
    family = get_family(cfg.family)
    objective = family.build_objective(cfg)
    assert isinstance(objective, (Objective, AdversarialObjective))
    out = tmp_path / "run"
    first = train_run(cfg, out, progress=False)
    assert first.step == 3 and not first.interrupted
    saved = load_toml(out / "config.toml")
    assert saved.family == cfg.family and isinstance(saved.model, family.config_cls)
    again = train_run(apply_overrides(cfg, ["train.steps=4"]), out, resume=True, progress=False)
    assert again.step == 4
    run = load_run(out)
    assert run.step == 4 and not run.model.training and run.family is family
    caps = family.capabilities
    assert caps.sample == bool(family.samplers)
    for sampler in family.samplers:
        req = SampleRequest(n=2, sampler=sampler, seed=1, batch_size=2)
        batch = draw_samples(run, req)
        assert batch.images.shape == (2, 1, 28, 28) and torch.isfinite(batch.images).all(), sampler
        assert batch.images.min() >= -1 and batch.images.max() <= 1 and batch.nfe >= 1
        assert torch.equal(draw_samples(run, req).images, batch.images), f"{sampler}: not reproducible"
    if not caps.sample:
        with pytest.raises(ValueError, match="cannot sample"):
            draw_samples(run, SampleRequest(n=2))
    bound = family.bound_fn(run.config, run.model, exact=False)
    assert (bound is not None) == (caps.bound is not None and _has_bound(run)), name
    if bound is not None:
        x = torch.rand(2, 1, 28, 28) * 2 - 1
        terms = bound(x, torch.Generator().manual_seed(0))
        assert terms and all(t.shape == (2,) and torch.isfinite(t).all() for t in terms.values())
        # the family's bpd_method is one evaluate_bpd knows (PixelCNN's "exact" once was not)
        from elbolab.evaluate import evaluate_bpd

        x8 = (torch.rand(2, 1, 28, 28, generator=torch.Generator().manual_seed(1)) * 255).round().to(torch.uint8)
        bpd = evaluate_bpd(bound, "mnist", family.bpd_method, images=x8, progress=False)
        assert bpd.n == 2 and bpd.value > 0


def _has_bound(run) -> bool:
    """The VAE families bound 8-bit data only with the discretised decoder."""
    vae = getattr(run.config.model, "vae", None)
    return vae is None or vae.likelihood.value == "discretized"


def test_an_option_the_sampler_lacks_lists_the_samplers_and_options():
    fam = get_family("toy")
    cfg = tiny("toy-tiny")
    with pytest.raises(ValueError, match="sampler 'independent' of family 'toy' has no option 'eta'; its options: "
                                         "temperature"):
        fam.sampler_options(cfg, SampleRequest(options={"eta": 1.0}))
    with pytest.raises(ValueError, match="sampler 'ddim' is not a sampler of family 'toy'; choices: independent"):
        fam.sampler_options(cfg, SampleRequest(sampler="ddim"))
    name, opts = fam.sampler_options(cfg, SampleRequest(options={"temperature": 2}))
    assert name == "independent" and opts.temperature == 2.0
    with pytest.raises(ValueError, match="temperature = 0.0 must be > 0"):
        fam.sampler_options(cfg, SampleRequest(options={"temperature": 0}))
