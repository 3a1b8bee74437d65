"""Masked convolutions of the autoregressive PixelCNN (van den Oord et al. 2016a, "Pixel Recurrent Neural
Networks", Sec. 3.4; the gated vertical / horizontal stacks of van den Oord et al. 2016b, "Conditional Image
Generation with PixelCNN Decoders", Sec. 2.1-2.2).

The image is a sequence in raster order: pixel (r, c) comes after every pixel of rows < r and after the
pixels (r, c') with c' < c; inside a pixel the colour channels come in order 0, 1, ..., C - 1. A feature map
is split into C *channel groups* (feature j belongs to group ``j % C``, so a map of F features, F divisible
by C, has F / C features per group and splitting it in halves keeps every feature's group). Group g at pixel
(r, c) may see group g' of the same pixel only when g' < g (mask A) or g' <= g (mask B); mask A is used on
the input image, mask B on every later feature map, so no output ever sees its own input.

Two kinds of kernel (``k`` odd, ``h = k // 2``):

- :func:`vertical_mask` (``k x k``): rows above the centre; the centre row is masked out (A) or kept whole
  (B). A vertical stack that starts with A therefore only ever sees rows strictly above, including the
  pixels above-right of the current one: no blind spot (Fig. 1 of van den Oord et al. 2016b).
- :func:`horizontal_mask` (``1 x k``): the pixels left of the centre, plus the centre tap through the
  channel-group mask A or B.

Shapes: :class:`MaskedConv2d` maps ``(B, in_channels, H, W) -> (B, out_channels, H, W)`` ("same" padding).
"""

from __future__ import annotations

import enum

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["MaskType", "channel_groups", "centre_mask", "vertical_mask", "horizontal_mask",
           "MaskedConv2d"]


class MaskType(str, enum.Enum):
    """``A``: the first layer (the centre sees strictly earlier channel groups); ``B``: every later layer."""

    A = "A"
    B = "B"


def _mask_type(mask: MaskType | str) -> MaskType:
    try:
        return MaskType(mask)
    except ValueError:
        raise ValueError(f"mask type {mask!r}; choices: {', '.join(m.value for m in MaskType)}") from None


def channel_groups(num_features: int, num_groups: int) -> Tensor:
    """Group ``j % num_groups`` of every feature j: a long tensor of shape ``(num_features,)``."""
    if num_groups < 1 or num_features < 1:
        raise ValueError(f"channel_groups: num_features = {num_features}, num_groups = {num_groups} must be >= 1")
    if num_features % num_groups:
        raise ValueError(f"{num_features} features do not split into {num_groups} channel groups "
                         "(the feature count must be a multiple of the image's channel count)")
    return torch.arange(num_features) % num_groups


def centre_mask(in_channels: int, out_channels: int, num_groups: int, mask: MaskType | str) -> Tensor:
    """``(out_channels, in_channels)`` 0/1 matrix of the centre tap: out group > in group (A) or >= (B)."""
    mask = _mask_type(mask)
    g_in = channel_groups(in_channels, num_groups)
    g_out = channel_groups(out_channels, num_groups)
    allowed = g_out[:, None] > g_in[None, :] if mask is MaskType.A else g_out[:, None] >= g_in[None, :]
    return allowed.float()


def vertical_mask(in_channels: int, out_channels: int, kernel_size: int, mask: MaskType | str) -> Tensor:
    """``(out, in, k, k)`` mask of a vertical-stack kernel: rows above the centre; the centre row all-zero (A)
    or all-one (B: the vertical features there already see only rows above); rows below zero."""
    mask = _mask_type(mask)
    _check_kernel(kernel_size)
    h = kernel_size // 2
    m = torch.zeros(out_channels, in_channels, kernel_size, kernel_size)
    m[:, :, :h, :] = 1.0
    if mask is MaskType.B:
        m[:, :, h, :] = 1.0
    return m


def horizontal_mask(in_channels: int, out_channels: int, kernel_size: int, num_groups: int,
                    mask: MaskType | str) -> Tensor:
    """``(out, in, 1, k)`` mask of a horizontal-stack kernel: the pixels left of the centre, and the centre
    through :func:`centre_mask` (``kernel_size = 1`` gives a masked 1x1 convolution)."""
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size = {kernel_size!r} must be a positive odd integer")
    h = kernel_size // 2
    m = torch.zeros(out_channels, in_channels, 1, kernel_size)
    m[:, :, 0, :h] = 1.0
    m[:, :, 0, h] = centre_mask(in_channels, out_channels, num_groups, mask)
    return m


def _check_kernel(kernel_size: int) -> None:
    if isinstance(kernel_size, bool) or not isinstance(kernel_size, int) or kernel_size < 3 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size = {kernel_size!r} must be an odd integer >= 3")


class MaskedConv2d(nn.Conv2d):
    """A convolution whose weight is multiplied by a fixed 0/1 ``mask`` of its shape before every use.

    ``MaskedConv2d.vertical(...)`` / ``MaskedConv2d.horizontal(...)`` build the two stack kernels above;
    the mask is a non-persistent buffer (rebuilt from the constructor's arguments, not saved), so a state
    dict holds only ``weight`` and ``bias``. Weights at masked taps are zeroed once at construction too.
    """

    def __init__(self, in_channels: int, out_channels: int, mask: Tensor, bias: bool = True) -> None:
        if mask.ndim != 4 or mask.shape[:2] != (out_channels, in_channels):
            raise ValueError(f"MaskedConv2d: mask of shape {tuple(mask.shape)} does not fit "
                             f"({out_channels}, {in_channels}, kH, kW)")
        kh, kw = mask.shape[2:]
        if kh % 2 == 0 or kw % 2 == 0:
            raise ValueError(f"MaskedConv2d: kernel {kh}x{kw} must have odd sides")
        super().__init__(in_channels, out_channels, (kh, kw), padding=(kh // 2, kw // 2), bias=bias)
        self.register_buffer("mask", mask.clone(), persistent=False)
        with torch.no_grad():
            self.weight.mul_(self.mask)

    @classmethod
    def vertical(cls, in_channels: int, out_channels: int, kernel_size: int, mask: MaskType | str) -> "MaskedConv2d":
        return cls(in_channels, out_channels, vertical_mask(in_channels, out_channels, kernel_size, mask))

    @classmethod
    def horizontal(cls, in_channels: int, out_channels: int, kernel_size: int, num_groups: int,
                   mask: MaskType | str) -> "MaskedConv2d":
        return cls(in_channels, out_channels,
                   horizontal_mask(in_channels, out_channels, kernel_size, num_groups, mask))

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(x, self.weight * self.mask.to(self.weight.dtype), self.bias, self.stride, self.padding)
