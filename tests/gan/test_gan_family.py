"""The GAN family: data shape from the data (28x28 grey, 32x32 RGB), no likelihood bound, one-pass samples."""

import pytest
import torch

from elbolab.config import apply_overrides, preset
from elbolab.families import SampleRequest, get_family


def test_adapts_builds_and_samples_32x32_rgb():
    spec = get_family("gan")
    cfg = apply_overrides(preset("gan-mnist"), ["gan.g_channels=4", "gan.d_channels=4", "gan.num_classes=10"])
    cfg = spec.adapt_to_data(cfg, (3, 32, 32), 10)
    assert (cfg.model.gan.in_channels, cfg.model.gan.image_size) == (3, 32)
    model = spec.build_model(cfg).eval()
    batch = spec.sample(cfg, model, 3, torch.Generator().manual_seed(0), SampleRequest(n=3, label=7))
    assert batch.images.shape == (3, 3, 32, 32) and batch.nfe == 1 and batch.labels.tolist() == [7, 7, 7]
    assert spec.bpd_method is None and spec.bound_fn(cfg, model, exact=True) is None  # no likelihood


@pytest.mark.parametrize("shape, classes, request_kw, match", [
    ((1, 28, 32), 0, {}, "square"),
    ((1, 28, 28), 0, {"label": 1}, "unconditional"),
    ((1, 28, 28), 0, {"guidance": 2.0}, "guidance"),
    ((1, 28, 28), 0, {"options": {"steps": 10}}, "has no option 'steps'"),
])
def test_clear_errors(shape, classes, request_kw, match):
    spec = get_family("gan")
    cfg = apply_overrides(preset("gan-mnist"), ["gan.g_channels=4", "gan.d_channels=4"])
    with pytest.raises(ValueError, match=match):
        cfg = spec.adapt_to_data(cfg, shape, classes)
        spec.sample(cfg, spec.build_model(cfg), 2, torch.Generator(), SampleRequest(n=2, **request_kw))
    with pytest.raises(ValueError, match="gan.num_classes = 10"):
        spec.adapt_to_data(apply_overrides(cfg, ["gan.num_classes=10"]), (1, 28, 28), 0)
