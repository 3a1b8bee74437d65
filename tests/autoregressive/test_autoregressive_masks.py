"""The masks of the gated PixelCNN: an output sees exactly its past (gradient oracles over every sub-pixel).

Order: raster over pixels, then channels inside a pixel. For a network of n gated layers with kernel half
width h = k // 2, the output at (r, q, c) depends on exactly the rows [r - n h, r - 1] x columns
[q - n h, q + n h] (every channel; this includes the pixel directly above-right: no blind spot), the
pixels (r, q - n h .. q - 1) of its own row, and the channels < c of its own pixel.
"""

import itertools

import pytest
import torch

from elbolab.autoregressive import GatedPixelCNN, PixelCNNConfig
from elbolab.nn.masked import MaskedConv2d, centre_mask, channel_groups, horizontal_mask, vertical_mask


def dependence(model: GatedPixelCNN, size: int, batch: int = 16, seed: int = 0) -> torch.Tensor:
    """S[o, i] = sum_b |d (w . params[b, :, o]) / d x[b, i]| over sub-pixels o, i as (C, H, W) indices,
    with random weights w over the parameters: exactly 0 when o does not depend on i (16 random inputs, so
    that no ReLU of the head is dead for all of them)."""
    g = torch.Generator().manual_seed(seed)
    c = model.in_channels
    x = (torch.rand(batch, c, size, size, generator=g, dtype=torch.float64) * 2 - 1).requires_grad_(True)
    params = model(x)  # (B, P, C, H, W)
    w = torch.randn(params.shape[:2], generator=g, dtype=torch.float64)
    out = torch.zeros(c, size, size, c, size, size, dtype=torch.float64)
    for ch, r, q in itertools.product(range(c), range(size), range(size)):
        (grad,) = torch.autograd.grad((params[:, :, ch, r, q] * w).sum(), x, retain_graph=True)
        out[ch, r, q] = grad.abs().sum(0)
    return out


def expected_dependence(c: int, size: int, n: int, h: int) -> torch.Tensor:
    """The exact receptive field of the module docstring, as a bool tensor shaped like :func:`dependence`."""
    e = torch.zeros(c, size, size, c, size, size, dtype=torch.bool)
    for ch, r, q in itertools.product(range(c), range(size), range(size)):
        for r2, q2 in itertools.product(range(size), range(size)):
            above = r - n * h <= r2 <= r - 1 and q - n * h <= q2 <= q + n * h
            left = r2 == r and q - n * h <= q2 <= q - 1
            if above or left:
                e[ch, r, q, :, r2, q2] = True
        e[ch, r, q, :ch, r, q] = True
    return e


def model_of(c: int, channels: int, layers: int, k: int, **kw) -> GatedPixelCNN:
    torch.manual_seed(1)
    cfg = PixelCNNConfig(in_channels=c, image_size=6, channels=channels, num_layers=layers, kernel_size=k,
                         num_levels=4, **kw)
    model = GatedPixelCNN(cfg).double()
    with torch.no_grad():  # larger weights than the default init: features vary more with the input, so a
        for p in model.parameters():  # head ReLU is rarely off for every input (which would hide a path)
            p.mul_(2.0)
    return model


@pytest.mark.parametrize("c,layers,k", [(1, 0, 3), (1, 1, 3), (1, 1, 5), (3, 1, 3), (2, 2, 3)])
def test_receptive_field_is_exactly_the_past_within_reach(c, layers, k):
    """Zero gradient from every sub-pixel >= o, non-zero from every sub-pixel < o within the receptive field."""
    size = 6
    s = dependence(model_of(c, 12, layers, k), size)
    e = expected_dependence(c, size, layers + 1, k // 2)
    assert bool((s[~e] == 0).all()), "an output depends on a sub-pixel it must not see"
    assert bool((s[e] > 0).all()), "an output is blind to a sub-pixel of its receptive field"


@pytest.mark.parametrize("output", ["softmax", "logistic_mixture"])
def test_a_deep_enough_model_sees_the_whole_past_and_no_future(output):
    """4 gated layers of k = 3 on 4x4 images reach every earlier sub-pixel, incl. (0, 3) from (3, 0)."""
    size, c = 4, 2
    model = model_of(c, 8, 3, 3, output=output, num_mixtures=2)
    s = dependence(model, size)
    order = lambda ch, r, q: (r * size + q) * c + ch  # noqa: E731
    for o in itertools.product(range(c), range(size), range(size)):
        for i in itertools.product(range(c), range(size), range(size)):
            if order(*i) < order(*o):
                assert s[o + i] > 0, f"output {o} does not see input {i}"
            else:
                assert s[o + i] == 0, f"output {o} sees input {i}"


def test_class_conditioning_keeps_causality():
    torch.manual_seed(0)
    model = GatedPixelCNN(PixelCNNConfig(in_channels=1, image_size=4, channels=4, num_layers=1, kernel_size=3,
                                         num_classes=3, num_levels=4)).double()
    x = (torch.rand(2, 1, 4, 4, dtype=torch.float64) * 2 - 1).requires_grad_(True)
    y = torch.tensor([0, 2])
    params = model(x, y)
    (grad,) = torch.autograd.grad(params[:, :, 0, 2, 1].sum(), x)
    assert bool((grad[:, 0, 2, 1:] == 0).all()) and bool((grad[:, 0, 3:] == 0).all())
    # the label changes the output at the very first pixel, which sees no data at all
    a = model(x, torch.tensor([0, 0]))[:, :, 0, 0, 0]
    b = model(x, torch.tensor([1, 1]))[:, :, 0, 0, 0]
    assert not torch.allclose(a, b)


def test_mask_helpers():
    assert channel_groups(6, 3).tolist() == [0, 1, 2, 0, 1, 2]
    with pytest.raises(ValueError, match="multiple"):
        channel_groups(5, 3)
    a = centre_mask(3, 6, 3, "A")
    b = centre_mask(3, 6, 3, "B")
    assert a[0].tolist() == [0, 0, 0] and a[2].tolist() == [1, 1, 0]  # out group 0 sees nothing, 2 sees 0, 1
    assert b[0].tolist() == [1, 0, 0] and b[5].tolist() == [1, 1, 1]
    v = vertical_mask(1, 1, 3, "A")[0, 0]
    assert v.tolist() == [[1, 1, 1], [0, 0, 0], [0, 0, 0]]
    assert vertical_mask(1, 1, 3, "B")[0, 0].tolist() == [[1, 1, 1], [1, 1, 1], [0, 0, 0]]
    assert horizontal_mask(1, 1, 5, 1, "A")[0, 0].tolist() == [[1, 1, 0, 0, 0]]
    assert horizontal_mask(1, 1, 5, 1, "B")[0, 0].tolist() == [[1, 1, 1, 0, 0]]
    assert horizontal_mask(2, 4, 1, 2, "A")[:, :, 0, 0].tolist() == [[0, 0], [1, 0], [0, 0], [1, 0]]
    with pytest.raises(ValueError, match="choices"):
        centre_mask(1, 1, 1, "C")
    with pytest.raises(ValueError, match="odd"):
        vertical_mask(1, 1, 4, "A")


def test_masked_weights_stay_masked_after_an_update():
    """The mask multiplies the weight at every call: an optimiser step on masked taps changes nothing."""
    conv = MaskedConv2d.vertical(1, 2, 3, "A")
    opt = torch.optim.SGD(conv.parameters(), lr=1.0)
    x = torch.randn(1, 1, 5, 5)
    conv(x).square().sum().backward()
    assert bool((conv.weight.grad[:, :, 1:] == 0).all())  # the pixel's own row and below get no gradient
    opt.step()
    y = x.clone()
    y[:, :, 2:] = torch.randn(1, 1, 3, 5)  # change the centre row and below
    assert torch.allclose(conv(x)[:, :, 2], conv(y)[:, :, 2])
    assert "mask" not in conv.state_dict()
