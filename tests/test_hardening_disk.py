"""Acknowledged means stored (issue 15, point 6): on a full disk every store refuses new
items (``put`` raises) instead of losing ones it acknowledged; every item whose ``put``
returned is readable afterwards. The SQLite catalog keeps its WAL small, so a memory-mode
run fits on a 4 MiB disk.

The disks are real tmpfs mounts (skipped where the machine cannot mount one); the
injected-ENOSPC tests cover the same paths everywhere.
"""

from __future__ import annotations

import errno
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from hardening_util import run_tiny
from phasekit.catalog import open_catalog
from phasekit.errors import StorageError
from phasekit.stores import FileStore, HybridStore, StreamStore, streamparts
from stores_util import mount_tmpfs, store_backend  # noqa: F401

pytestmark = pytest.mark.usefixtures("store_backend")


@pytest.fixture
def disk_1m(tmp_path: Path) -> Iterator[Path]:
    yield from mount_tmpfs(tmp_path, "1m")


@pytest.fixture
def disk_4m(tmp_path: Path) -> Iterator[Path]:
    yield from mount_tmpfs(tmp_path, "4m")


def row(i: int) -> dict[str, Any]:
    return {"i": i, "pad": "x" * 200}


def table(i: int) -> pa.Table:
    return pa.table({"i": pa.array([i] * 64, pa.int64()), "x": pa.array([0.5] * 64)})


def _fill_stream(store: StreamStore, make: Any, limit: int = 100_000) -> int:
    acked = 0
    with pytest.raises(StorageError, match="disk is full"):
        for i in range(limit):
            store.put("s", make(i))
            acked += 1
    return acked


@pytest.mark.parametrize("make", [row, table], ids=["rows", "tables"])
@pytest.mark.parametrize("buffer_size", [7, 50])
def test_stream_store_on_a_full_disk_loses_no_acknowledged_item(
    disk_1m: Path, make: Any, buffer_size: int
) -> None:
    store = StreamStore(disk_1m / "s", buffer_size=buffer_size, flush_interval=0.01)
    acked = _fill_stream(store, make)
    assert acked > 100
    store.finish("s")  # the tail acknowledged before the disk filled is written too
    late = StreamStore(disk_1m / "s")  # a reader that comes late (another process, say)
    items = list(late.items("s"))
    assert len(items) == acked
    if make is row:
        assert [r["i"] for r in items] == list(range(acked))
    else:
        assert [t.column("i")[0].as_py() for t in items] == list(range(acked))
    assert not (disk_1m / "s" / "s.stream" / streamparts.RESERVE).exists()


def test_stream_put_refuses_what_it_cannot_hold_space_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Injected ENOSPC on the reserve: put raises, the items it acknowledged are stored."""
    real = streamparts._allocate
    calls = {"n": 0}

    def allocate(fd: int, start: int, end: int) -> None:
        calls["n"] += 1
        if calls["n"] > 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(fd, start, end)

    monkeypatch.setattr(streamparts, "_allocate", allocate)
    store = StreamStore(tmp_path / "s", buffer_size=1000, flush_interval=60)
    acked = _fill_stream(store, row, limit=1_000_000)
    assert acked > 10
    store.finish("s")
    assert [r["i"] for r in StreamStore(tmp_path / "s").items("s")] == list(range(acked))


def test_file_store_on_a_full_disk_keeps_every_acknowledged_item(disk_1m: Path) -> None:
    store = FileStore(disk_1m / "f")
    acked = []
    with pytest.raises(StorageError, match="disk is full"):
        for i in range(10_000):
            store.put(f"k{i}", np.full(2_000, float(i)))
            acked.append(i)
    assert acked
    reopened = FileStore(disk_1m / "f")
    for i in acked:
        np.testing.assert_array_equal(reopened.get(f"k{i}"), np.full(2_000, float(i)))


def test_hybrid_store_on_a_full_disk_keeps_every_acknowledged_item(disk_1m: Path) -> None:
    store = HybridStore(10_000, disk_1m, segment_bytes=64_000)
    for i in range(200):  # 200 x 16 kB: more than the disk holds; the rest stays in memory
        store.put(f"k{i}", np.full(2_000, float(i)))
    stats = store.stats()
    assert stats["spill_failures"] > 0 and stats["items"] == 200
    for i in range(200):
        np.testing.assert_array_equal(store.get(f"k{i}"), np.full(2_000, float(i)))
    store.close()


def test_the_sqlite_wal_stays_small(tmp_path: Path) -> None:
    results = tmp_path / "results"
    with open_catalog(results) as cat:
        cat.start_process("wf", process_id="r")
        for i in range(3000):
            cat.record_item("r", "p", f"e{i}", inline_data={"i": i, "pad": "x" * 500})
            if i % 500 == 0:
                wal = results / "catalog.sqlite-wal"
                assert not wal.exists() or wal.stat().st_size <= 1_200_000
        assert (results / "catalog.sqlite").stat().st_size > 1_500_000
    wal = results / "catalog.sqlite-wal"
    assert not wal.exists() or wal.stat().st_size == 0  # checkpointed and truncated on close


def test_a_memory_mode_run_fits_on_a_4_mib_disk(disk_4m: Path, tmp_path: Path) -> None:
    results = disk_4m / "results"
    run_tiny(tmp_path, results, times=3, n_bars=2000)
    with open_catalog(results, create=False) as cat:
        assert len(cat.list_processes(status="completed")) == 3
        assert cat.doctor().ok
