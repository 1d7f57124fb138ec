"""Memory maps of served files, each kept between requests while its file is unchanged.

Sending a file from a fresh map costs the server a page fault per few pages as it is sent
and the unmapping afterwards (about 7 ms of CPU for a 256 MiB answer here). A map made
for one request is handed to the next while the file's ``(device, inode, size,
mtime_ns, ctime_ns)`` stays the same: any write, replacement or ``touch`` makes a new map.
What is learnt from a version's bytes (where the Arrow stream inside an Arrow file lies)
is kept with its map.

A map unused for :data:`IDLE_SECONDS` is dropped (the server sweeps every few seconds),
and at most :data:`MAX_MAPS` are kept. A file deleted by another process therefore keeps
its disk space until its map is dropped, as an open file would; the server forgets a file
it deletes itself at once. Dropping a map never cuts an answer short: the pieces being sent
hold the map until they are sent.
"""

from __future__ import annotations

import mmap
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from phasekit.serve.verified import Signature, signature_of

IDLE_SECONDS = 30.0
"""Seconds a map is kept without being used."""
MAX_MAPS = 64
"""Maps kept at most (the least recently used dropped first)."""
StreamSpan = tuple[int, int, bool]
"""``(start, end, ends with EOS)`` of the Arrow IPC stream inside a stored Arrow file."""


@dataclass
class MappedFile:
    """One version of a file, mapped read-only: ``view`` is all of its bytes."""

    path: Path
    view: memoryview
    file_id: tuple[int, int]
    """``(device, inode)`` of the file mapped."""
    used: float
    span: StreamSpan | None = None
    span_known: bool = field(default=False)
    """Whether ``span`` has been worked out (None: the file is not an Arrow stream)."""


class ServedMaps:
    """Maps of the files the server sends, by version of the file."""

    def __init__(
        self,
        idle: float = IDLE_SECONDS,
        limit: int = MAX_MAPS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._maps: OrderedDict[Signature, MappedFile] = OrderedDict()
        self.idle = idle
        """Seconds a map is kept unused."""
        self._limit = limit
        self._clock = clock
        self._lock = threading.Lock()
        self.made = 0
        """How many maps were made (tests observe the reuse)."""

    def __len__(self) -> int:
        return len(self._maps)

    def mapped(self, path: Path, fd: int) -> MappedFile:
        """The map of the file open as ``fd`` (opened from ``path``), made when this
        version of it has none."""
        st = os.fstat(fd)
        key = signature_of(st)
        now = self._clock()
        with self._lock:
            self._drop_idle(now)
            found = self._maps.get(key)
            if found is None:
                view = memoryview(mmap.mmap(fd, 0, prot=mmap.PROT_READ) if st.st_size else b"")
                found = MappedFile(path, view, (st.st_dev, st.st_ino), now)
                self._maps[key] = found
                self.made += 1
            found.used = now
            self._maps.move_to_end(key)
            while len(self._maps) > self._limit:
                self._maps.popitem(last=False)
            return found

    def sweep(self) -> int:
        """Drop the maps unused for the idle time; how many were dropped."""
        with self._lock:
            return self._drop_idle(self._clock())

    def forget(self, path: Path) -> None:
        """Drop every map of ``path`` (the server deleted it)."""
        with self._lock:
            for key in [k for k, m in self._maps.items() if m.path == path]:
                del self._maps[key]

    def _drop_idle(self, now: float) -> int:
        stale = [k for k, m in self._maps.items() if now - m.used >= self.idle]
        for key in stale:
            del self._maps[key]
        return len(stale)


__all__ = ["IDLE_SECONDS", "MAX_MAPS", "MappedFile", "ServedMaps", "StreamSpan"]
