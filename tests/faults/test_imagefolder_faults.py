"""Image folders: a folder of one size keeps it; each kind of bad file is named with its reason, or skipped."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from elbolab.data import DataError, load_image_folder
from elbolab.data.errors import UnreadableImagesError
from elbolab.errors import ExitCode, describe
import faults_images as images


def test_uniform_size_is_kept_and_mixed_sizes_go_to_32(tmp_path):
    files = images.digits(tmp_path / "f", n=4, size=28)
    ds = load_image_folder(tmp_path / "f")
    assert ds.images.shape == (4, 1, 28, 28)
    from PIL import Image

    assert torch.equal(ds.images[0, 0], torch.from_numpy(np.array(Image.open(files[0]))))  # not resampled
    images.save_png(tmp_path / "f" / "big.png", np.zeros((40, 40), np.uint8))
    assert load_image_folder(tmp_path / "f").images.shape == (5, 1, 32, 32)
    assert load_image_folder(tmp_path / "f", image_size=16).images.shape == (5, 1, 16, 16)
    images.digits(tmp_path / "wide", n=2, size=1)  # then overwrite with 30x20 (W x H) images
    for p in (tmp_path / "wide").iterdir():
        images.save_png(p, np.full((20, 30), 9, np.uint8))
    assert load_image_folder(tmp_path / "wide").images.shape == (2, 1, 20, 20)


BAD = {
    "truncated.jpg": (images.truncated_jpeg, "truncated image data"),
    "bomb.png": (images.bomb_png, "larger than Pillow's decompression-bomb guard"),
    "notes.png": (images.text_file, "not a PNG/JPG/JPEG image"),
    "empty.jpg": (images.empty_file, "empty file (0 bytes)"),
    "loop.png": (images.symlink_loop, "symbolic link loop"),
    "gone.png": (images.broken_link, "broken symbolic link"),
}


@pytest.mark.parametrize("fname", sorted(BAD))
@pytest.mark.parametrize("size", [0, 24])  # the header pass (own size) and the decode pass
def test_each_bad_file_is_named_with_its_reason_or_skipped(tmp_path, caplog, fname, size):
    folder = tmp_path / "f"
    images.digits(folder, n=3)
    make, reason = BAD[fname]
    bad = make(folder / fname)
    with pytest.raises(UnreadableImagesError) as e:
        load_image_folder(folder, image_size=size)
    message, code = describe(e.value)
    assert code == ExitCode.DATA and "\n" not in message
    n_bad = 2 if fname == "loop.png" else 1  # both links of the loop
    assert f"{bad}: {reason}" in message and f": {n_bad} unreadable image file(s): " in message
    assert 'data.on_error = "skip"' in message and e.value.__cause__ is None
    with caplog.at_level(logging.WARNING, logger="elbolab.data.imagefolder"):
        ds = load_image_folder(folder, image_size=size, on_error="skip")
    assert len(ds) == 3 and str(bad) in ds.skipped and str(bad) in caplog.text
    assert ds.image_size == (size or 28)


def test_grey_rgb_mix_is_converted_and_named(tmp_path, caplog):
    images.digits(tmp_path / "f", n=2)
    rgb = images.save_png(tmp_path / "f" / "colour.png", np.full((28, 28, 3), (200, 10, 10), np.uint8))
    with caplog.at_level(logging.WARNING, logger="elbolab.data.imagefolder"):
        ds = load_image_folder(tmp_path / "f")
    assert ds.images.shape == (3, 3, 28, 28)
    assert "2 grey and 1 colour images" in caplog.text and str(rgb) in caplog.text
    assert load_image_folder(tmp_path / "f", channels=1).images.shape == (3, 1, 28, 28)


def test_only_bad_files_is_an_error_that_says_so(tmp_path):
    (tmp_path / "f").mkdir()
    (tmp_path / "f" / "a.png").write_bytes(b"")
    with pytest.raises(DataError, match="no readable images"):
        load_image_folder(tmp_path / "f", on_error="skip")
