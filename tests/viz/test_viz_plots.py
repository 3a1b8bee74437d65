"""viz.plots: labelled grids, animated GIFs, particles and flow fields."""

import numpy as np
import pytest
import torch
from PIL import Image

from elbolab.viz.plots import (
    density_image,
    figure_to_array,
    flow_field,
    particles,
    save_annotated_grid,
    save_figure,
    save_gif,
)


def test_annotated_grid_shows_the_pixels(tmp_path):
    rows = -torch.ones(2, 3, 1, 28, 28)
    rows[1, 2] = 1.0  # one white image, the rest black
    path = save_annotated_grid(rows, tmp_path / "g.png", row_labels=["a", "b"], col_labels=["1", "2", "3"],
                               title="t")
    img = np.asarray(Image.open(path).convert("L"))
    assert img.shape[0] > 2 * 28 and img.shape[1] > 3 * 28
    assert (img > 250).mean() > 0.05 and (img < 5).mean() > 0.2  # the black images and the white one are there
    with pytest.raises(ValueError, match="row_labels has 1 entries for 2 rows"):
        save_annotated_grid(rows, tmp_path / "x.png", row_labels=["a"])
    with pytest.raises(ValueError, match=r"\(R, N, C, H, W\)"):
        save_annotated_grid(rows[0], tmp_path / "x.png")


def test_gif_round_trip(tmp_path):
    frames = [np.full((20, 30, 3), v, dtype=np.uint8) for v in (0, 128, 255)]
    path = save_gif(frames, tmp_path / "a.gif", duration_ms=50)
    gif = Image.open(path)
    assert gif.n_frames == 3 and gif.size == (30, 20)
    gif.seek(2)
    assert np.asarray(gif.convert("L")).mean() > 250
    with pytest.raises(ValueError, match="differ in shape"):
        save_gif([frames[0], np.zeros((5, 5, 3), np.uint8)], tmp_path / "b.gif")
    with pytest.raises(ValueError, match="no frames"):
        save_gif([], tmp_path / "c.gif")


def test_particles_and_flow_field_render(tmp_path):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    density_image(ax, lambda x: -0.5 * (x**2).sum(1), lim=2.0, resolution=20)
    grid = torch.stack(torch.meshgrid(torch.linspace(-1, 1, 5), torch.linspace(-1, 1, 5), indexing="xy"), -1)
    flow_field(ax, grid.reshape(-1, 2), -grid.reshape(-1, 2), lim=2.0, title="field")
    particles(ax, torch.randn(100, 2), lim=2.0)
    assert ax.get_xlim() == (-2.0, 2.0) and ax.get_title() == "field"
    arr = figure_to_array(fig, close=False)
    assert arr.dtype == np.uint8 and arr.ndim == 3 and arr.shape[2] == 3
    assert save_figure(fig, tmp_path / "f.png").stat().st_size > 0
