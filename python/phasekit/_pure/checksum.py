"""CRC-32 checksums of the pure-Python backend: the ``crc32:xxxxxxxx`` form of
:mod:`phasekit.checksum` (shared with the Rust backend), with the backend's errors."""

from __future__ import annotations

import os
from typing import Any

from phasekit.checksum import crc32, format_crc32
from phasekit.checksum import file_checksum as _file_checksum
from phasekit.errors import WriterError


def file_checksum(path: Any) -> str:
    """``"crc32:<8 hex digits>"`` of a file's bytes."""
    try:
        return _file_checksum(path)
    except OSError as exc:
        raise WriterError(f"cannot checksum {os.fspath(path)}: {exc}") from exc


__all__ = ["crc32", "file_checksum", "format_crc32"]
