"""Reader for the IDX format of MNIST and Fashion-MNIST (LeCun et al., http://yann.lecun.com/exdb/mnist/).

An IDX file is a 4-byte magic number ``0x0000TTNN`` (two zero bytes, a type code TT, the number of
dimensions NN), NN big-endian uint32 sizes, then the data, big-endian, row-major. MNIST images are
``0x00000803`` (uint8, 3 dims: count, 28, 28) and labels ``0x00000801`` (uint8, 1 dim: count). Files are
usually gzip-compressed; :func:`read_idx` decompresses when the gzip signature is present.
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from pathlib import Path
from typing import Union

import numpy as np

from elbolab.data.errors import DataError

#: IDX type code -> big-endian numpy dtype
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_SIGNATURE = b"\x1f\x8b"

PathOrBytes = Union[str, os.PathLike, bytes, bytearray, memoryview]


def decompress_if_gzip(buf: bytes, name: str) -> bytes:
    """Return ``buf`` gunzipped when it starts with the gzip signature; a truncated/corrupt stream -> DataError."""
    if not buf.startswith(_GZIP_SIGNATURE):
        return buf
    try:
        return gzip.decompress(buf)
    except (EOFError, OSError, zlib.error) as e:  # EOFError: truncated; BadGzipFile (OSError), zlib.error: corrupt
        raise DataError(
            f"{name}: the gzip stream is truncated or corrupt ({e}); delete the file and download it again"
        ) from None


def read_idx(source: PathOrBytes, *, name: str | None = None) -> np.ndarray:
    """Parse an IDX file (optionally gzip-compressed) into a numpy array of its declared shape and type.

    ``source``: a path or the raw bytes. ``name`` labels the source in error messages (default: the path).
    Returns a native-endian array, e.g. (60000, 28, 28) uint8 for MNIST training images.
    Raises :class:`DataError` for a wrong magic number, an unknown type code, or too few / too many data bytes.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        raw = bytes(source)
        label = name or "<IDX bytes>"
    else:
        path = Path(source)
        label = name or str(path)
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            raise DataError(f"{label}: file not found") from None
    buf = decompress_if_gzip(raw, label)
    if len(buf) < 4:
        raise DataError(f"{label}: {len(buf)} bytes is too short for an IDX header (need at least 4)")
    zero, type_code, ndim = struct.unpack(">HBB", buf[:4])
    magic = int.from_bytes(buf[:4], "big")
    if zero != 0 or type_code not in IDX_DTYPES or ndim == 0:
        raise DataError(
            f"{label}: not an IDX file: magic number 0x{magic:08x}; expected 0x0000TTNN with type code TT in "
            f"{{{', '.join(f'0x{t:02x}' for t in IDX_DTYPES)}}} and NN >= 1 dimensions "
            "(MNIST images 0x00000803, labels 0x00000801)"
        )
    header = 4 + 4 * ndim
    if len(buf) < header:
        raise DataError(f"{label}: truncated IDX header: {ndim} dimensions need {header} bytes, file has {len(buf)}")
    dims = struct.unpack(f">{ndim}I", buf[4:header])
    dtype = IDX_DTYPES[type_code]
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    found = len(buf) - header
    if found < expected:
        raise DataError(
            f"{label}: truncated IDX data: shape {tuple(dims)} of {dtype.name} needs {expected} bytes after the "
            f"header, found {found}; the file is incomplete, delete it and download it again"
        )
    if found > expected:
        raise DataError(
            f"{label}: {found - expected} unexpected trailing bytes after the IDX data of shape {tuple(dims)}"
        )
    arr = np.frombuffer(buf, dtype=dtype, count=expected // dtype.itemsize, offset=header).reshape(dims)
    return arr.astype(dtype.newbyteorder("="), copy=False) if dtype.itemsize > 1 else arr


def write_idx(arr: np.ndarray) -> bytes:
    """Encode ``arr`` as (uncompressed) IDX bytes; the inverse of :func:`read_idx` (used to build test files)."""
    for code, dt in IDX_DTYPES.items():
        if np.dtype(arr.dtype).kind == dt.kind and np.dtype(arr.dtype).itemsize == dt.itemsize:
            header = struct.pack(">HBB", 0, code, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
            return header + np.ascontiguousarray(arr, dtype=dt).tobytes()
    raise ValueError(f"write_idx: dtype {arr.dtype} has no IDX type code; allowed: {[str(d) for d in IDX_DTYPES.values()]}")
