"""Architectures only (no losses, no sampling): time embeddings and blocks (layers), the U-Net."""

from elbolab.nn.layers import (
    Downsample,
    FourierFeatures,
    ResBlock,
    SelfAttention,
    SinusoidalEmbedding,
    Upsample,
    adaptive_group_norm,
    sinusoidal_embedding,
)
from elbolab.nn.unet import NULL_LABEL, UNet, build_unet

__all__ = [
    "Downsample",
    "FourierFeatures",
    "NULL_LABEL",
    "ResBlock",
    "SelfAttention",
    "SinusoidalEmbedding",
    "UNet",
    "Upsample",
    "adaptive_group_norm",
    "build_unet",
    "sinusoidal_embedding",
]
