"""Hands freed memory back to the operating system after large frees, so a process that
spills stays near its budget: the C heap's (glibc's ``malloc_trim``; nothing elsewhere)
and pyarrow's default memory pool's (its allocator, mimalloc by default, keeps the pages
of freed buffers for reuse: 200 MB of freed 600 kB buffers stay resident until asked).

Spilling frees many medium-sized blocks (equity curves, result records) in
least-recently-used order; both allocators keep such free space, and a long sweep's
resident size creeps above what it holds. The hybrid store counts the bytes it spills
and releases once every :data:`TRIM_AFTER_BYTES`; a phase with a memory budget also
releases after each block it stores (:mod:`phasekit.workflow.blocktables`).
"""

from __future__ import annotations

import ctypes
import functools
import logging
from collections.abc import Callable
from typing import Optional

import pyarrow as pa

log = logging.getLogger(__name__)

TRIM_AFTER_BYTES = 16 << 20
"""Bytes spilled (freed from memory) between two trims."""


@functools.cache
def _malloc_trim() -> Optional[Callable[[int], int]]:
    """glibc's ``malloc_trim`` of this process's C library, or None without one."""
    try:
        fn = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_size_t]
    fn.restype = ctypes.c_int
    return fn  # type: ignore[no-any-return]


def available() -> bool:
    """Whether this process's C library can trim (glibc)."""
    return _malloc_trim() is not None


def release() -> None:
    """Hand the free space of the C heap and of pyarrow's default memory pool back to the
    operating system (microseconds when there is little to hand back)."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
    pa.default_memory_pool().release_unused()


class Trimmer:
    """Counts freed bytes and releases free memory (:func:`release`) once every
    ``after_bytes``."""

    __slots__ = ("_after", "_freed", "trims")

    def __init__(self, after_bytes: int = TRIM_AFTER_BYTES) -> None:
        self._after = after_bytes
        self._freed = 0
        self.trims = 0
        """How many times free memory was released."""

    def freed(self, nbytes: int) -> None:
        """``nbytes`` left memory; trim when enough have since the last trim."""
        self._freed += nbytes
        if self._freed < self._after:
            return
        self._freed = 0
        release()
        self.trims += 1


__all__ = ["TRIM_AFTER_BYTES", "Trimmer", "available", "release"]
