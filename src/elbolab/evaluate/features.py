"""The feature/classifier CNN that replaces Inception-v3 for 28x28 grey images.

FID, KID, precision/recall and the Inception-Score analogue need a network that maps an image to a feature
vector (FID's "pool3") and to class probabilities (IS's p(y|x)). Inception-v3 cannot be fetched here and its
ImageNet features are the wrong ones for MNIST-sized digits anyway, so elbolab ships one small CNN per dataset,
trained by :mod:`elbolab.evaluate.train_features`, with its weights in ``evaluate/weights/<dataset>_features``
``.safetensors`` and a JSON card beside them (training data, test accuracy, SHA-256 of the weights).

:func:`load_feature_network` checks the SHA-256 of the weights file against the card before anything is read,
so a corrupted or swapped file is a clear :class:`WeightsHashError`, never silently different metric values.
"""

from __future__ import annotations

import enum
import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

logger = logging.getLogger(__name__)

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"


class FeatureDataset(str, enum.Enum):
    """Datasets that have a shipped feature network."""

    MNIST = "mnist"
    FASHION_MNIST = "fashion-mnist"


# Names the data layer uses for the same images: the embedded MNIST test set is MNIST.
_DATASET_ALIASES = {"mnist-embedded": FeatureDataset.MNIST}


def feature_dataset(name: str | FeatureDataset) -> FeatureDataset:
    """Map a dataset name (``mnist``, ``mnist-embedded``, ``fashion-mnist``) to its feature network."""
    if isinstance(name, FeatureDataset):
        return name
    if name in _DATASET_ALIASES:
        return _DATASET_ALIASES[name]
    try:
        return FeatureDataset(name)
    except ValueError:
        choices = ", ".join([m.value for m in FeatureDataset] + sorted(_DATASET_ALIASES))
        raise ValueError(f"no feature network for dataset {name!r}; choices: {choices}") from None


class WeightsHashError(ValueError):
    """The weights file does not have the SHA-256 recorded in its JSON card."""


@dataclass(frozen=True)
class FeatureNetConfig:
    """Shape of :class:`FeatureNet`; stored in the JSON card so the weights load into the right network."""

    in_channels: int = 1
    widths: tuple[int, ...] = (32, 64, 128)
    feature_dim: int = 128
    num_classes: int = 10
    dropout: float = 0.3


@dataclass
class FeatureOutput:
    """``features``: (B, feature_dim) penultimate activations; ``logits``: (B, num_classes)."""

    features: torch.Tensor
    logits: torch.Tensor


def _conv_bn_relu(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU())


class FeatureNet(nn.Module):
    """Small VGG-style classifier: conv-BN-ReLU stages with 2x2 max pooling, global average pooling, a
    ``feature_dim`` fully connected layer (the features) and a linear classifier behind dropout.

    28x28 input: stage 1 at 28x28 (one conv), stage 2 at 14x14 (two convs), stage 3 at 7x7 (one conv).
    Input ``x``: (B, in_channels, H, W) float in [-1, 1].
    """

    def __init__(self, cfg: FeatureNetConfig = FeatureNetConfig()) -> None:
        super().__init__()
        if len(cfg.widths) != 3:
            raise ValueError(f"widths = {cfg.widths!r}: expected three stage widths, e.g. (32, 64, 128)")
        w1, w2, w3 = cfg.widths
        self.cfg = cfg
        self.body = nn.Sequential(
            _conv_bn_relu(cfg.in_channels, w1),
            nn.MaxPool2d(2),
            _conv_bn_relu(w1, w2),
            _conv_bn_relu(w2, w2),
            nn.MaxPool2d(2),
            _conv_bn_relu(w2, w3),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.feature = nn.Sequential(nn.Linear(w3, cfg.feature_dim, bias=False), nn.BatchNorm1d(cfg.feature_dim),
                                     nn.ReLU())
        self.dropout = nn.Dropout(cfg.dropout)
        self.classifier = nn.Linear(cfg.feature_dim, cfg.num_classes)

    def forward_features(self, x: torch.Tensor) -> FeatureOutput:
        """x: (B, C, H, W) in [-1, 1] -> features (B, feature_dim) and logits (B, num_classes)."""
        if x.dim() != 4 or x.shape[1] != self.cfg.in_channels:
            raise ValueError(
                f"input of shape {tuple(x.shape)}: expected (B, {self.cfg.in_channels}, H, W) images in [-1, 1]"
            )
        h = self.feature(self.body(x))
        return FeatureOutput(features=h, logits=self.classifier(self.dropout(h)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C, H, W) -> logits (B, num_classes)."""
        return self.forward_features(x).logits


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass
class FeatureNetwork:
    """A loaded, verified feature network in eval mode.

    ``dataset``: which data it was trained on; ``sha256``: hash of its weights file (keys the reference
    statistics cache); ``card``: the JSON card (training data, test accuracy, recipe).
    """

    net: FeatureNet
    dataset: FeatureDataset
    sha256: str
    card: dict[str, Any]

    @property
    def feature_dim(self) -> int:
        return self.net.cfg.feature_dim

    @property
    def num_classes(self) -> int:
        return self.net.cfg.num_classes

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, batch_size: int = 500) -> FeatureOutput:
        """x: (N, C, H, W) float in [-1, 1] -> features (N, feature_dim) float64, logits (N, num_classes) float64.

        Runs in batches of ``batch_size`` in eval mode (BatchNorm uses its running statistics, so the result
        does not depend on how the images are batched, up to float rounding).
        """
        if batch_size <= 0:
            raise ValueError(f"batch_size = {batch_size!r} must be > 0")
        if not torch.is_floating_point(x):
            raise ValueError(f"images of dtype {x.dtype}: expected float images in [-1, 1] (use to_float for uint8)")
        self.net.eval()
        feats, logits = [], []
        for i in range(0, x.shape[0], batch_size):
            out = self.net.forward_features(x[i : i + batch_size].float())
            feats.append(out.features.double())
            logits.append(out.logits.double())
        if not feats:
            d = self.feature_dim
            return FeatureOutput(torch.zeros(0, d, dtype=torch.float64),
                                 torch.zeros(0, self.num_classes, dtype=torch.float64))
        return FeatureOutput(torch.cat(feats), torch.cat(logits))


def weights_paths(dataset: str | FeatureDataset, weights_dir: str | os.PathLike[str] | None = None) -> tuple[Path, Path]:
    """(safetensors path, JSON card path) of a dataset's feature network."""
    ds = feature_dataset(dataset)
    root = Path(weights_dir) if weights_dir is not None else WEIGHTS_DIR
    stem = ds.value.replace("-", "_") + "_features"
    return root / f"{stem}.safetensors", root / f"{stem}.json"


def config_from_card(card: dict[str, Any]) -> FeatureNetConfig:
    arch = dict(card.get("architecture", {}))
    if "widths" in arch:
        arch["widths"] = tuple(arch["widths"])
    return FeatureNetConfig(**arch)


_CACHE: dict[tuple[str, str], FeatureNetwork] = {}


def load_feature_network(dataset: str | FeatureDataset, weights_dir: str | os.PathLike[str] | None = None,
                         *, use_cache: bool = True) -> FeatureNetwork:
    """Load the shipped feature network of ``dataset`` after checking its SHA-256 against its JSON card.

    Raises :class:`FileNotFoundError` if the files are missing and :class:`WeightsHashError` if the weights
    file's hash differs from the card's (a corrupted, truncated or swapped file).
    """
    ds = feature_dataset(dataset)
    st_path, card_path = weights_paths(ds, weights_dir)
    if not st_path.exists() or not card_path.exists():
        raise FileNotFoundError(
            f"feature network for {ds.value!r} not found: need {st_path} and {card_path}; train it with "
            f"`python -m elbolab.evaluate.train_features --dataset {ds.value}`"
        )
    card = json.loads(card_path.read_text(encoding="utf-8"))
    actual = sha256_file(st_path)
    key = (str(st_path), actual)
    if use_cache and key in _CACHE:
        return _CACHE[key]
    expected = card.get("sha256")
    if actual != expected:
        raise WeightsHashError(
            f"{st_path}: SHA-256 is {actual} but {card_path.name} records {expected}; the weights file is "
            f"corrupted or does not belong to this card. Reinstall elbolab or retrain with "
            f"`python -m elbolab.evaluate.train_features --dataset {ds.value}`"
        )
    net = FeatureNet(config_from_card(card))
    net.load_state_dict(load_file(str(st_path)))
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    fn = FeatureNetwork(net=net, dataset=ds, sha256=actual, card=card)
    if use_cache:
        _CACHE[key] = fn
    logger.info("loaded %s feature network (sha256 %s, test accuracy %s)", ds.value, actual[:12],
                card.get("test_accuracy"))
    return fn


def as_feature_matrix(features: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Feature vectors as a float64 CPU tensor (N, D); anything else is a ValueError."""
    t = features if isinstance(features, torch.Tensor) else torch.as_tensor(np.asarray(features))
    if t.dim() != 2:
        raise ValueError(f"features of shape {tuple(t.shape)}: expected (N, D)")
    return t.detach().cpu().double()


def logits_to_probs(logits: torch.Tensor) -> torch.Tensor:
    """(N, K) logits -> (N, K) float64 softmax probabilities p(y|x)."""
    return F.softmax(logits.double(), dim=1)
