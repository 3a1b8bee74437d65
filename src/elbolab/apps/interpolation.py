"""Interpolation between two images (Ho et al. 2020, Sec. 4.3, Figs. 8-9), and latent interpolation of VAEs.

Diffusion (stochastic encoder): noise both images to the same t with q, x_t = sqrt(alpha_bar_t) x_0 +
sqrt(1 - alpha_bar_t) eps and x'_t likewise, mix them, xbar_t = (1 - lambda) x_t + lambda x'_t (``linear``) or
spherically (``slerp``, :func:`elbolab.math.slerp`), and decode xbar_t with the reverse chain. The reverse-chain
noise is the same for every lambda ("we fixed the noise", :func:`elbolab.apps.chain.reverse_from_shared_noise`),
so the interpolants differ only through xbar_t. The number of diffusion steps before mixing sets what is kept:
at small t the decoded end points reconstruct the two images and the path is a cross-fade; at large t only
coarse attributes survive and at t = T the end points are unrelated samples (Fig. 9, "coarse-to-fine"):
:func:`coarse_to_fine` returns one row per t with the distance of the decoded end points to the inputs.

Diffusion (deterministic encoder): :func:`ddim_interpolate` encodes both images with DDIM inversion
(:func:`elbolab.apps.chain.ddim_invert`, Song et al. 2021, Sec. 5.4), interpolates the codes (slerp by default,
since x_T is Gaussian) and decodes with DDIM (eta = 0): the end points are reconstructed up to the ODE's
discretisation error even at t = T.

VAE runs (``family`` vae/hvae/ae): the latent interpolation and attribute editing of :mod:`elbolab.vae.editing`
(lecture notes 004, "After training we can edit images").

Shapes: ``x_a, x_b: (1, ...)``; ``images: (R, N, ...)`` for R times and N interpolation weights.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch
from torch import Tensor, nn

from elbolab.apps.chain import check_time, ddim_decode, ddim_invert, reverse_from_shared_noise
from elbolab.diffusion.process import GaussianDiffusion
from elbolab.math import slerp
from elbolab.vae.editing import InterpolationKind, lerp

logger = logging.getLogger(__name__)

__all__ = [
    "InterpolateOutput",
    "InterpolateRequest",
    "InterpolationKind",
    "InterpolationResult",
    "coarse_to_fine",
    "coarse_to_fine_times",
    "ddim_interpolate",
    "diffusion_interpolate",
    "interpolate_run",
    "interpolation_weights",
    "mix",
]


def _kind(kind: InterpolationKind | str) -> InterpolationKind:
    try:
        return InterpolationKind(kind)
    except ValueError:
        raise ValueError(f"interpolation kind {kind!r} is not valid: expected one of "
                         f"{', '.join(repr(k.value) for k in InterpolationKind)}") from None


def interpolation_weights(num: int) -> Tensor:
    """``num`` >= 2 weights lambda evenly spaced from 0 to 1, ``(num,)`` float64."""
    if isinstance(num, bool) or not isinstance(num, int) or num < 2:
        raise ValueError(f"num = {num!r} interpolation points must be an integer >= 2")
    return torch.linspace(0.0, 1.0, num, dtype=torch.float64)


def mix(z_a: Tensor, z_b: Tensor, weights: Tensor, kind: InterpolationKind | str) -> Tensor:
    """``(N, ...)``: (1 - w) z_a + w z_b (``linear``) or the great-circle path (``slerp``) for ``z_a, z_b: (...)``."""
    fn = lerp if _kind(kind) is InterpolationKind.LINEAR else slerp
    return fn(z_a, z_b, weights.to(z_a.device))


def _pair(x_a: Tensor, x_b: Tensor) -> None:
    if x_a.shape != x_b.shape or x_a.shape[0] != 1:
        raise ValueError(f"interpolation needs two single examples of the same shape (1, ...), got "
                         f"{tuple(x_a.shape)} and {tuple(x_b.shape)}")


@dataclass(frozen=True)
class InterpolationResult:
    """``images: (R, N, ...)``: row r decoded from time ``times[r]``, column n at weight ``weights[n]``;
    ``endpoint_error: (R, 2)``: RMS per-element distance of the decoded end points (lambda = 0, 1) to x_a, x_b."""

    images: Tensor
    times: Tensor
    weights: Tensor
    endpoint_error: Tensor


def _endpoint_error(images: Tensor, x_a: Tensor, x_b: Tensor) -> Tensor:
    """(R, 2) RMS distances of images[:, 0] to x_a and images[:, -1] to x_b."""
    def rms(u: Tensor, v: Tensor) -> Tensor:
        return (u - v).pow(2).flatten(1).mean(1).sqrt()

    return torch.stack([rms(images[:, 0], x_a), rms(images[:, -1], x_b)], dim=1)


@torch.no_grad()
def diffusion_interpolate(
    model: nn.Module,
    x_a: Tensor,
    x_b: Tensor,
    diffusion: GaussianDiffusion,
    t: int,
    weights: Tensor,
    *,
    generator: torch.Generator,
    kind: InterpolationKind | str = InterpolationKind.LINEAR,
    steps: int | None = None,
    clip_x0: bool = False,
) -> Tensor:
    """DDPM Fig. 8: noise ``x_a``, ``x_b`` (each ``(1, ...)``) to time ``t`` with q, mix with ``weights: (N,)``,
    decode by the reverse chain (``min(steps, t)`` steps, shared noise). ``t = 0`` mixes the inputs directly.
    Returns ``(N, ...)``."""
    _pair(x_a, x_b)
    check_time(t, diffusion.T)
    noise = torch.randn((2, *x_a.shape[1:]), generator=generator, device=generator.device, dtype=x_a.dtype)
    ends = diffusion.q_sample(torch.cat([x_a, x_b]), t, noise.to(x_a.device))
    path = mix(ends[0], ends[1], weights, kind)
    return reverse_from_shared_noise(model, path, t, diffusion, generator=generator, steps=steps, clip_x0=clip_x0)


def coarse_to_fine_times(T: int, k: int = 6) -> list[int]:
    """0 and ``k - 1`` times up to T (0, T/10, T/4, T/2, 3T/4, T for k = 6): the rows of DDPM Fig. 9."""
    fractions = [0.0, 0.1, 0.25, 0.5, 0.75, 1.0] if k == 6 else [i / (k - 1) for i in range(k)]
    return sorted({round(f * T) for f in fractions})


@torch.no_grad()
def coarse_to_fine(
    model: nn.Module,
    x_a: Tensor,
    x_b: Tensor,
    diffusion: GaussianDiffusion,
    times: Sequence[int],
    num: int = 9,
    *,
    generator: torch.Generator,
    kind: InterpolationKind | str = InterpolationKind.LINEAR,
    steps: int | None = None,
    clip_x0: bool = False,
) -> InterpolationResult:
    """DDPM Fig. 9: one row of :func:`diffusion_interpolate` per t in ``times``, ``num`` weights from 0 to 1."""
    if not len(times):
        raise ValueError("coarse_to_fine: times is empty")
    w = interpolation_weights(num)
    rows = [diffusion_interpolate(model, x_a, x_b, diffusion, int(t), w, generator=generator, kind=kind,
                                  steps=steps, clip_x0=clip_x0) for t in times]
    images = torch.stack(rows)
    return InterpolationResult(images=images, times=torch.tensor([int(t) for t in times]), weights=w,
                               endpoint_error=_endpoint_error(images, x_a, x_b))


@torch.no_grad()
def ddim_interpolate(
    model: nn.Module,
    x_a: Tensor,
    x_b: Tensor,
    diffusion: GaussianDiffusion,
    num: int = 9,
    *,
    t: int | None = None,
    steps: int | None = 50,
    kind: InterpolationKind | str = InterpolationKind.SLERP,
    clip_x0: bool = False,
) -> InterpolationResult:
    """Deterministic interpolation: DDIM-invert ``x_a``, ``x_b`` to time ``t`` (default T) on ``steps``
    timesteps, mix the codes, decode with DDIM (eta = 0). One row (``times = [t]``)."""
    _pair(x_a, x_b)
    t = diffusion.T if t is None else check_time(t, diffusion.T, low=1)
    w = interpolation_weights(num)
    codes = ddim_invert(model, torch.cat([x_a, x_b]), t, diffusion, steps=steps)
    path = mix(codes[0], codes[1], w, kind)
    images = ddim_decode(model, path, t, diffusion, steps=steps, clip_x0=clip_x0)[None]
    return InterpolationResult(images=images, times=torch.tensor([t]), weights=w,
                               endpoint_error=_endpoint_error(images, x_a, x_b))


# --------------------------------------------------------------------------------------------------
# The application: `elbolab interpolate RUN`
# --------------------------------------------------------------------------------------------------
@dataclass
class InterpolateRequest:
    """Two images: PNG files ``a``/``b``, or test images ``index_a``/``index_b`` of the run's dataset.

    Diffusion runs: ``interpolate.png`` (coarse-to-fine grid, rows ``times``, default 0, T/10, T/4, T/2, 3T/4, T;
    ``kind`` linear or slerp; reverse chains of at most ``steps`` steps) and ``ddim_interpolate.png`` (DDIM
    inversion to T with ``ddim_steps`` steps, slerp). VAE runs: ``vae_interpolate.png`` (linear and slerp rows)
    and, with test images, ``vae_edit.png`` (the code of a moved along the attribute vector "class of b"
    minus "other classes"). Always an ``.npz`` with the images and numbers.
    """

    out_dir: str | os.PathLike[str] = "interpolate"
    a: str | None = None
    b: str | None = None
    index_a: int = 0
    index_b: int = 1
    num: int = 9
    kind: InterpolationKind | str = InterpolationKind.LINEAR
    times: Sequence[int] | None = None
    steps: int | None = 100
    ddim_steps: int = 50
    seed: int = 0

    def __post_init__(self) -> None:
        self.kind = _kind(self.kind)
        if (self.a is None) != (self.b is None):
            raise ValueError("interpolate: give both --a and --b image files, or neither (test images)")
        interpolation_weights(self.num)


@dataclass
class InterpolateOutput:
    """Paths written; for diffusion runs ``times`` and the end-point errors of each row (RMS, [-1, 1] units)."""

    paths: list[Path] = field(default_factory=list)
    family: str = ""
    times: list[int] = field(default_factory=list)
    endpoint_error: list[tuple[float, float]] = field(default_factory=list)

    def to_text(self) -> str:
        lines = [f"wrote {p}" for p in self.paths]
        if self.times:
            lines.append("end points reconstructed (RMS distance to a, b) per t: " + ", ".join(
                f"t={t}: {ea:.3f}/{eb:.3f}" for t, (ea, eb) in zip(self.times, self.endpoint_error)))
        return "\n".join(lines)


def _sources(run, request: InterpolateRequest) -> tuple[Tensor, Tensor, Tensor | None]:
    from elbolab.apps.io import source_images

    if request.a is not None and request.b is not None:
        return source_images(run.config, request.a, [])[0], source_images(run.config, request.b, [])[0], None
    x, y = source_images(run.config, None, [request.index_a, request.index_b])
    return x[:1], x[1:], y


def interpolate_run(run, request: InterpolateRequest) -> InterpolateOutput:
    """DDPM Figs. 8-9 and DDIM interpolation for diffusion runs; latent interpolation and editing for VAEs."""
    x_a, x_b, labels = _sources(run, request)
    x_a, x_b = x_a.to(run.device), x_b.to(run.device)
    out = Path(request.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if run.family.capabilities.diffusion:
        return _diffusion_run(run, request, x_a, x_b, out)
    return _vae_run(run, request, x_a, x_b, labels, out)


def _diffusion_run(run, request: InterpolateRequest, x_a: Tensor, x_b: Tensor, out: Path) -> InterpolateOutput:
    from elbolab.apps.chain import run_diffusion
    from elbolab.apps.io import save_npz
    from elbolab.viz.plots import save_annotated_grid

    diffusion = run_diffusion(run)
    times = list(request.times) if request.times else coarse_to_fine_times(diffusion.T)
    g = torch.Generator(run.device).manual_seed(request.seed)
    res = coarse_to_fine(run.model, x_a, x_b, diffusion, times, request.num, generator=g, kind=request.kind,
                         steps=request.steps, clip_x0=True)
    cols = [f"{w:.2f}" for w in res.weights.tolist()]
    grid = save_annotated_grid(res.images.clamp(-1, 1).cpu(), out / "interpolate.png",
                               row_labels=[f"t={t}" for t in times], col_labels=cols,
                               title=f"{request.kind.value} interpolation of q(x_t|x_0) codes, decoded by p(x_0|x_t)")
    ddim = ddim_interpolate(run.model, x_a, x_b, diffusion, request.num, steps=request.ddim_steps,
                            kind=InterpolationKind.SLERP, clip_x0=True)
    inputs_row = torch.ones_like(ddim.images[0])  # the two inputs at the ends, blank (white) between
    inputs_row[0], inputs_row[-1] = x_a[0], x_b[0]
    ddim_grid = save_annotated_grid(
        torch.stack([ddim.images[0], inputs_row]).clamp(-1, 1).cpu(), out / "ddim_interpolate.png",
        row_labels=[f"DDIM, t={diffusion.T}", "inputs"], col_labels=cols,
        title=f"deterministic: DDIM inversion ({request.ddim_steps} steps), slerp, DDIM decoding")
    npz = save_npz(out / "interpolate.npz", x_a=x_a, x_b=x_b, images=res.images, times=res.times,
                   weights=res.weights, endpoint_error=res.endpoint_error, ddim_images=ddim.images,
                   ddim_endpoint_error=ddim.endpoint_error, seed=request.seed)
    return InterpolateOutput(paths=[grid, ddim_grid, npz], family="ddpm", times=times,
                             endpoint_error=[(float(a), float(b)) for a, b in res.endpoint_error.tolist()])


def _vae_run(run, request: InterpolateRequest, x_a: Tensor, x_b: Tensor, labels: Tensor | None,
             out: Path) -> InterpolateOutput:
    from elbolab.apps.io import save_npz, test_images
    from elbolab.vae import editing
    from elbolab.viz.plots import save_annotated_grid

    model = run.model
    g = torch.Generator(run.device).manual_seed(request.seed)
    rows = torch.stack([editing.interpolate(model, x_a, x_b, request.num, kind, generator=g)
                        for kind in (InterpolationKind.LINEAR, InterpolationKind.SLERP)])
    w = interpolation_weights(request.num)
    paths = [save_annotated_grid(rows.clamp(-1, 1).cpu(), out / "vae_interpolate.png",
                                 row_labels=["linear", "slerp"], col_labels=[f"{v:.2f}" for v in w.tolist()],
                                 title="VAE latent interpolation (posterior means, decoded)")]
    arrays: dict[str, Tensor] = {"x_a": x_a, "x_b": x_b, "interpolation": rows, "weights": w}
    if labels is not None:
        # attribute vector "looks like the class of b": mean code of test images of that class minus the rest
        pool, pool_labels = test_images(run.config, None)
        pool, pool_labels = pool[:1000], pool_labels[:1000]
        direction = editing.attribute_vector(model, pool.to(run.device), pool_labels == labels[1], generator=g)
        scales = torch.linspace(-1.0, 2.0, request.num)
        edited = editing.edit(model, x_a, direction, scales, generator=g)[:, 0]  # (N, C, H, W)
        paths.append(save_annotated_grid(edited[None].clamp(-1, 1).cpu(), out / "vae_edit.png",
                                         row_labels=[f"class {int(labels[1])}"],
                                         col_labels=[f"{s:+.2f}" for s in scales.tolist()],
                                         title="VAE editing: z(a) + s * attribute vector"))
        arrays.update(edited=edited, scales=scales, direction=direction)
    paths.append(save_npz(out / "vae_interpolate.npz", **arrays))
    return InterpolateOutput(paths=paths, family=run.config.family)
