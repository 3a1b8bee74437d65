"""Inpainting with an unconditional diffusion model: RePaint (Lugmayr et al. 2022), and two classical baselines.

Mask convention (everywhere in elbolab): ``mask: (B, 1, H, W)`` (or ``(1, 1, H, W)``, or with C channels) of
0s and 1s, **1 = keep** (a known pixel, copied from the input), **0 = fill in** (missing). The built-in masks
(:class:`MaskKind`) are named after the region that is *missing*: ``center`` (a centred square box),
``left-half`` (the left half of the columns), ``random-pixels`` (each pixel missing with probability
``missing_fraction``). A mask PNG is read as white = keep, black = fill in (:func:`elbolab.apps.io.load_mask_file`).

RePaint (Algorithm 1 of Lugmayr et al. 2022) runs the ordinary reverse chain of an unconditional DDPM, and after
every reverse step x_t -> x_{t-1} replaces the known region with a fresh sample of the forward marginal

    x_{t-1}^known ~ q(x_{t-1} | x_0) = N(sqrt(alpha_bar_{t-1}) x_0, (1 - alpha_bar_{t-1}) I),
    x_{t-1}^unknown ~ p_theta(x_{t-1} | x_t),          x_{t-1} = m * x_{t-1}^known + (1 - m) * x_{t-1}^unknown,

so at t - 1 = 0 the known pixels are exactly those of the input. Because x_{t-1}^unknown was generated without
seeing the known pixels of the same step, the two halves disagree; RePaint "resamples": every ``jump_length``
steps it goes back up ``jump_length`` steps with the forward process q(x_t | x_{t-1}) = N(sqrt(alpha_t) x_{t-1},
beta_t I) and denoises again, ``resample - 1`` extra times (:func:`repaint_schedule`; the jump schedule of the
authors' code, ``jump_length`` j and ``jump_n_sample`` r). With r = 1 it is the plain replacement method (Song
et al. 2021, Appendix I). The chain may be respaced to ``steps`` < T timesteps (as the authors run 250 of
T = 1000).

RePaint is an approximation: the exact conditional reverse step would need q(x_{t-1} | x_t, x_0^known), and the
replacement uses q(x_{t-1} | x_t) instead; resampling shrinks the error but does not remove it. With the exact
denoiser of 8-dim correlated Gaussian data (half the coordinates missing) the exact law of the completions is
0.015-0.02 nats (KL) from the closed-form Gaussian conditional with the authors' setting (250 steps of T = 1000,
j = 10, r = 10), its mean within 0.1 conditional standard deviations, against 0.08-0.3 nats for the plain
replacement method (tests/apps/test_apps_inpainting.py).

Baselines for the benchmark (benchmarks/inpainting.py): :func:`mean_fill` (the data mean in the hole) and
:func:`harmonic_fill` (the steady state of the heat equation inside the hole with the known pixels as
boundary values: the smoothest, "blur" completion).
"""

from __future__ import annotations

import enum
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from elbolab.diffusion.config import Spacing
from elbolab.diffusion.process import GaussianDiffusion
from elbolab.diffusion.loop import Denoiser, run_loop
from elbolab.diffusion.samplers import _ancestral_update, respace, sampling_timesteps

logger = logging.getLogger(__name__)

__all__ = [
    "InpaintOutput",
    "InpaintRequest",
    "InpaintResult",
    "MaskKind",
    "check_mask",
    "harmonic_fill",
    "inpaint_run",
    "make_mask",
    "masked_mse",
    "mean_fill",
    "repaint",
    "repaint_schedule",
]


class MaskKind(str, enum.Enum):
    """Built-in masks, named after the region that is missing (filled in)."""

    CENTER = "center"  # a centred square box of side box_size (default: half the image side)
    LEFT_HALF = "left-half"  # the left floor(W / 2) columns
    RANDOM_PIXELS = "random-pixels"  # each pixel independently, with probability missing_fraction

    @classmethod
    def parse(cls, kind: "MaskKind | str") -> "MaskKind":
        try:
            return cls(kind)
        except ValueError:
            raise ValueError(f"mask kind {kind!r} is not valid: expected one of "
                             f"{', '.join(repr(k.value) for k in cls)}") from None


def make_mask(kind: MaskKind | str, size: tuple[int, int], batch: int = 1, *,
              generator: torch.Generator | None = None, box_size: int | None = None,
              missing_fraction: float = 0.7) -> Tensor:
    """A built-in mask ``(batch, 1, H, W)`` float in {0, 1} with 1 = keep, for images of ``size = (H, W)``.

    ``center``: a centred ``box_size x box_size`` box is missing (default ``min(H, W) // 2``, 14 x 14 on MNIST);
    ``left-half``: columns ``0..W // 2 - 1`` are missing; ``random-pixels``: every pixel is missing
    independently with probability ``missing_fraction`` (needs ``generator``; one draw per image).
    """
    kind = MaskKind.parse(kind)
    h, w = (int(s) for s in size)
    if h < 1 or w < 1 or batch < 1:
        raise ValueError(f"make_mask: size = {tuple(size)} and batch = {batch} must be positive")
    keep = torch.ones(batch, 1, h, w)
    if kind is MaskKind.CENTER:
        side = min(h, w) // 2 if box_size is None else int(box_size)
        if not 1 <= side <= min(h, w):
            raise ValueError(f"make_mask: box_size = {box_size!r} must be in 1..{min(h, w)} for {h}x{w} images")
        top, left = (h - side) // 2, (w - side) // 2
        keep[:, :, top:top + side, left:left + side] = 0.0
    elif kind is MaskKind.LEFT_HALF:
        if w < 2:
            raise ValueError(f"make_mask: left-half needs images at least 2 pixels wide, got W = {w}")
        keep[:, :, :, : w // 2] = 0.0
    else:
        if not 0.0 < missing_fraction < 1.0:
            raise ValueError(f"make_mask: missing_fraction = {missing_fraction!r} must be in (0, 1)")
        if not isinstance(generator, torch.Generator):
            raise ValueError("make_mask: random-pixels masks need an explicit torch.Generator")
        u = torch.rand(batch, 1, h, w, generator=generator, device=generator.device).cpu()
        keep = (u >= missing_fraction).float()
    return keep


def check_mask(mask: Tensor, x: Tensor) -> Tensor:
    """``mask`` as a bool tensor broadcast to ``x: (B, C, H, W)`` (True = keep); ValueError if it is not a
    0/1 tensor of shape (B or 1, 1 or C, H, W)."""
    if not isinstance(mask, Tensor) or mask.ndim != 4:
        raise ValueError(f"mask must be a (B, 1, H, W) tensor of 0/1 (1 = keep), got {getattr(mask, 'shape', mask)}")
    if x.ndim != 4:
        raise ValueError(f"images must have shape (B, C, H, W), got {tuple(x.shape)}")
    B, C, H, W = x.shape
    if mask.shape[2:] != (H, W) or mask.shape[0] not in (1, B) or mask.shape[1] not in (1, C):
        raise ValueError(f"mask of shape {tuple(mask.shape)} does not fit images of shape {tuple(x.shape)}: "
                         f"expected ({B} or 1, 1 or {C}, {H}, {W})")
    if mask.dtype != torch.bool:
        ok = (mask == 0) | (mask == 1)
        if not bool(ok.all()):
            bad = mask[~ok].flatten()[:3].tolist()
            raise ValueError(f"mask values must be exactly 0 (fill in) or 1 (keep), found e.g. {bad}")
        mask = mask == 1
    return mask.to(x.device).expand(B, C, H, W)


def masked_mse(x: Tensor, reference: Tensor, mask: Tensor) -> Tensor:
    """Mean squared error over the missing pixels (mask = 0) of each image, ``(B,)``, in the units of ``x``."""
    keep = check_mask(mask, reference)
    missing = (~keep).float()
    n = missing.flatten(1).sum(1)
    if bool((n == 0).any()):
        raise ValueError("masked_mse: an image has no missing pixels (its mask is all 1)")
    return ((x - reference) ** 2 * missing).flatten(1).sum(1) / n


# --------------------------------------------------------------------------------------------------
# RePaint
# --------------------------------------------------------------------------------------------------
def repaint_schedule(steps: int, jump_length: int = 10, resample: int = 10) -> list[int]:
    """The chain states RePaint visits, from ``steps`` (pure noise) to 0 (the image).

    Going down one state is a reverse step (one network evaluation); going up one is a forward step
    q(x_t | x_{t-1}). At the states 1, 1 + j, 1 + 2j, ... below ``steps - j + 1`` the chain jumps back up
    j = ``jump_length`` states, ``resample - 1`` times each (``get_schedule_jump`` of Lugmayr et al.'s code,
    shifted to t = 1..T). ``resample = 1``: straight down, ``[steps, steps - 1, ..., 0]``.
    """
    for name, v in (("steps", steps), ("jump_length", jump_length), ("resample", resample)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"repaint_schedule: {name} = {v!r} must be a positive integer")
    jumps = {k + 1: resample - 1 for k in range(0, steps - jump_length, jump_length)}
    t = steps
    states = [t]
    while t > 0:
        t -= 1
        states.append(t)
        if jumps.get(t, 0) > 0:
            jumps[t] -= 1
            for _ in range(jump_length):
                t += 1
                states.append(t)
    return states


@dataclass(frozen=True)
class InpaintResult:
    """``sample: (B, C, H, W)`` completed images (known pixels equal the input's exactly); ``mask: (B, C, H, W)``
    bool, True = known; ``nfe``: network evaluations (per batch); ``states: (L,)`` the chain states visited."""

    sample: Tensor
    mask: Tensor
    nfe: int
    states: Tensor


@torch.no_grad()
def repaint(
    model: nn.Module,
    x_known: Tensor,
    mask: Tensor,
    diffusion: GaussianDiffusion,
    *,
    generator: torch.Generator,
    steps: int | None = None,
    jump_length: int = 10,
    resample: int = 10,
    spacing: Spacing | str = Spacing.LINSPACE,
    cond: Tensor | None = None,
    clip_x0: bool = False,
    progress: bool = False,
) -> InpaintResult:
    """Fill in the pixels of ``x_known: (B, C, H, W)`` where ``mask`` is 0 (1 = keep) with RePaint.

    ``steps``: length of the (respaced) chain, default T, timesteps from ``sampling_timesteps(T, steps,
    spacing)`` (``linspace`` starts the chain at t = T exactly). ``jump_length``, ``resample``: see
    :func:`repaint_schedule` (``resample = 1`` turns resampling off). ``clip_x0`` clips x0_hat to [-1, 1]
    (images). The values of ``x_known`` under the missing pixels are never read. Works for any data shape
    ``(B, ...)`` whose mask broadcasts (toy vectors use ``(B, D)`` reshaped to ``(B, 1, 1, D)``).
    """
    if not isinstance(generator, torch.Generator):
        raise ValueError(f"repaint: pass an explicit torch.Generator, got {generator!r}")
    keep = check_mask(mask, x_known)
    T = diffusion.T
    S = T if steps is None else steps
    if isinstance(S, bool) or not isinstance(S, int) or not 1 <= S <= T:
        raise ValueError(f"repaint: steps = {steps!r} must be an integer in 1..T = {T}")
    ts = sampling_timesteps(T, S, spacing)
    chain = respace(diffusion, ts)
    states = repaint_schedule(S, jump_length, resample)
    x0 = torch.where(keep, x_known, torch.zeros_like(x_known))  # never read the hidden pixels

    def randn() -> Tensor:
        return torch.randn(x0.shape, generator=generator, device=generator.device, dtype=x0.dtype).to(x0.device)

    den = Denoiser(model, diffusion, cond)

    def step(k: int, cur: int, nxt: int, x: Tensor) -> tuple[Tensor, Tensor]:
        """One pair of chain states of :func:`repaint_schedule` on the library's one loop."""
        if nxt == cur - 1:  # reverse step x_cur -> x_nxt, then the known region from q(x_nxt | x_0)
            pred = den(x, int(ts[cur - 1]))
            x_unknown, x0_hat = _ancestral_update(chain, cur, x, pred.x0, pred.eps, randn() if cur > 1 else None,
                                                  clip_x0)
            x_known_t = chain.q_sample(x0, nxt, randn()) if nxt > 0 else x0
            return torch.where(keep, x_known_t, x_unknown), x0_hat
        return chain.q_step(x, nxt, randn()), x  # resampling jump: one forward step q(x_nxt | x_cur)

    res = run_loop(randn(), states, step, counter=den, progress=progress, name="repaint")
    return InpaintResult(sample=res.sample, mask=keep, nfe=res.nfe, states=torch.tensor(states, dtype=torch.long))


# --------------------------------------------------------------------------------------------------
# Baselines
# --------------------------------------------------------------------------------------------------
def mean_fill(x_known: Tensor, mask: Tensor, mean: Tensor) -> Tensor:
    """Known pixels of ``x_known: (B, C, H, W)``, ``mean`` (``(C, H, W)`` or ``(1, C, H, W)``: e.g. the mean
    training image) in the missing ones."""
    keep = check_mask(mask, x_known)
    if mean.numel() != x_known[0].numel():
        raise ValueError(f"mean_fill: mean must have the shape of one image {tuple(x_known.shape[1:])}, "
                         f"got {tuple(mean.shape)}")
    mean = mean.to(x_known).reshape(1, *x_known.shape[1:])
    return torch.where(keep, x_known, mean.expand_as(x_known))


def _neighbour_mean(u: Tensor) -> Tensor:
    """Mean of the 4 neighbours of every pixel of ``u: (B, C, H, W)``, reflecting at the image border."""
    p = F.pad(u, (1, 1, 1, 1), mode="replicate")
    return 0.25 * (p[:, :, :-2, 1:-1] + p[:, :, 2:, 1:-1] + p[:, :, 1:-1, :-2] + p[:, :, 1:-1, 2:])


@torch.no_grad()
def harmonic_fill(x_known: Tensor, mask: Tensor, *, tol: float = 1e-6, max_iterations: int = 2000) -> Tensor:
    """The harmonic completion: the missing pixels solve Laplace's equation (discrete, 4-neighbour) with the
    known pixels as boundary values and reflecting image borders -- the steady state of the heat equation
    run inside the hole, i.e. the smoothest fill ("diffusion fill" / blur from the boundary).

    The linear system A u = b on the hole pixels (A = I - neighbour mean, symmetric positive definite as soon as
    the hole touches a known pixel) is solved by conjugate gradients, per image and channel, until the largest
    residual is below ``tol``. ``x_known: (B, C, H, W)``; every image needs at least one known pixel.
    """
    keep = check_mask(mask, x_known)
    if bool((keep.flatten(1).sum(1) == 0).any()):
        raise ValueError("harmonic_fill: an image has no known pixels (its mask is all 0)")
    hole = (~keep).to(x_known.dtype)
    base = torch.where(keep, x_known, torch.zeros_like(x_known))

    def A(v: Tensor) -> Tensor:  # v supported on the hole
        return hole * (v - _neighbour_mean(v))

    def dot(a: Tensor, b: Tensor) -> Tensor:
        return (a * b).sum((2, 3), keepdim=True)

    v = torch.zeros_like(base)
    r = hole * _neighbour_mean(base)  # b - A 0, with b = hole * mean of the known neighbours
    p = r.clone()
    rr = dot(r, r)
    for _ in range(max_iterations):
        if float(r.abs().max()) < tol:
            break
        Ap = A(p)
        alpha = rr / dot(p, Ap).clamp_min(1e-300)
        v = v + alpha * p
        r = r - alpha * Ap
        rr_new = dot(r, r)
        p = r + (rr_new / rr.clamp_min(1e-300)) * p
        rr = rr_new
    else:
        logger.warning("harmonic_fill: residual %.1e after %d iterations (tol %.1e)", float(r.abs().max()),
                       max_iterations, tol)
    return torch.where(keep, x_known, v)


# --------------------------------------------------------------------------------------------------
# The application: `elbolab inpaint RUN`
# --------------------------------------------------------------------------------------------------
@dataclass
class InpaintRequest:
    """What ``elbolab inpaint`` does.

    Inputs: ``image`` (a PNG, resized to the run's images) or else test images ``indices`` of the run's dataset;
    ``mask`` (a PNG, white = keep) or else the built-in ``mask_kind``. ``samples`` completions per image, each
    by RePaint on a chain of ``steps`` timesteps with ``jump_length``/``resample``. Writes ``out_dir/inpaint.png``
    (one row per image: original, masked input, completions) and ``inpaint.npz``.
    """

    out_dir: str | os.PathLike[str] = "inpaint"
    image: str | None = None
    indices: Sequence[int] = (0, 1, 2, 3, 4, 5, 6, 7)
    mask: str | None = None
    mask_kind: MaskKind | str = MaskKind.CENTER
    samples: int = 4
    steps: int = 100
    jump_length: int = 10
    resample: int = 5
    seed: int = 0

    def __post_init__(self) -> None:
        self.mask_kind = MaskKind.parse(self.mask_kind)
        for name in ("samples", "steps", "jump_length", "resample"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"inpaint: {name} = {v!r} must be a positive integer")


@dataclass
class InpaintOutput:
    """Paths written and the masked-region MSE of the completions against the originals ([-1, 1] units)."""

    paths: list[Path] = field(default_factory=list)
    masked_mse: float = math.nan
    nfe: int = 0

    def to_text(self) -> str:
        lines = [f"wrote {p}" for p in self.paths]
        lines.append(f"masked-region MSE vs the original ([-1, 1] scale): {self.masked_mse:.4f}; "
                     f"{self.nfe} network evaluations per completion")
        return "\n".join(lines)


def inpaint_run(run, request: InpaintRequest) -> InpaintOutput:
    """Inpaint images with a trained diffusion run (:func:`elbolab.runs.load_run`); see :class:`InpaintRequest`."""
    from elbolab.apps.chain import run_diffusion
    from elbolab.apps.io import load_mask_file, save_npz, source_images
    from elbolab.viz.plots import save_annotated_grid

    diffusion = run_diffusion(run)
    originals, _ = source_images(run.config, request.image, list(request.indices))
    B, C, H, W = originals.shape
    g = torch.Generator(run.device).manual_seed(request.seed)
    if request.mask is not None:
        mask = load_mask_file(request.mask, (H, W)).expand(B, 1, H, W)
    else:
        mask = make_mask(request.mask_kind, (H, W), B, generator=g)
    if bool((mask == 1).all()):
        raise ValueError("the mask keeps every pixel (all white): nothing to inpaint")
    K = request.samples
    x = originals.repeat_interleave(K, 0).to(run.device)
    m = mask.repeat_interleave(K, 0).to(run.device)
    res = repaint(run.model, x, m, diffusion, generator=g, steps=min(request.steps, diffusion.T),
                  jump_length=request.jump_length, resample=request.resample, clip_x0=True, progress=True)
    completions = res.sample.clamp(-1, 1).cpu().view(B, K, C, H, W)
    mse = float(masked_mse(res.sample.clamp(-1, 1).cpu(), x.cpu(), m.cpu()).mean())
    shown = torch.where(mask.expand(B, C, H, W) == 1, originals, torch.zeros_like(originals))
    rows = torch.cat([originals[:, None], shown[:, None], completions], dim=1)  # (B, K + 2, C, H, W)
    out = Path(request.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    grid = save_annotated_grid(rows, out / "inpaint.png",
                               col_labels=["original", "masked"] + [f"RePaint #{k + 1}" for k in range(K)],
                               title=f"RePaint: {request.steps} steps, j = {request.jump_length}, "
                                     f"r = {request.resample}; mask 1 = keep")
    npz = save_npz(out / "inpaint.npz", originals=originals, mask=mask, completions=completions,
                   masked_mse=mse, nfe=res.nfe, steps=request.steps, jump_length=request.jump_length,
                   resample=request.resample, seed=request.seed)
    logger.info("inpainted %d image(s) x %d completion(s), masked MSE %.4f", B, K, mse)
    return InpaintOutput(paths=[grid, npz], masked_mse=mse, nfe=res.nfe)
