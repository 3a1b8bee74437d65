"""Classifier-free guidance (Ho & Salimans 2022; lecture notes 001, "Classifier-free Guidance").

One network learns both the conditional eps_theta(x_t, t, y) and, through a learned *null class*, the
unconditional eps_theta(x_t, t) = eps_theta(x_t, t, null): during training the label is replaced by the null
class with probability ``p_uncond`` (:class:`LabelDropout`). Since
grad log p(y | x_t) = grad log p(x_t | y) - grad log p(x_t) = -(eps_theta(x_t, t, y) - eps_theta(x_t, t)) /
sqrt(1 - alpha_bar_t), following the implicit classifier with weight w gives (notes 001)

    eps_bar(x_t, t, y) = eps_theta(x_t, t, y) - sqrt(1 - alpha_bar_t) w grad log p(y | x_t)
                       = (1 + w) eps_theta(x_t, t, y) - w eps_theta(x_t, t).

w = 0 is the conditional model, w = -1 the unconditional one, w > 0 sharpens p(x | y) p(y | x)^w.
:class:`ClassifierFreeGuidance` wraps any conditional model ``model(x, t, y)`` into a guided one with the same
call convention, so every sampler (ancestral, DDIM, predictor-corrector, annealed Langevin) uses it as is.
The combination weights (1 + w, -w) sum to one, and every parameterisation (eps, x0, v, score, or the score
of a noise-conditional network) is an affine function of eps at fixed (x_t, t), so guiding the raw network
output is the same as guiding eps whatever the network predicts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, get_args

import torch
from torch import Tensor, nn

from elbolab.nn.unet import NULL_LABEL  # the label that selects the learned null class (-1)
from elbolab.objectives import LossOutput, Objective
from elbolab.nn.nfe import nfe_per_call

__all__ = ["LABEL_DRAWS", "NULL_LABEL", "ClassifierFreeGuidance", "GuidedSampling", "LabelDraw", "LabelDropout",
           "check_label_draw", "drop_labels", "guided_sampling"]

# How the labels of class-conditional samples without a given label are chosen: "cycle" = 0, 1, ..., K-1, 0, ...
# (balanced: one row per class in a grid, equal counts for per-class accuracy); "prior" = i.i.d. from the
# uniform class prior p(y) = 1/K, i.e. ancestral samples of p(x) = sum_y p(y) p(x | y). Score FID/precision/recall
# on "prior" draws: a cycled set is stratified by class and scores a lower FID than any i.i.d. sample can
# (even real images), which no unconditional model can match.
LabelDraw = Literal["cycle", "prior"]
LABEL_DRAWS: tuple[str, ...] = get_args(LabelDraw)


def check_label_draw(labels: str) -> str:
    """``labels`` if it is one of :data:`LABEL_DRAWS`, else a ValueError naming the choices."""
    if labels not in LABEL_DRAWS:
        raise ValueError(f"labels = {labels!r}: choose one of {', '.join(LABEL_DRAWS)} (cycle = 0..K-1 in turn, "
                         "prior = i.i.d. uniform class draws)")
    return labels


def _check_labels(y: Tensor | None, batch: int, who: str) -> Tensor:
    if y is None:
        raise ValueError(f"{who} needs class labels y: (B,) long; got y = None (unconditional sampling needs no "
                         "guidance: use the model itself, or w = -1)")
    if not isinstance(y, Tensor) or y.shape != (batch,) or y.dtype.is_floating_point or y.dtype == torch.bool:
        raise ValueError(f"{who}: y must be a ({batch},) integer tensor of labels, got "
                         f"{tuple(y.shape) if isinstance(y, Tensor) else type(y).__name__}")
    return y


class ClassifierFreeGuidance(nn.Module):
    """``guided(x, t, y) = (1 + w) model(x, t, y) - w model(x, t, null)`` in one forward pass of batch 2B.

    ``model``: a conditional network with the project's convention ``model(x: (B, ...), t: (B,), y: (B,))``
    whose label ``null_label`` (default -1) selects its learned null class. ``w``: the guidance weight (any
    finite float). Labels equal to ``null_label`` in ``y`` give the unconditional prediction for that row.

    The conditional and unconditional branches are evaluated together on ``cat([x, x])``, ``cat([t, t])``,
    ``cat([y, null])`` (one call, twice the batch) and split. w = 0 and w = -1 need only one branch: one call
    of batch B, so they return exactly ``model(x, t, y)`` and ``model(x, t, null)``. ``nfe_per_call`` (read by
    the samplers' network-evaluation count) is 2, or 1 for w in {0, -1}.
    """

    def __init__(self, model: nn.Module, w: float, null_label: int = NULL_LABEL) -> None:
        super().__init__()
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w):
            raise ValueError(f"guidance weight w = {w!r} must be a finite number (w = 0: conditional, "
                             "w = -1: unconditional, w > 0: stronger guidance)")
        self.model = model
        self.w = float(w)
        self.null_label = int(null_label)

    @property
    def nfe_per_call(self) -> int:
        inner = nfe_per_call(self.model)
        return inner if self.w in (0.0, -1.0) else 2 * inner

    def extra_repr(self) -> str:
        return f"w={self.w}, null_label={self.null_label}"

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        B = x.shape[0]
        y = _check_labels(y, B, "classifier-free guidance")
        null = torch.full_like(y, self.null_label)
        if self.w == 0.0:
            return self.model(x, t, y)
        if self.w == -1.0:
            return self.model(x, t, null)
        out = self.model(torch.cat([x, x]), torch.cat([t, t]), torch.cat([y, null]))
        cond, uncond = out[:B], out[B:]
        return (1.0 + self.w) * cond - self.w * uncond


def drop_labels(y: Tensor, p_uncond: float, generator: torch.Generator, null_label: int = NULL_LABEL) -> Tensor:
    """``y: (B,)`` with each label replaced by ``null_label`` independently with probability ``p_uncond``."""
    if p_uncond <= 0.0:
        return y
    drop = torch.rand(y.shape, generator=generator, device=y.device) < p_uncond
    return torch.where(drop, torch.full_like(y, null_label), y)


class LabelDropout(Objective):
    """Trains one network for both branches of guidance: forwards ``objective.loss(model, x, y', generator)``
    with y' = :func:`drop_labels` (y, ``p_uncond``) (Ho & Salimans 2022, Algorithm 1; p_uncond = 0.1 there).

    Implements :class:`elbolab.objectives.Objective` and forwards ``state_dict`` / ``load_state_dict`` of
    the wrapped objective. ``y = None`` (unlabelled data) is passed through unchanged. The dropout draws come
    from ``generator`` before the wrapped objective draws its own noise.
    """

    def __init__(self, objective: Objective, p_uncond: float = 0.1, null_label: int = NULL_LABEL) -> None:
        if isinstance(p_uncond, bool) or not isinstance(p_uncond, (int, float)) or not 0.0 <= p_uncond < 1.0:
            raise ValueError(f"p_uncond = {p_uncond!r} must be in [0, 1) (the probability of training a batch "
                             "element as unconditional; 0.1 in Ho & Salimans 2022)")
        self.objective = objective
        self.p_uncond = float(p_uncond)
        self.null_label = int(null_label)

    def loss(self, model: nn.Module, x: Tensor, y: Tensor | None, generator: torch.Generator) -> LossOutput:
        """x: (B, C, H, W) (or (B, D)); y: (B,) long labels or None."""
        if y is not None:
            y = drop_labels(y, self.p_uncond, generator, self.null_label)
        return self.objective.loss(model, x, y, generator)

    def state_dict(self) -> dict[str, Tensor]:
        return self.objective.state_dict()

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        self.objective.load_state_dict(state)


@dataclass(frozen=True)
class GuidedSampling:
    """What a sampler needs for (optionally guided) class-conditional sampling: the ``model`` to call (the
    network, or it wrapped in :class:`ClassifierFreeGuidance`) and the ``labels: (n,)`` to pass as ``cond``
    (None for unconditional sampling)."""

    model: nn.Module
    labels: Tensor | None


def guided_sampling(model: nn.Module, num_classes: int, n: int, *, label: int | None = None,
                    w: float | None = None, device: torch.device | str = "cpu", labels: LabelDraw = "cycle",
                    generator: torch.Generator | None = None) -> GuidedSampling:
    """Labels and model for sampling ``n`` examples from a network with ``num_classes`` classes (0 = none).

    - ``label`` given: every example gets it (0 <= label < num_classes);
    - ``w`` given (classifier-free guidance weight): the model is wrapped in :class:`ClassifierFreeGuidance`;
      without ``label`` the examples' labels are drawn as ``labels`` says (:data:`LabelDraw`): ``"cycle"``
      0, 1, ..., K-1, 0, ... (balanced) or ``"prior"`` i.i.d. uniform from ``generator`` (needed then);
    - neither: unconditional (``labels = None``: the null class of a conditional network).
    """
    if label is not None and not 0 <= label < num_classes:
        raise ValueError(f"label = {label}: this model has {num_classes or 'no'} classes"
                         + (f" (labels 0..{num_classes - 1})" if num_classes else ""))
    if w is None:
        labels = None if label is None else torch.full((n,), label, dtype=torch.long, device=device)
        return GuidedSampling(model, labels)
    if not num_classes:
        raise ValueError("classifier-free guidance needs a class-conditional run (unet.num_classes > 0, trained "
                         "with label dropout p_uncond > 0); this run is unconditional")
    check_label_draw(labels)
    if label is not None:
        y = torch.full((n,), label, dtype=torch.long, device=device)
    elif labels == "prior":
        if generator is None:
            raise ValueError('labels = "prior" draws the labels from a torch.Generator: pass generator=')
        y = torch.randint(num_classes, (n,), generator=generator, device=generator.device).to(device)
    else:
        y = torch.arange(n, device=device) % num_classes
    return GuidedSampling(ClassifierFreeGuidance(model, w), y)
