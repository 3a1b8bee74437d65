"""Encoders, decoders and critics of the latent-variable families (architectures only: no losses, no sampling).

Sections:
- Fully connected: the lecture notes' VAE example ("x: 28x28 image, flattened to 784-dim vector; z: 20-dim
  vector"), i.e. 784 -> hidden... -> out, and a small vector MLP used between HVAE latent layers.
- Convolutional: stride-2 conv encoder and transposed-conv decoder for 28x28x1 (MNIST) and 32x32x3 (CIFAR-10)
  images ("Encoder: 4 conv layers, Decoder: 4 tconv layers" in the notes' autoencoder slides).

Shapes: images ``x: (B, C, H, W)``; latent or feature vectors ``z: (B, J)``. Encoders map an image to a flat
vector of ``out_features`` (a VAE reads it as ``[mu, log sigma^2]``); decoders map a vector to an image-shaped
tensor with ``out_channels`` channels (a decoder likelihood reads them as its parameters). No batch
normalisation anywhere: the importance-weighted bound needs every example (and every latent sample) to be
processed independently.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from elbolab.nn.config import Activation

__all__ = ["FeedForward", "MLPEncoder", "MLPDecoder", "ConvEncoder", "ConvDecoder"]


def _positive(name: str, values: Sequence[int], allow_empty: bool = True) -> tuple[int, ...]:
    values = tuple(int(v) for v in values)
    if (not allow_empty and not values) or any(v <= 0 for v in values):
        raise ValueError(f"{name} = {list(values)}: need positive integers" + ("" if allow_empty else " (at least one)"))
    return values


# --------------------------------------------------------------------------------------------------
# Fully connected (the notes' 784 -> ... -> 20 VAE)
# --------------------------------------------------------------------------------------------------
_ACTIVATIONS: dict[Activation, type[nn.Module]] = {Activation.RELU: nn.ReLU, Activation.TANH: nn.Tanh}


def activation_module(kind: Activation | str) -> nn.Module:
    """A fresh module of the non-linearity ``kind`` (:class:`~elbolab.nn.config.Activation` or its value);
    ValueError naming the value and the choices otherwise."""
    try:
        return _ACTIVATIONS[Activation(kind)]()
    except ValueError:
        choices = ", ".join(repr(a.value) for a in Activation)
        raise ValueError(f"activation = {kind!r} is not one of {choices}") from None


class FeedForward(nn.Module):
    """Vector MLP ``(B, in_features) -> (B, out_features)``: Linear + ``activation`` (ReLU or tanh) per hidden
    width, then Linear.

    ``hidden_sizes = ()`` gives a single affine map (used for linear-Gaussian models with an exact likelihood).
    """

    def __init__(self, in_features: int, hidden_sizes: Sequence[int], out_features: int,
                 activation: Activation | str = Activation.RELU) -> None:
        super().__init__()
        (in_features, out_features) = _positive("FeedForward in/out features", (in_features, out_features))
        widths = (in_features, *_positive("hidden_sizes", hidden_sizes))
        layers: list[nn.Module] = []
        for a, b in zip(widths[:-1], widths[1:]):
            layers += [nn.Linear(a, b), activation_module(activation)]
        layers.append(nn.Linear(widths[-1], out_features))
        self.net = nn.Sequential(*layers)
        self.in_features, self.out_features = in_features, out_features

    def forward(self, h: Tensor) -> Tensor:
        return self.net(h)


class MLPEncoder(nn.Module):
    """``x: (B, C, H, W) -> (B, out_features)``: flatten to C*H*W (784 for MNIST), then :class:`FeedForward`."""

    def __init__(self, image_shape: Sequence[int], hidden_sizes: Sequence[int], out_features: int,
                 activation: Activation | str = Activation.RELU) -> None:
        super().__init__()
        self.image_shape = _positive("image_shape", image_shape, allow_empty=False)
        if len(self.image_shape) != 3:
            raise ValueError(f"image_shape = {list(self.image_shape)}: expected (C, H, W)")
        c, h, w = self.image_shape
        self.mlp = FeedForward(c * h * w, hidden_sizes, out_features, activation)
        self.out_features = out_features

    def forward(self, x: Tensor) -> Tensor:
        return self.mlp(x.flatten(1))


class MLPDecoder(nn.Module):
    """``z: (B, in_features) -> (B, out_channels, H, W)``: :class:`FeedForward` to out_channels*H*W, reshaped."""

    def __init__(self, in_features: int, hidden_sizes: Sequence[int], out_channels: int, image_size: Sequence[int],
                 activation: Activation | str = Activation.RELU):
        super().__init__()
        self.out_shape = _positive("decoder output shape", (out_channels, *image_size), allow_empty=False)
        if len(self.out_shape) != 3:
            raise ValueError(f"image_size = {list(image_size)}: expected (H, W)")
        c, h, w = self.out_shape
        self.mlp = FeedForward(in_features, hidden_sizes, c * h * w, activation)

    def forward(self, z: Tensor) -> Tensor:
        return self.mlp(z).view(z.shape[0], *self.out_shape)


# --------------------------------------------------------------------------------------------------
# Convolutional (28x28x1 and 32x32x3)
# --------------------------------------------------------------------------------------------------
def _conv_sizes(image_size: int, stages: int) -> int:
    """Spatial size after ``stages`` stride-2 convolutions (k=4, p=1 halves exactly); must stay even."""
    size = image_size
    for _ in range(stages):
        if size % 2:
            raise ValueError(
                f"image_size = {image_size} cannot be halved {stages} times exactly (got odd size {size}); "
                f"use fewer channels stages (28 allows 2, 32 allows up to 5)"
            )
        size //= 2
    return size


class ConvEncoder(nn.Module):
    """``x: (B, C, S, S) -> (B, out_features)``.

    One ``Conv2d(k=4, s=2, p=1) + SiLU`` stage per entry of ``channels`` (28 -> 14 -> 7 for MNIST with
    ``channels=(32, 64)``; 32 -> 16 -> 8 -> 4 for CIFAR-10 with three stages), then flatten,
    ``Linear(hidden) + SiLU``, ``Linear(out_features)``.
    """

    def __init__(self, in_channels: int, image_size: int, channels: Sequence[int], hidden: int, out_features: int):
        super().__init__()
        channels = _positive("channels", channels, allow_empty=False)
        _positive("ConvEncoder in_channels/image_size/hidden/out_features",
                  (in_channels, image_size, hidden, out_features))
        self.final_size = _conv_sizes(image_size, len(channels))
        layers: list[nn.Module] = []
        prev = in_channels
        for ch in channels:
            layers += [nn.Conv2d(prev, ch, kernel_size=4, stride=2, padding=1), nn.SiLU()]
            prev = ch
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(prev * self.final_size**2, hidden), nn.SiLU(), nn.Linear(hidden, out_features)
        )
        self.in_channels, self.image_size, self.out_features = in_channels, image_size, out_features

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


class ConvDecoder(nn.Module):
    """``z: (B, in_features) -> (B, out_channels, S, S)``, the mirror image of :class:`ConvEncoder`.

    ``Linear(hidden) + SiLU``, ``Linear(channels[-1] * s * s) + SiLU`` with ``s = S / 2^len(channels)``, then
    one ``ConvTranspose2d(k=4, s=2, p=1)`` per stage doubling the size (7 -> 14 -> 28), the last one producing
    ``out_channels`` (no activation: the likelihood reads raw parameters).
    """

    def __init__(self, in_features: int, out_channels: int, image_size: int, channels: Sequence[int], hidden: int):
        super().__init__()
        channels = _positive("channels", channels, allow_empty=False)
        _positive("ConvDecoder in_features/out_channels/image_size/hidden",
                  (in_features, out_channels, image_size, hidden))
        self.start_size = _conv_sizes(image_size, len(channels))
        rev = tuple(reversed(channels))
        self.start_channels = rev[0]
        self.head = nn.Sequential(
            nn.Linear(in_features, hidden), nn.SiLU(), nn.Linear(hidden, rev[0] * self.start_size**2), nn.SiLU()
        )
        layers: list[nn.Module] = []
        for a, b in zip(rev, rev[1:]):
            layers += [nn.ConvTranspose2d(a, b, kernel_size=4, stride=2, padding=1), nn.SiLU()]
        layers.append(nn.ConvTranspose2d(rev[-1], out_channels, kernel_size=4, stride=2, padding=1))
        self.body = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        h = self.head(z).view(z.shape[0], self.start_channels, self.start_size, self.start_size)
        return self.body(h)
