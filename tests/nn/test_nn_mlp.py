"""MLPDenoiser: the network convention model(x, t, y) -> (B, D)."""

import pytest
import torch

from elbolab.nn.mlp import MLPDenoiser


def test_shapes_zero_start_and_time_dependence():
    torch.manual_seed(0)
    model = MLPDenoiser(dim=3, hidden=16, depth=2, time_dim=8)
    x, t = torch.randn(5, 3), torch.tensor([1, 2, 3, 500, 1000])
    assert torch.equal(model(x, t), torch.zeros(5, 3))  # the output layer starts at zero
    torch.nn.init.normal_(model.out.weight)
    out = model(x, t)
    assert out.shape == (5, 3) and out.dtype == torch.float32
    same_x = x[:1].expand(2, 3)
    assert not torch.allclose(*model(same_x, torch.tensor([1, 2])))  # neighbouring timesteps differ
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_class_conditioning_with_a_null_label():
    torch.manual_seed(0)
    model = MLPDenoiser(dim=2, hidden=16, depth=1, time_dim=8, num_classes=3)
    torch.nn.init.normal_(model.out.weight)
    x, t = torch.randn(4, 2), torch.full((4,), 7)
    uncond = model(x, t)
    torch.testing.assert_close(model(x, t, torch.full((4,), -1)), uncond)  # -1 is the null label
    assert not torch.allclose(model(x, t, torch.tensor([0, 1, 2, 0])), uncond)
    with pytest.raises(ValueError, match=r"labels must be in 0\.\.2 or -1"):
        model(x, t, torch.tensor([0, 1, 3, 0]))


@pytest.mark.parametrize("kwargs,match", [({"dim": 0}, "dim = 0"), ({"hidden": 2.5}, "hidden = 2.5"),
                                          ({"num_classes": -1}, "num_classes = -1")])
def test_invalid_configuration(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MLPDenoiser(**kwargs)


def test_input_validation():
    model = MLPDenoiser(dim=2, hidden=8, depth=1, time_dim=4)
    with pytest.raises(ValueError, match=r"x must have shape \(B, 2\)"):
        model(torch.zeros(3, 4), torch.ones(3, dtype=torch.long))
    with pytest.raises(ValueError, match=r"t must have shape \(3,\)"):
        model(torch.zeros(3, 2), torch.ones(2, dtype=torch.long))
