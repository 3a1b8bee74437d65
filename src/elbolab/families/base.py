"""What a model family provides to the generic run operations of :mod:`elbolab.runs`.

A family is one module that subclasses :class:`ModelFamily` and registers an instance
(:func:`elbolab.families.register`). It names its config dataclass (the run's ``[model]`` section), builds the
network and the training objective, lists its samplers as a name -> :class:`SamplerSpec` table (function and
options dataclass), and says what else it can do (:class:`Capabilities`): a likelihood bound in bits/dim,
diagnostics, a Gaussian diffusion for the applications. Training, checkpoints, sample grids and metrics are
shared (``elbolab.train``, ``elbolab.evaluate``) and live elsewhere; a family module holds only what differs.
"""

from __future__ import annotations

import abc
import dataclasses
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, ClassVar

import torch
from torch import Tensor, nn

from elbolab.config import ConfigError, RunConfig, _field_types, coerce, validate
from elbolab.evaluate.pipeline import BoundFn
from elbolab.evaluate.samples import SampleBatch
from elbolab.objectives import AdversarialObjective, LossOutput, Objective

if TYPE_CHECKING:
    from elbolab.diffusion.guidance import LabelDraw
    from elbolab.diffusion import GaussianDiffusion
    from elbolab.runs import Run

logger = logging.getLogger(__name__)



@dataclass(frozen=True)
class NoOptions:
    """Options of a sampler that has none (one generator or decoder pass)."""


@dataclass(frozen=True)
class SamplerSpec:
    """One entry of a family's sampler table: ``fn`` draws samples, ``options`` is the dataclass of its settings
    (written as ``[sample.<name>]``; every field has a default), ``help`` one line for ``--help`` and errors.

    The call convention of ``fn`` is the family's own (the diffusion families: ``fn(model, shape, diffusion, *,
    generator, cond, **options) -> SampleResult``); the family's :meth:`ModelFamily.sample` makes the call."""

    fn: Callable[..., Any]
    options: type = NoOptions
    help: str = ""


@dataclass
class SampleRequest:
    """How to sample a trained run: ``sampler`` (None: the run's ``sample.sampler``) and ``options`` that
    override fields of that sampler's options (``{"steps": 20}``), a ``seed``, a class ``label`` and a
    classifier-free ``guidance`` weight for conditional models, and how the labels of a conditional model's
    samples are chosen when no ``label`` is given (``labels``: "cycle" or "prior", see
    :data:`elbolab.diffusion.guidance.LabelDraw`); ``n`` samples drawn ``batch_size`` at a time."""

    n: int = 64
    sampler: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    label: int | None = None
    guidance: float | None = None
    batch_size: int = 256
    labels: LabelDraw = "cycle"

    def __post_init__(self) -> None:
        if self.n <= 0:
            raise ValueError(f"n = {self.n} must be > 0")
        if self.batch_size <= 0:
            raise ValueError(f"batch_size = {self.batch_size} must be > 0")
        from elbolab.diffusion.guidance import check_label_draw
        check_label_draw(self.labels)
        self.options = {k: v for k, v in self.options.items() if v is not None}


@dataclass(frozen=True)
class Capabilities:
    """What a family can do beyond training: ``sample`` (it has samplers), ``bound`` (the bits/dim method of its
    likelihood bound, None = none), ``exact_likelihood`` (how it computes log p(x) exactly, None = not at all),
    ``diagnostics`` (``elbolab eval --iwae/--active-units/--probe``), ``diffusion`` (a Gaussian diffusion behind
    the applications: inpainting, progressive generation, shared latents, DDIM inversion)."""

    sample: bool
    bound: str | None
    exact_likelihood: str | None = None
    diagnostics: bool = False
    diffusion: bool = False


@dataclass
class DiagnosticsRequest:
    """``elbolab eval`` diagnostics: ``iwae`` (K of an IWAE_K likelihood on the first ``n`` test images, 0 = off),
    ``active_units`` and a linear ``probe`` of the encoder's code."""

    iwae: int = 0
    n: int = 1000
    active_units: bool = False
    probe: bool = False
    seed: int = 0
    progress: bool = True


class ModelFamily(abc.ABC):
    """The family-specific part of a run. Subclass, set the class attributes, implement the abstract methods
    and ``register(MyFamily())``; ``docs/adding-a-family.md`` walks through it.

    ``name``: the run's ``family``; ``config_cls``: the dataclass of its ``[model]`` section; ``samplers`` and
    ``default_sampler``: its sampler table; ``bpd_method``: how its bound handles 8-bit data (None = no bound);
    ``tiny_overrides``: ``--set`` items that shrink its networks for the contract test."""

    name: ClassVar[str]
    config_cls: ClassVar[type]
    samplers: ClassVar[Mapping[str, SamplerSpec]] = {}
    default_sampler: ClassVar[str] = ""
    bpd_method: ClassVar[str | None] = None
    exact_likelihood: ClassVar[str | None] = None
    tiny_overrides: ClassVar[tuple[str, ...]] = ()
    supports_guidance: ClassVar[bool] = False  # sample.guidance / SampleRequest.guidance (classifier-free guidance)

    # ---- required -------------------------------------------------------------------------------
    @abc.abstractmethod
    def adapt_to_data(self, cfg: RunConfig, image_shape: tuple[int, int, int], num_classes: int) -> RunConfig:
        """``cfg`` with the network's input shape set from the data (logged when it changes)."""

    @abc.abstractmethod
    def build_model(self, cfg: RunConfig) -> nn.Module: ...

    @abc.abstractmethod
    def build_objective(self, cfg: RunConfig) -> Objective | AdversarialObjective: ...

    # ---- optional -------------------------------------------------------------------------------
    def sample(self, cfg: RunConfig, model: nn.Module, n: int, generator: torch.Generator,
               request: SampleRequest) -> SampleBatch:
        """``n`` samples ``images: (n, C, H, W)`` in [-1, 1] with the sampler and options of ``request``."""
        raise self._cannot_sample()

    def _cannot_sample(self) -> ValueError:
        return ValueError(f"family {self.name!r} cannot sample (it has no samplers); families that can: "
                          f"{', '.join(_families_with('sample'))}")

    def bound_fn(self, cfg: RunConfig, model: nn.Module, exact: bool) -> BoundFn | None:
        """Per-image likelihood bound in bits/dim (``exact``: the tight / all-terms version), or None."""
        return None

    def diffusion(self, cfg: RunConfig) -> GaussianDiffusion | None:
        """The Gaussian diffusion of a diffusion run (for the applications), None for other families."""
        return None

    def probability_flow(self, cfg: RunConfig, model: nn.Module) -> tuple[nn.Module, GaussianDiffusion] | None:
        """``(network, diffusion)`` whose probability-flow ODE is the model's (``eval --nll ode``): a network
        called like a DDPM's ``(x_t, t, y)`` on that diffusion; None for a family without one. The default is
        the run's own network on :meth:`diffusion`."""
        diffusion = self.diffusion(cfg)
        return None if diffusion is None else (model, diffusion)

    def num_classes(self, cfg: RunConfig) -> int:
        """Classes of a class-conditional model (0 = unconditional)."""
        return 0

    def image_shape(self, cfg: RunConfig) -> tuple[int, int, int]:
        """(C, H, W) of the run's images."""
        raise ValueError(f"family {self.name!r} does not say its image shape")

    def diagnostics(self, run: Run, request: DiagnosticsRequest) -> Any:
        raise ValueError(f"family {self.name!r} has no diagnostics (--iwae/--active-units/--probe); families "
                         f"that have: {', '.join(_families_with('diagnostics'))}")

    def upgrade_legacy_model(self, sections: dict[str, Any], model_fields: list[str]) -> dict[str, Any]:
        """The ``[model]`` dict from a format-1 config's top-level sections (:mod:`elbolab.families.legacy`)."""
        from elbolab.families.legacy import legacy_model

        return legacy_model(sections, model_fields)

    def upgrade_legacy_sample(self, sample: dict[str, Any]) -> dict[str, Any]:
        """The ``[sample]`` dict from a format-1 config's ``[sample]`` table."""
        from elbolab.families.legacy import legacy_sample

        return legacy_sample(sample, self)

    @property
    def capabilities(self) -> Capabilities:
        cls = type(self)
        return Capabilities(sample=bool(self.samplers), bound=self.bpd_method,
                            exact_likelihood=self.exact_likelihood,
                            diagnostics=cls.diagnostics is not ModelFamily.diagnostics,
                            diffusion=cls.diffusion is not ModelFamily.diffusion)

    # ---- shared helpers -------------------------------------------------------------------------
    def sampler_options(self, cfg: RunConfig, request: SampleRequest) -> tuple[str, Any]:
        """(sampler name, its options dataclass): the run's ``[sample.<name>]`` with ``request.options`` applied.

        A sampler the family lacks, or an option its sampler lacks, is a ValueError that lists what exists."""
        if not self.samplers:
            raise self._cannot_sample()
        name = request.sampler or cfg.sample.sampler or self.default_sampler
        if name not in self.samplers:
            raise ValueError(f"sampler {name!r} is not a sampler of family {self.name!r}; choices: "
                             f"{', '.join(self.samplers)}")
        opts = cfg.sample.options.get(name) or self.samplers[name].options()
        if request.options:
            types_ = _field_types(type(opts))
            bad = sorted(set(request.options) - set(types_))
            if bad:
                raise ValueError(
                    f"sampler {name!r} of family {self.name!r} has no option {', '.join(map(repr, bad))}; its "
                    f"options: {', '.join(types_) or 'none'} (the family's samplers: {', '.join(self.samplers)})")
            try:
                changes = {k: coerce(v, types_[k], f"{name}.{k}") for k, v in request.options.items()}
                opts = dataclasses.replace(opts, **changes)
                validate(opts, f"sample.{name}")
            except ConfigError as e:
                raise ValueError(str(e)) from None
        return name, opts


def options_kwargs(options: Any) -> dict[str, Any]:
    """An options dataclass as keyword arguments of its sampler function."""
    return {f.name: getattr(options, f.name) for f in dataclasses.fields(options)}


def _families_with(capability: str) -> list[str]:
    from elbolab.families import all_families

    return [f.name for f in all_families() if getattr(f.capabilities, capability)]


class DropLabels(Objective):
    """An objective that trains unconditionally: forwards ``loss`` with ``y = None`` (and the state dict)."""

    def __init__(self, objective: Objective) -> None:
        self.objective = objective

    def loss(self, model: nn.Module, x: Tensor, y: Tensor | None, generator: torch.Generator) -> LossOutput:
        return self.objective.loss(model, x, None, generator)

    def state_dict(self) -> dict[str, Tensor]:
        return self.objective.state_dict()

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
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
