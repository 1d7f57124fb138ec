"""Append-only segment files for spilled items: an extent index, checksums, compaction.

Items are appended back to back to the active segment file (one ``write`` per buffer,
no file per item); each item is an extent (segment, offset, length, CRC-32; the
backend's ``crc32`` when it has one, else zlib's). A
segment is sealed once it reaches ``segment_bytes``; a sealed segment whose live bytes
fall below ``compact_below`` of its size is compacted: its live extents are copied
to the active segment and the file is removed. Spill files are private scratch (they
are not fsynced: they die with the process). Not thread-safe: the owner locks.
"""

from __future__ import annotations

import logging
import os
import shutil
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, Optional

from phasekit.backend import backend_module
from phasekit.errors import CorruptDataError
from phasekit.paths import make_private_dir

log = logging.getLogger(__name__)

Writer = Callable[[Any], None]
"""Writes one buffer (anything with the buffer protocol) at the end of the item."""


class Extent(NamedTuple):
    """Where one spilled item lives."""

    segment: int
    offset: int
    length: int
    crc: int


@dataclass
class _Segment:
    id: int
    path: Path
    fd: int
    size: int = 0
    live_bytes: int = 0
    live: dict[str, Extent] = field(default_factory=dict)
    sealed: bool = False


def _write_all(fd: int, buf: Any) -> int:
    view = memoryview(buf).cast("B")
    total = len(view)
    done = 0
    while done < total:
        done += os.write(fd, view[done:])
    return total


class SegmentLog:
    """Append-only segment files in ``folder`` (created; removed by :meth:`close`)."""

    def __init__(
        self, folder: Path, segment_bytes: int = 64 << 20, compact_below: float = 0.5
    ) -> None:
        self.folder = folder
        self.segment_bytes = segment_bytes
        self.compact_below = compact_below
        self._segments: dict[int, _Segment] = {}
        self._active: Optional[_Segment] = None
        self._next_id = 0
        self._sparse_ids: set[int] = set()
        self._crc: Callable[[Any, int], int] = getattr(backend_module(), "crc32", zlib.crc32)
        self.compactions = 0
        self.corrupt_extents = 0
        self.bytes_appended = 0
        make_private_dir(folder)

    # ---------------------------------------------------------------- writing

    def _open_segment(self) -> _Segment:
        seg_id = self._next_id
        self._next_id += 1
        path = self.folder / f"segment-{seg_id:06d}.spill"
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC, 0o600)
        seg = _Segment(seg_id, path, fd)
        self._segments[seg_id] = seg
        return seg

    def _writable(self) -> _Segment:
        seg = self._active
        if seg is None or seg.size >= self.segment_bytes:
            if seg is not None:
                self._seal(seg)
            seg = self._active = self._open_segment()
        return seg

    def append_with(self, owner: str, produce: Callable[[Writer], None]) -> Extent:
        """Append one item whose bytes ``produce(write)`` writes; returns its extent.

        On any error the segment is cut back to where the item started and the error
        propagates (the caller keeps the item elsewhere).
        """
        seg = self._writable()
        start = seg.size
        crc = 0
        length = 0

        def write(buf: Any) -> None:
            nonlocal crc, length
            crc = self._crc(buf, crc)
            length += _write_all(seg.fd, buf)

        try:
            produce(write)
        except BaseException:
            self._cut(seg, start, length)
            raise
        seg.size = start + length
        extent = Extent(seg.id, start, length, crc)
        seg.live[owner] = extent
        seg.live_bytes += length
        self.bytes_appended += length
        return extent

    def append(self, owner: str, buffers: Iterable[Any]) -> Extent:
        """Append the concatenation of ``buffers`` as one item."""

        def produce(write: Writer) -> None:
            for buf in buffers:
                write(buf)

        return self.append_with(owner, produce)

    def _cut(self, seg: _Segment, start: int, written: int) -> None:
        """Forget a failed append: truncate back, or seal the segment when that fails."""
        try:
            os.ftruncate(seg.fd, start)
        except OSError as exc:
            log.warning("cannot truncate spill segment %s after a failed write: %s", seg.path, exc)
            seg.size = start + written
            self._seal(seg)

    # ---------------------------------------------------------------- reading

    def read(self, owner: str, extent: Extent) -> bytearray:
        """The bytes of an extent, verified against its CRC-32."""
        seg = self._segments.get(extent.segment)
        if seg is None:
            raise CorruptDataError(
                f"spilled item {owner!r}: its segment {extent.segment} no longer exists"
            )
        buf = bytearray(extent.length)
        view = memoryview(buf)
        done = 0
        try:
            while done < extent.length:
                n = os.preadv(seg.fd, [view[done:]], extent.offset + done)
                if n == 0:
                    break
                done += n
        except OSError as exc:
            raise CorruptDataError(
                f"spilled item {owner!r}: cannot read {seg.path}: {exc}"
            ) from exc
        if done != extent.length or self._crc(buf, 0) != extent.crc:
            raise CorruptDataError(
                f"spilled item {owner!r}: {seg.path} at offset {extent.offset} "
                f"({extent.length} bytes) fails its checksum (truncated or corrupted)"
            )
        return buf

    # ---------------------------------------------------------------- releasing, compaction

    def release(self, owner: str, extent: Extent) -> None:
        """The item no longer needs its extent (reloaded, replaced or deleted)."""
        seg = self._segments.get(extent.segment)
        if seg is None or seg.live.get(owner) != extent:
            return
        del seg.live[owner]
        seg.live_bytes -= extent.length
        self._drop_if_dead(seg)
        if self._sparse(seg):
            self._sparse_ids.add(seg.id)

    def _seal(self, seg: _Segment) -> None:
        seg.sealed = True
        if self._active is seg:
            self._active = None
        self._drop_if_dead(seg)
        if self._sparse(seg):
            self._sparse_ids.add(seg.id)

    def _drop_if_dead(self, seg: _Segment) -> None:
        if seg.sealed and not seg.live:
            self._remove(seg)

    def _remove(self, seg: _Segment) -> None:
        self._sparse_ids.discard(seg.id)
        if self._segments.pop(seg.id, None) is None:
            return
        if self._active is seg:
            self._active = None
        os.close(seg.fd)
        try:
            seg.path.unlink()
        except OSError as exc:
            log.warning("cannot remove spill segment %s: %s", seg.path, exc)

    def needs_compaction(self) -> bool:
        return bool(self._sparse_ids)

    def _sparse(self, seg: _Segment) -> bool:
        return (
            seg.id in self._segments
            and seg.sealed
            and seg.size > 0
            and seg.live_bytes < self.compact_below * seg.size
        )

    def compact(
        self,
        moved: Callable[[str, Extent], None],
        lost: Optional[Callable[[str, CorruptDataError], None]] = None,
    ) -> int:
        """Move the live items of sparse sealed segments to the active one; returns the count.

        ``moved(owner, new_extent)`` is called for each item moved. An extent that fails
        its checksum is skipped: ``lost(owner, error)`` is called, its bytes are released
        and every other item still moves (a corrupt item fails only itself). Any other
        failure (e.g. disk full) stops compaction and propagates; items not yet moved stay
        where they were.
        """
        count = 0
        sparse = [self._segments[i] for i in sorted(self._sparse_ids) if i in self._segments]
        self._sparse_ids.clear()
        for i, seg in enumerate(sparse):
            try:
                for owner, extent in list(seg.live.items()):
                    try:
                        data = self.read(owner, extent)
                    except CorruptDataError as exc:
                        log.warning("compaction skips %s: %s", owner, exc)
                        self.corrupt_extents += 1
                        self.release(owner, extent)
                        if lost is not None:
                            lost(owner, exc)
                        continue
                    new = self.append(owner, [data])
                    moved(owner, new)
                    self.release(owner, extent)
            except BaseException:
                self._sparse_ids.update(s.id for s in sparse[i:] if s.id in self._segments)
                raise
            self._drop_if_dead(seg)
            self.compactions += 1
            count += 1
        return count

    # ---------------------------------------------------------------- state

    def stats(self) -> dict[str, Any]:
        segs = list(self._segments.values())
        return {
            "segments": len(segs),
            "segment_file_bytes": sum(s.size for s in segs),
            "bytes_on_disk": sum(s.live_bytes for s in segs),
            "compactions": self.compactions,
            "corrupt_extents": self.corrupt_extents,
        }

    def close(self) -> None:
        """Close and remove every segment and the folder."""
        for seg in list(self._segments.values()):
            self._remove(seg)
        shutil.rmtree(self.folder, ignore_errors=True)


__all__ = ["Extent", "SegmentLog", "Writer"]
