"""CIFAR-10 binary tarball (a tiny one built in the exact format) and the PNG-strip subset of ../shared."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from elbolab.config import DataConfig
from elbolab.data import (
    CIFAR10_CLASSES,
    DataError,
    RemoteFile,
    RemoteSource,
    dataset_info,
    load_dataset,
    md5_file,
    read_cifar10_tar,
)
from elbolab.data import cifar

BATCHES = ["data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin", "data_batch_4.bin", "data_batch_5.bin",
           "test_batch.bin"]
PER_BATCH = 3


def _record(label: int, img: np.ndarray) -> bytes:
    """1 label byte, then the red, green and blue 32x32 planes, each row-major (the CIFAR-10 binary format)."""
    return bytes([label]) + img[0].tobytes() + img[1].tobytes() + img[2].tobytes()


def _build_tarball(path: Path, drop: str | None = None, cut_record: bool = False):
    rng = np.random.default_rng(0)
    content = {}
    with tarfile.open(path, "w:gz") as tf:
        d = tarfile.TarInfo("cifar-10-batches-bin")
        d.type = tarfile.DIRTYPE
        tf.addfile(d)
        extra = {"batches.meta.txt": "\n".join(CIFAR10_CLASSES).encode(), "readme.html": b"<html></html>"}
        for name in BATCHES + list(extra):
            if name == drop:
                continue
            if name in extra:
                data = extra[name]
            else:
                images = rng.integers(0, 256, (PER_BATCH, 3, 32, 32), dtype=np.uint8)
                labels = rng.integers(0, 10, PER_BATCH)
                content[name] = (images, labels)
                data = b"".join(_record(int(lab), im) for lab, im in zip(labels, images))
                if cut_record:
                    data = data[:-100]
            info = tarfile.TarInfo(f"cifar-10-batches-bin/{name}")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return content


def test_tiny_tarball_reads_exactly(tmp_path):
    tar = tmp_path / "cifar-10-binary.tar.gz"
    content = _build_tarball(tar)
    images, labels = read_cifar10_tar(tar, "train")
    assert images.shape == (5 * PER_BATCH, 3, 32, 32) and images.dtype == np.uint8
    np.testing.assert_array_equal(images, np.concatenate([content[b][0] for b in BATCHES[:5]]))
    np.testing.assert_array_equal(labels, np.concatenate([content[b][1] for b in BATCHES[:5]]))
    t_images, t_labels = read_cifar10_tar(tar, "test")
    np.testing.assert_array_equal(t_images, content["test_batch.bin"][0])  # planes R, G, B in that order
    np.testing.assert_array_equal(t_labels, content["test_batch.bin"][1])


def test_tiny_tarball_through_load_dataset(tmp_path, monkeypatch):
    tar = tmp_path / "cifar-10-binary.tar.gz"
    content = _build_tarball(tar)
    # the canonical MD5 does not match a home-made tarball: a clear error naming both checksums
    with pytest.raises(DataError, match=rf"checksum mismatch for {tar}: MD5 {md5_file(tar)}, expected "
                                        "c32a1d4ab5d03f1284b67883e8d87530"):
        load_dataset(DataConfig(name="cifar10", data_dir=str(tmp_path)))
    tiny = RemoteSource("cifar10", (RemoteFile(tar.name, md5_file(tar), tar.stat().st_size),), mirrors=())
    monkeypatch.setattr(cifar, "CIFAR10", tiny)
    ds = load_dataset(DataConfig(name="cifar10", split="test", data_dir=str(tmp_path)))
    assert ds.images.shape == (PER_BATCH, 3, 32, 32) and ds.class_names == CIFAR10_CLASSES and ds.is_8bit
    assert torch.equal(ds.images, torch.from_numpy(content["test_batch.bin"][0]))
    assert ds.labels.tolist() == content["test_batch.bin"][1].tolist()
    grey = load_dataset(DataConfig(name="cifar10", data_dir=str(tmp_path), channels=1, image_size=16, limit=4))
    assert grey.images.shape == (4, 1, 16, 16)
    info = dataset_info("cifar10", data_dir=tmp_path)
    assert info.split("train").count == 5 * PER_BATCH and info.shape == (3, 32, 32)


def test_bad_tarballs(tmp_path):
    missing = tmp_path / "missing.tar.gz"
    _build_tarball(missing, drop="data_batch_3.bin")
    with pytest.raises(DataError, match="data_batch_3.bin'] not found in the tarball"):
        read_cifar10_tar(missing, "train")
    assert read_cifar10_tar(missing, "test")[0].shape == (PER_BATCH, 3, 32, 32)
    cut = tmp_path / "cut.tar.gz"
    _build_tarball(cut, cut_record=True)
    with pytest.raises(DataError, match="is not a whole number of 3073-byte CIFAR-10 records"):
        read_cifar10_tar(cut, "test")
    truncated = tmp_path / "truncated.tar.gz"
    truncated.write_bytes(missing.read_bytes()[: missing.stat().st_size // 2])
    with pytest.raises(DataError, match="corrupt or truncated CIFAR-10 tarball"):
        read_cifar10_tar(truncated, "train")


def test_cifar10_subset_from_shared(shared_data: Path):
    if not (shared_data / "cifar10-subset").is_dir():
        pytest.skip("../shared/data/cifar10-subset is absent")
    test = load_dataset(DataConfig(name="cifar10-subset", split="test"), data_dir=shared_data)
    assert test.images.shape == (1000, 3, 32, 32)
    assert test.class_counts() == [103, 89, 100, 103, 90, 86, 112, 102, 106, 109]  # from its README
    assert test.images[0, 0, 0, :3].tolist() == [158, 159, 165] and test.labels[:10].tolist() == [3, 8, 8, 0, 6, 6, 1, 6, 3, 1]
    train = load_dataset(DataConfig(name="cifar10-subset", limit=1500), data_dir=shared_data)
    assert len(train) == 1500 and train.images[0, 0, 0, :9].tolist() == [59, 43, 50, 68, 98, 119, 139, 145, 149]
