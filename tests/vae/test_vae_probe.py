"""Linear probe on frozen features: separable classes are found, random labels are not, errors are clear."""

import pytest
import torch

from elbolab.vae.config import VAEKind
from elbolab.vae.config import VAEConfig
from elbolab.vae import build_vae, extract_features, linear_probe


def _blobs(n, g, sep):
    y = torch.randint(0, 3, (n,), generator=g)
    centres = torch.tensor([[0.0, 0.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0]]) * sep
    return centres[y] + torch.randn(n, 4, generator=g), y


@pytest.mark.slow
def test_probe_separates_linearly_separable_classes():
    g = torch.Generator().manual_seed(0)
    (ftr, ytr), (fte, yte) = _blobs(600, g, 8.0), _blobs(300, g, 8.0)
    res = linear_probe(ftr, ytr, fte, yte)
    assert res.num_classes == 3 and res.num_features == 4 and res.num_train == 600 and res.num_test == 300
    assert res.train_accuracy > 0.97 and res.test_accuracy > 0.97
    # overlapping classes: accuracy near the Bayes rate, well below 1, above chance
    (ftr, ytr), (fte, yte) = _blobs(600, g, 1.0), _blobs(2000, g, 1.0)
    mid = linear_probe(ftr, ytr, fte, yte)
    assert 0.4 < mid.test_accuracy < 0.75
    # random labels: the test accuracy is chance
    rnd = linear_probe(ftr, torch.randint(0, 3, (600,), generator=g), fte, torch.randint(0, 3, (2000,), generator=g))
    assert abs(rnd.test_accuracy - 1 / 3) < 0.06
    assert linear_probe(ftr, ytr, fte, yte).to_dict() == mid.to_dict()  # deterministic


def test_extract_features_from_a_vae():
    model = build_vae(VAEConfig(latent_dims=(5,), hidden_sizes=(8,)), (1, 8, 8), VAEKind.VAE)
    data = [(torch.rand(4, 1, 8, 8) * 2 - 1, torch.arange(4)), (torch.rand(3, 1, 8, 8) * 2 - 1, torch.arange(3))]
    f, y = extract_features(model, data)
    assert f.shape == (7, 5) and y.tolist() == [0, 1, 2, 3, 0, 1, 2]
    torch.testing.assert_close(f[:4], model.posterior(data[0][0]).mu.detach())
    with pytest.raises(ValueError, match="labels"):
        extract_features(model, [torch.zeros(2, 1, 8, 8)])


def test_probe_errors():
    f, y = torch.zeros(5, 3), torch.tensor([0, 1, 0, 1, 1])
    with pytest.raises(ValueError, match="equal F"):
        linear_probe(f, y, torch.zeros(5, 2), y)
    with pytest.raises(ValueError, match="labels"):
        linear_probe(f, y[:4], f, y)
    with pytest.raises(ValueError, match="0..1"):
        linear_probe(f, y, f, torch.tensor([0, 1, 2, 0, 1]), num_classes=2)
