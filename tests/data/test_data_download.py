"""Locating, verifying and downloading dataset files: MD5 checks, mirrors, atomic writes, cut-off transfers.

The download path runs against a local ``http.server`` on 127.0.0.1 (ephemeral port, a daemon thread)
serving copies of ../shared/data/mnist (or, without ../shared, the identical MNIST test-set files that
ship in the package).
"""

from __future__ import annotations

import shutil
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch

from elbolab.config import DataConfig
from elbolab.data import (
    MNIST,
    ChecksumStatus,
    DataError,
    check_files,
    dataset_info,
    download_dataset,
    fetch_file,
    load_dataset,
    md5_file,
    search_dirs,
)
from elbolab.data.mnist import split_files

TEST_FILES = split_files("test")
TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def served_dir(tmp_path: Path, mnist_test_files: dict[str, Path]) -> Path:
    """Copies of the two MNIST test-set files (what the server serves)."""
    d = tmp_path / "served"
    d.mkdir()
    for name, src in mnist_test_files.items():
        shutil.copyfile(src, d / name)
    return d


class _Handler(BaseHTTPRequestHandler):
    """``/good/F`` serves F; ``/cut/F`` announces F's full Content-Length, sends half and hangs up;
    ``/corrupt/F`` serves F with one byte flipped; anything else is a 404."""

    root: Path

    def do_GET(self) -> None:  # noqa: N802 (http.server API)
        _, mode, name = self.path.split("/", 2)
        path = self.root / name
        if mode not in ("good", "cut", "corrupt") or not path.is_file():
            self.send_error(404, "File not found")
            return
        data = bytearray(path.read_bytes())
        if mode == "corrupt":
            data[len(data) // 2] ^= 0xFF
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(bytes(data[: len(data) // 2]) if mode == "cut" else bytes(data))
        self.wfile.flush()
        self.close_connection = True

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def server(served_dir: Path):
    handler = type("Handler", (_Handler,), {"root": served_dir})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def _cache_listing(cache: Path) -> list[str]:
    return sorted(str(p.relative_to(cache)) for p in cache.rglob("*") if p.is_file()) if cache.exists() else []


def test_download_into_cache_then_reuse(server, isolated_data_env, served_dir):
    cache = isolated_data_env
    ds = load_dataset(DataConfig(name="mnist", split="test"), mirrors=[f"{server}/good/"])
    assert ds.images.shape == (10000, 1, 28, 28) and ds.class_counts() == TEST_COUNTS
    assert _cache_listing(cache) == [f"mnist/{f}" for f in sorted(TEST_FILES)]  # no temporary files left
    for f in TEST_FILES:
        assert md5_file(cache / "mnist" / f) == md5_file(served_dir / f) == MNIST.file(f).md5
    # second load: found in the cache, no network (the autouse fixture's mirror refuses connections)
    again = load_dataset(DataConfig(name="mnist", split="test"))
    assert torch.equal(again.images, ds.images)


def test_download_dataset_and_info(server, isolated_data_env, monkeypatch, served_dir):
    before = dataset_info("mnist")
    assert before.splits == () and {f.status for f in before.files} == {ChecksumStatus.MISSING}
    # only the test files are served: the train files fail, the test files land in the cache
    with pytest.raises(DataError, match="could not download train-images-idx3-ubyte.gz"):
        download_dataset("mnist", mirrors=[f"{server}/good/"])
    fetched = [fetch_file(MNIST, f, mirrors=[f"{server}/good/"]) for f in TEST_FILES]
    info = dataset_info("mnist")
    assert [s.split for s in info.splits] == ["test"] and info.split("test").count == 10000
    assert "split 'train' unavailable" in info.to_text()
    assert {f.filename: f.status for f in info.files}[TEST_FILES[0]] is ChecksumStatus.OK
    assert all(v.path.parent == isolated_data_env / "mnist" for v in fetched)
    embedded = download_dataset("mnist-embedded")
    assert [v.md5 for v in embedded] == [MNIST.file(f).md5 for f in TEST_FILES]
    with pytest.raises(DataError, match="no files to download"):
        download_dataset("two-moons")


def test_env_mirror_with_name_placeholder(server, isolated_data_env, monkeypatch, served_dir):
    (served_dir / "mnist").mkdir()
    for f in TEST_FILES:
        shutil.copyfile(served_dir / f, served_dir / "mnist" / f)
    monkeypatch.setenv("ELBOLAB_MIRROR", f"{server}/missing/ {server}/good/{{name}}")
    vf = fetch_file(MNIST, TEST_FILES[1])
    assert vf.path == isolated_data_env / "mnist" / TEST_FILES[1] and vf.md5 == MNIST.file(TEST_FILES[1]).md5


def test_cut_off_transfer_leaves_nothing(server, isolated_data_env):
    with pytest.raises(DataError) as err:
        fetch_file(MNIST, TEST_FILES[0], mirrors=[f"{server}/cut/"], timeout=10)
    msg = str(err.value)
    size = MNIST.file(TEST_FILES[0]).size
    assert f"transfer cut off after {size // 2} of {size} bytes" in msg
    assert TEST_FILES[0] in msg and MNIST.file(TEST_FILES[0]).md5 in msg and "Fix:" in msg
    assert _cache_listing(isolated_data_env) == []


def test_corrupt_download_rejected_and_fallback_mirror(server, isolated_data_env):
    name = TEST_FILES[1]
    with pytest.raises(DataError, match=rf"downloaded {MNIST.file(name).size} bytes with MD5 [0-9a-f]{{32}}; "
                                        rf"expected {MNIST.file(name).size} bytes with MD5 {MNIST.file(name).md5}"):
        fetch_file(MNIST, name, mirrors=[f"{server}/corrupt/"])
    assert _cache_listing(isolated_data_env) == []
    # bad mirrors first, then a good one: the good copy ends up in the cache
    vf = fetch_file(MNIST, name, mirrors=[f"{server}/corrupt/", f"{server}/cut/", f"{server}/nothing/",
                                          f"{server}/good/"])
    assert vf.path.is_file() and _cache_listing(isolated_data_env) == [f"mnist/{name}"]


def test_failed_download_is_a_clear_error(isolated_data_env):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(DataError) as err:
        load_dataset(DataConfig(name="mnist", split="test"), mirrors=[f"http://127.0.0.1:{port}/"])
    msg = str(err.value)
    assert "could not download t10k-images-idx3-ubyte.gz" in msg and f"127.0.0.1:{port}" in msg
    assert "nothing was written" in msg and "ELBOLAB_MIRROR" in msg
    assert _cache_listing(isolated_data_env) == []
    with pytest.raises(DataError, match="not found .*load the dataset once"):
        load_dataset(DataConfig(name="mnist", split="test"), download=False)


def test_one_byte_corruption_is_caught(tmp_path, served_dir, isolated_data_env):
    d = tmp_path / "mine"
    shutil.copytree(served_dir, d)
    name = TEST_FILES[0]
    data = bytearray((d / name).read_bytes())
    data[1000] ^= 0x01  # flip one bit of one byte, same size
    (d / name).write_bytes(bytes(data))
    with pytest.raises(DataError) as err:
        load_dataset(DataConfig(name="mnist", split="test", data_dir=str(d)))
    msg = str(err.value)
    actual = md5_file(d / name)
    assert f"checksum mismatch for {d / name}" in msg
    assert f"MD5 {actual}, expected {MNIST.file(name).md5}" in msg and "Fix: delete" in msg
    assert (d / name).read_bytes() == bytes(data)  # the user's file is left alone, nothing downloaded
    assert _cache_listing(isolated_data_env) == []
    status = {f.filename: f.status for f in check_files(MNIST, d, TEST_FILES)}
    assert status == {TEST_FILES[0]: ChecksumStatus.MISMATCH, TEST_FILES[1]: ChecksumStatus.OK}
    info = dataset_info("mnist", data_dir=d)
    assert [s.split for s in info.splits] == [] and "mismatch" in info.to_text()


def test_data_dir_resolution(tmp_path, served_dir, monkeypatch, isolated_data_env):
    # a folder holding the files directly, or a parent with a <name>/ sub-folder; explicit dir wins over env
    parent = tmp_path / "all"
    shutil.copytree(served_dir, parent / "mnist")
    direct = load_dataset(DataConfig(name="mnist", split="test", data_dir=str(parent / "mnist")), download=False)
    nested = load_dataset(DataConfig(name="mnist", split="test", data_dir=str(parent)), download=False)
    assert torch.equal(direct.images, nested.images)
    monkeypatch.setenv("ELBOLAB_DATA", str(parent))
    assert search_dirs("mnist")[:2] == [parent, parent / "mnist"]
    assert search_dirs("mnist", served_dir)[0] == served_dir
    assert len(load_dataset(DataConfig(name="mnist", split="test", limit=5), download=False)) == 5
    assert search_dirs("mnist")[-1] == isolated_data_env / "mnist"
    with pytest.raises(DataError, match="data_dir = .*nowhere.* is not a folder"):
        load_dataset(DataConfig(name="mnist", data_dir=str(tmp_path / "nowhere")))
