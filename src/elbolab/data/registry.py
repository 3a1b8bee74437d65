"""Dataset names -> loaders: :func:`load_dataset` (from a ``DataConfig``) and :func:`dataset_info`.

Names (``DataConfig.name``):

- ``mnist-embedded`` (default): the MNIST test set shipped in the package; single split, ``train`` = first
  ``10000 - holdout`` images, ``test`` = last ``holdout`` (see ``elbolab.data.mnist``).
- ``mnist``, ``fashion-mnist``: the original IDX files, splits ``train`` (60,000) / ``test`` (10,000).
- ``cifar10``: the canonical binary tarball, ``train`` (50,000) / ``test`` (10,000).
- ``cifar10-subset``: the PNG-strip subset of ``../shared/data/cifar10-subset`` (4,000 / 1,000).
- ``imagefolder:PATH``: PNG/JPEG files under PATH, class sub-folders as labels (see ``elbolab.data.imagefolder``).
- toy distributions (``elbolab.data.toy.ToyName``): ``gaussian-mixture``, ``two-moons``, ``swiss-roll``,
  ``checkerboard``, ``mixture-1d``; ``limit`` points (default 10,000) drawn with seed 0 (train) / 1 (test),
  returned as a :class:`PointDataset` ``(N, D)``.

For the two-split datasets ``holdout`` is not used. ``limit`` keeps the first N examples of the split,
``channels`` converts grey <-> RGB, ``image_size`` resizes (antialiased, kept 8-bit), ``dequantize`` turns on
uniform dequantisation in ``ImageDataset.batch``.
"""

from __future__ import annotations

import enum
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence, Union

import torch

from elbolab.config import DataConfig, validate
from elbolab.data import cifar, mnist
from elbolab.data.datasets import ImageDataset, PointDataset
from elbolab.data.download import (
    ChecksumStatus,
    FileStatus,
    RemoteSource,
    VerifiedFile,
    check_files,
    fetch_file,
    md5_file,
)
from elbolab.data.errors import DataError
from elbolab.data.imagefolder import load_image_folder
from elbolab.data.toy import ToyName, load_toy_dataset
from elbolab.data.transforms import convert_channels, resize_uint8

IMAGEFOLDER_PREFIX = "imagefolder:"
TOY_DEFAULT_SIZE = 10000
TOY_SEEDS = {"train": 0, "test": 1}
SPLITS = ("train", "test")


class DatasetName(str, enum.Enum):
    """Built-in image datasets (besides ``imagefolder:PATH`` and the toy names)."""

    MNIST_EMBEDDED = "mnist-embedded"
    MNIST = "mnist"
    FASHION_MNIST = "fashion-mnist"
    CIFAR10 = "cifar10"
    CIFAR10_SUBSET = "cifar10-subset"


def remote_source(name: DatasetName) -> RemoteSource | None:
    """The canonical files and mirrors of a built-in dataset; None for the embedded one."""
    return {
        DatasetName.MNIST: mnist.MNIST,
        DatasetName.FASHION_MNIST: mnist.FASHION_MNIST,
        DatasetName.CIFAR10: cifar.CIFAR10,
        DatasetName.CIFAR10_SUBSET: cifar.CIFAR10_SUBSET,
    }.get(name)

AnyDataset = Union[ImageDataset, PointDataset]


def dataset_names() -> list[str]:
    """Every accepted ``DataConfig.name`` pattern."""
    return [d.value for d in DatasetName] + [IMAGEFOLDER_PREFIX + "PATH"] + [t.value for t in ToyName]


def _parse(name: str) -> DatasetName | ToyName | Path:
    if name.startswith(IMAGEFOLDER_PREFIX):
        path = name[len(IMAGEFOLDER_PREFIX):]
        if not path:
            raise DataError("imagefolder: needs a folder, e.g. imagefolder:/data/faces")
        return Path(path).expanduser()
    for enum_cls in (DatasetName, ToyName):
        try:
            return enum_cls(name)
        except ValueError:
            pass
    raise DataError(f"unknown dataset {name!r}; choices: {', '.join(dataset_names())}")


def _files_for_split(name: DatasetName, split: str) -> tuple[str, ...]:
    if name in (DatasetName.MNIST, DatasetName.FASHION_MNIST):
        return mnist.split_files(split)
    if name is DatasetName.CIFAR10:
        return (cifar.CIFAR10_TARBALL,)
    strips, labels = cifar.SUBSET_SPLITS[split]
    return (*strips, labels)


def _finish(ds: ImageDataset, cfg: DataConfig) -> ImageDataset:
    """Apply ``channels``, ``image_size`` and ``dequantize`` of ``cfg`` (``limit`` is applied by the loaders)."""
    images = ds.images
    if cfg.channels:
        images = convert_channels(images, cfg.channels)
    if cfg.image_size and cfg.image_size != ds.image_size:
        if images.dtype != torch.uint8:
            raise ValueError(f"{ds.name}: image_size resizing is implemented for 8-bit datasets only")
        images = resize_uint8(images, cfg.image_size)
    return ImageDataset(images, ds.labels, name=ds.name, class_names=ds.class_names, num_classes=ds.num_classes,
                        dequantize=cfg.dequantize, skipped=ds.skipped)


def load_dataset(cfg: DataConfig | str | None = None, *, data_dir: str | os.PathLike[str] | None = None,
                 download: bool = True, mirrors: Sequence[str] | None = None) -> AnyDataset:
    """Load the dataset described by ``cfg`` (a ``DataConfig``, or just a name with default settings).

    Image datasets give an :class:`ImageDataset` ``(N, C, H, W)`` (uint8 for 8-bit data; ``batch`` yields float in
    [-1, 1]); toy names give a :class:`PointDataset` ``(N, D)``. ``data_dir`` overrides ``cfg.data_dir``;
    ``download=False`` never touches the network; ``mirrors`` replaces the download base URLs.
    Raises :class:`DataError` for unknown names and missing/corrupt files (with the fix in the message).
    """
    if cfg is None:
        cfg = DataConfig()
    elif isinstance(cfg, str):
        cfg = DataConfig(name=cfg)
    validate(cfg)
    data_dir = data_dir or cfg.data_dir or None
    kind = _parse(cfg.name)
    if isinstance(kind, ToyName):
        if cfg.image_size or cfg.channels or cfg.dequantize:
            raise ValueError(f"{cfg.name} is a toy distribution in R^D: image_size, channels and dequantize must be "
                             f"left at 0/false, got {cfg.image_size}, {cfg.channels}, {cfg.dequantize}")
        g = torch.Generator().manual_seed(TOY_SEEDS[cfg.split])
        return load_toy_dataset(kind, cfg.limit or TOY_DEFAULT_SIZE, g)
    if isinstance(kind, Path):
        ds = load_image_folder(kind, image_size=cfg.image_size, channels=cfg.channels, split=cfg.split,
                               holdout=cfg.holdout, limit=cfg.limit, on_error=cfg.on_error, name=cfg.name)
    elif kind is DatasetName.MNIST_EMBEDDED:
        ds = mnist.load_embedded(cfg.split, holdout=cfg.holdout, limit=cfg.limit)
    elif kind is DatasetName.MNIST:
        ds = mnist.load_idx_source(mnist.MNIST, mnist.MNIST_CLASSES, cfg.split, limit=cfg.limit,
                                   data_dir=data_dir, download=download, mirrors=mirrors)
    elif kind is DatasetName.FASHION_MNIST:
        ds = mnist.load_idx_source(mnist.FASHION_MNIST, mnist.FASHION_MNIST_CLASSES, cfg.split, limit=cfg.limit,
                                   data_dir=data_dir, download=download, mirrors=mirrors)
    elif kind is DatasetName.CIFAR10:
        ds = cifar.load_cifar10(cfg.split, limit=cfg.limit, data_dir=data_dir, download=download, mirrors=mirrors)
    else:
        ds = cifar.load_cifar10_subset(cfg.split, limit=cfg.limit, data_dir=data_dir)
    return _finish(ds, cfg)


def download_dataset(name: str, data_dir: str | os.PathLike[str] | None = None, *,
                     mirrors: Sequence[str] | None = None) -> tuple[VerifiedFile, ...]:
    """Make sure every file of a built-in dataset is present and verified (downloading into the cache what is
    missing); returns where each file is. The embedded dataset only has its packaged files verified."""
    kind = _parse(name)
    if not isinstance(kind, DatasetName):
        raise DataError(f"{name!r} has no files to download: only {', '.join(d.value for d in DatasetName)} do")
    source = remote_source(kind)
    if source is None:
        mnist.load_embedded("train", holdout=0, limit=1)  # verifies both packaged files
        return tuple(VerifiedFile(p, spec.md5) for p, spec in mnist.embedded_files())
    return tuple(fetch_file(source, f.filename, data_dir=data_dir, mirrors=mirrors) for f in source.files)


# --------------------------------------------------------------------------------------------------
# dataset_info
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SplitInfo:
    """Number of examples of one split and its per-class counts (class 0 first)."""

    split: str
    count: int
    class_counts: tuple[int, ...]


@dataclass(frozen=True)
class DatasetInfo:
    """What ``elbolab data info NAME`` prints. ``splits`` is empty when the files are missing or corrupt."""

    name: str
    shape: tuple[int, ...]  # one example: (C, H, W) for images, (D,) for toy data; () if unavailable
    dtype: str  # storage dtype, e.g. "uint8"
    is_8bit: bool
    raw_range: tuple[float, float]  # min / max stored value (0..255 for 8-bit data)
    value_range: tuple[float, float]  # min / max as the library sees it (8-bit scaled to [-1, 1])
    class_names: tuple[str, ...]
    splits: tuple[SplitInfo, ...]
    files: tuple[FileStatus, ...]
    notes: tuple[str, ...] = ()

    def split(self, name: str) -> SplitInfo:
        for s in self.splits:
            if s.split == name:
                return s
        raise KeyError(f"{self.name} has no split {name!r}; available: {[s.split for s in self.splits]}")

    def to_text(self) -> str:
        lines = [f"dataset   {self.name}"]
        if self.shape:
            kind = "8-bit" if self.is_8bit else "float"
            lines.append(f"shape     {self.shape} per example, {self.dtype} ({kind})")
            lines.append(f"values    stored {self.raw_range[0]:g}..{self.raw_range[1]:g}, "
                         f"as float [{self.value_range[0]:.4g}, {self.value_range[1]:.4g}]")
        if self.class_names:
            lines.append(f"classes   {len(self.class_names)}: {', '.join(self.class_names)}")
        if self.splits:
            w = max([5] + [len(s.split) for s in self.splits])
            lines.append("splits    " + f"{'split':<{w}}  {'count':>6}  per-class counts")
            for s in self.splits:
                counts = " ".join(str(c) for c in s.class_counts) or "(unlabelled)"
                lines.append("          " + f"{s.split:<{w}}  {s.count:>6}  {counts}")
        if self.files:
            lines.append("files     checksum (MD5)")
            fw = max(len(f.filename) for f in self.files)
            for f in self.files:
                where = f.path or "(not found)"
                extra = f"  actual {f.actual_md5}, expected {f.expected_md5}" if f.status is ChecksumStatus.MISMATCH else ""
                lines.append(f"          {f.status.value:<8}  {f.filename:<{fw}}  {where}{extra}")
        lines += [f"note      {n}" for n in self.notes]
        return "\n".join(lines)


def _summarise(name: str, loaded: dict[str, AnyDataset], files: Sequence[FileStatus],
               notes: list[str]) -> DatasetInfo:
    if not loaded:
        return DatasetInfo(name, (), "", False, (0.0, 0.0), (0.0, 0.0), (), (), tuple(files), tuple(notes))
    first = next(iter(loaded.values()))
    tensors = [d.images if isinstance(d, ImageDataset) else d.points for d in loaded.values()]
    lo = min(float(t.min()) for t in tensors if t.numel())
    hi = max(float(t.max()) for t in tensors if t.numel())
    raw = tensors[0]
    if first.is_8bit:
        vrange = (lo / 127.5 - 1.0, hi / 127.5 - 1.0)
    else:
        vrange = (lo, hi)
    splits = tuple(SplitInfo(s, len(d), tuple(d.class_counts())) for s, d in loaded.items())
    return DatasetInfo(name, tuple(first.shape), str(raw.dtype).replace("torch.", ""), first.is_8bit, (lo, hi),
                       vrange, first.class_names, splits, tuple(files), tuple(notes))


def dataset_info(name: str, data_dir: str | os.PathLike[str] | None = None, *, download: bool = False,
                 mirrors: Sequence[str] | None = None) -> DatasetInfo:
    """Counts per split, shape, value range, per-class counts and the checksum status of every file.

    Does not download unless ``download=True``: missing or corrupt files are reported in ``files`` and the
    splits they belong to are left out (with a note saying how to fix it).
    """
    kind = _parse(name)
    notes: list[str] = []
    loaded: dict[str, AnyDataset] = {}
    files: list[FileStatus] = []
    source = remote_source(kind) if isinstance(kind, DatasetName) else None
    if source is not None and isinstance(kind, DatasetName):
        if not download:
            files = check_files(source, data_dir)
            bad = {f.filename for f in files if f.status is not ChecksumStatus.OK}
        else:
            bad = set()
        for split in SPLITS:
            missing = [f for f in _files_for_split(kind, split) if f in bad]
            if missing:
                notes.append(f"split {split!r} unavailable: {', '.join(missing)} missing or corrupt; "
                             + ("load it once (downloads into the cache) or pass --data-dir to a folder holding the "
                                "original files" if source.mirrors else source.hint))
                continue
            loaded[split] = load_dataset(DataConfig(name=name, split=split), data_dir=data_dir, download=download,
                                         mirrors=mirrors)
        if download:
            files = check_files(source, data_dir)
    elif kind is DatasetName.MNIST_EMBEDDED:
        for path, spec in mnist.embedded_files():
            actual = md5_file(path)
            status = ChecksumStatus.OK if actual == spec.md5 else ChecksumStatus.MISMATCH
            files.append(FileStatus(spec.filename, str(path), spec.md5, actual, status))
        loaded["all"] = mnist.load_embedded("train", holdout=0)
        notes.append(f"single split: split='train' is the first 10000 - holdout images, split='test' the last "
                     f"holdout (default {DataConfig().holdout}); the MNIST test set, CC BY-SA 3.0, "
                     "LeCun, Cortes & Burges")
    elif isinstance(kind, Path):
        ds = load_image_folder(kind, holdout=0, on_error="skip", name=name)
        loaded["all"] = ds
        notes.append("single split: split='test' holds out `holdout` images by a fixed permutation (seed 0); "
                     f"images resized and centre-cropped to {ds.image_size}x{ds.image_size}")
        if ds.skipped:
            notes.append(f"{len(ds.skipped)} unreadable file(s) skipped, e.g. {ds.skipped[0]}")
    else:
        for split in SPLITS:
            loaded[split] = load_dataset(DataConfig(name=name, split=split))
        notes.append(f"toy distribution: {TOY_DEFAULT_SIZE} points per split by default (data.limit), "
                     f"seeds {TOY_SEEDS}")
    return _summarise(name, loaded, files, notes)
