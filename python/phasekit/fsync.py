"""Making renames, creations and deletions durable: the one folder-fsync (and file-fsync)
helper of the stores, the catalog and the pure-Python IPC writer. Imports nothing of
phasekit."""

from __future__ import annotations

import errno
import os
from typing import Union

PathLike = Union[str, "os.PathLike[str]"]

#: errnos of an fsync on a folder that the file system does not support (not a failure).
_UNSUPPORTED = (errno.EINVAL, errno.EBADF)


def fsync_file(path: PathLike, flags: int = os.O_RDONLY) -> None:
    """fsync one file (OSError on failure); ``flags`` are added to the open, e.g.
    ``O_NOFOLLOW``."""
    fd = os.open(path, os.O_RDONLY | flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: PathLike, *, best_effort: bool = False) -> None:
    """fsync a folder so that the renames, creations and deletions in it are durable.

    A folder that cannot be opened (platforms that cannot open folders), or a file
    system that does not fsync them, is not an error. A failing fsync raises OSError
    unless ``best_effort``.
    """
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return  # platforms that cannot open folders
    try:
        os.fsync(fd)
    except OSError as exc:
        if not best_effort and exc.errno not in _UNSUPPORTED:
            raise
    finally:
        os.close(fd)


__all__ = ["fsync_dir", "fsync_file"]
