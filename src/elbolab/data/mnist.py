"""MNIST, Fashion-MNIST and the embedded MNIST test set, all read from the original IDX ``.gz`` files.

- ``mnist`` (LeCun, Cortes & Burges, "The MNIST database of handwritten digits"; CC BY-SA 3.0) and
  ``fashion-mnist`` (Xiao, Rasul & Vollgraf 2017; MIT, (c) 2017 Zalando SE): splits ``train`` (60,000) and
  ``test`` (10,000), 28x28 grey, 10 classes. Located / verified / downloaded by ``elbolab.data.download``.
- ``mnist-embedded``: the two original MNIST *test-set* files ship inside the package
  (``elbolab/data/embedded``, CC BY-SA 3.0, attribution above), so the default works with no network.
  It is a single split of 10,000 images, divided as ``train`` = the first ``10000 - holdout`` images and
  ``test`` = the last ``holdout`` images (``DataConfig.holdout``, default 1000).

Decoded arrays are cached in memory per process, keyed by the file's verified MD5, so reloading costs
one MD5 pass over the compressed file (~25 ms for full MNIST).
"""

from __future__ import annotations

import functools
import os
from importlib import resources
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from elbolab.data.datasets import ImageDataset
from elbolab.data.download import RemoteFile, RemoteSource, fetch_file, md5_file
from elbolab.data.errors import DataError
from elbolab.data.idx import read_idx

_IDX_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}

MNIST = RemoteSource(
    name="mnist",
    files=(
        RemoteFile("train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873", 9912422),
        RemoteFile("train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432", 28881),
        RemoteFile("t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3", 1648877),
        RemoteFile("t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c", 4542),
    ),
    mirrors=("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"),
)

FASHION_MNIST = RemoteSource(
    name="fashion-mnist",
    files=(
        RemoteFile("train-images-idx3-ubyte.gz", "8d4fb7e6c68d591d4c3dfef9ec88bf0d", 26421880),
        RemoteFile("train-labels-idx1-ubyte.gz", "25c81989df183df01b3e8a0aad5dffbe", 29515),
        RemoteFile("t10k-images-idx3-ubyte.gz", "bef4ecab320f06d8554ea6380940ec79", 4422102),
        RemoteFile("t10k-labels-idx1-ubyte.gz", "bb300cfdad3c16e7a12a480ee83cd310", 5148),
    ),
    mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
)

MNIST_CLASSES = tuple(str(d) for d in range(10))
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                         "Bag", "Ankle boot")
EMBEDDED_SIZE = 10000


def split_files(split: str) -> tuple[str, str]:
    """(images file, labels file) of an IDX split: ``train`` or ``test``."""
    if split not in _IDX_FILES:
        raise ValueError(f"split = {split!r}: expected one of {sorted(_IDX_FILES)}")
    return _IDX_FILES[split]


@functools.lru_cache(maxsize=8)
def _decode_cached(md5: str, path: str) -> np.ndarray:
    arr = read_idx(path)
    arr.flags.writeable = False
    return arr


def _decode_pair(images_path: Path, images_md5: str, labels_path: Path,
                 labels_md5: str) -> tuple[np.ndarray, np.ndarray]:
    images = _decode_cached(images_md5, str(images_path))
    labels = _decode_cached(labels_md5, str(labels_path))
    if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
        raise DataError(
            f"{images_path} / {labels_path}: expected images (N, H, W) and labels (N,), got shapes "
            f"{images.shape} and {labels.shape}"
        )
    if images.dtype != np.uint8 or labels.dtype != np.uint8:
        raise DataError(f"{images_path} / {labels_path}: expected uint8 IDX data, got {images.dtype}/{labels.dtype}")
    return images, labels


def _to_dataset(images: np.ndarray, labels: np.ndarray, name: str, class_names: Sequence[str],
                limit: int) -> ImageDataset:
    n = min(limit, len(images)) if limit > 0 else len(images)
    x = torch.from_numpy(np.array(images[:n]))[:, None]  # (N, 1, H, W) uint8, copied out of the cache
    y = torch.from_numpy(labels[:n].astype(np.int64))
    return ImageDataset(x, y, name=name, class_names=class_names)


def load_idx_source(source: RemoteSource, class_names: Sequence[str], split: str, *, limit: int = 0,
                    data_dir: str | os.PathLike[str] | None = None, download: bool = True,
                    mirrors: Sequence[str] | None = None) -> ImageDataset:
    """One split of an IDX dataset (MNIST, Fashion-MNIST): ``(N, 1, 28, 28)`` uint8 images, labels 0..9.

    Only the two files of ``split`` are located, verified and (if missing) downloaded.
    """
    img_name, lab_name = split_files(split)
    img = fetch_file(source, img_name, data_dir=data_dir, download=download, mirrors=mirrors)
    lab = fetch_file(source, lab_name, data_dir=data_dir, download=download, mirrors=mirrors)
    images, labels = _decode_pair(img.path, img.md5, lab.path, lab.md5)
    return _to_dataset(images, labels, source.name, class_names, limit)


def embedded_path(filename: str) -> Path:
    """Path of a file shipped in ``elbolab/data/embedded`` (the MNIST test set)."""
    ref = resources.files("elbolab.data").joinpath("embedded").joinpath(filename)
    if not ref.is_file():
        raise DataError(f"the packaged file elbolab/data/embedded/{filename} is missing; reinstall elbolab")
    return Path(str(ref))


def embedded_files() -> list[tuple[Path, RemoteFile]]:
    """The packaged files with their canonical MNIST test-set checksums."""
    return [(embedded_path(f), MNIST.file(f)) for f in split_files("test")]


def _verified_embedded() -> list[tuple[Path, str]]:
    out = []
    for path, spec in embedded_files():
        actual = md5_file(path)
        if actual != spec.md5:
            raise DataError(
                f"mnist-embedded: packaged file {path} has MD5 {actual}, expected {spec.md5}; the installation is "
                "corrupted: reinstall elbolab"
            )
        out.append((path, actual))
    return out


def embedded_split_range(split: str, holdout: int) -> range:
    """Indices of ``split`` in the 10,000 embedded images: train = [0, 10000 - holdout), test = the rest."""
    if split not in ("train", "test"):
        raise ValueError(f"split = {split!r}: expected 'train' or 'test'")
    if not 0 <= holdout < EMBEDDED_SIZE:
        raise ValueError(f"holdout = {holdout}: mnist-embedded has {EMBEDDED_SIZE} images; need 0 <= holdout < "
                         f"{EMBEDDED_SIZE} so that the train split is not empty")
    if split == "test" and holdout == 0:
        raise ValueError("split = 'test' with holdout = 0 is empty: set data.holdout > 0 (e.g. 1000)")
    cut = EMBEDDED_SIZE - holdout
    return range(0, cut) if split == "train" else range(cut, EMBEDDED_SIZE)


def load_embedded(split: str = "train", *, holdout: int = 1000, limit: int = 0) -> ImageDataset:
    """``mnist-embedded``: the packaged MNIST test set, split by ``holdout`` (see the module docstring)."""
    r = embedded_split_range(split, holdout)
    (img_path, img_md5), (lab_path, lab_md5) = _verified_embedded()
    images, labels = _decode_pair(img_path, img_md5, lab_path, lab_md5)
    return _to_dataset(images[r.start:r.stop], labels[r.start:r.stop], "mnist-embedded", MNIST_CLASSES, limit)
