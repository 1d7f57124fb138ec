"""Stores: hand-off between two phases, and hybrid spill / reload throughput.

Groups (``items`` in extra_info, with its ``unit``: tables or frames handed off, or
bytes spilled / reloaded). Every group compares the same work, like for like:

* ``stores:handoff_large_memory``: a 256 MiB Arrow table (4 float64 columns) put by one
  phase and got by the next, in memory without a copy: phasekit's MemoryStore
  (``<backend>-memory``) and Kedro's ``MemoryDataset(copy_mode="assign")``.
* ``stores:handoff_large_files``: the same table through durable files: phasekit's arrow
  and parquet modes (written, fsynced, checksummed, verified on read) and
  ``kedro_datasets.pandas.ParquetDataset`` with the same data as a pandas frame (the
  conversion is not timed; Kedro does not fsync).
* ``stores:handoff_small_memory``: 10,000 small pandas frames (10 rows x 3 columns) in
  memory (MemoryStore; ``MemoryDataset(copy_mode="assign")``, one per frame).
* ``stores:handoff_small_files``: 1,000 of those frames through files (phasekit
  ``put_many`` group commit, then one ``get`` per frame; Kedro one ParquetDataset per
  frame). One round each; the large file hand-offs run once too, the memory ones three
  times. Every hand-off checks that what the next phase got equals what was put.
* ``stores:spill``: a HybridStore with a 16 MiB budget, already full, takes 1,600 more
  100 KB float64 arrays (10x the budget), each spilling the least recently used one;
  ``zict.Buffer(LRU, File)`` with the same budget and pickle serialisation; and
  ``raw_write``: the same bytes written sequentially to one file with ``os.write``
  in the same run (the machine's page-cache write bandwidth). items = bytes spilled;
  each checks the spilled count (or the file's size).
* ``stores:reload``: reading those arrays back in put order (each reload spills another
  and is checked).
"""

from __future__ import annotations

import os
import pickle
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

import phasekit
from phasekit.stores import FileStore, HybridStore, MemoryStore

LARGE_ROWS = (256 << 20) // 32  # 4 float64 columns: 256 MiB
SMALL_MEMORY = 10_000
SMALL_FILES = 1_000
ARRAY = 12_800  # float64 values: 102,400 bytes
BUDGET = 16 << 20
SPILLED = 10 * BUDGET // (ARRAY * 8)  # 1,638 arrays: 10x the budget
ROUNDS = 3

try:
    from kedro.io import MemoryDataset
    from kedro_datasets.pandas import ParquetDataset
except ImportError:  # the bench extra installs them
    MemoryDataset = ParquetDataset = None


@pytest.fixture(scope="module")
def large_table() -> pa.Table:
    rng = np.random.default_rng(0)
    return pa.table({f"c{i}": rng.random(LARGE_ROWS) for i in range(4)})


@pytest.fixture(scope="module")
def small_frames() -> list[pd.DataFrame]:
    return [
        pd.DataFrame({"i": np.arange(10) + k, "x": np.arange(10) * 0.5, "s": list("abcdefghij")})
        for k in range(SMALL_MEMORY)
    ]


@pytest.fixture
def folder() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="phasekit-bench-stores-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def backend_of(request: pytest.FixtureRequest) -> Iterator[Callable[[str], None]]:
    previous = phasekit.get_backend()
    yield phasekit.set_backend
    phasekit.set_backend(previous)


def _fresh(folder: Path) -> Path:
    path = Path(tempfile.mkdtemp(dir=folder))
    return path


# ------------------------------------------------------------------ hand-off, large

HANDOFF_CASES = [  # (group: memory or files, implementation)
    ("memory", "rust-memory"),
    ("memory", "python-memory"),
    ("memory", "kedro.MemoryDataset"),
    ("files", "rust-arrow"),
    ("files", "rust-parquet"),
    ("files", "kedro.pandas.ParquetDataset"),
]


def _kedro() -> None:
    if MemoryDataset is None:
        pytest.fail("kedro and kedro-datasets are not installed (pip install phasekit[bench])")


@pytest.mark.parametrize(("kind", "impl"), HANDOFF_CASES)
def test_handoff_large(
    benchmark: Any, kind: str, impl: str, large_table: pa.Table, folder: Path, backend_of: Any
) -> None:
    benchmark.group = f"stores:handoff_large_{kind}"
    benchmark.extra_info.update(items=1, unit="tables", bytes=large_table.nbytes, impl=impl)
    rounds = ROUNDS if kind == "memory" else 1
    expected: Any = large_table
    if impl.startswith("kedro"):
        _kedro()
        if impl == "kedro.MemoryDataset":

            def handoff() -> Any:
                ds = MemoryDataset(copy_mode="assign")
                ds.save(large_table)
                return ds.load()

        else:
            frame = expected = large_table.to_pandas()

            def handoff() -> Any:
                ds = ParquetDataset(filepath=str(_fresh(folder) / "t.parquet"))
                ds.save(frame)
                return ds.load()

    else:
        backend, mode = impl.split("-")
        backend_of(backend)

        def handoff() -> Any:
            if mode == "memory":
                store: Any = MemoryStore()
            else:
                store = FileStore(_fresh(folder), format=mode)
            ref = store.put("table", large_table)
            return store.get(ref)

    result = benchmark.pedantic(handoff, rounds=rounds, iterations=1)
    assert len(result) == LARGE_ROWS and result.equals(expected)


# ------------------------------------------------------------------ hand-off, small


@pytest.mark.parametrize(("kind", "impl"), HANDOFF_CASES)
def test_handoff_small(
    benchmark: Any,
    kind: str,
    impl: str,
    small_frames: list[pd.DataFrame],
    folder: Path,
    backend_of: Any,
) -> None:
    benchmark.group = f"stores:handoff_small_{kind}"
    frames = small_frames if kind == "memory" else small_frames[:SMALL_FILES]
    benchmark.extra_info.update(items=len(frames), unit="frames", impl=impl)
    keys = [f"f{i}" for i in range(len(frames))]
    if impl.startswith("kedro"):
        _kedro()
        if impl == "kedro.MemoryDataset":

            def handoff() -> list[Any]:
                sets = [MemoryDataset(copy_mode="assign") for _ in frames]
                for ds, frame in zip(sets, frames):
                    ds.save(frame)
                return [ds.load() for ds in sets]

        else:

            def handoff() -> list[Any]:
                base = _fresh(folder)
                sets = [ParquetDataset(filepath=str(base / f"{k}.parquet")) for k in keys]
                for ds, frame in zip(sets, frames):
                    ds.save(frame)
                return [ds.load() for ds in sets]

    else:
        backend, mode = impl.split("-")
        backend_of(backend)

        def handoff() -> list[Any]:
            if mode == "memory":
                store: Any = MemoryStore()
                refs = [store.put(k, f) for k, f in zip(keys, frames)]
            else:
                store = FileStore(_fresh(folder), format=mode)
                refs = store.put_many(dict(zip(keys, frames)))
            return [store.get(r) for r in refs]

    result = benchmark.pedantic(handoff, rounds=1, iterations=1)
    assert len(result) == len(frames)
    for got, frame in zip(result, frames):
        pd.testing.assert_frame_equal(got, frame, check_dtype=False)


# ------------------------------------------------------------------ spill and reload

SPILL_IMPLS = ["rust", "python", "zict", "raw_write"]


def _arrays() -> list[np.ndarray]:
    return [np.full(ARRAY, float(i)) for i in range(SPILLED + BUDGET // (ARRAY * 8))]


class _Zict:
    """zict.Buffer(LRU in memory, File on disk) with the same budget, pickling values."""

    def __init__(self, folder: Path) -> None:
        import zict

        self.buffer = zict.Buffer(
            {},
            zict.Func(pickle.dumps, pickle.loads, zict.File(str(folder))),
            n=BUDGET,
            weight=lambda _k, v: v.nbytes,
        )

    def put(self, key: str, value: Any) -> None:
        self.buffer[key] = value

    def get(self, key: str) -> Any:
        return self.buffer[key]


FIRST = BUDGET // (ARRAY * 8)  # arrays that fill the budget


def _filled(
    impl: str, folder: Path, arrays: list[np.ndarray], backend_of: Any, spilled: bool
) -> Any:
    """A store holding its budget's worth of arrays, and the spilled ones too if asked."""
    if impl == "zict":
        store: Any = _Zict(_fresh(folder))
    else:
        backend_of(impl)
        store = HybridStore(BUDGET, folder)
    for i in range(FIRST + SPILLED if spilled else FIRST):
        store.put(f"k{i}", arrays[i])
    return store


def _renewer(state: dict[str, Any], make: Callable[[], Any]) -> Callable[[], None]:
    """A benchmark setup: close the previous round's store, make a fresh one."""

    def setup() -> None:
        old = state.pop("store", None)
        if hasattr(old, "close"):
            old.close()
        state["store"] = make()

    return setup


@pytest.mark.parametrize("impl", SPILL_IMPLS)
def test_spill(benchmark: Any, impl: str, folder: Path, backend_of: Any) -> None:
    benchmark.group = "stores:spill"
    arrays = _arrays()
    benchmark.extra_info.update(items=SPILLED * ARRAY * 8, unit="bytes")
    state: dict[str, Any] = {}
    if impl == "raw_write":
        setup = _renewer(state, lambda: _fresh(folder) / "raw.bin")
    else:
        setup = _renewer(state, lambda: _filled(impl, folder, arrays, backend_of, False))

    def spill() -> None:
        store = state["store"]
        for i in range(FIRST, FIRST + SPILLED):
            store.put(f"k{i}", arrays[i])

    def raw_write() -> None:
        fd = os.open(state["store"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            for i in range(FIRST, FIRST + SPILLED):
                os.write(fd, arrays[i])
        finally:
            os.close(fd)

    benchmark.pedantic(raw_write if impl == "raw_write" else spill, setup=setup, rounds=2)
    if impl in ("rust", "python"):
        stats = state["store"].stats()
        assert stats["spills"] == SPILLED and stats["spill_failures"] == 0
        state["store"].close()
    elif impl == "zict":
        assert len(state["store"].buffer.slow) == SPILLED
    else:
        assert state["store"].stat().st_size == SPILLED * ARRAY * 8


@pytest.mark.parametrize("impl", SPILL_IMPLS[:3])
def test_reload(benchmark: Any, impl: str, folder: Path, backend_of: Any) -> None:
    benchmark.group = "stores:reload"
    arrays = _arrays()
    benchmark.extra_info.update(items=SPILLED * ARRAY * 8, unit="bytes")
    state: dict[str, Any] = {}
    setup = _renewer(state, lambda: _filled(impl, folder, arrays, backend_of, True))

    def reload() -> None:
        store = state["store"]
        for i in range(SPILLED):  # the oldest first: every one is on disk
            assert store.get(f"k{i}")[0] == float(i)

    benchmark.pedantic(reload, setup=setup, rounds=2)
    if impl in ("rust", "python"):
        assert state["store"].stats()["reloads"] == SPILLED
        state["store"].close()
