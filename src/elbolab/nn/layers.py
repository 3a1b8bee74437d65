"""Building blocks of the diffusion U-Net (lecture notes, "DDPMs: Implementation").

"U-Net architectures are typically used to represent eps_theta(x_t, t); bells and whistles: residual blocks,
self-attention. Time is encoded using sinusoidal positional embeddings or random Fourier features, fed into the
U-Net using addition or adaptive normalization."

Shapes: images ``x: (B, C, H, W)``; times ``t: (B,)`` (long timesteps 1..T or float noise levels);
embeddings ``emb: (B, D)``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = [
    "sinusoidal_embedding",
    "SinusoidalEmbedding",
    "FourierFeatures",
]


def sinusoidal_embedding(t: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal position embedding of Vaswani et al. 2017 as used for time by Ho et al. 2020 (Sec. 4).

    ``t: (B,)`` long or float -> ``(B, dim)`` float32: ``[sin(t w_0..w_{h-1}), cos(t w_0..w_{h-1})]`` with
    ``h = dim // 2`` and frequencies ``w_i = max_period^(-i / h)`` (geometric from 1 down to ~1/max_period).
    An odd ``dim`` gets one trailing zero column. Neighbouring integer t differ in every embedding (the
    highest frequency is 1 rad per unit of t).
    """
    if dim <= 0:
        raise ValueError(f"sinusoidal_embedding: dim = {dim!r} must be a positive integer")
    if t.ndim != 1:
        raise ValueError(f"sinusoidal_embedding: t must have shape (B,), got {tuple(t.shape)}")
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.to(torch.float32)[:, None] * freqs[None, :]
    emb = torch.cat([torch.sin(args), torch.cos(args)], dim=1)
    if dim % 2:
        emb = torch.nn.functional.pad(emb, (0, 1))
    return emb


class SinusoidalEmbedding(nn.Module):
    """Module wrapper of :func:`sinusoidal_embedding`: ``t: (B,) -> (B, dim)`` (no parameters)."""

    def __init__(self, dim: int, max_period: float = 10000.0) -> None:
        super().__init__()
        if dim <= 0:
            raise ValueError(f"SinusoidalEmbedding: dim = {dim!r} must be a positive integer")
        self.dim = dim
        self.max_period = max_period

    def forward(self, t: Tensor) -> Tensor:
        return sinusoidal_embedding(t, self.dim, self.max_period)


class FourierFeatures(nn.Module):
    """Random Fourier features of Tancik et al. 2020, as used for noise levels by Song et al. 2021 (score SDE).

    ``t: (B,) -> (B, dim)``: ``[sin(2 pi t w), cos(2 pi t w)]`` with fixed (non-trained, but saved) frequencies
    ``w ~ N(0, scale^2)`` of shape ``(dim // 2,)``. Large ``t`` (integer timesteps up to T) is divided by
    ``t_scale`` first so that the features stay informative; the default ``t_scale=1000`` maps 1..1000 to (0, 1].
    """

    def __init__(self, dim: int, scale: float = 16.0, t_scale: float = 1000.0, seed: int = 0) -> None:
        super().__init__()
        if dim <= 0 or dim % 2:
            raise ValueError(f"FourierFeatures: dim = {dim!r} must be a positive even integer")
        g = torch.Generator().manual_seed(seed)
        self.register_buffer("w", torch.randn(dim // 2, generator=g) * scale)
        self.t_scale = t_scale

    def forward(self, t: Tensor) -> Tensor:
        if t.ndim != 1:
            raise ValueError(f"FourierFeatures: t must have shape (B,), got {tuple(t.shape)}")
        args = (2 * math.pi / self.t_scale) * t.to(torch.float32)[:, None] * self.w[None, :]
        return torch.cat([torch.sin(args), torch.cos(args)], dim=1)
