"""Progressive generation (Ho et al. 2020, Fig. 6 and Sec. 4.3): the estimate x0_hat(x_t, t) along one reverse
chain. Large-scale features appear first and details last; the chain is also a progressive lossy decoder, whose
distortion ||x0_hat_t - x_0|| falls as t -> 0 (Fig. 5 of the paper, saved in the ``.npz``).

Shapes: ``frames: (F, B, C, H, W)`` with ``timesteps: (F,)`` descending (frame f is x0_hat made at timesteps[f]).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from elbolab.config import coerce
from elbolab.diffusion.config import ReverseSampler
from elbolab.diffusion import samplers
from elbolab.diffusion.process import GaussianDiffusion

logger = logging.getLogger(__name__)

__all__ = ["ProgressiveOutput", "ProgressiveRequest", "ProgressiveResult", "frame_indices",
           "progressive_generation", "progressive_run"]


@dataclass(frozen=True)
class ProgressiveResult:
    """``x0s: (F, B, ...)`` x0_hat at ``timesteps: (F,)`` (descending); ``xs: (F, B, ...)`` the state x_t the
    estimate was made from; ``sample: (B, ...)`` the final x_0; ``distortion: (F,)`` root mean squared
    difference between x0_hat and the final sample, per pixel, averaged over the batch."""

    x0s: Tensor
    xs: Tensor
    timesteps: Tensor
    sample: Tensor
    distortion: Tensor


def frame_indices(num_steps: int, frames: int) -> list[int]:
    """``frames`` indices into a chain of ``num_steps`` steps, evenly spaced, the first and last included."""
    if isinstance(frames, bool) or not isinstance(frames, int) or frames < 2:
        raise ValueError(f"frames = {frames!r} must be an integer >= 2")
    frames = min(frames, num_steps)
    if frames == 1:
        return [0]
    return sorted({round(i * (num_steps - 1) / (frames - 1)) for i in range(frames)})


def progressive_generation(
    model: nn.Module,
    shape: tuple[int, ...],
    diffusion: GaussianDiffusion,
    *,
    generator: torch.Generator,
    steps: int | None = None,
    frames: int = 10,
    sampler: ReverseSampler | str = ReverseSampler.ANCESTRAL,
    clip_x0: bool = False,
) -> ProgressiveResult:
    """Sample ``shape = (B, ...)`` and keep x0_hat at ``frames`` evenly spaced steps of the chain (first and
    last included; the last, made at the lowest timestep, is the sample itself for the ancestral sampler)."""
    sampler = ReverseSampler(sampler)
    fn = samplers.ancestral if sampler is ReverseSampler.ANCESTRAL else samplers.ddim
    res = fn(model, shape, diffusion, steps=steps, generator=generator, clip_x0=clip_x0, return_trajectory=True)
    assert res.x0s is not None and res.xs is not None
    idx = frame_indices(res.x0s.shape[0], frames)
    x0s = res.x0s[idx]
    dist = (x0s - res.sample[None]).pow(2).flatten(2).mean(2).sqrt().mean(1)
    return ProgressiveResult(x0s=x0s, xs=res.xs[idx], timesteps=res.timesteps[idx], sample=res.sample,
                             distortion=dist)


@dataclass
class ProgressiveRequest:
    """``n`` chains, ``frames`` columns, ``steps`` sampler steps (default: the run's T), ``sampler``.
    Writes ``out_dir/progressive.png`` (row = chain, column = time, x0_hat from t = T on the left to t = 1
    on the right), ``progressive_xt.png`` (the states x_t) and ``progressive.npz``."""

    out_dir: str | os.PathLike[str] = "progressive"
    n: int = 8
    frames: int = 10
    steps: int | None = None
    sampler: ReverseSampler | str = ReverseSampler.ANCESTRAL
    seed: int = 0

    def __post_init__(self) -> None:
        self.sampler = coerce(self.sampler, ReverseSampler, "progressive: sampler")
        if self.n < 1:
            raise ValueError(f"progressive: n = {self.n} must be >= 1")


@dataclass
class ProgressiveOutput:
    paths: list[Path] = field(default_factory=list)
    timesteps: list[int] = field(default_factory=list)
    distortion: list[float] = field(default_factory=list)

    def to_text(self) -> str:
        lines = [f"wrote {p}" for p in self.paths]
        pairs = ", ".join(f"t={t}: {d:.3f}" for t, d in zip(self.timesteps, self.distortion))
        lines.append(f"RMS distance of x0_hat to the final sample: {pairs}")
        return "\n".join(lines)


def progressive_run(run, request: ProgressiveRequest) -> ProgressiveOutput:
    """DDPM Fig. 6 for a trained diffusion run."""
    from elbolab.apps.chain import run_diffusion
    from elbolab.apps.io import save_npz
    from elbolab.viz.plots import save_annotated_grid

    diffusion = run_diffusion(run)
    g = torch.Generator(run.device).manual_seed(request.seed)
    res = progressive_generation(run.model, (request.n, *run.family.image_shape(run.config)), diffusion,
                                 generator=g, steps=request.steps, frames=request.frames,
                                 sampler=request.sampler, clip_x0=True)
    out = Path(request.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    labels = [f"t={int(t)}" for t in res.timesteps]
    grid = save_annotated_grid(res.x0s.transpose(0, 1).clamp(-1, 1).cpu(), out / "progressive.png",
                               col_labels=labels, title="progressive generation: x0_hat(x_t, t)")
    grid_xt = save_annotated_grid(res.xs.transpose(0, 1).clamp(-1, 1).cpu(), out / "progressive_xt.png",
                                  col_labels=labels, title="the chain: x_t")
    npz = save_npz(out / "progressive.npz", x0s=res.x0s, xs=res.xs, timesteps=res.timesteps, sample=res.sample,
                   distortion=res.distortion, seed=request.seed)
    return ProgressiveOutput(paths=[grid, grid_xt, npz], timesteps=[int(t) for t in res.timesteps],
                             distortion=[float(d) for d in res.distortion])
