"""Generators and discriminators (critics) of the GAN family: architectures only (no losses, no sampling).

Kept apart from :mod:`elbolab.nn.convnets` (the VAE encoders/decoders) so that each file has one owner; the
stride-2 building blocks are the same ``k=4, s=2, p=1`` convolutions that halve / double the size exactly.

- DCGAN (Radford et al. 2016, "Unsupervised representation learning with deep convolutional GANs"):
  :class:`DCGANGenerator` ``z: (B, latent_dim) -> x: (B, C, S, S)`` in [-1, 1] (tanh output) and
  :class:`DCGANDiscriminator` ``x: (B, C, S, S) -> logits: (B,)``, for 28x28 grey (7 -> 14 -> 28) and 32x32 RGB
  (4 -> 8 -> 16 -> 32). The generator uses ReLU and pixelwise normalisation (or batch normalisation as in
  the paper: its running statistics then do not match EMA weights); the discriminator uses LeakyReLU(0.2)
  and no normalisation, so that every example is scored independently (required by the per-example
  gradient penalty of WGAN-GP, Gulrajani et al. 2017, Sec. 4).
- MLP pair (Goodfellow et al. 2014's fully-connected GAN): :class:`MLPGenerator` ``z -> (B, *data_shape)`` and
  :class:`MLPDiscriminator` ``(B, *data_shape) -> (B,)``, for 2-D / 1-D toy data (``data_shape = (D,)``) or
  flattened images (``data_shape = (C, H, W)``, tanh output).
- Class conditioning (``num_classes > 0``): the generator reads ``[z, e(y)]`` with a learned label
  embedding e; the discriminator is a projection discriminator (Miyato & Koyama 2018, eq. 3):
  ``D(x, y) = psi(phi(x)) + e_D(y) . phi(x)``.

Logits are pre-sigmoid: D(x) = sigmoid(logit) is the probability that x is real (the notes' D), or, for a
Wasserstein critic, the logit is the critic value itself.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from elbolab.gan.config import GANNorm

__all__ = ["DCGANGenerator", "DCGANDiscriminator", "MLPGenerator", "MLPDiscriminator",
           "PixelNorm", "StretchedTanh", "dcgan_stages", "dcgan_init_", "apply_spectral_norm"]


def _check_pos(owner: str, **values: int) -> None:
    for name, v in values.items():
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{owner}: {name} = {v!r} must be a positive integer")


def _check_classes(owner: str, num_classes: int) -> None:
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 0:
        raise ValueError(f"{owner}: num_classes = {num_classes!r} must be an integer >= 0 (0 = unconditional)")


def _check_labels(owner: str, y: Tensor | None, batch: int, num_classes: int) -> Tensor | None:
    """``y: (B,)`` long in 0..num_classes-1 for a conditional network, None for an unconditional one."""
    if num_classes == 0:
        if y is not None:
            raise ValueError(f"{owner} is unconditional (num_classes = 0) but labels y were passed")
        return None
    if y is None:
        raise ValueError(f"{owner} is class-conditional ({num_classes} classes): pass labels y of shape ({batch},)")
    if y.shape != (batch,):
        raise ValueError(f"{owner}: y must have shape ({batch},), got {tuple(y.shape)}")
    if bool(((y < 0) | (y >= num_classes)).any()):
        raise ValueError(f"{owner}: labels must be in 0..{num_classes - 1}, got {sorted(set(y.tolist()))[:10]}")
    return y.long()


def dcgan_stages(image_size: int) -> int:
    """Number of stride-2 stages of the DCGAN pair for ``image_size``: the most (up to 3) that keep an integer
    start size >= 4, i.e. 2 for 28 (7 -> 14 -> 28) and 3 for 32 (4 -> 8 -> 16 -> 32)."""
    _check_pos("dcgan_stages", image_size=image_size)
    stages = 0
    while stages < 3 and image_size % (2 ** (stages + 1)) == 0 and image_size // 2 ** (stages + 1) >= 4:
        stages += 1
    if stages == 0:
        raise ValueError(f"image_size = {image_size}: the DCGAN pair needs a size divisible by 2 with "
                         "size / 2 >= 4 (e.g. 28 or 32)")
    return stages


def dcgan_init_(module: nn.Module) -> None:
    """Initialisation of Radford et al. 2016, Sec. 4: conv/linear weights ~ N(0, 0.02), norm scales ~ N(1, 0.02)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


def apply_spectral_norm(module: nn.Module) -> nn.Module:
    """Spectral normalisation (Miyato et al. 2018) of every ``Conv2d`` and ``Linear`` inside ``module``, in place:
    each weight W is used as W / sigma(W), sigma the largest singular value of W reshaped to (out, in * kH * kW),
    estimated by one power iteration per training-mode forward pass
    (``torch.nn.utils.parametrizations.spectral_norm``). Label embeddings are left as they are."""
    for m in list(module.modules()):
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            torch.nn.utils.parametrizations.spectral_norm(m)
    return module


class PixelNorm(nn.Module):
    """``h / sqrt(mean_c h^2 + eps)`` over channels at every pixel (Karras et al. 2018, eq. in Sec. 4.2)."""

    def __init__(self, eps: float = 1e-8) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, h: Tensor) -> Tensor:
        return h * torch.rsqrt(h.pow(2).mean(dim=1, keepdim=True) + self.eps)


def _norm(kind: GANNorm, channels: int) -> nn.Module:
    if kind is GANNorm.BATCH:
        return nn.BatchNorm2d(channels)
    if kind is GANNorm.PIXEL:
        return PixelNorm()
    return nn.Identity()


def _generator_norm(owner: str, norm: GANNorm | str) -> GANNorm:
    try:
        return GANNorm(norm)
    except ValueError:
        raise ValueError(f"{owner}: norm = {norm!r}; choices: {', '.join(n.value for n in GANNorm)}") from None


class _LabelInput(nn.Module):
    """``[z, e(y)]`` for a conditional generator (``z`` unchanged when unconditional)."""

    def __init__(self, latent_dim: int, num_classes: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.embed = nn.Embedding(num_classes, latent_dim) if num_classes else None
        self.out_features = latent_dim * (2 if num_classes else 1)

    def forward(self, owner: str, z: Tensor, y: Tensor | None) -> Tensor:
        labels = _check_labels(owner, y, z.shape[0], self.num_classes)
        return z if self.embed is None else torch.cat([z, self.embed(labels).to(z.dtype)], dim=1)


class _Projection(nn.Module):
    """``psi(phi) + e(y) . phi`` (projection discriminator, Miyato & Koyama 2018): phi (B, F) -> logits (B,)."""

    def __init__(self, features: int, num_classes: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.linear = nn.Linear(features, 1)
        self.embed = nn.Embedding(num_classes, features) if num_classes else None

    def forward(self, owner: str, phi: Tensor, y: Tensor | None) -> Tensor:
        labels = _check_labels(owner, y, phi.shape[0], self.num_classes)
        out = self.linear(phi).squeeze(1)
        if self.embed is not None:
            out = out + (self.embed(labels).to(phi.dtype) * phi).sum(1)
        return out


# --------------------------------------------------------------------------------------------------
# DCGAN (28x28x1, 32x32x3)
# --------------------------------------------------------------------------------------------------
class StretchedTanh(nn.Module):
    """``x = clamp(stretch * tanh(h), -1, 1)``, elementwise; ``stretch = 1`` is tanh itself.

    A tanh reaches the ends of [-1, 1] only as h -> +-inf, and the last 8-bit level of MNIST's background (x below
    -1 + 1/255) needs h < -3.1, where tanh' is 0.008: a generator then leaves a faint haze of values 1..30 / 255
    over the background, invisible in a grid, that a linear model on pixels separates from real images at
    once (the D* check of lecture notes 003). Stretching by ``stretch > 1`` makes both ends exact at the
    finite |h| = atanh(1 / stretch) (1.52 for 1.1, where the slope before the clip is still 0.2), so the
    point masses of the data at black and white are reachable.
    """

    def __init__(self, stretch: float = 1.0) -> None:
        super().__init__()
        if not (isinstance(stretch, (int, float)) and math.isfinite(stretch) and stretch >= 1.0):
            raise ValueError(f"StretchedTanh: stretch = {stretch!r} must be a finite number >= 1 (1 = plain tanh)")
        self.stretch = float(stretch)

    def forward(self, h: Tensor) -> Tensor:
        x = torch.tanh(h)
        return x if self.stretch == 1.0 else (self.stretch * x).clamp(-1.0, 1.0)

    def extra_repr(self) -> str:
        return f"stretch={self.stretch:g}"


class DCGANGenerator(nn.Module):
    """``z: (B, latent_dim), y: (B,) or None -> x: (B, out_channels, S, S)`` in [-1, 1].

    ``Linear -> (c_0, s, s)``, then per stage ``norm, ReLU, ConvTranspose2d(k=4, s=2, p=1)`` halving the width
    (``c_0 = channels * 2^(stages - 1)``, ..., ``channels``), then ``norm, ReLU, Conv2d(3x3) -> out_channels``
    and tanh (stretched by ``output_stretch``, :class:`StretchedTanh`). ``s = S / 2^stages``
    (:func:`dcgan_stages`).
    """

    def __init__(self, latent_dim: int, out_channels: int, image_size: int, channels: int = 64,
                 num_classes: int = 0, norm: GANNorm | str = GANNorm.PIXEL, output_stretch: float = 1.0) -> None:
        super().__init__()
        _check_pos("DCGANGenerator", latent_dim=latent_dim, out_channels=out_channels, channels=channels)
        _check_classes("DCGANGenerator", num_classes)
        norm = _generator_norm("DCGANGenerator", norm)
        stages = dcgan_stages(image_size)
        self.latent_dim, self.num_classes = latent_dim, num_classes
        self.out_shape = (out_channels, image_size, image_size)
        self.start_size = image_size // 2**stages
        widths = [channels * 2 ** (stages - 1 - i) for i in range(stages)] + [channels]
        self.start_channels = widths[0]
        self.label_input = _LabelInput(latent_dim, num_classes)
        self.project = nn.Linear(self.label_input.out_features, widths[0] * self.start_size**2)
        layers: list[nn.Module] = []
        for a, b in zip(widths[:-1], widths[1:]):
            layers += [_norm(norm, a), nn.ReLU(), nn.ConvTranspose2d(a, b, kernel_size=4, stride=2, padding=1)]
        layers += [_norm(norm, widths[-1]), nn.ReLU(), nn.Conv2d(widths[-1], out_channels, 3, padding=1),
                   StretchedTanh(output_stretch)]
        self.body = nn.Sequential(*layers)
        dcgan_init_(self)

    def forward(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        if z.ndim != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f"DCGANGenerator: z must have shape (B, {self.latent_dim}), got {tuple(z.shape)}")
        h = self.project(self.label_input("DCGANGenerator", z, y))
        return self.body(h.view(z.shape[0], self.start_channels, self.start_size, self.start_size))


class DCGANDiscriminator(nn.Module):
    """``x: (B, in_channels, S, S), y: (B,) or None -> logits: (B,)``.

    Per stage ``Conv2d(k=4, s=2, p=1), LeakyReLU(0.2)`` doubling the width (``channels``, ``2 channels``, ...;
    28 -> 14 -> 7, 32 -> 16 -> 8 -> 4), then flatten to phi and a linear (or projection) head. No
    batch normalisation: every example is scored independently. ``spectral_norm``: every conv and linear layer
    spectrally normalised (:func:`apply_spectral_norm`).
    """

    def __init__(self, in_channels: int, image_size: int, channels: int = 64, num_classes: int = 0,
                 spectral_norm: bool = False) -> None:
        super().__init__()
        _check_pos("DCGANDiscriminator", in_channels=in_channels, channels=channels)
        _check_classes("DCGANDiscriminator", num_classes)
        stages = dcgan_stages(image_size)
        self.in_shape = (in_channels, image_size, image_size)
        self.num_classes = num_classes
        layers: list[nn.Module] = []
        prev = in_channels
        for i in range(stages):
            ch = channels * 2**i
            layers += [nn.Conv2d(prev, ch, kernel_size=4, stride=2, padding=1), nn.LeakyReLU(0.2)]
            prev = ch
        self.features = nn.Sequential(*layers, nn.Flatten())
        self.head = _Projection(prev * (image_size // 2**stages) ** 2, num_classes)
        dcgan_init_(self)
        if spectral_norm:
            apply_spectral_norm(self)

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        if tuple(x.shape[1:]) != self.in_shape:
            raise ValueError(f"DCGANDiscriminator: x must have shape (B, {', '.join(map(str, self.in_shape))}), "
                             f"got {tuple(x.shape)}")
        return self.head("DCGANDiscriminator", self.features(x), y)


# --------------------------------------------------------------------------------------------------
# MLP pair (toy data (B, D), or flattened images)
# --------------------------------------------------------------------------------------------------
def _mlp(widths: Sequence[int], act: nn.Module) -> list[nn.Module]:
    layers: list[nn.Module] = []
    for a, b in zip(widths[:-1], widths[1:]):
        layers += [nn.Linear(a, b), act]
    return layers


class MLPGenerator(nn.Module):
    """``z: (B, latent_dim), y -> x: (B, *data_shape)``: ``depth`` hidden layers of ``hidden`` units (ReLU).

    ``tanh_output``: squash to [-1, 1] (images; stretched by ``output_stretch``, :class:`StretchedTanh`); toy data
    in R^D leave it off.
    """

    def __init__(self, latent_dim: int, data_shape: Sequence[int], hidden: int = 128, depth: int = 2,
                 num_classes: int = 0, tanh_output: bool = False, output_stretch: float = 1.0) -> None:
        super().__init__()
        data_shape = tuple(int(d) for d in data_shape)
        _check_pos("MLPGenerator", latent_dim=latent_dim, hidden=hidden, depth=depth)
        if not data_shape or any(d < 1 for d in data_shape):
            raise ValueError(f"MLPGenerator: data_shape = {list(data_shape)} must be positive sizes, e.g. (2,)")
        _check_classes("MLPGenerator", num_classes)
        self.latent_dim, self.num_classes, self.data_shape = latent_dim, num_classes, data_shape
        self.label_input = _LabelInput(latent_dim, num_classes)
        widths = [self.label_input.out_features] + [hidden] * depth
        self.net = nn.Sequential(*_mlp(widths, nn.ReLU()), nn.Linear(hidden, math.prod(data_shape)),
                                 *([StretchedTanh(output_stretch)] if tanh_output else []))

    def forward(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        if z.ndim != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f"MLPGenerator: z must have shape (B, {self.latent_dim}), got {tuple(z.shape)}")
        return self.net(self.label_input("MLPGenerator", z, y)).view(z.shape[0], *self.data_shape)


class MLPDiscriminator(nn.Module):
    """``x: (B, *data_shape), y -> logits: (B,)``: flatten, ``depth`` hidden layers (LeakyReLU(0.2)), head;
    ``spectral_norm``: every linear layer spectrally normalised (then 1-Lipschitz when unconditional)."""

    def __init__(self, data_shape: Sequence[int], hidden: int = 128, depth: int = 2, num_classes: int = 0,
                 spectral_norm: bool = False) -> None:
        super().__init__()
        data_shape = tuple(int(d) for d in data_shape)
        _check_pos("MLPDiscriminator", hidden=hidden, depth=depth)
        if not data_shape or any(d < 1 for d in data_shape):
            raise ValueError(f"MLPDiscriminator: data_shape = {list(data_shape)} must be positive sizes, e.g. (2,)")
        _check_classes("MLPDiscriminator", num_classes)
        self.data_shape, self.num_classes = data_shape, num_classes
        self.features = nn.Sequential(nn.Flatten(), *_mlp([math.prod(data_shape)] + [hidden] * depth,
                                                          nn.LeakyReLU(0.2)))
        self.head = _Projection(hidden, num_classes)
        if spectral_norm:
            apply_spectral_norm(self)

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        if tuple(x.shape[1:]) != self.data_shape:
            raise ValueError(f"MLPDiscriminator: x must have shape (B, {', '.join(map(str, self.data_shape))}), "
                             f"got {tuple(x.shape)}")
        return self.head("MLPDiscriminator", self.features(x), y)
