"""Encryption at rest: an encrypted file store against a plain one, like for like.

Groups (``items`` in extra_info: bytes of the table):

* ``crypto:write``: one 64 MiB Arrow table (8 float64 columns) put into a FileStore in
  the arrow format, plain (``impl=plain``: through the backend's IpcWriter) and
  encrypted (``impl=aes-256-gcm``: the IPC file written into the encrypter, sealed in
  1 MiB chunks under a new data key and written in 8 MiB batches by a writer thread,
  by the same atomic protocol); both checksum the file while writing, flush it in the
  background every 32 MiB and fsync it.
* ``crypto:read``: getting it back (plain: its CRC verified, then memory-mapped;
  encrypted: decrypted from a memory map into one Arrow buffer in one call, each
  chunk's authentication tag verified).

The chunks are sealed and opened by the backend in use (``PHASEKIT_BACKEND``): with the
Rust core, AWS-LC with the GIL released and the chunks spread over the cores; with the
Python backend, the ``cryptography`` package on one core.

Each encrypted round comes right after a timed round of the same work on a plain store
(untimed by the benchmark), so the pair sees the same load on the shared cores; its
extra_info holds ``ratio_vs_plain``, the median over the rounds of (encrypted seconds /
plain seconds), with ``ratio_min``, ``ratio_max`` and ``plain_median_s``.

The goal (issue 13): encrypted at most 1.3x the plain time in both groups, judged on
``ratio_vs_plain``. Each test checks what it wrote or read. Measured medians are in
docs/security.md (Cost).
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pyarrow as pa
import pytest

from phasekit.crypt import Encryption, MasterKey, key_id_of
from phasekit.stores import FileStore

ROWS = (64 << 20) // 64  # 8 float64 columns: 64 MiB
ROUNDS = 15
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


def _paired(
    benchmark: Any, impl: str, run: Callable[[FileStore], Any], folder: Path
) -> tuple[Any, list[float]]:
    """``run(store)`` timed over ROUNDS rounds after a warm-up; for the encrypted store each
    round comes right after a timed round of a plain store (pedantic's untimed setup), so
    the pair sees the same load on the shared cores. Returns the result and those plain
    rounds' seconds (empty for ``plain``)."""
    store = FileStore(folder / impl, encryption=_encryption(impl))
    plain = FileStore(folder / "paired-plain")
    plain_times: list[float] = []

    def timed_plain() -> tuple[tuple[FileStore], dict[str, Any]]:
        start = time.perf_counter()
        run(plain)
        plain_times.append(time.perf_counter() - start)
        return (store,), {}

    if impl == "plain":
        result = benchmark.pedantic(
            run, args=(store,), rounds=ROUNDS, iterations=1, warmup_rounds=1
        )
        return result, []
    result = benchmark.pedantic(
        run, setup=timed_plain, rounds=ROUNDS, iterations=1, warmup_rounds=1
    )
    return result, plain_times


def _ratio_info(benchmark: Any, plain_times: list[float]) -> dict[str, float]:
    """The median over the rounds of (encrypted seconds / the plain round before it)."""
    data = list(benchmark.stats.stats.data)
    if not plain_times:
        return {}
    ratios = [t / p for t, p in zip(data, plain_times[-len(data) :], strict=True)]
    return {
        "ratio_vs_plain": float(np.median(ratios)),
        "ratio_min": float(min(ratios)),
        "ratio_max": float(max(ratios)),
        "plain_median_s": float(np.median(plain_times[-len(data) :])),
    }


@pytest.mark.parametrize("impl", IMPLS)
def test_write(benchmark: Any, impl: str, table: pa.Table, folder: Path) -> None:
    benchmark.group = "crypto:write"
    ref, plain_times = _paired(benchmark, impl, lambda store: store.put("t", table), folder)
    assert ref.size_bytes > table.nbytes
    assert (ref.key_id is None) == (impl == "plain")
    benchmark.extra_info.update(
        items=table.nbytes, unit="bytes", impl=impl, **_ratio_info(benchmark, plain_times)
    )


@pytest.mark.parametrize("impl", IMPLS)
def test_read(benchmark: Any, impl: str, table: pa.Table, folder: Path) -> None:
    benchmark.group = "crypto:read"
    FileStore(folder / impl, encryption=_encryption(impl)).put("t", table)
    FileStore(folder / "paired-plain").put("t", table)
    got, plain_times = _paired(benchmark, impl, lambda store: store.get("t"), folder)
    assert got.num_rows == ROWS and got.column("c3").equals(table.column("c3"))
    benchmark.extra_info.update(
        items=table.nbytes, unit="bytes", impl=impl, **_ratio_info(benchmark, plain_times)
    )
