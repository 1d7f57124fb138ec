"""The one definition of phasekit's checksums: ``crc32:%08x`` (lower-case hex) of a file's
bytes, and of a folder (a partitioned dataset): the CRC-32 of, for each regular file in
the order of their relative POSIX paths, the path's UTF-8 bytes, a NUL byte and the file's
bytes.

Both backends write the file form (``phasekit._core`` in Rust, :mod:`phasekit._pure`
from here); the stores and the catalog compute and verify both forms from here. This
module imports nothing of phasekit but ``errors``.
"""

from __future__ import annotations

import json
import os
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Union

from phasekit.errors import InvalidArgument

PathLike = Union[str, "os.PathLike[str]"]
PREFIX = "crc32:"
_CHUNK = 1 << 20


def format_crc32(crc: int) -> str:
    """``crc32:xxxxxxxx`` of a CRC-32 value."""
    return f"{PREFIX}{crc & 0xFFFFFFFF:08x}"


def crc32(data: object, value: int = 0) -> int:
    """zlib's CRC-32 of a bytes-like object, continuing from ``value``."""
    try:
        return zlib.crc32(data, value)  # type: ignore[arg-type]
    except TypeError as exc:
        raise InvalidArgument(
            "crc32 needs a bytes-like object (bytes, bytearray, memoryview, numpy array), "
            f"got {type(data).__name__}"
        ) from exc


def bytes_checksum(data: bytes) -> str:
    """``crc32:xxxxxxxx`` of ``data`` (what a file holding exactly ``data`` checksums to)."""
    return format_crc32(zlib.crc32(data))


def _file_crc(path: PathLike, crc: int = 0) -> int:
    with open(os.fspath(path), "rb") as fh:
        while chunk := fh.read(_CHUNK):
            crc = zlib.crc32(chunk, crc)
    return crc


def file_checksum(path: PathLike) -> str:
    """``crc32:xxxxxxxx`` of a file's bytes (OSError when it cannot be read)."""
    return format_crc32(_file_crc(path))


def tree_files(root: Path) -> Iterator[tuple[str, Path]]:
    """``(relative POSIX path, path)`` of every regular file under ``root``, in path order."""
    found: list[tuple[str, Path]] = []
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        for name in files:
            full = Path(folder) / name
            found.append((full.relative_to(root).as_posix(), full))
    yield from sorted(found)


def tree_checksum(root: PathLike) -> str:
    """The checksum of a folder (see the module docstring)."""
    crc = 0
    for rel, full in tree_files(Path(root)):
        crc = _file_crc(full, zlib.crc32(rel.encode() + b"\x00", crc))
    return format_crc32(crc)


def path_checksum(path: PathLike) -> str:
    """The checksum of a file, or of a folder."""
    return tree_checksum(path) if Path(path).is_dir() else file_checksum(path)


def _gf2_times(matrix: list[int], vector: int) -> int:
    out = 0
    row = 0
    while vector:
        if vector & 1:
            out ^= matrix[row]
        vector >>= 1
        row += 1
    return out


def _gf2_square(matrix: list[int]) -> list[int]:
    return [_gf2_times(matrix, matrix[n]) for n in range(32)]


def crc32_combine(crc1: int, crc2: int, length2: int) -> int:
    """The CRC-32 of ``A + B`` from ``crc32(A)``, ``crc32(B)`` and ``len(B)`` (zlib's
    crc32_combine)."""
    if length2 <= 0:
        return crc1
    odd = [0xEDB88320] + [1 << n for n in range(31)]  # the operator of one zero bit
    even = _gf2_square(odd)  # two zero bits
    odd = _gf2_square(even)  # four
    while True:
        even = _gf2_square(odd)  # one zero byte, then 4, 16, ... (squared each turn)
        if length2 & 1:
            crc1 = _gf2_times(even, crc1)
        length2 >>= 1
        if not length2:
            break
        odd = _gf2_square(even)
        if length2 & 1:
            crc1 = _gf2_times(odd, crc1)
        length2 >>= 1
        if not length2:
            break
    return crc1 ^ crc2


def parse_crc32(checksum: str) -> int:
    """The CRC-32 value of a ``crc32:xxxxxxxx`` checksum; ``ValueError`` for anything else."""
    if not checksum.startswith(PREFIX) or len(checksum) != len(PREFIX) + 8:
        raise ValueError(f"{checksum!r} is not a {PREFIX}xxxxxxxx checksum")
    return int(checksum[len(PREFIX) :], 16)


def tree_checksum_of(files: list[tuple[str, str, int]]) -> str:
    """The checksum :func:`tree_checksum` computes for a folder holding exactly ``files``
    (``(relative POSIX path, crc32:... of the file, its size)``), without reading them:
    each file's CRC-32 joined on with :func:`crc32_combine`."""
    crc = 0
    for rel, checksum, size in sorted(files):
        crc = zlib.crc32(rel.encode() + b"\x00", crc)
        crc = crc32_combine(crc, parse_crc32(checksum), size)
    return format_crc32(crc)


SEAL_KEY = "check"
"""The field of a sealed JSON object (a store manifest) that holds its checksum."""


def _canonical(obj: dict[str, object]) -> bytes:
    body = {k: v for k, v in obj.items() if k != SEAL_KEY}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def seal(obj: dict[str, object]) -> dict[str, object]:
    """``obj`` with ``"check"``: the checksum of its other fields, canonically encoded."""
    return {**obj, SEAL_KEY: bytes_checksum(_canonical(obj))}


def seal_problem(obj: object) -> str | None:
    """Why a parsed sealed object is not what was sealed (None when it is, or when it
    carries no seal: written before seals existed)."""
    if not isinstance(obj, dict):
        return "it is not a JSON object"
    if SEAL_KEY not in obj:
        return None
    try:
        actual = bytes_checksum(_canonical(obj))
    except (TypeError, ValueError) as exc:
        return f"it cannot be checked ({exc})"
    if obj[SEAL_KEY] != actual:
        return f"its fields do not match its check ({obj[SEAL_KEY]!r} recorded, {actual} now)"
    return None


__all__ = [
    "PREFIX",
    "SEAL_KEY",
    "bytes_checksum",
    "crc32",
    "crc32_combine",
    "file_checksum",
    "format_crc32",
    "parse_crc32",
    "path_checksum",
    "seal",
    "seal_problem",
    "tree_checksum",
    "tree_checksum_of",
    "tree_files",
]
