"""Inception-Score analogue and classifier confidence, from the shipped classifier's softmax p(y|x).

Inception Score (Salimans et al. 2016), with the dataset's own classifier in place of Inception-v3:

    IS = exp( E_x KL( p(y|x) || p(y) ) ),   p(y) = E_x p(y|x),

computed on ``splits`` disjoint chunks of the samples (as in the original code: 10 splits), reporting the mean
and the standard deviation over chunks. IS is 1 when every image gets the same class distribution (no
diversity, or no confident class) and at most the number of classes K when each image is classified with
certainty and the classes are balanced; real MNIST test images score close to 10.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class ISResult:
    """Inception-Score analogue: ``mean`` and ``std`` over ``splits`` chunks of ``n`` samples."""

    mean: float
    std: float
    splits: int
    n: int


def _probs(probs: torch.Tensor | np.ndarray) -> np.ndarray:
    p = probs.detach().cpu().double().numpy() if isinstance(probs, torch.Tensor) else np.asarray(probs, np.float64)
    if p.ndim != 2:
        raise ValueError(f"class probabilities of shape {p.shape}: expected (N, K)")
    if p.size and (np.any(p < 0) or not np.allclose(p.sum(1), 1.0, atol=1e-6)):
        raise ValueError("class probabilities must be non-negative rows summing to 1 (apply softmax to logits)")
    return p


def inception_score(probs: torch.Tensor | np.ndarray, splits: int = 10) -> ISResult:
    """probs: (N, K) class probabilities p(y|x) -> IS mean and std over ``splits`` disjoint chunks."""
    p = _probs(probs)
    n = p.shape[0]
    if splits < 1 or n < splits:
        raise ValueError(f"splits = {splits} with {n} samples: need 1 <= splits <= N")
    scores = []
    for chunk in np.array_split(p, splits):
        p_y = chunk.mean(axis=0, keepdims=True)
        # KL(p(y|x) || p(y)) with 0 log 0 = 0
        with np.errstate(divide="ignore", invalid="ignore"):
            kl = np.where(chunk > 0, chunk * (np.log(chunk) - np.log(p_y)), 0.0).sum(axis=1)
        scores.append(float(np.exp(kl.mean())))
    return ISResult(mean=float(np.mean(scores)), std=float(np.std(scores)), splits=splits, n=n)


@dataclass
class ConfidenceResult:
    """Fraction of images whose top class has probability >= ``threshold``, and the top-class histogram."""

    fraction: float
    threshold: float
    n: int
    class_counts: list[int]


def confident_fraction(probs: torch.Tensor | np.ndarray, threshold: float = 0.9) -> ConfidenceResult:
    """probs: (N, K) -> fraction of rows with max probability >= threshold (real MNIST test: about 0.98+)."""
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold = {threshold!r} must be in (0, 1]")
    p = _probs(probs)
    if p.shape[0] == 0:
        raise ValueError("need at least one image")
    top = p.max(axis=1)
    counts = np.bincount(p.argmax(axis=1), minlength=p.shape[1])
    return ConfidenceResult(fraction=float((top >= threshold).mean()), threshold=threshold, n=p.shape[0],
                            class_counts=[int(c) for c in counts])
