"""The small interface every model family plugs into the Trainer with (dependency-free: torch only).

A family (DDPM, VAE, NCSN, GAN, ...) provides an :class:`Objective`: a loss for a batch. The Trainer owns
the optimiser, EMA, precision, checkpoints and distribution; the objective owns the mathematics.

Conventions:
- ``model(x, t, y)`` style calls are the objective's business; the Trainer only hands it ``model``.
- All randomness inside ``loss`` comes from ``generator`` (a ``torch.Generator`` on the batch's device),
  so that a resumed run draws the same noise as an uninterrupted one.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn


@dataclass
class LossOutput:
    """``loss``: scalar tensor to minimise; ``metrics``: floats to log (detached, per batch)."""

    loss: Tensor
    metrics: dict[str, float] = field(default_factory=dict)


class Stateful:
    """State an objective keeps between steps (e.g. the loss-aware timestep sampler's history): saved in the
    checkpoint and restored on resume. The default is stateless: an empty dict, and loading refuses state."""

    def state_dict(self) -> dict[str, Tensor]:
        return {}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        if state:
            raise ValueError(f"{type(self).__name__} keeps no state, but the checkpoint holds {sorted(state)}")


class Objective(Stateful, abc.ABC):
    """A single loss per batch (DDPM, VAE, score models, PixelCNN, ...): subclass and implement :meth:`loss`."""

    @abc.abstractmethod
    def loss(self, model: nn.Module, x: Tensor, y: Tensor | None, generator: torch.Generator) -> LossOutput:
        """x: (B, C, H, W) float in [-1, 1] (or (B, D) for toy data); y: (B,) long labels or None."""


# --------------------------------------------------------------------------------------------------
# Several optimisers: adversarial families (GANs) and any objective with alternating updates
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ParamGroup:
    """The share of the model one optimiser updates, with optional per-group optimiser settings.

    ``modules``: dotted names of submodules of the model (``model.get_submodule(name)``), e.g.
    ``("discriminator",)``; ``""`` names the whole model. Groups must not share parameters.
    ``lr`` / ``betas`` / ``weight_decay``: AdamW settings of this group; ``None`` takes the value of
    ``TrainConfig`` (e.g. WGAN-GP uses ``betas=(0.0, 0.9)``, TTUR a larger discriminator ``lr``). The learning-rate
    warm-up of ``TrainConfig.warmup_steps`` scales every group's ``lr``.
    """

    modules: tuple[str, ...]
    lr: float | None = None
    betas: tuple[float, float] | None = None
    weight_decay: float | None = None


@dataclass(frozen=True)
class UpdatePhase:
    """One entry of a training step's plan: ``repeats`` optimiser updates of parameter group ``group``.

    ``new_batch``: each of those updates draws the next batch of real data (``True``; e.g. every critic
    update of WGAN-GP sees fresh data) or reuses the batch drawn last (``False``; e.g. a generator update that
    only needs the labels of a batch). The first phase of a step must use ``new_batch=True``.
    """

    group: str
    repeats: int = 1
    new_batch: bool = True


class AdversarialObjective(Stateful, abc.ABC):
    """An objective with several optimisers that update in turn (GANs: discriminator/critic and generator).

    One *training step* of the Trainer runs the whole plan, e.g. for WGAN-GP with ``n_critic = 5``::

        def update_plan(self):
            return [UpdatePhase("discriminator", repeats=5), UpdatePhase("generator", 1, new_batch=False)]

    For each update of a phase the Trainer zeroes all gradients, freezes (``requires_grad=False``) the
    parameters of every other group, calls ``group_loss(group, model, x, y, generator)``, checks the loss is
    finite, back-propagates, averages gradients across processes, clips the group's gradient norm and steps
    the group's AdamW. The loss of the generator may therefore flow through the (frozen) discriminator, and
    the discriminator's loss should ``detach()`` generated samples it does not need gradients for.

    ``ema_group()`` names the group whose weights get an exponential moving average (``"generator"``), or
    ``None`` for no EMA. ``TrainConfig.steps`` counts plan executions (generator steps); the logged ``loss``
    is the loss of the plan's last phase, and ``loss/<group>`` the mean loss of each group in the step.

    As for :class:`Objective`, ``state_dict() -> dict`` and ``load_state_dict(dict)`` hold state the objective
    keeps between steps (saved in the checkpoint, restored on resume; :class:`Stateful` has none).
    """

    @abc.abstractmethod
    def param_groups(self) -> dict[str, ParamGroup]:
        """Group name -> :class:`ParamGroup`, e.g. ``{"discriminator": ParamGroup(("discriminator",)), ...}``."""

    @abc.abstractmethod
    def update_plan(self) -> list[UpdatePhase]:
        """The phases of one training step, in order (``(group, repeats)`` tuples are accepted too)."""

    @abc.abstractmethod
    def ema_group(self) -> str | None:
        """Name of the group to keep an EMA of (its submodules' parameters and buffers), or None."""

    @abc.abstractmethod
    def group_loss(self, group: str, model: nn.Module, x: Tensor, y: Tensor | None,
                   generator: torch.Generator) -> LossOutput:
        """Loss minimised by ``group``'s optimiser; x: (B, C, H, W) (or (B, D)); y: (B,) long labels or None."""


class SingleLoss(AdversarialObjective):
    """Presents a single-loss :class:`Objective` as an :class:`AdversarialObjective` with one group.

    The group ``"model"`` is the whole model, updated once per step, with an EMA of all its weights; the
    Trainer runs every family through this one code path.
    """

    GROUP = "model"

    def __init__(self, objective: Objective) -> None:
        self.objective = objective

    def param_groups(self) -> dict[str, ParamGroup]:
        return {self.GROUP: ParamGroup(modules=("",))}

    def update_plan(self) -> list[UpdatePhase]:
        return [UpdatePhase(self.GROUP, 1)]

    def ema_group(self) -> str | None:
        return self.GROUP

    def group_loss(self, group: str, model: nn.Module, x: Tensor, y: Tensor | None,
                   generator: torch.Generator) -> LossOutput:
        return self.objective.loss(model, x, y, generator)

    def state_dict(self) -> dict[str, Tensor]:
        return self.objective.state_dict()

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        self.objective.load_state_dict(state)


def as_adversarial(objective: Objective | AdversarialObjective) -> AdversarialObjective:
    """``objective`` as an :class:`AdversarialObjective` (a single-loss :class:`Objective` is wrapped).

    Raises TypeError when it implements neither interface.
    """
    if isinstance(objective, AdversarialObjective):
        return objective
    if isinstance(objective, Objective):
        return SingleLoss(objective)
    raise TypeError(
        f"{type(objective).__name__} is not a training objective: subclass elbolab.objectives.Objective "
        "(loss(model, x, y, generator)) or elbolab.objectives.AdversarialObjective "
        "(param_groups/update_plan/ema_group/group_loss)"
    )


def validate_plan(objective: AdversarialObjective) -> tuple[dict[str, ParamGroup], list[UpdatePhase]]:
    """The objective's groups and plan, checked: phases name declared groups, repeats >= 1, etc."""
    groups = dict(objective.param_groups())
    if not groups:
        raise ValueError(f"{type(objective).__name__}.param_groups() is empty: declare at least one group")
    for name, g in groups.items():
        if not isinstance(g, ParamGroup):
            raise ValueError(f"param group {name!r}: expected a ParamGroup, got {type(g).__name__}")
        if not g.modules:
            raise ValueError(f"param group {name!r} names no modules (use ('',) for the whole model)")
        if g.lr is not None and g.lr <= 0:
            raise ValueError(f"param group {name!r}: lr = {g.lr!r} must be > 0")
        if g.weight_decay is not None and g.weight_decay < 0:
            raise ValueError(f"param group {name!r}: weight_decay = {g.weight_decay!r} must be >= 0")
        if g.betas is not None and (len(g.betas) != 2 or not all(0.0 <= b < 1.0 for b in g.betas)):
            raise ValueError(f"param group {name!r}: betas = {g.betas!r} must be two numbers in [0, 1)")
    plan = [p if isinstance(p, UpdatePhase) else UpdatePhase(*p) for p in objective.update_plan()]
    if not plan:
        raise ValueError(f"{type(objective).__name__}.update_plan() is empty: list at least one UpdatePhase")
    for p in plan:
        if p.group not in groups:
            raise ValueError(f"update plan names group {p.group!r}; declared groups: {', '.join(groups)}")
        if not isinstance(p.repeats, int) or p.repeats < 1:
            raise ValueError(f"update phase {p.group!r}: repeats = {p.repeats!r} must be an integer >= 1")
    if not plan[0].new_batch:
        raise ValueError(f"the first update phase ({plan[0].group!r}) must draw a batch: new_batch=True")
    ema = objective.ema_group()
    if ema is not None and ema not in groups:
        raise ValueError(f"ema_group() = {ema!r} is not a declared group; declared: {', '.join(groups)}")
    return groups, plan
