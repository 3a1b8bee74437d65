"""Network evaluations per call of a model (the exact NFE count every sampler reports)."""

from __future__ import annotations

from torch import nn


def nfe_per_call(model: nn.Module) -> int:
    """How many network evaluations one call of ``model`` costs: a model may declare it as ``nfe_per_call``
    (classifier-free guidance: 2, both branches in one batched pass); wrappers pass their inner model's count on;
    any other network costs 1."""
    return int(getattr(model, "nfe_per_call", 1))
