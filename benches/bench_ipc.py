"""IpcWriter throughput against pyarrow.ipc and a raw sequential write; write() latency.

``ipc:write``: the same 64 record batches of 4 MiB (256 MiB) written to one file per
round, fsynced (every implementation does the same durable job: IpcWriter fsyncs by
contract, the peers call ``os.fsync`` before closing). ``raw_write`` writes the same
column data (one write() per Arrow buffer, the file minus IPC metadata). ``items`` = bytes
of the uncompressed Arrow file.
``ipc:write_lz4``: the same with lz4 compression. ``ipc:write_call``: the time of one
``write()`` call of a 128 KiB batch while the queue has room (one call per round).
Every benchmark reads its last file back (untimed): the Arrow files must equal the
batches written, the raw file must hold their buffers byte for byte.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import pyarrow as pa
import pyarrow.ipc
import pytest

from phasekit.backend import backend_module

N_BATCHES = 64
ROWS = 1 << 17  # 4 columns x 8 bytes x 128 Ki rows = 4 MiB per batch
ROUNDS = 4
CALL_ROWS = 1 << 12  # 128 KiB per batch in ipc:write_call
CALL_ROUNDS = 1536  # timed write() calls
WRITER_CALLS = 256  # calls per writer before it is replaced

IMPLS = ["rust", "python", "pyarrow.ipc.new_file", "raw_write"]


def _batch(rows: int, seed: int) -> pa.RecordBatch:
    """Numpy-backed columns: ids compress well, random floats do not."""
    rng = np.random.default_rng(seed)
    ids = np.arange(seed * rows, (seed + 1) * rows, dtype=np.int64)
    return pa.record_batch(
        {
            "id": pa.array(ids),
            "ts": pa.array(ids * 1_000_000 + 1_600_000_000_000_000_000),
            "price": pa.array(100.0 + rng.standard_normal(rows).cumsum()),
            "qty": pa.array(rng.random(rows)),
        }
    )


@pytest.fixture(scope="module")
def batches() -> list[pa.RecordBatch]:
    return [_batch(ROWS, i) for i in range(N_BATCHES)]


def _fsync_close(sink: pa.NativeFile, path: Path) -> None:
    sink.close()
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _phasekit_writer(name: str, compression: Optional[str]) -> Callable[..., Any]:
    module = backend_module(name)

    def run(path: Path, batches: list[pa.RecordBatch]) -> int:
        with module.IpcWriter(path, compression=compression) as w:
            for b in batches:
                w.write(b)
        return int(w.close()["size_bytes"])

    return run


def _pyarrow_writer(compression: Optional[str]) -> Callable[..., Any]:
    def run(path: Path, batches: list[pa.RecordBatch]) -> int:
        options = pa.ipc.IpcWriteOptions(compression=compression)
        sink = pa.OSFile(str(path), "wb")
        with pa.ipc.new_file(sink, batches[0].schema, options=options) as writer:
            for b in batches:
                writer.write_batch(b)
        size = sink.tell()
        _fsync_close(sink, path)
        return size

    return run


def _raw_write(path: Path, batches: list[pa.RecordBatch]) -> int:
    """The batches' column data written as they lie in memory: one write per buffer."""
    total = 0
    with open(path, "wb", buffering=0) as f:
        for b in batches:
            for column in b.columns:
                for buf in column.buffers():
                    if buf is not None:
                        view = memoryview(buf)
                        while view:
                            n = f.write(view) or 0
                            view = view[n:]
                            total += n
        os.fsync(f.fileno())
    return total


def _arrow_file_size(batches: list[pa.RecordBatch], folder: Path) -> int:
    path = folder / "size.arrow"
    size = _pyarrow_writer(None)(path, batches)
    path.unlink()
    return int(size)


def _read_arrow(path: Path) -> pa.Table:
    with pa.memory_map(str(path)) as source:
        return pa.ipc.open_file(source).read_all()


def _check_arrow_file(path: Path, batches: list[pa.RecordBatch]) -> None:
    assert _read_arrow(path).equals(pa.Table.from_batches(batches))


def _check_raw_file(path: Path, batches: list[pa.RecordBatch]) -> None:
    with open(path, "rb") as f:
        for b in batches:
            for column in b.columns:
                for buf in column.buffers():
                    if buf is not None:
                        assert f.read(buf.size) == buf.to_pybytes()
        assert f.read(1) == b""


def _run_rounds(
    benchmark: Any,
    fn: Callable[..., Any],
    folder: Path,
    batches: list[pa.RecordBatch],
    check: Callable[[Path, list[pa.RecordBatch]], None],
) -> None:
    path = folder / "bench.arrow"

    def setup() -> None:
        """Untimed: remove the last round's file and flush the page cache's dirty pages."""
        if path.exists():
            path.unlink()
        os.sync()

    size = benchmark.pedantic(
        fn, args=(path, batches), setup=setup, rounds=ROUNDS, iterations=1, warmup_rounds=1
    )
    assert size == path.stat().st_size
    check(path, batches)
    setup()


@pytest.mark.parametrize("impl", IMPLS)
def test_ipc_write(
    benchmark: Any,
    impl: str,
    batches: list[pa.RecordBatch],
    tmp_path: Path,
) -> None:
    benchmark.group = "ipc:write"
    fn: Callable[..., Any]
    if impl in ("rust", "python"):
        fn = _phasekit_writer(impl, None)
    elif impl == "raw_write":
        fn = _raw_write
    else:
        fn = _pyarrow_writer(None)
    benchmark.extra_info.update(items=_arrow_file_size(batches, tmp_path), unit="bytes")
    check = _check_raw_file if impl == "raw_write" else _check_arrow_file
    _run_rounds(benchmark, fn, tmp_path, batches, check)


@pytest.mark.parametrize("impl", IMPLS[:3])
def test_ipc_write_lz4(
    benchmark: Any, impl: str, batches: list[pa.RecordBatch], tmp_path: Path
) -> None:
    benchmark.group = "ipc:write_lz4"
    if impl in ("rust", "python"):
        fn = _phasekit_writer(impl, "lz4")
    else:
        fn = _pyarrow_writer("lz4")
    # uncompressed bytes
    benchmark.extra_info.update(items=_arrow_file_size(batches, tmp_path), unit="bytes")
    _run_rounds(benchmark, fn, tmp_path, batches, _check_arrow_file)


@pytest.mark.parametrize("impl", ["rust", "python", "pyarrow.ipc.new_file"])
def test_ipc_write_call(benchmark: Any, impl: str, tmp_path: Path) -> None:
    """One write() of a 128 KiB batch while the queue has room: the caller's cost.

    Each round times one call; a fresh writer replaces the current one (untimed) every
    WRITER_CALLS calls, so the queue never fills.
    """
    benchmark.group = "ipc:write_call"
    benchmark.extra_info.update(items=1, unit="calls")
    small = [_batch(CALL_ROWS, i) for i in range(8)]
    path = tmp_path / "calls.arrow"
    state: dict[str, Any] = {"calls": 0, "writer": None, "written": []}

    def rotate() -> None:
        if state["writer"] is not None:
            state["writer"].close()
            path.unlink()
        state["written"] = []
        if impl == "pyarrow.ipc.new_file":
            state["writer"] = pa.ipc.new_file(str(path), small[0].schema)
        else:
            state["writer"] = backend_module(impl).IpcWriter(path, queue_size=WRITER_CALLS + 1)

    def setup() -> tuple[tuple[Any, pa.RecordBatch], dict[str, Any]]:
        if state["calls"] % WRITER_CALLS == 0:
            rotate()
        state["calls"] += 1
        writer = state["writer"]
        write = writer.write_batch if impl == "pyarrow.ipc.new_file" else writer.write
        batch = small[state["calls"] & 7]
        state["written"].append(batch)
        return (write, batch), {}

    def call(write: Any, batch: pa.RecordBatch) -> None:
        write(batch)

    benchmark.pedantic(call, setup=setup, rounds=CALL_ROUNDS, iterations=1)
    state["writer"].close()
    assert state["written"] and _read_arrow(path).equals(pa.Table.from_batches(state["written"]))
