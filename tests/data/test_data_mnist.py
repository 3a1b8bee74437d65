"""Real MNIST / Fashion-MNIST from ../shared/data and the embedded MNIST test set."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch

from elbolab.config import DataConfig
from elbolab.data import DataError, ImageDataset, dataset_info, load_dataset

MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_full_mnist_from_shared(shared_mnist: Path):
    ds = load_dataset(DataConfig(name="mnist", split="train"), data_dir=shared_mnist, download=False)
    assert isinstance(ds, ImageDataset)
    assert ds.images.shape == (60000, 1, 28, 28) and ds.images.dtype == torch.uint8 and ds.is_8bit
    assert ds.class_counts() == MNIST_TRAIN_COUNTS
    assert abs(float(ds.images.float().mean()) / 255 - 0.1307) < 5e-4  # README of ../shared/data
    x, y = ds.batch(torch.arange(0, 60000, 7))
    assert x.shape == (8572, 1, 28, 28) and x.dtype == torch.float32
    assert float(x.min()) == -1.0 and float(x.max()) == 1.0
    assert torch.equal(y, ds.labels[::7]) and ds.labels[:5].tolist() == [5, 0, 4, 1, 9]
    test = load_dataset(DataConfig(name="mnist", split="test"), data_dir=shared_mnist.parent, download=False)
    assert test.images.shape == (10000, 1, 28, 28) and test.class_counts() == MNIST_TEST_COUNTS


def test_data_info_mnist_prints_counts(shared_mnist: Path):
    info = dataset_info("mnist", data_dir=shared_mnist)
    assert info.split("train").count == 60000 and list(info.split("train").class_counts) == MNIST_TRAIN_COUNTS
    assert info.split("test").count == 10000 and info.shape == (1, 28, 28) and info.is_8bit
    assert info.raw_range == (0.0, 255.0) and info.value_range == (-1.0, 1.0)
    assert all(f.status.value == "ok" for f in info.files) and len(info.files) == 4
    text = info.to_text()
    assert "5923 6742 5958 6131 5842 5421 5918 6265 5851 5949" in text and "60000" in text


def test_fashion_mnist_from_shared(shared_data: Path):
    if not (shared_data / "fashion-mnist").is_dir():
        pytest.skip("../shared/data/fashion-mnist is absent")
    train = load_dataset(DataConfig(name="fashion-mnist"), data_dir=shared_data, download=False)
    test = load_dataset(DataConfig(name="fashion-mnist", split="test"), data_dir=shared_data, download=False)
    assert train.images.shape == (60000, 1, 28, 28) and train.class_counts() == [6000] * 10
    assert test.class_counts() == [1000] * 10 and test.class_names[9] == "Ankle boot"
    assert abs(float(test.images.float().mean()) / 255 - 0.2868) < 5e-4


def test_embedded_loads_without_shared(monkeypatch, shared_data_guard):
    monkeypatch.setenv("ELBOLAB_DATA", str(Path(__file__).resolve().parents[3] / "shared" / "data"))
    ds = load_dataset()  # the default DataConfig: mnist-embedded, split train, holdout 1000
    test = load_dataset(DataConfig(split="test"))
    assert ds.name == "mnist-embedded" and ds.images.shape == (9000, 1, 28, 28) and len(test) == 1000
    counts = [a + b for a, b in zip(ds.class_counts(), test.class_counts())]
    assert counts == MNIST_TEST_COUNTS  # together they are the whole MNIST test set
    assert int(ds.labels[0]) == 7 and int(test.labels[-1]) == 6  # first and last label of t10k
    assert len(load_dataset(DataConfig(holdout=0))) == 10000
    with pytest.raises(ValueError, match="holdout = 0 is empty"):
        load_dataset(DataConfig(split="test", holdout=0))
    assert shared_data_guard == []  # nothing under ../shared was opened


@pytest.fixture
def shared_data_guard(monkeypatch):
    """Make every open() of a path under ../shared fail, and record the attempts."""
    import builtins

    shared = str(Path(__file__).resolve().parents[3] / "shared")
    attempts: list[str] = []
    real_open = io.open

    def guarded(file, *args, **kwargs):
        if isinstance(file, (str, Path)) and str(file).startswith(shared):
            attempts.append(str(file))
            raise PermissionError(f"test forbids {file}")
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(io, "open", guarded)
    monkeypatch.setattr(builtins, "open", guarded)
    return attempts


def test_embedded_equals_shared_test_split(shared_mnist: Path):
    emb = load_dataset(DataConfig(holdout=0))
    test = load_dataset(DataConfig(name="mnist", split="test"), data_dir=shared_mnist, download=False)
    assert torch.equal(emb.images, test.images) and torch.equal(emb.labels, test.labels)


def test_wrong_split_name():
    with pytest.raises(ValueError, match="split = 'val'"):
        load_dataset(DataConfig(name="mnist", split="val"))
    with pytest.raises(DataError):
        load_dataset(DataConfig(name="mnist"), download=False)
