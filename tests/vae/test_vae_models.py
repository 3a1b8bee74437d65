"""VAE / HVAE / autoencoder models from the factory: the L = 1 HVAE is the VAE, shapes for both architectures and
every likelihood, the library call convention, sampling, errors."""

import pytest
import torch

from elbolab.config import preset
from elbolab.vae.config import VAEKind
from elbolab.vae.config import DecoderLikelihood, VAEArchitecture, VAEConfig
from elbolab.nn.convnets import ConvDecoder, ConvEncoder, MLPDecoder, MLPEncoder
from elbolab.vae import HVAE, VAE, Autoencoder, build_objective, build_vae, sample_fn

SHAPES = [(1, 28, 28), (3, 32, 32)]


def _cfg(arch, lik=DecoderLikelihood.BERNOULLI, dims=(6,)):
    return VAEConfig(architecture=arch, latent_dims=dims, hidden_sizes=(32,), channels=(8, 16), conv_hidden=32,
                     layer_hidden=16, likelihood=lik)


@pytest.mark.parametrize("arch", list(VAEArchitecture))
@pytest.mark.parametrize("lik", list(DecoderLikelihood))
def test_hvae_with_one_layer_equals_the_vae_on_the_same_weights(arch, lik):
    cfg = _cfg(arch, lik)
    torch.manual_seed(0)
    vae = build_vae(cfg, (1, 28, 28), VAEKind.VAE)
    hvae = build_vae(cfg, (1, 28, 28), VAEKind.HVAE)
    assert isinstance(vae, VAE) and isinstance(hvae, HVAE) and hvae.num_layers == 1
    hvae.load_state_dict(vae.state_dict())  # same parameter names: strict load
    x = vae.likelihood.prepare(torch.rand(5, 1, 28, 28, generator=torch.Generator().manual_seed(1)) * 2 - 1,
                               torch.Generator().manual_seed(2))
    with torch.no_grad():
        a = vae.elbo(x, torch.Generator().manual_seed(3))
        b = hvae.elbo(x, torch.Generator().manual_seed(3))
        torch.testing.assert_close(b.elbo, a.elbo, rtol=0, atol=0)
        torch.testing.assert_close(b.kl, a.kl, rtol=0, atol=0)
        torch.testing.assert_close(hvae.log_importance_weights(x, 4, torch.Generator().manual_seed(4)),
                                   vae.log_importance_weights(x, 4, torch.Generator().manual_seed(4)), rtol=0, atol=0)
        torch.testing.assert_close(hvae.sample(3, torch.Generator().manual_seed(5)),
                                   vae.sample(3, torch.Generator().manual_seed(5)), rtol=0, atol=0)
    assert torch.all(a.kl >= 0) and a.kl.shape == (5, 1)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("arch", list(VAEArchitecture))
@pytest.mark.parametrize("family", [VAEKind.VAE, VAEKind.HVAE, VAEKind.AE])
def test_factory_shapes_and_call_convention(shape, arch, family):
    dims = (6, 4, 3) if family is VAEKind.HVAE else (6,)
    model = build_vae(_cfg(arch, DecoderLikelihood.DISCRETIZED, dims), shape, family)
    x = torch.rand(2, *shape) * 2 - 1
    out = model(x, torch.zeros(2), None)  # model(x, t, y) -> same shape as x
    assert out.shape == x.shape
    g = torch.Generator().manual_seed(0)
    loss = build_objective(_cfg(arch, dims=dims), family).loss(model, x, None, g)
    loss.loss.backward()
    assert all(p.grad is not None for p in model.parameters())
    if family is VAEKind.AE:
        assert isinstance(model, Autoencoder) and model.features(x).shape == (2, 6)
        with pytest.raises(ValueError, match="autoencoder"):
            sample_fn(model, 2, g)
        return
    assert model.features(x).shape == (2, 6)
    s = sample_fn(model, 3, g)
    assert s.shape == (3, *shape) and s.min() >= -1 and s.max() <= 1
    means = model.posterior_means(x, g, 4)
    assert [m.shape for m in means] == [(2, d) for d in dims]
    assert model.training  # sample_fn restores the mode


def test_sampling_is_seeded():
    model = build_vae(_cfg(VAEArchitecture.FC, dims=(5, 3)), (1, 28, 28), VAEKind.HVAE)
    a = sample_fn(model, 4, torch.Generator().manual_seed(7))
    b = sample_fn(model, 4, torch.Generator().manual_seed(7))
    c = sample_fn(model, 4, torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_presets_build():
    for name, family in (("vae-mnist-fc", VAEKind.VAE), ("vae-mnist", VAEKind.VAE), ("hvae-mnist", VAEKind.HVAE),
                         ("ae-mnist", VAEKind.AE)):
        cfg = preset(name)
        assert cfg.family == family.value
        model = build_vae(cfg.model.vae, (1, 28, 28), cfg.family)
        assert model(torch.zeros(1, 1, 28, 28)).shape == (1, 1, 28, 28)
    fc = build_vae(preset("vae-mnist-fc").model.vae, (1, 28, 28), VAEKind.VAE)
    # the notes' fully-connected model: 784 -> 400 -> 2 x 20 (mu, log sigma^2), decoder 20 -> 400 -> 784
    assert [tuple(p.shape) for p in fc.encoder.parameters()] == [(400, 784), (400,), (40, 400), (40,)]
    assert [tuple(p.shape) for p in fc.decoder.parameters()] == [(400, 20), (400,), (784, 400), (784,)]


def test_bad_inputs_raise_value_errors():
    cfg = _cfg(VAEArchitecture.CONV, dims=(4, 2))
    with pytest.raises(ValueError, match="hvae"):
        build_vae(cfg, (1, 28, 28), VAEKind.VAE)
    with pytest.raises(ValueError, match="not a VAE family"):
        build_vae(cfg, (1, 28, 28), "ddpm")
    with pytest.raises(ValueError, match="not a VAE family"):
        build_vae(cfg, (1, 28, 28), "gan?")
    with pytest.raises(ValueError, match="square"):
        build_vae(cfg, (1, 28, 32), VAEKind.HVAE)
    with pytest.raises(ValueError, match="halved"):
        build_vae(VAEConfig(architecture=VAEArchitecture.CONV, channels=(8, 8, 8)), (1, 28, 28), VAEKind.VAE)
    model = build_vae(_cfg(VAEArchitecture.FC), (1, 28, 28), VAEKind.VAE)
    with pytest.raises(ValueError, match=r"\(B, 1, 28, 28\)"):
        model.posterior(torch.zeros(2, 3, 28, 28))
    with pytest.raises(ValueError, match="n = 0"):
        model.sample(0, None)
    with pytest.raises(ValueError, match="up and down"):
        HVAE(model.encoder, model.decoder, model.likelihood, (6, 3), (1, 28, 28))


def test_convnets_shapes():
    x = torch.zeros(2, 3, 32, 32)
    enc = ConvEncoder(3, 32, (16, 32, 64), 64, 10)
    assert enc.final_size == 4 and enc(x).shape == (2, 10)
    dec = ConvDecoder(5, 6, 32, (16, 32, 64), 64)
    assert dec(torch.zeros(2, 5)).shape == (2, 6, 32, 32)
    assert MLPEncoder((1, 28, 28), (400,), 40)(torch.zeros(2, 1, 28, 28)).shape == (2, 40)
    assert MLPDecoder(20, (400,), 2, (28, 28))(torch.zeros(2, 20)).shape == (2, 2, 28, 28)
    with pytest.raises(ValueError, match="positive"):
        MLPEncoder((1, 28, 28), (0,), 4)


def _linear(a: int, b: int) -> int:
    return a * b + b


def test_burda_presets_build_the_architectures_of_their_table_1():
    """vae-burda-mnist: 784-200-200-(2x50) encoder, 50-200-200-784 decoder, tanh; hvae-burda-mnist: adds
    z_1 (100) -> 100 -> 100 -> (2x50) and back, with two tanh layers in each transition (Burda et al. 2016)."""
    import torch.nn as nn

    vae = build_vae(preset("vae-burda-mnist").model.vae, (1, 28, 28), VAEKind.VAE)
    enc = _linear(784, 200) + _linear(200, 200) + _linear(200, 100)
    dec = _linear(50, 200) + _linear(200, 200) + _linear(200, 784)
    assert sum(p.numel() for p in vae.parameters()) == enc + dec
    acts = {type(m) for m in vae.modules() if isinstance(m, (nn.ReLU, nn.Tanh))}
    assert acts == {nn.Tanh}

    hvae = build_vae(preset("hvae-burda-mnist").model.vae, (1, 28, 28), VAEKind.HVAE)
    enc = _linear(784, 200) + _linear(200, 200) + _linear(200, 200)
    dec = _linear(100, 200) + _linear(200, 200) + _linear(200, 784)
    up = _linear(100, 100) + _linear(100, 100) + _linear(100, 100)
    down = _linear(50, 100) + _linear(100, 100) + _linear(100, 200)
    assert sum(p.numel() for p in hvae.parameters()) == enc + dec + up + down
    assert {type(m) for m in hvae.modules() if isinstance(m, (nn.ReLU, nn.Tanh))} == {nn.Tanh}
    assert hvae.latent_dims == (100, 50)


def test_feedforward_activation_is_a_closed_choice():
    from elbolab.nn.config import Activation
    from elbolab.nn.convnets import FeedForward

    assert isinstance(FeedForward(3, (4,), 2, Activation.TANH).net[1], torch.nn.Tanh)
    assert isinstance(FeedForward(3, (4,), 2, "relu").net[1], torch.nn.ReLU)
    with pytest.raises(ValueError, match="activation = 'gelu' is not one of 'relu', 'tanh'"):
        FeedForward(3, (4,), 2, "gelu")


@pytest.mark.parametrize("family", [VAEKind.VAE, VAEKind.HVAE])
def test_encoder_input_unit_reads_binarised_pixels_as_0_and_1(family):
    """encoder_input = "unit": q(z_1|x) is the encoder of (x + 1) / 2 ({0, 1} pixels, Burda et al. 2016); the
    default "data" (what run folders without the key were trained with) reads x in [-1, 1] as before."""
    assert VAEConfig().encoder_input.value == "data"
    x = torch.bernoulli(torch.full((4, 1, 28, 28), 0.3), generator=torch.Generator().manual_seed(0)) * 2 - 1
    for mode, seen in (("data", x), ("unit", (x + 1) / 2)):
        torch.manual_seed(0)
        dims = (6, 3) if family is VAEKind.HVAE else (6,)
        model = build_vae(VAEConfig(latent_dims=dims, hidden_sizes=(32,), encoder_input=mode), (1, 28, 28), family)
        with torch.no_grad():
            mu, logvar = model.encoder(seen).chunk(2, dim=-1)
            q = model.posterior(x)
            torch.testing.assert_close(q.mu, mu, rtol=0, atol=0)
            torch.testing.assert_close(q.logvar, logvar, rtol=0, atol=0)
    with pytest.raises(ValueError, match="encoder_input = 'zero_one' is not valid: expected one of 'data', 'unit'"):
        VAE(torch.nn.Identity(), torch.nn.Identity(), model.likelihood, 6, (1, 28, 28), "zero_one")


@pytest.mark.parametrize("arch", list(VAEArchitecture))
def test_init_decoder_bias_starts_the_bernoulli_decoder_at_the_mean_image(arch):
    """The decoder's last bias becomes logit(clip(mean grey level, 0.001, 0.999)) (Burda et al. 2016's code):
    one value per pixel for the fc decoder, per channel for the conv decoder."""
    x = torch.rand(50, 1, 28, 28, generator=torch.Generator().manual_seed(0)) ** 3 * 2 - 1
    x[:, :, 0, 0] = -1.0  # a pixel that is never inked: clipped at 0.001
    torch.manual_seed(0)
    model = build_vae(_cfg(arch), (1, 28, 28), VAEKind.HVAE if arch is VAEArchitecture.FC else VAEKind.VAE)
    assert model.init_decoder_bias_(x)
    p = ((x + 1) / 2).mean(0)
    if arch is VAEArchitecture.FC:
        expected = torch.logit(p.clamp(1e-3, 1 - 1e-3)).flatten()
        assert expected[0] == pytest.approx(torch.logit(torch.tensor(1e-3)).item())
        bias = model.decoder.mlp.net[-1].bias
    else:
        expected = torch.logit(p.mean().clamp(1e-3, 1 - 1e-3)).reshape(1)
        bias = model.decoder.body[-1].bias
    torch.testing.assert_close(bias.detach(), expected)
    # the other likelihoods keep their initialisation
    torch.manual_seed(0)
    other = build_vae(_cfg(arch, DecoderLikelihood.GAUSSIAN_FIXED), (1, 28, 28), VAEKind.VAE)
    before = {k: v.clone() for k, v in other.state_dict().items()}
    assert not other.init_decoder_bias_(x)
    assert all(torch.equal(before[k], v) for k, v in other.state_dict().items())


def test_burda_presets_read_0_1_pixels_and_start_at_the_mean_image():
    for name in ("vae-burda-mnist", "hvae-burda-mnist"):
        v = preset(name).model.vae
        assert v.encoder_input.value == "unit" and v.init_decoder_bias
        model = build_vae(v, (1, 28, 28), preset(name).family)
        assert model.encoder_input.value == "unit"
        assert build_objective(v, preset(name).family).init_decoder_bias
