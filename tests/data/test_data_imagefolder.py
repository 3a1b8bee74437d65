"""``imagefolder:PATH``: class sub-folders, resize + centre crop, grey/RGB, corrupt files, splits."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from elbolab.config import DataConfig
from elbolab.data import DataError, dataset_info, load_dataset


def _save(path: Path, arr: np.ndarray, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, **kw)
    return path


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """cat/: two RGB PNGs (one 40x20 with a green centre square) and a JPEG; dog/deep/: a grey PNG."""
    root = tmp_path / "pets"
    red = np.zeros((24, 24, 3), np.uint8)
    red[..., 0] = 255
    _save(root / "cat" / "a.png", red)
    wide = np.zeros((20, 40, 3), np.uint8)  # H=20, W=40: the centre crop keeps the middle 20 columns
    wide[:, 6:34, 1] = 255  # green with a margin of 4 columns around the crop, black outside
    _save(root / "cat" / "b.PNG", wide)
    _save(root / "cat" / "c.jpg", np.full((30, 30, 3), 128, np.uint8), quality=95)
    _save(root / "dog" / "deep" / "d.png", np.full((16, 16), 200, np.uint8))
    (root / "dog" / "notes.txt").write_text("not an image, ignored")
    return root


def _corrupt_png(path: Path) -> Path:
    good = path.with_name("good_" + path.name)
    _save(good, np.full((8, 8, 3), 7, np.uint8))
    path.write_bytes(good.read_bytes()[:40])  # a valid signature and header, then the data stops
    good.unlink()
    return path


def test_classes_resize_crop_channels(folder):
    ds = load_dataset(DataConfig(name=f"imagefolder:{folder}", image_size=16, holdout=0))
    assert ds.images.shape == (4, 3, 16, 16) and ds.is_8bit
    assert ds.class_names == ("cat", "dog") and ds.num_classes == 2 and ds.labels.tolist() == [0, 0, 0, 1]
    red, wide, jpeg, grey = ds.images
    assert torch.all(red[0] == 255) and torch.all(red[1:] == 0)
    assert torch.all(wide[1] == 255) and torch.all(wide[0] == 0)  # centre crop of the 40x20 image is all green
    assert (jpeg.int() - 128).abs().max() <= 2
    assert torch.all(grey == 200)  # grey promoted to RGB by repetition
    one = load_dataset(DataConfig(name=f"imagefolder:{folder}", channels=1, holdout=0))
    assert one.images.shape == (4, 1, 32, 32)  # default size 32
    assert int(one.images[0, 0, 0, 0]) == 76 and int(one.images[3, 0, 0, 0]) == 200  # luma of red; grey kept
    x, y = one.batch(torch.arange(4))
    assert x.shape == (4, 1, 32, 32) and float(x.min()) >= -1 and float(x.max()) <= 1


def test_all_grey_folder_is_one_channel_and_unlabelled_when_flat(tmp_path):
    for i in range(3):
        _save(tmp_path / "flat" / f"{i}.png", np.full((10, 10), 50 * i, np.uint8))
    ds = load_dataset(DataConfig(name=f"imagefolder:{tmp_path / 'flat'}", image_size=8, holdout=0))
    assert ds.images.shape == (3, 1, 8, 8) and ds.num_classes == 0 and ds.labels.tolist() == [-1, -1, -1]
    assert ds.images[:, 0, 0, 0].tolist() == [0, 50, 100]


def test_corrupt_png_fails_with_its_path(folder):
    bad = _corrupt_png(folder / "dog" / "broken.png")
    (folder / "cat" / "fake.jpg").write_bytes(b"this is not a jpeg")
    with pytest.raises(DataError) as err:
        load_dataset(DataConfig(name=f"imagefolder:{folder}", holdout=0))
    msg = str(err.value)
    assert "2 unreadable image file(s)" in msg and str(bad) in msg and str(folder / "cat" / "fake.jpg") in msg
    assert 'on_error = "skip"' in msg
    assert err.value.__cause__ is None and err.value.__context__ is None  # no Pillow traceback chained in


def test_skip_mode_counts_and_warns(folder, caplog):
    bad = _corrupt_png(folder / "dog" / "broken.png")
    with caplog.at_level(logging.WARNING, logger="elbolab.data.imagefolder"):
        ds = load_dataset(DataConfig(name=f"imagefolder:{folder}", on_error="skip", holdout=0))
    assert len(ds) == 4 and ds.skipped == (str(bad),)
    assert "skipped 1 unreadable image file(s)" in caplog.text and str(bad) in caplog.text
    info = dataset_info(f"imagefolder:{folder}")
    assert info.split("all").count == 4 and any("1 unreadable" in n for n in info.notes)


def test_holdout_split_is_a_fixed_partition(tmp_path):
    for c in ("a", "b"):
        for i in range(10):
            _save(tmp_path / "f" / c / f"{i}.png", np.full((4, 4), 10 * i + (100 if c == "b" else 0), np.uint8))
    name = f"imagefolder:{tmp_path / 'f'}"
    train = load_dataset(DataConfig(name=name, image_size=4, holdout=5))
    test = load_dataset(DataConfig(name=name, image_size=4, holdout=5, split="test"))
    again = load_dataset(DataConfig(name=name, image_size=4, holdout=5, split="test"))
    values = sorted(train.images[:, 0, 0, 0].tolist() + test.images[:, 0, 0, 0].tolist())
    assert len(train) == 15 and len(test) == 5 and values == sorted(10 * i + o for i in range(10) for o in (0, 100))
    assert torch.equal(test.images, again.images)
    assert len(load_dataset(DataConfig(name=name, image_size=4, holdout=5, limit=3))) == 3
    with pytest.raises(ValueError, match="holdout = 1000 leaves no training images out of 20"):
        load_dataset(DataConfig(name=name))


def test_bad_folders(tmp_path):
    with pytest.raises(DataError, match="is not a folder"):
        load_dataset(DataConfig(name=f"imagefolder:{tmp_path / 'none'}"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no image files"):
        load_dataset(DataConfig(name=f"imagefolder:{tmp_path / 'empty'}"))
    _save(tmp_path / "mixed" / "top.png", np.zeros((4, 4), np.uint8))
    _save(tmp_path / "mixed" / "cls" / "x.png", np.zeros((4, 4), np.uint8))
    with pytest.raises(DataError, match="move them into a class sub-folder"):
        load_dataset(DataConfig(name=f"imagefolder:{tmp_path / 'mixed'}", holdout=0))
