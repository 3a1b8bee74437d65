"""Pixel scaling, uniform dequantisation, resizing and channel conversion of image tensors.

Convention of the library: images are float tensors in [-1, 1], shape (B, C, H, W). An 8-bit value
k in {0, ..., 255} maps to ``k / 127.5 - 1`` (:func:`to_float`), so neighbouring values are ``BIN_WIDTH = 2/255``
apart and :func:`to_uint8` (round to the nearest level) inverts :func:`to_float` exactly.

Uniform dequantisation (Theis et al. 2016; Ho et al. 2020, Sec. 3.3 use the matching discretised decoder)
spreads each level k uniformly over its bin ``[to_float(k) - 1/255, to_float(k) + 1/255)``: the same bins as
the discretised Gaussian decoder, so ``to_uint8(dequantize(u8, g)) == u8`` (up to float32 rounding exactly at a
bin edge, about 1 value in 10^5). A density p on the dequantised
values then bounds the discrete likelihood: log P(k) >= E_u[log p(x)] + D log(BIN_WIDTH).
Dequantised values therefore lie in [-1 - 1/255, 1 + 1/255).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

#: distance between neighbouring 8-bit levels in [-1, 1] space (the width of one dequantisation bin)
BIN_WIDTH = 2.0 / 255.0


def _check_uint8(u8: torch.Tensor, what: str) -> None:
    if u8.dtype != torch.uint8:
        raise ValueError(f"{what} expects a torch.uint8 tensor, got dtype {u8.dtype}")


def to_float(u8: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 levels k -> k / 127.5 - 1 in [-1, 1]; any shape (typically (B, C, H, W))."""
    _check_uint8(u8, "to_float")
    return u8.to(dtype) / 127.5 - 1.0


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """Float in [-1, 1] -> nearest 8-bit level (clamped to 0..255); exact inverse of :func:`to_float`."""
    if not torch.is_floating_point(x):
        raise ValueError(f"to_uint8 expects a floating-point tensor in [-1, 1], got dtype {x.dtype}")
    return ((x.detach().float() + 1.0) * 127.5).round().clamp_(0, 255).to(torch.uint8)


def dequantize(u8: torch.Tensor, generator: torch.Generator, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Uniform dequantisation: ``to_float(u8) + (u - 1/2) * BIN_WIDTH`` with u ~ U(0, 1) drawn from ``generator``."""
    _check_uint8(u8, "dequantize")
    if not isinstance(generator, torch.Generator):
        raise ValueError(f"dequantize draws noise: pass a torch.Generator, got {generator!r}")
    u = torch.rand(u8.shape, generator=generator, dtype=dtype, device=u8.device)
    return to_float(u8, dtype) + (u - 0.5) * BIN_WIDTH


def resize_uint8(images: torch.Tensor, size: int) -> torch.Tensor:
    """Resize 8-bit images (N, C, H, W) to (N, C, size, size), antialiased bilinear, rounded back to 8 bit.

    Non-square images are resized so the shorter side is ``size`` and then centre-cropped.
    """
    _check_uint8(images, "resize_uint8")
    if images.ndim != 4:
        raise ValueError(f"resize_uint8 expects (N, C, H, W), got shape {tuple(images.shape)}")
    if size <= 0:
        raise ValueError(f"image size must be > 0, got {size}")
    n, c, h, w = images.shape
    if (h, w) == (size, size):
        return images
    scale = size / min(h, w)
    new_h, new_w = max(size, round(h * scale)), max(size, round(w * scale))
    out = torch.empty(n, c, size, size, dtype=torch.uint8)
    top, left = (new_h - size) // 2, (new_w - size) // 2
    for start in range(0, n, 4096):  # chunks bound the float copy's memory
        x = images[start:start + 4096].float()
        y = F.interpolate(x, size=(new_h, new_w), mode="bilinear", antialias=True, align_corners=False)
        out[start:start + 4096] = y[:, :, top:top + size, left:left + size].round().clamp(0, 255).to(torch.uint8)
    return out


# ITU-R 601-2 luma, the transform Pillow uses for RGB -> "L"
_LUMA = (0.299, 0.587, 0.114)


def convert_channels(images: torch.Tensor, channels: int) -> torch.Tensor:
    """Grey <-> RGB for (N, C, H, W) images, C in {1, 3}: grey is repeated; RGB -> grey by ITU-R 601-2 luma."""
    if channels not in (1, 3):
        raise ValueError(f"channels = {channels!r}: expected 1 (grey) or 3 (RGB)")
    c = images.shape[1]
    if c not in (1, 3):
        raise ValueError(f"convert_channels expects 1 or 3 input channels, got shape {tuple(images.shape)}")
    if c == channels:
        return images
    if channels == 3:
        return images.expand(-1, 3, -1, -1).contiguous()
    w = torch.tensor(_LUMA, dtype=torch.float32).view(1, 3, 1, 1)
    grey = (images.float() * w).sum(dim=1, keepdim=True)
    if images.dtype == torch.uint8:
        return grey.round().clamp(0, 255).to(torch.uint8)
    return grey.to(images.dtype)
