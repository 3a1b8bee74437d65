"""Decoder likelihoods ``p_theta(x|z)``: how the decoder's output channels are read as a distribution over x.

Images are in the library's convention, floats in [-1, 1] of shape ``(..., C, H, W)``; the decoder emits
``params: (..., P * C, H, W)`` with ``P = params_per_channel``. Every ``log_prob`` sums over (C, H, W) and
returns nats of shape ``(...)``; leading axes broadcast (the IWAE bound evaluates ``(S, B, ...)`` decoder
outputs against ``(B, ...)`` data).

- :class:`Bernoulli`: dynamically binarised data (each pixel of a batch is redrawn as ink with probability
  ``(x + 1) / 2`` every time it is seen, Salakhutdinov & Murray 2008); the standard "binarised MNIST" NLL.
- :class:`GaussianFixed`, :class:`GaussianLearned`: continuous densities ``N(mu, sigma^2)`` on [-1, 1] data.
- :class:`Discretized`: the discretised Gaussian of Ho et al. 2020 (eq. 13) on the 8-bit grid, so that bits/dim
  are comparable with the diffusion model's.
"""

from __future__ import annotations

import abc
import math

import torch
import torch.nn.functional as F
from torch import Tensor

from elbolab.vae.config import DecoderLikelihood
from elbolab.math import discretized_gaussian_log_likelihood, gaussian_log_likelihood

__all__ = ["Likelihood", "Bernoulli", "GaussianFixed", "GaussianLearned", "Discretized", "make_likelihood"]

_EVENT_DIMS = (-3, -2, -1)


def _soft_lower_bound(raw: Tensor, low: float) -> Tensor:
    """``low + softplus(raw - low)``: equals ``raw`` well above ``low``, never below it (smooth clamp)."""
    return low + F.softplus(raw - low)


class Likelihood(abc.ABC):
    """Base class: ``prepare`` the data, ``log_prob`` of data under decoder params, ``mean`` and ``sample``."""

    kind: DecoderLikelihood
    params_per_channel: int = 1

    def prepare(self, x: Tensor, generator: torch.Generator | None) -> Tensor:
        """The target the likelihood scores, from data ``x: (B, C, H, W)`` in [-1, 1] (identity by default)."""
        return x

    @abc.abstractmethod
    def log_prob(self, params: Tensor, x: Tensor) -> Tensor:
        """``log p_theta(x|z)`` summed over (C, H, W): ``params: (..., P*C, H, W)``, ``x: (..., C, H, W)``."""

    @abc.abstractmethod
    def mean(self, params: Tensor) -> Tensor:
        """``E[x|z]`` in data space, ``(..., C, H, W)``."""

    @abc.abstractmethod
    def sample(self, params: Tensor, generator: torch.Generator | None) -> Tensor:
        """``x ~ p_theta(x|z)``, ``(..., C, H, W)``."""

    def bias_for_mean(self, mean: Tensor) -> Tensor | None:
        """Decoder parameters ``(P*C, H, W)`` whose distribution has mean ``mean: (C, H, W)`` in [-1, 1], used to
        initialise the decoder's output bias (:meth:`~elbolab.vae.LatentVariableModel.init_decoder_bias_`);
        None: this likelihood keeps its initialisation."""
        return None

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class Bernoulli(Likelihood):
    """``p(x|z) = prod Bernoulli(b; sigmoid(logits))`` with ``b = (x + 1) / 2 in {0, 1}``."""

    kind = DecoderLikelihood.BERNOULLI

    def prepare(self, x: Tensor, generator: torch.Generator | None) -> Tensor:
        """Dynamic binarisation: ``b ~ Bernoulli((x + 1) / 2)``, returned as ``2 b - 1 in {-1, 1}``."""
        probs = ((x + 1.0) * 0.5).clamp(0.0, 1.0)
        return torch.bernoulli(probs, generator=generator) * 2.0 - 1.0

    def log_prob(self, params: Tensor, x: Tensor) -> Tensor:
        b = (x + 1.0) * 0.5
        # log sigmoid(l) b + log sigmoid(-l) (1 - b) = b l - softplus(l)
        return (b * params - F.softplus(params)).sum(_EVENT_DIMS)

    def mean(self, params: Tensor) -> Tensor:
        return torch.sigmoid(params) * 2.0 - 1.0

    def bias_for_mean(self, mean: Tensor) -> Tensor:
        """``logit(clip((mean + 1) / 2, 0.001, 0.999))``, the clipping of Burda et al. 2016's code."""
        return torch.logit(((mean + 1.0) * 0.5).clamp(1e-3, 1.0 - 1e-3))

    def sample(self, params: Tensor, generator: torch.Generator | None) -> Tensor:
        return torch.bernoulli(torch.sigmoid(params), generator=generator) * 2.0 - 1.0


class GaussianFixed(Likelihood):
    """``p(x|z) = N(x; mu_theta(z), sigma^2 I)`` with a fixed ``sigma`` (in units of [-1, 1] data)."""

    kind = DecoderLikelihood.GAUSSIAN_FIXED

    def __init__(self, std: float) -> None:
        if not std > 0:
            raise ValueError(f"GaussianFixed: std = {std!r} must be > 0")
        self.std = float(std)
        self.logvar = 2.0 * math.log(self.std)

    def log_prob(self, params: Tensor, x: Tensor) -> Tensor:
        return gaussian_log_likelihood(x, params, torch.tensor(self.logvar, dtype=params.dtype)).sum(_EVENT_DIMS)

    def mean(self, params: Tensor) -> Tensor:
        return params

    def sample(self, params: Tensor, generator: torch.Generator | None) -> Tensor:
        eps = torch.randn(params.shape, generator=generator, device=params.device, dtype=params.dtype)
        return params + self.std * eps

    def __repr__(self) -> str:
        return f"GaussianFixed(std={self.std})"


class GaussianLearned(Likelihood):
    """``p(x|z) = N(x; mu_theta(z), diag sigma_theta^2(z))``; the decoder emits ``[mu, log sigma^2]`` channels.

    ``log sigma^2`` is softly bounded below by ``min_logvar`` (default: sigma = half an 8-bit bin), because a
    continuous density on discrete data is otherwise unbounded.
    """

    kind = DecoderLikelihood.GAUSSIAN_LEARNED
    params_per_channel = 2

    def __init__(self, min_logvar: float = 2.0 * math.log(1.0 / 255.0)) -> None:
        self.min_logvar = float(min_logvar)

    def split(self, params: Tensor) -> tuple[Tensor, Tensor]:
        mu, raw = params.chunk(2, dim=-3)
        return mu, _soft_lower_bound(raw, self.min_logvar)

    def log_prob(self, params: Tensor, x: Tensor) -> Tensor:
        mu, logvar = self.split(params)
        return gaussian_log_likelihood(x, mu, logvar).sum(_EVENT_DIMS)

    def mean(self, params: Tensor) -> Tensor:
        return self.split(params)[0]

    def sample(self, params: Tensor, generator: torch.Generator | None) -> Tensor:
        mu, logvar = self.split(params)
        eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
        return mu + torch.exp(0.5 * logvar) * eps


class Discretized(Likelihood):
    """Discretised Gaussian on the 8-bit grid (Ho et al. 2020, eq. 13); decoder emits ``[mu, log sigma^2]``.

    Each pixel value ``k / 127.5 - 1`` owns the bin ``[x - 1/255, x + 1/255]``; the two edge bins extend to
    -inf / +inf (:func:`elbolab.math.discretized_gaussian_log_likelihood`). ``log sigma^2`` is softly bounded
    below by ``min_logvar``.
    """

    kind = DecoderLikelihood.DISCRETIZED
    params_per_channel = 2

    def __init__(self, min_logvar: float = -14.0) -> None:
        self.min_logvar = float(min_logvar)

    def prepare(self, x: Tensor, generator: torch.Generator | None) -> Tensor:
        """Snap ``x`` to the 8-bit grid ``{k / 127.5 - 1}`` (a no-op on 8-bit data)."""
        return torch.round((x.clamp(-1.0, 1.0) + 1.0) * 127.5) / 127.5 - 1.0

    def split(self, params: Tensor) -> tuple[Tensor, Tensor]:
        mu, raw = params.chunk(2, dim=-3)
        return mu, _soft_lower_bound(raw, self.min_logvar)

    def log_prob(self, params: Tensor, x: Tensor) -> Tensor:
        mu, logvar = self.split(params)
        return discretized_gaussian_log_likelihood(x, mu, logvar).sum(_EVENT_DIMS)

    def mean(self, params: Tensor) -> Tensor:
        return self.split(params)[0].clamp(-1.0, 1.0)

    def sample(self, params: Tensor, generator: torch.Generator | None) -> Tensor:
        mu, logvar = self.split(params)
        eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
        return self.prepare(mu + torch.exp(0.5 * logvar) * eps, None)


def make_likelihood(kind: DecoderLikelihood | str, gaussian_std: float = 0.1) -> Likelihood:
    """The decoder likelihood named by ``kind`` (a :class:`~elbolab.config.DecoderLikelihood` or its value)."""
    try:
        kind = DecoderLikelihood(kind)
    except ValueError:
        choices = ", ".join(repr(k.value) for k in DecoderLikelihood)
        raise ValueError(f"likelihood = {kind!r} is not valid: expected one of {choices}") from None
    if kind is DecoderLikelihood.BERNOULLI:
        return Bernoulli()
    if kind is DecoderLikelihood.GAUSSIAN_FIXED:
        return GaussianFixed(gaussian_std)
    if kind is DecoderLikelihood.GAUSSIAN_LEARNED:
        return GaussianLearned()
    return Discretized()
