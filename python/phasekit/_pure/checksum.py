"""CRC-32 file checksums in the ``crc32:xxxxxxxx`` form shared with the Rust backend."""

from __future__ import annotations

import os
import zlib
from typing import Any

from phasekit.errors import WriterError

_CHUNK = 1 << 20


def format_crc32(crc: int) -> str:
    return f"crc32:{crc & 0xFFFFFFFF:08x}"


def file_checksum(path: Any) -> str:
    """``"crc32:<8 hex digits>"`` of a file's bytes."""
    crc = 0
    try:
        with open(os.fspath(path), "rb") as fh:
            while chunk := fh.read(_CHUNK):
                crc = zlib.crc32(chunk, crc)
    except OSError as exc:
        raise WriterError(f"cannot checksum {os.fspath(path)}: {exc}") from exc
    return format_crc32(crc)


def crc32(data: Any, value: int = 0) -> int:
    """zlib's CRC-32 of a bytes-like object, continuing from ``value``."""
    try:
        return zlib.crc32(data, value)
    except TypeError as exc:
        from phasekit.errors import InvalidArgument

        raise InvalidArgument(
            "crc32 needs a bytes-like object (bytes, bytearray, memoryview, numpy array), "
            f"got {type(data).__name__}"
        ) from exc
