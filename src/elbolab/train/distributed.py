"""Data-parallel training through ``torch.distributed``: ``torchrun --nproc_per_node=N -m elbolab train ...``.

:func:`init_distributed` reads the variables torchrun sets (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR``, ``MASTER_PORT``) and starts the process group: NCCL when the process has a CUDA device,
gloo on CPU. A single process (no ``WORLD_SIZE`` or ``WORLD_SIZE=1``) gets a :class:`DistContext` whose
collectives are no-ops, so the Trainer has one code path.

Gradients are averaged across processes after each backward pass by :func:`all_reduce_gradients` (bucketed
flat all-reduce), the synchronisation ``DistributedDataParallel`` performs, done explicitly rather than by
wrapping the model in ``DistributedDataParallel``: objectives call submodules and methods directly
(``model.encoder(x)``, ``model.generator(z)``, several forward passes per step, parameter groups updated in
turn), and such calls bypass ``DistributedDataParallel.forward``, which would leave gradients silently
unsynchronised. With the per-process loss a mean over the local batch and equal local batches, the averaged
gradient is the gradient of the mean over the global batch, so N processes follow the trajectory of one
process with the same global batch (up to floating-point summation order). Parameters and buffers start
from rank 0's (:func:`broadcast_module`); buffers (BatchNorm statistics) are re-broadcast from rank 0 every
step, as ``DistributedDataParallel(broadcast_buffers=True)`` does.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

logger = logging.getLogger(__name__)

_BUCKET_BYTES = 25 * 1024 * 1024


def select_device(local_rank: int = 0, device: str | torch.device | None = None) -> torch.device:
    """``device`` if given, else ``cuda:<local_rank>`` when CUDA is available, else ``cpu``."""
    if device is not None:
        dev = torch.device(device)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device = {str(device)!r} but CUDA is not available; use 'cpu'")
        return dev
    if torch.cuda.is_available():
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device("cpu")


@dataclass(frozen=True)
class DistContext:
    """Where this process stands: ``rank`` of ``world_size`` processes, its ``device``, the ``backend``."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    backend: str | None = None  # None: single process

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0 does all I/O: checkpoints, metrics, sample grids, the progress bar."""
        return self.rank == 0

    @property
    def comm_device(self) -> torch.device:
        """Device of tensors handed to collectives (CUDA for NCCL, CPU for gloo)."""
        return self.device if self.backend == "nccl" else torch.device("cpu")

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def any(self, flag: bool) -> bool:
        """True on every rank when ``flag`` is true on some rank."""
        return self.any_each([flag])[0]

    def any_each(self, flags: list[bool]) -> list[bool]:
        """Element-wise :meth:`any` of several flags in one collective."""
        return [v > 0 for v in self.max_each([1.0 if f else 0.0 for f in flags])]

    def max_each(self, values: list[float]) -> list[float]:
        """Element-wise maximum over ranks of several numbers in one collective (float64)."""
        if not self.enabled:
            return [float(v) for v in values]
        t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=self.comm_device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return t.tolist()

    def mean(self, values: dict[str, float]) -> dict[str, float]:
        """Average of ``values`` over ranks (every rank must pass the same keys)."""
        if not self.enabled or not values:
            return dict(values)
        keys = sorted(values)
        t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=self.comm_device)
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return {k: float(v) / self.world_size for k, v in zip(keys, t.tolist())}

    def gather(self, obj: Any) -> list[Any]:
        """``obj`` of every rank, in rank order (on every rank)."""
        if not self.enabled:
            return [obj]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out


def init_distributed(device: str | torch.device | None = None, timeout_s: float = 1800.0) -> DistContext:
    """Start (or join) the process group described by torchrun's environment variables.

    Without ``WORLD_SIZE`` (or with 1) returns a single-process context on :func:`select_device`. If a process
    group is already initialised (e.g. by the caller), it is used as it is.
    """
    if dist.is_available() and dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
        local_rank = int(os.environ.get("LOCAL_RANK", rank))
        dev = select_device(local_rank, device)
        return DistContext(rank, world, local_rank, dev, dist.get_backend())
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local_rank = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError as e:
        raise ValueError(f"torchrun environment variables must be integers: {e}") from None
    if world <= 1:
        return DistContext(device=select_device(0, device))
    missing = [v for v in ("MASTER_ADDR", "MASTER_PORT") if v not in os.environ]
    if missing:
        raise ValueError(f"WORLD_SIZE={world} but {', '.join(missing)} unset: launch with torchrun")
    if not 0 <= rank < world:
        raise ValueError(f"RANK={rank} must be in [0, WORLD_SIZE={world})")
    dev = select_device(local_rank, device)
    backend = "nccl" if dev.type == "cuda" else "gloo"
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    from datetime import timedelta

    dist.init_process_group(backend=backend, init_method="env://", rank=rank, world_size=world,
                            timeout=timedelta(seconds=timeout_s))
    logger.info("process group: rank %d of %d, backend %s, device %s", rank, world, backend, dev)
    return DistContext(rank, world, local_rank, dev, backend)


def shutdown_distributed() -> None:
    """Destroy the process group if one is initialised (call once at the end of the program, on every rank).

    A barrier first: a rank that tears gloo down while its peer is still inside the last collective (or has
    already exited) can abort the process ("terminate called without an active exception", seen once in five
    runs of the two-rank test on a loaded 2-core host)."""
    if dist.is_available() and dist.is_initialized():
        try:
            dist.barrier()
        except RuntimeError as e:  # a peer already gone: nothing left to wait for
            logger.warning("shutdown_distributed: barrier failed (%s); destroying the process group anyway", e)
        dist.destroy_process_group()


@torch.no_grad()
def broadcast_module(module: nn.Module, ctx: DistContext, buffers_only: bool = False) -> None:
    """Copy rank 0's parameters (unless ``buffers_only``) and buffers to every rank."""
    if not ctx.enabled:
        return
    tensors = [] if buffers_only else [p.data for p in module.parameters()]
    tensors += [b for b in module.buffers()]
    for t in tensors:
        if ctx.backend == "nccl" or t.device.type == "cpu":
            dist.broadcast(t, src=0)
        else:  # gloo with a CUDA tensor: go through the CPU
            c = t.cpu()
            dist.broadcast(c, src=0)
            t.copy_(c)


@torch.no_grad()
def all_reduce_gradients(params: list[nn.Parameter], ctx: DistContext) -> None:
    """Average ``.grad`` over ranks in place (flat buckets of ~25 MB).

    A parameter whose gradient is ``None`` on some ranks but not on others takes zeros there; one with no
    gradient anywhere keeps ``None`` (the optimiser then skips it on every rank, as in one process).
    """
    if not ctx.enabled or not params:
        return
    has = torch.tensor([0.0 if p.grad is None else 1.0 for p in params], device=ctx.comm_device)
    dist.all_reduce(has, op=dist.ReduceOp.MAX)
    grads: list[Tensor] = []
    for p, h in zip(params, has.tolist()):
        if h == 0.0:
            continue
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        grads.append(p.grad)
    by_dtype: dict[torch.dtype, list[Tensor]] = {}
    for g in grads:
        by_dtype.setdefault(g.dtype, []).append(g)
    for group in by_dtype.values():
        bucket: list[Tensor] = []
        size = 0
        for g in group:
            bucket.append(g)
            size += g.numel() * g.element_size()
            if size >= _BUCKET_BYTES:
                _reduce_bucket(bucket, ctx)
                bucket, size = [], 0
        if bucket:
            _reduce_bucket(bucket, ctx)


def _reduce_bucket(grads: list[Tensor], ctx: DistContext) -> None:
    flat = torch.cat([g.reshape(-1) for g in grads]).to(ctx.comm_device)
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= ctx.world_size
    offset = 0
    for g in grads:
        n = g.numel()
        g.copy_(flat[offset:offset + n].view_as(g))
        offset += n
