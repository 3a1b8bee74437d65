"""TensorBoard logging of a run (``train.tensorboard = true``): the scalars of every ``metrics.jsonl`` line and
the Trainer's sample grids, written with ``torch.utils.tensorboard`` into ``RUN/tensorboard/``.

``tensorboard`` is an optional extra (``pip install elbolab[tensorboard]``); the core imports without it and
:class:`TensorBoardWriter` says what to install when it is missing. Tags are the ``metrics.jsonl`` keys
unchanged (``loss``, ``lr``, ``grad_norm``, ``mse``, ``loss/generator``, ``img/s``; TensorBoard groups by
the part before the first ``/``), the grids are the image ``samples``, both at the Trainer's step. Only rank 0
writes (the Trainer creates the writer there only).

Watch a run with ``tensorboard --logdir RUN/tensorboard``.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np
from torch import Tensor

logger = logging.getLogger(__name__)

TENSORBOARD_DIR = "tensorboard"
INSTALL_HINT = "pip install elbolab[tensorboard]"
_NOT_SCALARS = {"step"}  # the x axis itself


class TensorBoardUnavailable(ImportError):
    """``tensorboard`` is not installed (it is an optional extra)."""


def _summary_writer_class() -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as e:  # torch raises ImportError when the tensorboard package is missing
        raise TensorBoardUnavailable(
            f"train.tensorboard = true needs the tensorboard package, which is not installed: {INSTALL_HINT} "
            f"(or pip install tensorboard); cause: {e}") from e
    return SummaryWriter


class TensorBoardWriter:
    """Writes scalars and sample grids of a run into ``run_dir/tensorboard/``.

    ``log_scalars(step, record)`` takes one ``metrics.jsonl`` record (its numeric values, ``step`` left out);
    ``log_images(step, images)`` takes the grid's images ``(B, C, H, W)`` in [-1, 1] and tiles them as the
    PNG grids are (or takes that ``(H, W, C)`` uint8 grid).
    Usable as a context manager; :meth:`close` flushes.
    """

    def __init__(self, run_dir: str | os.PathLike[str], *, flush_secs: int = 30) -> None:
        writer_cls = _summary_writer_class()
        self.log_dir = Path(run_dir) / TENSORBOARD_DIR
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._writer = writer_cls(log_dir=str(self.log_dir), flush_secs=flush_secs)
        logger.info("TensorBoard events in %s (tensorboard --logdir %s)", self.log_dir, self.log_dir)

    def log_scalars(self, step: int, record: Mapping[str, Any]) -> int:
        """Every finite number of ``record`` as a scalar at ``step``; returns how many were written."""
        n = 0
        for key, value in record.items():
            if key in _NOT_SCALARS or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            if not math.isfinite(value):
                continue
            self._writer.add_scalar(key, float(value), global_step=int(step))
            n += 1
        return n

    def log_images(self, step: int, images: Tensor | np.ndarray, tag: str = "samples") -> None:
        """The sample grid at ``step``: ``images (B, C, H, W)`` float in [-1, 1], tiled ``ceil(sqrt(B))`` per
        row exactly as the PNG grid (:func:`elbolab.viz.grid.make_grid`), or that grid itself, an
        ``(H, W, C)`` uint8 array. Grey grids are stored as RGB (TensorBoard's image format)."""
        from elbolab.viz.grid import make_grid

        if isinstance(images, Tensor):
            if images.dim() != 4:
                raise ValueError(f"images must be (B, C, H, W), got shape {tuple(images.shape)}")
            grid = make_grid(images.detach().float(), nrow=math.ceil(math.sqrt(images.shape[0])))
        else:
            grid = np.asarray(images)
            if grid.dtype != np.uint8 or grid.ndim != 3:
                raise ValueError(f"a tiled grid must be (H, W, C) uint8, got {grid.dtype} {grid.shape}")
        self._writer.add_image(tag, grid, global_step=int(step), dataformats="HWC")

    def flush(self) -> None:
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()

    def __enter__(self) -> TensorBoardWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
