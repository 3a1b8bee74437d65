"""Exact log-likelihood of a PixelCNN and its training objective.

The chain rule over sub-pixels in raster-then-channel order (van den Oord et al. 2016a, eq. 1-2),

    log p(x) = sum_{i=1}^{D} log p(x_i | x_1, ..., x_{i-1}),      D = C H W,

is computed in one network pass, because the masks give every output only its past. The data are discrete
(8-bit: L = 256 levels), so p(x) is a probability and -log p(x) / (D ln 2) is the bits/dim of the papers
with no dequantisation and no bound.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from elbolab.autoregressive.distributions import from_levels, to_levels
from elbolab.math import nats_to_bpd
from elbolab.objectives import LossOutput, Objective

__all__ = ["log_likelihood", "bits_per_dim", "PixelCNNObjective"]


def _checked(model: nn.Module, x: Tensor, y: Tensor | None) -> tuple[Tensor, Tensor | None]:
    if not hasattr(model, "output") or not hasattr(model, "num_levels"):
        raise TypeError(f"expected an elbolab.autoregressive.GatedPixelCNN, got {type(model).__name__}")
    return x, model.check_inputs(x, y)


def log_likelihood(model: nn.Module, x: Tensor, y: Tensor | None = None) -> Tensor:
    """log p(x) in nats, ``(B,)``, for ``x: (B, C, H, W)`` in [-1, 1] (rounded to the model's L levels; exact
    for 8-bit data) and labels ``y: (B,)`` of a class-conditional model. Differentiable (no ``no_grad``)."""
    x, y = _checked(model, x, y)
    levels = to_levels(x, model.num_levels)  # (B, C, H, W) long
    params = model(from_levels(levels, model.num_levels, x.dtype), y)  # (B, P, C, H, W)
    if params.dtype in (torch.float16, torch.bfloat16):  # under autocast: normalise the softmax in float32
        params = params.float()
    return model.output.log_prob(params, levels).flatten(1).sum(1)


def bits_per_dim(model: nn.Module, x: Tensor, y: Tensor | None = None) -> Tensor:
    """-log p(x) / (D ln 2) per image, ``(B,)``: the exact negative log-likelihood in bits/dim."""
    return nats_to_bpd(-log_likelihood(model, x, y), math.prod(x.shape[1:]))


class PixelCNNObjective(Objective):
    """Maximum likelihood: ``loss = mean_B(-log p(x)) / D`` (nats per sub-pixel, the softmax cross-entropy).

    Logged: ``nll`` (nats per image) and ``bpd`` (bits/dim, ``= loss / ln 2``). Labels are used only by a
    class-conditional model. The loss draws no randomness (the ``generator`` is unused).
    """

    def loss(self, model: nn.Module, x: Tensor, y: Tensor | None, generator: torch.Generator) -> LossOutput:
        labels = y if getattr(model, "num_classes", 0) else None
        if getattr(model, "num_classes", 0) and y is None:
            raise ValueError("a class-conditional PixelCNN needs labelled data (the batch has no labels)")
        nll = -log_likelihood(model, x, labels)  # (B,) nats
        dims = math.prod(x.shape[1:])
        loss = nll.mean() / dims
        with torch.no_grad():
            mean_nll = float(nll.mean())
            metrics = {"nll": mean_nll, "bpd": float(nats_to_bpd(mean_nll, dims))}
        return LossOutput(loss=loss, metrics=metrics)
