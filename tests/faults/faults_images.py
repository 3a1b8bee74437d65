"""Bad image files for the image-folder fault tests (unit tests and the CLI suite share them)."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image


def save_png(path: Path, arr: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path


def digits(folder: Path, n: int = 8, size: int = 28, rgb: bool = False, seed: int = 0) -> list[Path]:
    """``n`` random size x size PNGs (grey, or RGB)."""
    rng = np.random.default_rng(seed)
    shape = (size, size, 3) if rgb else (size, size)
    return [save_png(folder / f"img{i:02d}.png", rng.integers(0, 256, shape, dtype=np.uint8)) for i in range(n)]


def truncated_jpeg(path: Path, size: int = 28) -> Path:
    """A size x size JPEG cut in half: its header is whole (the size is read), its pixel data is not."""
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (size, size), dtype=np.uint8)).save(
        buf, format="JPEG", quality=90)
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    return path


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def bomb_png(path: Path, side: int = 40000) -> Path:
    """A 200-byte PNG that claims side x side grey pixels (1.6 G for 40000, beyond twice Pillow's guard):
    Pillow refuses it at open, before decoding anything."""
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\0" * 64)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b""))
    return path


def symlink_loop(path: Path) -> Path:
    """``path`` -> ``path.other`` -> ``path``: opening either fails with ELOOP."""
    other = path.with_name("loop-b" + path.suffix)
    path.symlink_to(other.name)
    other.symlink_to(path.name)
    return path


def text_file(path: Path) -> Path:
    path.write_text("these are my notes, not a picture")
    return path


def empty_file(path: Path) -> Path:
    path.write_bytes(b"")
    return path


def broken_link(path: Path) -> Path:
    path.symlink_to("missing.png")
    return path
