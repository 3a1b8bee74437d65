"""`elbolab toy`: the lecture's pictures of diffusion in one and two dimensions (lecture notes 001).

1. "Data generation 101": u ~ U(0, 1), x = P^{-1}(u) with P the CDF (:class:`elbolab.data.toy.Mixture1D`):
   :func:`inverse_cdf_figure` draws the CDF with a few u -> x maps, the histogram of u and the histogram of x
   over the density p(x).
2. "Diffusion of a non-uniform density makes a global flow; the reverse process reconstructs the backward global
   flow": a 2-D density (a ring of Gaussians by default, whose every noised marginal is known exactly) is pushed
   through the forward chain q(x_t | x_{t-1}) as particles, then brought back by the reverse chain twice, from
   the same x_T: with a toy MLP eps-model trained for a few seconds (:func:`train_toy_denoiser`) and with the
   exact eps-oracle (:class:`elbolab.diffusion.GaussianMixtureOracle`; densities without a closed form get the
   learned model only). The flow field drawn over the particles is the probability-flow velocity of the VP
   diffusion (Song et al. 2021, eq. 13), dx/dt = -beta(t)/2 (x + grad log q_t(x)), whose flow carries q_t
   forward in time; the reverse panels show its negative, with the score from the model
   (-eps_theta / sqrt(1 - alpha_bar_t)) or the exact one.

Outputs (PNG and animated GIF): ``toy_inverse_cdf.png``, ``toy_forward_reverse.png`` (particles over time),
``toy_flow.png`` (flow fields over time), ``toy_forward.gif``, ``toy_reverse.gif``, and ``toy.npz`` with the
training losses and the energy distances of the final particles to the data.
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from elbolab.data.toy import GaussianMixture, Mixture1D, ToyName, make_toy
from elbolab.diffusion import DiffusionObjective, GaussianDiffusion, GaussianMixtureOracle, NoiseSchedule, samplers
from elbolab.diffusion.elbo import DecoderKind
from elbolab.math import energy_distance
from elbolab.nn.mlp import MLPDenoiser

logger = logging.getLogger(__name__)

__all__ = [
    "ToyOutput",
    "ToyRequest",
    "TrainedToy",
    "flow_velocity",
    "forward_trajectory",
    "inverse_cdf_figure",
    "run_toy",
    "train_toy_denoiser",
]

TOY_2D = tuple(n for n in ToyName if n is not ToyName.MIXTURE_1D)


# --------------------------------------------------------------------------------------------------
# 1-D: inverse-CDF sampling
# --------------------------------------------------------------------------------------------------
def inverse_cdf_figure(dist: Mixture1D, n: int, generator: torch.Generator,
                       path: str | os.PathLike[str]) -> tuple[Tensor, Tensor]:
    """Draw x = P^{-1}(u) for ``n`` uniforms and save the three-panel figure; returns ``(u: (n,), x: (n,))``."""
    import matplotlib.pyplot as plt

    from elbolab.viz.plots import save_figure

    u = torch.rand(n, generator=generator, dtype=torch.float64)
    x = dist.icdf(u)
    lo = float((dist.means - 4 * dist.stds).min())
    hi = float((dist.means + 4 * dist.stds).max())
    grid = torch.linspace(lo, hi, 400, dtype=torch.float64)
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.2))
    ax = axes[0]
    ax.plot(grid.numpy(), dist.cdf(grid).numpy(), color="C0")
    for ui in (0.1, 0.3, 0.5, 0.7, 0.9):
        xi = float(dist.icdf(torch.tensor([ui], dtype=torch.float64))[0])
        ax.plot([lo, xi], [ui, ui], color="C1", lw=0.8)
        ax.annotate("", xy=(xi, 0), xytext=(xi, ui), arrowprops=dict(arrowstyle="->", color="C1", lw=0.8))
    ax.set_xlim(lo, hi)
    ax.set_ylim(0, 1)
    ax.set_title("CDF  P(x) = u,  x = P$^{-1}$(u)", fontsize=9)
    ax.set_xlabel("x")
    ax.set_ylabel("u")
    axes[1].hist(u.numpy(), bins=40, range=(0, 1), density=True, color="C1", alpha=0.7)
    axes[1].set_title(f"u ~ Unif(0, 1), n = {n}", fontsize=9)
    axes[1].set_xlabel("u")
    axes[2].hist(x.numpy(), bins=60, range=(lo, hi), density=True, color="C0", alpha=0.5, label="x = P$^{-1}$(u)")
    axes[2].plot(grid.numpy(), dist.prob(grid).numpy(), color="k", lw=1.2, label="p(x)")
    axes[2].set_title("du = p(x) dx: the histogram of x follows p", fontsize=9)
    axes[2].set_xlabel("x")
    axes[2].legend(fontsize=8)
    fig.suptitle("Data generation 101: inverse-CDF sampling", fontsize=10)
    fig.tight_layout()
    save_figure(fig, path)
    return u, x


# --------------------------------------------------------------------------------------------------
# 2-D: train, diffuse, reverse
# --------------------------------------------------------------------------------------------------
@dataclass
class TrainedToy:
    """The toy eps-model ``model`` (eval mode) with its per-step training ``losses: (steps,)`` and wall time."""

    model: MLPDenoiser
    losses: Tensor
    seconds: float


def train_toy_denoiser(sample_data, diffusion: GaussianDiffusion, *, steps: int = 3000, batch_size: int = 512,
                       lr: float = 2e-3, hidden: int = 128, depth: int = 3,
                       generator: torch.Generator) -> TrainedToy:
    """Fit an :class:`~elbolab.nn.mlp.MLPDenoiser` eps-model to ``sample_data(n, generator) -> (n, 2)`` with
    L_simple (Algorithm 1 of Ho et al. 2020), Adam with the learning rate decayed linearly to 0."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"train_toy_denoiser: steps = {steps!r} must be a positive integer")
    dim = int(sample_data(2, generator).shape[1])
    init_seed = int(torch.randint(2**31 - 1, (1,), generator=generator))
    with torch.random.fork_rng(devices=[]):  # network initialisation from the generator, global RNG untouched
        torch.manual_seed(init_seed)
        model = MLPDenoiser(dim=dim, hidden=hidden, depth=depth)
    objective = DiffusionObjective(diffusion, decoder=DecoderKind.GAUSSIAN)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 1.0 - i / steps)
    losses = torch.empty(steps)
    t0 = time.perf_counter()
    model.train()
    for i in range(steps):
        x = sample_data(batch_size, generator)
        out = objective.loss(model, x, None, generator)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        opt.step()
        sched.step()
        losses[i] = out.loss.detach()
    model.eval()
    seconds = time.perf_counter() - t0
    logger.info("toy eps-model: %d steps in %.1f s, final loss %.4f", steps, seconds, float(losses[-100:].mean()))
    return TrainedToy(model=model, losses=losses, seconds=seconds)


def forward_trajectory(x0: Tensor, diffusion: GaussianDiffusion, times: list[int],
                       generator: torch.Generator) -> Tensor:
    """Run the forward chain x_t = sqrt(alpha_t) x_{t-1} + sqrt(beta_t) eps from ``x0: (P, D)`` and keep x_t at
    ``times`` (ascending, in 0..T): ``(len(times), P, D)``. Each particle keeps its path, as in the animation."""
    keep = {int(t) for t in times}
    out: dict[int, Tensor] = {0: x0} if 0 in keep else {}
    x = x0
    for t in range(1, max(keep) + 1):
        x = diffusion.q_step(x, t, torch.randn(x.shape, generator=generator, dtype=x.dtype))
        if t in keep:
            out[t] = x
    return torch.stack([out[int(t)] for t in times])


@torch.no_grad()
def flow_velocity(model: nn.Module, points: Tensor, t: int, diffusion: GaussianDiffusion) -> Tensor:
    """Probability-flow velocity -beta_t / 2 (x + grad log q_t(x)) at ``points: (G, D)``, with the score of the
    eps-model ``model`` (-eps / sqrt(1 - alpha_bar_t)): ``(G, D)``. Negate it for the reverse-time flow."""
    tt = torch.full((points.shape[0],), t, dtype=torch.long)
    score = diffusion.predict_score(diffusion.model_forward(model, points, tt), points, tt)
    return -0.5 * float(diffusion.schedule.betas[t]) * (points + score)


@dataclass
class ToyRequest:
    """``distribution``: a 2-D toy name (``gaussian-mixture`` has the exact reverse process too);
    ``train_steps``/``batch_size`` of the toy eps-model; ``particles``; ``steps`` of the reverse chain (of T =
    ``T``); ``frames`` of each GIF (0: no GIFs); ``panels`` time columns in the PNGs."""

    out_dir: str | os.PathLike[str] = "toy"
    distribution: ToyName | str = ToyName.GAUSSIAN_MIXTURE
    train_steps: int = 3000
    batch_size: int = 512
    particles: int = 2000
    T: int = 1000
    steps: int = 250
    frames: int = 30
    panels: int = 6
    seed: int = 0

    def __post_init__(self) -> None:
        self.distribution = ToyName.parse(self.distribution)
        if self.distribution is ToyName.MIXTURE_1D:
            raise ValueError(f"toy: distribution must be 2-D, one of {', '.join(n.value for n in TOY_2D)} "
                             f"(the 1-D mixture is always drawn in toy_inverse_cdf.png)")
        for name in ("train_steps", "batch_size", "particles", "T", "steps", "panels"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"toy: {name} = {v!r} must be a positive integer")
        if self.particles < 2 or self.panels < 2:
            raise ValueError(f"toy: particles = {self.particles} and panels = {self.panels} must be >= 2")
        if self.steps > self.T:
            raise ValueError(f"toy: steps = {self.steps} must be <= T = {self.T}")
        if self.frames < 0 or self.frames == 1:
            raise ValueError(f"toy: frames = {self.frames} must be 0 (no GIF) or >= 2")


@dataclass
class ToyOutput:
    """Paths written; training time and loss; energy distances of the final particles to fresh data samples
    (``learned``, ``exact`` (NaN without an oracle), and ``noise`` = x_T itself, for scale)."""

    paths: list[Path] = field(default_factory=list)
    train_seconds: float = 0.0
    final_loss: float = math.nan
    energy: dict[str, float] = field(default_factory=dict)

    def to_text(self) -> str:
        lines = [f"wrote {p}" for p in self.paths]
        lines.append(f"toy eps-model trained in {self.train_seconds:.1f} s (final loss {self.final_loss:.4f}); "
                     "energy distance to the data: " + ", ".join(f"{k} {v:.4f}" for k, v in self.energy.items()))
        return "\n".join(lines)


def _exact_log_prob(dist, diffusion: GaussianDiffusion, t: int):
    if not isinstance(dist, GaussianMixture):
        return None
    noised = dist.noised(float(diffusion.schedule.alpha_bars[t])) if t > 0 else dist
    return noised.log_prob


def run_toy(request: ToyRequest) -> ToyOutput:
    """Make every toy figure (see the module docstring) in ``request.out_dir``."""
    import matplotlib.pyplot as plt

    from elbolab.apps.io import save_npz
    from elbolab.viz.plots import density_image, figure_to_array, flow_field, particles, save_figure, save_gif

    out = Path(request.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(request.seed)
    paths: list[Path] = []

    mix1d = make_toy(ToyName.MIXTURE_1D)
    assert isinstance(mix1d, Mixture1D)
    u, x1d = inverse_cdf_figure(mix1d, 20000, g, out / "toy_inverse_cdf.png")
    paths.append(out / "toy_inverse_cdf.png")

    dist = make_toy(request.distribution)
    T = request.T
    k = 1000.0 / T  # Ho et al.'s linear schedule, betas scaled so that a short chain still ends in noise
    diffusion = GaussianDiffusion(NoiseSchedule.linear(T, 1e-4 * k, min(0.02 * k, 0.999)))
    trained = train_toy_denoiser(lambda n, gen: dist.sample(n, gen), diffusion, steps=request.train_steps,
                                 batch_size=request.batch_size, generator=g)
    oracle = GaussianMixtureOracle(dist, diffusion) if isinstance(dist, GaussianMixture) else None

    P = request.particles
    data = dist.sample(P, g)
    x_T = torch.randn(P, 2, generator=g)
    learned = samplers.ancestral(trained.model, (P, 2), diffusion, steps=request.steps, generator=g, x_T=x_T,
                                 spacing="linspace", return_trajectory=True)
    exact = samplers.ancestral(oracle, (P, 2), diffusion, steps=request.steps, generator=g, x_T=x_T,
                               spacing="linspace", return_trajectory=True) if oracle is not None else None
    # visited times, descending, with the data (t = 0) last: xs[i] is the state at times_desc[i]
    times_desc = learned.timesteps.tolist() + [0]
    assert learned.xs is not None
    reverse_paths = {"learned": learned.xs}
    if exact is not None and exact.xs is not None:
        reverse_paths["exact"] = exact.xs
    models: dict[str, nn.Module] = {"learned": trained.model}
    if oracle is not None:
        models["exact"] = oracle

    fresh = dist.sample(P, g)
    energy = {name: float(energy_distance(xs[-1], fresh)) for name, xs in reverse_paths.items()}
    energy.setdefault("exact", math.nan)
    energy["noise"] = float(energy_distance(x_T, fresh))

    lim = float(torch.quantile(data.abs().flatten().double(), 0.995)) * 1.25 + 0.5
    lim = max(lim, 3.2)  # room for the N(0, I) end of the chain
    lin = torch.linspace(-lim * 0.9, lim * 0.9, 15)
    gx, gy = torch.meshgrid(lin, lin, indexing="xy")
    grid = torch.stack([gx.flatten(), gy.flatten()], 1)

    def pick(count: int) -> list[int]:
        """indices into times_desc (T ... 0), evenly spaced, first and last included."""
        n = len(times_desc)
        return sorted({round(i * (n - 1) / (count - 1)) for i in range(count)})

    cols = pick(request.panels)
    times_asc = sorted({times_desc[i] for i in range(len(times_desc))})
    forward = forward_trajectory(data, diffusion, times_asc, g)  # every visited time, ascending
    fwd_at = {t: forward[i] for i, t in enumerate(times_asc)}

    # particles over time: forward (left to right: t = 0 -> T), reverse rows (left to right: t = T -> 0)
    rows = ["forward q"] + [f"reverse, {name}" for name in reverse_paths]
    fig, axes = plt.subplots(len(rows), len(cols), figsize=(2.0 * len(cols), 2.1 * len(rows)), squeeze=False)
    for j, i in enumerate(cols):
        t_fwd = times_desc[cols[len(cols) - 1 - j]]
        lp = _exact_log_prob(dist, diffusion, t_fwd)
        if lp is not None:
            density_image(axes[0, j], lp, lim=lim)
        particles(axes[0, j], fwd_at[t_fwd], lim=lim, color="C0", title=f"t = {t_fwd}")
        for r, (name, xs) in enumerate(reverse_paths.items(), start=1):
            particles(axes[r, j], xs[i], lim=lim, color="C1" if name == "learned" else "C2",
                      title=f"t = {times_desc[i]}")
    for r, name in enumerate(rows):
        axes[r, 0].set_ylabel(name, fontsize=9)
    fig.suptitle(f"{request.distribution.value}: diffused forward, reversed from the same x_T", fontsize=10)
    fig.tight_layout()
    paths.append(save_figure(fig, out / "toy_forward_reverse.png"))

    # flow fields over time (reverse-time probability flow), over the exact density where known
    fig, axes = plt.subplots(len(models), len(cols), figsize=(2.0 * len(cols), 2.1 * len(models)), squeeze=False)
    for j, i in enumerate(cols[:-1] + [cols[-1] - 1]):  # the field needs t >= 1
        t = max(times_desc[i], 1)
        for r, (name, model) in enumerate(models.items()):
            lp = _exact_log_prob(dist, diffusion, t)
            if lp is not None:
                density_image(axes[r, j], lp, lim=lim)
            flow_field(axes[r, j], grid, -flow_velocity(model, grid, t, diffusion), lim=lim,
                       title=f"t = {t}")
    for r, name in enumerate(models):
        axes[r, 0].set_ylabel(f"{name} score", fontsize=9)
    fig.suptitle("reverse-time probability flow  beta_t/2 (x + grad log q_t(x)), arrows normalised per panel",
                 fontsize=10)
    fig.tight_layout()
    paths.append(save_figure(fig, out / "toy_flow.png"))

    if request.frames:
        frame_idx = pick(request.frames)
        frames_fwd, frames_rev = [], []
        for i in reversed(frame_idx):  # forward: t = 0 -> T
            t = times_desc[i]
            fig, ax = plt.subplots(1, 1, figsize=(3.6, 3.8))
            lp = _exact_log_prob(dist, diffusion, t)
            if lp is not None:
                density_image(ax, lp, lim=lim)
            if t >= 1:
                flow_field(ax, grid, flow_velocity(models.get("exact", trained.model), grid, t, diffusion), lim=lim)
            particles(ax, fwd_at[t], lim=lim, color="C0", title=f"forward diffusion, t = {t}")
            frames_fwd.append(figure_to_array(fig))
        for i in frame_idx:  # reverse: t = T -> 0
            t = times_desc[i]
            fig, axes = plt.subplots(1, len(reverse_paths), figsize=(3.6 * len(reverse_paths), 3.8), squeeze=False)
            for c, (name, xs) in enumerate(reverse_paths.items()):
                ax = axes[0, c]
                if t >= 1:
                    flow_field(ax, grid, -flow_velocity(models[name], grid, t, diffusion), lim=lim)
                particles(ax, xs[i], lim=lim, color="C1" if name == "learned" else "C2",
                          title=f"reverse ({name}), t = {t}")
            frames_rev.append(figure_to_array(fig))
        paths.append(save_gif(frames_fwd, out / "toy_forward.gif"))
        paths.append(save_gif(frames_rev, out / "toy_reverse.gif"))

    arrays: dict[str, object] = {
        "losses": trained.losses, "train_seconds": trained.seconds, "data": data, "x_T": x_T,
        "learned": learned.sample, "inverse_cdf_u": u, "inverse_cdf_x": x1d,
        "times": torch.tensor(times_desc), **{f"energy_{k}": v for k, v in energy.items()},
    }
    if exact is not None:
        arrays["exact"] = exact.sample
    paths.append(save_npz(out / "toy.npz", **arrays))  # type: ignore[arg-type]
    final = float(trained.losses[-min(100, len(trained.losses)):].mean())
    return ToyOutput(paths=paths, train_seconds=trained.seconds, final_loss=final, energy=energy)
