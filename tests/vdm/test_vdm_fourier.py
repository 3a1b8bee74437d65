"""Fourier features of the input z_t (VDM App. C): elbolab.nn.fourier.InputFourierFeatures."""

import math

import pytest
import torch

from elbolab.nn.fourier import InputFourierFeatures


def test_shapes_and_layout():
    ff = InputFourierFeatures()  # n = 7, 8
    z = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    out = ff(z)
    assert ff.exponents == (7, 8) and out.shape == (2, ff.out_channels(3), 4, 4) == (2, 15, 4, 4)
    assert torch.equal(out[:, :3], z)
    # channel 3 + 2c + j is sin(2^{7+j} pi z_c); 3 + 6 + 2c + j the cosine
    for c in range(3):
        for j, n in enumerate((7, 8)):
            assert torch.allclose(out[:, 3 + 2 * c + j], torch.sin(2**n * math.pi * z[:, c]), atol=1e-4)
            assert torch.allclose(out[:, 9 + 2 * c + j], torch.cos(2**n * math.pi * z[:, c]), atol=1e-4)
    flat = ff(torch.randn(5, 2))
    assert flat.shape == (5, 10)
    assert list(ff.state_dict()) == []  # nothing to save


def test_golden_values_on_the_8bit_grid():
    """At z = x_k = 2k/255 - 1 the n = 7 angle moves by 256 pi / 255 per bin: neighbouring bins differ in sign."""
    ff = InputFourierFeatures(start=7, stop=8).double()
    k = torch.arange(256, dtype=torch.float64)
    z = (2 * k / 255 - 1)[:, None]
    out = ff(z)
    assert out[17, 1].item() == pytest.approx(math.sin(128 * math.pi * (34 / 255 - 1)), abs=1e-12)
    assert out[200, 2].item() == pytest.approx(math.cos(128 * math.pi * (400 / 255 - 1)), abs=1e-12)
    c = out[:, 2]
    assert (c[1:] * c[:-1] < 0).float().mean() > 0.9


def test_empty_range_rejected():
    with pytest.raises(ValueError, match="empty"):
        InputFourierFeatures(start=8, stop=8)
