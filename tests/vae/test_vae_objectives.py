"""Trainer objectives of the VAE family: the loss is the negative ELBO, KL warm-up, free bits, state for resume,
per-term metrics; the autoencoder's L2 loss; the evaluate_bpd bound function."""

import math

import pytest
import torch

from elbolab.vae.config import VAEKind
from elbolab.vae.config import DecoderLikelihood, VAEArchitecture, VAEConfig
from elbolab.objectives import LossOutput, Objective
from elbolab.vae import AEObjective, ELBOObjective, build_objective, build_vae, vae_bound_fn

CFG = VAEConfig(architecture=VAEArchitecture.FC, latent_dims=(5, 3), hidden_sizes=(16,), layer_hidden=8)


def _model(family=VAEKind.HVAE, cfg=CFG):
    torch.manual_seed(0)
    return build_vae(cfg, (1, 8, 8), family)


def _x(n=6, seed=1):
    return torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_loss_is_the_negative_elbo_with_per_layer_metrics():
    model, obj = _model(), ELBOObjective()
    assert isinstance(obj, Objective)
    out = obj.loss(model, _x(), None, torch.Generator().manual_seed(2))
    assert isinstance(out, LossOutput) and out.loss.ndim == 0
    # same draws by hand: binarise, then the ELBO terms
    g = torch.Generator().manual_seed(2)
    terms = model.elbo(model.likelihood.prepare(_x(), g), g)
    torch.testing.assert_close(out.loss, -terms.elbo.mean())
    m = out.metrics
    assert m["elbo"] == pytest.approx(-out.loss.item(), rel=1e-6)
    assert m["kl"] == pytest.approx(m["kl_1"] + m["kl_2"], rel=1e-6)
    assert m["elbo"] == pytest.approx(m["reconstruction"] - m["kl"], rel=1e-6)
    assert m["bpd"] == pytest.approx(-m["elbo"] / (64 * math.log(2)), rel=1e-6)


def test_kl_warmup_counts_training_steps_and_resumes():
    model, obj = _model(), ELBOObjective(beta=2.0, kl_warmup_steps=4)
    assert [obj.kl_weight(s) for s in (0, 1, 2, 4, 10)] == [0.0, 0.5, 1.0, 2.0, 2.0]
    weights = [obj.loss(model, _x(), None, torch.Generator().manual_seed(s)).metrics["kl_weight"] for s in range(3)]
    assert weights == [0.0, 0.5, 1.0] and obj.step == 3
    model.eval()  # evaluation calls do not advance the schedule
    obj.loss(model, _x(), None, torch.Generator())
    model.train()
    with torch.no_grad():
        obj.loss(model, _x(), None, torch.Generator())
    assert obj.step == 3
    # the Trainer checkpoints objective.state_dict() and restores it on resume
    fresh = ELBOObjective(beta=2.0, kl_warmup_steps=4)
    fresh.load_state_dict(obj.state_dict())
    assert fresh.step == 3 and fresh.kl_weight(fresh.step) == 1.5
    # with weight 0 (first step) the loss is the reconstruction term alone
    g0 = torch.Generator().manual_seed(9)
    out = ELBOObjective(kl_warmup_steps=10).loss(model, _x(), None, g0)
    assert out.loss.item() == pytest.approx(-out.metrics["reconstruction"], rel=1e-6)
    with pytest.raises(ValueError, match="step"):
        fresh.load_state_dict({"step": -1})


def test_free_bits_floor_each_dimension():
    obj = ELBOObjective(free_bits=0.5)
    kl = torch.tensor([[0.1, 2.0, 0.4], [0.3, 1.0, 0.8]], requires_grad=True)  # batch means: 0.2, 1.5, 0.6
    pen = obj.penalised_kl(kl)
    assert pen.item() == pytest.approx(0.5 + 1.5 + 0.6)
    pen.backward()
    # dimensions below the floor get no gradient (their KL is "free")
    torch.testing.assert_close(kl.grad, torch.tensor([[0.0, 0.5, 0.5], [0.0, 0.5, 0.5]]))
    assert ELBOObjective().penalised_kl(kl).item() == pytest.approx(2.3)


@pytest.mark.parametrize("kwargs, match", [({"beta": 0.0}, "beta"), ({"kl_warmup_steps": -1}, "warmup"),
                                           ({"free_bits": -0.1}, "free_bits")])
def test_bad_objective_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ELBOObjective(**kwargs)


def test_autoencoder_objective_is_mse():
    model = _model(VAEKind.AE, VAEConfig(latent_dims=(4,), hidden_sizes=(16,)))
    x = _x()
    out = AEObjective().loss(model, x, None, torch.Generator())
    torch.testing.assert_close(out.loss, ((model(x) - x) ** 2).mean())
    assert out.metrics["mse"] == pytest.approx(out.loss.item())


def test_bound_fn_terms_sum_to_the_bounds():
    cfg = VAEConfig(latent_dims=(5, 3), hidden_sizes=(16,), layer_hidden=8, likelihood=DecoderLikelihood.DISCRETIZED)
    model = _model(VAEKind.HVAE, cfg).eval()
    x = model.likelihood.prepare(_x(), None)
    terms = vae_bound_fn(model)(x, torch.Generator().manual_seed(3))
    assert sorted(terms) == ["kl_1", "kl_2", "reconstruction"]
    with torch.no_grad():
        elbo = model.elbo(x, torch.Generator().manual_seed(3)).elbo
    torch.testing.assert_close(sum(terms.values()), -elbo / (64 * math.log(2)))
    iw = vae_bound_fn(model, 50)(x, torch.Generator().manual_seed(3))
    assert list(iw) == ["iwae_50"] and iw["iwae_50"].shape == (6,)
    with pytest.raises(ValueError, match="num_samples"):
        vae_bound_fn(model, 0)


def test_first_training_loss_initialises_the_decoder_bias_once():
    """init_decoder_bias: the first training-mode loss (objective step 0) sets the decoder's output bias from the
    batch's mean image before scoring it; later calls, evaluation and a resumed objective leave it alone."""
    x, x2 = _x(), _x(seed=7)
    expected = torch.logit(((x + 1) / 2).mean(0).clamp(1e-3, 1 - 1e-3)).flatten()
    bias = lambda m: m.decoder.mlp.net[-1].bias.detach().clone()  # noqa: E731

    model, obj = _model(), ELBOObjective(init_decoder_bias=True)
    start = bias(model)
    model.eval()
    obj.loss(model, x, None, torch.Generator().manual_seed(2))  # evaluation: no init, no step
    assert torch.equal(bias(model), start) and obj.step == 0
    model.train()
    out = obj.loss(model, x, None, torch.Generator().manual_seed(2))
    torch.testing.assert_close(bias(model), expected)
    g = torch.Generator().manual_seed(2)  # the loss scored the initialised model
    torch.testing.assert_close(out.loss, -model.elbo(model.likelihood.prepare(x, g), g).elbo.mean())
    obj.loss(model, x2, None, torch.Generator().manual_seed(2))
    torch.testing.assert_close(bias(model), expected)  # once only

    resumed, obj2 = _model(), ELBOObjective(init_decoder_bias=True)
    obj2.load_state_dict({"step": 10})
    obj2.loss(resumed, x, None, torch.Generator().manual_seed(2))
    assert torch.equal(bias(resumed), start)

    plain = _model()  # off by default for a hand-built objective; on in the config the CLI builds
    ELBOObjective().loss(plain, x, None, torch.Generator().manual_seed(2))
    assert torch.equal(bias(plain), start)
    assert CFG.init_decoder_bias and build_objective(CFG, VAEKind.HVAE).init_decoder_bias
