"""CIFAR-10 (Krizhevsky 2009, "Learning Multiple Layers of Features from Tiny Images").

``cifar10``: the canonical *binary* tarball ``cifar-10-binary.tar.gz`` (MD5 c32a1d4ab5d03f1284b67883e8d87530).
It holds ``cifar-10-batches-bin/data_batch_{1..5}.bin`` (train, 50,000) and ``test_batch.bin`` (10,000); each
record is 1 label byte followed by 3072 pixel bytes (1024 R, 1024 G, 1024 B, each 32x32 row-major). The
members are read as raw bytes from the tar stream: nothing is extracted and nothing is unpickled.

``cifar10-subset``: the PNG-strip subset of ``../shared/data/cifar10-subset`` (4,000 train images = the
first 4000 of data_batch_1, 1,000 test images = the first 1000 of test_batch; each PNG row is one
flattened 32x32x3 image). It has no mirror: point ``--data-dir`` / ``$ELBOLAB_DATA`` at it.
"""

from __future__ import annotations

import functools
import os
import tarfile
import zlib
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from elbolab.data.datasets import ImageDataset
from elbolab.data.download import RemoteFile, RemoteSource, fetch_file
from elbolab.data.errors import DataError

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CIFAR10_TARBALL = "cifar-10-binary.tar.gz"
CIFAR10_DIR = "cifar-10-batches-bin"
CIFAR10_MEMBERS = {
    "train": tuple(f"{CIFAR10_DIR}/data_batch_{i}.bin" for i in range(1, 6)),
    "test": (f"{CIFAR10_DIR}/test_batch.bin",),
}
RECORD_BYTES = 1 + 3 * 32 * 32

CIFAR10 = RemoteSource(
    name="cifar10",
    files=(RemoteFile(CIFAR10_TARBALL, "c32a1d4ab5d03f1284b67883e8d87530", 170052171),),
    mirrors=("https://www.cs.toronto.edu/~kriz/",),
)

CIFAR10_SUBSET = RemoteSource(
    name="cifar10-subset",
    files=(
        RemoteFile("cifar10_batch_0.png", "22905c3a5cc5e101d06a2b6d6087eff0", 2318456),
        RemoteFile("cifar10_batch_1.png", "268c70910bb9bd5055b57d0870f26d63", 2326379),
        RemoteFile("cifar10_batch_2.png", "7276547afd77ffb906d58242360a2534", 2312906),
        RemoteFile("cifar10_batch_3.png", "7daf46aac2cef4fae955f89c83a9c34f", 2328590),
        RemoteFile("cifar10_batch_50.png", "fc6b4e3450caf155c495dd8de98e47bf", 2315890),
        RemoteFile("train_labels_0-3999.txt", "2b4961456ceab6fdc51e959ab8015ce0", 8000),
        RemoteFile("test_labels_0-999.txt", "c86e7e8091164939dca05635ec5f1194", 2000),
    ),
    mirrors=(),
    hint="cifar10-subset has no download mirror: it is the folder ../shared/data/cifar10-subset of the elbolab "
         "developer checkout; pass --data-dir to it (or to ../shared/data).",
)
SUBSET_SPLITS = {
    "train": (("cifar10_batch_0.png", "cifar10_batch_1.png", "cifar10_batch_2.png", "cifar10_batch_3.png"),
              "train_labels_0-3999.txt"),
    "test": (("cifar10_batch_50.png",), "test_labels_0-999.txt"),
}


def decode_cifar10_records(buf: bytes, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Records of a CIFAR-10 ``.bin`` batch -> images (N, 3, 32, 32) uint8 and labels (N,) uint8."""
    if len(buf) == 0 or len(buf) % RECORD_BYTES:
        raise DataError(f"{name}: {len(buf)} bytes is not a whole number of {RECORD_BYTES}-byte CIFAR-10 records "
                        "(1 label byte + 3072 pixel bytes); the file is truncated or not a CIFAR-10 binary batch")
    rec = np.frombuffer(buf, np.uint8).reshape(-1, RECORD_BYTES)
    labels = rec[:, 0].copy()
    if labels.max() >= len(CIFAR10_CLASSES):
        raise DataError(f"{name}: label byte {int(labels.max())} is not a CIFAR-10 class (0..9)")
    return rec[:, 1:].reshape(-1, 3, 32, 32).copy(), labels


def read_cifar10_tar(path: str | os.PathLike[str], split: str) -> tuple[np.ndarray, np.ndarray]:
    """Read ``split`` (train: data_batch_1..5, test: test_batch) from the binary tarball as raw bytes.

    Returns images (N, 3, 32, 32) uint8 and labels (N,) uint8. The tar is streamed once; members are never
    extracted to disk and never unpickled. Missing members or a corrupt archive raise :class:`DataError`.
    """
    if split not in CIFAR10_MEMBERS:
        raise ValueError(f"split = {split!r}: expected one of {sorted(CIFAR10_MEMBERS)}")
    wanted = CIFAR10_MEMBERS[split]
    found: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    seen: list[str] = []
    try:
        with tarfile.open(path, mode="r|gz") as tf:
            for member in tf:
                seen.append(member.name)
                if member.name in wanted and member.isfile():
                    fobj = tf.extractfile(member)
                    data = fobj.read() if fobj is not None else b""
                    found[member.name] = decode_cifar10_records(data, f"{path}:{member.name}")
    except (tarfile.TarError, EOFError, OSError, zlib.error) as e:
        raise DataError(f"{path}: corrupt or truncated CIFAR-10 tarball ({e}); delete it and download it again") from None
    missing = [m for m in wanted if m not in found]
    if missing:
        raise DataError(f"{path}: members {missing} not found in the tarball (it has {seen[:10]}"
                        f"{' ...' if len(seen) > 10 else ''}); expected the binary version {CIFAR10_TARBALL}")
    images = np.concatenate([found[m][0] for m in wanted])
    labels = np.concatenate([found[m][1] for m in wanted])
    return images, labels


@functools.lru_cache(maxsize=4)
def _read_tar_cached(md5: str, path: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    images, labels = read_cifar10_tar(path, split)
    images.flags.writeable = False
    labels.flags.writeable = False
    return images, labels


def _dataset(images: np.ndarray, labels: np.ndarray, name: str, limit: int) -> ImageDataset:
    n = min(limit, len(images)) if limit > 0 else len(images)
    return ImageDataset(torch.from_numpy(np.array(images[:n])), torch.from_numpy(labels[:n].astype(np.int64)),
                        name=name, class_names=CIFAR10_CLASSES)


def load_cifar10(split: str, *, limit: int = 0, data_dir: str | os.PathLike[str] | None = None,
                 download: bool = True, mirrors: Sequence[str] | None = None,
                 source: RemoteSource | None = None) -> ImageDataset:
    """``cifar10``: (N, 3, 32, 32) uint8, N = 50,000 (train) or 10,000 (test), 10 classes.

    ``source`` defaults to :data:`CIFAR10` (the canonical tarball, MD5 and mirror).
    """
    source = source or CIFAR10
    f = fetch_file(source, CIFAR10_TARBALL, data_dir=data_dir, download=download, mirrors=mirrors)
    images, labels = _read_tar_cached(f.md5, str(f.path), split)
    return _dataset(images, labels, source.name, limit)


def _read_png_strip(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        arr = np.asarray(im.convert("RGB"))
    if arr.shape[1:] != (32 * 32, 3):
        raise DataError(f"{path}: expected rows of 1024 RGB pixels (one 32x32 image each), got shape {arr.shape}")
    return arr.reshape(-1, 32, 32, 3).transpose(0, 3, 1, 2)  # HWC rows -> (N, 3, 32, 32)


def load_cifar10_subset(split: str, *, limit: int = 0, data_dir: str | os.PathLike[str] | None = None) -> ImageDataset:
    """``cifar10-subset``: the PNG strips of ../shared/data/cifar10-subset, 4,000 train / 1,000 test images."""
    if split not in SUBSET_SPLITS:
        raise ValueError(f"split = {split!r}: expected one of {sorted(SUBSET_SPLITS)}")
    strips, label_file = SUBSET_SPLITS[split]
    fetch = functools.partial(fetch_file, CIFAR10_SUBSET, data_dir=data_dir, download=False)
    lab = fetch(label_file)
    labels = np.array([int(s) for s in lab.path.read_text().split()], dtype=np.int64)
    n_wanted = min(limit, len(labels)) if limit > 0 else len(labels)
    parts, have = [], 0
    for s in strips:  # read only the strips the limit needs
        if have >= n_wanted:
            break
        parts.append(_read_png_strip(fetch(s).path))
        have += len(parts[-1])
    images = np.concatenate(parts)
    if len(images) < n_wanted or (limit <= 0 and len(images) != len(labels)):
        raise DataError(f"cifar10-subset {split}: {len(images)} images but {len(labels)} labels in {lab.path}")
    return _dataset(images, labels, CIFAR10_SUBSET.name, n_wanted)
