"""The VDM bound, term by term: continuous time (T = 0, i.e. T -> infinity) and discrete T.

Kingma, Salimans, Poole & Ho 2021, "Variational Diffusion Models", with gamma = -log SNR (see
:mod:`elbolab.vdm.schedules`), z_t = alpha_t x + sigma_t eps, and eps_hat the network's noise prediction::

    -log p(x) <= L(x) = reconstruction + prior + denoising,
    reconstruction = E_{q(z_0|x)} [-log p(x | z_0)]                                    (at gamma_0)
    prior          = KL(q(z_1 | x) || N(0, I))                                          (at gamma_1)
    denoising, T = 0 (eq. 17):   L_inf(x) = 1/2 E_{t~U(0,1), eps} [gamma'(t) ||eps - eps_hat(z_t; t)||^2]
    denoising, T > 0 (eq. 13/14): L_T(x) = T/2 E_{i~U{1..T}, eps} [(exp(gamma(t) - gamma(s)) - 1)
                                                                     ||eps - eps_hat(z_t; t)||^2],
                                 t = i/T, s = (i - 1)/T,

each per example in nats (sums over the data dimensions). The discrete-T term is the sum of the T Gaussian
KLs KL(q(z_s|z_t,x) || p(z_s|z_t)) = 1/2 (SNR(s) - SNR(t)) ||x - x_hat||^2 (eq. 13), and it decreases
towards L_inf as T doubles (Sec. 3.4 of the paper: more steps give a tighter bound).

Decoders p(x | z_0) (:class:`VDMDecoder`), both factorised over dimensions:

- ``SOFTMAX`` (8-bit data in [-1, 1], elbolab's grid x_k = 2k/255 - 1, k = 0..255): VDM's discrete decoder
  (``model_vdm.EncDec``), a softmax over the 256 values with logits -(z_0/alpha_0 - x_k)^2 / (2 exp(gamma_0)),
  exp(gamma_0) = sigma_0^2 / alpha_0^2. (VDM's code puts its grid at bin centres 2(k + 1/2)/256 - 1; elbolab
  keeps the grid its data uses.) The bound is then on -log P(x) of the discrete data.
- ``GAUSSIAN`` (continuous data): log N(x; z_0 / alpha_0, exp(gamma_0) I), a bound on -log density.

Sampling of t (:class:`TimeSampling`): ``LOW_DISCREPANCY``, VDM's shifted lattice t_i = (u + i/B) mod 1 with
one u ~ U(0, 1) per batch (every t_i is uniform, so the batch mean stays unbiased, with lower variance), or
``UNIFORM`` i.i.d. draws (used for evaluation, whose standard errors assume independent images).
Discrete T: t is rounded up to the grid, t = ceil(u T) / T (VDM's ``jnp.ceil(t * T) / T``).
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from elbolab.diffusion.elbo import ELBOTerms, PerImageTerms
from elbolab.math import LOG_2PI, nats_to_bpd, num_dims, sum_flat
from elbolab.vdm._choices import parse_choice
from elbolab.vdm.model import VDMModel
from elbolab.vdm.schedules import GammaAt

__all__ = [
    "TimeSampling",
    "VDMDecoder",
    "VDMLossTerms",
    "continuous_diffusion_loss",
    "decoder_log_probs",
    "discrete_diffusion_loss",
    "discretise_times",
    "elbo_terms",
    "loss_terms",
    "low_discrepancy_times",
    "prior_kl",
    "reconstruction_nll",
    "sample_times",
]


class VDMDecoder(str, enum.Enum):
    """p(x | z_0) of the reconstruction term."""

    SOFTMAX = "softmax"  # 8-bit data: VDM's softmax over the 256 values
    GAUSSIAN = "gaussian"  # continuous data: N(x; z_0 / alpha_0, exp(gamma_0) I)


class TimeSampling(str, enum.Enum):
    """How the t of a batch are drawn."""

    LOW_DISCREPANCY = "low-discrepancy"  # t_i = (u + i / B) mod 1
    UNIFORM = "uniform"  # i.i.d. U(0, 1)


def parse_decoder(kind: VDMDecoder | str) -> VDMDecoder:
    return parse_choice(kind, VDMDecoder, "vdm decoder")


def parse_time_sampling(kind: TimeSampling | str) -> TimeSampling:
    return parse_choice(kind, TimeSampling, "vdm time_sampling")


# --------------------------------------------------------------------------------------------------
# Times
# --------------------------------------------------------------------------------------------------
def low_discrepancy_times(
    batch: int, generator: torch.Generator, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
) -> Tensor:
    """t_i = (u + i / B) mod 1, i = 0..B-1, one u ~ U(0, 1) (VDM's antithetic time sampling), ``(B,)``."""
    u = torch.rand((), generator=generator, device=device, dtype=torch.float64)
    i = torch.arange(batch, device=device, dtype=torch.float64)
    return torch.remainder(u + i / batch, 1.0).to(dtype)


def sample_times(
    batch: int, generator: torch.Generator, kind: TimeSampling | str, device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """``(B,)`` times in [0, 1) drawn as ``kind`` says (:class:`TimeSampling`)."""
    if parse_time_sampling(kind) is TimeSampling.LOW_DISCREPANCY:
        return low_discrepancy_times(batch, generator, device, dtype)
    return torch.rand(batch, generator=generator, device=device, dtype=torch.float64).to(dtype)


def discretise_times(t: Tensor, T: int) -> Tensor:
    """t rounded up to the grid {1/T, ..., 1}: ceil(t T) / T (t = 0 goes to 1/T), ``(B,)``."""
    return torch.clamp(torch.ceil(t * T), min=1.0) / T


# --------------------------------------------------------------------------------------------------
# The three terms, per example in nats
# --------------------------------------------------------------------------------------------------
def prior_kl(x: Tensor, gamma_1: Tensor) -> Tensor:
    """KL(q(z_1 | x) || N(0, I)) = 1/2 sum (alpha_1^2 x^2 + sigma_1^2 - log sigma_1^2 - 1), ``(B,)`` nats."""
    g1 = gamma_1.to(torch.float64) if x.dtype == torch.float64 else gamma_1.float()
    a2, s2, log_s2 = torch.sigmoid(-g1), torch.sigmoid(g1), F.logsigmoid(g1)
    xf = x.to(g1.dtype)
    return 0.5 * sum_flat(a2 * xf**2 + s2 - log_s2 - 1.0)


def decoder_log_probs(z_0: Tensor, gamma_0: Tensor, num_bins: int = 256) -> Tensor:
    """log p(x = x_k | z_0) of the softmax decoder, ``z_0: (B, ...) -> (B, ..., num_bins)``.

    Logits -(z_0/alpha_0 - x_k)^2 / (2 exp(gamma_0)) on the grid x_k = 2k/(num_bins - 1) - 1, normalised by a
    log-softmax over k.
    """
    g0 = gamma_0.float() if z_0.dtype != torch.float64 else gamma_0.double()
    alpha_0 = torch.exp(0.5 * F.logsigmoid(-g0))
    grid = torch.linspace(-1.0, 1.0, num_bins, device=z_0.device, dtype=g0.dtype)
    rescaled = z_0.to(g0.dtype) / alpha_0
    logits = -0.5 * (rescaled[..., None] - grid) ** 2 * torch.exp(-g0)
    return torch.log_softmax(logits, dim=-1)


# The normaliser of the softmax decoder needs only the bins within a few sigma_0/alpha_0 of z_0/alpha_0: every
# bin further than the window below is below exp(-_LOGIT_GAP) times the nearest bin's term, so leaving it out
# changes log p by less than 256 exp(-40) ~ 1e-15 (under float32's resolution). At VDM's gamma_0 = -13.3
# (sigma_0/alpha_0 ~ 0.17 bins) the window is 7 bins instead of 256: the decoder stops dominating a training
# step (it cost more than the U-Net's forward and backward at batch 64 on a CPU).
_LOGIT_GAP = 40.0


def _decoder_window(gamma_0: Tensor, num_bins: int) -> int:
    """Half-width W (in bins) of the window that holds every non-negligible term of the normaliser."""
    spacing = 2.0 / (num_bins - 1)
    s2 = math.exp(min(float(gamma_0.detach()), 50.0))  # sigma_0^2 / alpha_0^2
    return int(math.ceil(0.5 + math.sqrt(2.0 * _LOGIT_GAP * s2 / spacing**2 + 0.25)))


def _softmax_log_prob_at(x: Tensor, z_0: Tensor, gamma_0: Tensor, num_bins: int) -> Tensor:
    """log p(x | z_0) elementwise (shape of ``x``) for the softmax decoder, x rounded to the grid.

    Equal to ``decoder_log_probs(z_0, gamma_0)`` gathered at x (tested), computed over a window of bins around
    z_0/alpha_0 (the comment on ``_LOGIT_GAP``) rather than all ``num_bins``.
    """
    g0 = gamma_0.float() if z_0.dtype != torch.float64 else gamma_0.double()
    half = _decoder_window(g0, num_bins)
    spacing = 2.0 / (num_bins - 1)
    k = torch.round((x.to(g0.dtype) + 1.0) / spacing).clamp(0, num_bins - 1)
    if 2 * half + 1 >= num_bins:
        logp = decoder_log_probs(z_0, gamma_0, num_bins)
        return torch.gather(logp, -1, k.long()[..., None]).squeeze(-1)
    alpha_0 = torch.exp(0.5 * F.logsigmoid(-g0))
    precision = torch.exp(-g0)
    r = z_0.to(g0.dtype) / alpha_0
    nearest = torch.round((r.detach() + 1.0) / spacing).clamp(0, num_bins - 1)
    offsets = torch.arange(-half, half + 1, device=z_0.device, dtype=g0.dtype)
    idx = nearest[..., None] + offsets
    logits = -0.5 * (r[..., None] - (idx * spacing - 1.0)) ** 2 * precision
    logits = logits.masked_fill((idx < 0) | (idx > num_bins - 1), float("-inf"))
    target = -0.5 * (r - (k * spacing - 1.0)) ** 2 * precision
    return target - torch.logsumexp(logits, dim=-1)


def reconstruction_nll(
    x: Tensor, z_0: Tensor, gamma_0: Tensor, decoder: VDMDecoder | str = VDMDecoder.SOFTMAX, num_bins: int = 256
) -> Tensor:
    """-log p(x | z_0) per example, ``(B,)`` nats (see :class:`VDMDecoder`).

    ``SOFTMAX``: x must lie on the grid 2k/(num_bins - 1) - 1 (it is rounded to the nearest value).
    """
    decoder = parse_decoder(decoder)
    if decoder is VDMDecoder.SOFTMAX:
        return -sum_flat(_softmax_log_prob_at(x, z_0, gamma_0, num_bins))
    g0 = gamma_0.to(torch.float64) if x.dtype == torch.float64 else gamma_0.float()
    alpha_0 = torch.exp(0.5 * F.logsigmoid(-g0))
    diff = x.to(g0.dtype) - z_0.to(g0.dtype) / alpha_0
    return 0.5 * sum_flat(LOG_2PI + g0 + diff**2 * torch.exp(-g0))


def _squared_error(eps: Tensor, eps_hat: Tensor) -> Tensor:
    """||eps - eps_hat||^2 per example, ``(B,)``, in float32 (float64 for float64 noise)."""
    dt = torch.float64 if eps.dtype == torch.float64 else torch.float32
    return sum_flat((eps.to(dt) - eps_hat.to(dt)) ** 2)


def continuous_diffusion_loss(gamma_prime: Tensor, eps: Tensor, eps_hat: Tensor) -> Tensor:
    """1/2 gamma'(t) ||eps - eps_hat||^2, ``(B,)`` nats: the one-sample estimate of L_inf (eq. 17)."""
    mse = _squared_error(eps, eps_hat)
    return 0.5 * gamma_prime.to(mse.dtype) * mse


def discrete_diffusion_loss(gamma_t: Tensor, gamma_s: Tensor, eps: Tensor, eps_hat: Tensor, T: int) -> Tensor:
    """T/2 (exp(gamma_t - gamma_s) - 1) ||eps - eps_hat||^2, ``(B,)`` nats: the one-sample estimate of L_T."""
    mse = _squared_error(eps, eps_hat)
    return 0.5 * T * torch.expm1((gamma_t - gamma_s).to(mse.dtype)) * mse


@dataclass(frozen=True)
class VDMLossTerms:
    """One-sample estimates of the bound's terms per example, each ``(B,)`` nats (float32, or float64 for
    float64 data); ``total = reconstruction + prior + denoising``. ``at``: the schedule at the sampled t
    (gamma, gamma' and the shape tensors); ``t``: the sampled times ``(B,)``."""

    reconstruction: Tensor
    prior: Tensor
    denoising: Tensor
    total: Tensor
    t: Tensor
    at: GammaAt

    def bpd(self, num_dims: int) -> dict[str, Tensor]:
        """The four terms in bits/dim, ``{name: (B,)}``."""
        return {k: getattr(self, k) / (num_dims * math.log(2.0))
                for k in ("reconstruction", "prior", "denoising", "total")}


def loss_terms(
    model: VDMModel,
    x: Tensor,
    y: Tensor | None,
    generator: torch.Generator,
    *,
    T: int = 0,
    decoder: VDMDecoder | str = VDMDecoder.SOFTMAX,
    time_sampling: TimeSampling | str = TimeSampling.LOW_DISCREPANCY,
    num_bins: int = 256,
) -> VDMLossTerms:
    """The bound's three terms for ``x: (B, C, H, W)`` (or ``(B, D)``), one draw of (t, eps_0, eps) per example.

    Draw order (fixed, for replayable runs): t, then eps_0 of the reconstruction term, then eps of z_t.
    ``T = 0``: continuous time (L_inf); ``T >= 1``: the discrete-T bound L_T. Differentiable in the model's
    parameters (the training loss) when grad is enabled.
    """
    if isinstance(T, bool) or not isinstance(T, int) or T < 0:
        raise ValueError(f"T = {T!r} must be 0 (continuous time) or an integer >= 1")
    if x.ndim < 2:
        raise ValueError(f"x must have shape (B, ...) with at least one data axis, got {tuple(x.shape)}")
    if not isinstance(generator, torch.Generator):
        raise TypeError("generator must be a torch.Generator (all randomness is explicit)")
    decoder = parse_decoder(decoder)
    B, dev = x.shape[0], x.device
    sched_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    t = sample_times(B, generator, time_sampling, dev, sched_dtype)
    eps_0 = torch.randn(x.shape, generator=generator, device=dev, dtype=x.dtype)
    eps = torch.randn(x.shape, generator=generator, device=dev, dtype=x.dtype)
    schedule = model.schedule
    g0, g1 = schedule.endpoints()

    # reconstruction at gamma_0 and prior at gamma_1 (the endpoints only)
    z_0 = model.q_sample(x, g0.expand(B), eps_0)
    recon = reconstruction_nll(x, z_0, g0, decoder, num_bins)
    prior = prior_kl(x, g1)

    # denoising
    if T > 0:
        t = discretise_times(t, T)
        at = schedule.evaluate(t)
        gamma_s = schedule.evaluate(t - 1.0 / T)
        at = GammaAt(at.gamma, at.gamma_prime, at.shape + gamma_s.shape)
    else:
        at = schedule.evaluate(t)
    z_t = model.q_sample(x, at.gamma, eps)
    eps_hat = model.eps_at_gamma(z_t, at.gamma, y)
    if T > 0:
        denoising = discrete_diffusion_loss(at.gamma, gamma_s.gamma, eps, eps_hat, T)
    else:
        denoising = continuous_diffusion_loss(at.gamma_prime, eps, eps_hat)
    dt = denoising.dtype
    recon, prior = recon.to(dt), prior.to(dt)
    return VDMLossTerms(recon, prior, denoising, recon + prior + denoising, t, at)


@torch.no_grad()
def elbo_terms(
    model: VDMModel,
    x: Tensor,
    *,
    generator: torch.Generator,
    y: Tensor | None = None,
    T: int = 0,
    t_samples: int = 1,
    decoder: VDMDecoder | str = VDMDecoder.SOFTMAX,
    num_bins: int = 256,
    max_batch: int = 512,
) -> ELBOTerms:
    """The bound of ``x: (B, ...)`` in bits/dim, as elbolab's :class:`~elbolab.diffusion.elbo.ELBOTerms`.

    Per image: ``t_samples`` i.i.d. draws of (t, eps_0, eps) averaged (unbiased for every term; the prior is
    exact). ``T = 0``: L_inf, else L_T. ``ELBOTerms.t_samples`` records ``t_samples``; ``per_timestep`` is
    None. Put the model in eval mode first; randomness from ``generator`` (on ``x``'s device).
    """
    if isinstance(t_samples, bool) or not isinstance(t_samples, int) or t_samples < 1:
        raise ValueError(f"t_samples = {t_samples!r} must be an integer >= 1")
    if max_batch < 1:
        raise ValueError(f"max_batch = {max_batch!r} must be >= 1")
    D = num_dims(x)
    parts: dict[str, list[Tensor]] = {"reconstruction": [], "prior": [], "denoising": []}
    for start in range(0, x.shape[0], max_batch):
        xb = x[start:start + max_batch]
        yb = None if y is None else y[start:start + max_batch]
        acc = {k: torch.zeros(xb.shape[0], dtype=torch.float64, device=x.device) for k in parts}
        for _ in range(t_samples):
            terms = loss_terms(model, xb, yb, generator, T=T, decoder=decoder, time_sampling=TimeSampling.UNIFORM,
                               num_bins=num_bins)
            for k in acc:
                acc[k] += getattr(terms, k).double()
        for k in parts:
            parts[k].append(acc[k] / t_samples)
    r, p, d = (nats_to_bpd(torch.cat(parts[k]), D).cpu() for k in ("reconstruction", "prior", "denoising"))
    return ELBOTerms.from_per_image(PerImageTerms(r, p, d, r + p + d), D, t_samples, None)
