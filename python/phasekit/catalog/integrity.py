"""Sizes and CRC-32 checksums of stored files and folders, and their verification.

Checksums are :mod:`phasekit.checksum`'s (``crc32:%08x`` of a file's bytes; for a folder,
a partitioned dataset, the CRC-32 over its files in path order); a folder's size is the
sum of its files' sizes.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from phasekit.checksum import path_checksum, tree_files
from phasekit.errors import CorruptDataError
from phasekit.objstore import ObjectRoot
from phasekit.stores.partset import is_part_set_key, object_part_set_problem


def reference_checksum(path: str | os.PathLike[str]) -> str:
    """``crc32:xxxxxxxx`` of a file, or of a folder (:mod:`phasekit.checksum`)."""
    return path_checksum(path)


def reference_size(path: str | os.PathLike[str]) -> int:
    """Bytes of a file, or the sum over the files of a folder."""
    p = Path(path)
    if not p.is_dir():
        return p.stat().st_size
    return sum(full.stat().st_size for _, full in tree_files(p))


def problem_with(
    path: Path,
    size_bytes: int | None,
    checksum: str | None,
    full: bool = True,
    checksum_of: Callable[[Path], str] = reference_checksum,
) -> str | None:
    """Why ``path`` does not hold the recorded bytes (``None`` when it does).

    ``full=False`` checks existence and size only; ``checksum_of`` computes the checksum
    (the same value by any backend: the Rust one is faster for a large file).
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
            actual = checksum_of(path)
        except OSError as exc:
            return f"cannot be read ({exc})"
        if actual != checksum:
            return f"fails its checksum: {actual}, recorded {checksum}"
    return None


def object_problem(
    root: ObjectRoot, rel: str, size_bytes: int | None, checksum: str | None
) -> str | None:
    """Why the object ``rel`` of ``root`` does not hold the recorded bytes (``None`` when it
    does); an object is always read whole, so its checksum is always checked (a part
    set's manifest and every part it lists, :mod:`phasekit.stores.partset`)."""
    if is_part_set_key(rel):
        return object_part_set_problem(root, rel, size_bytes, checksum)
    if not root.exists(rel):
        return "is missing"
    try:
        data = root.read(rel, checksum)
    except CorruptDataError as exc:
        return f"fails its check ({exc})"
    if size_bytes is not None and len(data) != size_bytes:
        return f"has {len(data)} bytes, recorded {size_bytes}"
    return None


def verify_file(
    path: Path,
    size_bytes: int | None,
    checksum: str | None,
    what: str,
    checksum_of: Callable[[Path], str] = reference_checksum,
) -> None:
    """Raise :class:`CorruptDataError` naming ``what`` and ``path`` if the bytes differ."""
    problem = problem_with(path, size_bytes, checksum, checksum_of=checksum_of)
    if problem is not None:
        raise CorruptDataError(f"{what}: file {path} {problem}")
