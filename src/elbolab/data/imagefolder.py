"""``imagefolder:PATH``: PNG/JPEG files found recursively, with class sub-folders as labels.

Layout: ``PATH/<class>/**/*.png|jpg|jpeg`` gives labels in sorted class-name order; images directly in
``PATH`` (with no class sub-folders) are unlabelled (label -1). Every image is resized so its shorter side
is ``image_size`` (Pillow bicubic, antialiased), centre-cropped to ``image_size x image_size`` and converted
to grey (1 channel) or RGB (3 channels); with ``channels=0`` the result is grey when every file is grey,
else RGB (a grey/RGB mix is logged with an example of each). Transparent images lose their alpha channel.
With ``image_size=0`` a folder whose images all share one size W x H keeps it (S = min(W, H), so square
images are not resampled at all); a folder of mixed sizes is brought to :data:`DEFAULT_IMAGE_SIZE`.

Unreadable files are collected with their paths and a short reason: an empty (0-byte) file, a file with an
image name that is not an image, truncated or corrupt image data, an image larger than Pillow's
decompression-bomb guard (``PIL.Image.MAX_IMAGE_PIXELS``), a symbolic-link loop or a broken link.
``on_error="fail"`` raises one :class:`UnreadableImagesError` (a :class:`DataError`) naming them on one line,
``on_error="skip"`` logs a warning with the count and keeps them in ``ImageDataset.skipped``.

Splits: an image folder is a single split. ``split="test"`` holds out ``holdout`` images chosen by a fixed
permutation (``torch.Generator`` seeded with :data:`HOLDOUT_SEED`), so both splits mix all classes;
``split="train"`` is the rest. ``limit`` keeps the first N of the split before any file is decoded.
"""

from __future__ import annotations

import errno
import logging
import os
import warnings
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from elbolab.data.datasets import ImageDataset
from elbolab.data.errors import DataError, UnreadableImagesError
from elbolab.data.transforms import convert_channels

logger = logging.getLogger(__name__)

EXTENSIONS = (".png", ".jpg", ".jpeg")
DEFAULT_IMAGE_SIZE = 32
HOLDOUT_SEED = 0
ON_ERROR = ("fail", "skip")
_GREY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}
_SHOW_BAD = 10


def find_images(root: str | os.PathLike[str]) -> tuple[list[Path], list[int], tuple[str, ...]]:
    """Image files under ``root`` (sorted), their labels, and the class names (sorted sub-folder names)."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"imagefolder: {str(root)!r} is not a folder; expected imagefolder:PATH with PATH a folder "
                        f"of images ({', '.join(EXTENSIONS)}), optionally in class sub-folders")

    def image_name(p: Path) -> bool:
        # an image name that is a file, or a symbolic link that leads nowhere (a loop, a missing target):
        # the latter are kept so that reading them names them, instead of their being silently left out
        return p.suffix.lower() in EXTENSIONS and (p.is_file() or (p.is_symlink() and not p.exists()))

    def images_under(d: Path) -> list[Path]:
        return sorted(p for p in d.rglob("*") if image_name(p))

    top = sorted(p for p in root.iterdir() if image_name(p))
    classes = [d for d in sorted(root.iterdir()) if d.is_dir() and images_under(d)]
    if classes and top:
        raise DataError(f"imagefolder {root}: {len(top)} image(s) (e.g. {top[0]}) lie directly in the folder next "
                        f"to class sub-folders {[d.name for d in classes[:5]]}; move them into a class sub-folder")
    if not classes:
        if not top:
            raise DataError(f"imagefolder {root}: no image files ({', '.join(EXTENSIONS)}) found")
        return top, [-1] * len(top), ()
    files, labels = [], []
    for k, d in enumerate(classes):
        found = images_under(d)
        files += found
        labels += [k] * len(found)
    return files, labels, tuple(d.name for d in classes)


@contextmanager
def _open(path: Path) -> Iterator[object]:
    """``PIL.Image.open(path)`` with the decompression-bomb warning turned into an error."""
    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with Image.open(path) as im:
            yield im


def _reason(path: Path, e: BaseException) -> str:
    """A short reason why ``path`` could not be read (the exception Pillow or the OS raised)."""
    from PIL import Image, UnidentifiedImageError

    if isinstance(e, OSError) and e.errno == errno.ELOOP:
        return "symbolic link loop"
    if isinstance(e, FileNotFoundError) and path.is_symlink():
        return f"broken symbolic link (to {os.readlink(path)})"
    if isinstance(e, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
        return (f"larger than Pillow's decompression-bomb guard of {Image.MAX_IMAGE_PIXELS} pixels ({e}); "
                "shrink it, or raise PIL.Image.MAX_IMAGE_PIXELS if you trust the file")
    if isinstance(e, UnidentifiedImageError):
        try:
            if path.stat().st_size == 0:
                return "empty file (0 bytes)"
        except OSError:
            pass
        return f"not a {'/'.join(x[1:].upper() for x in EXTENSIONS)} image (Pillow cannot identify it)"
    if isinstance(e, OSError) and "truncated" in str(e):
        return f"truncated image data ({e})"
    return f"corrupt or unreadable ({type(e).__name__}: {e})"


def _size(path: Path) -> tuple[int, int]:
    """(W, H) from the file's header, without decoding its pixels."""
    with _open(path) as im:
        return im.size  # type: ignore[attr-defined]


def _decode(path: Path, image_size: int) -> tuple[np.ndarray, bool]:
    """One file -> (H, W) or (H, W, 3) uint8 of size image_size, and whether it is grey. Raises on bad files."""
    from PIL import Image

    with _open(path) as opened:
        im = opened
        im.load()
        grey = im.mode in _GREY_MODES
        if im.mode.startswith("I;16") or im.mode == "I":
            a = np.asarray(im, dtype=np.float64)
            im = Image.fromarray(np.clip(np.round(a / 257.0), 0, 255).astype(np.uint8), mode="L")
        elif im.mode == "P" or im.mode == "PA":
            im = im.convert("RGBA")
        im = im.convert("L" if grey else "RGB")
        w, h = im.size
        if (w, h) != (image_size, image_size):
            scale = image_size / min(w, h)
            new_w, new_h = max(image_size, round(w * scale)), max(image_size, round(h * scale))
            if (new_w, new_h) != (w, h):
                im = im.resize((new_w, new_h), Image.Resampling.BICUBIC)
            left, top = (new_w - image_size) // 2, (new_h - image_size) // 2
            im = im.crop((left, top, left + image_size, top + image_size))
        return np.array(im, dtype=np.uint8), grey


def split_indices(n: int, split: str, holdout: int, name: str) -> torch.Tensor:
    """Indices of ``split`` among ``n`` files: test = ``holdout`` files of a fixed permutation, train = the rest."""
    if split not in ("train", "test"):
        raise ValueError(f"split = {split!r}: expected 'train' or 'test'")
    if holdout == 0:
        if split == "test":
            raise ValueError(f"{name}: split = 'test' with holdout = 0 is empty: set data.holdout > 0")
        return torch.arange(n)
    if holdout >= n:
        raise ValueError(f"{name}: holdout = {holdout} leaves no training images out of {n}; "
                         f"set data.holdout to a value in 0..{n - 1} (0 trains on all)")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(HOLDOUT_SEED))
    chosen = perm[n - holdout:] if split == "test" else perm[: n - holdout]
    return chosen.sort().values


def load_image_folder(root: str | os.PathLike[str], *, image_size: int = 0, channels: int = 0,
                      split: str = "train", holdout: int = 0, limit: int = 0, on_error: str = "fail",
                      name: str | None = None) -> ImageDataset:
    """Load an image folder as (N, C, S, S) uint8 with S = ``image_size`` (0: the images' own size when they all
    share one, else 32); see the module docstring."""
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error = {on_error!r}: expected one of {ON_ERROR}")
    if channels not in (0, 1, 3):
        raise ValueError(f"channels = {channels!r}: expected 0 (auto), 1 (grey) or 3 (RGB)")
    name = name or f"imagefolder:{root}"
    files, labels, class_names = find_images(root)
    idx = split_indices(len(files), split, holdout, name)
    if limit > 0:
        idx = idx[:limit]
    chosen = idx.tolist()
    bad: list[tuple[Path, str]] = []
    if image_size:
        size = image_size
    else:  # the images' own size when they all share one (read from the headers), else the default
        sizes: dict[int, tuple[int, int]] = {}
        for i in chosen:
            try:
                sizes[i] = _size(files[i])
            except Exception as e:  # Pillow raises many types; see _reason
                bad.append((files[i], _reason(files[i], e)))
        chosen = [i for i in chosen if i in sizes]
        distinct = Counter(sizes.values())
        if len(distinct) == 1:
            (w, h), = distinct
            size = min(w, h)
            logger.info("%s: every image is %dx%d: kept at %dx%d (set data.image_size to resize)", name, w, h,
                        size, size)
        else:
            size = DEFAULT_IMAGE_SIZE
            if distinct:
                (w, h), n = distinct.most_common(1)[0]
                logger.info("%s: images of %d sizes (most often %dx%d, %d of %d): resized to %dx%d (set "
                            "data.image_size to choose)", name, len(distinct), w, h, n, len(sizes), size, size)
    arrays: list[np.ndarray] = []
    greys: list[bool] = []
    kept: list[int] = []
    from tqdm.auto import tqdm

    for i in tqdm(chosen, desc=f"reading {Path(root).name}", unit="img", disable=None, leave=False):
        try:
            a, g = _decode(files[i], size)
        except Exception as e:  # Pillow raises many types (OSError, SyntaxError, ValueError, warnings as errors)
            bad.append((files[i], _reason(files[i], e)))
            continue
        arrays.append(a)
        greys.append(g)
        kept.append(i)
    if bad:
        listing = "; ".join(f"{p}: {why}" for p, why in bad[:_SHOW_BAD])
        more = f"; ... and {len(bad) - _SHOW_BAD} more" if len(bad) > _SHOW_BAD else ""
        if on_error == "fail":
            raise UnreadableImagesError(
                f"{name}: {len(bad)} unreadable image file(s): {listing}{more}. Fix: delete or replace them, "
                "or set data.on_error = \"skip\" to skip them", files=tuple(p for p, _ in bad))
        logger.warning("%s: skipped %d unreadable image file(s): %s%s", name, len(bad), listing, more)
    if not arrays:
        raise DataError(f"{name}: no readable images in split {split!r} ({len(bad)} unreadable)")
    c = channels or (1 if all(greys) else 3)
    if not channels and 0 < sum(greys) < len(greys):
        g_example = files[kept[greys.index(True)]]
        c_example = files[kept[greys.index(False)]]
        logger.warning("%s: %d grey and %d colour images (e.g. grey %s, colour %s): all converted to RGB; set "
                       "data.channels = 1 to train on grey, or 3 to silence this", name, sum(greys),
                       len(greys) - sum(greys), g_example, c_example)
    out = torch.empty(len(arrays), c, size, size, dtype=torch.uint8)
    for j, a in enumerate(arrays):
        t = torch.from_numpy(a)
        t = t[None, None] if t.ndim == 2 else t.permute(2, 0, 1)[None]  # (1, C_j, S, S)
        out[j] = convert_channels(t, c)[0]
    y = torch.tensor([labels[i] for i in kept], dtype=torch.long)
    return ImageDataset(out, y, name=name, class_names=class_names, num_classes=len(class_names),
                        skipped=tuple(str(p) for p, _ in bad))
