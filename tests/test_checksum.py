from __future__ import annotations

import zlib
from types import ModuleType

import numpy as np
import pytest

from phasekit.errors import InvalidArgument


@pytest.mark.parametrize("size", [0, 1, 1000, 200_000])
def test_crc32_equals_zlib(backend: ModuleType, size: int) -> None:
    data = np.random.default_rng(size).integers(0, 255, size, dtype=np.uint8)
    for buf in (data.tobytes(), bytearray(data.tobytes()), memoryview(data.tobytes()), data):
        assert backend.crc32(buf) == zlib.crc32(data.tobytes())
    half = size // 2
    assert backend.crc32(data[half:], backend.crc32(data[:half])) == zlib.crc32(data.tobytes())


def test_crc32_rejects_non_buffers(backend: ModuleType) -> None:
    with pytest.raises(InvalidArgument, match="bytes-like"):
        backend.crc32("text")


def test_file_checksum(backend: ModuleType, tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "f"
    path.write_bytes(b"123456789")
    assert backend.file_checksum(path) == "crc32:cbf43926"


def test_crc32_of_other_item_formats(backend: ModuleType) -> None:
    import pyarrow as pa

    floats = np.arange(1000, dtype=np.float64)
    assert backend.crc32(floats) == zlib.crc32(floats.tobytes())
    buf = pa.py_buffer(b"abc" * 1000)
    assert backend.crc32(buf) == zlib.crc32(b"abc" * 1000)
