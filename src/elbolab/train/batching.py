"""Deterministic mini-batches that a resumed (or distributed) run reproduces exactly.

Epoch ``e`` visits the examples in the order ``randperm(N)`` drawn from a generator seeded by ``(seed, e)``
alone; the global batch ``b`` of the epoch is ``perm[b * B:(b + 1) * B]`` (the last partial batch is
dropped, so every step sees ``B`` examples). With ``W`` processes, rank ``r`` takes the strided slice
``perm[b * B + r:(b + 1) * B:W]`` of the same global batch. The stream's whole state is ``(epoch,
position)`` (``position``: examples of the epoch consumed) plus the generator handed to ``dataset.batch``,
so a checkpoint can resume mid-epoch on exactly the next batch.

Datasets: anything with ``__len__`` and either a fast ``batch(idx: LongTensor, generator) -> (x, y)`` (the
``elbolab.data`` datasets; ``generator`` draws e.g. dequantisation noise) or map-style ``__getitem__``
returning ``(x, y)``, ``(x,)`` or ``x``, stacked with ``default_collate`` (a ``TensorDataset`` is indexed
directly, with the same result).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Sampler, TensorDataset, default_collate


def derive_seed(seed: int, *keys: int) -> int:
    """A well-mixed 63-bit seed for the random stream ``keys`` (e.g. rank and purpose) of a run seeded ``seed``."""
    a, b = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, *(int(k) for k in keys)]).generate_state(2, np.uint32)
    return int(a) << 31 | int(b) >> 1


def epoch_permutation(n: int, seed: int, epoch: int) -> Tensor:
    """The order ``(N,)`` long in which epoch ``epoch`` of a run seeded ``seed`` visits ``n`` examples."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(derive_seed(seed, 0xE90C, epoch)))


def _split(item: Any) -> tuple[Tensor, Tensor | None]:
    if isinstance(item, Tensor):
        return item, None
    if isinstance(item, (tuple, list)) and len(item) in (1, 2):
        return item[0], (item[1] if len(item) == 2 else None)
    raise ValueError(
        f"a dataset batch must be x or (x, y); got a {type(item).__name__}"
        + (f" of length {len(item)}" if isinstance(item, (tuple, list)) else "")
    )


class _IndexLists(Sampler[list[int]]):
    """Yields the local index lists of the remaining batches of one epoch (for a DataLoader with workers)."""

    def __init__(self, stream: BatchStream, epoch: int, position: int) -> None:
        self.stream, self.epoch, self.position = stream, epoch, position

    def __iter__(self) -> Iterator[list[int]]:
        perm = epoch_permutation(self.stream.n, self.stream.seed, self.epoch)
        for start in range(self.position, self.stream.batches_per_epoch * self.stream.batch_size,
                           self.stream.batch_size):
            yield self.stream.local_indices(perm, start).tolist()

    def __len__(self) -> int:
        return self.stream.batches_per_epoch - self.position // self.stream.batch_size


class BatchStream:
    """Endless deterministic mini-batches of ``dataset`` for one process.

    ``batch_size``: the global batch B (split across ``world_size`` ranks; must divide evenly).
    ``generator``: CPU generator passed to ``dataset.batch`` (its state is part of :meth:`state_dict`).
    ``num_workers``: worker processes for datasets without ``batch()`` (0 = load in this process).
    """

    def __init__(self, dataset: Any, batch_size: int, seed: int, rank: int = 0, world_size: int = 1,
                 generator: torch.Generator | None = None, num_workers: int = 0) -> None:
        if batch_size <= 0:
            raise ValueError(f"batch_size = {batch_size} must be > 0")
        if batch_size % world_size:
            raise ValueError(f"batch_size = {batch_size} is not divisible by the {world_size} processes: "
                             "the global batch is split evenly across ranks")
        self.n = len(dataset)
        if self.n < batch_size:
            raise ValueError(f"the dataset has {self.n} examples, fewer than batch_size = {batch_size}")
        self.dataset = dataset
        self.batch_size = batch_size
        self.seed = seed
        self.rank, self.world_size = rank, world_size
        self.generator = generator if generator is not None else torch.Generator().manual_seed(seed)
        self.num_workers = num_workers
        self.batches_per_epoch = self.n // batch_size
        self.epoch = 0
        self.position = 0
        self._fast = callable(getattr(dataset, "batch", None))
        self._perm: tuple[int, Tensor] | None = None
        self._loader_iter: Iterator[Any] | None = None

    @property
    def progress(self) -> float:
        """Passes over the data completed, fractional (``epoch + position / (batches_per_epoch * B)``)."""
        return self.epoch + self.position / (self.batches_per_epoch * self.batch_size)

    def local_indices(self, perm: Tensor, start: int) -> Tensor:
        """This rank's indices ``(B / world_size,)`` of the global batch starting at ``perm[start]``."""
        return perm[start + self.rank:start + self.batch_size:self.world_size]

    def _permutation(self) -> Tensor:
        if self._perm is None or self._perm[0] != self.epoch:
            self._perm = (self.epoch, epoch_permutation(self.n, self.seed, self.epoch))
        return self._perm[1]

    def next(self) -> tuple[Tensor, Tensor | None]:
        """The next local batch ``x: (B / world_size, ...)`` and ``y: (B / world_size,)`` or None."""
        if self._fast:
            idx = self.local_indices(self._permutation(), self.position)
            x, y = _split(self.dataset.batch(idx, generator=self.generator))
        elif isinstance(self.dataset, TensorDataset):  # index the tensors at once (same result as collating)
            idx = self.local_indices(self._permutation(), self.position)
            x, y = _split(tuple(t[idx] for t in self.dataset.tensors))
        elif self.num_workers > 0:
            if self._loader_iter is None:
                loader = DataLoader(self.dataset, batch_sampler=_IndexLists(self, self.epoch, self.position),
                                    num_workers=self.num_workers)
                self._loader_iter = iter(loader)
            x, y = _split(next(self._loader_iter))
        else:
            idx = self.local_indices(self._permutation(), self.position)
            x, y = _split(default_collate([self.dataset[i] for i in idx.tolist()]))
        self.position += self.batch_size
        if self.position + self.batch_size > self.n:
            self.epoch += 1
            self.position = 0
            self._loader_iter = None
        return x, y

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "position": self.position, "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        epoch, position = int(state["epoch"]), int(state["position"])
        if position % self.batch_size or position + self.batch_size > self.n:
            # e.g. the batch size changed: restart the epoch rather than read past its end
            position = 0 if position + self.batch_size > self.n else position - position % self.batch_size
        self.epoch, self.position = epoch, position
        self.generator.set_state(state["generator"])
        self._loader_iter = None
