"""A time-embedded residual MLP: the denoiser for low-dimensional toy data (2-D mixtures, 1-D densities).

``model(x, t, y=None) -> out`` with ``x: (B, D)``, ``t: (B,)`` (long timesteps 1..T or float noise levels),
``y: (B,)`` long labels or None; ``out: (B, D)``. Time enters through the sinusoidal embedding of
:mod:`elbolab.nn.layers` (Ho et al. 2020, Sec. 4) and an MLP, and is added to every residual block.
With ``num_classes > 0`` a label embedding is added too, with one extra learned "null" label used when
``y`` is None or ``y == -1`` (classifier-free guidance, Ho & Salimans 2022).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from elbolab.nn.layers import SinusoidalEmbedding

__all__ = ["MLPDenoiser"]


class _ResidualBlock(nn.Module):
    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(hidden)
        self.fc1 = nn.Linear(hidden, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.act = nn.SiLU()

    def forward(self, h: Tensor, emb: Tensor) -> Tensor:
        z = self.fc1(self.act(self.norm(h))) + emb
        return h + self.fc2(self.act(z))


class MLPDenoiser(nn.Module):
    """Residual MLP denoiser for ``(B, D)`` data.

    ``dim``: data dimension D; ``hidden``: width; ``depth``: number of residual blocks; ``time_dim``: size of
    the sinusoidal embedding; ``num_classes``: 0 for an unconditional model. The output layer starts at zero,
    so an untrained model predicts 0 (the mean of the eps target).
    """

    def __init__(
        self, dim: int = 2, hidden: int = 128, depth: int = 3, time_dim: int = 64, num_classes: int = 0
    ) -> None:
        super().__init__()
        for name, v in (("dim", dim), ("hidden", hidden), ("depth", depth), ("time_dim", time_dim)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"MLPDenoiser: {name} = {v!r} must be a positive integer")
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 0:
            raise ValueError(f"MLPDenoiser: num_classes = {num_classes!r} must be an integer >= 0")
        self.dim = dim
        self.num_classes = num_classes
        self.time_embed = nn.Sequential(
            SinusoidalEmbedding(time_dim), nn.Linear(time_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden)
        )
        self.label_embed = nn.Embedding(num_classes + 1, hidden) if num_classes > 0 else None
        self.inp = nn.Linear(dim, hidden)
        self.blocks = nn.ModuleList(_ResidualBlock(hidden) for _ in range(depth))
        self.out_norm = nn.LayerNorm(hidden)
        self.out = nn.Linear(hidden, dim)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"MLPDenoiser: x must have shape (B, {self.dim}), got {tuple(x.shape)}")
        if t.shape != (x.shape[0],):
            raise ValueError(f"MLPDenoiser: t must have shape ({x.shape[0]},), got {tuple(t.shape)}")
        emb = self.time_embed(t).to(x.dtype)
        if self.label_embed is not None:
            if y is None:
                labels = torch.full((x.shape[0],), self.num_classes, dtype=torch.long, device=x.device)
            else:
                if y.shape != (x.shape[0],):
                    raise ValueError(f"MLPDenoiser: y must have shape ({x.shape[0]},), got {tuple(y.shape)}")
                if bool(((y < -1) | (y >= self.num_classes)).any()):
                    raise ValueError(f"MLPDenoiser: labels must be in 0..{self.num_classes - 1} or -1 (null)")
                labels = torch.where(y < 0, torch.full_like(y, self.num_classes), y).long()
            emb = emb + self.label_embed(labels).to(x.dtype)
        h = self.inp(x)
        for block in self.blocks:
            h = block(h, emb)
        return self.out(torch.nn.functional.silu(self.out_norm(h)))
