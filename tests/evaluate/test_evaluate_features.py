"""The feature CNN: shapes, augmentation, deterministic training, and the safetensors + JSON card round trip."""

import json

import pytest
import torch

from elbolab.config import Precision
from elbolab.evaluate.features import FeatureNet, FeatureNetConfig, WeightsHashError, load_feature_network, weights_paths
from elbolab.evaluate.train_features import (FeatureTrainConfig, augment, default_recipe, save_feature_network,
                                             train_feature_network)


def test_feature_net_shapes_and_input_check():
    net = FeatureNet().eval()
    out = net.forward_features(torch.rand(3, 1, 28, 28) * 2 - 1)
    assert out.features.shape == (3, 128) and out.logits.shape == (3, 10)
    assert (out.features >= 0).all()  # after ReLU
    with pytest.raises(ValueError, match=r"expected \(B, 1, H, W\)"):
        net(torch.zeros(3, 3, 28, 28))
    with pytest.raises(ValueError, match="widths"):
        FeatureNet(FeatureNetConfig(widths=(8, 16)))


def test_augment_is_a_translation_with_background_fill_and_optional_flip():
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(16, 1, 6, 6, generator=gen) * 2 - 1
    y = augment(x, max_shift=2, hflip=False, generator=gen)
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2), value=-1.0)
    for i in range(16):
        crops = [padded[i, :, dy:dy + 6, dx:dx + 6] for dy in range(5) for dx in range(5)]
        assert any(torch.equal(y[i], c) for c in crops)
    z = augment(x, max_shift=0, hflip=True, generator=gen)
    assert all(torch.equal(z[i], x[i]) or torch.equal(z[i], x[i].flip(2)) for i in range(16))
    assert not torch.equal(z, x)


def _tiny_task():
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(96, 1, 28, 28, generator=gen) * 2 - 1
    y = torch.randint(0, 10, (96,), generator=gen)
    return x, y


def test_training_is_deterministic_for_a_fixed_seed(tmp_path):
    x, y = _tiny_task()
    cfg = FeatureTrainConfig(epochs=1, batch_size=32, precision=Precision.FP32,
                             arch=FeatureNetConfig(widths=(4, 8, 8), feature_dim=8))
    a = train_feature_network(x, y, x[:32], y[:32], cfg)
    b = train_feature_network(x, y, x[:32], y[:32], cfg)
    for (k, va), vb in zip(a.net.state_dict().items(), b.net.state_dict().values()):
        assert torch.equal(va, vb), k
    assert a.history[0]["train_loss"] == b.history[0]["train_loss"]
    c = train_feature_network(x, y, x[:32], y[:32], FeatureTrainConfig(**{**cfg.__dict__, "seed": 1}))
    assert not torch.equal(c.net.classifier.weight, a.net.classifier.weight)

    # save + load round trip through the SHA-256-checked card
    st, card_path = save_feature_network(a, "mnist", cfg, {"dataset": "random"}, tmp_path)
    card = json.loads(card_path.read_text())
    assert card["architecture"]["widths"] == [4, 8, 8] and card["recipe"]["precision"] == "fp32"
    loaded = load_feature_network("mnist", tmp_path, use_cache=False)
    assert loaded.sha256 == card["sha256"]
    out = loaded(x[:5])
    assert out.features.dtype == torch.float64
    torch.testing.assert_close(out.logits.float(), a.net.eval()(x[:5]))
    card["sha256"] = "0" * 64
    card_path.write_text(json.dumps(card))
    with pytest.raises(WeightsHashError):
        load_feature_network("mnist", tmp_path, use_cache=False)


def test_recipes_and_weight_paths():
    assert default_recipe("fashion-mnist").hflip and not default_recipe("mnist").hflip
    st, card = weights_paths("mnist-embedded")
    assert st.name == "mnist_features.safetensors" and card.name == "mnist_features.json"
    with pytest.raises(ValueError, match="choices: mnist, fashion-mnist"):
        weights_paths("svhn")
