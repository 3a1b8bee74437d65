"""Fixtures of the data tests: an isolated cache with no network, and the location of ../shared/data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def isolated_data_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every data test gets an empty cache, no $ELBOLAB_DATA, and a mirror that refuses connections
    (port 9 on 127.0.0.1), so nothing can reach the network or the user's ~/.cache by accident."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("ELBOLAB_CACHE", str(cache))
    monkeypatch.delenv("ELBOLAB_DATA", raising=False)
    monkeypatch.setenv("ELBOLAB_MIRROR", "http://127.0.0.1:9/")
    return cache


def shared_data_dir() -> Path | None:
    """``$ELBOLAB_SHARED_DATA`` or ``../shared/data`` next to the repository; None when absent."""
    env = os.environ.get("ELBOLAB_SHARED_DATA")
    p = Path(env) if env else REPO.parent / "shared" / "data"
    return p if p.is_dir() else None


@pytest.fixture
def mnist_test_files() -> dict[str, Path]:
    """The two MNIST test-set IDX files: from ../shared/data/mnist when present, else the packaged copies
    (byte-identical, same canonical MD5)."""
    from elbolab.data.mnist import embedded_path, split_files

    shared = shared_data_dir()
    names = split_files("test")
    if shared is not None and all((shared / "mnist" / f).is_file() for f in names):
        return {f: shared / "mnist" / f for f in names}
    return {f: embedded_path(f) for f in names}


@pytest.fixture
def shared_data() -> Path:
    p = shared_data_dir()
    if p is None:
        pytest.skip("../shared/data (or $ELBOLAB_SHARED_DATA) is not available: the real-data tests need it")
    return p


@pytest.fixture
def shared_mnist(shared_data: Path) -> Path:
    p = shared_data / "mnist"
    if not (p / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"{p} does not hold the MNIST IDX files")
    return p
