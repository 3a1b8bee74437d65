"""Classifier-free guidance: exact limits w = 0 / w = -1, one batched forward pass, label dropout, and with an
exact class-conditional oracle guidance moves samples toward the class in every sampler."""

import pytest
import torch
from torch import nn

from elbolab.nn.config import unet_preset
from elbolab.data.toy import GaussianMixture
from elbolab.diffusion import GaussianDiffusion, NoiseSchedule, samplers
from elbolab.diffusion.guidance import ClassifierFreeGuidance, LabelDropout, drop_labels, guided_sampling
from elbolab.math import energy_distance
from elbolab.nn.unet import build_unet
from elbolab.score import ClassConditionalMixtureOracle, predictor_corrector
from elbolab.objectives import LossOutput, Objective


class Counting(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model, self.batches = model, []

    def forward(self, x, t, y=None):
        self.batches.append(x.shape[0])
        return self.model(x, t, y)


@pytest.fixture(scope="module")
def unet():
    torch.manual_seed(0)
    cfg = unet_preset("tiny")
    cfg.num_classes, cfg.image_size, cfg.attention_resolutions = 3, 8, (4,)
    net = build_unet(cfg).eval()
    with torch.no_grad():  # a non-trivial label embedding (it starts random anyway; make it matter)
        net.label_embed.weight.mul_(5.0)
    return net


def _inputs(B=4):
    g = torch.Generator().manual_seed(1)
    return torch.randn(B, 1, 8, 8, generator=g), torch.randint(1, 1000, (B,), generator=g), torch.tensor([0, 1, 2, 1])


@torch.no_grad()
def test_w0_is_exactly_conditional_and_w_minus_one_exactly_unconditional(unet):
    x, t, y = _inputs()
    cond, uncond = unet(x, t, y), unet(x, t, None)
    assert not torch.allclose(cond, uncond)
    assert torch.equal(ClassifierFreeGuidance(unet, 0.0)(x, t, y), cond)
    assert torch.equal(ClassifierFreeGuidance(unet, -1)(x, t, y), uncond)
    assert ClassifierFreeGuidance(unet, 0.0).nfe_per_call == 1 == ClassifierFreeGuidance(unet, -1.0).nfe_per_call


@torch.no_grad()
@pytest.mark.parametrize("w", [-0.2, 1.0, 2.0])
def test_batched_guided_output_equals_two_separate_calls(unet, w):
    x, t, y = _inputs()
    counting = Counting(unet)
    guided = ClassifierFreeGuidance(counting, w)
    out = guided(x, t, y)
    assert counting.batches == [8]  # one forward pass of 2B
    assert guided.nfe_per_call == 2
    expected = (1 + w) * unet(x, t, y) - w * unet(x, t, torch.full_like(y, -1))
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    # a null label in y gives that row the unconditional prediction, whatever w
    y_null = torch.tensor([0, -1, 2, 3])  # 3 = num_classes is the null class too
    out = guided(x, t, y_null)
    torch.testing.assert_close(out[[1, 3]], unet(x[[1, 3]], t[[1, 3]], None), rtol=1e-5, atol=1e-5)


def test_guidance_input_validation(unet):
    x, t, y = _inputs()
    for bad in [float("nan"), float("inf"), "2", True]:
        with pytest.raises(ValueError, match="guidance weight"):
            ClassifierFreeGuidance(unet, bad)
    with pytest.raises(ValueError, match="labels"):
        ClassifierFreeGuidance(unet, 1.0)(x, t, None)
    with pytest.raises(ValueError, match="integer"):
        ClassifierFreeGuidance(unet, 1.0)(x, t, y.float())


# ------------------------------------------------------------------------------------------------
# label dropout
# ------------------------------------------------------------------------------------------------
class Recording(Objective):
    def __init__(self):
        self.y = None

    def loss(self, model, x, y, generator):
        self.y = y
        return LossOutput(loss=x.sum() * 0, metrics={})

    def state_dict(self):
        return {"k": torch.ones(1)}


def test_label_dropout():
    inner = Recording()
    obj = LabelDropout(inner, p_uncond=0.1)
    assert isinstance(obj, Objective) and obj.state_dict()["k"].item() == 1.0
    y = torch.arange(20000) % 10
    obj.loss(None, torch.zeros(20000, 2), y, torch.Generator().manual_seed(0))
    dropped = inner.y == -1
    assert abs(float(dropped.double().mean()) - 0.1) < 0.01  # Bernoulli(0.1), 20000 draws: sd 0.002
    assert torch.equal(inner.y[~dropped], y[~dropped])
    again = drop_labels(y, 0.1, torch.Generator().manual_seed(0))
    assert torch.equal(again, inner.y)  # all randomness from the generator
    assert torch.equal(drop_labels(y, 0.0, torch.Generator()), y)
    obj.loss(None, torch.zeros(3, 2), None, torch.Generator())
    assert inner.y is None  # unlabelled data passes through
    for bad in [-0.1, 1.0, 1.5]:
        with pytest.raises(ValueError, match="p_uncond"):
            LabelDropout(inner, bad)


def test_guided_sampling_labels(unet):
    g = guided_sampling(unet, 3, 7, w=2.0)
    assert isinstance(g.model, ClassifierFreeGuidance) and g.labels.tolist() == [0, 1, 2, 0, 1, 2, 0]
    g = guided_sampling(unet, 3, 4, label=2, w=1.0)
    assert g.labels.tolist() == [2, 2, 2, 2] and g.model.w == 1.0
    g = guided_sampling(unet, 3, 2)
    assert g.model is unet and g.labels is None
    with pytest.raises(ValueError, match="unconditional"):
        guided_sampling(unet, 0, 4, w=1.0)
    with pytest.raises(ValueError, match="label = 3"):
        guided_sampling(unet, 3, 4, label=3)


# ------------------------------------------------------------------------------------------------
# exact class-conditional oracle: guidance moves samples toward the class, in every sampler
# ------------------------------------------------------------------------------------------------
# two overlapping classes N((-0.6, 0), 0.25 I), N((0.6, 0), 0.25 I): the Bayes classifier is the sign of x_1,
# a class-1 sample is classified correctly with probability Phi(1.2) = 0.885, a mixture sample with 0.5
MIX = GaussianMixture.isotropic([0.5, 0.5], [[-0.6, 0.0], [0.6, 0.0]], 0.5)
D = GaussianDiffusion(NoiseSchedule.linear(200, 5e-4, 0.1))  # fine enough for the oracle to be ~exact
SAMPLERS = {
    "ancestral": lambda m, n, g: samplers.ancestral(m, (n, 2), D, generator=g, cond=torch.ones(n, dtype=torch.long)),
    "ddim": lambda m, n, g: samplers.ddim(m, (n, 2), D, steps=50, generator=g, cond=torch.ones(n, dtype=torch.long)),
    "pc": lambda m, n, g: predictor_corrector(m, (n, 2), D, steps=50, generator=g,
                                              cond=torch.ones(n, dtype=torch.long)),
}


@pytest.mark.slow
@pytest.mark.parametrize("sampler", list(SAMPLERS))
def test_guidance_moves_samples_toward_the_class(sampler):
    oracle = ClassConditionalMixtureOracle(MIX, D)
    n = 1000
    accuracy, mean, std, samples = {}, {}, {}, {}
    for w in [-1.0, 0.0, 2.0]:
        x = SAMPLERS[sampler](ClassifierFreeGuidance(oracle, w), n, torch.Generator().manual_seed(0)).sample.double()
        samples[w] = x
        accuracy[w] = float((x[:, 0] > 0).double().mean())
        mean[w], std[w] = float(x[:, 0].mean()), float(x[:, 0].std())
    assert accuracy[-1.0] == pytest.approx(0.5, abs=0.05)  # unconditional
    assert accuracy[0.0] == pytest.approx(0.885, abs=0.035)  # the class-conditional model
    assert accuracy[2.0] > 0.97
    # p(x | y) p(y | x)^w: pushed away from the other class, and less diverse along the class direction
    assert mean[-1.0] < mean[0.0] < mean[2.0]
    assert std[-1.0] > std[0.0] > std[2.0]
    ref = MIX.sample_with_labels(4000, torch.Generator().manual_seed(3))
    assert float(energy_distance(samples[0.0], ref[0][ref[1] == 1])) < 0.01
    assert float(energy_distance(samples[-1.0], ref[0])) < 0.01


# ------------------------------------------------------------------------------------------------
# sample.guidance: the run's default weight when a request names neither a label nor a weight
# ------------------------------------------------------------------------------------------------
def test_run_default_guidance_resolution_and_errors():
    from elbolab.config import ConfigError, apply_overrides, preset
    from elbolab.families import SampleRequest
    from elbolab.families.ddpm import check_guidance, guidance_weight

    cfg = preset("ddpm-cfg-mnist")
    assert cfg.sample.guidance == -1.0 and guidance_weight(cfg, SampleRequest()) is None  # the null class
    cfg = apply_overrides(cfg, ["sample.guidance=0.5"])
    assert guidance_weight(cfg, SampleRequest()) == 0.5
    assert guidance_weight(cfg, SampleRequest(guidance=2.0)) == 2.0  # the request wins
    assert guidance_weight(cfg, SampleRequest(label=3)) is None  # conditional on the label, as without a default
    assert guidance_weight(cfg, SampleRequest(label=3, guidance=1.0)) == 1.0
    check_guidance(cfg, 10)
    with pytest.raises(ValueError, match=r"sample.guidance = 0.5 needs a class-conditional network"):
        check_guidance(cfg, 0)
    with pytest.raises(ConfigError, match=r"sample.guidance = 1.0: family 'gan' has no classifier-free guidance"):
        apply_overrides(preset("gan-mnist"), ["sample.guidance=1"])
    with pytest.raises(ConfigError, match=r"sample.guidance = inf must be a finite number"):
        apply_overrides(preset("ddpm-mnist"), ["sample.guidance=inf"])


def test_run_default_guidance_drives_sampling(tmp_path):
    """A tiny class-conditional run: sample.guidance = 0 samples with labels cycling through the classes, exactly
    as a request with guidance 0; -1 gives the null class (no labels); an unconditional run refuses w != -1."""
    from elbolab.config import apply_overrides, preset
    from elbolab.data import ImageDataset
    from elbolab.families import SampleRequest, get_family

    fam = get_family("ddpm")
    cfg = apply_overrides(preset("ddpm-cfg-mnist"), list(fam.tiny_overrides) + ["unet.num_classes=3",
                                                                             "unet.image_size=8"])
    torch.manual_seed(0)
    model = fam.build_model(cfg).eval()

    def draw(c, request):
        return fam.sample(c, model, 6, torch.Generator().manual_seed(0), request)

    by_default = draw(apply_overrides(cfg, ["sample.guidance=0"]), SampleRequest())
    by_request = draw(cfg, SampleRequest(guidance=0.0))
    assert by_default.labels.tolist() == [0, 1, 2, 0, 1, 2]
    torch.testing.assert_close(by_default.images, by_request.images, rtol=0, atol=0)
    null = draw(cfg, SampleRequest())
    assert null.labels is None and not torch.equal(null.images, by_default.images)
    # labels="prior": i.i.d. uniform class draws from the sampling generator (reproducible, not stratified)
    prior = draw(cfg, SampleRequest(guidance=0.0, labels="prior"))
    again = draw(cfg, SampleRequest(guidance=0.0, labels="prior"))
    assert prior.labels.tolist() == again.labels.tolist()
    torch.testing.assert_close(prior.images, again.images, rtol=0, atol=0)
    assert prior.labels.tolist() != [0, 1, 2, 0, 1, 2] and set(prior.labels.tolist()) <= {0, 1, 2}
    data = ImageDataset(torch.zeros(4, 1, 8, 8, dtype=torch.uint8))
    unconditional = apply_overrides(cfg, ["unet.num_classes=0", "sample.guidance=1"])
    with pytest.raises(ValueError, match="needs a class-conditional network"):
        fam.adapt_to_data(unconditional, data.shape, data.num_classes)


def test_prior_label_draws_are_uniform_and_checked():
    """guided_sampling(labels="prior") draws i.i.d. uniform labels (chi-square against 1/K over 20000 draws, and
    the per-class counts are not the exact balance of "cycle"); a bad choice or a missing generator is refused."""
    from elbolab.families import SampleRequest

    net = nn.Identity()
    n, k = 20000, 10
    g = guided_sampling(net, k, n, w=0.0, labels="prior", generator=torch.Generator().manual_seed(3))
    counts = torch.bincount(g.labels, minlength=k).double()
    chi2 = float(((counts - n / k) ** 2 / (n / k)).sum())
    assert 0.5 < chi2 < 27.9  # chi-square, 9 dof: P(chi2 < 0.5) ~ 1e-6, P(chi2 > 27.9) ~ 0.001
    cyc = guided_sampling(net, k, n, w=0.0, labels="cycle")
    assert torch.bincount(cyc.labels, minlength=k).tolist() == [n // k] * k
    with pytest.raises(ValueError, match=r"labels = 'random': choose one of cycle, prior"):
        SampleRequest(labels="random")
    with pytest.raises(ValueError, match="pass generator="):
        guided_sampling(net, k, 4, w=0.0, labels="prior")
