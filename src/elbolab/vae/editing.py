"""Latent-space utilities of the VAE family: prior samples, reconstructions, traversals, interpolation, editing.

Lecture notes 004: "After training we can edit images: run input data through the encoder, [take the] code z,
modify some dimensions, run modified z through the decoder"; "The diagonal prior on p(z) causes dimensions of z
to be independent -- vary z_1 / vary z_2" (:func:`latent_traversal`, :func:`traversal_grid`).
Interpolation between two images is linear or spherical (slerp, Shoemake 1985; White 2016 recommends slerp for
Gaussian latents because linear midpoints have atypically small norm). Attribute vectors (White 2016,
Larsen et al. 2016): mean code of images with an attribute minus mean code of those without.

Every function works on a :class:`~elbolab.vae.VAE`, :class:`~elbolab.vae.HVAE` (pick the latent ``layer``)
or :class:`~elbolab.vae.Autoencoder`. Codes are posterior means (deterministic). Images come back in [-1, 1].
Shapes: ``x: (B, C, H, W)``; codes ``z: (B, J)``; interpolation weights ``w: (N,)``.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from elbolab.math import slerp
from elbolab.vae.vae import LatentVariableModel

__all__ = [
    "InterpolationKind",
    "lerp",
    "encode_latent",
    "reconstruct",
    "sample_prior",
    "latent_traversal",
    "traversal_grid",
    "interpolate",
    "attribute_vector",
    "edit",
]


class InterpolationKind(str, enum.Enum):
    LINEAR = "linear"
    SLERP = "slerp"  # spherical: constant angular speed between the two codes


def lerp(z0: Tensor, z1: Tensor, weights: Tensor) -> Tensor:
    """``(1 - w) z0 + w z1`` for each weight: ``z0, z1: (..., J)``, ``weights: (N,)`` -> ``(N, ..., J)``."""
    w = weights.to(z0.dtype).view(-1, *([1] * z0.ndim))
    return (1.0 - w) * z0 + w * z1


def encode_latent(model: nn.Module, x: Tensor, layer: int = 1,
                  generator: torch.Generator | None = None) -> Tensor:
    """Code of each image: ``E_q[z_layer | x]`` (VAE/HVAE) or ``f_phi(x)`` (autoencoder), ``(B, J_layer)``.

    HVAE layers above 1 average ancestral samples, which need a ``generator``.
    """
    if not isinstance(model, LatentVariableModel):
        if layer != 1:
            raise ValueError(f"encode_latent: layer = {layer!r}; an autoencoder has one code layer (layer = 1)")
        return model.features(x)
    if not 1 <= layer <= len(model.latent_dims):
        raise ValueError(f"encode_latent: layer = {layer!r} must be in 1..{len(model.latent_dims)}")
    if layer > 1 and generator is None:
        raise ValueError(f"encode_latent: layer {layer} codes are Monte Carlo averages; pass a torch.Generator")
    return model.posterior_means(x, generator)[layer - 1]


@torch.no_grad()
def reconstruct(model: nn.Module, x: Tensor) -> Tensor:
    """Reconstructions from the posterior mean (or the autoencoder's code), ``(B, C, H, W)``."""
    return model(x).clamp(-1.0, 1.0)


@torch.no_grad()
def sample_prior(model: nn.Module, n: int, generator: torch.Generator | None, temperature: float = 1.0) -> Tensor:
    """``n`` images decoded from prior samples (stds scaled by ``temperature``), ``(n, C, H, W)``."""
    if not isinstance(model, LatentVariableModel):
        raise ValueError(f"sample_prior: {type(model).__name__} has no prior (an autoencoder cannot sample)")
    return model.sample(n, generator, temperature)


@torch.no_grad()
def latent_traversal(model: nn.Module, x: Tensor, dims: Sequence[int], values: Tensor, layer: int = 1,
                     generator: torch.Generator | None = None) -> Tensor:
    """Vary one latent dimension at a time around the code of ``x: (1, C, H, W)``.

    Row ``i`` sets dimension ``dims[i]`` to each of ``values: (N,)`` (other dims kept): ``(len(dims), N, C, H, W)``.
    """
    z = encode_latent(model, x, layer, generator)
    if z.shape[0] != 1:
        raise ValueError(f"latent_traversal: expected one image (1, C, H, W), got {tuple(x.shape)}")
    _check_dims(dims, z.shape[-1])
    values = values.to(device=z.device, dtype=z.dtype)
    rows = []
    for d in dims:
        codes = z.repeat(values.numel(), 1)
        codes[:, d] = values
        rows.append(model.decode_latent(codes, layer))
    return torch.stack(rows)


@torch.no_grad()
def traversal_grid(model: nn.Module, z: Tensor, dims: tuple[int, int], values: Tensor, layer: int = 1) -> Tensor:
    """The notes' "vary z_1 / vary z_2" grid around code ``z: (J,)``: entry ``(i, j)`` sets ``z[dims[0]] =
    values[i]`` and ``z[dims[1]] = values[j]``; returns ``(N, N, C, H, W)`` for ``values: (N,)``."""
    if z.ndim != 1:
        raise ValueError(f"traversal_grid: z must be one code of shape (J,), got {tuple(z.shape)}")
    if len(dims) != 2 or dims[0] == dims[1]:
        raise ValueError(f"traversal_grid: dims = {tuple(dims)!r} must be two different latent dimensions")
    _check_dims(dims, z.shape[0])
    values = values.to(device=z.device, dtype=z.dtype)
    n = values.numel()
    codes = z.repeat(n * n, 1)
    codes[:, dims[0]] = values.repeat_interleave(n)
    codes[:, dims[1]] = values.repeat(n)
    images = model.decode_latent(codes, layer)
    return images.view(n, n, *images.shape[1:])


@torch.no_grad()
def interpolate(model: nn.Module, x_a: Tensor, x_b: Tensor, num_steps: int,
                kind: InterpolationKind | str = InterpolationKind.SLERP, layer: int = 1,
                generator: torch.Generator | None = None) -> Tensor:
    """Decode codes on the path from the code of ``x_a`` to that of ``x_b`` (each ``(1, C, H, W)``).

    ``num_steps >= 2`` points including both ends; ``kind`` is ``linear`` or ``slerp``. Returns
    ``(num_steps, C, H, W)``.
    """
    try:
        kind = InterpolationKind(kind)
    except ValueError:
        choices = ", ".join(repr(k.value) for k in InterpolationKind)
        raise ValueError(f"interpolate: kind = {kind!r} is not valid: expected one of {choices}") from None
    if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 2:
        raise ValueError(f"interpolate: num_steps = {num_steps!r} must be an integer >= 2")
    if x_a.shape[0] != 1 or x_b.shape[0] != 1:
        raise ValueError(f"interpolate: expected two single images, got {tuple(x_a.shape)} and {tuple(x_b.shape)}")
    z = encode_latent(model, torch.cat([x_a, x_b]), layer, generator)
    weights = torch.linspace(0.0, 1.0, num_steps, device=z.device, dtype=z.dtype)
    path = (lerp if kind is InterpolationKind.LINEAR else slerp)(z[0], z[1], weights)
    return model.decode_latent(path, layer)


@torch.no_grad()
def attribute_vector(model: nn.Module, x: Tensor, has_attribute: Tensor, layer: int = 1,
                     generator: torch.Generator | None = None) -> Tensor:
    """Mean code of images with the attribute minus mean code of those without, ``(J,)``.

    ``has_attribute: (B,)`` bool (e.g. ``labels == 7``); both groups must be non-empty.
    """
    mask = has_attribute.to(torch.bool)
    if mask.shape != (x.shape[0],):
        raise ValueError(f"attribute_vector: has_attribute must have shape ({x.shape[0]},), got {tuple(mask.shape)}")
    if mask.all() or not mask.any():
        raise ValueError("attribute_vector: need images both with and without the attribute")
    z = encode_latent(model, x, layer, generator)
    return z[mask].mean(0) - z[~mask].mean(0)


@torch.no_grad()
def edit(model: nn.Module, x: Tensor, direction: Tensor, scales: Tensor, layer: int = 1,
         generator: torch.Generator | None = None) -> Tensor:
    """Decode ``z(x) + s * direction`` for each scale ``s`` in ``scales: (N,)``: ``(N, B, C, H, W)``."""
    z = encode_latent(model, x, layer, generator)
    if direction.shape != z.shape[-1:]:
        raise ValueError(f"edit: direction must have shape ({z.shape[-1]},), got {tuple(direction.shape)}")
    scales = scales.to(device=z.device, dtype=z.dtype)
    codes = z[None] + scales.view(-1, 1, 1) * direction.to(z)  # (N, B, J)
    images = model.decode_latent(codes.reshape(-1, z.shape[-1]), layer)
    return images.view(scales.numel(), z.shape[0], *images.shape[1:])


def _check_dims(dims: Sequence[int], size: int) -> None:
    bad = [d for d in dims if not 0 <= d < size]
    if bad or not len(dims):
        raise ValueError(f"latent dims {list(dims)} must be non-empty and in 0..{size - 1}")
