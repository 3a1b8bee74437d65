"""nn.layers: time embeddings (closed form), adaptive group norm, ResBlock, SDPA attention, resampling."""

import math

import pytest
import torch
import torch.nn.functional as F

from elbolab.nn.layers import (
    Downsample,
    FourierFeatures,
    ResBlock,
    SelfAttention,
    SinusoidalEmbedding,
    Upsample,
    adaptive_group_norm,
    sinusoidal_embedding,
)


def test_sinusoidal_embedding_closed_form():
    t = torch.tensor([0, 1, 7, 1000])
    dim = 6
    emb = sinusoidal_embedding(t, dim)
    assert emb.shape == (4, dim) and emb.dtype == torch.float32
    for b, tb in enumerate(t.tolist()):
        for i in range(3):
            w = 10000.0 ** (-i / 3)
            assert emb[b, i].item() == pytest.approx(math.sin(tb * w), abs=1e-4)
            assert emb[b, 3 + i].item() == pytest.approx(math.cos(tb * w), abs=1e-4)
    odd = sinusoidal_embedding(t, 7)
    assert odd.shape == (4, 7) and torch.equal(odd[:, 6], torch.zeros(4))
    assert torch.equal(SinusoidalEmbedding(dim)(t), emb)


@pytest.mark.parametrize("embed", [lambda t: sinusoidal_embedding(t, 32), FourierFeatures(32)],
                         ids=["sinusoidal", "fourier"])
def test_time_embeddings_distinguish_neighbouring_timesteps(embed):
    t = torch.arange(1, 1001)
    e = embed(t)
    gaps = (e[1:] - e[:-1]).norm(dim=1)  # t and t + 1 for every t in 1..999
    assert gaps.min() > 0.05
    assert torch.isfinite(e).all()


def test_time_embedding_bad_input():
    with pytest.raises(ValueError, match="dim = 0"):
        sinusoidal_embedding(torch.tensor([1]), 0)
    with pytest.raises(ValueError, match=r"shape \(B,\)"):
        sinusoidal_embedding(torch.ones(2, 2), 8)
    with pytest.raises(ValueError, match="dim = 7"):
        FourierFeatures(7)


def test_adaptive_group_norm_equals_groupnorm_then_modulation():
    torch.manual_seed(0)
    h = torch.randn(3, 8, 5, 4, dtype=torch.float64) * 2 + 1
    cond = torch.randn(3, 16, dtype=torch.float64)
    ref = F.group_norm(h, 4) * (1 + cond[:, :8, None, None]) + cond[:, 8:, None, None]
    torch.testing.assert_close(adaptive_group_norm(h, 4, cond), ref)
    h.requires_grad_()
    cond.requires_grad_()
    assert torch.autograd.gradcheck(lambda a, c: adaptive_group_norm(a, 4, c), (h, cond))


def test_adaptive_group_norm_bf16_close_to_fp32():
    torch.manual_seed(0)
    h, cond = torch.randn(2, 16, 6, 6), torch.randn(2, 32) * 0.1
    out = adaptive_group_norm(h.bfloat16(), 4, cond)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), adaptive_group_norm(h, 4, cond), atol=0.05, rtol=0.02)


@pytest.mark.parametrize("scale_shift", [True, False])
def test_resblock_shapes_and_conditioning(scale_shift):
    torch.manual_seed(0)
    block = ResBlock(8, 16, groups=4, scale_shift=scale_shift)
    assert block.cond_channels == (32 if scale_shift else 16)
    x = torch.randn(2, 8, 6, 6)
    c = torch.randn(2, block.cond_channels)
    out = block(x, c)
    assert out.shape == (2, 16, 6, 6)
    assert not torch.allclose(out, block(x, c + 0.5))  # the conditioning enters
    with torch.no_grad():  # the in-place fast path without autograd computes the same
        torch.testing.assert_close(block(x, c), out)


def _reference_attention(m: SelfAttention, x: torch.Tensor) -> torch.Tensor:
    """Explicit softmax(q k^T / sqrt(d)) v per head."""
    B, C, H, W = x.shape
    tokens = m.norm(x).flatten(2).transpose(1, 2)
    q, k, v = m.qkv(tokens).chunk(3, dim=-1)
    d = C // m.heads
    outs = []
    for h in range(m.heads):
        sl = slice(h * d, (h + 1) * d)
        a = torch.softmax(q[..., sl] @ k[..., sl].transpose(1, 2) / math.sqrt(d), dim=-1)
        outs.append(a @ v[..., sl])
    return x + m.proj(torch.cat(outs, dim=-1)).transpose(1, 2).reshape(B, C, H, W)


@pytest.mark.parametrize("head_dim", [8, 16])
def test_self_attention_matches_explicit_softmax(head_dim):
    torch.manual_seed(0)
    m = SelfAttention(16, head_dim=head_dim, groups=4)
    x = torch.randn(2, 16, 5, 3)
    torch.testing.assert_close(m(x), _reference_attention(m, x), atol=1e-5, rtol=1e-5)


def test_self_attention_fp32_inside_autocast():
    torch.manual_seed(0)
    x = torch.randn(2, 16, 7, 7)
    m32 = SelfAttention(16, head_dim=8, groups=4, fp32=True)
    m16 = SelfAttention(16, head_dim=8, groups=4, fp32=False)
    m16.load_state_dict(m32.state_dict())
    ref = m32(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        a, b = m32(x), m16(x)
    for out in (a, b):
        torch.testing.assert_close(out.float(), ref, atol=0.1, rtol=0.05)
    with pytest.raises(ValueError, match="head_dim = 5"):
        SelfAttention(16, head_dim=5, groups=4)


@pytest.mark.parametrize("mode,out_ch", [("conv", 8), ("conv", 4), ("transposed", 4), ("nearest", 8)])
def test_resampling_shapes(mode, out_ch):
    x = torch.randn(2, 8, 7, 7)
    assert Upsample(8, mode, out_ch)(x).shape == (2, out_ch, 14, 14)
    assert Downsample(8)(torch.randn(2, 8, 14, 14)).shape == (2, 8, 7, 7)
    assert Downsample(8)(torch.randn(2, 8, 28, 28)).shape == (2, 8, 14, 14)


def test_resampling_bad_mode():
    with pytest.raises(ValueError, match="'bilinear'"):
        Upsample(8, "bilinear")
    with pytest.raises(ValueError, match="out_channels = 4"):
        Upsample(8, "nearest", 4)
