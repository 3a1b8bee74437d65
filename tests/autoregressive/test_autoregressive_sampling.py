"""Sub-pixel-by-sub-pixel sampling reproduces the model's own distribution (a frequency test against the
exact probabilities of every image of a small world), is reproducible from the generator, and is timed."""

import itertools

import pytest
import torch

from elbolab.autoregressive import GatedPixelCNN, PixelCNNConfig, from_levels, log_likelihood, sample


def tiny(c=1, levels=2, output="softmax", classes=0) -> GatedPixelCNN:
    torch.manual_seed(0)
    cfg = PixelCNNConfig(in_channels=c, image_size=2, channels=2 * c, num_layers=1, kernel_size=3,
                         num_classes=classes, output=output, num_levels=levels, num_mixtures=2)
    model = GatedPixelCNN(cfg).double()
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(3.0)
    return model


def chi_square(model: GatedPixelCNN, levels: int, n: int, label=None, seed=0) -> tuple[float, int]:
    """Pearson's statistic of n samples against the exact p(x) over the 2x2 one-channel world, and its df."""
    codes = torch.tensor(list(itertools.product(range(levels), repeat=4)))
    x = from_levels(codes, levels, torch.float64).view(-1, 1, 2, 2)
    y = None if label is None else torch.full((x.shape[0],), label)
    with torch.no_grad():
        p = log_likelihood(model, x, y).exp()
    out = sample(model, n, (1, 2, 2), torch.Generator().manual_seed(seed), label=label)
    index = (out.levels.view(n, 4) * (levels ** torch.arange(3, -1, -1))).sum(1)
    counts = torch.bincount(index, minlength=levels ** 4).double()
    expected = n * p
    return float(((counts - expected) ** 2 / expected).sum()), levels ** 4 - 1


@pytest.mark.parametrize("output,levels", [("softmax", 2), ("logistic_mixture", 3)])
def test_sample_frequencies_match_the_exact_probabilities(output, levels):
    """Pearson chi-square of 20000 draws over the 16 (81) images: below the 0.999 quantile (df 15: 37.7;
    df 80: 124.8); a sampler that drew the sub-pixels in the wrong order or ignored the past fails by far."""
    stat, df = chi_square(tiny(levels=levels, output=output), levels, 20000)
    limit = {15: 37.7, 80: 124.8}[df]
    assert stat < limit, f"chi2 = {stat:.1f} with df = {df}"


def test_conditional_sampling_follows_the_class():
    """Each class's samples match that class's law, and class-0 samples fail against the class-1 law."""
    model = tiny(classes=2)
    for label in (0, 1):
        stat, _ = chi_square(model, 2, 20000, label=label)
        assert stat < 37.7
    out = sample(model, 20000, None, torch.Generator().manual_seed(1), label=0)
    codes = torch.tensor(list(itertools.product(range(2), repeat=4)))
    x = from_levels(codes, 2, torch.float64).view(-1, 1, 2, 2)
    with torch.no_grad():
        p1 = log_likelihood(model, x, torch.ones(16, dtype=torch.long)).exp()
    counts = torch.bincount((out.levels.view(-1, 4) * torch.tensor([8, 4, 2, 1])).sum(1), minlength=16).double()
    assert float(((counts - 20000 * p1) ** 2 / (20000 * p1)).sum()) > 37.7


def test_sampling_is_reproducible_timed_and_on_the_grid():
    model = tiny(c=2, levels=4)
    a = sample(model, 5, None, torch.Generator().manual_seed(7))
    b = sample(model, 5, None, torch.Generator().manual_seed(7))
    c = sample(model, 5, None, torch.Generator().manual_seed(8))
    assert torch.equal(a.images, b.images) and not torch.equal(a.images, c.images)
    assert a.images.shape == (5, 2, 2, 2) and a.levels.dtype == torch.long
    assert torch.equal(a.images, from_levels(a.levels, 4, torch.float64))
    assert a.nfe == 8 and a.seconds > 0 and a.seconds_per_image == pytest.approx(a.seconds / 5)
    assert a.labels is None
    assert model.training  # the train/eval mode is restored


def test_sampling_arguments_are_checked():
    model = tiny()
    g = torch.Generator()
    with pytest.raises(ValueError, match="positive integer"):
        sample(model, 0, None, g)
    with pytest.raises(ValueError, match="C = 1"):
        sample(model, 1, (2, 2, 2), g)
    with pytest.raises(ValueError, match="torch.Generator"):
        sample(model, 1, None, None)
    with pytest.raises(ValueError, match="unconditional"):
        sample(model, 1, None, g, label=1)
    cond = tiny(classes=3)
    with pytest.raises(ValueError, match="classes 0..2"):
        sample(cond, 1, None, g, label=3)
    drawn = sample(cond, 4, (1, 3, 3), g)
    assert drawn.labels.shape == (4,) and drawn.images.shape == (4, 1, 3, 3)


@pytest.mark.parametrize("layers,k", [(0, 3), (2, 3), (1, 5)])
def test_the_row_band_gives_the_full_canvas_distribution(layers, k):
    """Row r computed on rows r - row_reach .. r equals row r of the full pass (every row, random images), and
    cropped sampling draws the same images as full-canvas sampling from the same seed."""
    torch.manual_seed(0)
    model = GatedPixelCNN(PixelCNNConfig(in_channels=2, image_size=7, channels=4, num_layers=layers, kernel_size=k,
                                         num_levels=4)).double()
    assert model.row_reach == (layers + 1) * (k // 2)
    x = torch.rand(3, 2, 7, 7, dtype=torch.float64) * 2 - 1
    with torch.no_grad():
        full = model(x)
        for r in range(7):
            lo = max(0, r - model.row_reach)
            assert torch.allclose(model(x[:, :, lo:r + 1])[:, :, :, r - lo], full[:, :, :, r], atol=1e-12), r
        if lo > 0:  # one row less than the reach is not enough: the band is tight
            short = model(x[:, :, lo + 1:r + 1])[:, :, :, r - lo - 1]
            assert not torch.allclose(short, full[:, :, :, r], atol=1e-6)
    a = sample(model, 4, None, torch.Generator().manual_seed(5))
    b = sample(model, 4, None, torch.Generator().manual_seed(5), crop=False)
    assert torch.equal(a.levels, b.levels)
