"""Where dataset files live, MD5 verification, and atomic downloads from canonical mirrors.

Resolution of a dataset's folder (for ``mnist``, ``fashion-mnist``, ``cifar10``):

1. the explicit ``data_dir`` (``--data-dir``, ``DataConfig.data_dir``), else ``$ELBOLAB_DATA``;
   either the folder that directly holds the files or one with a ``<name>/`` sub-folder holding them
   (so ``ELBOLAB_DATA=../shared/data`` serves every dataset);
2. the cache ``<cache>/<name>/`` where ``<cache>`` is ``$ELBOLAB_CACHE``, else ``$XDG_CACHE_HOME/elbolab``,
   else ``~/.cache/elbolab``.

Every file found is checked against its canonical MD5; a mismatch is a :class:`DataError` naming the file,
both checksums and the fix (nothing is overwritten). Files found nowhere are downloaded into the cache:
streamed into a temporary file in the cache folder, size and MD5 verified, then renamed into place, so the
cache never holds a partial or corrupt file. Mirror base URLs can be replaced with the ``mirrors`` argument
or ``$ELBOLAB_MIRROR`` (whitespace-separated base URLs; ``{name}`` is replaced by the dataset name).
"""

from __future__ import annotations

import enum
import hashlib
import http.client
import logging
import os
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from tqdm.auto import tqdm

from elbolab.data.errors import DataError

logger = logging.getLogger(__name__)

ENV_DATA = "ELBOLAB_DATA"
ENV_CACHE = "ELBOLAB_CACHE"
ENV_MIRROR = "ELBOLAB_MIRROR"
DEFAULT_TIMEOUT_S = 60.0
_CHUNK = 1 << 20


@dataclass(frozen=True)
class RemoteFile:
    """One canonical file of a dataset: its name, MD5 and size in bytes."""

    filename: str
    md5: str
    size: int


@dataclass(frozen=True)
class RemoteSource:
    """The canonical files of a dataset and the mirrors (base URLs, tried in order) that serve them."""

    name: str
    files: tuple[RemoteFile, ...]
    mirrors: tuple[str, ...]
    hint: str = ""  # extra advice in error messages, e.g. where a file without a mirror can be found

    def file(self, filename: str) -> RemoteFile:
        for f in self.files:
            if f.filename == filename:
                return f
        raise ValueError(f"{self.name} has no file {filename!r}; files: {[f.filename for f in self.files]}")


class ChecksumStatus(str, enum.Enum):
    OK = "ok"
    MISMATCH = "mismatch"
    MISSING = "missing"


@dataclass(frozen=True)
class FileStatus:
    """Checksum status of one dataset file. ``path`` and ``actual_md5`` are "" when the file is missing."""

    filename: str
    path: str
    expected_md5: str
    actual_md5: str
    status: ChecksumStatus


@dataclass(frozen=True)
class VerifiedFile:
    """A dataset file whose MD5 matched the canonical one."""

    path: Path
    md5: str


def md5_file(path: str | os.PathLike[str]) -> str:
    """Hex MD5 of a file, read in 1 MiB chunks."""
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def cache_root() -> Path:
    """``$ELBOLAB_CACHE``, else ``$XDG_CACHE_HOME/elbolab``, else ``~/.cache/elbolab``."""
    if os.environ.get(ENV_CACHE):
        return Path(os.environ[ENV_CACHE]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "elbolab"
    return Path("~/.cache/elbolab").expanduser()


def cache_dir(name: str) -> Path:
    """The cache folder of dataset ``name``: ``cache_root() / name``."""
    return cache_root() / name


def search_dirs(name: str, data_dir: str | os.PathLike[str] | None = None) -> list[Path]:
    """Folders searched for the files of dataset ``name``, in order (see the module docstring).

    An explicit ``data_dir`` that does not exist is an error (a typo would otherwise start a download).
    """
    dirs: list[Path] = []
    user = str(data_dir) if data_dir else os.environ.get(ENV_DATA, "")
    if user:
        root = Path(user).expanduser()
        if not root.is_dir():
            where = "data_dir" if data_dir else f"${ENV_DATA}"
            raise DataError(
                f"{where} = {user!r} is not a folder; point it at a folder holding the {name} files (or at its "
                f"parent with a {name}/ sub-folder), or leave it unset to use the cache {cache_dir(name)}"
            )
        dirs += [root, root / name]
    dirs.append(cache_dir(name))
    return dirs


def _find(filename: str, dirs: Sequence[Path]) -> Path | None:
    for d in dirs:
        p = d / filename
        if p.is_file():
            return p
    return None


def _mismatch_error(source: RemoteSource, f: RemoteFile, path: Path, actual: str) -> DataError:
    size = path.stat().st_size
    url = mirror_bases(source)[0] + f.filename if source.mirrors else ""
    fix = f"Fix: delete {path} and run again to download a fresh copy into {cache_dir(source.name)}"
    if url:
        fix += f", or replace it with the original from {url}"
    return DataError(
        f"{source.name}: checksum mismatch for {path}: MD5 {actual}, expected {f.md5} "
        f"(size {size} bytes, expected {f.size}); the file is corrupted, truncated or a different version. {fix}."
    )


def check_files(source: RemoteSource, data_dir: str | os.PathLike[str] | None = None,
                filenames: Sequence[str] | None = None) -> list[FileStatus]:
    """Checksum status of each file of ``source`` where it would be found; never downloads or raises on a mismatch."""
    dirs = search_dirs(source.name, data_dir)
    out = []
    for f in source.files:
        if filenames is not None and f.filename not in filenames:
            continue
        p = _find(f.filename, dirs)
        if p is None:
            out.append(FileStatus(f.filename, "", f.md5, "", ChecksumStatus.MISSING))
            continue
        actual = md5_file(p)
        status = ChecksumStatus.OK if actual == f.md5 else ChecksumStatus.MISMATCH
        out.append(FileStatus(f.filename, str(p), f.md5, actual, status))
    return out


def mirror_bases(source: RemoteSource, mirrors: Sequence[str] | None = None) -> list[str]:
    """Base URLs to try: ``mirrors`` if given, else ``$ELBOLAB_MIRROR`` if set, else the canonical mirrors."""
    bases: Sequence[str]
    if mirrors:
        bases = mirrors
    elif os.environ.get(ENV_MIRROR, "").strip():
        bases = os.environ[ENV_MIRROR].split()
    else:
        bases = source.mirrors
    return [b.replace("{name}", source.name).rstrip("/") + "/" for b in bases]


def download_file(url: str, dest: str | os.PathLike[str], f: RemoteFile, *,
                  timeout: float = DEFAULT_TIMEOUT_S) -> Path:
    """Download ``url`` to ``dest`` atomically: stream into a temporary file beside ``dest``, check the size
    (Content-Length and ``f.size``) and MD5, then rename. Any failure removes the temporary file and raises
    :class:`DataError` naming the URL, the expected and actual size/MD5."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    try:
        h = hashlib.md5(usedforsecurity=False)
        received = 0
        req = urllib.request.Request(url, headers={"User-Agent": "elbolab (python urllib)"})
        try:
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(req, timeout=timeout) as resp:
                length = resp.headers.get("Content-Length")
                total = int(length) if length and length.isdigit() else f.size
                with tqdm(total=total, unit="B", unit_scale=True, desc=f.filename, disable=None, leave=False) as bar:
                    while chunk := resp.read(_CHUNK):
                        out.write(chunk)
                        h.update(chunk)
                        received += len(chunk)
                        bar.update(len(chunk))
                out.flush()
                os.fsync(out.fileno())
        except http.client.IncompleteRead as e:
            raise DataError(f"{url}: transfer cut off after {received + len(e.partial)} of {f.size} bytes") from None
        except (urllib.error.URLError, http.client.HTTPException, OSError) as e:
            reason = getattr(e, "reason", None) or e
            raise DataError(f"{url}: download failed after {received} bytes: {reason}") from None
        if length and length.isdigit() and received != int(length):
            raise DataError(f"{url}: transfer cut off after {received} of {int(length)} bytes (Content-Length)")
        actual = h.hexdigest()
        if received != f.size or actual != f.md5:
            raise DataError(
                f"{url}: downloaded {received} bytes with MD5 {actual}; expected {f.size} bytes with MD5 {f.md5}"
            )
        os.replace(tmp, dest)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return dest


def fetch_file(source: RemoteSource, filename: str, *, data_dir: str | os.PathLike[str] | None = None,
               download: bool = True, mirrors: Sequence[str] | None = None,
               timeout: float = DEFAULT_TIMEOUT_S) -> VerifiedFile:
    """Locate ``filename`` of ``source`` (see the module docstring), verify its MD5, download it if missing."""
    f = source.file(filename)
    dirs = search_dirs(source.name, data_dir)
    p = _find(filename, dirs)
    if p is not None:
        actual = md5_file(p)
        if actual != f.md5:
            raise _mismatch_error(source, f, p, actual)
        return VerifiedFile(p, actual)
    looked = ", ".join(str(d) for d in dirs)
    dest = cache_dir(source.name) / filename
    if not download:
        raise DataError(
            f"{source.name}: {filename} not found (looked in {looked}); load the dataset once to download it into "
            f"{dest.parent}, or pass --data-dir / set ${ENV_DATA} to a folder that holds it"
            f"{'. ' + source.hint if source.hint else ''}"
        )
    urls = [base + filename for base in mirror_bases(source, mirrors)]
    errors = []
    for url in urls:
        logger.info("downloading %s -> %s", url, dest)
        try:
            download_file(url, dest, f, timeout=timeout)
            return VerifiedFile(dest, f.md5)
        except DataError as e:
            logger.warning("%s", e)
            errors.append(str(e))
    tried = "\n  ".join(errors) if errors else "(no mirror URLs configured)"
    raise DataError(
        f"{source.name}: could not download {filename} (size {f.size} bytes, MD5 {f.md5}); nothing was written "
        f"to {dest.parent}. Tried:\n  {tried}\nFix: check the network or set ${ENV_MIRROR} to a reachable mirror, "
        f"or put the file in {dest.parent} yourself, or pass --data-dir / set ${ENV_DATA} to a folder holding it "
        f"(looked in {looked}).{' ' + source.hint if source.hint else ''}"
    )
