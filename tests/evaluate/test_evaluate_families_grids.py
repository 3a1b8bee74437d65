"""The families table's grids figure survives a --merge: benchmarks/quality.py splits a grids_png figure back
into its titled panels and composes the merged figure from each row's panel. And its D* check
(``dstar_checks``) on any family's sampler."""

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

QUALITY = Path(__file__).resolve().parents[2] / "benchmarks" / "quality.py"


@pytest.fixture(scope="module")
def quality():
    spec = importlib.util.spec_from_file_location("bench_quality", QUALITY)
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_quality"] = module
    spec.loader.exec_module(module)
    return module


def _grids(names, seed):
    g = torch.Generator().manual_seed(seed)
    return {n: torch.rand(64, 1, 28, 28, generator=g) * 2 - 1 for n in names}


def test_split_panels_finds_one_titled_panel_per_row(quality, tmp_path):
    quality.grids_png(_grids(["ddpm", "ncsn (VE ddim)", "gan"], 0), tmp_path / "a.png")
    panels = quality.split_panels(tmp_path / "a.png")
    assert len(panels) == 3
    for p in panels:  # a square-ish grid with its title above: taller than wide, mostly the grid's dark pixels
        assert p.ndim == 3 and p.shape[2] == 3 and 1.0 < p.shape[0] / p.shape[1] < 1.3
        assert (p < 128).mean() > 0.2


def test_merge_takes_each_rows_panel_from_the_table_that_scored_it(quality, tmp_path):
    quality.grids_png(_grids(["ddpm", "ncsn", "gan"], 0), tmp_path / "base.png")
    quality.grids_png(_grids(["ncsn"], 1), tmp_path / "part.png")
    base, part = quality.split_panels(tmp_path / "base.png"), quality.split_panels(tmp_path / "part.png")
    out = tmp_path / "merged.png"
    assert quality.merge_grids_png((tmp_path / "base.png", ["ddpm", "ncsn", "gan"]), (tmp_path / "part.png", ["ncsn"]),
                                   ["ddpm", "ncsn", "gan"], out)
    merged = quality.split_panels(out)
    assert len(merged) == 3
    for got, want in zip(merged, [base[0], part[0], base[2]]):
        assert got.shape == want.shape and np.array_equal(got, want)
    assert not np.array_equal(merged[1][-50:], base[1][-50:])  # the part's ncsn grid, not the base's
    # a figure whose panel count does not match its rows writes nothing
    assert not quality.merge_grids_png((tmp_path / "base.png", ["ddpm", "gan"]), (tmp_path / "part.png", ["ncsn"]),
                                       ["ddpm", "ncsn"], tmp_path / "none.png")
    assert not (tmp_path / "none.png").exists()
    with Image.open(out) as im:
        assert im.mode == "RGB"


def test_dstar_checks_of_any_family_read_real_images_as_real_and_noise_as_fake(quality, shared_data):
    """The D* check on a non-GAN family's sampler: images drawn from MNIST's own training split cannot be told
    from its test split (accuracy near the real-against-real floor in every space), uniform noise is told apart
    at once."""
    from elbolab.config import DataConfig
    from elbolab.data import load_dataset

    folder = shared_data / "mnist"
    if not folder.is_dir():
        pytest.skip(f"real MNIST files not found in {folder}")
    train = load_dataset(DataConfig(name="mnist", data_dir=str(folder), split="train", limit=1200))
    pool, _ = train.batch(torch.arange(len(train)))

    def real_sampler(b, generator):
        return pool[torch.randint(len(pool), (b,), generator=generator)]

    def noise_sampler(b, generator):
        return torch.rand(b, 1, 28, 28, generator=generator) * 2 - 1

    same = quality.dstar_checks(None, "mnist", str(folder), 0, n=600, sampler=real_sampler)
    noise = quality.dstar_checks(None, "mnist", str(folder), 0, n=600, sampler=noise_sampler)
    for space in ("pixels", "pixels_8bit", "features"):
        assert same[space]["accuracy"] < 0.72, (space, same[space])
        assert noise[space]["accuracy"] > 0.97, (space, noise[space])
        assert noise[space]["d_fake"] < 0.05 < 0.95 < noise[space]["d_real"], (space, noise[space])


def test_dstar_checks_without_a_sampler_needs_a_gan_run(quality):
    with pytest.raises(ValueError, match="needs a sampler"):
        quality.dstar_checks(None, "mnist", "", 0)
