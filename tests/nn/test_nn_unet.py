"""UNet: shapes for every preset and channel count, time and class conditioning, safetensors round trip,
bf16 autocast, and clear errors for bad configurations."""

import dataclasses

import pytest
import torch
from safetensors.torch import load_file, save_file

from elbolab.config import ConfigError
from elbolab.nn.config import unet_preset
from elbolab.nn.config import TimeEmbedding, TimeInjection, UNetConfig, Upsampling
from elbolab.nn import NULL_LABEL, UNet, build_unet


def _cfg(name: str, **kw) -> UNetConfig:
    return dataclasses.replace(unet_preset(name), **kw)


def _inputs(cfg: UNetConfig, b: int = 2, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, cfg.in_channels, cfg.image_size, cfg.image_size, generator=g)
    t = torch.randint(1, 1001, (b,), generator=g)
    return x, t


SHAPE_CASES = [
    # (preset, overrides): every preset at 1 and 3 channels, and the 28 and 32 pyramids
    ("tiny", dict(in_channels=1, image_size=28)),
    ("tiny", dict(in_channels=3, image_size=28)),
    ("tiny", dict(in_channels=1, image_size=32, attention_resolutions=(16,))),
    ("tiny", dict(in_channels=3, image_size=32, attention_resolutions=(16,))),
    ("mnist", dict()),
    ("mnist", dict(in_channels=3)),
    ("mnist", dict(in_channels=3, image_size=32, attention_resolutions=(8,))),
    ("cifar", dict()),
    ("cifar", dict(in_channels=1)),
]


@pytest.mark.parametrize("name,kw", SHAPE_CASES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(SHAPE_CASES)])
def test_output_shape_every_preset_and_channel_count(name, kw):
    torch.manual_seed(0)
    cfg = _cfg(name, **kw)
    model = build_unet(cfg)
    x, t = _inputs(cfg)
    out = model(x, t)
    assert out.shape == x.shape and out.dtype == torch.float32 and torch.isfinite(out).all()


def test_learned_variance_output_channels_and_float_time():
    cfg = _cfg("tiny", in_channels=3, out_channels=6)
    x, _ = _inputs(cfg)
    assert build_unet(cfg)(x, torch.tensor([0.25, 17.5])).shape == (2, 6, 28, 28)  # float t (noise levels)


def test_pyramid_resolutions():
    """28 -> 14 -> 7 and 32 -> 16 -> 8 -> 4: attention at the configured resolutions and in the middle block."""
    for cfg, expect in [(_cfg("mnist"), {7}), (_cfg("cifar"), {16, 4}), (_cfg("mnist", attention_resolutions=(14,),
                                                                           mid_attention=False), {14})]:
        model = build_unet(cfg)
        seen = []
        hooks = [m.register_forward_hook(lambda mod, inp, out: seen.append(out.shape[-1]))
                 for m in model.modules() if type(m).__name__ == "SelfAttention"]
        model(*_inputs(cfg, b=1))
        for h in hooks:
            h.remove()
        assert set(seen) == expect
    lowest = []
    model = build_unet(_cfg("cifar", attention_resolutions=()))
    model.mid1.register_forward_hook(lambda mod, inp, out: lowest.append(out.shape[-1]))
    model(*_inputs(model.cfg, b=1))
    assert lowest == [4]


@pytest.mark.parametrize("embedding", list(TimeEmbedding))
@pytest.mark.parametrize("injection", list(TimeInjection))
def test_neighbouring_timesteps_give_different_outputs(embedding, injection):
    torch.manual_seed(0)
    cfg = _cfg("tiny", time_embedding=embedding, time_injection=injection)
    model = build_unet(cfg)
    x, _ = _inputs(cfg, b=1)
    ts = torch.tensor([1, 2, 500, 501, 999, 1000])
    out = model(x.expand(6, -1, -1, -1), ts)
    for i in range(0, 6, 2):
        assert (out[i] - out[i + 1]).abs().max() > 1e-4


def test_class_conditioning_and_null_class():
    torch.manual_seed(0)
    cfg = _cfg("tiny", num_classes=10)
    model = build_unet(cfg)
    x, t = _inputs(cfg, b=3)
    uncond = model(x, t)  # y = None: the learned null class
    torch.testing.assert_close(model(x, t, torch.full((3,), NULL_LABEL)), uncond, rtol=0, atol=0)
    torch.testing.assert_close(model(x, t, torch.full((3,), 10)), uncond, rtol=0, atol=0)
    c0, c1 = model(x, t, torch.zeros(3, dtype=torch.long)), model(x, t, torch.ones(3, dtype=torch.long))
    assert (c0 - c1).abs().max() > 1e-4 and (c0 - uncond).abs().max() > 1e-4
    mixed = model(x, t, torch.tensor([0, -1, 1]))  # per-sample: row 1 is unconditional
    torch.testing.assert_close(mixed[0], c0[0])
    torch.testing.assert_close(mixed[1], uncond[1])
    torch.testing.assert_close(mixed[2], c1[2])
    mixed.sum().backward()
    assert model.label_embed.weight.grad[[0, 1, 10]].abs().sum(1).min() > 0  # classes 0, 1 and null learn


def test_label_errors():
    x, t = _inputs(_cfg("tiny"))
    with pytest.raises(ValueError, match="num_classes = 0"):
        build_unet(_cfg("tiny"))(x, t, torch.tensor([0, 1]))
    model = build_unet(_cfg("tiny", num_classes=3))
    with pytest.raises(ValueError, match=r"\[0, 4\].*0\.\.2"):
        model(x, t, torch.tensor([0, 4]))
    with pytest.raises(ValueError, match="-2"):
        model(x, t, torch.tensor([-2, 0]))
    with pytest.raises(ValueError, match="integer"):
        model(x, t, torch.tensor([0.0, 1.0]))


def test_every_parameter_receives_a_gradient():
    torch.manual_seed(0)
    cfg = _cfg("tiny", num_classes=2, upsampling=Upsampling.TRANSPOSED)
    model = build_unet(cfg)
    x, t = _inputs(cfg, b=3)
    model(x, t, torch.tensor([0, 1, -1])).square().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not missing


@pytest.mark.parametrize("kw", [dict(), dict(time_embedding="fourier", time_injection="add", num_classes=4,
                                             upsampling="nearest", dropout=0.1)])
def test_safetensors_round_trip_gives_identical_outputs(tmp_path, kw):
    torch.manual_seed(0)
    cfg = _cfg("tiny", **kw)
    model = build_unet(cfg).eval()
    path = tmp_path / "model.safetensors"
    save_file(model.state_dict(), str(path))
    torch.manual_seed(1)  # a different initialisation, then overwritten by the file
    clone = build_unet(cfg).eval()
    missing, unexpected = clone.load_state_dict(load_file(str(path)), strict=True)
    assert not missing and not unexpected
    x, t = _inputs(cfg, b=3)
    y = torch.tensor([0, 3, -1]) if cfg.num_classes else None
    assert torch.equal(model(x, t, y), clone(x, t, y))


def test_bf16_autocast_close_to_fp32():
    torch.manual_seed(0)
    cfg = _cfg("mnist")
    model = build_unet(cfg)
    x, t = _inputs(cfg, b=4)
    ref = model(x, t)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x, t)
    assert out.dtype == torch.bfloat16
    err = (out.float() - ref).abs()
    assert err.max() < 0.1 * ref.abs().max() and err.mean() < 0.02 * ref.abs().mean() + 1e-3


def test_level_res_blocks_sets_the_depth_of_each_level():
    """``level_res_blocks = (1, 1, 3)``: 1 + 1 + 3 ResBlocks down and 2 + 2 + 4 up (one more per level), the
    output shape unchanged, and ``(2, 2, 2)`` builds the same network as ``num_res_blocks = 2``."""
    def blocks_at(model, res):
        seen = []
        hooks = [b.register_forward_hook(lambda mod, inp, out: seen.append(out.shape[-1]))
                 for b in list(model.down) + list(model.up) if type(b).__name__ == "ResAttnBlock"]
        model(*_inputs(model.cfg, b=1))
        for h in hooks:
            h.remove()
        return sum(1 for s in seen if s == res)

    lean = build_unet(_cfg("mnist", level_res_blocks=(1, 1, 3)))
    assert [blocks_at(lean, r) for r in (28, 14, 7)] == [1 + 2, 1 + 2, 3 + 4]
    x, t = _inputs(lean.cfg)
    assert lean(x, t).shape == x.shape
    torch.manual_seed(0)
    a = build_unet(_cfg("mnist", level_res_blocks=()))
    torch.manual_seed(0)
    b = build_unet(_cfg("mnist", level_res_blocks=(2, 2, 2)))
    assert torch.equal(a(x, t), b(x, t))


def test_the_demo_preset_uses_the_benchmarked_mnist_unet():
    """benchmarks/train_speed.py measures unet_preset("mnist"): it must be the demo's network (the demo adds a
    10-class label embedding, a table lookup of ~1.4 k parameters)."""
    import dataclasses

    from elbolab.config import preset

    demo = preset("ddpm-mnist").model.unet
    assert demo.num_classes == 10
    assert dataclasses.replace(demo, num_classes=0) == unet_preset("mnist")


def test_mnist_preset_matches_diffusers_parameter_count():
    """The benchmark compares against diffusers' UNet2DModel(32, 64, 64) at the same size (+-10%)."""
    diffusers = pytest.importorskip("diffusers")
    ref = diffusers.UNet2DModel(
        sample_size=28, in_channels=1, out_channels=1, block_out_channels=(32, 64, 64), layers_per_block=2,
        down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D", "UpBlock2D"))
    n_ref = sum(p.numel() for p in ref.parameters())
    n = sum(p.numel() for p in build_unet(unet_preset("mnist")).parameters())
    assert abs(n / n_ref - 1) <= 0.10, (n, n_ref)


@pytest.mark.parametrize("kw,needle", [
    (dict(image_size=30), "image_size = 30"),
    (dict(attention_resolutions=(5,)), "contains 5"),
    (dict(groups=5), "groups = 5"),
    (dict(head_dim=24), "head_dim = 24"),
    (dict(level_res_blocks=(1, 2)), r"level_res_blocks = \[1, 2\]: need one positive integer per level"),
    (dict(level_res_blocks=(1, 0, 2)), r"level_res_blocks = \[1, 0, 2\]"),
])
def test_bad_config_is_a_clear_value_error(kw, needle):
    with pytest.raises(ValueError, match=needle):
        build_unet(_cfg("mnist", **kw))


def test_bad_enum_and_inputs():
    with pytest.raises(ConfigError, match="'bicubic'"):
        UNet(_cfg("tiny", upsampling="bicubic"))
    model = build_unet(_cfg("tiny"))
    with pytest.raises(ValueError, match=r"\(B, 1, 28, 28\)"):
        model(torch.randn(2, 3, 28, 28), torch.tensor([1, 2]))
    with pytest.raises(ValueError, match=r"t must have shape \(2,\)"):
        model(torch.randn(2, 1, 28, 28), torch.tensor([1, 2, 3]))
