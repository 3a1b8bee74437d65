"""What a model family provides to the generic run operations of :mod:`elbolab.runs`.

A family turns a :class:`~elbolab.config.RunConfig` into a network and a training objective, draws samples
from a trained network, and (when it has a likelihood bound) gives a per-image bound in bits/dim. Training,
checkpoints, sample grids and metrics are shared (``elbolab.train``, ``elbolab.evaluate``) and live
elsewhere; a family module holds only what differs between families.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Any, Callable, Protocol

import torch
from torch import Tensor, nn

from elbolab.config import RunConfig, SamplerKind

logger = logging.getLogger(__name__)

BoundFn = Callable[[Tensor, torch.Generator], dict[str, Tensor]]
"""``bound_fn(x0: (B, C, H, W) in [-1, 1], generator) -> {term name: (B,) bits/dim}``."""


@dataclass
class SampleRequest:
    """How to sample a trained run; ``None`` fields fall back to the run's ``[sample]`` config."""

    n: int = 64
    sampler: SamplerKind | str | None = None
    steps: int | None = None
    eta: float | None = None
    seed: int = 0
    label: int | None = None
    guidance: float | None = None
    batch_size: int = 256

    def __post_init__(self) -> None:
        if self.n <= 0:
            raise ValueError(f"n = {self.n} must be > 0")
        if self.sampler is not None:
            try:
                self.sampler = SamplerKind(self.sampler)
            except ValueError:
                raise ValueError(f"sampler = {self.sampler!r}; choices: "
                                 f"{', '.join(s.value for s in SamplerKind)}") from None
        if self.steps is not None and self.steps <= 0:
            raise ValueError(f"steps = {self.steps} must be > 0")
        if self.eta is not None and not 0.0 <= self.eta <= 1.0:
            raise ValueError(f"eta = {self.eta} must be in [0, 1]")


@dataclass
class SampleBatch:
    """Samples ``images: (N, C, H, W)`` in [-1, 1], optional ``labels: (N,)``, network evaluations ``nfe``
    per sample, and ``method``: how they were drawn (e.g. "ddim-50", "ancestral-1000", "generator")."""

    images: Tensor
    labels: Tensor | None
    nfe: int
    method: str = ""


class FamilySpec(Protocol):
    """The family-specific part of a run. ``image_shape`` is (C, H, W) of the data."""

    bpd_method: str | None  # how bits/dim are computed (None: the family has no likelihood bound)

    def adapt_to_data(self, cfg: RunConfig, image_shape: tuple[int, int, int], num_classes: int) -> RunConfig:
        """Return ``cfg`` with the network's input shape set from the data (logged when it changes)."""
        ...

    def build_model(self, cfg: RunConfig) -> nn.Module: ...

    def build_objective(self, cfg: RunConfig) -> object: ...

    def sample(self, cfg: RunConfig, model: nn.Module, n: int, generator: torch.Generator,
               request: SampleRequest) -> SampleBatch: ...

    def bound_fn(self, cfg: RunConfig, model: nn.Module, exact: bool) -> BoundFn | None: ...


class DropLabels:
    """An objective that trains unconditionally: forwards ``loss`` with ``y = None`` (and the state dict)."""

    def __init__(self, objective: object) -> None:
        self.objective = objective

    def loss(self, model: nn.Module, x: Tensor, y: Tensor | None, generator: torch.Generator):
        return self.objective.loss(model, x, None, generator)

    def state_dict(self) -> dict[str, Tensor]:
        return self.objective.state_dict() if hasattr(self.objective, "state_dict") else {}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        if hasattr(self.objective, "load_state_dict"):
            self.objective.load_state_dict(state)


def with_image_shape(section: Any, image_shape: tuple[int, int, int], what: str) -> Any:
    """``section`` (a config dataclass with ``in_channels`` and ``image_size``) set to the data's square
    ``image_shape`` (C, H, W), logged when it changes; ``what`` names the networks in messages."""
    c, h, w = image_shape
    if h != w:
        raise ValueError(f"the {what} networks need square images, the data has H = {h}, W = {w}")
    if (section.in_channels, section.image_size) != (c, h):
        logger.info("%s data shape set from the data: %d channels, %dx%d (config had %d, %d)",
                    what, c, h, w, section.in_channels, section.image_size)
        section = dataclasses.replace(section, in_channels=c, image_size=h)
    return section


def check_num_classes(configured: int, data_classes: int, key: str) -> None:
    """ValueError when a class-conditional network (``configured`` > 0 classes, config key ``key``) does not
    match the ``data_classes`` of the data (0 = the data has no labels)."""
    if configured and configured != data_classes:
        raise ValueError(f"{key} = {configured} but the data has {data_classes or 'no'} classes "
                         f"(set {key} = {data_classes} or 0 for an unconditional model)")
