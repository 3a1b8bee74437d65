"""In-memory datasets with a fast batch accessor: :class:`ImageDataset` (images) and :class:`PointDataset` (toy R^D).

Both hold every example in one tensor, so the trainer draws a batch with one indexing operation
(``ds.batch(idx, generator)``) instead of B calls to ``__getitem__``. Labels are int64, ``-1`` meaning
"unlabelled"; ``num_classes`` is 0 for unlabelled data.
"""

from __future__ import annotations

import abc
from typing import Sequence

import torch
from torch.utils.data import Dataset

from elbolab.data.transforms import dequantize, to_float


def _as_index(idx: torch.Tensor | Sequence[int], n: int) -> torch.Tensor:
    idx = torch.as_tensor(idx, dtype=torch.long)
    if idx.ndim != 1:
        raise ValueError(f"batch index must be 1-D (B,), got shape {tuple(idx.shape)}")
    if idx.numel() and (int(idx.min()) < -n or int(idx.max()) >= n):
        raise ValueError(f"batch index out of range for a dataset of {n} examples: "
                         f"min {int(idx.min())}, max {int(idx.max())}")
    return idx


class LabelledDataset(Dataset, abc.ABC):
    """N examples with labels ``(N,) int64`` (-1 = unlabelled), ``class_names`` and a batch accessor."""

    name: str
    labels: torch.Tensor
    class_names: tuple[str, ...]
    num_classes: int
    is_8bit: bool

    def _init_labels(self, n: int, labels: torch.Tensor | None, class_names: Sequence[str],
                     num_classes: int | None) -> None:
        if labels is None:
            labels = torch.full((n,), -1, dtype=torch.long)
        labels = torch.as_tensor(labels).to(torch.long)
        if labels.shape != (n,):
            raise ValueError(f"labels must have shape ({n},), got {tuple(labels.shape)}")
        self.labels = labels
        self.class_names = tuple(class_names)
        if num_classes is None:
            num_classes = len(self.class_names) if self.class_names else (int(labels.max()) + 1 if n else 0)
        self.num_classes = max(int(num_classes), 0)
        if n and int(labels.max()) >= max(self.num_classes, 0):
            raise ValueError(f"label {int(labels.max())} >= num_classes = {self.num_classes}")
        if n and int(labels.min()) < -1:
            raise ValueError(f"labels must be >= -1 (-1 = unlabelled), got {int(labels.min())}")

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def _check_item(self, i: int) -> int:
        n = len(self)
        if not -n <= int(i) < n:
            raise IndexError(f"index {i} out of range for a dataset of {n} examples")
        return int(i)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x, y)``: one example as float and its label, an int64 scalar tensor."""
        x, y = self.batch(torch.tensor([self._check_item(i)]))
        return x[0], y[0]

    @abc.abstractmethod
    def batch(self, idx: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x: (B, ...) float, y: (B,) int64)`` for indices ``idx: (B,) long``."""

    def class_counts(self) -> list[int]:
        """Number of examples per class 0..num_classes-1 (unlabelled examples are not counted)."""
        lab = self.labels[self.labels >= 0]
        return torch.bincount(lab, minlength=self.num_classes).tolist() if self.num_classes else []


class ImageDataset(LabelledDataset):
    """Images ``(N, C, H, W)``, square, stored as ``torch.uint8`` (8-bit data) or float in [-1, 1].

    ``batch`` and ``__getitem__`` return float32 in [-1, 1] (``to_float``). With ``dequantize=True`` (8-bit
    only) ``batch`` adds uniform noise within each level's bin (see ``elbolab.data.transforms``), drawn from
    the ``generator`` it is given; ``__getitem__`` never adds noise.
    ``skipped`` lists files that could not be read and were skipped while loading (``on_error="skip"``).
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor | None = None, *, name: str = "images",
                 class_names: Sequence[str] = (), num_classes: int | None = None, dequantize: bool = False,
                 skipped: Sequence[str] = ()) -> None:
        if images.ndim != 4:
            raise ValueError(f"{name}: images must have shape (N, C, H, W), got {tuple(images.shape)}")
        if images.shape[2] != images.shape[3]:
            raise ValueError(f"{name}: images must be square, got H x W = {images.shape[2]} x {images.shape[3]}")
        if images.dtype != torch.uint8 and not torch.is_floating_point(images):
            raise ValueError(f"{name}: images must be torch.uint8 (8-bit) or float in [-1, 1], got {images.dtype}")
        if dequantize and images.dtype != torch.uint8:
            raise ValueError(f"{name}: dequantize=True needs 8-bit (uint8) images, got {images.dtype}")
        self.images = images
        self.name = name
        self.is_8bit = images.dtype == torch.uint8
        self.dequantize = bool(dequantize)
        self.skipped = tuple(skipped)
        self._init_labels(int(images.shape[0]), labels, class_names, num_classes)

    @property
    def channels(self) -> int:
        return int(self.images.shape[1])

    @property
    def image_size(self) -> int:
        return int(self.images.shape[2])

    @property
    def shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        return (self.channels, self.image_size, self.image_size)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x: (C, H, W) float32 in [-1, 1], y: int64 scalar)``, never dequantised (that needs a generator)."""
        i = self._check_item(i)
        x = self.images[i]
        return (to_float(x) if self.is_8bit else x.float()), self.labels[i]

    def batch(self, idx: torch.Tensor | Sequence[int],
              generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``x: (B, C, H, W)`` float32 in [-1, 1] (dequantised when ``self.dequantize``), ``y: (B,)`` int64.

        ``generator`` is required when ``self.dequantize`` is set (it draws the dequantisation noise).
        """
        idx = _as_index(idx, len(self))
        raw = self.images[idx]
        if not self.is_8bit:
            return raw.float(), self.labels[idx]
        if self.dequantize:
            if generator is None:
                raise ValueError(f"{self.name}: dequantize=True draws noise: pass a torch.Generator to batch()")
            return dequantize(raw, generator), self.labels[idx]
        return to_float(raw), self.labels[idx]

    def subset(self, idx: torch.Tensor | Sequence[int]) -> "ImageDataset":
        """A new dataset holding examples ``idx`` (copied), same metadata."""
        idx = _as_index(idx, len(self))
        return ImageDataset(self.images[idx], self.labels[idx], name=self.name, class_names=self.class_names,
                            num_classes=self.num_classes, dequantize=self.dequantize, skipped=self.skipped)

    def __repr__(self) -> str:
        return (f"ImageDataset(name={self.name!r}, n={len(self)}, shape={self.shape}, "
                f"dtype={self.images.dtype}, num_classes={self.num_classes}, dequantize={self.dequantize})")


class PointDataset(LabelledDataset):
    """Points ``(N, D)`` of a toy distribution (float32), with optional labels (e.g. the mixture component)."""

    is_8bit = False

    def __init__(self, points: torch.Tensor, labels: torch.Tensor | None = None, *, name: str = "points",
                 class_names: Sequence[str] = (), num_classes: int | None = None) -> None:
        if points.ndim != 2 or not torch.is_floating_point(points):
            raise ValueError(f"{name}: points must be a float tensor (N, D), got {points.dtype} {tuple(points.shape)}")
        self.points = points
        self.name = name
        self._init_labels(int(points.shape[0]), labels, class_names, num_classes)

    @property
    def dim(self) -> int:
        return int(self.points.shape[1])

    @property
    def shape(self) -> tuple[int]:
        """(D,) of one point."""
        return (self.dim,)

    def batch(self, idx: torch.Tensor | Sequence[int],
              generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``x: (B, D)`` float32, ``y: (B,)`` int64 (``generator`` is unused: no noise is added)."""
        idx = _as_index(idx, len(self))
        return self.points[idx].float(), self.labels[idx]

    def __repr__(self) -> str:
        return f"PointDataset(name={self.name!r}, n={len(self)}, dim={self.dim}, num_classes={self.num_classes})"
