"""The diffusion U-Net of the lecture notes ("DDPMs: Implementation"): residual blocks, self-attention, time embedding.

Layout (Ho et al. 2020, App. B; Nichol & Dhariwal 2021), for ``channel_mults = (1, 2, 2)``, 28x28 input::

    conv_in                                     (B, C, 28, 28) -> (B, 32, 28, 28)
    level 0 @28: 2 x ResBlock(32)   + Downsample -> 14        (skips saved after every block)
    level 1 @14: 2 x ResBlock(64)   + Downsample -> 7
    level 2 @7 : 2 x ResBlock(64) [+ attention at resolutions in ``attention_resolutions``]
    middle  @7 : ResBlock, SelfAttention (``mid_attention``), ResBlock
    up levels in reverse, ``num_res_blocks + 1`` (or ``level_res_blocks[i] + 1``) ResBlocks each on [h, skip]
    concatenated, Upsample between
    GN, SiLU, conv_out                          -> (B, out_channels, 28, 28)

Image sizes: each level except the last halves H and W, so ``image_size`` must be divisible by
``2 ** (len(channel_mults) - 1)`` (28 -> 14 -> 7; 32 -> 16 -> 8 -> 4).

Conditioning: ``e = MLP(embed(t)) [+ E_y(y)]``. ``embed`` is :func:`~elbolab.nn.layers.sinusoidal_embedding`
or :class:`~elbolab.nn.layers.FourierFeatures`; every ResBlock receives its own projection of ``SiLU(e)``,
computed for all blocks at once by one fused Linear (``cond_proj``). With ``num_classes = K > 0`` there is a
label embedding ``E_y`` with ``K + 1`` rows: rows ``0..K-1`` are the classes and row ``K`` is the learned
*null class* used for unconditional prediction in classifier-free guidance (Ho & Salimans 2022). In
``forward``, ``y = None``, ``y = -1`` or ``y = K`` all select the null class.
"""

from __future__ import annotations

import dataclasses
import logging

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from elbolab.config import coerce
from elbolab.nn.config import TimeEmbedding, TimeInjection, UNetConfig, Upsampling
from elbolab.nn.fourier import InputFourierFeatures
from elbolab.nn.layers import (
    Downsample,
    FourierFeatures,
    ResBlock,
    SelfAttention,
    SinusoidalEmbedding,
    Upsample,
    check_groups,
)

logger = logging.getLogger(__name__)

__all__ = ["UNet", "build_unet", "NULL_LABEL"]

NULL_LABEL = -1
"""Label value meaning "no class" (the learned null class); ``y == num_classes`` means the same."""


class ResAttnBlock(nn.Module):
    """A ResBlock optionally followed by self-attention: ``(x: (B, C_in, H, W), cond) -> (B, C_out, H, W)``."""

    def __init__(self, res: ResBlock, attn: SelfAttention | None) -> None:
        super().__init__()
        self.res = res
        self.attn = attn

    def forward(self, x: Tensor, cond: Tensor) -> Tensor:
        h = self.res(x, cond)
        return self.attn(h) if self.attn is not None else h


def _validate(cfg: UNetConfig) -> None:
    """Structural checks beyond :func:`elbolab.config.validate`; raises ValueError naming the bad value."""
    n_down = len(cfg.channel_mults) - 1
    if cfg.image_size % (2**n_down):
        raise ValueError(
            f"unet.image_size = {cfg.image_size} is not divisible by 2**{n_down} = {2**n_down} "
            f"(one halving per level after the first of channel_mults = {list(cfg.channel_mults)})"
        )
    resolutions = [cfg.image_size // 2**i for i in range(n_down + 1)]
    if cfg.level_res_blocks and (len(cfg.level_res_blocks) != len(cfg.channel_mults)
                                 or any(int(n) <= 0 for n in cfg.level_res_blocks)):
        raise ValueError(f"unet.level_res_blocks = {list(cfg.level_res_blocks)}: need one positive integer per "
                         f"level (channel_mults = {list(cfg.channel_mults)}), or [] for num_res_blocks = "
                         f"{cfg.num_res_blocks} at every level")
    for r in cfg.attention_resolutions:
        if r not in resolutions:
            raise ValueError(
                f"unet.attention_resolutions contains {r}, which is not a resolution of this U-Net; "
                f"resolutions are {resolutions}"
            )
    for m in cfg.channel_mults:
        ch = cfg.base_channels * m
        if ch % cfg.groups:
            raise ValueError(
                f"unet.groups = {cfg.groups} does not divide the channel count {ch} "
                f"(= base_channels {cfg.base_channels} x mult {m})"
            )
    attn_channels = [cfg.base_channels * m for m, r in zip(cfg.channel_mults, resolutions)
                     if r in cfg.attention_resolutions]
    if cfg.mid_attention:
        attn_channels.append(cfg.base_channels * cfg.channel_mults[-1])
    for ch in attn_channels:
        if ch % cfg.head_dim:
            raise ValueError(f"unet.head_dim = {cfg.head_dim} does not divide the attention channel count {ch}")
    if cfg.in_channels <= 0 or cfg.out_channels < 0:
        raise ValueError(f"unet.in_channels = {cfg.in_channels}, out_channels = {cfg.out_channels}: need > 0, >= 0")


class UNet(nn.Module):
    """Noise-prediction U-Net ``model(x, t, y=None)`` built from a :class:`~elbolab.config.UNetConfig`.

    ``x: (B, in_channels, H, W)`` with ``H = W = image_size``; ``t: (B,)`` long timesteps (1..T) or float
    noise levels; ``y: (B,)`` long labels in ``{-1, 0, ..., num_classes}`` or None (``-1`` and ``num_classes``
    are the null class). Returns ``(B, out_channels or in_channels, H, W)`` in the dtype of the computation
    (float32, or bf16 inside a bf16 autocast region).
    """

    def __init__(self, cfg: UNetConfig) -> None:
        super().__init__()
        cfg = dataclasses.replace(
            cfg,
            time_embedding=coerce(cfg.time_embedding, TimeEmbedding, "unet.time_embedding"),
            time_injection=coerce(cfg.time_injection, TimeInjection, "unet.time_injection"),
            upsampling=coerce(cfg.upsampling, Upsampling, "unet.upsampling"),
        )
        _validate(cfg)
        self.cfg = cfg
        base, groups = cfg.base_channels, cfg.groups
        chans = [base * m for m in cfg.channel_mults]
        emb_dim = 4 * base
        scale_shift = cfg.time_injection == TimeInjection.SCALE_SHIFT
        self.num_classes = cfg.num_classes

        # ---- conditioning: e = MLP(embed(t)) + E_y(y)
        self.time_embed = (SinusoidalEmbedding(base) if cfg.time_embedding == TimeEmbedding.SINUSOIDAL
                           else FourierFeatures(base))
        self.time_mlp = nn.Sequential(nn.Linear(base, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.label_embed = nn.Embedding(cfg.num_classes + 1, emb_dim) if cfg.num_classes > 0 else None

        def res_attn(c_in: int, c_out: int, res: int) -> ResAttnBlock:
            attn = (SelfAttention(c_out, head_dim=cfg.head_dim, groups=groups, fp32=cfg.attention_fp32)
                    if res in cfg.attention_resolutions else None)
            return ResAttnBlock(ResBlock(c_in, c_out, groups=groups, dropout=cfg.dropout, scale_shift=scale_shift),
                                attn)

        # ---- encoder
        self.input_features = (InputFourierFeatures(cfg.fourier_min, cfg.fourier_max + 1)
                               if cfg.input_fourier else None)
        c_in = (self.input_features.out_channels(cfg.in_channels) if self.input_features is not None
                else cfg.in_channels)
        self.conv_in = nn.Conv2d(c_in, base, 3, padding=1)
        self.down = nn.ModuleList()
        skip_chans = [base]
        ch, res = base, cfg.image_size
        blocks = cfg.blocks_per_level()
        for level, c_out in enumerate(chans):
            for _ in range(blocks[level]):
                self.down.append(res_attn(ch, c_out, res))
                ch = c_out
                skip_chans.append(ch)
            if level < len(chans) - 1:
                self.down.append(Downsample(ch))
                skip_chans.append(ch)
                res //= 2

        # ---- middle
        self.mid1 = ResBlock(ch, ch, groups=groups, dropout=cfg.dropout, scale_shift=scale_shift)
        self.mid_attn = (SelfAttention(ch, head_dim=cfg.head_dim, groups=groups, fp32=cfg.attention_fp32)
                         if cfg.mid_attention else None)
        self.mid2 = ResBlock(ch, ch, groups=groups, dropout=cfg.dropout, scale_shift=scale_shift)

        # ---- decoder
        self.up = nn.ModuleList()
        for level, c_out in reversed(list(enumerate(chans))):
            for _ in range(blocks[level] + 1):
                self.up.append(res_attn(ch + skip_chans.pop(), c_out, res))
                ch = c_out
            if level > 0:
                # The transposed conv also maps to the channel count of the level it enters (cheaper at the
                # higher resolution); the nearest+conv upsampler of Ho et al. keeps the channels.
                c_next = chans[level - 1] if cfg.upsampling == Upsampling.TRANSPOSED else ch
                self.up.append(Upsample(ch, cfg.upsampling.value, c_next))
                ch = c_next
                res *= 2

        self.norm_out = nn.GroupNorm(groups, ch)
        self.conv_out = nn.Conv2d(ch, cfg.out_channels or cfg.in_channels, 3, padding=1)

        # ---- one Linear projects SiLU(e) for every ResBlock (in forward order)
        self._cond_sizes = [m.cond_channels for m in self.modules() if isinstance(m, ResBlock)]
        self.cond_proj = nn.Linear(emb_dim, sum(self._cond_sizes))
        logger.debug("UNet: %d parameters", sum(p.numel() for p in self.parameters()))

    # ------------------------------------------------------------------------------------------------
    def label_index(self, y: Tensor | None, batch: int, device: torch.device) -> Tensor:
        """Map labels ``y: (B,)`` (or None) to embedding rows, ``-1`` and ``num_classes`` -> null row."""
        K = self.num_classes
        if y is None:
            return torch.full((batch,), K, dtype=torch.long, device=device)
        if y.shape != (batch,):
            raise ValueError(f"UNet: y must have shape ({batch},), got {tuple(y.shape)}")
        if y.dtype.is_floating_point or y.dtype == torch.bool:
            raise ValueError(f"UNet: y must be an integer tensor of labels, got dtype {y.dtype}")
        if y.numel() and (int(y.min()) < NULL_LABEL or int(y.max()) > K):
            raise ValueError(
                f"UNet: labels y in [{int(y.min())}, {int(y.max())}] out of range; allowed 0..{K - 1}, "
                f"or {NULL_LABEL} / {K} for the null class"
            )
        return torch.where(y == NULL_LABEL, torch.full_like(y, K), y).long()

    def embed(self, t: Tensor, y: Tensor | None = None) -> Tensor:
        """Conditioning vector ``e: (B, 4 * base_channels)`` from ``t: (B,)`` and ``y: (B,)`` or None."""
        e = self.time_mlp(self.time_embed(t))
        if self.label_embed is not None:
            e = e + self.label_embed(self.label_index(y, t.shape[0], t.device))
        elif y is not None:
            raise ValueError("UNet: got labels y but unet.num_classes = 0 (unconditional); pass y=None")
        return e

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        cfg = self.cfg
        if x.ndim != 4 or x.shape[1] != cfg.in_channels or x.shape[2:] != (cfg.image_size, cfg.image_size):
            raise ValueError(
                f"UNet: x must have shape (B, {cfg.in_channels}, {cfg.image_size}, {cfg.image_size}), "
                f"got {tuple(x.shape)}"
            )
        if t.ndim == 0:
            t = t.expand(x.shape[0])
        if t.shape != (x.shape[0],):
            raise ValueError(f"UNet: t must have shape ({x.shape[0]},), got {tuple(t.shape)}")
        conds = iter(torch.split(self.cond_proj(F.silu(self.embed(t, y))), self._cond_sizes, dim=1))

        h = self.conv_in(x if self.input_features is None else self.input_features(x))
        skips = [h]
        for block in self.down:
            h = block(h, next(conds)) if isinstance(block, ResAttnBlock) else block(h)
            skips.append(h)
        h = self.mid1(h, next(conds))
        if self.mid_attn is not None:
            h = self.mid_attn(h)
        h = self.mid2(h, next(conds))
        for block in self.up:
            if isinstance(block, ResAttnBlock):
                h = block(torch.cat([h, skips.pop()], dim=1), next(conds))
            else:
                h = block(h)
        return self.conv_out(F.silu(self.norm_out(h), inplace=not torch.is_grad_enabled()))


def build_unet(cfg: UNetConfig) -> UNet:
    """Build the U-Net of ``cfg`` (see :class:`UNet`)."""
    return UNet(cfg)
