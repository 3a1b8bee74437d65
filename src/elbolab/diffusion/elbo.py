"""The ELBO of a variational diffusion model, term by term, in bits per dimension.

Decomposition of the lecture notes (000: Luo 2022, eq. 58; 001: Ho et al. 2020, eq. 5), with L = -ELBO:

    -log p(x_0) <= L = -E_{q(x_1|x_0)}[log p_theta(x_0 | x_1)]                      reconstruction  (L_0)
                     + KL(q(x_T | x_0) || N(0, I))                                   prior matching  (L_T)
                     + sum_{t=2}^T E_{q(x_t|x_0)} KL(q(x_{t-1}|x_t,x_0) || p_theta(x_{t-1}|x_t))
                                                                                     denoising matching (L_{t-1})

Every KL is between Gaussians (closed form, :func:`elbolab.math.normal_kl`). The expectations over x_t are
estimated with one draw of x_t per (image, t). The sum over t is either computed exactly (all T terms) or
estimated without bias by Monte Carlo: (T - 1) * L_{t-1} with t ~ U{2..T}.

Units: each term is reported per image in bits/dim, ``nats / (D ln 2)``, and ``total`` is the upper bound
on the negative log-likelihood in bits/dim (lower is better) -- the number diffusion papers report.

Decoders p_theta(x_0 | x_1) (:class:`DecoderKind`):
- ``DISCRETIZED``: 8-bit data in [-1, 1]; the Gaussian mass of each of the 256 bins (Ho et al. 2020, eq. 13).
  The bound is then on -log P(x_0) of the discrete data.
- ``GAUSSIAN``: continuous data (toy 2-D distributions); log N(x_0; mu_theta(x_1, 1), sigma_1^2 I). The bound
  is then on the negative log *density* (can be negative).

The consistency-term form (lecture notes 003, Luo 2022 eq. 45) regroups the same log-ratio as

    L = -E[log p_theta(x_0|x_1)] + E_{q(x_{T-1}|x_0)} KL(q(x_T|x_{T-1}) || p(x_T))
        + sum_{t=1}^{T-1} E_{q(x_{t-1}, x_t, x_{t+1} | x_0)} [log q(x_t|x_{t-1}) - log p_theta(x_t|x_{t+1})].

The notes write the last expectation as a KL(q(x_t|x_{t-1}) || p_theta(x_t|x_{t+1})) averaged over
(x_{t-1}, x_{t+1}); taken literally that draws x_t independently of x_{t+1} and is *not* equal to the ELBO.
:func:`consistency_elbo_terms` uses the exact form, integrating x_t analytically against
r = q(x_t | x_{t-1}, x_{t+1}) (a Gaussian), so it estimates the same L with the two random variables per
timestep that the notes warn make its variance larger.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from elbolab.config import coerce
from elbolab.diffusion.process import Gaussian, GaussianDiffusion
from elbolab.math import (
    discretized_gaussian_log_likelihood,
    gaussian_log_likelihood,
    mean_and_stderr,
    nats_to_bpd,
    normal_kl,
    num_dims,
    sum_flat,
)

__all__ = [
    "DecoderKind",
    "ELBOTerms",
    "PerImageTerms",
    "consistency_elbo_terms",
    "decoder_log_likelihood",
    "elbo_terms",
    "timestep_terms",
]


class DecoderKind(str, enum.Enum):
    """The last reverse step p_theta(x_0 | x_1) used by the reconstruction term."""

    DISCRETIZED = "discretized"  # 8-bit data in [-1, 1], Ho et al. 2020 eq. 13
    GAUSSIAN = "gaussian"  # continuous data: a Gaussian density


def parse_decoder(kind: DecoderKind | str) -> DecoderKind:
    """``kind`` as a :class:`DecoderKind`; raises a ValueError listing the choices."""
    return coerce(kind, DecoderKind, "decoder")


def decoder_log_likelihood(x0: Tensor, step: Gaussian, decoder: DecoderKind | str) -> Tensor:
    """log p_theta(x_0 | x_1) per example, nats: ``x0: (B, ...)``, ``step`` the reverse Gaussian at t = 1."""
    decoder = parse_decoder(decoder)
    log_var = step.log_variance.expand_as(x0)
    if decoder is DecoderKind.DISCRETIZED:
        return sum_flat(discretized_gaussian_log_likelihood(x0, step.mean, log_var))
    return sum_flat(gaussian_log_likelihood(x0, step.mean, log_var))


def timestep_terms(
    diffusion: GaussianDiffusion,
    model: nn.Module,
    x0: Tensor,
    t: Tensor,
    noise: Tensor,
    *,
    y: Tensor | None = None,
    decoder: DecoderKind | str = DecoderKind.DISCRETIZED,
) -> Tensor:
    """L_{t-1} per example in nats, ``(B,)``, with x_t = q_sample(x0, t, noise) and ``t: (B,)`` in 1..T.

    t = 1: the reconstruction term -log p_theta(x_0 | x_1); t >= 2: KL(q(x_{t-1}|x_t,x_0) || p_theta(x_{t-1}|x_t)).
    Differentiable in the model's parameters (the ELBO training loss uses it).
    """
    t = diffusion.timesteps(t, x0)
    x_t = diffusion.q_sample(x0, t, noise)
    out = diffusion.model_forward(model, x_t, t, y)
    step = diffusion.p_mean_variance(out, x_t, t)
    terms = torch.zeros(x0.shape[0], dtype=out.dtype, device=x0.device)
    first = (t == 1).nonzero().squeeze(1)
    later = (t > 1).nonzero().squeeze(1)
    if first.numel():
        sub = Gaussian(step.mean[first], step.variance[first], step.log_variance[first])
        terms = terms.index_put((first,), -decoder_log_likelihood(x0[first], sub, decoder).to(terms.dtype))
    if later.numel():
        post = diffusion.q_posterior(x0[later], x_t[later], t[later])
        kl = normal_kl(post.mean, post.log_variance, step.mean[later], step.log_variance[later])
        terms = terms.index_put((later,), sum_flat(kl).to(terms.dtype))
    return terms


@dataclass(frozen=True)
class PerImageTerms:
    """Per-image ELBO terms in bits/dim, each ``(B,)`` float64; ``total = reconstruction + prior + denoising``."""

    reconstruction: Tensor
    prior: Tensor
    denoising: Tensor
    total: Tensor

    @staticmethod
    def cat(parts: Sequence[PerImageTerms]) -> PerImageTerms:
        """Concatenate the per-image terms of several batches."""
        if not parts:
            raise ValueError("PerImageTerms.cat: nothing to concatenate")
        return PerImageTerms(*(torch.cat([getattr(p, f) for p in parts]) for f in _TERM_FIELDS))


_TERM_FIELDS = ("reconstruction", "prior", "denoising", "total")


@dataclass(frozen=True)
class ELBOTerms:
    """The ELBO of a set of images, term by term, in bits/dim (means over images, with standard errors).

    ``total`` is the negative ELBO, an upper bound on -log p(x_0) per dimension in bits. The ``*_stderr``
    fields are standard errors of the means over images (they include the Monte Carlo noise of the
    estimator). ``per_timestep: (T,)`` (exact mode only) is the mean L_{t-1} in bits/dim at t = 1..T
    (index 0 is the reconstruction term). ``t_samples`` is 0 for the exact sum over t, else the number of
    Monte Carlo draws of t per image. For :func:`consistency_elbo_terms`, ``prior`` holds
    E KL(q(x_T|x_{T-1}) || p(x_T)) and ``denoising`` the sum of the consistency terms.
    """

    reconstruction: float
    prior: float
    denoising: float
    total: float
    reconstruction_stderr: float
    prior_stderr: float
    denoising_stderr: float
    total_stderr: float
    per_image: PerImageTerms
    per_timestep: Tensor | None
    num_dims: int
    t_samples: int

    @classmethod
    def from_per_image(
        cls, per_image: PerImageTerms, num_dims: int, t_samples: int, per_timestep: Tensor | None = None
    ) -> ELBOTerms:
        stats = {f: mean_and_stderr(getattr(per_image, f)) for f in _TERM_FIELDS}
        return cls(
            **{f: s.mean for f, s in stats.items()},
            **{f"{f}_stderr": s.stderr for f, s in stats.items()},
            per_image=per_image,
            per_timestep=per_timestep,
            num_dims=num_dims,
            t_samples=t_samples,
        )

    @staticmethod
    def merge(parts: Sequence[ELBOTerms]) -> ELBOTerms:
        """Combine the results of several batches (same model, estimator and data shape)."""
        if not parts:
            raise ValueError("ELBOTerms.merge: nothing to merge")
        first = parts[0]
        if any(p.num_dims != first.num_dims or p.t_samples != first.t_samples for p in parts):
            raise ValueError("ELBOTerms.merge: parts differ in num_dims or t_samples")
        per_t = None
        if all(p.per_timestep is not None for p in parts):
            n = torch.tensor([p.per_image.total.numel() for p in parts], dtype=torch.float64)
            per_t = (torch.stack([p.per_timestep for p in parts]) * n[:, None]).sum(0) / n.sum()
        return ELBOTerms.from_per_image(
            PerImageTerms.cat([p.per_image for p in parts]), first.num_dims, first.t_samples, per_t
        )


def _row_chunks(n: int, max_batch: int) -> list[slice]:
    if max_batch < 1:
        raise ValueError(f"max_batch = {max_batch!r} must be >= 1")
    return [slice(i, min(i + max_batch, n)) for i in range(0, n, max_batch)]


def _evaluate_rows(
    diffusion: GaussianDiffusion,
    model: nn.Module,
    x0: Tensor,
    y: Tensor | None,
    rows: Tensor,
    ts: Tensor,
    generator: torch.Generator,
    decoder: DecoderKind,
    max_batch: int,
    progress: bool,
) -> Tensor:
    """L_{t-1} (nats, float64) for the (image index, t) pairs ``rows: (N,)``, ``ts: (N,)``."""
    out = torch.empty(rows.numel(), dtype=torch.float64, device=x0.device)
    chunks = _row_chunks(rows.numel(), max_batch)
    for sl in tqdm(chunks, desc="ELBO", disable=not progress, leave=False):
        xb = x0[rows[sl]]
        noise = torch.randn(xb.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        yb = None if y is None else y[rows[sl]]
        out[sl] = timestep_terms(diffusion, model, xb, ts[sl], noise, y=yb, decoder=decoder).double()
    return out


def _check_inputs(x0: Tensor, y: Tensor | None, generator: torch.Generator) -> None:
    if x0.ndim < 2:
        raise ValueError(f"x0 must have shape (B, ...) with at least one data axis, got {tuple(x0.shape)}")
    if y is not None and y.shape[:1] != x0.shape[:1]:
        raise ValueError(f"y must have shape ({x0.shape[0]},), got {tuple(y.shape)}")
    if not isinstance(generator, torch.Generator):
        raise TypeError("generator must be a torch.Generator (all randomness is explicit)")


@torch.no_grad()
def elbo_terms(
    diffusion: GaussianDiffusion,
    model: nn.Module,
    x0: Tensor,
    *,
    generator: torch.Generator,
    y: Tensor | None = None,
    t_samples: int | None = None,
    decoder: DecoderKind | str = DecoderKind.DISCRETIZED,
    max_batch: int = 512,
    progress: bool = False,
) -> ELBOTerms:
    """The three ELBO terms of ``x0: (B, ...)`` in bits/dim, per image and averaged with standard errors.

    ``t_samples=None``: the denoising term is the exact sum over all t = 2..T (one x_t draw per term; T
    network evaluations per image). ``t_samples=k``: the unbiased Monte Carlo estimate
    (T - 1) * mean_k L_{t_k - 1} with t_k ~ U{2..T} (k evaluations per image). The reconstruction term uses
    one draw of x_1 and the prior term is closed form. The model is called as ``model(x_t, t, y)`` in
    chunks of at most ``max_batch`` examples; put it in eval mode first. Randomness comes from ``generator``
    (on ``x0``'s device).
    """
    _check_inputs(x0, y, generator)
    decoder = parse_decoder(decoder)
    B, T, D = x0.shape[0], diffusion.T, num_dims(x0)
    dev = x0.device
    prior = diffusion.prior_kl(x0).double()
    if t_samples is None:
        rows = torch.arange(B, device=dev).repeat(T)
        ts = torch.arange(1, T + 1, device=dev).repeat_interleave(B)
        L = _evaluate_rows(diffusion, model, x0, y, rows, ts, generator, decoder, max_batch, progress)
        L = L.reshape(T, B)
        recon, denoising = L[0], L[1:].sum(0)
        per_t = nats_to_bpd(L.mean(1), D).cpu()
        k = 0
    else:
        if isinstance(t_samples, bool) or not isinstance(t_samples, int) or t_samples < 1:
            raise ValueError(f"t_samples = {t_samples!r} must be None (exact sum over t) or an integer >= 1")
        k = t_samples
        rows1 = torch.arange(B, device=dev)
        recon = _evaluate_rows(
            diffusion, model, x0, y, rows1, torch.ones(B, dtype=torch.long, device=dev), generator, decoder,
            max_batch, progress,
        )
        if T >= 2:
            rows = torch.arange(B, device=dev).repeat(k)
            ts = torch.randint(2, T + 1, (B * k,), generator=generator, device=dev)
            L = _evaluate_rows(diffusion, model, x0, y, rows, ts, generator, decoder, max_batch, progress)
            denoising = (T - 1) * L.reshape(k, B).mean(0)
        else:
            denoising = torch.zeros(B, dtype=torch.float64, device=dev)
        per_t = None
    return _terms(recon, prior, denoising, D, k, per_t)


def _terms(recon: Tensor, prior: Tensor, denoising: Tensor, D: int, k: int, per_t: Tensor | None) -> ELBOTerms:
    r, p, d = (nats_to_bpd(v.double(), D).cpu() for v in (recon, prior, denoising))
    return ELBOTerms.from_per_image(PerImageTerms(r, p, d, r + p + d), D, k, per_t)


@torch.no_grad()
def consistency_elbo_terms(
    diffusion: GaussianDiffusion,
    model: nn.Module,
    x0: Tensor,
    *,
    generator: torch.Generator,
    y: Tensor | None = None,
    t_samples: int | None = None,
    decoder: DecoderKind | str = DecoderKind.DISCRETIZED,
    max_batch: int = 512,
) -> ELBOTerms:
    """The consistency-term estimator of the same ELBO (lecture notes 003), in bits/dim.

    Per image: the reconstruction term (one x_1 draw), the prior term E_{q(x_{T-1}|x_0)} KL(q(x_T|x_{T-1}) ||
    N(0, I)) (one x_{T-1} draw) and the sum over t = 1..T-1 of c_t, where for x_{t-1} ~ q(x_{t-1}|x_0),
    x_{t+1} ~ q(x_{t+1}|x_{t-1}) and r = q(x_t | x_{t-1}, x_{t+1}),
    c_t = E_r[log q(x_t|x_{t-1}) - log p_theta(x_t|x_{t+1})] in closed form. ``t_samples=None``: all T - 1
    terms (one draw of (x_{t-1}, x_{t+1}) each); ``k``: (T - 1) * mean of k terms with t ~ U{1..T-1}.
    Unbiased for the same ``total`` as :func:`elbo_terms`, with a larger variance (two random variables
    per timestep instead of one).
    """
    _check_inputs(x0, y, generator)
    decoder = parse_decoder(decoder)
    if t_samples is not None and (isinstance(t_samples, bool) or not isinstance(t_samples, int) or t_samples < 1):
        raise ValueError(f"t_samples = {t_samples!r} must be None (all terms) or an integer >= 1")
    B, T, D = x0.shape[0], diffusion.T, num_dims(x0)
    dev = x0.device
    recon = _evaluate_rows(
        diffusion, model, x0, y, torch.arange(B, device=dev), torch.ones(B, dtype=torch.long, device=dev),
        generator, decoder, max_batch, False,
    )
    # prior matching in consistency form: KL(q(x_T | x_{T-1}) || N(0, I)) at one draw of x_{T-1}
    noise = torch.randn(x0.shape, generator=generator, device=dev, dtype=x0.dtype)
    x_Tm1 = diffusion.q_sample(x0, T - 1, noise)
    fwd = diffusion.q_step_mean_variance(x_Tm1, T)
    zeros = torch.zeros_like(x0)
    prior = sum_flat(normal_kl(fwd.mean, fwd.log_variance.expand_as(x0), zeros, zeros)).double()
    consistency = torch.zeros(B, dtype=torch.float64, device=dev)
    if T >= 2:
        if t_samples is None:
            rows = torch.arange(B, device=dev).repeat(T - 1)
            ts = torch.arange(1, T, device=dev).repeat_interleave(B)
        else:
            rows = torch.arange(B, device=dev).repeat(t_samples)
            ts = torch.randint(1, T, (rows.numel(),), generator=generator, device=dev)
        c = torch.empty(rows.numel(), dtype=torch.float64, device=dev)
        for sl in _row_chunks(rows.numel(), max_batch):
            yb = None if y is None else y[rows[sl]]
            c[sl] = _consistency_term(diffusion, model, x0[rows[sl]], ts[sl], yb, generator).double()
        c = c.reshape(-1, B)
        consistency = c.sum(0) if t_samples is None else (T - 1) * c.mean(0)
    return _terms(recon, prior, consistency, D, 0 if t_samples is None else t_samples, None)


def _consistency_term(
    diffusion: GaussianDiffusion, model: nn.Module, x0: Tensor, t: Tensor, y: Tensor | None,
    generator: torch.Generator,
) -> Tensor:
    """c_t = E_{r}[log q(x_t|x_{t-1}) - log p_theta(x_t|x_{t+1})] per example (nats) for t: (B,) in 1..T-1."""
    dev, dt = x0.device, x0.dtype
    abar = diffusion.table("alpha_bars").to(dev)
    betas = diffusion.table("betas").to(dev)
    shape = (-1,) + (1,) * (x0.ndim - 1)
    ab_prev, ab_next = abar[t - 1].reshape(shape), abar[t + 1].reshape(shape)
    beta_t, beta_n = betas[t].reshape(shape), betas[t + 1].reshape(shape)
    n1 = torch.randn(x0.shape, generator=generator, device=dev, dtype=dt)
    n2 = torch.randn(x0.shape, generator=generator, device=dev, dtype=dt)
    x_prev = diffusion.q_sample(x0, t - 1, n1)  # t - 1 = 0 gives x_0 itself
    ratio = ab_next / ab_prev  # q(x_{t+1} | x_{t-1}) = N(sqrt(ratio) x_{t-1}, (1 - ratio) I)
    x_next = ratio.sqrt().to(dt) * x_prev + (1.0 - ratio).sqrt().to(dt) * n2
    # r = q(x_t | x_{t-1}, x_{t+1}) for the two-step chain x_{t-1} -> x_t -> x_{t+1}
    prec = 1.0 / beta_t + (1.0 - beta_n) / beta_n
    var_r = 1.0 / prec
    xp, xn = x_prev.double(), x_next.double()
    mean_r = var_r * ((1.0 - beta_t).sqrt() * xp / beta_t + (1.0 - beta_n).sqrt() * xn / beta_n)
    # p_theta(x_t | x_{t+1}) and q(x_t | x_{t-1})
    out = diffusion.model_forward(model, x_next, t + 1, y)
    p = diffusion.p_mean_variance(out, x_next, t + 1)
    m_p, v_p = p.mean.double(), p.variance.double()
    m_q, v_q = (1.0 - beta_t).sqrt() * xp, beta_t
    cross_p = ((mean_r - m_p) ** 2 + var_r) / (2 * v_p)
    cross_q = ((mean_r - m_q) ** 2 + var_r) / (2 * v_q)
    c = 0.5 * torch.log(v_p / v_q) + cross_p - cross_q
    return sum_flat(c)

