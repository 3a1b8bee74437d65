"""Architectures only (no losses, no sampling): time embeddings and blocks (layers), the U-Net."""

from elbolab.nn.layers import FourierFeatures, SinusoidalEmbedding, sinusoidal_embedding

__all__ = ["FourierFeatures", "SinusoidalEmbedding", "sinusoidal_embedding"]
