"""Sizes and CRC-32 checksums of stored files and folders, and their verification.

A file's checksum is :func:`phasekit._pure.checksum.file_checksum` (``crc32:%08x`` of its
bytes). A folder (a partitioned dataset) has the CRC-32 of, for each regular file in the
order of their relative POSIX paths, the path's UTF-8 bytes, a NUL byte and the file's
bytes; its size is the sum of its files' sizes.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Iterator
from pathlib import Path

from phasekit.errors import CorruptDataError

_CHUNK = 1 << 20


def _tree_files(root: Path) -> Iterator[tuple[str, Path]]:
    found: list[tuple[str, Path]] = []
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        for name in files:
            full = Path(folder) / name
            found.append((full.relative_to(root).as_posix(), full))
    yield from sorted(found)


def reference_checksum(path: str | os.PathLike[str]) -> str:
    """``crc32:xxxxxxxx`` of a file, or of a folder as described in the module docstring."""
    from phasekit._pure.checksum import file_checksum, format_crc32  # imports pyarrow: lazily

    p = Path(path)
    if not p.is_dir():
        return file_checksum(p)
    crc = 0
    for rel, full in _tree_files(p):
        crc = zlib.crc32(rel.encode() + b"\x00", crc)
        with open(full, "rb") as fh:
            while chunk := fh.read(_CHUNK):
                crc = zlib.crc32(chunk, crc)
    return format_crc32(crc)


def reference_size(path: str | os.PathLike[str]) -> int:
    """Bytes of a file, or the sum over the files of a folder."""
    p = Path(path)
    if not p.is_dir():
        return p.stat().st_size
    return sum(full.stat().st_size for _, full in _tree_files(p))


def problem_with(
    path: Path, size_bytes: int | None, checksum: str | None, full: bool = True
) -> str | None:
    """Why ``path`` does not hold the recorded bytes (``None`` when it does).

    ``full=False`` checks existence and size only.
    """
    if not path.exists():
        return "is missing"
    try:
        actual_size = reference_size(path)
    except OSError as exc:
        return f"cannot be read ({exc})"
    if size_bytes is not None and actual_size != size_bytes:
        kind = "truncated" if actual_size < size_bytes else "longer than recorded"
        return f"is {kind}: {actual_size} bytes, recorded {size_bytes}"
    if full and checksum is not None:
        try:
            actual = reference_checksum(path)
        except OSError as exc:
            return f"cannot be read ({exc})"
        if actual != checksum:
            return f"fails its checksum: {actual}, recorded {checksum}"
    return None


def verify_file(path: Path, size_bytes: int | None, checksum: str | None, what: str) -> None:
    """Raise :class:`CorruptDataError` naming ``what`` and ``path`` if the bytes differ."""
    problem = problem_with(path, size_bytes, checksum)
    if problem is not None:
        raise CorruptDataError(f"{what}: file {path} {problem}")
