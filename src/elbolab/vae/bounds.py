"""Bounds on log p(x) shared by the VAE and the Markovian HVAE: ELBO terms, the IWAE_K bound, active units.

- ELBO (lecture notes 000/002/004): ``log p(x) >= E_q[log p(x|z)] - KL(q(z|x) || p(z))``; for a Markovian HVAE
  one KL term per latent layer (:class:`ELBOTerms` keeps one ``(B, J_l)`` tensor per layer).
- IWAE_K (Burda, Grosse & Salakhutdinov 2016, eq. 8): ``L_K = E[log 1/K sum_k p(x, z_k) / q(z_k|x)]`` with
  ``z_k ~ q(z|x)`` i.i.d.; ``ELBO = L_1 <= L_K <= L_{K+1} <= log p(x)`` and ``L_K -> log p(x)`` as K grows.
  Computed in chunks of samples with a streaming log-sum-exp, so K = 5000 fits in memory.
- Active units (Burda et al. 2016, Sec. 5.2): unit u is active if ``Cov_x(E_{q(u|x)}[u]) > 0.01``.

Any model with the methods of :class:`LatentVariableModel` (``elbo``, ``log_importance_weights``,
``posterior_means``, ``likelihood``, ``image_shape``, ``latent_dims``) works here.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass

import torch
from torch import Tensor
from tqdm.auto import tqdm

from elbolab.math import mean_and_stderr, nats_to_bpd

__all__ = [
    "ELBOTerms",
    "iwae_bound",
    "LikelihoodReport",
    "evaluate_likelihood",
    "ActiveUnits",
    "active_units",
    "batches_of_images",
    "vae_bound_fn",
]


@dataclass
class ELBOTerms:
    """Single-sample ELBO estimate per example, in nats.

    ``reconstruction: (B,)`` is ``log p_theta(x|z_1)`` at ``z_1 ~ q``; ``kl_per_dim[l]: (B, J_{l+1})`` is the
    prior-matching (l = L) or consistency (l < L) term of latent layer ``l + 1`` per dimension.
    """

    reconstruction: Tensor
    kl_per_dim: tuple[Tensor, ...]

    @property
    def kl(self) -> Tensor:
        """``(B, L)``: one KL term per latent layer (summed over its dimensions)."""
        return torch.stack([k.sum(-1) for k in self.kl_per_dim], dim=-1)

    @property
    def elbo(self) -> Tensor:
        """``(B,)``: reconstruction minus the sum of the per-layer KL terms."""
        return self.reconstruction - self.kl.sum(-1)


def _dims(model) -> int:
    c, h, w = model.image_shape
    return c * h * w


def iwae_bound(model, x: Tensor, num_samples: int, generator: torch.Generator | None,
               max_elements: int = 2**24) -> Tensor:
    """``L_K(x) = log (1/K) sum_k w_k`` with ``w_k = p(x, z_k) / q(z_k|x)``, in nats, ``(B,)``.

    ``x: (B, C, H, W)`` are likelihood targets (``model.likelihood.prepare`` already applied). Samples are
    drawn in chunks of ``max(1, max_elements // (B * C * H * W))`` so that K = 5000 fits in memory; the chunks'
    log-sum-exps are combined exactly. Differentiable (IWAE training), call under ``torch.no_grad()`` to evaluate.
    """
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"iwae_bound: num_samples = {num_samples!r} must be a positive integer")
    chunk = max(1, max_elements // max(1, x.shape[0] * _dims(model)))
    partial = []
    for start in range(0, num_samples, chunk):
        log_w = model.log_importance_weights(x, min(chunk, num_samples - start), generator)  # (S, B)
        partial.append(torch.logsumexp(log_w, dim=0))
    return torch.logsumexp(torch.stack(partial), dim=0) - math.log(num_samples)


def batches_of_images(data: Iterable) -> Iterable[Tensor]:
    """Yield image tensors ``(B, C, H, W)`` from an iterable of tensors or ``(x, y)`` pairs (data loaders)."""
    for batch in data:
        yield batch[0] if isinstance(batch, (tuple, list)) else batch


@dataclass
class LikelihoodReport:
    """Test-set bounds as negative log-likelihoods (lower is better), mean over examples and standard error.

    ``*_nll`` are nats per example, ``*_bpd`` bits per dimension (``nll / (D ln 2)``, D = C*H*W). With the
    Bernoulli decoder they are NLLs of the (dynamically, seeded) binarised data; with the discretised decoder
    NLLs of the 8-bit data, comparable with the diffusion model's bits/dim.
    """

    likelihood: str
    num_examples: int
    num_samples: int
    dims: int
    elbo_nll: float
    elbo_nll_stderr: float
    iwae_nll: float
    iwae_nll_stderr: float
    elbo_bpd: float
    elbo_bpd_stderr: float
    iwae_bpd: float
    iwae_bpd_stderr: float
    reconstruction: float
    kl_per_layer: tuple[float, ...]

    def to_dict(self) -> dict:
        d = asdict(self)
        d["kl_per_layer"] = list(self.kl_per_layer)
        return d

    def to_text(self) -> str:
        kls = ", ".join(f"{k:.2f}" for k in self.kl_per_layer)
        return (
            f"{self.num_examples} examples, likelihood {self.likelihood}, D = {self.dims}\n"
            f"  -ELBO      {self.elbo_nll:9.3f} +- {self.elbo_nll_stderr:.3f} nats"
            f"  ({self.elbo_bpd:.4f} +- {self.elbo_bpd_stderr:.4f} bits/dim)\n"
            f"  -IWAE_{self.num_samples:<4d} {self.iwae_nll:9.3f} +- {self.iwae_nll_stderr:.3f} nats"
            f"  ({self.iwae_bpd:.4f} +- {self.iwae_bpd_stderr:.4f} bits/dim)\n"
            f"  reconstruction {self.reconstruction:.3f} nats, KL per layer [{kls}] nats"
        )


@torch.no_grad()
def evaluate_likelihood(model, data: Iterable, num_samples: int, generator: torch.Generator,
                        max_elements: int = 2**24, progress: bool = True) -> LikelihoodReport:
    """ELBO and IWAE_K negative log-likelihoods of every image in ``data`` (tensors or ``(x, y)`` batches).

    Each image is turned into a likelihood target once with ``generator`` (Bernoulli: one seeded
    binarisation; discretised: snapped to the 8-bit grid), then scored by a single-sample ELBO and by
    :func:`iwae_bound` with ``num_samples`` samples.
    """
    was_training = model.training
    model.eval()
    elbos, iwaes, recons, kls = [], [], [], []
    try:
        for x in tqdm(batches_of_images(data), desc=f"IWAE-{num_samples}", disable=not progress, leave=False):
            target = model.likelihood.prepare(x, generator)
            terms = model.elbo(target, generator)
            elbos.append(terms.elbo.double().cpu())
            recons.append(terms.reconstruction.double().cpu())
            kls.append(terms.kl.double().cpu())
            iwaes.append(iwae_bound(model, target, num_samples, generator, max_elements).double().cpu())
    finally:
        model.train(was_training)
    if not elbos:
        raise ValueError("evaluate_likelihood: data yielded no images")
    d = _dims(model)
    elbo_nll = -torch.cat(elbos)
    iwae_nll = -torch.cat(iwaes)
    e_mean, e_se = mean_and_stderr(elbo_nll)
    i_mean, i_se = mean_and_stderr(iwae_nll)
    eb_mean, eb_se = mean_and_stderr(nats_to_bpd(elbo_nll, d))
    ib_mean, ib_se = mean_and_stderr(nats_to_bpd(iwae_nll, d))
    return LikelihoodReport(
        likelihood=model.likelihood.kind.value, num_examples=int(elbo_nll.numel()), num_samples=num_samples, dims=d,
        elbo_nll=float(e_mean), elbo_nll_stderr=float(e_se), iwae_nll=float(i_mean), iwae_nll_stderr=float(i_se),
        elbo_bpd=float(eb_mean), elbo_bpd_stderr=float(eb_se), iwae_bpd=float(ib_mean), iwae_bpd_stderr=float(ib_se),
        reconstruction=float(torch.cat(recons).mean()),
        kl_per_layer=tuple(float(v) for v in torch.cat(kls).mean(0)),
    )


def vae_bound_fn(model, num_samples: int = 1,
                 max_elements: int = 2**24) -> Callable[[Tensor, torch.Generator], dict[str, Tensor]]:
    """``bound_fn(x, generator) -> {term: (B,) bits/dim}`` for :func:`elbolab.evaluate.evaluate_bpd`.

    ``num_samples = 1``: the ELBO split as ``{"reconstruction": -log p(x|z_1), "kl_1": ..., "kl_L": ...}``
    (summing to -ELBO); ``num_samples = K > 1``: ``{"iwae_K": -L_K}``. ``x: (B, C, H, W)`` in [-1, 1] becomes a
    likelihood target with ``generator``. Bits/dim of 8-bit data need the discretised decoder
    (``BPDMethod.DISCRETIZED_GAUSSIAN``); other decoders' numbers are not 8-bit likelihoods.
    Put the model in eval mode first.
    """
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"vae_bound_fn: num_samples = {num_samples!r} must be a positive integer")
    d = _dims(model)

    @torch.no_grad()
    def bound_fn(x: Tensor, generator: torch.Generator) -> dict[str, Tensor]:
        target = model.likelihood.prepare(x, generator)
        if num_samples > 1:
            return {f"iwae_{num_samples}": nats_to_bpd(-iwae_bound(model, target, num_samples, generator,
                                                                     max_elements), d)}
        terms = model.elbo(target, generator)
        out = {"reconstruction": nats_to_bpd(-terms.reconstruction, d)}
        for layer, kl in enumerate(terms.kl.unbind(-1), start=1):
            out[f"kl_{layer}"] = nats_to_bpd(kl, d)
        return out

    return bound_fn


@dataclass
class ActiveUnits:
    """Active latent units per layer (Burda et al. 2016): ``variances[l]: (J_l,)`` is ``Cov_x(E_q[z_l|x])``."""

    counts: tuple[int, ...]
    dims: tuple[int, ...]
    variances: tuple[Tensor, ...]
    threshold: float

    @property
    def total(self) -> int:
        return sum(self.counts)

    def to_dict(self) -> dict:
        return {"counts": list(self.counts), "dims": list(self.dims), "threshold": self.threshold,
                "variances": [v.tolist() for v in self.variances]}


@torch.no_grad()
def active_units(model, data: Iterable, generator: torch.Generator, threshold: float = 0.01,
                 num_samples: int = 32) -> ActiveUnits:
    """Count units ``u`` of every latent layer with ``Var_x(E_{q(u|x)}[u]) > threshold``.

    ``E_q[z_1|x] = mu_phi(x)`` exactly; deeper layers' posterior means are averaged over ``num_samples``
    ancestral draws of the layers below (``model.posterior_means``). Posterior collapse shows up as a layer
    whose count is 0.
    """
    was_training = model.training
    model.eval()
    sums: list[Tensor] | None = None
    sq: list[Tensor] = []
    n = 0
    try:
        for x in batches_of_images(data):
            target = model.likelihood.prepare(x, generator)
            means = [m.double().cpu() for m in model.posterior_means(target, generator, num_samples)]
            if sums is None:
                sums = [m.sum(0) for m in means]
                sq = [m.pow(2).sum(0) for m in means]
            else:
                sums = [s + m.sum(0) for s, m in zip(sums, means)]
                sq = [s + m.pow(2).sum(0) for s, m in zip(sq, means)]
            n += means[0].shape[0]
    finally:
        model.train(was_training)
    if sums is None or n < 2:
        raise ValueError(f"active_units: need at least 2 images, got {n}")
    variances = tuple((s2 - s * s / n) / (n - 1) for s, s2 in zip(sums, sq))
    counts = tuple(int((v > threshold).sum()) for v in variances)
    return ActiveUnits(counts=counts, dims=tuple(v.numel() for v in variances), variances=variances,
                       threshold=threshold)
