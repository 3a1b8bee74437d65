"""Samples that share a latent (Ho et al. 2020, Fig. 7): freeze one x_t and draw several x_0 ~ p_theta(x_0 | x_t).

"When conditioned on the same latent, samples share high-level attributes": x_t is the image x_0 noised by
q(x_t | x_0) = N(sqrt(alpha_bar_t) x_0, (1 - alpha_bar_t) I); at small t the samples are near-copies of x_0, at
large t only coarse structure survives, at t = T they are unrelated samples.

Shapes: ``x0: (1, ...)`` one image; ``samples: (K, N, ...)`` for K times and N samples each.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch
from torch import Tensor, nn

from elbolab.apps.chain import check_time, reverse_from
from elbolab.diffusion.process import GaussianDiffusion

logger = logging.getLogger(__name__)

__all__ = ["SharedLatentOutput", "SharedLatentRequest", "SharedLatentResult", "default_times",
           "shared_latent_run", "shared_latent_samples"]


@dataclass(frozen=True)
class SharedLatentResult:
    """``x_t: (K, ...)`` the frozen latent per time; ``samples: (K, N, ...)`` draws of p_theta(x_0 | x_t);
    ``times: (K,)``; ``spread: (K,)`` mean per-pixel standard deviation across the N samples."""

    x_t: Tensor
    samples: Tensor
    times: Tensor
    spread: Tensor


def default_times(T: int, k: int = 5) -> list[int]:
    """``k`` times from T/k to T, evenly spaced (e.g. 200, 400, ..., 1000 for T = 1000)."""
    return sorted({max(1, round(T * (i + 1) / k)) for i in range(k)})


@torch.no_grad()
def shared_latent_samples(
    model: nn.Module,
    x0: Tensor,
    diffusion: GaussianDiffusion,
    times: Sequence[int],
    n: int,
    *,
    generator: torch.Generator,
    steps: int | None = None,
    clip_x0: bool = False,
) -> SharedLatentResult:
    """For each t in ``times``: x_t ~ q(x_t | x0) once, then ``n`` draws of p_theta(x_0 | x_t) by the ancestral
    reverse chain from t (on ``min(steps, t)`` timesteps; None = all)."""
    if x0.shape[0] != 1:
        raise ValueError(f"shared_latent_samples: x0 must be one example (1, ...), got {tuple(x0.shape)}")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"shared_latent_samples: n = {n!r} must be a positive integer")
    if not len(times):
        raise ValueError("shared_latent_samples: times is empty")
    x_ts, draws = [], []
    for t in times:
        check_time(t, diffusion.T, "time", low=1)
        noise = torch.randn(x0.shape, generator=generator, device=generator.device, dtype=x0.dtype).to(x0.device)
        x_t = diffusion.q_sample(x0, t, noise)
        res = reverse_from(model, x_t.expand(n, *x0.shape[1:]).contiguous(), t, diffusion, generator=generator,
                           steps=steps, clip_x0=clip_x0)
        x_ts.append(x_t[0])
        draws.append(res.sample)
    samples = torch.stack(draws)
    spread = samples.std(1, unbiased=n > 1).flatten(1).mean(1) if n > 1 else torch.zeros(len(times))
    return SharedLatentResult(x_t=torch.stack(x_ts), samples=samples, times=torch.tensor(list(times)),
                              spread=spread)


@dataclass
class SharedLatentRequest:
    """Source: ``image`` (PNG) or test image ``index`` of the run's dataset; ``times`` (default 5 evenly
    spaced up to T); ``n`` samples per time; ``steps`` chain steps (None: every timestep below t).
    Writes ``out_dir/shared_latent.png`` (row = t: the source, x_t, then the samples) and ``.npz``."""

    out_dir: str | os.PathLike[str] = "shared_latent"
    image: str | None = None
    index: int = 0
    times: Sequence[int] | None = None
    n: int = 6
    steps: int | None = None
    seed: int = 0


@dataclass
class SharedLatentOutput:
    paths: list[Path] = field(default_factory=list)
    times: list[int] = field(default_factory=list)
    spread: list[float] = field(default_factory=list)

    def to_text(self) -> str:
        lines = [f"wrote {p}" for p in self.paths]
        pairs = ", ".join(f"t={t}: {s:.3f}" for t, s in zip(self.times, self.spread))
        lines.append(f"per-pixel std across samples of p(x0 | x_t): {pairs}")
        return "\n".join(lines)


def shared_latent_run(run, request: SharedLatentRequest) -> SharedLatentOutput:
    """DDPM Fig. 7 for a trained diffusion run."""
    from elbolab.apps.chain import run_diffusion
    from elbolab.apps.io import save_npz, source_images
    from elbolab.viz.plots import save_annotated_grid

    diffusion = run_diffusion(run)
    x0 = source_images(run.config, request.image, [request.index])[0].to(run.device)
    times = list(request.times) if request.times else default_times(diffusion.T)
    g = torch.Generator(run.device).manual_seed(request.seed)
    res = shared_latent_samples(run.model, x0, diffusion, times, request.n, generator=g, steps=request.steps,
                                clip_x0=True)
    K = len(times)
    rows = torch.cat([x0.expand(K, *x0.shape[1:])[:, None], res.x_t[:, None].clamp(-1, 1),
                      res.samples.clamp(-1, 1)], dim=1).cpu()
    out = Path(request.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    grid = save_annotated_grid(rows, out / "shared_latent.png", row_labels=[f"t={t}" for t in times],
                               col_labels=["x_0", "x_t"] + [f"p(x_0|x_t) #{i + 1}" for i in range(request.n)],
                               title="samples sharing the latent x_t")
    npz = save_npz(out / "shared_latent.npz", x0=x0, x_t=res.x_t, samples=res.samples, times=res.times,
                   spread=res.spread, seed=request.seed)
    return SharedLatentOutput(paths=[grid, npz], times=times, spread=[float(s) for s in res.spread])
