"""The ``pixelcnn`` family through the registry's interface: data adaptation, model and objective, the sampler
table, exact bits/dim from ``bound_fn`` (== the library's log-likelihood), and errors."""

import pytest
import torch

import elbolab.families.pixelcnn  # noqa: F401  (registers the family)
from elbolab.autoregressive import GatedPixelCNN, bits_per_dim
from elbolab.config import RunConfig
from elbolab.families import get_family
from elbolab.families.base import SampleRequest


def _cfg() -> RunConfig:
    cfg = RunConfig(family="pixelcnn")
    p = cfg.model.pixelcnn
    p.channels, p.num_layers, p.kernel_size = 4, 1, 3
    return cfg


def test_family_builds_trains_samples_and_scores():
    fam = get_family("pixelcnn")
    assert fam.capabilities.exact_likelihood and fam.capabilities.sample
    cfg = fam.adapt_to_data(_cfg(), (1, 6, 6), 10)
    assert fam.image_shape(cfg) == (1, 6, 6)
    torch.manual_seed(0)
    model = fam.build_model(cfg)
    assert isinstance(model, GatedPixelCNN)
    x = torch.rand(3, 1, 6, 6) * 2 - 1
    out = fam.build_objective(cfg).loss(model, x, torch.tensor([1, 2, 3]), torch.Generator())  # labels dropped
    assert out.loss.item() == pytest.approx(out.metrics["bpd"] * 0.6931471805599453, rel=1e-5)
    batch = fam.sample(cfg, model, 2, torch.Generator().manual_seed(0), SampleRequest(n=2))
    assert batch.images.shape == (2, 1, 6, 6) and batch.nfe == 36 and batch.method == "ancestral"
    assert batch.images.min() >= -1 and batch.images.max() <= 1
    terms = fam.bound_fn(cfg, model, exact=True)(x, torch.Generator())
    assert set(terms) == {"nll"} and torch.allclose(terms["nll"], bits_per_dim(model, x))
    with pytest.raises(ValueError, match="guidance"):
        fam.sample(cfg, model, 2, torch.Generator(), SampleRequest(n=2, guidance=1.0))
    with pytest.raises(ValueError, match="not a sampler"):
        fam.sample(cfg, model, 2, torch.Generator(), SampleRequest(n=2, sampler="ddim"))
