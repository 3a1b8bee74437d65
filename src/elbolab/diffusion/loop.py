"""The one reverse loop: every sampler and application of elbolab walks a sequence of times t_0, t_1, ..., t_N
and moves the state over each pair (t_k, t_{k+1}) with a step function.

    x = run_loop(x, times, step, counter=den, ...)      # step(k, t_k, t_{k+1}, x) -> (x_next, x0_hat)

The loop owns what the samplers share: the trajectory (``xs``, ``x0s``), the callback (one :class:`StepInfo`
per pair), the progress bar, and the exact count of network evaluations (read from ``counter.nfe``, which
the step functions increase through the :class:`Denoiser` they call). What a "time" means is the step's
business: diffusion times t in [0, T] (ancestral, DDIM, the ODE/SDE solvers, Langevin, predictor-corrector),
chain states going up and down (RePaint), ascending times (DDIM inversion) or NCSN noise-level indices.

:class:`Denoiser` is the one model interface for every parameterisation (as k-diffusion's ``external.py``):
``den(x, t)`` calls ``model(x, t, cond)`` once with ``t: (B,)`` (long for integer t, float for fractional t:
the network sees fractional t unrounded) and returns x0_hat and eps_hat at alpha_bar(t) (float64, from
:meth:`GaussianDiffusion.alpha_bar_at`). In the variance-exploding coordinates of the same process
(y = x / alpha, s = sigma / alpha with alpha = sqrt(alpha_bar), sigma = sqrt(1 - alpha_bar)) this is Karras et
al.'s denoiser D(y; s) = x0_hat(alpha y, t(s)), so the VE solvers (euler, heun) and the VP ones (DDIM,
DPM-Solver++) call the same object.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Protocol, Sequence

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from elbolab.diffusion import parameterization as param
from elbolab.diffusion.process import GaussianDiffusion
from elbolab.nn.nfe import nfe_per_call

logger = logging.getLogger(__name__)

__all__ = ["CallCounter", "Denoised", "Denoiser", "NFECounter", "SampleResult", "StepInfo", "run_loop", "time_batch"]


@dataclass(frozen=True)
class SampleResult:
    """What a sampler returns.

    ``sample: (B, ...)`` the final x_0; ``nfe``: number of network evaluations (per batch);
    ``timesteps: (S,)`` the visited t in the order visited (descending); with ``return_trajectory=True``
    also ``xs: (S + 1, B, ...)`` = x_{tau_S}, ..., x_0 (the states, starting from the initial noise) and
    ``x0s: (S, B, ...)`` the x0 estimates at each step (progressive generation, Ho et al. 2020 Fig. 6).
    """

    sample: Tensor
    nfe: int
    timesteps: Tensor
    xs: Tensor | None = None
    x0s: Tensor | None = None


@dataclass(frozen=True)
class StepInfo:
    """Passed to ``callback`` after each step: step ``index`` (0 = first), ``t`` -> ``t_prev`` (0 = data),
    the new state ``x: (B, ...)`` = x_{t_prev} and the estimate ``x0: (B, ...)`` made at t. ``t`` and
    ``t_prev`` are ints for the integer-time samplers and floats for fractional times."""

    index: int
    t: int | float
    t_prev: int | float
    x: Tensor
    x0: Tensor


Callback = Callable[[StepInfo], None]
StepFn = Callable[[int, float, float, Tensor], "tuple[Tensor, Tensor]"]


class NFECounter(Protocol):
    nfe: int


class CallCounter:
    """Counts network evaluations of ``model``: ``nfe`` grows by ``model.nfe_per_call`` (default 1) per call
    (classifier-free guidance evaluates two branches per call)."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.per_call = nfe_per_call(model)
        self.nfe = 0

    def __call__(self, *args: object) -> Tensor:
        self.nfe += self.per_call
        return self.model(*args)


def time_batch(t: int | float, x: Tensor) -> Tensor:
    """``t`` for every example of ``x: (B, ...)``: ``(B,)`` long for an integer t, else float (float64 for
    float64 data, float32 otherwise) - fractional t reaches the network unrounded."""
    if isinstance(t, int) and not isinstance(t, bool):
        return torch.full((x.shape[0],), t, dtype=torch.long, device=x.device)
    dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    return torch.full((x.shape[0],), float(t), dtype=dtype, device=x.device)


@dataclass(frozen=True)
class Denoised:
    """One network evaluation at (x, t): ``x0``, ``eps`` (x's shape and dtype), the raw network ``out`` and
    ``alpha_bar`` = alpha_bar(t) (0-dim float64)."""

    x0: Tensor
    eps: Tensor
    out: Tensor
    alpha_bar: Tensor


class Denoiser(CallCounter):
    """x0_hat and eps_hat of ``model`` (any parameterisation of ``diffusion``) at ``(x, t)``; counts NFE.

    ``cond: (B,)`` labels or None, passed as ``y``. ``clip_x0`` clips x0_hat to [-1, 1] (images) and
    recomputes eps_hat from it. t is a Python int or float in (0, T], checked by the sampler that builds the
    time grid, not here.
    """

    def __init__(self, model: nn.Module, diffusion: GaussianDiffusion, cond: Tensor | None = None, *,
                 clip_x0: bool = False) -> None:
        super().__init__(model)
        self.diffusion, self.cond, self.clip_x0 = diffusion, cond, bool(clip_x0)
        self._abar: dict[float, Tensor] = {}

    def alpha_bar(self, t: int | float) -> Tensor:
        """alpha_bar(t), 0-dim float64, memoised per t (a sampler asks for the same t more than once)."""
        key = float(t)
        a = self._abar.get(key)
        if a is None:
            a = self.diffusion.alpha_bar_at(key) if key > 0 else torch.ones((), dtype=torch.float64)
            self._abar[key] = a
        return a

    def __call__(self, x: Tensor, t: int | float) -> Denoised:  # type: ignore[override]
        out = super().__call__(x, time_batch(t, x), self.cond)
        if out.shape != x.shape:
            raise ValueError(f"model output has shape {tuple(out.shape)} but x_t has shape {tuple(x.shape)}")
        abar = self.alpha_bar(t)
        ab = abar.to(x.device) if x.device.type != "mps" else abar.float().to(x.device)
        x0, eps = self.diffusion.split_output(out, x, ab)
        if self.clip_x0:
            x0 = x0.clamp(-1.0, 1.0)
            eps = param.eps_from_x0(x, x0, ab)
        return Denoised(x0, eps, out, abar)


def run_loop(
    x: Tensor,
    times: Sequence[int | float],
    step: StepFn,
    *,
    counter: NFECounter,
    callback: Callback | None = None,
    return_trajectory: bool = False,
    progress: bool = False,
    name: str = "sampler",
    visited: Tensor | None = None,
) -> SampleResult:
    """Walk ``times`` = t_0, ..., t_N: for k = 0..N-1, ``x, x0 = step(k, t_k, t_{k+1}, x)``.

    ``counter.nfe`` after the loop is the result's ``nfe``; ``visited`` (default ``times[:-1]``, the times
    at which the steps start) becomes ``SampleResult.timesteps``. ``x: (B, ...)`` is the initial state.
    """
    xs, x0s = ([x], []) if return_trajectory else (None, None)
    times = list(times)
    pairs = list(zip(times[:-1], times[1:]))
    if pairs:
        logger.debug("%s: %d steps, t = %s -> %s", name, len(pairs), times[0], times[-1])
    for k, (t, t_next) in enumerate(tqdm(pairs, desc=name, disable=not progress, leave=False)):
        x, x0 = step(k, t, t_next, x)
        if xs is not None and x0s is not None:
            xs.append(x)
            x0s.append(x0)
        if callback is not None:
            callback(StepInfo(k, t, t_next, x, x0))
    if visited is None:
        dtype = torch.long if all(isinstance(t, int) for t in times[:-1]) else torch.float64
        visited = torch.tensor(times[:-1], dtype=dtype)
    return SampleResult(
        sample=x,
        nfe=int(counter.nfe),
        timesteps=visited,
        xs=torch.stack(xs) if xs is not None else None,
        x0s=torch.stack(x0s) if x0s is not None and x0s else (x.new_empty((0, *x.shape)) if x0s is not None
                                                                else None),
    )
