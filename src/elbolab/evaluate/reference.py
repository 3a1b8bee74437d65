"""Features of real data, cached per dataset, split, image count and feature network.

Computing the features of 60,000 training images takes a while on a CPU, so they are computed once and cached
in ``<cache>/reference/`` (``<cache>`` = ``$ELBOLAB_CACHE``, else ``$XDG_CACHE_HOME/elbolab``, else
``~/.cache/elbolab``, the data layer's cache root). The file name holds the dataset, split, limit and the first
16 hex digits of the feature network's SHA-256, so retrained weights never reuse stale features; the full hash
is stored inside and checked on load. Files are written to a temporary name and renamed (atomic): a crash or
a concurrent writer never leaves a partial file behind.

A reference keeps the float32 features (KID and precision/recall need the vectors), the float32 logits (IS,
classifier confidence) and the float64 mean and covariance (FID), computed from float64 features.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from elbolab.config import DataConfig
from elbolab.io import atomic_write_bytes
from elbolab.data import load_dataset
from elbolab.data.download import cache_root
from elbolab.data.transforms import to_float
from elbolab.evaluate.features import FeatureNetwork, load_feature_network
from elbolab.evaluate.fid import FeatureStats, StatsAccumulator

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1


@dataclass
class ExtractedFeatures:
    """Feature-network outputs for N images: ``features`` (N, D) float32, ``logits`` (N, K) float32 and the
    float64 Gaussian fit ``stats`` (accumulated in float64 batch by batch)."""

    features: np.ndarray
    logits: np.ndarray
    stats: FeatureStats


def _as_images(images: torch.Tensor | np.ndarray) -> torch.Tensor:
    x = torch.as_tensor(np.asarray(images)) if not isinstance(images, torch.Tensor) else images
    if x.dim() != 4:
        raise ValueError(f"images of shape {tuple(x.shape)}: expected (N, C, H, W)")
    return x


def extract_features(network: FeatureNetwork, images: torch.Tensor | np.ndarray, batch_size: int = 500,
                     progress: bool = False, desc: str = "features") -> ExtractedFeatures:
    """Run the feature network over images (N, C, H, W): uint8 levels or float in [-1, 1]."""
    x = _as_images(images)
    if x.shape[0] < 2:
        raise ValueError(f"need at least 2 images for feature statistics, got {x.shape[0]}")
    if batch_size <= 0:
        raise ValueError(f"batch_size = {batch_size!r} must be > 0")
    acc = StatsAccumulator()
    feats, logits = [], []
    for i in tqdm(range(0, x.shape[0], batch_size), desc=desc, disable=not progress, leave=False):
        chunk = x[i : i + batch_size]
        chunk = to_float(chunk) if chunk.dtype == torch.uint8 else chunk
        out = network(chunk, batch_size=batch_size)
        acc.update(out.features)
        feats.append(out.features.float().numpy())
        logits.append(out.logits.float().numpy())
    return ExtractedFeatures(features=np.concatenate(feats), logits=np.concatenate(logits), stats=acc.stats())


@dataclass
class Reference:
    """Cached features of real data: which data (``dataset``, ``split``, ``n``) and which network (``sha256``)."""

    dataset: str
    split: str
    n: int
    sha256: str
    data: ExtractedFeatures


def reference_dir() -> Path:
    return cache_root() / "reference"


def reference_path(dataset: str, split: str, limit: int, sha256: str) -> Path:
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in dataset)
    return reference_dir() / f"{safe}-{split}-n{limit or 'all'}-{sha256[:16]}.npz"


def _save_npz_atomic(path: Path, **arrays: np.ndarray) -> None:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())


def _load_cached(path: Path, sha256: str) -> ExtractedFeatures | None:
    try:
        with np.load(path, allow_pickle=False) as z:
            if int(z["format_version"]) != FORMAT_VERSION or str(z["sha256"]) != sha256:
                return None
            return ExtractedFeatures(features=z["features"], logits=z["logits"],
                                     stats=FeatureStats(mu=z["mu"], sigma=z["sigma"], n=int(z["n"])))
    except (OSError, ValueError, KeyError) as e:  # unreadable or foreign file: recompute and overwrite
        logger.warning("ignoring unreadable reference cache %s (%s)", path, e)
        return None


def load_reference(dataset: str, split: str = "train", *, data_dir: str = "", limit: int = 0,
                   network: FeatureNetwork | None = None, feature_dataset: str | None = None,
                   use_cache: bool = True, batch_size: int = 500, progress: bool = True) -> Reference:
    """Features of the real images of ``dataset``/``split`` (first ``limit`` images, 0 = all), from the cache
    or computed and cached.

    ``network`` defaults to the shipped feature network of ``feature_dataset`` (default: ``dataset``; e.g.
    ``mnist-embedded`` uses the MNIST network).
    """
    if limit < 0:
        raise ValueError(f"limit = {limit!r} must be >= 0 (0 = all images)")
    net = network if network is not None else load_feature_network(feature_dataset or dataset)
    path = reference_path(dataset, split, limit, net.sha256)
    if use_cache and path.exists():
        cached = _load_cached(path, net.sha256)
        if cached is not None:
            logger.info("reference features of %s/%s from %s", dataset, split, path)
            return Reference(dataset=dataset, split=split, n=cached.stats.n, sha256=net.sha256, data=cached)
    data = load_dataset(DataConfig(name=dataset, data_dir=data_dir, split=split, limit=limit))
    images = data.images
    extracted = extract_features(net, images, batch_size=batch_size, progress=progress,
                                 desc=f"features {dataset}/{split}")
    if use_cache:
        _save_npz_atomic(path, format_version=np.array(FORMAT_VERSION), sha256=np.array(net.sha256),
                         dataset=np.array(dataset), split=np.array(split), n=np.array(extracted.stats.n),
                         features=extracted.features, logits=extracted.logits, mu=extracted.stats.mu,
                         sigma=extracted.stats.sigma)
        logger.info("cached reference features of %s/%s in %s", dataset, split, path)
    return Reference(dataset=dataset, split=split, n=extracted.stats.n, sha256=net.sha256, data=extracted)
