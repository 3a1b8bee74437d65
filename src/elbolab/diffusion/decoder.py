"""A calibrated decoder p_theta(x_0 | x_1) for the reconstruction term of the diffusion ELBO.

Ho et al. 2020 (eq. 13) decode x_1 with the discretised Gaussian N(mu_theta(x_1, 1), sigma_1^2) integrated over
the 256 bins of 8-bit data, its first and last bins extended to -inf and +inf, with one fixed sigma_1 (beta_1, or
beta_tilde_2 for the "fixed small" variance). On MNIST, where ~81 % of the pixels are 0 and most of the rest are
in between, no single sigma_1 serves both: a background pixel whose predicted mean sits on the edge value -1 pays
-log2 Phi(1/255 / sigma_1) ~ 0.3 bits at the cosine schedule's sigma_1 ~ 0.0047 (its bin is half-infinite, so a
smaller sigma would cost it nothing), while an interior pixel, predicted to within about a bin, needs a sigma of
about a bin. The fixed decoder's reconstruction term (~0.66 bits/dim of a 1.6 bits/dim demo ELBO) is mostly
this mismatch.

:class:`DecoderCalibration` lets sigma depend on the predicted mean: mu_theta(x_1, 1) in [-inf, inf] is cut
into K buckets at ``edges`` and each bucket has its own sigma_k. Since sigma is a function of x_1 alone (through
the network's prediction), never of x_0, p(x_0 | x_1) is still a normalised distribution over the 256 values of
every pixel, so the ELBO with it is still a bound on -log P(x_0). :func:`calibrate_decoder` fits the K sigmas
by maximum likelihood on *training* images (a grid over multiples of the fixed sigma_1; the fixed sigma is on
the grid, so on those images the fit never does worse than the fixed decoder) - the few parameters of the
decoder fitted with the network frozen, as improved DDPM (Nichol & Dhariwal 2021) learns Sigma_theta; the
bound is then measured on held-out images with :func:`calibrated_reconstruction`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor, nn

from elbolab.diffusion.process import GaussianDiffusion
from elbolab.math import discretized_gaussian_log_likelihood, sum_flat

__all__ = ["DEFAULT_EDGES", "DecoderCalibration", "calibrate_decoder", "calibrated_reconstruction",
           "decoder_mean"]

# bucket boundaries on the predicted mean: beyond / near the bottom edge value -1, interior, near / beyond +1
DEFAULT_EDGES: tuple[float, ...] = (-1 + 0.5 / 255, -1 + 2 / 255, 1 - 2 / 255, 1 - 0.5 / 255)
# the sigma grid, as multiples 2^(k/8) of the fixed sigma_1: 1/64x .. 4x (1.0 = the fixed decoder)
_GRID = tuple(2.0 ** (k / 8) for k in range(-48, 17))


@dataclass(frozen=True)
class DecoderCalibration:
    """sigma of the discretised-Gaussian decoder per bucket of the predicted mean: ``edges: (K-1,)`` increasing
    boundaries, ``sigmas: (K,)``; ``fixed_sigma`` is the diffusion's own sigma_1 and ``n_images`` the number
    of training images fitted on. ``train_bpd`` / ``train_fixed_bpd``: the reconstruction term on those
    images with the fitted and with the fixed sigma (bits/dim)."""

    edges: tuple[float, ...]
    sigmas: tuple[float, ...]
    fixed_sigma: float
    n_images: int
    train_bpd: float
    train_fixed_bpd: float

    def __post_init__(self) -> None:
        if len(self.sigmas) != len(self.edges) + 1:
            raise ValueError(f"DecoderCalibration: {len(self.edges)} edges need {len(self.edges) + 1} sigmas, "
                             f"got {len(self.sigmas)}")
        if any(b <= a for a, b in zip(self.edges, self.edges[1:])):
            raise ValueError(f"DecoderCalibration: edges = {self.edges} must increase")
        if not all(s > 0 and math.isfinite(s) for s in self.sigmas):
            raise ValueError(f"DecoderCalibration: sigmas = {self.sigmas} must be positive and finite")

    def bucket(self, mean: Tensor) -> Tensor:
        """The bucket index (long, ``mean``'s shape) of every predicted mean."""
        return torch.bucketize(mean.contiguous(), torch.tensor(self.edges, dtype=mean.dtype, device=mean.device))

    def sigma(self, mean: Tensor) -> Tensor:
        """sigma per pixel, ``mean``'s shape: a function of the prediction only (so the decoder normalises)."""
        table = torch.tensor(self.sigmas, dtype=torch.float64, device=mean.device)
        return table[self.bucket(mean)]

    def log_likelihood(self, x0: Tensor, mean: Tensor) -> Tensor:
        """log p(x_0 | x_1) per example in nats, ``(B,)``: ``x0`` 8-bit data in [-1, 1], ``mean`` = mu_theta(x_1, 1),
        both ``(B, ...)``."""
        return sum_flat(discretized_gaussian_log_likelihood(x0, mean, 2.0 * self.sigma(mean).log()))

    def to_dict(self) -> dict:
        return {"edges": list(self.edges), "sigmas": list(self.sigmas), "fixed_sigma": self.fixed_sigma,
                "n_images": self.n_images, "train_bpd": self.train_bpd, "train_fixed_bpd": self.train_fixed_bpd}


def decoder_mean(diffusion: GaussianDiffusion, model: nn.Module, x0: Tensor, *, y: Tensor | None = None,
                 generator: torch.Generator | None = None) -> Tensor:
    """mu_theta(x_1, 1) for x_1 ~ q(x_1 | x_0), one draw per image: ``x0: (B, C, H, W)`` -> ``(B, C, H, W)``."""
    noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
    t = torch.ones(x0.shape[0], dtype=torch.long, device=x0.device)
    with torch.no_grad():
        x1 = diffusion.q_sample(x0, t, noise)
        out = diffusion.model_forward(model, x1, t, y)
        return diffusion.p_mean_variance(out, x1, t).mean


def _fixed_sigma(diffusion: GaussianDiffusion) -> float:
    return math.sqrt(float(diffusion.table("reverse_variance")[1]))


def calibrate_decoder(diffusion: GaussianDiffusion, model: nn.Module, x0: Tensor, *, y: Tensor | None = None,
                      generator: torch.Generator | None = None,
                      edges: Sequence[float] = DEFAULT_EDGES) -> DecoderCalibration:
    """Fit one sigma per bucket of the predicted mean by maximum likelihood on the training images
    ``x0: (B, C, H, W)`` (8-bit data in [-1, 1]; ``y: (B,)`` for a class-conditional model), over the grid
    1/64x .. 4x of the diffusion's fixed sigma_1 in steps of 2^(1/8). A bucket no pixel falls in keeps the
    fixed sigma."""
    edges = tuple(float(e) for e in edges)
    fixed = _fixed_sigma(diffusion)
    mean = decoder_mean(diffusion, model, x0, y=y, generator=generator)
    probe = DecoderCalibration(edges, (fixed,) * (len(edges) + 1), fixed, x0.shape[0], 0.0, 0.0)
    bucket = probe.bucket(mean).flatten()
    k = len(edges) + 1
    nll = torch.empty(len(_GRID), k, dtype=torch.float64)  # summed nats per (grid sigma, bucket)
    for i, r in enumerate(_GRID):
        per_pixel = -discretized_gaussian_log_likelihood(x0, mean, torch.full_like(mean, 2.0 * math.log(fixed * r)))
        nll[i] = torch.zeros(k, dtype=torch.float64).index_add_(0, bucket, per_pixel.double().flatten())
    one = _GRID.index(1.0)
    best = nll.argmin(0)
    sigmas = tuple(fixed * _GRID[int(best[j])] if bool((bucket == j).any()) else fixed for j in range(k))
    scale = x0.numel() * math.log(2.0)
    return DecoderCalibration(edges, sigmas, fixed, x0.shape[0],
                              train_bpd=float(nll.gather(0, best[None]).sum()) / scale,
                              train_fixed_bpd=float(nll[one].sum()) / scale)


def calibrated_reconstruction(diffusion: GaussianDiffusion, model: nn.Module, x0: Tensor,
                              calibration: DecoderCalibration, *, y: Tensor | None = None,
                              generator: torch.Generator | None = None) -> Tensor:
    """-log p(x_0 | x_1) per image in bits/dim, ``(B,)`` float64, of ``x0: (B, C, H, W)`` (8-bit data in [-1, 1];
    ``y: (B,)`` for a class-conditional model) with the calibrated decoder (one x_1 per image): the reconstruction
    term L_0 of :func:`elbolab.diffusion.elbo_terms` with this decoder."""
    mean = decoder_mean(diffusion, model, x0, y=y, generator=generator)
    d = x0[0].numel()
    return -calibration.log_likelihood(x0, mean).double() / (d * math.log(2.0))
