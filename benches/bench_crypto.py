"""Encryption at rest: an encrypted file store against a plain one, like for like.

Groups (``items`` in extra_info: bytes of the table):

* ``crypto:write``: one 64 MiB Arrow table (8 float64 columns) put into a FileStore in
  the arrow format, plain (``impl=plain``: through the backend's IpcWriter) and
  encrypted (``impl=aes-256-gcm``: encoded in memory, sealed in 1 MiB chunks under a new
  data key, 8 MiB of chunks per call, written by the same atomic protocol); both fsync
  the file and checksum it while writing.
* ``crypto:read``: getting it back (plain: its CRC verified, then memory-mapped;
  encrypted: decrypted from a memory map into one Arrow buffer in one call, each
  chunk's authentication tag verified).

The chunks are sealed and opened by the backend in use (``PHASEKIT_BACKEND``): with the
Rust core, AWS-LC with the GIL released and the chunks spread over the cores; with the
Python backend, the ``cryptography`` package on one core.

The goal (issue 13): encrypted at most 1.3x the plain time in both groups. Each round
checks what it wrote or read. Measured medians are in docs/security.md (Cost).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pyarrow as pa
import pytest

from phasekit.crypt import Encryption, MasterKey, key_id_of
from phasekit.stores import FileStore

ROWS = (64 << 20) // 64  # 8 float64 columns: 64 MiB
ROUNDS = 9
IMPLS = ("plain", "aes-256-gcm")


@pytest.fixture(scope="module")
def table() -> pa.Table:
    rng = np.random.default_rng(7)
    return pa.table({f"c{i}": rng.standard_normal(ROWS) for i in range(8)})


@pytest.fixture
def folder() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="phasekit-bench-crypto-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _encryption(impl: str) -> Optional[Encryption]:
    if impl == "plain":
        return None
    secret = bytes(range(32))
    return Encryption(MasterKey(key_id_of(secret), secret, "bench"))


@pytest.mark.parametrize("impl", IMPLS)
def test_write(benchmark: Any, impl: str, table: pa.Table, folder: Path) -> None:
    benchmark.group = "crypto:write"
    benchmark.extra_info.update(items=table.nbytes, unit="bytes", impl=impl)
    store = FileStore(folder, encryption=_encryption(impl))

    def put() -> Any:
        return store.put("t", table)

    ref = benchmark.pedantic(put, rounds=ROUNDS, iterations=1, warmup_rounds=1)
    assert ref.size_bytes > table.nbytes
    assert (ref.key_id is None) == (impl == "plain")


@pytest.mark.parametrize("impl", IMPLS)
def test_read(benchmark: Any, impl: str, table: pa.Table, folder: Path) -> None:
    benchmark.group = "crypto:read"
    benchmark.extra_info.update(items=table.nbytes, unit="bytes", impl=impl)
    store = FileStore(folder, encryption=_encryption(impl))
    store.put("t", table)
    got = benchmark.pedantic(lambda: store.get("t"), rounds=ROUNDS, iterations=1, warmup_rounds=1)
    assert got.num_rows == ROWS and got.column("c3").equals(table.column("c3"))
