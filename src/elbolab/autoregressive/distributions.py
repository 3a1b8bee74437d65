"""The discrete distribution of one sub-pixel given the past, on ``L = num_levels`` values.

Level k in {0, ..., L - 1} sits at ``v_k = -1 + 2 k / (L - 1)`` in the library's [-1, 1] image space (for
L = 256 this is ``k / 127.5 - 1``, :func:`elbolab.data.transforms.to_float`). Both outputs are normalised
exactly over the L levels, so the PixelCNN's likelihood is exact (no bound, no dequantisation):

- :class:`CategoricalOutput`: ``L`` logits per sub-pixel, a softmax (van den Oord et al. 2016a, Sec. 5.3);
- :class:`LogisticMixtureOutput`: ``3 K`` numbers per sub-pixel, mixture weights pi, means mu and log-scales
  log s of K logistics discretised on the bins ``[v_k - delta, v_k + delta]``, ``delta = 1 / (L - 1)``, with
  the edge bins extended to -inf / +inf (Salimans et al. 2017, eq. 2), so the L probabilities telescope to 1.

Parameter tensors are ``(B, P, ...)`` with P the per-sub-pixel parameter count on axis 1; ``levels``:
long tensors of level indices of the remaining shape ``(B, ...)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["level_values", "to_levels", "from_levels", "CategoricalOutput", "LogisticMixtureOutput"]


def level_values(num_levels: int, dtype: torch.dtype = torch.float32, device: torch.device | None = None) -> Tensor:
    """``(L,)`` the values ``v_k = -1 + 2 k / (L - 1)`` in [-1, 1]."""
    return torch.linspace(-1.0, 1.0, num_levels, dtype=dtype, device=device)


def to_levels(x: Tensor, num_levels: int) -> Tensor:
    """Image values in [-1, 1] -> nearest level index (long, same shape), clamped to 0..L-1.

    Exact for data on the grid (8-bit data: ``round((x + 1) * 127.5)``), and maps a uniformly dequantised
    value back to its level.
    """
    if not torch.is_floating_point(x):
        raise ValueError(f"expected a floating-point image in [-1, 1], got dtype {x.dtype}")
    return ((x.detach().double() + 1.0) * (0.5 * (num_levels - 1))).round().clamp_(0, num_levels - 1).long()


def from_levels(levels: Tensor, num_levels: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """Level indices -> values ``v_k`` in [-1, 1] (the inverse of :func:`to_levels` on the grid)."""
    return levels.to(dtype) / (0.5 * (num_levels - 1)) - 1.0  # for L = 256: k / 127.5 - 1, as to_float


class CategoricalOutput:
    """A softmax over the L levels; parameters per sub-pixel: ``P = L`` logits."""

    def __init__(self, num_levels: int) -> None:
        self.num_levels = num_levels
        self.params_per_channel = num_levels

    def log_prob(self, params: Tensor, levels: Tensor) -> Tensor:
        """``params: (B, L, ...)``, ``levels: (B, ...)`` -> log P(level) ``(B, ...)``."""
        return F.log_softmax(params, dim=1).gather(1, levels.unsqueeze(1)).squeeze(1)

    def level_log_probs(self, params: Tensor) -> Tensor:
        """``params: (B, L)`` -> ``(B, L)`` log-probabilities of every level."""
        return F.log_softmax(params, dim=1)


class LogisticMixtureOutput:
    """A mixture of K discretised logistics on the L levels; ``P = 3 K`` = (logit pi, mu, log s) x K.

    ``log s`` is clamped below at ``min_log_scale`` (-7, as in PixelCNN++); the bin probabilities are computed
    in log space, ``log(sigma(a) - sigma(b)) = -softplus(-a) - softplus(b) + log(1 - exp(-(a - b)))`` with
    ``a = (v + delta - mu) / s`` and ``b = (v - delta - mu) / s``, which stays finite for every a > b.
    """

    def __init__(self, num_levels: int, num_mixtures: int, min_log_scale: float = -7.0) -> None:
        self.num_levels = num_levels
        self.num_mixtures = num_mixtures
        self.params_per_channel = 3 * num_mixtures
        self.min_log_scale = min_log_scale

    def _split(self, params: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        k = self.num_mixtures
        logit_pi, mu, log_s = params[:, :k], params[:, k:2 * k], params[:, 2 * k:]
        return F.log_softmax(logit_pi, dim=1), mu, log_s.clamp(min=self.min_log_scale)

    def _component_log_prob(self, v: Tensor, mu: Tensor, log_s: Tensor) -> Tensor:
        """log P_k(level at value v) of each component; v, mu, log_s broadcast together."""
        delta = 1.0 / (self.num_levels - 1)
        inv_s = torch.exp(-log_s)
        a = (v + delta - mu) * inv_s
        b = (v - delta - mu) * inv_s
        inner = -F.softplus(-a) - F.softplus(b) + torch.log(-torch.expm1(b - a))
        lowest = -F.softplus(-a)  # log sigma(a): the bin (-inf, v_0 + delta]
        highest = -F.softplus(b)  # log(1 - sigma(b)): the bin [v_{L-1} - delta, +inf)
        return torch.where(v < -1.0 + 0.5 * delta, lowest, torch.where(v > 1.0 - 0.5 * delta, highest, inner))

    def log_prob(self, params: Tensor, levels: Tensor) -> Tensor:
        """``params: (B, 3K, ...)``, ``levels: (B, ...)`` -> log P(level) ``(B, ...)``."""
        log_pi, mu, log_s = self._split(params)
        v = from_levels(levels, self.num_levels, params.dtype).unsqueeze(1)
        return torch.logsumexp(log_pi + self._component_log_prob(v, mu, log_s), dim=1)

    def level_log_probs(self, params: Tensor) -> Tensor:
        """``params: (B, 3K)`` -> ``(B, L)`` log-probabilities of every level."""
        log_pi, mu, log_s = self._split(params)
        v = level_values(self.num_levels, params.dtype, params.device)  # (L,)
        comp = self._component_log_prob(v[None, None, :], mu[..., None], log_s[..., None])  # (B, K, L)
        return torch.logsumexp(log_pi[..., None] + comp, dim=1)
