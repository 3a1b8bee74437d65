"""Fourier features of the network's *input* z_t (Kingma et al. 2021, "Variational Diffusion Models", App. C).

Fine detail of 8-bit images lives at the scale of one bin, 2/255 in [-1, 1], which a network with smooth
activations sees poorly when z_t is nearly noise-free (gamma_0 ~ -13: sigma_0 ~ 1e-3). VDM concatenates
high-frequency features of every input channel to the input::

    f^n(z) = sin(2^n pi z),  g^n(z) = cos(2^n pi z),   n in range(start, stop, step),

VDM uses n = 7, 8 (its code, ``Base2FourierFeatures(start=6, stop=8)``, writes the same angles as
2 pi 2^n z for n = 6, 7).

:class:`InputFourierFeatures`: ``z: (B, C, ...) -> (B, C (1 + 2 F), ...)`` = [z, sin features, cos features]
with F = len(range(start, stop, step)); the channel order is ``[z_c for c] + [sin(2^n pi z_c) for c for n]
+ [cos(...) same order]``. No parameters. Works for images ``(B, C, H, W)`` and flat data ``(B, D)``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["InputFourierFeatures"]


class InputFourierFeatures(nn.Module):
    """[z, sin(2^n pi z), cos(2^n pi z)] along the channel axis (axis 1), n in range(start, stop, step)."""

    def __init__(self, start: int = 7, stop: int = 9, step: int = 1) -> None:
        super().__init__()
        exps = list(range(start, stop, step))
        if not exps:
            raise ValueError(f"InputFourierFeatures: range({start}, {stop}, {step}) is empty; need >= 1 frequency")
        self.exponents = tuple(exps)

    @property
    def num_frequencies(self) -> int:
        return len(self.exponents)

    def out_channels(self, in_channels: int) -> int:
        """Channels of the output for ``in_channels`` input channels: in_channels (1 + 2 F)."""
        return in_channels * (1 + 2 * self.num_frequencies)

    def forward(self, z: Tensor) -> Tensor:
        if z.ndim < 2:
            raise ValueError(f"InputFourierFeatures: z must have shape (B, C, ...), got {tuple(z.shape)}")
        B, C = z.shape[:2]
        rest = z.shape[2:]
        dt = torch.float64 if z.dtype == torch.float64 else torch.float32
        f = torch.tensor([math.pi * 2.0**n for n in self.exponents], dtype=dt, device=z.device)
        args = z.to(f.dtype).unsqueeze(2) * f.reshape((1, 1, -1) + (1,) * len(rest))  # (B, C, F, ...)
        args = args.reshape((B, C * self.num_frequencies) + rest)
        return torch.cat([z, torch.sin(args).to(z.dtype), torch.cos(args).to(z.dtype)], dim=1)
