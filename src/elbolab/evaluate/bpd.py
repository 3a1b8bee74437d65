"""One format for bits/dim results of every family with a likelihood bound (DDPM now; VAE, HVAE reuse it).

A bound on -log p(x) of 8-bit images, in bits per dimension: ``-log2 p(x) / D`` with D = C * H * W. Every
family reports it as a :class:`BitsPerDim`: the mean over test images (``value``), its standard error over
images (``stderr``), the mean of each term of the bound (``terms``, also in bits/dim, summing to ``value``)
and how the discrete data got a likelihood (``method``):

- ``BPDMethod.DISCRETIZED_GAUSSIAN``: the decoder p(x_0 | x_1) puts probability mass on each 8-bit bin
  (Ho et al. 2020, eq. 13), so the bound is on the discrete likelihood directly;
- ``BPDMethod.UNIFORM_DEQUANTIZATION``: a density on x + u, u uniform in the bin (Theis et al. 2016); then
  log P(x) >= E_u log p(x + u) + D log(bin width), and the bin width term is one of the ``terms``.

Families compute per-image terms (B,) in bits/dim batch by batch (``elbolab.math.nats_to_bpd`` converts
nats); :class:`BPDAccumulator` collects them and :func:`summarize_bpd` turns them into the result.
:func:`diffusion_bound_fn` adapts the DDPM ELBO of ``elbolab.diffusion.elbo_terms``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

import numpy as np
import torch

from elbolab.math import mean_and_stderr

if TYPE_CHECKING:
    from elbolab.diffusion import GaussianDiffusion


class BPDMethod(str, enum.Enum):
    """How the bound handles 8-bit data."""

    DISCRETIZED_GAUSSIAN = "discretized Gaussian decoder"
    UNIFORM_DEQUANTIZATION = "uniform dequantisation"
    VDM_SOFTMAX = "VDM softmax decoder"  # p(x|z_0) a softmax over the 256 levels (Kingma et al. 2021, App. C)
    # PixelCNN: log p(x) by the chain rule over the pixels' 8-bit levels, exact (no bound, no dequantisation)
    EXACT_AUTOREGRESSIVE = "exact: the autoregressive chain rule over the 8-bit levels (no bound, no dequantisation)"


@dataclass
class BitsPerDim:
    """Bits/dim of a likelihood bound on ``n`` test images: ``value`` +- ``stderr``; ``terms`` (bits/dim)
    sum to ``value``; ``method`` says how discrete data were handled."""

    value: float
    stderr: float
    terms: dict[str, float]
    method: BPDMethod
    n: int
    extra: dict[str, float] = field(default_factory=dict)  # e.g. {"T": 1000, "importance_samples": 1}

    def to_dict(self) -> dict[str, object]:
        return {"value": self.value, "stderr": self.stderr, "terms": dict(self.terms), "method": self.method.value,
                "n": self.n, **({"extra": dict(self.extra)} if self.extra else {})}


class BPDAccumulator:
    """Collects per-image bound terms (each (B,) in bits/dim) over batches; every batch gives the same terms."""

    def __init__(self) -> None:
        self._terms: dict[str, list[np.ndarray]] = {}

    def update(self, terms: dict[str, torch.Tensor]) -> None:
        if not terms:
            raise ValueError("no terms given: expected a dict like {'reconstruction': (B,), 'prior': (B,), ...}")
        if self._terms and set(terms) != set(self._terms):
            raise ValueError(f"terms {sorted(terms)} differ from earlier batches' {sorted(self._terms)}")
        sizes = set()
        for name, value in terms.items():
            v = torch.as_tensor(value).detach().double().reshape(-1).cpu().numpy()
            sizes.add(v.shape[0])
            self._terms.setdefault(name, []).append(v)
        if len(sizes) != 1:
            raise ValueError(f"terms have different batch sizes {sorted(sizes)}: expected one value per image each")

    def result(self, method: BPDMethod | str, extra: dict[str, float] | None = None) -> BitsPerDim:
        if not self._terms:
            raise ValueError("no batches were added")
        return summarize_bpd({k: np.concatenate(v) for k, v in self._terms.items()}, method, extra)


def _method(method: BPDMethod | str) -> BPDMethod:
    try:
        return BPDMethod(method)
    except ValueError:
        choices = ", ".join(repr(m.value) for m in BPDMethod)
        raise ValueError(f"bits/dim method {method!r} is not valid; choices: {choices}") from None


def summarize_bpd(terms: dict[str, torch.Tensor | np.ndarray], method: BPDMethod | str,
                  extra: dict[str, float] | None = None) -> BitsPerDim:
    """Per-image terms {name: (N,)} in bits/dim -> :class:`BitsPerDim`; the total is their per-image sum and
    its standard error is std(total) / sqrt(N)."""
    m = _method(method)
    arrays = {k: np.asarray(torch.as_tensor(v).detach().double().reshape(-1).cpu().numpy()) for k, v in terms.items()}
    if not arrays:
        raise ValueError("no terms given")
    n = {a.shape[0] for a in arrays.values()}
    if len(n) != 1 or 0 in n:
        raise ValueError(f"terms must hold one value per image, the same N for all; got sizes {sorted(n)}")
    total = mean_and_stderr(torch.from_numpy(np.sum(list(arrays.values()), axis=0)))
    return BitsPerDim(value=total.mean, stderr=total.stderr, terms={k: float(a.mean()) for k, a in arrays.items()},
                      method=m, n=next(iter(n)), extra=dict(extra or {}))


def diffusion_bound_fn(diffusion: "GaussianDiffusion", model: torch.nn.Module, t_samples: int | None = None,
                       decoder: str = "discretized") -> Callable[[torch.Tensor, torch.Generator], dict[str, torch.Tensor]]:
    """A ``bound_fn(x0, generator) -> {reconstruction, prior, denoising: (B,)}`` (bits/dim) for
    :func:`elbolab.evaluate.evaluate_bpd`, from the DDPM ELBO of :func:`elbolab.diffusion.elbo_terms`
    (``t_samples=None``: exact sum over t; ``k``: Monte Carlo over t). Put ``model`` in eval mode first."""
    from elbolab.diffusion import elbo_terms

    def bound_fn(x0: torch.Tensor, generator: torch.Generator) -> dict[str, torch.Tensor]:
        per = elbo_terms(diffusion, model, x0, generator=generator, t_samples=t_samples, decoder=decoder).per_image
        return {"reconstruction": per.reconstruction, "prior": per.prior, "denoising": per.denoising}

    return bound_fn
