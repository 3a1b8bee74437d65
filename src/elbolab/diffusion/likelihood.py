"""The exact log-likelihood of a diffusion model through its probability-flow ODE (Song et al. 2021, "Score-based
generative modeling through SDEs", Sec. 4.3 and Appendix D.2; Chen et al. 2018, "Neural ODEs", instantaneous
change of variables).

The probability-flow ODE of the variance-preserving process, written in its log-SNR lambda (the continuous
time of :meth:`GaussianDiffusion.alpha_bar_at`, alpha^2 = sigmoid(lambda), sigma^2 = sigmoid(-lambda)), is

    dx / dlambda = f(x, lambda) = (sigma^2 x - sigma eps_hat(x, t(lambda))) / 2,

(from dx/dt = -beta/2 x + beta/2 eps_hat / sigma with beta = -sigma^2 dlambda/dt); it carries q(x_t) to q(x_T)
deterministically, and log p_{t_min}(x) = log N(x_T; 0, I) - int_{lambda(t_min)}^{lambda(T)} div f dlambda
(the integral runs towards decreasing lambda, so the sign flips in the code's increasing variable u = -lambda).
Integrating in lambda rather than t keeps the vector field as smooth as the network (t(lambda) is the exact
inverse of the interpolation), and the range lambda(t_min)..lambda(T) is O(10) long.

- The solver is ``torchdiffeq``'s adaptive dopri5 (Dormand-Prince 5(4), the field's standard, as in score_sde).
  By default (``per_image=True``) every image is solved on its own, so its result does not depend on the rest
  of the batch at all. With ``per_image=False`` the batch is solved jointly with the largest error of any
  coordinate as the error norm (a step is accepted only if every image is within tolerance): faster, and per-image
  results then move with the batch by up to ~20 x rtol (measured in the tests). Never wrap this in DDP: ranks
  would take different numbers of steps and hang.
- The divergence is the exact trace of the Jacobian (``exact_trace=True``: D backward passes, for small D) or
  Hutchinson's estimator v^T (df/dx) v with one Rademacher v per example drawn from ``generator`` and kept for
  the whole trajectory (Grathwohl et al. 2019, FFJORD), unbiased for log p.
- ``t_min``: the ODE starts at t_min > 0 because lambda(0) = inf; the result is the density of x as a draw of
  the model's marginal at t_min (default 1: the least noisy step of the discrete chain; sigma(1) = 0.01 for the
  linear schedule). For data in [-1, 1] that are 8-bit images, :func:`bits_per_dim` adds uniform
  dequantisation.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from elbolab.diffusion.loop import CallCounter, time_batch
from elbolab.diffusion.process import GaussianDiffusion

logger = logging.getLogger(__name__)

__all__ = ["BitsPerDim", "ODELikelihood", "bits_per_dim", "ode_decode", "ode_encode", "ode_log_likelihood"]

#: default start of the ODE in the continuous time of the diffusion
DEFAULT_T_MIN = 1.0


@dataclass(frozen=True)
class ODELikelihood:
    """``log_px: (B,)`` nats, the log density of x under the probability-flow ODE model at ``t_min`` (continuous
    data); ``prior_log_p: (B,)`` log N(z; 0, I) of the encoding ``z: (B, ...)`` = x_T; ``delta_log_p: (B,)`` the
    divergence integral (log_px = prior_log_p + delta_log_p); ``nfe``: network evaluations of the whole batch
    (each one forward and one backward pass; ``D`` backward passes with the exact trace)."""

    log_px: Tensor
    prior_log_p: Tensor
    delta_log_p: Tensor
    z: Tensor
    nfe: int
    t_min: float
    exact_trace: bool


@dataclass(frozen=True)
class BitsPerDim:
    """Negative log-likelihood of 8-bit images in bits/dim by uniform dequantisation: ``per_image: (B,)`` (the
    mean over ``n_dequant`` draws u ~ U[0, 1)^D per image of -log p(x + u) + D log 128 over D ln 2, an upper
    bound on the discrete NLL), ``mean`` and its standard error over images ``stderr``, ``nfe`` in total."""

    per_image: Tensor
    mean: float
    stderr: float
    n_dequant: int
    nfe: int


def _check(model: nn.Module, x: Tensor, diffusion: GaussianDiffusion, t_min: float, rtol: float,
           atol: float) -> None:
    if not isinstance(diffusion, GaussianDiffusion):
        raise TypeError(f"diffusion must be a GaussianDiffusion, got {type(diffusion).__name__}")
    if not isinstance(x, Tensor) or x.ndim < 2 or x.shape[0] < 1:
        raise ValueError(f"x must be a (B, ...) tensor, got {getattr(x, 'shape', x)!r}")
    if isinstance(t_min, bool) or not isinstance(t_min, (int, float)) or not 0.0 < t_min < diffusion.T:
        raise ValueError(f"t_min = {t_min!r} must be a number in (0, T) = (0, {diffusion.T})")
    for name, v in (("rtol", rtol), ("atol", atol)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
            raise ValueError(f"{name} = {v!r} must be a number > 0")


class _Field:
    """f(x, lambda) = (sigma^2 x - sigma eps_hat(x, t(lambda))) / 2, flattened, with the model call counted."""

    def __init__(self, model: nn.Module, diffusion: GaussianDiffusion, shape: tuple[int, ...],
                 cond: Tensor | None) -> None:
        self.counter = CallCounter(model)
        self.diffusion, self.shape, self.cond = diffusion, shape, cond
        self.lam_T = float(diffusion.log_snr_at(float(diffusion.T)))

    def __call__(self, x_flat: Tensor, lam: float) -> Tensor:
        d = self.diffusion
        lam = max(lam, self.lam_T)  # the solver's first trial step may probe past t = T: the field is held there
        t = float(d.schedule.t_from_log_snr(lam))
        sig2 = 1.0 / (1.0 + math.exp(lam))  # sigmoid(-lambda)
        abar = torch.tensor(1.0 - sig2, dtype=torch.float64, device=x_flat.device)
        x = x_flat.reshape(self.shape)
        out = self.counter(x, time_batch(t, x), self.cond)
        _, eps = d.split_output(out, x, abar)
        return 0.5 * (sig2 * x_flat - math.sqrt(sig2) * eps.reshape(x_flat.shape))


def _max_norm(state: Tensor) -> Tensor:
    """torchdiffeq error norm: the largest error ratio of any coordinate of any image (rows are images)."""
    return state.abs().max()


def _solve(fn, y0: Tensor, u0: float, u1: float, rtol: float, atol: float) -> Tensor:
    from torchdiffeq import odeint

    span = torch.tensor([u0, u1], dtype=torch.float64, device=y0.device)
    # step_t: the step that would cross u1 ends on it (torchdiffeq otherwise steps past the end and interpolates)
    options = {"norm": _max_norm, "step_t": span[1:]}
    return odeint(fn, y0, span, method="dopri5", rtol=rtol, atol=atol, options=options)[-1]


def _lambda_range(diffusion: GaussianDiffusion, t_min: float) -> tuple[float, float]:
    return float(diffusion.log_snr_at(float(t_min))), float(diffusion.log_snr_at(float(diffusion.T)))


@torch.no_grad()
def ode_encode(model: nn.Module, x: Tensor, diffusion: GaussianDiffusion, *, cond: Tensor | None = None,
               t_min: float = DEFAULT_T_MIN, rtol: float = 1e-5, atol: float = 1e-5) -> Tensor:
    """The probability-flow ODE from x = x_{t_min} (``(B, ...)``) to its code z = x_T, ``(B, ...)``."""
    _check(model, x, diffusion, t_min, rtol, atol)
    field = _Field(model, diffusion, tuple(x.shape), cond)
    lam0, lam1 = _lambda_range(diffusion, t_min)
    z = _solve(lambda u, y: -field(y, -float(u)), x.reshape(x.shape[0], -1), -lam0, -lam1, rtol, atol)
    return z.reshape(x.shape)


@torch.no_grad()
def ode_decode(model: nn.Module, z: Tensor, diffusion: GaussianDiffusion, *, cond: Tensor | None = None,
               t_min: float = DEFAULT_T_MIN, rtol: float = 1e-5, atol: float = 1e-5) -> Tensor:
    """The probability-flow ODE from z = x_T (``(B, ...)``) back to x_{t_min}, ``(B, ...)``."""
    _check(model, z, diffusion, t_min, rtol, atol)
    field = _Field(model, diffusion, tuple(z.shape), cond)
    lam0, lam1 = _lambda_range(diffusion, t_min)
    x = _solve(lambda u, y: field(y, float(u)), z.reshape(z.shape[0], -1), lam1, lam0, rtol, atol)
    return x.reshape(z.shape)


def ode_log_likelihood(
    model: nn.Module,
    x: Tensor,
    diffusion: GaussianDiffusion,
    *,
    generator: torch.Generator,
    exact_trace: bool = False,
    cond: Tensor | None = None,
    t_min: float = DEFAULT_T_MIN,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    per_image: bool = True,
) -> ODELikelihood:
    """log p(x) in nats per example, ``x: (B, ...)`` continuous data, by the probability-flow ODE (module doc).

    ``exact_trace``: the divergence as the exact Jacobian trace (D backward passes per evaluation; small D),
    otherwise Hutchinson's estimator with one Rademacher probe per example from ``generator`` (on its device;
    all B probes are drawn first, so the draws do not depend on ``per_image``). ``rtol``, ``atol``: dopri5
    tolerances (score_sde uses 1e-5). ``per_image``: solve each image separately (module doc). ``cond: (B,)``
    labels or None. Returns :class:`ODELikelihood` (``nfe`` summed over the separate solves).
    """
    _check(model, x, diffusion, t_min, rtol, atol)
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator (all randomness is explicit), got {generator!r}")
    B = x.shape[0]
    D = x[0].numel()
    probe = None
    if not exact_trace:
        probe = torch.randint(0, 2, (B, D), generator=generator, device=generator.device).to(x.device, x.dtype)
        probe = 2.0 * probe - 1.0
    if not per_image or B == 1:
        return _log_likelihood(model, x, diffusion, probe, cond, t_min, rtol, atol)
    parts = [_log_likelihood(model, x[i:i + 1], diffusion, None if probe is None else probe[i:i + 1],
                             None if cond is None else cond[i:i + 1], t_min, rtol, atol) for i in range(B)]
    return ODELikelihood(log_px=torch.cat([p.log_px for p in parts]),
                         prior_log_p=torch.cat([p.prior_log_p for p in parts]),
                         delta_log_p=torch.cat([p.delta_log_p for p in parts]), z=torch.cat([p.z for p in parts]),
                         nfe=sum(p.nfe for p in parts), t_min=float(t_min), exact_trace=bool(exact_trace))


def _log_likelihood(model: nn.Module, x: Tensor, diffusion: GaussianDiffusion, probe: Tensor | None,
                    cond: Tensor | None, t_min: float, rtol: float, atol: float) -> ODELikelihood:
    """One joint dopri5 solve of the augmented ODE (x, log p) for the batch ``x``; ``probe`` None: exact trace."""
    exact_trace = probe is None
    B = x.shape[0]
    D = x[0].numel()
    field = _Field(model, diffusion, tuple(x.shape), cond)
    lam0, lam1 = _lambda_range(diffusion, t_min)

    def rhs(u: Tensor, state: Tensor) -> Tensor:
        lam = -float(u)
        with torch.enable_grad():
            y = state[:, :D].detach().requires_grad_(True)
            f = -field(y, lam)  # dy/du with u = -lambda
            if probe is not None:
                (vjp,) = torch.autograd.grad(f, y, probe)
                div = (vjp * probe).sum(1)
            else:
                div = torch.zeros(B, dtype=f.dtype, device=f.device)
                for i in range(D):
                    (row,) = torch.autograd.grad(f[:, i].sum(), y, retain_graph=i < D - 1)
                    div = div + row[:, i]
        return torch.cat([f.detach(), div.detach()[:, None]], dim=1)

    state0 = torch.cat([x.reshape(B, -1).detach(), torch.zeros(B, 1, dtype=x.dtype, device=x.device)], dim=1)
    end = _solve(rhs, state0, -lam0, -lam1, rtol, atol)
    z, delta = end[:, :D], end[:, D]
    prior = -0.5 * (z.double() ** 2).sum(1) - 0.5 * D * math.log(2.0 * math.pi)
    # log p_u1(z) = log p_u0(x) - int div f du  =>  log p(x) = log N(z) + int div f du
    delta = delta.double()
    nfe = field.counter.nfe
    logger.debug("ODE likelihood: %d images, %d network evaluations", B, nfe)
    return ODELikelihood(log_px=prior + delta, prior_log_p=prior, delta_log_p=delta, z=z.reshape(x.shape),
                         nfe=nfe, t_min=float(t_min), exact_trace=bool(exact_trace))


def bits_per_dim(
    model: nn.Module,
    x: Tensor,
    diffusion: GaussianDiffusion,
    *,
    generator: torch.Generator,
    n_dequant: int = 1,
    exact_trace: bool = False,
    cond: Tensor | None = None,
    t_min: float = DEFAULT_T_MIN,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    per_image: bool = True,
) -> BitsPerDim:
    """NLL in bits/dim of 8-bit images ``x: (B, C, H, W)`` in [-1, 1] (x = 2 k / 255 - 1, k in 0..255, as the
    data loaders scale them) by uniform dequantisation (Theis et al. 2016; Song et al. 2021, Appendix D.2):
    x~ = 2 (k + u) / 256 - 1 with u ~ U[0, 1)^D from ``generator``, and

        -log P(k) <= E_u[-log p(x~)] - D log(2 / 256)   (p the ODE density on [-1, 1]),

    estimated with ``n_dequant`` draws per image (state it when reporting). Returns :class:`BitsPerDim`.
    """
    if isinstance(n_dequant, bool) or not isinstance(n_dequant, int) or n_dequant < 1:
        raise ValueError(f"n_dequant = {n_dequant!r} must be an integer >= 1 (dequantisation draws per image)")
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator (all randomness is explicit), got {generator!r}")
    k = ((x.double() + 1.0) * 127.5).round().clamp(0, 255)
    D = x[0].numel()
    total = torch.zeros(x.shape[0], dtype=torch.float64)
    nfe = 0
    for _ in range(n_dequant):
        u = torch.rand(x.shape, generator=generator, device=generator.device, dtype=torch.float64).to(x.device)
        x_deq = (2.0 * (k + u) / 256.0 - 1.0).to(x.dtype)
        res = ode_log_likelihood(model, x_deq, diffusion, generator=generator, exact_trace=exact_trace, cond=cond,
                                 t_min=t_min, rtol=rtol, atol=atol, per_image=per_image)
        total += (-res.log_px.cpu() - D * math.log(2.0 / 256.0)) / (D * math.log(2.0))
        nfe += res.nfe
    per = total / n_dequant
    se = float(per.std() / math.sqrt(per.numel())) if per.numel() > 1 else math.nan
    return BitsPerDim(per_image=per, mean=float(per.mean()), stderr=se, n_dequant=n_dequant, nfe=nfe)
