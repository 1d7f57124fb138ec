"""IpcWriter: atomic Arrow IPC files written on a background thread, in both backends."""

from __future__ import annotations

import gc
import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import zlib
from pathlib import Path
from types import ModuleType
from typing import Any, Optional

import duckdb
import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.ipc
import pytest

from phasekit.errors import InvalidArgument, WriterError

COMPRESSIONS = [None, "lz4", "zstd"]
FORMATS = ["file", "stream"]


def make_batch(n: int = 1000, start: int = 0) -> pa.RecordBatch:
    ids = np.arange(start, start + n, dtype=np.int64)
    return pa.record_batch(
        {
            "id": ids,
            "x": ids.astype(np.float64) * 0.5,
            "name": pa.array([f"n{i}" for i in range(start, start + n)]),
            "flag": pa.array([i % 3 == 0 if i % 7 else None for i in range(start, start + n)]),
        }
    )


def read_pyarrow(path: Path, fmt: str) -> pa.Table:
    if fmt == "file":
        with pa.ipc.open_file(path) as reader:
            return reader.read_all()
    with pa.ipc.open_stream(path) as reader:
        return reader.read_all()


def read_polars(path: Path, fmt: str) -> pl.DataFrame:
    if fmt == "file":
        return pl.read_ipc(path)
    return pl.read_ipc_stream(path)


def read_duckdb(path: Path, fmt: str) -> list[dict[str, Any]]:
    """Rows as DuckDB sees them, scanning the file through pyarrow's IPC reader."""
    reader = pa.ipc.open_file(path) if fmt == "file" else pa.ipc.open_stream(path)
    source = reader if fmt == "stream" else reader.read_all()
    con = duckdb.connect()
    con.register("src", source)
    rows: list[dict[str, Any]] = con.sql("SELECT * FROM src").to_arrow_table().to_pylist()
    return rows


def tmp_leftovers(folder: Path, suffix: str) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(suffix))


class StreamOnly:
    """A generic producer that only implements ``__arrow_c_stream__``."""

    def __init__(self, table: pa.Table) -> None:
        self._table = table

    def __arrow_c_stream__(self, requested_schema: Any = None) -> Any:
        return self._table.__arrow_c_stream__(requested_schema)


class ArrayOnly:
    """A generic producer that only implements ``__arrow_c_array__``."""

    def __init__(self, batch: pa.RecordBatch) -> None:
        self._batch = batch

    def __arrow_c_array__(self, requested_schema: Any = None) -> Any:
        return self._batch.__arrow_c_array__(requested_schema)


class SchemaOnly:
    def __init__(self, schema: pa.Schema) -> None:
        self._schema = schema

    def __arrow_c_schema__(self) -> Any:
        return self._schema.__arrow_c_schema__()


# ------------------------------------------------------------------ round trips


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_round_trip_pyarrow_polars_duckdb(
    backend: ModuleType, tmp_path: Path, compression: Optional[str], fmt: str
) -> None:
    path = tmp_path / "out.arrow"
    batches = [make_batch(1000, i * 1000) for i in range(5)]
    with backend.IpcWriter(path, compression=compression, format=fmt) as w:
        for b in batches[:3]:
            w.write(b)
        w.write(pa.Table.from_batches(batches[3:]))
        assert w.rows_written == 5000
        assert not w.closed
    assert w.closed
    info = w.close()
    expected = pa.Table.from_batches(batches)
    assert info["path"] == str(path)
    assert info["rows"] == 5000
    assert info["batches"] == 5
    assert info["size_bytes"] == path.stat().st_size

    assert read_pyarrow(path, fmt).equals(expected)
    assert read_polars(path, fmt).equals(pl.DataFrame(expected))
    assert read_duckdb(path, fmt) == expected.to_pylist()
    if fmt == "file":
        with pa.ipc.open_file(path) as reader:
            assert reader.num_record_batches == 5
    assert tmp_leftovers(tmp_path, backend.TMP_SUFFIX) == []
    assert os.listdir(tmp_path) == ["out.arrow"]


def test_compression_is_applied(backend: ModuleType, tmp_path: Path) -> None:
    # Highly compressible data: compressed files are much smaller and still read back.
    batch = pa.record_batch({"z": np.zeros(200_000, dtype=np.int64)})
    sizes = {}
    for comp in COMPRESSIONS:
        path = tmp_path / f"{comp}.arrow"
        with backend.IpcWriter(path, compression=comp) as w:
            w.write(batch)
        sizes[comp] = path.stat().st_size
        assert read_pyarrow(path, "file").equals(pa.Table.from_batches([batch]))
    assert sizes["lz4"] < sizes[None] / 20
    assert sizes["zstd"] < sizes[None] / 20
    assert backend.COMPRESSIONS == (None, "lz4", "zstd")
    assert backend.TMP_SUFFIX == ".phasekit-tmp"


def test_polars_frame(backend: ModuleType, tmp_path: Path) -> None:
    df = pl.DataFrame(
        {
            "a": list(range(100)),
            "s": [f"v{i}" for i in range(100)],
            "f": [i / 3 for i in range(100)],
            "l": [[i, i + 1] for i in range(100)],
        }
    )
    path = tmp_path / "pl.arrow"
    with backend.IpcWriter(path, compression="zstd") as w:
        w.write(df)
        w.write(df)
    expected = pl.concat([df, df])
    assert pl.read_ipc(path).equals(expected)
    assert pl.DataFrame(read_pyarrow(path, "file")).equals(expected)
    assert read_duckdb(path, "file") == expected.to_dicts()


def test_generic_capsule_producers(backend: ModuleType, tmp_path: Path) -> None:
    b1, b2, b3 = make_batch(10), make_batch(20, 10), make_batch(30, 30)
    path = tmp_path / "g.arrow"
    with backend.IpcWriter(path, schema=SchemaOnly(b1.schema)) as w:
        w.write(StreamOnly(pa.Table.from_batches([b1, b2])))
        w.write(ArrayOnly(b3))
    info = w.close()
    assert info["rows"] == 60 and info["batches"] == 3
    assert read_pyarrow(path, "file").equals(pa.Table.from_batches([b1, b2, b3]))


def test_numpy_backed_buffers_many_small_batches(backend: ModuleType, tmp_path: Path) -> None:
    # numpy-owned buffers are released by the background thread; a queue of one batch
    # makes write() block often. Neither may deadlock.
    path = tmp_path / "np.arrow"
    arrays = [np.arange(i * 100, (i + 1) * 100, dtype=np.float64) for i in range(300)]
    with backend.IpcWriter(path, queue_size=1) as w:
        for arr in arrays:
            w.write(pa.record_batch({"v": pa.array(arr)}))
    info = w.close()
    assert info["batches"] == 300
    got = read_pyarrow(path, "file").column("v").to_numpy()
    assert np.array_equal(got, np.concatenate(arrays))


def test_empty_batches_are_skipped(backend: ModuleType, tmp_path: Path) -> None:
    path = tmp_path / "e.arrow"
    b = make_batch(10)
    with backend.IpcWriter(path) as w:
        w.write(b.slice(0, 0))
        w.write(pa.Table.from_batches([b.slice(0, 0), b]))
        w.write(b)
    info = w.close()
    assert (info["rows"], info["batches"]) == (20, 2)
    with pa.ipc.open_file(path) as reader:
        assert reader.num_record_batches == 2
        assert reader.read_all().num_rows == 20


# ------------------------------------------------------------------ checksum


@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_checksum_matches_file_checksum_and_zlib(
    backend: ModuleType, tmp_path: Path, compression: Optional[str]
) -> None:
    path = tmp_path / "c.arrow"
    with backend.IpcWriter(path, compression=compression) as w:
        for i in range(20):
            w.write(make_batch(5000, i * 5000))
    info = w.close()
    data = path.read_bytes()
    assert info["checksum"] == f"crc32:{zlib.crc32(data):08x}"
    assert info["checksum"] == backend.file_checksum(path)
    assert info["size_bytes"] == len(data)


# ------------------------------------------------------------------ schema


@pytest.mark.parametrize("fmt", FORMATS)
def test_schema_up_front_without_batches(backend: ModuleType, tmp_path: Path, fmt: str) -> None:
    schema = make_batch(1).schema
    path = tmp_path / "s.arrow"
    w = backend.IpcWriter(path, schema=schema, format=fmt)
    info = w.close()
    assert (info["rows"], info["batches"]) == (0, 0)
    table = read_pyarrow(path, fmt)
    assert table.num_rows == 0 and table.schema.equals(schema)


def test_schema_up_front_mismatch(backend: ModuleType, tmp_path: Path) -> None:
    path = tmp_path / "m.arrow"
    with backend.IpcWriter(path, schema=pa.schema([("id", pa.int32())])) as w:
        with pytest.raises(InvalidArgument, match="schema"):
            w.write(make_batch(5))
        w.write(pa.record_batch({"id": pa.array([1, 2], pa.int32())}))
    assert read_pyarrow(path, "file").num_rows == 2


def test_schema_mismatch_after_first_batch(backend: ModuleType, tmp_path: Path) -> None:
    path = tmp_path / "m.arrow"
    w = backend.IpcWriter(path)
    w.write(make_batch(5))
    with pytest.raises(InvalidArgument, match="schema"):
        w.write(pa.record_batch({"other": [1.0]}))
    with pytest.raises(InvalidArgument, match="schema"):
        w.write(make_batch(5).cast(make_batch(5).schema.set(0, pa.field("id", pa.int32()))))
    assert w.rows_written == 5
    info = w.close()
    assert info["rows"] == 5
    assert read_pyarrow(path, "file").equals(pa.Table.from_batches([make_batch(5)]))


def test_bad_schema_argument(backend: ModuleType, tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match="schema"):
        backend.IpcWriter(tmp_path / "x.arrow", schema=42)
    assert os.listdir(tmp_path) == []


# ------------------------------------------------------------------ lifecycle


def test_close_twice_returns_same_dict(backend: ModuleType, tmp_path: Path) -> None:
    w = backend.IpcWriter(tmp_path / "a.arrow")
    w.write(make_batch(3))
    first = w.close()
    assert w.close() == first
    assert w.closed


def test_write_after_close_raises(backend: ModuleType, tmp_path: Path) -> None:
    w = backend.IpcWriter(tmp_path / "a.arrow")
    w.write(make_batch(3))
    w.close()
    with pytest.raises(WriterError):
        w.write(make_batch(3))


def test_abort_leaves_nothing(backend: ModuleType, tmp_path: Path) -> None:
    path = tmp_path / "a.arrow"
    w = backend.IpcWriter(path, queue_size=2)
    assert w.path == str(path)
    for i in range(10):
        w.write(make_batch(1000, i))
    w.abort()
    w.abort()  # idempotent
    assert w.closed
    assert os.listdir(tmp_path) == []
    with pytest.raises(WriterError):
        w.write(make_batch(3))
    with pytest.raises(WriterError):
        w.close()


def test_abort_after_close_keeps_file(backend: ModuleType, tmp_path: Path) -> None:
    path = tmp_path / "a.arrow"
    w = backend.IpcWriter(path)
    w.write(make_batch(3))
    w.close()
    w.abort()
    assert read_pyarrow(path, "file").num_rows == 3


def test_garbage_collection_removes_temp_file(backend: ModuleType, tmp_path: Path) -> None:
    w = backend.IpcWriter(tmp_path / "a.arrow")
    w.write(make_batch(100))
    assert len(tmp_leftovers(tmp_path, backend.TMP_SUFFIX)) == 1
    name = tmp_leftovers(tmp_path, backend.TMP_SUFFIX)[0]
    assert name.startswith(".a.arrow.")
    del w
    gc.collect()
    assert os.listdir(tmp_path) == []


def test_context_manager_aborts_on_exception(backend: ModuleType, tmp_path: Path) -> None:
    path = tmp_path / "a.arrow"
    with pytest.raises(RuntimeError, match="boom"):
        with backend.IpcWriter(path) as w:
            w.write(make_batch(10))
            raise RuntimeError("boom")
    assert w.closed
    assert os.listdir(tmp_path) == []


def test_close_without_batch_or_schema(backend: ModuleType, tmp_path: Path) -> None:
    w = backend.IpcWriter(tmp_path / "a.arrow")
    with pytest.raises(InvalidArgument, match="schema"):
        w.close()
    assert os.listdir(tmp_path) == []


def test_overwrite_true_replaces(backend: ModuleType, tmp_path: Path) -> None:
    path = tmp_path / "a.arrow"
    path.write_bytes(b"old")
    with backend.IpcWriter(path) as w:
        w.write(make_batch(4))
    assert read_pyarrow(path, "file").num_rows == 4


# ------------------------------------------------------------------ bad arguments


def test_bad_arguments(backend: ModuleType, tmp_path: Path) -> None:
    path = tmp_path / "a.arrow"
    with pytest.raises(InvalidArgument, match="compression"):
        backend.IpcWriter(path, compression="gzip")
    with pytest.raises(InvalidArgument, match="format"):
        backend.IpcWriter(path, format="parquet")
    with pytest.raises(InvalidArgument, match="queue_size"):
        backend.IpcWriter(path, queue_size=0)
    with pytest.raises(InvalidArgument, match="path"):
        backend.IpcWriter(tmp_path / "missing" / "a.arrow")
    with pytest.raises(InvalidArgument, match="path"):
        backend.IpcWriter(tmp_path)
    path.write_bytes(b"x")
    with pytest.raises(InvalidArgument, match="overwrite"):
        backend.IpcWriter(path, overwrite=False)
    assert os.listdir(tmp_path) == ["a.arrow"]
    assert path.read_bytes() == b"x"


@pytest.mark.parametrize("bad", [42, "text", {"a": [1]}, None, pa.array([1, 2])])
def test_write_non_batch(backend: ModuleType, tmp_path: Path, bad: Any) -> None:
    w = backend.IpcWriter(tmp_path / "a.arrow")
    with pytest.raises(InvalidArgument):
        w.write(bad)
    w.abort()


# ------------------------------------------------------------------ failures in the thread


FAIL_SCRIPT = textwrap.dedent(
    """
    import os, resource, signal, sys
    import numpy as np, pyarrow as pa
    from phasekit.backend import backend_module
    from phasekit.errors import WriterError
    backend = backend_module(sys.argv[1])
    folder = sys.argv[2]
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))
    batch = pa.record_batch({"v": np.arange(1 << 16, dtype=np.int64)})  # 512 KiB
    w = backend.IpcWriter(os.path.join(folder, "big.arrow"), queue_size=2)
    where = "none"
    try:
        for i in range(200):
            w.write(batch)
        where = "close"
        w.close()
    except WriterError as exc:
        print("WriterError at", "close" if where == "close" else "write", ":", exc)
        try:
            w.write(batch)
        except WriterError:
            print("still failing")
        try:
            w.close()
        except WriterError:
            print("close raises")
        sys.exit(0)
    print("no error")
    sys.exit(1)
    """
)


def test_background_write_error_surfaces(backend: ModuleType, tmp_path: Path) -> None:
    # The file size limit makes the background thread's write fail (EFBIG): the error
    # surfaces as WriterError at a later write() (200 batches of 512 KiB, queue of 2).
    name = "rust" if backend.__name__ == "phasekit._core" else "python"
    proc = subprocess.run(
        [sys.executable, "-c", FAIL_SCRIPT, name, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "WriterError at write" in proc.stdout
    assert "still failing" in proc.stdout and "close raises" in proc.stdout
    assert os.listdir(tmp_path) == []


def test_folder_removed_mid_write(backend: ModuleType, tmp_path: Path) -> None:
    folder = tmp_path / "sub"
    folder.mkdir()
    w = backend.IpcWriter(folder / "a.arrow")
    w.write(make_batch(1000))
    shutil.rmtree(folder)
    with pytest.raises(WriterError):
        for i in range(5):
            w.write(make_batch(1000, i))
        w.close()
    assert not folder.exists()
    with pytest.raises(WriterError):
        w.close()


# ------------------------------------------------------------------ crash safety


CRASH_SCRIPT = textwrap.dedent(
    """
    import os, sys
    import numpy as np, pyarrow as pa
    from phasekit.backend import backend_module
    backend = backend_module(sys.argv[1])
    w = backend.IpcWriter(os.path.join(sys.argv[2], "crash.arrow"), compression=sys.argv[3] or None)
    batch = pa.record_batch({"v": np.arange(1 << 15, dtype=np.int64)})
    w.write(batch)
    print("ready", flush=True)
    while True:
        w.write(batch)
    """
)


@pytest.mark.parametrize("compression", [None, "lz4"])
def test_sigkill_before_close_leaves_no_final_file(
    backend: ModuleType, tmp_path: Path, compression: Optional[str]
) -> None:
    name = "rust" if backend.__name__ == "phasekit._core" else "python"
    rng = random.Random(1234)
    for trial in range(4):
        folder = tmp_path / f"t{trial}"
        folder.mkdir()
        proc = subprocess.Popen(
            [sys.executable, "-c", CRASH_SCRIPT, name, str(folder), compression or ""],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.0, 0.4))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        proc.stdout.close()
        names = os.listdir(folder)
        assert "crash.arrow" not in names
        assert len(names) <= 1
        assert all(n.startswith(".crash.arrow.") and n.endswith(backend.TMP_SUFFIX) for n in names)


def dict_batch(values: list[str]) -> pa.RecordBatch:
    return pa.record_batch({"d": pa.array(values).dictionary_encode()})


def test_background_error_surfaces_in_process(backend: ModuleType, tmp_path: Path) -> None:
    # The IPC file format allows one dictionary per field: a batch with another
    # dictionary fails in the background thread; a later write() raises WriterError.
    w = backend.IpcWriter(tmp_path / "d.arrow")
    w.write(dict_batch(["a", "b"]))
    w.write(dict_batch(["c", "d"]))
    with pytest.raises(WriterError, match=r"d\.arrow"):
        for _ in range(2000):  # polls until the thread has failed
            w.write(dict_batch(["a", "b"]))
            time.sleep(0.005)
    with pytest.raises(WriterError):
        w.close()
    assert os.listdir(tmp_path) == []


def test_background_error_surfaces_at_close(backend: ModuleType, tmp_path: Path) -> None:
    w = backend.IpcWriter(tmp_path / "d.arrow")
    w.write(dict_batch(["a", "b"]))
    w.write(dict_batch(["c", "d"]))
    with pytest.raises(WriterError):
        w.close()
    assert w.closed
    assert os.listdir(tmp_path) == []


def test_stream_format_allows_dictionary_replacement(backend: ModuleType, tmp_path: Path) -> None:
    path = tmp_path / "d.arrows"
    with backend.IpcWriter(path, format="stream") as w:
        w.write(dict_batch(["a", "b"]))
        w.write(dict_batch(["c", "d"]))
    got = read_pyarrow(path, "stream").column("d").to_pylist()
    assert got == ["a", "b", "c", "d"]
