"""The gated PixelCNN of van den Oord et al. 2016b ("Conditional Image Generation with PixelCNN Decoders").

One gated layer (their Fig. 2) carries a vertical stack v (the rows above) and a horizontal stack h (the
current row, left of the pixel)::

    v' = tanh(W_vf * v + V_vf e(y)) . sigmoid(W_vg * v + V_vg e(y))                    (eq. 4, vertical)
    h' = h + W_o [tanh(W_hf * h + U_f (W_v * v) + V_hf e(y)) . sigmoid(... g ...)]   (eq. 4, horizontal)

with ``W_v * v`` linked into the horizontal stack by a 1x1 convolution, a residual connection on the
horizontal stack only, and the class embedding e(y) as the conditioning vector h of eq. 4. The first layer
uses mask A on the image, later layers mask B (:mod:`elbolab.nn.masked`); the vertical kernel spans whole
rows above the pixel, so the receptive field has no blind spot. A head ``ReLU, 1x1, ReLU, 1x1`` (masked B)
maps h to the output distribution's parameters.

Shapes: ``forward(x: (B, C, H, W) in [-1, 1], y: (B,) or None) -> params: (B, P, C, H, W)``, where P is the
parameter count of one sub-pixel (L logits, or 3 K mixture parameters) and ``params[:, :, c, r, q]``
depends only on the sub-pixels before (r, q, c) in raster-then-channel order. Any H, W work (the network is
fully convolutional); ``image_size`` is the size it samples by default.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from elbolab.autoregressive.config import PixelCNNConfig, PixelCNNOutput
from elbolab.autoregressive.distributions import CategoricalOutput, LogisticMixtureOutput
from elbolab.nn.masked import MaskedConv2d, MaskType

__all__ = ["GatedLayer", "GatedPixelCNN", "build_pixelcnn"]


def _gate(pre: Tensor) -> Tensor:
    f, g = pre.chunk(2, dim=1)
    return torch.tanh(f) * torch.sigmoid(g)


class GatedLayer(nn.Module):
    """One gated layer: ``(v: (B, in, H, W), h: (B, in, H, W), cond: (B, E) or None) -> (v', h')`` with
    ``channels`` features each. ``mask = "A"`` is the first layer (on the image; no residual)."""

    def __init__(self, in_channels: int, channels: int, kernel_size: int, image_channels: int,
                 mask: MaskType | str, num_classes: int = 0) -> None:
        super().__init__()
        self.mask = MaskType(mask)
        self.v_conv = MaskedConv2d.vertical(in_channels, 2 * channels, kernel_size, self.mask)
        self.h_conv = MaskedConv2d.horizontal(in_channels, 2 * channels, kernel_size, image_channels, self.mask)
        # v only sees rows above the pixel, so its link into h needs no channel mask
        self.link = nn.Conv2d(2 * channels, 2 * channels, 1)
        self.h_out = MaskedConv2d.horizontal(channels, channels, 1, image_channels, MaskType.B)
        self.residual = self.mask is MaskType.B and in_channels == channels
        self.v_cond = nn.Embedding(num_classes, 2 * channels) if num_classes else None
        self.h_cond = nn.Embedding(num_classes, 2 * channels) if num_classes else None

    def forward(self, v: Tensor, h: Tensor, y: Tensor | None) -> tuple[Tensor, Tensor]:
        v_pre = self.v_conv(v)
        h_pre = self.h_conv(h) + self.link(v_pre)
        if self.v_cond is not None and self.h_cond is not None and y is not None:
            v_pre = v_pre + self.v_cond(y)[:, :, None, None].to(v_pre.dtype)
            h_pre = h_pre + self.h_cond(y)[:, :, None, None].to(h_pre.dtype)
        h_new = self.h_out(_gate(h_pre))
        return _gate(v_pre), (h + h_new if self.residual else h_new)


class GatedPixelCNN(nn.Module):
    """A gated PixelCNN over ``(in_channels, image_size, image_size)`` images with ``num_levels`` values per
    sub-pixel; see the module docstring for the shapes. ``output`` is the distribution object
    (:class:`CategoricalOutput` or :class:`LogisticMixtureOutput`) that reads the parameters."""

    def __init__(self, cfg: PixelCNNConfig) -> None:
        super().__init__()
        cfg.validate("pixelcnn")
        self.config = cfg
        self.in_channels, self.image_size = cfg.in_channels, cfg.image_size
        self.num_classes, self.num_levels = cfg.num_classes, cfg.num_levels
        kind = PixelCNNOutput(cfg.output)
        self.output = (CategoricalOutput(cfg.num_levels) if kind is PixelCNNOutput.SOFTMAX
                       else LogisticMixtureOutput(cfg.num_levels, cfg.num_mixtures))
        c, f = cfg.in_channels, cfg.channels
        layers = [GatedLayer(c, f, cfg.kernel_size, c, MaskType.A, cfg.num_classes)]
        layers += [GatedLayer(f, f, cfg.kernel_size, c, MaskType.B, cfg.num_classes) for _ in range(cfg.num_layers)]
        self.layers = nn.ModuleList(layers)
        self.head = nn.Sequential(
            nn.ReLU(), MaskedConv2d.horizontal(f, f, 1, c, MaskType.B),
            nn.ReLU(), MaskedConv2d.horizontal(f, self.output.params_per_channel * c, 1, c, MaskType.B),
        )

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (self.in_channels, self.image_size, self.image_size)

    @property
    def row_reach(self) -> int:
        """How many rows above the output's own the receptive field reaches: ``(num_layers + 1) * (k // 2)``
        (each gated layer adds k // 2 rows to the vertical stack). The output at row r is a function of input
        rows r - row_reach .. r only, and every feature it reads is too, so running the network on that band
        of rows gives row r exactly (what the sampler does)."""
        return len(self.layers) * (self.config.kernel_size // 2)

    def check_inputs(self, x: Tensor, y: Tensor | None) -> Tensor | None:
        """ValueError unless ``x: (B, in_channels, H, W)`` is floating point and y fits the class count."""
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"GatedPixelCNN: x must have shape (B, {self.in_channels}, H, W), got {tuple(x.shape)}")
        if not torch.is_floating_point(x):
            raise ValueError(f"GatedPixelCNN: x must be a floating-point image in [-1, 1], got dtype {x.dtype}")
        if self.num_classes == 0:
            if y is not None:
                raise ValueError("GatedPixelCNN is unconditional (num_classes = 0) but labels y were passed")
            return None
        if y is None:
            raise ValueError(f"GatedPixelCNN is class-conditional ({self.num_classes} classes): pass y of shape "
                             f"({x.shape[0]},)")
        if y.shape != (x.shape[0],):
            raise ValueError(f"GatedPixelCNN: y must have shape ({x.shape[0]},), got {tuple(y.shape)}")
        if bool(((y < 0) | (y >= self.num_classes)).any()):
            raise ValueError(f"GatedPixelCNN: labels must be in 0..{self.num_classes - 1}")
        return y.long()

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        y = self.check_inputs(x, y)
        v = h = x
        for layer in self.layers:
            v, h = layer(v, h, y)
        out = self.head(h)  # (B, P * C, H, W); channel p * C + c belongs to colour group c
        b, _, height, width = out.shape
        return out.view(b, self.output.params_per_channel, self.in_channels, height, width)


def build_pixelcnn(cfg: PixelCNNConfig) -> GatedPixelCNN:
    """The gated PixelCNN of ``cfg`` (validated)."""
    return GatedPixelCNN(cfg)
