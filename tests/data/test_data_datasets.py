"""ImageDataset / PointDataset contract, pixel scaling, dequantisation, and DataConfig handling."""

import pytest
import torch

from elbolab.config import DataConfig
from elbolab.data import (
    BIN_WIDTH,
    DataError,
    ImageDataset,
    PointDataset,
    convert_channels,
    dequantize,
    load_dataset,
    resize_uint8,
    to_float,
    to_uint8,
)


def test_to_float_to_uint8_exact_round_trip():
    u8 = torch.arange(256, dtype=torch.uint8)
    x = to_float(u8)
    assert x.dtype == torch.float32 and float(x.min()) == -1.0 and float(x.max()) == 1.0
    assert torch.equal(to_uint8(x), u8)
    assert torch.allclose(x[1:] - x[:-1], torch.full((255,), BIN_WIDTH))
    assert torch.equal(to_uint8(torch.tensor([-3.0, 3.0])), torch.tensor([0, 255], dtype=torch.uint8))
    with pytest.raises(ValueError, match="torch.uint8"):
        to_float(torch.zeros(2))
    with pytest.raises(ValueError, match="floating-point"):
        to_uint8(u8)


def test_dequantize_stays_in_bin_and_is_uniform():
    u8 = torch.randint(0, 256, (200_000,), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(1)
    x = dequantize(u8, g)
    moved = (to_uint8(x).int() - u8.int()).abs()
    assert int(moved.max()) <= 1 and int((moved > 0).sum()) <= 5  # stays in its bin up to float32 rounding at edges
    offset = (x - to_float(u8)) / BIN_WIDTH + 0.5  # should be U(0, 1)
    assert -1e-5 <= float(offset.min()) and float(offset.max()) <= 1 + 1e-5
    assert abs(float(offset.mean()) - 0.5) < 0.003 and abs(float(offset.var()) - 1 / 12) < 0.002
    assert torch.equal(x, dequantize(u8, torch.Generator().manual_seed(1)))  # reproducible
    with pytest.raises(ValueError, match="torch.Generator"):
        dequantize(u8, None)


def _tiny(dequant=False):
    images = torch.arange(5 * 1 * 2 * 2, dtype=torch.uint8).reshape(5, 1, 2, 2) * 12
    return ImageDataset(images, torch.tensor([0, 1, 2, 1, 0]), name="tiny", class_names=("a", "b", "c"),
                        dequantize=dequant)


def test_image_dataset_contract():
    ds = _tiny()
    assert (len(ds), ds.channels, ds.image_size, ds.is_8bit, ds.num_classes) == (5, 1, 2, True, 3)
    x, y = ds[3]
    assert x.shape == (1, 2, 2) and x.dtype == torch.float32 and y.dtype == torch.int64 and y.ndim == 0
    assert torch.equal(x, to_float(ds.images[3])) and int(y) == 1
    xb, yb = ds.batch(torch.tensor([4, 0, 4]))
    assert xb.shape == (3, 1, 2, 2) and yb.tolist() == [0, 0, 0]
    assert ds.class_counts() == [2, 2, 1]
    with pytest.raises(IndexError):
        ds[5]
    with pytest.raises(ValueError, match="out of range"):
        ds.batch(torch.tensor([7]))
    unlabelled = ImageDataset(ds.images, name="u")
    assert unlabelled.num_classes == 0 and unlabelled.labels.tolist() == [-1] * 5 and unlabelled.class_counts() == []
    with pytest.raises(ValueError, match="square"):
        ImageDataset(torch.zeros(1, 1, 2, 3, dtype=torch.uint8))
    with pytest.raises(ValueError, match="8-bit"):
        ImageDataset(torch.zeros(1, 1, 2, 2), dequantize=True)
    fl = ImageDataset(torch.zeros(2, 3, 4, 4), name="f")
    assert not fl.is_8bit and fl.batch([0])[0].shape == (1, 3, 4, 4)


def test_batch_dequantisation_needs_generator():
    ds = _tiny(dequant=True)
    idx = torch.arange(5)
    with pytest.raises(ValueError, match="pass a torch.Generator"):
        ds.batch(idx)
    x1, _ = ds.batch(idx, torch.Generator().manual_seed(3))
    x2, _ = ds.batch(idx, torch.Generator().manual_seed(3))
    assert torch.equal(x1, x2) and not torch.equal(x1, to_float(ds.images))
    assert int((to_uint8(x1).int() - ds.images.int()).abs().max()) <= 1
    assert torch.equal(ds[2][0], to_float(ds.images[2]))  # __getitem__ adds no noise


def test_convert_channels_and_resize():
    rgb = torch.tensor([255, 0, 0], dtype=torch.uint8).view(1, 3, 1, 1).expand(2, 3, 4, 4).contiguous()
    grey = convert_channels(rgb, 1)
    assert grey.shape == (2, 1, 4, 4) and int(grey[0, 0, 0, 0]) == 76  # Pillow's L of pure red
    assert torch.equal(convert_channels(grey, 3)[:, 1], grey[:, 0])
    with pytest.raises(ValueError, match="expected 1"):
        convert_channels(rgb, 2)
    big = resize_uint8(grey, 8)
    assert big.shape == (2, 1, 8, 8) and big.dtype == torch.uint8 and torch.all(big == 76)
    wide = torch.zeros(1, 1, 4, 8, dtype=torch.uint8)
    wide[..., 2:6] = 200  # centre crop keeps the middle
    assert torch.all(resize_uint8(wide, 4) == 200)


def test_config_limit_channels_size_dequantize():
    cfg = DataConfig(name="mnist-embedded", limit=64, channels=3, image_size=32, dequantize=True)
    ds = load_dataset(cfg)
    assert isinstance(ds, ImageDataset)
    assert ds.images.shape == (64, 3, 32, 32) and ds.is_8bit and ds.dequantize
    x, y = ds.batch(torch.arange(8), torch.Generator().manual_seed(0))
    assert x.shape == (8, 3, 32, 32) and y.shape == (8,)
    assert -1 - BIN_WIDTH / 2 <= float(x.min()) and float(x.max()) <= 1 + BIN_WIDTH / 2


def test_unknown_names_and_bad_values():
    with pytest.raises(DataError, match="unknown dataset 'mnsit'; choices: mnist-embedded, mnist"):
        load_dataset("mnsit")
    with pytest.raises(ValueError, match="split"):
        load_dataset(DataConfig(split="valid"))
    with pytest.raises(ValueError, match="holdout = 10000"):
        load_dataset(DataConfig(holdout=10000))
    with pytest.raises(ValueError, match="toy distribution"):
        load_dataset(DataConfig(name="two-moons", image_size=28))


def test_toy_names_give_point_datasets():
    ds = load_dataset(DataConfig(name="gaussian-mixture", limit=100))
    again = load_dataset(DataConfig(name="gaussian-mixture", limit=100))
    test = load_dataset(DataConfig(name="gaussian-mixture", limit=100, split="test"))
    assert isinstance(ds, PointDataset) and ds.points.shape == (100, 2) and ds.num_classes == 8
    assert torch.equal(ds.points, again.points) and not torch.equal(ds.points, test.points)
    x, y = ds.batch(torch.tensor([0, 1]))
    assert x.shape == (2, 2) and y.dtype == torch.int64
    assert load_dataset(DataConfig(name="mixture-1d", limit=10)).points.shape == (10, 1)
