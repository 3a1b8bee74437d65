"""The one error type of the data layer.

Every problem with a data file (missing, corrupted, truncated, wrong format, failed download) raises
:class:`DataError`, a ``ValueError`` whose message names the file, what was expected, what was found and
how to fix it, instead of a traceback from deep inside gzip, tarfile, urllib or Pillow.
"""

from __future__ import annotations

from elbolab.errors import ExitCode


class DataError(ValueError):
    """A dataset file is missing, corrupted, truncated or unreadable, or a download failed."""

    exit_code = ExitCode.DATA


class UnreadableImagesError(DataError):
    """Image files of an image folder could not be read; ``files`` lists them (the message names them on one
    line, each with its reason: empty, not an image, truncated, decompression bomb, symbolic-link loop)."""

    def __init__(self, message: str, files: tuple[object, ...] = ()):
        super().__init__(message)
        self.files = tuple(files)
