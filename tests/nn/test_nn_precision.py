"""Inference precision wrapper: bf16 autocast forward, float32 out, close to the float32 network."""

import pytest
import torch

from elbolab.config import ConfigError, Precision
from elbolab.nn.config import unet_preset
from elbolab.diffusion import GaussianDiffusion, NoiseSchedule, samplers
from elbolab.nn import build_unet
from elbolab.nn.precision import AutocastModel, with_precision


def _net() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_unet(unet_preset("tiny")).eval()


def test_fp32_is_the_model_itself_and_bad_values_are_named():
    net = _net()
    assert with_precision(net, Precision.FP32) is net
    assert with_precision(net, "fp32") is net
    with pytest.raises(ConfigError, match="fp16"):
        with_precision(net, "fp16")


@pytest.fixture(autouse=True)
def _bf16_even_when_emulated(monkeypatch):
    """These tests check the bf16 path itself, also on a CPU where it is emulated."""
    monkeypatch.setenv("ELBOLAB_BF16", "force")


def test_bf16_without_native_support_runs_float32(monkeypatch, caplog):
    import elbolab.nn.precision as P

    monkeypatch.delenv("ELBOLAB_BF16")
    monkeypatch.setattr(P, "native_bf16", lambda device: False)
    net = _net()
    with caplog.at_level("WARNING"):
        assert with_precision(net, "bf16") is net
        assert P.effective_precision("bf16", "cpu") is Precision.FP32
    monkeypatch.setattr(P, "native_bf16", lambda device: True)
    assert isinstance(with_precision(net, "bf16"), AutocastModel)
    assert P.effective_precision("fp32", "cpu") is Precision.FP32


def test_bf16_output_is_float32_and_close_to_fp32():
    net = _net()
    wrapped = with_precision(net, "bf16")
    assert isinstance(wrapped, AutocastModel)
    x = torch.randn(4, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([1, 10, 50, 100])
    with torch.no_grad():
        ref, out = net(x, t), wrapped(x, t)
    assert out.dtype == torch.float32
    assert not torch.equal(out, ref)  # the forward really ran in bf16
    rel = (out - ref).norm() / ref.norm()
    assert rel < 0.05, rel


def test_bf16_ddim_samples_track_fp32_and_keep_nfe_per_call():
    net = _net()
    net.nfe_per_call = 2  # as a guided model would report
    wrapped = with_precision(net, "bf16")
    assert wrapped.nfe_per_call == 2
    d = GaussianDiffusion(NoiseSchedule.linear(100, 1e-3, 0.2))
    kw = dict(steps=10, generator=torch.Generator().manual_seed(0))
    a = samplers.ddim(net, (3, 1, 28, 28), d, **kw)
    kw["generator"] = torch.Generator().manual_seed(0)
    b = samplers.ddim(wrapped, (3, 1, 28, 28), d, **kw)
    assert b.sample.dtype == torch.float32 and b.nfe == a.nfe == 20
    # an untrained net's samples are large (|x| ~ 100): compare relative to their size
    rel = (a.sample - b.sample).norm() / a.sample.norm()
    assert 0 < rel < 0.02, rel
