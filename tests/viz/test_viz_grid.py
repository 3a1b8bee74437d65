"""Image grids: layout, value mapping, PNG round trip, errors."""

import numpy as np
import pytest
import torch
from PIL import Image

from elbolab.viz.grid import make_grid, save_image_grid


def test_layout_and_values():
    imgs = torch.stack([torch.full((1, 2, 3), v) for v in (-1.0, 0.0, 1.0)])  # 3 images of 2x3
    g = make_grid(imgs, nrow=2, padding=1, pad_value=1.0)
    assert g.shape == (2 * 3 + 1, 2 * 4 + 1, 1) and g.dtype == np.uint8
    assert (g[1:3, 1:4] == 0).all()  # -1 -> 0
    assert (g[1:3, 5:8] == 128).all()  # 0 -> 127.5 rounded
    assert (g[4:6, 1:4] == 255).all()  # 1 -> 255
    assert g[0, 0, 0] == 255 and (g[4:6, 5:8] == 255).all()  # padding and the empty cell
    assert (make_grid(torch.full((1, 1, 2, 2), 7.0), padding=0) == 255).all()  # clipped


def test_png_round_trip_rgb(tmp_path):
    imgs = torch.rand(5, 3, 4, 4, generator=torch.Generator().manual_seed(0)) * 2 - 1
    path = tmp_path / "sub" / "grid.png"
    save_image_grid(imgs, path, nrow=3)
    back = np.asarray(Image.open(path))
    assert back.shape == (2 * 6 + 2, 3 * 6 + 2, 3)
    assert np.array_equal(back, make_grid(imgs, nrow=3))
    assert [p.name for p in path.parent.iterdir()] == ["grid.png"]  # no temporary file left


@pytest.mark.parametrize("bad, match", [
    (torch.zeros(2, 2, 4, 4), "C = 2"),
    (torch.zeros(4, 4), "N, C, H, W"),
    (torch.full((1, 1, 2, 2), float("nan")), "NaN"),
    (torch.zeros(0, 1, 2, 2), "empty"),
])
def test_bad_input(bad, match):
    with pytest.raises(ValueError, match=match):
        make_grid(bad)
