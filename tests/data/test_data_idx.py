import gzip

import numpy as np
import pytest

from elbolab.data import DataError, read_idx, write_idx
from elbolab.data.mnist import embedded_path


def test_round_trip_all_types():
    rng = np.random.default_rng(0)
    for arr in (rng.integers(0, 256, (5, 4, 3), dtype=np.uint8), rng.integers(-9, 9, (7,), dtype=np.int16),
                rng.standard_normal((2, 3)).astype(np.float32), rng.standard_normal((4,))):
        back = read_idx(write_idx(arr))
        assert back.shape == arr.shape and back.dtype == arr.dtype.newbyteorder("=")
        np.testing.assert_array_equal(back, arr)
        np.testing.assert_array_equal(read_idx(gzip.compress(write_idx(arr))), arr)


def test_embedded_file_header():
    x = read_idx(embedded_path("t10k-images-idx3-ubyte.gz"))
    assert x.shape == (10000, 28, 28) and x.dtype == np.uint8
    assert abs(x.mean() / 255 - 0.1325) < 5e-4  # value from ../shared/data/README.md


def test_wrong_magic_number(tmp_path):
    good = write_idx(np.zeros((3, 2, 2), np.uint8))
    bad = b"\x01\x02" + good[2:]  # first two bytes must be zero
    with pytest.raises(DataError, match=r"not an IDX file: magic number 0x01020803"):
        read_idx(bad)
    unknown_type = good[:2] + b"\x07" + good[3:]
    with pytest.raises(DataError, match="magic number 0x00000703"):
        read_idx(unknown_type)
    p = tmp_path / "bad.gz"
    p.write_bytes(gzip.compress(bad))
    with pytest.raises(DataError, match=str(p)):
        read_idx(p)


def test_truncated_data_and_stream(tmp_path):
    good = write_idx(np.arange(24, dtype=np.uint8).reshape(2, 3, 4))
    with pytest.raises(DataError, match=r"truncated IDX data: shape \(2, 3, 4\) of uint8 needs 24 bytes.*found 23"):
        read_idx(good[:-1])
    with pytest.raises(DataError, match="truncated IDX header"):
        read_idx(good[:9])
    with pytest.raises(DataError, match="trailing bytes"):
        read_idx(good + b"\x00")
    gz = gzip.compress(good * 50)[:40]  # a gzip stream cut in the middle
    p = tmp_path / "cut.gz"
    p.write_bytes(gz)
    with pytest.raises(DataError, match=r"cut\.gz: the gzip stream is truncated or corrupt"):
        read_idx(p)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        read_idx(tmp_path / "nope.gz")
