"""Ancestral sampling of a PixelCNN, one sub-pixel at a time (van den Oord et al. 2016a, Sec. 2).

For i = 1..D in raster-then-channel order: run the network on the canvas drawn so far, read the
distribution of sub-pixel i and draw it from ``generator``. D = C H W network passes for the whole batch
(no activation caching). The one economy: for a pixel in row r the pass runs on the band of rows
``r - row_reach .. r`` only (:attr:`GatedPixelCNN.row_reach`; rows below are never read, rows above the
band are outside the receptive field), which gives the same distribution as the full image and is tested
against it (``crop=False`` runs the full canvas). The result records the wall-clock seconds honestly
(``time.perf_counter`` around the loop, after a CUDA synchronise).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from elbolab.autoregressive.distributions import from_levels

logger = logging.getLogger(__name__)

__all__ = ["PixelCNNSamples", "sample"]


@dataclass(frozen=True)
class PixelCNNSamples:
    """``images: (n, C, H, W)`` in [-1, 1] on the level grid, ``levels``: the same as long level indices,
    ``labels: (n,)`` or None, ``nfe``: network passes per image batch (C H W), ``seconds``: wall time of
    the whole draw, ``seconds_per_image = seconds / n``."""

    images: Tensor
    levels: Tensor
    labels: Tensor | None
    nfe: int
    seconds: float
    seconds_per_image: float


def _labels(model: nn.Module, n: int, generator: torch.Generator, device: torch.device,
            label: Tensor | int | None) -> Tensor | None:
    k = getattr(model, "num_classes", 0)
    if not k:
        if label is not None:
            raise ValueError(f"label = {label!r}: this PixelCNN is unconditional (num_classes = 0)")
        return None
    if label is None:
        return torch.randint(k, (n,), generator=generator, device=device)
    if isinstance(label, int):
        if not 0 <= label < k:
            raise ValueError(f"label = {label}: this PixelCNN has classes 0..{k - 1}")
        return torch.full((n,), label, dtype=torch.long, device=device)
    if label.shape != (n,):
        raise ValueError(f"labels must have shape ({n},), got {tuple(label.shape)}")
    return label.to(device).long()


@torch.no_grad()
def sample(model: nn.Module, n: int, shape: Sequence[int] | None, generator: torch.Generator,
           label: Tensor | int | None = None, crop: bool = True) -> PixelCNNSamples:
    """Draw ``n`` images of ``shape = (C, H, W)`` (None: the model's ``image_shape``) sub-pixel by sub-pixel.

    ``label``: a class for all n, an ``(n,)`` tensor, or None (a conditional model then draws labels
    uniformly from ``generator`` first). Every draw comes from ``generator`` (same seed, same images).
    ``crop``: run each pass on the band of rows in reach (see the module docstring), else on the full canvas.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n = {n!r} must be a positive integer")
    if not isinstance(generator, torch.Generator):
        raise ValueError(f"sampling draws random numbers: pass a torch.Generator, got {generator!r}")
    shape = tuple(int(s) for s in (shape if shape is not None else model.image_shape))
    if len(shape) != 3 or any(s < 1 for s in shape) or shape[0] != model.in_channels:
        raise ValueError(f"shape = {shape} must be (C, H, W) with C = {model.in_channels} and H, W >= 1")
    param = next(model.parameters())
    device, dtype = param.device, param.dtype
    was_training = model.training
    model.eval()
    c, height, width = shape
    y = _labels(model, n, generator, device, label)
    levels = torch.zeros((n, c, height, width), dtype=torch.long, device=device)
    canvas = from_levels(levels, model.num_levels, dtype)
    reach = getattr(model, "row_reach", None) if crop else None
    start = time.perf_counter()
    for r in range(height):
        lo = 0 if reach is None else max(0, r - reach)
        for q in range(width):
            for ch in range(c):
                params = model(canvas[:, :, lo:r + 1], y)[:, :, ch, r - lo, q]  # (n, P)
                probs = model.output.level_log_probs(params.double()).exp()  # (n, L)
                k = torch.multinomial(probs, 1, generator=generator).squeeze(1)
                levels[:, ch, r, q] = k
                canvas[:, ch, r, q] = from_levels(k, model.num_levels, dtype)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    model.train(was_training)
    nfe = math.prod(shape)
    logger.info("PixelCNN: %d images of %s in %.2f s (%.3f s/image, %d network passes)",
                n, shape, seconds, seconds / n, nfe)
    return PixelCNNSamples(images=canvas, levels=levels, labels=y, nfe=nfe, seconds=seconds,
                           seconds_per_image=seconds / n)
