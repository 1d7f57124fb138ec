"""Checksum verification of served files, done once per version of a file.

A stored file is checked against its recorded size and checksum before its data is
sent. The result is kept while the file's ``(device, inode, size, mtime_ns, ctime_ns)``
stays the same: any write, replacement or ``touch`` changes one of them (``ctime`` cannot
be set back by a user), so the next request checks the file again. Folders (partitioned
datasets) are checked on every request: their own stat does not change with their files.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from pathlib import Path

from phasekit.catalog import Catalog, ItemRow
from phasekit.catalog.integrity import verify_file
from phasekit.errors import CorruptDataError
from phasekit.stores.durable import file_checksum

log = logging.getLogger(__name__)

MAX_REMEMBERED = 4096
"""Verified file versions kept (least recently used dropped first)."""

Signature = tuple[int, int, int, int, int]
_Key = tuple[str, int, str | None]


def signature(path: Path) -> Signature:
    """What changes whenever the file's bytes may have changed."""
    return signature_of(os.stat(path, follow_symlinks=False))


def signature_of(st: os.stat_result) -> Signature:
    """The :func:`signature` of a file from its ``stat``."""
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


class VerifiedFiles:
    """Files found to match their record, each with the signature it had when checked."""

    def __init__(self, limit: int = MAX_REMEMBERED) -> None:
        self._seen: OrderedDict[_Key, Signature] = OrderedDict()
        self._limit = limit
        self._lock = threading.Lock()
        self.checked = 0
        """How many times a file's checksum was computed (tests observe the reuse)."""

    def verify(self, catalog: Catalog, item: ItemRow, path: Path) -> None:
        """CorruptDataError (naming the item) unless ``path`` holds the recorded bytes;
        the checksum of a file is computed only when it changed since its last check."""
        if path.is_dir():
            catalog.verify_item(item)
            return
        key = (str(path), item.size_bytes, item.checksum)
        try:
            before = signature(path)
        except OSError as exc:
            raise unreadable(item, path, exc) from None
        with self._lock:
            if self._seen.get(key) == before:
                self._seen.move_to_end(key)
                return
        verify_file(path, item.size_bytes, item.checksum, item.label, checksum_of=_checksum)
        self.checked += 1
        with self._lock:
            self._seen[key] = before  # taken before the check: a write during it is seen
            self._seen.move_to_end(key)
            while len(self._seen) > self._limit:
                self._seen.popitem(last=False)


def unreadable(item: ItemRow | str, path: Path, exc: OSError) -> CorruptDataError:
    """The error of a recorded file that is gone or cannot be opened (``item``: the item
    or its label)."""
    label = item if isinstance(item, str) else item.label
    if isinstance(exc, FileNotFoundError):
        return CorruptDataError(f"{label}: file {path} is missing")
    return CorruptDataError(f"{label}: file {path} cannot be read ({exc.strerror or exc})")


def _checksum(path: Path) -> str:
    return file_checksum(path)  # the backend's (Rust) CRC-32: the same value, faster


__all__ = [
    "MAX_REMEMBERED",
    "Signature",
    "VerifiedFiles",
    "signature",
    "signature_of",
    "unreadable",
]
