"""EMA of weights: warm-up formula, the recursion against a manual computation, swap, state round trip."""

import pytest
import torch
from torch import nn

from elbolab.train import EMA


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))


def test_warmup_decay_formula():
    ema = EMA(_model(), decay=0.999, warmup=True)
    assert ema.decay_at(0) == pytest.approx(1 / 10)
    assert ema.decay_at(1) == pytest.approx(2 / 11)
    assert ema.decay_at(8) == pytest.approx(9 / 18)
    assert ema.decay_at(10**6) == 0.999  # capped by decay
    n_cross = next(n for n in range(100000) if (1 + n) / (10 + n) >= 0.999)
    assert ema.decay_at(n_cross - 1) < 0.999 <= ema.decay_at(n_cross)
    assert EMA(_model(), decay=0.9, warmup=False).decay_at(0) == 0.9


@pytest.mark.parametrize("warmup", [True, False])
def test_ema_equals_manual_recursion(warmup):
    model = _model()
    ema = EMA(model, decay=0.95, warmup=warmup)
    manual = {n: p.detach().clone() for n, p in model.named_parameters()}
    g = torch.Generator().manual_seed(1)
    for n in range(12):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn(p.shape, generator=g))
            model[1].running_mean.add_(1.0)
        ema.update(model)
        d = min(0.95, (1 + n) / (10 + n)) if warmup else 0.95
        for name, p in model.named_parameters():
            manual[name] = d * manual[name] + (1 - d) * p.detach()
    assert ema.num_updates == 12
    for name, value in manual.items():
        torch.testing.assert_close(ema.shadow[name], value, rtol=1e-6, atol=1e-6)
    # buffers are copied, not averaged
    assert torch.equal(ema.shadow["1.running_mean"], model[1].running_mean)
    assert torch.equal(ema.shadow["1.num_batches_tracked"], model[1].num_batches_tracked)


def test_swap_and_copy_to():
    model = _model()
    ema = EMA(model, decay=0.5, warmup=False)
    raw = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(3.0)
    ema.update(model)  # shadow = 0.5 raw + 0.5 * 3 raw = 2 raw
    trained = {k: v.clone() for k, v in model.state_dict().items()}
    with ema.swap(model):
        torch.testing.assert_close(model[0].weight, 2 * raw["0.weight"])
    for k, v in model.state_dict().items():
        assert torch.equal(v, trained[k]), k
    ema.copy_to(model)
    torch.testing.assert_close(model[2].bias, 2 * raw["2.bias"])


def test_state_dict_round_trip_and_mismatch():
    model = _model()
    ema = EMA(model, decay=0.9)
    for _ in range(3):
        with torch.no_grad():
            model[0].weight.add_(1.0)
        ema.update(model)
    other = EMA(_model(), decay=0.9)
    other.load_state_dict(ema.state_dict())
    assert other.num_updates == 3
    for k in ema.shadow:
        assert torch.equal(other.shadow[k], ema.shadow[k])
    with pytest.raises(ValueError, match="does not match"):
        EMA(nn.Linear(3, 4), decay=0.9).load_state_dict(ema.state_dict())


def test_prefix_selects_a_submodule_and_bad_decay():
    class Pair(nn.Module):
        def __init__(self):
            super().__init__()
            self.gen = nn.Linear(2, 2)
            self.disc = nn.Linear(2, 1)

    ema = EMA(Pair(), decay=0.9, prefixes=("gen",))
    assert set(ema.shadow) == {"gen.weight", "gen.bias"}
    with pytest.raises(ValueError, match="decay"):
        EMA(Pair(), decay=1.0)
    with pytest.raises(ValueError, match="no parameters"):
        EMA(Pair(), decay=0.9, prefixes=("nothing",))
