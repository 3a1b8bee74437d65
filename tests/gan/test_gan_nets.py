"""GAN networks: one contract over every architecture (shapes, range, labels), the stage arithmetic, per-example
independence of the discriminator, label conditioning that matters, and clear errors."""

import pytest
import torch

from elbolab.gan.config import GANArchitecture, GANConfig, GANNorm
from elbolab.gan import GAN, build_gan, sample_gan
from elbolab.nn.gan_nets import (DCGANDiscriminator, DCGANGenerator, MLPDiscriminator, MLPGenerator, StretchedTanh,
                                 dcgan_stages)

CASES = [  # (architecture, data shape, classes, norm)
    (GANArchitecture.DCGAN, (1, 28, 28), 0, GANNorm.PIXEL),
    (GANArchitecture.DCGAN, (3, 32, 32), 0, GANNorm.BATCH),
    (GANArchitecture.DCGAN, (1, 28, 28), 10, GANNorm.NONE),
    (GANArchitecture.MLP, (1, 28, 28), 0, GANNorm.PIXEL),
    (GANArchitecture.MLP, (2,), 0, GANNorm.PIXEL),
    (GANArchitecture.MLP, (2,), 8, GANNorm.PIXEL),
]


def _gan(arch, shape, k, norm) -> GAN:
    torch.manual_seed(0)
    cfg = GANConfig(architecture=arch, latent_dim=16, g_channels=8, d_channels=8, hidden=32, num_classes=k, g_norm=norm)
    return build_gan(cfg, data_shape=shape)


@pytest.mark.parametrize("arch, shape, k, norm", CASES, ids=lambda c: str(getattr(c, "value", c)))
def test_contract(arch, shape, k, norm):
    model = _gan(arch, shape, k, norm).eval()
    g = torch.Generator().manual_seed(0)
    out = sample_gan(model, 5, g)
    assert out.images.shape == (5, *shape) and out.images.dtype == torch.float32
    if len(shape) == 3:
        assert out.images.abs().max() <= 1.0  # tanh output: images in [-1, 1]
    assert (out.labels is None) == (k == 0)
    if k:
        assert out.labels.shape == (5,) and int(out.labels.max()) < k
    logits = model.discriminator(out.images, out.labels)
    assert logits.shape == (5,)
    # the same generator seed gives the same samples
    again = sample_gan(model, 5, torch.Generator().manual_seed(0))
    torch.testing.assert_close(again.images, out.images)


def test_stage_arithmetic():
    assert dcgan_stages(28) == 2 and dcgan_stages(32) == 3 and dcgan_stages(64) == 3
    assert DCGANGenerator(8, 1, 28, 4).start_size == 7 and DCGANGenerator(8, 3, 32, 4).start_size == 4
    with pytest.raises(ValueError, match="image_size = 9"):
        dcgan_stages(9)


def test_discriminator_scores_each_example_independently():
    """No batch statistics in D: a logit does not depend on the rest of the batch (needed by the gradient penalty)."""
    torch.manual_seed(0)
    d = DCGANDiscriminator(1, 28, 8).train()
    x = torch.randn(6, 1, 28, 28)
    torch.testing.assert_close(d(x)[:2], d(x[:2]))
    torch.testing.assert_close(d(x)[2:3], d(x[2:3]))


def test_labels_condition_both_networks():
    torch.manual_seed(0)
    g = DCGANGenerator(8, 1, 28, 4, num_classes=3)
    d = DCGANDiscriminator(1, 28, 4, num_classes=3)
    with torch.no_grad():  # the projection head starts near zero; make it matter
        d.head.embed.weight.normal_(0, 1.0)
    z = torch.randn(4, 8)
    y0, y1 = torch.zeros(4, dtype=torch.long), torch.ones(4, dtype=torch.long)
    assert not torch.allclose(g(z, y0), g(z, y1))
    x = torch.randn(4, 1, 28, 28)
    assert not torch.allclose(d(x, y0), d(x, y1))


@pytest.mark.parametrize("call, match", [
    (lambda: DCGANGenerator(8, 1, 28, 4)(torch.randn(2, 7)), r"z must have shape \(B, 8\)"),
    (lambda: DCGANDiscriminator(1, 28, 4)(torch.randn(2, 3, 28, 28)), r"x must have shape \(B, 1, 28, 28\)"),
    (lambda: DCGANGenerator(8, 1, 28, 4, num_classes=3)(torch.randn(2, 8)), "pass labels"),
    (lambda: DCGANGenerator(8, 1, 28, 4, num_classes=3)(torch.randn(2, 8), torch.tensor([0, 3])), r"0\.\.2"),
    (lambda: DCGANGenerator(8, 1, 28, 4)(torch.randn(2, 8), torch.tensor([0, 1])), "unconditional"),
    (lambda: DCGANGenerator(8, 1, 28, 4, norm="layer"), "layer.*batch.*pixel.*none"),
    (lambda: MLPGenerator(0, (2,)), "latent_dim = 0"),
    (lambda: MLPDiscriminator((2, 0)), "data_shape"),
    (lambda: GAN(MLPGenerator(4, (2,), num_classes=2), MLPDiscriminator((2,)), 4, 2), "discriminator has num_classes"),
    (lambda: build_gan(GANConfig(), data_shape=(2,)), "mlp"),
    (lambda: StretchedTanh(0.9), r"stretch = 0\.9 must be a finite number >= 1"),
    (lambda: StretchedTanh(float("inf")), "finite"),
    (lambda: GANConfig(output_stretch=0.5).validate("model.gan"), r"model\.gan\.output_stretch = 0\.5 must be"),
    (lambda: sample_gan(_gan(*CASES[0]), 2, torch.Generator(), labels=1), "unconditional"),
    (lambda: sample_gan(_gan(*CASES[2]), 2, torch.Generator(), labels=10), "classes 0..9"),
])
def test_bad_input_is_a_clear_error(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_stretched_tanh_reaches_black_and_white_at_finite_input():
    """stretch = 1 is tanh exactly; stretch = 1.1 is 1.1 tanh inside (-atanh(1/1.1), atanh(1/1.1)) = +-1.5223, with
    slope 1.1 (1 - tanh^2) there, and exactly -1 / +1 beyond: the 8-bit background level is reachable."""
    h = torch.linspace(-4, 4, 801, dtype=torch.float64, requires_grad=True)
    assert torch.equal(StretchedTanh(1.0)(h), torch.tanh(h))
    x = StretchedTanh(1.1)(h)
    edge = float(torch.atanh(torch.tensor(1 / 1.1, dtype=torch.float64)))
    assert edge == pytest.approx(1.5223, abs=1e-4)
    inside, outside = h.abs() < edge - 1e-9, h.abs() > edge + 1e-9
    torch.testing.assert_close(x[inside], 1.1 * torch.tanh(h[inside]))
    assert torch.equal(x[outside], torch.sign(h[outside]))
    x.sum().backward()
    torch.testing.assert_close(h.grad[inside], 1.1 * (1 - torch.tanh(h[inside]) ** 2))
    assert torch.all(h.grad[inside] > 0.19) and torch.all(h.grad[outside] == 0)
    # plain tanh never rounds to the last 8-bit level before h = -3.1; the stretched one from h = -1.51 on
    to_level = lambda v: torch.round((v + 1) * 127.5)  # noqa: E731
    assert to_level(torch.tanh(torch.tensor(-3.0))) == 1 and to_level(StretchedTanh(1.1)(torch.tensor(-1.52))) == 0


@pytest.mark.parametrize("arch", [GANArchitecture.DCGAN, GANArchitecture.MLP])
def test_output_stretch_reaches_the_generators_output(arch):
    """gan.output_stretch is the generator's last layer: same weights, outputs = clamp(1.1 tanh(h)) of the plain
    generator's atanh(output) (default 1 keeps old runs' tanh)."""
    torch.manual_seed(0)
    plain = build_gan(GANConfig(architecture=arch, latent_dim=8, g_channels=4, d_channels=4, hidden=16),
                      data_shape=(1, 28, 28))
    stretched = build_gan(GANConfig(architecture=arch, latent_dim=8, g_channels=4, d_channels=4, hidden=16,
                                    output_stretch=1.1), data_shape=(1, 28, 28))
    stretched.load_state_dict(plain.state_dict())
    z = torch.randn(4, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        a, b = plain.eval()(z), stretched.eval()(z)
    torch.testing.assert_close(b, (1.1 * a).clamp(-1, 1))
