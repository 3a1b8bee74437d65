"""The small interface every model family plugs into the Trainer with.

A family (DDPM, VAE, NCSN, GAN, ...) provides an :class:`Objective`: a loss for a batch. The Trainer owns
the optimiser, EMA, precision, checkpoints and distribution; the objective owns the mathematics.

Conventions:
- ``model(x, t, y)`` style calls are the objective's business; the Trainer only hands it ``model``.
- All randomness inside ``loss`` comes from ``generator`` (a ``torch.Generator`` on the batch's device),
  so that a resumed run draws the same noise as an uninterrupted one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor, nn


@dataclass
class LossOutput:
    """``loss``: scalar tensor to minimise; ``metrics``: floats to log (detached, per batch)."""

    loss: Tensor
    metrics: dict[str, float] = field(default_factory=dict)


@runtime_checkable
class Objective(Protocol):
    def loss(self, model: nn.Module, x: Tensor, y: Tensor | None, generator: torch.Generator) -> LossOutput:
        """x: (B, C, H, W) float in [-1, 1] (or (B, D) for toy data); y: (B,) long labels or None."""
        ...
