"""Shared fixtures of the evaluation tests: real MNIST / Fashion-MNIST subsets and their features, and an
independent Fréchet-distance formula to compare against."""

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from elbolab.config import DataConfig
from elbolab.data import load_dataset

SHARED_DATA = Path(os.environ.get("ELBOLAB_SHARED_DATA", Path(__file__).resolve().parents[3] / "shared" / "data"))


def fid_eigvals_formula(mu1, s1, mu2, s2):
    """torchmetrics' formula, independent of ours: Tr sqrt(S1 S2) = sum sqrt(eigvals(S1 S2)) (complex eigenvalues
    of the non-symmetric product, real part), in float64."""
    ev = torch.linalg.eigvals(torch.from_numpy(np.asarray(s1) @ np.asarray(s2)))
    tr = ev.sqrt().real.sum().item()
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * tr)


@pytest.fixture(scope="session")
def shared_data():
    """The folder with the real MNIST / Fashion-MNIST files (``../shared/data`` beside the repository)."""
    return SHARED_DATA


@pytest.fixture(scope="session")
def independent_fid():
    return fid_eigvals_formula


def _load(name: str, split: str, limit: int):
    folder = SHARED_DATA / name
    if not folder.is_dir():
        pytest.skip(f"real {name} files not found in {folder} (set ELBOLAB_SHARED_DATA)")
    ds = load_dataset(DataConfig(name=name, data_dir=str(folder), split=split, limit=limit))
    return ds.images, ds.labels


@pytest.fixture(scope="session")
def mnist_test():
    """First 2000 MNIST test images (uint8 (N, 1, 28, 28)) and labels."""
    return _load("mnist", "test", 2000)


@pytest.fixture(scope="session")
def mnist_train():
    """First 2000 MNIST training images and labels."""
    return _load("mnist", "train", 2000)


@pytest.fixture(scope="session")
def fashion_test():
    """First 1000 Fashion-MNIST test images and labels."""
    return _load("fashion-mnist", "test", 1000)


@pytest.fixture(scope="session")
def mnist_net():
    from elbolab.evaluate import load_feature_network

    return load_feature_network("mnist")


@pytest.fixture(scope="session")
def mnist_features(mnist_net, mnist_test, mnist_train):
    """Features of the MNIST test and train subsets: (test ExtractedFeatures, train ExtractedFeatures)."""
    from elbolab.evaluate import extract_features

    return extract_features(mnist_net, mnist_test[0]), extract_features(mnist_net, mnist_train[0])
