"""Samplers for a trained diffusion model, all with one signature and all on the one loop of
:mod:`elbolab.diffusion.loop`:

    sampler(model, shape, diffusion, *, steps=None, generator, cond=None, callback=None, spacing=...,
            timesteps=None, <own keyword options>) -> SampleResult

- :func:`ancestral`: Algorithm 2 of Ho et al. 2020 (respaced for fewer steps, Nichol & Dhariwal 2021, Sec. 4);
- :func:`ddim`: Song, Meng & Ermon 2021, eq. 12 (eta = 0 deterministic, eta = 1 ancestral with beta_tilde);
- :func:`euler`: the probability-flow ODE by Euler's method in the variance-exploding coordinates
  y = x / alpha, s = sigma / alpha (Karras et al. 2022; k-diffusion's ``sample_euler``): dy/ds = eps_hat, which
  is exactly DDIM with eta = 0 (Song et al. 2021, eq. 14);
- :func:`heun`: Algorithm 2 of Karras et al. 2022 (Heun's 2nd-order method with the S_churn/S_tmin/S_tmax/
  S_noise stochasticity; S_churn = 0 is the deterministic Heun solver of their Algorithm 1);
- :func:`dpmpp_2m`: DPM-Solver++(2M), Lu et al. 2022 ("DPM-Solver++", Algorithm 2): multistep, data
  prediction, exponential integrator in lambda = log(alpha / sigma);
- :func:`dpmpp_2m_sde`: its SDE variant (Lu et al. 2022, Sec. 5 / Appendix; diffusers' "sde-dpmsolver++",
  midpoint), which adds fresh noise every step.

``model(x_t, t, y)`` is called with ``t: (B,)``: long for integer times, float for fractional times (the
network sees them unrounded) and ``y = cond``; ``shape = (B, ...)`` (``(B, C, H, W)`` images, ``(B, D)`` toy
data). All randomness comes from ``generator`` (x_T is drawn on its device), so the same seed gives the same
samples. Classifier-free guidance (:class:`elbolab.diffusion.guidance.ClassifierFreeGuidance`) is a model like
any other; its ``nfe_per_call`` enters the exact network-evaluation count ``SampleResult.nfe``.

Times. Every sampler walks t_0 > t_1 > ... > t_{N-1} > t_N = 0 (data): ``SampleResult.timesteps`` are the N
visited t_0..t_{N-1}; the last step t_{N-1} -> 0 returns x0_hat (Euler's/DDIM's step to sigma = 0, which is
also DPM-Solver's lower-order final step). The grid comes from ``spacing`` (:class:`TimeSpacing`) and
``steps`` = N, or from an explicit descending ``timesteps=`` sequence in (0, T] (ints or floats; then
``steps`` and ``spacing`` are ignored):

- ``leading`` / ``linspace`` / ``trailing``: the integer grids of :func:`sampling_timesteps` (diffusers'
  ``timestep_spacing`` with our t = their index + 1);
- ``logsnr``: uniform in log-SNR lambda(t) from t = T down to ``t_min`` (Lu et al. 2022's "logSNR" spacing);
- ``karras``: sigma_VE^(1/rho) uniform from min(sigma_VE(T), 80) to sigma_VE(``t_min``), rho = 7 (Karras et al.
  2022, eq. 5, with their sigma_max = 80: :data:`KARRAS_SIGMA_MAX`). A schedule whose sigma_VE(T) is larger (the
  cosine schedule: ~2e4 at T = 1000) starts at the time t_0 < T where sigma_VE = 80, from x_T ~ N(0, I) (the
  signal fraction alpha^2 = 1.6e-4 there): without the cap rho = 7 spends the first steps at sigma ~ 1e4 and
  leaves one giant last jump (8.6 -> 0.02 with 5 steps), which Heun's correction amplifies by s_hat / (2 s_next).
- ``angle``: uniform in the angle phi = atan(sigma_VE) from t = T down to ``t_min``. On the cosine schedule
  (Nichol & Dhariwal 2021, offset s -> 0) alpha_bar = cos^2(phi) with phi = pi t / (2 T), so this is the DDPM's
  uniform (trailing) grid carried to any other diffusion: on the VE levels of an NCSN
  (:mod:`elbolab.score.ve`, geometric in sigma) it puts the steps where a cosine DDPM's sampler puts them
  (Delta ln sigma = 2 Delta phi / sin(2 phi): finest at sigma = 1), where ``logsnr`` and ``trailing`` there
  spread them evenly in ln sigma.

The fractional grids are in the continuous time of :meth:`GaussianDiffusion.alpha_bar_at` and end at the
stated ``t_min`` (default :data:`DEFAULT_T_MIN` = 1, the least noisy step the discrete network was trained on).
Exact NFE with N steps (times the model's ``nfe_per_call``): ancestral, ddim, euler, dpmpp_2m, dpmpp_2m_sde:
N; heun: 2 N - 1 (the last step, to sigma = 0, is an Euler step).
"""

from __future__ import annotations

import enum
import logging
import math
from typing import Sequence

import torch
from torch import Tensor, nn

from elbolab.config import coerce
from elbolab.diffusion.config import Spacing
from elbolab.diffusion.loop import Callback, Denoiser, SampleResult, StepInfo, run_loop
from elbolab.diffusion.process import GaussianDiffusion
from elbolab.diffusion.schedules import NoiseSchedule

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_T_MIN",
    "KARRAS_SIGMA_MAX",
    "SampleResult",
    "StepInfo",
    "TimeSpacing",
    "ancestral",
    "ancestral_step",
    "check_generator",
    "ddim",
    "ddim_step",
    "dpmpp_2m",
    "dpmpp_2m_sde",
    "euler",
    "heun",
    "initial_noise",
    "respace",
    "sampling_timesteps",
    "time_grid",
]

#: the smallest time the fractional grids (logsnr, karras) visit: t = 1, the least noisy step of the chain
DEFAULT_T_MIN = 1.0

#: the largest sigma_VE of the karras grid (sigma_max of Karras et al. 2022, Table 1)
KARRAS_SIGMA_MAX = 80.0


TimeSpacing = Spacing
"""Time grids of the samplers (:class:`elbolab.diffusion.config.Spacing`): three integer spacings and two
fractional ones (uniform in log-SNR; Karras et al. 2022 with rho = 7)."""

_INTEGER_SPACINGS = (TimeSpacing.LEADING, TimeSpacing.LINSPACE, TimeSpacing.TRAILING)


def parse_spacing(spacing: TimeSpacing | Spacing | str) -> TimeSpacing:
    """``spacing`` (a :class:`TimeSpacing`, :class:`elbolab.config.Spacing` or their value) as a TimeSpacing;
    a ValueError lists the choices."""
    if isinstance(spacing, enum.Enum):
        spacing = spacing.value
    return coerce(spacing, TimeSpacing, "spacing")


def sampling_timesteps(T: int, steps: int, spacing: TimeSpacing | Spacing | str = Spacing.LEADING) -> Tensor:
    """The S = ``steps`` integer timesteps a sampler visits, ascending, long, in 1..T.

    - ``leading`` (DDIM paper): 1, 1 + k, ..., 1 + (S - 1) k with k = T // S (does not reach T unless S = T);
    - ``linspace``: round(linspace(0, T - 1, S)) + 1, from 1 to T inclusive;
    - ``trailing`` (Lin et al. 2024): round(T - i T / S) for i = 0..S-1, starting at T.
    These are diffusers' 0-based timestep_spacing options shifted by one (our t = their index + 1, with
    steps_offset = 0). The fractional spacings are in :func:`time_grid`.
    """
    spacing = parse_spacing(spacing)
    if spacing not in _INTEGER_SPACINGS:
        raise ValueError(f"sampling_timesteps: spacing {spacing.value!r} is fractional; use time_grid")
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= T:
        raise ValueError(f"steps = {steps!r} must be an integer in 1..T = {T}")
    if spacing is TimeSpacing.LEADING:
        k = T // steps
        ts = 1 + torch.arange(steps, dtype=torch.long) * k
    elif spacing is TimeSpacing.LINSPACE:
        ts = torch.linspace(0, T - 1, steps, dtype=torch.float64).round().long() + 1
    else:
        i = torch.arange(steps, dtype=torch.float64)
        ts = torch.round(T - i * (T / steps)).long().flip(0)
    return ts


def _check_t_min(t_min: float, T: int) -> float:
    if isinstance(t_min, bool) or not isinstance(t_min, (int, float)) or not 0.0 < float(t_min) < T:
        raise ValueError(f"t_min = {t_min!r} must be a number in (0, T) = (0, {T})")
    return float(t_min)


def time_grid(
    diffusion: GaussianDiffusion,
    steps: int | None,
    spacing: TimeSpacing | Spacing | str,
    *,
    timesteps: Sequence[int | float] | Tensor | None = None,
    t_min: float = DEFAULT_T_MIN,
    rho: float = 7.0,
    sigma_max: float | None = KARRAS_SIGMA_MAX,
) -> list[int | float]:
    """The times t_0 > ... > t_{N-1} > t_N = 0 a sampler walks, as Python numbers (ints on integer grids).

    ``timesteps``: an explicit strictly decreasing sequence in (0, T] (the visited times; 0 is appended);
    otherwise ``steps`` (None: T) times of ``spacing``; see the module doc. ``sigma_max``: the karras grid's
    largest sigma_VE (None: sigma_VE(T)). Checked here, once per sampler call.
    """
    T = diffusion.T
    if timesteps is not None:
        vals = timesteps.tolist() if isinstance(timesteps, Tensor) else list(timesteps)
        if not vals:
            raise ValueError("timesteps is empty: give the visited times t_0 > t_1 > ... in (0, T]")
        ints = all(isinstance(v, int) and not isinstance(v, bool) for v in vals)
        if isinstance(timesteps, Tensor) and timesteps.dtype.is_floating_point:
            ints = False
        out: list[int | float] = [int(v) for v in vals] if ints else [float(v) for v in vals]
        if any(not math.isfinite(v) or not 0 < v <= T for v in out):
            raise ValueError(f"timesteps must lie in (0, T] = (0, {T}] (the chain always ends at t = 0), got "
                             f"{out[:6]}{' ...' if len(out) > 6 else ''}")
        if any(b >= a for a, b in zip(out[:-1], out[1:])):
            raise ValueError(f"timesteps must be strictly decreasing, got {out[:6]}{' ...' if len(out) > 6 else ''}")
        return [*out, 0]
    spacing = parse_spacing(spacing)
    N = T if steps is None else steps
    if spacing in _INTEGER_SPACINGS:
        return [*sampling_timesteps(T, N, spacing).flip(0).tolist(), 0]
    if isinstance(N, bool) or not isinstance(N, int) or N < 1:
        raise ValueError(f"steps = {steps!r} must be an integer >= 1")
    t_min = _check_t_min(t_min, T)
    if N == 1:
        return [float(T), 0]
    u = torch.linspace(0.0, 1.0, N, dtype=torch.float64)
    if spacing is TimeSpacing.LOGSNR:
        lo, hi = diffusion.log_snr_at(float(T)), diffusion.log_snr_at(t_min)
        ts = diffusion.schedule.t_from_log_snr(lo + u * (hi - lo))
    elif spacing is TimeSpacing.ANGLE:
        phi_max = math.atan(float(diffusion.sigma_ve_at(float(T))))
        phi_min = math.atan(float(diffusion.sigma_ve_at(t_min)))
        ts = diffusion.t_from_sigma_ve(torch.tan(phi_max + u * (phi_min - phi_max)))
    else:
        if not (isinstance(rho, (int, float)) and not isinstance(rho, bool) and rho > 0):
            raise ValueError(f"rho = {rho!r} must be a number > 0 (Karras et al. 2022 use rho = 7)")
        s_max, s_min = float(diffusion.sigma_ve_at(float(T))), float(diffusion.sigma_ve_at(t_min))
        t_0 = float(T)
        if sigma_max is not None:
            if isinstance(sigma_max, bool) or not isinstance(sigma_max, (int, float)) or not sigma_max > s_min:
                raise ValueError(f"sigma_max = {sigma_max!r} must be a number > sigma_VE(t_min) = {s_min:.4g} "
                                 "(or None = sigma_VE(T))")
            if s_max > sigma_max:
                s_max = float(sigma_max)
                t_0 = float(diffusion.t_from_sigma_ve(torch.tensor(s_max, dtype=torch.float64)))
        sig = (s_max ** (1 / rho) + u * (s_min ** (1 / rho) - s_max ** (1 / rho))) ** rho
        ts = diffusion.t_from_sigma_ve(sig)
    out = ts.tolist()
    out[0], out[-1] = (t_0 if spacing is TimeSpacing.KARRAS else float(T)), t_min  # exact ends (inversion rounds)
    return [*out, 0]


def respace(diffusion: GaussianDiffusion, timesteps: Tensor) -> GaussianDiffusion:
    """The diffusion restricted to ``timesteps: (S,)`` ascending: alpha_bar'_i = alpha_bar(tau_i), i = 1..S.

    Its step i corresponds to the original t = tau_i (call the network with tau_i); tau_i may be fractional
    (:meth:`GaussianDiffusion.alpha_bar_at`). With all T timesteps the original diffusion is returned unchanged.
    """
    T = diffusion.T
    ts = timesteps.detach().cpu()
    if ts.numel() == T and not ts.dtype.is_floating_point and torch.equal(ts, torch.arange(1, T + 1)):
        return diffusion
    abar = diffusion.alpha_bar_at(ts.double())
    log = logging.getLogger("elbolab.diffusion.schedules")
    level = log.level
    log.setLevel(logging.ERROR)  # a respaced chain ends at the original alpha_bar_T; no new warning
    try:
        schedule = NoiseSchedule.from_alpha_bars(abar)
    finally:
        log.setLevel(level)
    return GaussianDiffusion(schedule, diffusion.prediction, diffusion.variance)


# --------------------------------------------------------------------------------------------------
# single steps
# --------------------------------------------------------------------------------------------------
def _ancestral_update(chain: GaussianDiffusion, i: int, x_t: Tensor, x0: Tensor, eps: Tensor,
                      noise: Tensor | None, clip_x0: bool) -> tuple[Tensor, Tensor]:
    """Step i of ``chain`` from x0_hat/eps_hat (Algorithm 2, line 4); coefficients as Python floats (no sync)."""
    tab = chain._tables
    if clip_x0:
        x0 = x0.clamp(-1.0, 1.0)
        mean = float(tab["posterior_coef_x0"][i]) * x0 + float(tab["posterior_coef_xt"][i]) * x_t
    else:
        mean = float(tab["recip_sqrt_alphas"][i]) * (x_t - float(tab["eps_coef"][i]) * eps)
    if noise is None:
        return mean, x0
    return mean + math.sqrt(float(tab["reverse_variance"][i])) * noise, x0


def ancestral_step(
    diffusion: GaussianDiffusion,
    model_out: Tensor,
    x_t: Tensor,
    t: int,
    noise: Tensor | None,
    *,
    clip_x0: bool = False,
) -> tuple[Tensor, Tensor]:
    """One step of Algorithm 2: x_{t-1} = mu_theta(x_t, t) + sigma_t z; ``noise=None`` means z = 0.

    Returns ``(x_{t-1}, x0_hat)``; ``t`` is a step of ``diffusion`` (respaced or not). With ``clip_x0`` the
    mean is mu_q(x_t, clip(x0_hat)).
    """
    tt = diffusion.timesteps(t, x_t)
    x0, eps = diffusion.x0_and_eps(model_out, x_t, tt)
    return _ancestral_update(diffusion, int(t) if isinstance(t, int) else int(tt[0]), x_t, x0, eps, noise, clip_x0)


def ddim_sigma(alpha_bar_t: float, alpha_bar_prev: float, eta: float) -> float:
    """sigma of a DDIM step (Song et al. 2021, eq. 16):
    eta * sqrt((1 - abar_prev) / (1 - abar_t)) * sqrt(1 - abar_t / abar_prev)."""
    return eta * math.sqrt((1.0 - alpha_bar_prev) / (1.0 - alpha_bar_t) * (1.0 - alpha_bar_t / alpha_bar_prev))


def ddim_step(
    x0: Tensor, eps: Tensor, alpha_bar_prev: float, sigma: float, noise: Tensor | None
) -> Tensor:
    """x_prev = sqrt(abar_prev) x0 + sqrt(1 - abar_prev - sigma^2) eps + sigma z (Song et al. 2021, eq. 12)."""
    direction = math.sqrt(max(1.0 - alpha_bar_prev - sigma**2, 0.0))
    x = math.sqrt(alpha_bar_prev) * x0 + direction * eps
    if noise is not None and sigma > 0.0:
        x = x + sigma * noise
    return x


def check_generator(generator: torch.Generator) -> None:
    """TypeError unless ``generator`` is a torch.Generator (samplers take no implicit randomness)."""
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator (all randomness is explicit), got {generator!r}")


def initial_noise(shape: tuple[int, ...], generator: torch.Generator, x_T: Tensor | None) -> Tensor:
    """``x_T`` if given (its shape checked), else N(0, I) of ``shape = (B, ...)`` on the generator's device."""
    shape = tuple(int(s) for s in shape)
    if len(shape) < 2 or any(s < 1 for s in shape):
        raise ValueError(f"shape must be (B, ...) with positive sizes, got {shape}")
    if x_T is not None:
        if tuple(x_T.shape) != shape:
            raise ValueError(f"x_T has shape {tuple(x_T.shape)}, expected {shape}")
        return x_T
    return torch.randn(shape, generator=generator, device=generator.device)


def _randn(x: Tensor, generator: torch.Generator) -> Tensor:
    return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)


def _enter(
    model: nn.Module, shape: tuple[int, ...], diffusion: GaussianDiffusion, generator: torch.Generator,
    cond: Tensor | None, x_T: Tensor | None, clip_x0: bool,
) -> tuple[Tensor, Denoiser]:
    """The checks every sampler makes once where it is entered; returns (x_T, the denoiser)."""
    check_generator(generator)
    if not isinstance(diffusion, GaussianDiffusion):
        raise TypeError(f"diffusion must be a GaussianDiffusion, got {type(diffusion).__name__}")
    x = initial_noise(shape, generator, x_T)
    B = x.shape[0]
    if cond is not None and cond.shape[:1] != (B,):
        raise ValueError(f"cond must have shape ({B},), got {tuple(cond.shape)}")
    return x, Denoiser(model, diffusion, cond, clip_x0=clip_x0)


def _ve(den: Denoiser, t: int | float) -> tuple[float, float]:
    """(alpha, s) = (sqrt(alpha_bar(t)), sigma_VE(t) = sqrt((1 - alpha_bar) / alpha_bar)); (1, 0) at t = 0."""
    if t == 0:
        return 1.0, 0.0
    if isinstance(t, int):
        ab = float(den.alpha_bar(t))
        return math.sqrt(ab), math.sqrt((1.0 - ab) / ab)
    s = float(den.diffusion.sigma_ve_at(float(t)))
    return 1.0 / math.sqrt(1.0 + s * s), s


# --------------------------------------------------------------------------------------------------
# ancestral and DDIM
# --------------------------------------------------------------------------------------------------
@torch.no_grad()
def ancestral(
    model: nn.Module,
    shape: tuple[int, ...],
    diffusion: GaussianDiffusion,
    *,
    steps: int | None = None,
    generator: torch.Generator,
    cond: Tensor | None = None,
    callback: Callback | None = None,
    spacing: TimeSpacing | Spacing | str = Spacing.LEADING,
    timesteps: Sequence[int | float] | Tensor | None = None,
    clip_x0: bool = False,
    shared_noise: bool = False,
    x_T: Tensor | None = None,
    return_trajectory: bool = False,
    progress: bool = False,
) -> SampleResult:
    """Ancestral sampling from p_theta: exactly Algorithm 2 of Ho et al. 2020 when ``steps`` is None or T.

    With fewer steps, Algorithm 2 on the chain respaced to the visited times (alpha_bar'_i = alpha_bar(tau_i)).
    sigma_t^2 follows ``diffusion.variance`` (beta_t or beta_tilde_t). ``clip_x0`` clips x0_hat to [-1, 1]
    (images) before forming the mean. ``shared_noise``: every example receives the same z at each step ("we
    fixed the noise", Ho et al. 2020, Sec. 4.3). ``x_T``: start from this noise instead of drawing it.
    """
    x, den = _enter(model, shape, diffusion, generator, cond, x_T, False)
    times = time_grid(diffusion, steps, spacing, timesteps=timesteps)
    S = len(times) - 1
    chain = respace(diffusion, torch.tensor(times[-2::-1]))

    def noise(x: Tensor) -> Tensor:
        if not shared_noise:
            return _randn(x, generator)
        z = torch.randn((1, *x.shape[1:]), generator=generator, device=generator.device, dtype=x.dtype)
        return z.to(x.device).expand_as(x)

    def step(k: int, t: int | float, t_next: int | float, x: Tensor) -> tuple[Tensor, Tensor]:
        pred = den(x, t)
        i = S - k  # the index of t in the respaced chain
        return _ancestral_update(chain, i, x, pred.x0, pred.eps, noise(x) if i > 1 else None, clip_x0)

    return run_loop(x, times, step, counter=den, callback=callback, return_trajectory=return_trajectory,
                    progress=progress, name="ancestral")


@torch.no_grad()
def ddim(
    model: nn.Module,
    shape: tuple[int, ...],
    diffusion: GaussianDiffusion,
    *,
    steps: int | None = None,
    generator: torch.Generator,
    cond: Tensor | None = None,
    callback: Callback | None = None,
    eta: float = 0.0,
    spacing: TimeSpacing | Spacing | str = Spacing.LEADING,
    timesteps: Sequence[int | float] | Tensor | None = None,
    clip_x0: bool = False,
    x_T: Tensor | None = None,
    return_trajectory: bool = False,
    progress: bool = False,
) -> SampleResult:
    """DDIM sampling (Song et al. 2021): deterministic for ``eta = 0``; ``eta = 1`` is ancestral sampling with
    sigma^2 = beta_tilde on the respaced chain. ``steps`` defaults to T; the last step goes to alpha_bar_0 = 1
    (diffusers' ``set_alpha_to_one=True``) and returns x0_hat. With ``clip_x0`` the x0 estimate is clipped to
    [-1, 1] and eps_hat recomputed from it.
    """
    if not 0.0 <= float(eta) <= 1.0:
        raise ValueError(f"eta = {eta!r} must be in [0, 1]")
    x, den = _enter(model, shape, diffusion, generator, cond, x_T, clip_x0)
    times = time_grid(diffusion, steps, spacing, timesteps=timesteps)

    def step(k: int, t: int | float, t_next: int | float, x: Tensor) -> tuple[Tensor, Tensor]:
        pred = den(x, t)
        ab_t, ab_prev = float(pred.alpha_bar), float(den.alpha_bar(t_next))
        sigma = ddim_sigma(ab_t, ab_prev, float(eta))
        z = _randn(x, generator) if sigma > 0 else None
        return ddim_step(pred.x0, pred.eps, ab_prev, sigma, z), pred.x0

    return run_loop(x, times, step, counter=den, callback=callback, return_trajectory=return_trajectory,
                    progress=progress, name="ddim")


# --------------------------------------------------------------------------------------------------
# probability-flow ODE in VE coordinates: Euler and Heun (Karras et al. 2022)
# --------------------------------------------------------------------------------------------------
def _check_churn(S_churn: float, S_tmin: float, S_tmax: float, S_noise: float) -> None:
    for name, v in (("S_churn", S_churn), ("S_tmin", S_tmin), ("S_noise", S_noise)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not v >= 0 or not math.isfinite(v):
            raise ValueError(f"{name} = {v!r} must be a finite number >= 0")
    if isinstance(S_tmax, bool) or not isinstance(S_tmax, (int, float)) or not S_tmax >= S_tmin:
        raise ValueError(f"S_tmax = {S_tmax!r} must be a number >= S_tmin = {S_tmin!r} (inf: no upper limit)")


def _churn(den: Denoiser, x: Tensor, t: int | float, s: float, gamma: float, S_noise: float,
           generator: torch.Generator) -> tuple[Tensor, int | float, float, float]:
    """Karras et al. 2022, Algorithm 2, lines 5-6: raise the noise from s to s_hat = (1 + gamma) s by adding
    N(0, (s_hat^2 - s^2) S_noise^2) in VE coordinates; s_hat is capped at sigma_VE(T) (the process ends there).
    Returns (x_hat, t_hat, alpha_hat, s_hat); no change (and no random draw) when gamma = 0."""
    if gamma <= 0.0:
        a, _ = _ve(den, t)
        return x, t, a, s
    s_max = float(den.diffusion.sigma_ve_at(float(den.diffusion.T)))
    s_hat = min(s * (1.0 + gamma), s_max)
    if s_hat <= s:
        a, _ = _ve(den, t)
        return x, t, a, s
    t_hat = float(den.diffusion.t_from_sigma_ve(s_hat))
    a, _ = _ve(den, t)
    a_hat = 1.0 / math.sqrt(1.0 + s_hat * s_hat)
    y = x / a + math.sqrt(s_hat**2 - s**2) * S_noise * _randn(x, generator)
    return a_hat * y, t_hat, a_hat, s_hat


@torch.no_grad()
def euler(
    model: nn.Module,
    shape: tuple[int, ...],
    diffusion: GaussianDiffusion,
    *,
    steps: int | None = None,
    generator: torch.Generator,
    cond: Tensor | None = None,
    callback: Callback | None = None,
    spacing: TimeSpacing | Spacing | str = TimeSpacing.KARRAS,
    timesteps: Sequence[int | float] | Tensor | None = None,
    t_min: float = DEFAULT_T_MIN,
    rho: float = 7.0,
    S_churn: float = 0.0,
    S_tmin: float = 0.0,
    S_tmax: float = math.inf,
    S_noise: float = 1.0,
    clip_x0: bool = False,
    x_T: Tensor | None = None,
    return_trajectory: bool = False,
    progress: bool = False,
) -> SampleResult:
    """The probability-flow ODE by Euler's method in VE coordinates (k-diffusion's ``sample_euler``).

    With y = x / alpha and s = sigma / alpha the ODE is dy/ds = (y - D(y; s)) / s = eps_hat (Karras et al. 2022,
    eq. 3 with sigma(t) = t); one step y' = y + (s' - s) eps_hat, x' = alpha' y', i.e. x' = alpha' x0_hat +
    sigma' eps_hat: DDIM with eta = 0 on the same times. ``S_churn`` etc.: the churn of :func:`heun` (default
    off). NFE = N (steps).
    """
    _check_churn(S_churn, S_tmin, S_tmax, S_noise)
    x, den = _enter(model, shape, diffusion, generator, cond, x_T, clip_x0)
    times = time_grid(diffusion, steps, spacing, timesteps=timesteps, t_min=t_min, rho=rho)
    N = len(times) - 1

    def step(k: int, t: int | float, t_next: int | float, x: Tensor) -> tuple[Tensor, Tensor]:
        _, s = _ve(den, t)
        gamma = min(S_churn / N, math.sqrt(2.0) - 1.0) if S_tmin <= s <= S_tmax else 0.0
        x, t, a, s = _churn(den, x, t, s, gamma, S_noise, generator)
        a_n, s_n = _ve(den, t_next)
        pred = den(x, t)
        y = x / a
        d = (y - pred.x0) / s
        return a_n * (y + (s_n - s) * d), pred.x0

    return run_loop(x, times, step, counter=den, callback=callback, return_trajectory=return_trajectory,
                    progress=progress, name="euler")


@torch.no_grad()
def heun(
    model: nn.Module,
    shape: tuple[int, ...],
    diffusion: GaussianDiffusion,
    *,
    steps: int | None = None,
    generator: torch.Generator,
    cond: Tensor | None = None,
    callback: Callback | None = None,
    spacing: TimeSpacing | Spacing | str = TimeSpacing.KARRAS,
    timesteps: Sequence[int | float] | Tensor | None = None,
    t_min: float = DEFAULT_T_MIN,
    rho: float = 7.0,
    S_churn: float = 0.0,
    S_tmin: float = 0.0,
    S_tmax: float = math.inf,
    S_noise: float = 1.0,
    clip_x0: bool = False,
    x_T: Tensor | None = None,
    return_trajectory: bool = False,
    progress: bool = False,
) -> SampleResult:
    """Algorithm 2 of Karras et al. 2022 (EDM) in the VE coordinates y = x / alpha, s = sigma / alpha.

    For each step s_i -> s_{i+1}: gamma_i = min(S_churn / N, sqrt(2) - 1) if S_tmin <= s_i <= S_tmax else 0;
    s_hat = (1 + gamma_i) s_i, y_hat = y + sqrt(s_hat^2 - s_i^2) eps, eps ~ N(0, S_noise^2 I); an Euler step
    d = (y_hat - D(y_hat; s_hat)) / s_hat, y' = y_hat + (s_{i+1} - s_hat) d, and if s_{i+1} != 0 the trapezoidal
    correction y' = y_hat + (s_{i+1} - s_hat)(d + d') / 2 with d' = (y' - D(y'; s_{i+1})) / s_{i+1}.
    S_churn = 0 (the default) is the deterministic 2nd-order Heun solver (their Algorithm 1). The EDM values
    for ImageNet-64 are S_churn = 80, S_tmin = 0.05, S_tmax = 50, S_noise = 1.003 (in sigma_VE units). NFE =
    2 N - 1.
    """
    _check_churn(S_churn, S_tmin, S_tmax, S_noise)
    x, den = _enter(model, shape, diffusion, generator, cond, x_T, clip_x0)
    times = time_grid(diffusion, steps, spacing, timesteps=timesteps, t_min=t_min, rho=rho)
    N = len(times) - 1

    def step(k: int, t: int | float, t_next: int | float, x: Tensor) -> tuple[Tensor, Tensor]:
        _, s = _ve(den, t)
        gamma = min(S_churn / N, math.sqrt(2.0) - 1.0) if S_tmin <= s <= S_tmax else 0.0
        x, t_hat, a_hat, s_hat = _churn(den, x, t, s, gamma, S_noise, generator)
        a_n, s_n = _ve(den, t_next)
        pred = den(x, t_hat)
        y_hat = x / a_hat
        d = (y_hat - pred.x0) / s_hat
        y_next = y_hat + (s_n - s_hat) * d
        if s_n > 0.0:
            pred_n = den(a_n * y_next, t_next)
            d_n = (y_next - pred_n.x0) / s_n
            y_next = y_hat + (s_n - s_hat) * (0.5 * d + 0.5 * d_n)
        return a_n * y_next, pred.x0

    return run_loop(x, times, step, counter=den, callback=callback, return_trajectory=return_trajectory,
                    progress=progress, name="heun")


# --------------------------------------------------------------------------------------------------
# DPM-Solver++ (Lu et al. 2022): data prediction, exponential integrator in lambda = log(alpha / sigma)
# --------------------------------------------------------------------------------------------------
def _vp(den: Denoiser, t: int | float) -> tuple[float, float, float]:
    """(alpha, sigma, s = sigma / alpha) at t; (1, 0, 0) at t = 0. DPM-Solver's lambda = -log s."""
    a, s = _ve(den, t)
    return a, a * s, s


def _dpmpp(model: nn.Module, shape: tuple[int, ...], diffusion: GaussianDiffusion, *, steps: int | None,
           generator: torch.Generator, cond: Tensor | None, callback: Callback | None, spacing: TimeSpacing | str,
           timesteps: Sequence[int | float] | Tensor | None, t_min: float, rho: float, clip_x0: bool,
           x_T: Tensor | None, return_trajectory: bool, progress: bool, sde: bool, eta: float) -> SampleResult:
    x, den = _enter(model, shape, diffusion, generator, cond, x_T, clip_x0)
    times = time_grid(diffusion, steps, spacing, timesteps=timesteps, t_min=t_min, rho=rho)
    state: dict[str, object] = {}

    def step(k: int, t: int | float, t_next: int | float, x: Tensor) -> tuple[Tensor, Tensor]:
        a, sig, s = _vp(den, t)
        a_n, sig_n, s_n = _vp(den, t_next)
        x0 = den(x, t).x0
        D = x0
        prev = state.get("prev")
        if prev is not None and s_n > 0.0:  # 2nd order (multistep); the first and the last step are 1st order
            x0_prev, s_prev = prev  # type: ignore[misc]
            r = math.log(s_prev / s) / math.log(s / s_n)  # r = h_{i-1} / h_i
            D = (1.0 + 1.0 / (2.0 * r)) * x0 - (1.0 / (2.0 * r)) * x0_prev
        state["prev"] = (x0, s)
        if s_n == 0.0:
            return D, x0  # lambda' = inf: x_0 = D (the lower-order final step to sigma = 0)
        ratio = s_n / s  # e^{-h}, h = lambda' - lambda
        if not sde:
            # x' = (sigma'/sigma) x - alpha' (e^{-h} - 1) D   (DPM-Solver++(2M), Lu et al. 2022, eq. 13 / Alg. 2)
            return (sig_n / sig) * x + a_n * (1.0 - ratio) * D, x0
        # x' = (sigma'/sigma) e^{-eta h} x + alpha' (1 - e^{-(1+eta) h}) D + sigma' sqrt(1 - e^{-2 eta h}) z
        e_h = ratio**eta
        out = (sig_n / sig) * e_h * x + a_n * (1.0 - ratio * e_h) * D
        return out + sig_n * math.sqrt(max(1.0 - e_h * e_h, 0.0)) * _randn(x, generator), x0

    return run_loop(x, times, step, counter=den, callback=callback, return_trajectory=return_trajectory,
                    progress=progress, name="dpmpp_2m_sde" if sde else "dpmpp_2m")


@torch.no_grad()
def dpmpp_2m(
    model: nn.Module,
    shape: tuple[int, ...],
    diffusion: GaussianDiffusion,
    *,
    steps: int | None = None,
    generator: torch.Generator,
    cond: Tensor | None = None,
    callback: Callback | None = None,
    spacing: TimeSpacing | Spacing | str = TimeSpacing.LOGSNR,
    timesteps: Sequence[int | float] | Tensor | None = None,
    t_min: float = DEFAULT_T_MIN,
    rho: float = 7.0,
    clip_x0: bool = False,
    x_T: Tensor | None = None,
    return_trajectory: bool = False,
    progress: bool = False,
) -> SampleResult:
    """DPM-Solver++(2M) (Lu et al. 2022, "DPM-Solver++", Algorithm 2; diffusers' DPMSolverMultistepScheduler
    with algorithm_type "dpmsolver++", solver_order 2, solver_type "midpoint", lower_order_final).

    With lambda = log(alpha / sigma), h_i = lambda_{i+1} - lambda_i, r_i = h_{i-1} / h_i and the data
    prediction x0_hat_i: D_i = (1 + 1 / (2 r_i)) x0_hat_i - x0_hat_{i-1} / (2 r_i) (D_0 = x0_hat_0), and
    x_{i+1} = (sigma_{i+1} / sigma_i) x_i - alpha_{i+1} (e^{-h_i} - 1) D_i. The first step is 1st order, and
    so is the last one, to sigma = 0, which returns D = x0_hat. Deterministic; NFE = N.
    """
    return _dpmpp(model, shape, diffusion, steps=steps, generator=generator, cond=cond, callback=callback,
                  spacing=spacing, timesteps=timesteps, t_min=t_min, rho=rho, clip_x0=clip_x0, x_T=x_T,
                  return_trajectory=return_trajectory, progress=progress, sde=False, eta=0.0)


@torch.no_grad()
def dpmpp_2m_sde(
    model: nn.Module,
    shape: tuple[int, ...],
    diffusion: GaussianDiffusion,
    *,
    steps: int | None = None,
    generator: torch.Generator,
    cond: Tensor | None = None,
    callback: Callback | None = None,
    spacing: TimeSpacing | Spacing | str = TimeSpacing.LOGSNR,
    timesteps: Sequence[int | float] | Tensor | None = None,
    t_min: float = DEFAULT_T_MIN,
    rho: float = 7.0,
    eta: float = 1.0,
    clip_x0: bool = False,
    x_T: Tensor | None = None,
    return_trajectory: bool = False,
    progress: bool = False,
) -> SampleResult:
    """DPM-Solver++(2M) SDE (Lu et al. 2022; diffusers' "sde-dpmsolver++" with the midpoint rule, k-diffusion's
    ``sample_dpmpp_2m_sde``): the reverse SDE solved with the same data-prediction multistep D_i as
    :func:`dpmpp_2m`,

        x_{i+1} = (sigma_{i+1} / sigma_i) e^{-eta h} x_i + alpha_{i+1} (1 - e^{-(1 + eta) h}) D_i
                  + sigma_{i+1} sqrt(1 - e^{-2 eta h}) z,

    eta = 1 (the default) being the reverse SDE of the diffusion, eta = 0 :func:`dpmpp_2m`. The last step,
    to sigma = 0, returns D = x0_hat without noise. NFE = N.
    """
    if isinstance(eta, bool) or not isinstance(eta, (int, float)) or not 0.0 <= eta <= 1.0:
        raise ValueError(f"eta = {eta!r} must be in [0, 1] (1: the reverse SDE, 0: the ODE)")
    return _dpmpp(model, shape, diffusion, steps=steps, generator=generator, cond=cond, callback=callback,
                  spacing=spacing, timesteps=timesteps, t_min=t_min, rho=rho, clip_x0=clip_x0, x_T=x_T,
                  return_trajectory=return_trajectory, progress=progress, sde=True, eta=float(eta))


#: every sampler of this module by name (the family registry maps the CLI names onto these)
SAMPLERS = {"ancestral": ancestral, "ddim": ddim, "euler": euler, "heun": heun, "dpmpp_2m": dpmpp_2m,
            "dpmpp_2m_sde": dpmpp_2m_sde}

# names used by elbolab.score.samplers before these helpers were public
_check_generator, _initial_noise = check_generator, initial_noise
