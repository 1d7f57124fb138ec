"""FileStore: formats read back by other tools, durability, corruption, faults, pickle refusal."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from phasekit.errors import (
    CorruptDataError,
    InvalidArgument,
    MissingDependency,
    StorageError,
    UnknownKey,
)
from phasekit.stores import FileStore, JsonLinesRecorder, durable
from phasekit.stores.file import MANIFEST_DIR
from stores_util import sample_values, small_disk, store_backend  # noqa: F401

pytestmark = pytest.mark.usefixtures("store_backend")


def trades(n: int = 2000) -> pa.Table:
    return pa.table(
        {
            "date": pa.array([f"2024-01-{1 + k % 3:02d}" for k in range(n)]),
            "symbol": pa.array(["AAPL", "MSFT", "GOOG", "AMZN"][k % 4] for k in range(n)),
            "qty": pa.array(range(n), pa.int64()),
            "px": pa.array([100.0 + k * 0.01 for k in range(n)]),
        }
    )


def visible(folder: Path) -> list[str]:
    """Names in a folder (and in its manifest folder) that are not hidden temporaries."""
    names = sorted(os.listdir(folder))
    if (folder / MANIFEST_DIR).exists():
        names += sorted(f"{MANIFEST_DIR}/{n}" for n in os.listdir(folder / MANIFEST_DIR))
    return names


def leftovers(folder: Path) -> list[str]:
    return [str(p) for p in folder.rglob("*") if durable.is_tmp_name(p.name)]


def duckdb_rows_of_arrow_file(path: Path) -> list[dict[str, Any]]:
    """Rows as DuckDB sees them, scanning the IPC file through pyarrow's reader (DuckDB has
    no built-in Arrow IPC file reader without its network-installed extension)."""
    con = duckdb.connect()
    con.register("src", pa.ipc.open_file(pa.memory_map(str(path))).read_all())
    rows: list[dict[str, Any]] = (
        con.sql("SELECT * FROM src ORDER BY qty").to_arrow_table().to_pylist()
    )
    return rows


# ------------------------------------------------------------------ other readers


@pytest.mark.parametrize("compression", [None, "lz4", "zstd"])
def test_arrow_files_read_by_pyarrow_polars_duckdb(tmp_path: Path, compression: Any) -> None:
    table = trades()
    store = FileStore(tmp_path, compression=compression)
    ref = store.put("trades", table)
    assert ref.path == tmp_path / "trades.arrow"
    assert pa.ipc.open_file(str(ref.path)).read_all().equals(table)
    assert pl.read_ipc(ref.path).to_arrow().cast(table.schema).equals(table)
    assert duckdb_rows_of_arrow_file(ref.path) == table.to_pylist()
    assert ref.checksum == durable.file_checksum(ref.path)


@pytest.mark.parametrize("compression", ["snappy", "zstd", "gzip"])
def test_parquet_partition_by_read_by_pyarrow_dataset_and_duckdb(
    tmp_path: Path, compression: str
) -> None:
    table = trades()
    store = FileStore(
        tmp_path, format="parquet", compression=compression, partition_by=["date", "symbol"]
    )
    ref = store.put("signals", table)
    root = tmp_path / "signals.parquet"
    assert ref.path == root and root.is_dir()
    assert sorted(p.name for p in root.iterdir()) == [
        "date=2024-01-01",
        "date=2024-01-02",
        "date=2024-01-03",
    ]
    assert (root / "date=2024-01-01" / "symbol=AAPL").is_dir()
    dataset = ds.dataset(str(root), format="parquet", partitioning="hive")
    got = dataset.to_table().select(table.schema.names).sort_by("qty")
    assert got.cast(table.schema).equals(table)
    rows = duckdb.sql(
        f"SELECT date::VARCHAR, symbol, qty, px FROM read_parquet('{root}/**/*.parquet', hive_partitioning=true) ORDER BY qty"
    ).fetchall()
    assert rows == [tuple(r.values()) for r in table.to_pylist()]
    back = store.get(ref)
    assert back.schema.names == table.schema.names
    assert back.sort_by("qty").equals(table)
    meta = pq.ParquetFile(next(root.rglob("*.parquet"))).metadata
    assert meta.row_group(0).column(0).compression.lower() == compression


def test_parquet_files_carry_page_checksums(tmp_path: Path) -> None:
    table = pa.table({"x": np.arange(200_000, dtype=np.int64)})
    store = FileStore(tmp_path, format="parquet", compression="none", verify=False)
    ref = store.put("big", table)
    path = ref.path
    assert path is not None
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x10  # inside the data pages of the one column
    path.write_bytes(bytes(data))
    with pytest.raises(OSError, match=r"(?i)crc|checksum"):
        pq.read_table(str(path), page_checksum_verification=True)
    with pytest.raises(CorruptDataError, match="big"):
        store.get("big")  # page checksums catch it even with whole-file verification off


def test_partition_by_needs_parquet_and_existing_columns(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match="needs format 'parquet'"):
        FileStore(tmp_path, partition_by=["date"])
    store = FileStore(tmp_path, format="parquet", partition_by=["nope"])
    with pytest.raises(InvalidArgument, match="not in the value"):
        store.put("t", trades(10))
    store.put("metrics", {"sharpe": 1.0})  # non-table values ignore partition_by
    assert store.get("metrics") == {"sharpe": 1.0}


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"format": "xml"}, "format 'xml' is not a known format; allowed: arrow, parquet"),
        (
            {"compression": "snappy"},
            "compression 'snappy' is not supported by format 'arrow'; allowed: none, 'lz4', 'zstd'",
        ),
        ({"format": "parquet", "compression": "lzma"}, "format 'parquet'"),
        ({"formats": {"metrics": "yaml"}}, r"formats\['metrics'\] 'yaml'"),
        ({"formats": {"../x": "json"}}, "formats key"),
        ({"partition_by": "date", "format": "parquet"}, "list of column names"),
    ],
)
def test_bad_file_store_arguments(tmp_path: Path, kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(InvalidArgument, match=match):
        FileStore(tmp_path, **kwargs)


def test_per_output_type_formats(tmp_path: Path) -> None:
    store = FileStore(tmp_path, format="parquet", formats={"metrics": "json", "signals": "csv"})
    m = store.put("metrics", {"sharpe": 1.5})
    s = store.put("run1_signals", trades(10), {"output_type": "signals"})
    p = store.put("portfolio", trades(10))
    x = store.put("other", trades(10), format="arrow")
    assert (m.format, s.format, p.format, x.format) == ("json", "csv", "parquet", "arrow")
    assert (tmp_path / "metrics.json").read_text() == '{"sharpe": 1.5}'
    assert store.get(s).equals(trades(10))


# ------------------------------------------------------------------ lifecycle


def test_overwrite_delete_list_and_stale_refs(tmp_path: Path) -> None:
    rec = JsonLinesRecorder(tmp_path / "rec.jsonl")
    store = FileStore(tmp_path / "s", recorder=rec)
    first = store.put("a", {"v": 1})
    second = store.put("a", trades(5), format="parquet")
    assert not (tmp_path / "s" / "a.arrow").exists()  # the old format's file is gone
    assert store.get("a").equals(trades(5))
    with pytest.raises(UnknownKey, match="replaced"):
        store.get(first)
    assert [r.uri for r in store.list()] == [second.uri]
    assert [r.uri for r in JsonLinesRecorder.read(tmp_path / "rec.jsonl")] == [second.uri]
    store.delete(second)
    assert store.list() == [] and JsonLinesRecorder.read(tmp_path / "rec.jsonl") == []
    assert visible(tmp_path / "s") == [MANIFEST_DIR]
    with pytest.raises(UnknownKey):
        store.get("a")
    stats = store.stats()
    assert (stats["puts"], stats["deletes"], stats["items"]) == (2, 1, 0)


def test_recorder_sees_only_durable_items(tmp_path: Path) -> None:
    seen: list[Any] = []

    class Checking:
        def record_item(self, ref: Any) -> None:
            assert ref.path.exists() and durable.file_checksum(ref.path) == ref.checksum
            assert (tmp_path / MANIFEST_DIR / f"{ref.key}.json").exists()
            seen.append(ref)

    store = FileStore(tmp_path, recorder=Checking())
    for i, value in enumerate(sample_values().values()):
        store.put(f"k{i}", value)
    assert len(seen) == 6


# ------------------------------------------------------------------ corruption


def _truncate(path: Path) -> None:
    with open(path, "r+b") as fh:
        fh.truncate(path.stat().st_size // 2)


def _flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", [_truncate, _flip], ids=["truncated", "bit_flipped"])
@pytest.mark.parametrize("fmt", ["arrow", "parquet", "json", "csv", "partitioned"])
def test_damaged_files_raise_corrupt_data_naming_item_and_file(
    tmp_path: Path, fmt: str, damage: Any
) -> None:
    if fmt == "partitioned":
        store = FileStore(tmp_path, format="parquet", partition_by=["symbol"])
    else:
        store = FileStore(tmp_path, format=fmt)
    ref = store.put("trades", trades(500))
    assert ref.path is not None
    target = next(ref.path.rglob("*.parquet")) if ref.path.is_dir() else ref.path
    damage(target)
    with pytest.raises(CorruptDataError) as err:
        store.get("trades")
    assert "'trades'" in str(err.value) and str(ref.path) in str(err.value)
    assert store.stats()["corrupt_reads"] == 1


def test_missing_file_and_unreadable_manifest(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    ref = store.put("a", {"x": 1})
    assert ref.path is not None
    ref.path.unlink()
    with pytest.raises(CorruptDataError, match="missing"):
        store.get("a")
    store.put("b", {"x": 2})
    (tmp_path / MANIFEST_DIR / "b.json").write_text("{not json")
    with pytest.raises(CorruptDataError, match="manifest"):
        store.get("b")


# ------------------------------------------------------------------ pickle


def test_pickle_needs_allow_pickle_to_write_and_to_load(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match="allow_pickle"):
        FileStore(tmp_path, format="pickle").put("x", {"a": 1})
    assert not (tmp_path / "x.pkl").exists()
    trusted = FileStore(tmp_path, format="pickle", allow_pickle=True)
    obj = {"a": {1, 2}, "b": complex(1, 2)}
    ref = trusted.put("x", obj)
    assert trusted.get(ref) == obj
    untrusted = FileStore(tmp_path)
    with pytest.raises(InvalidArgument) as err:
        untrusted.get("x")
    assert "pickle" in str(err.value) and "arbitrary code" in str(err.value)
    assert "allow_pickle=True" in str(err.value)


def test_a_store_never_loads_files_outside_its_folder(tmp_path: Path) -> None:
    elsewhere = FileStore(tmp_path / "elsewhere", format="pickle", allow_pickle=True)
    ref = elsewhere.put("x", {"a": 1})
    mine = FileStore(tmp_path / "mine", format="pickle", allow_pickle=True)
    with pytest.raises(InvalidArgument, match="only its own files"):
        mine.get(ref)


def test_hdf5_without_h5py_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import builtins

    real_import = builtins.__import__

    def no_h5py(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "h5py":
            raise ImportError("No module named 'h5py'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_h5py)
    with pytest.raises(MissingDependency, match=r"needs the optional h5py package \(pip install"):
        FileStore(tmp_path, format="hdf5").put("a", np.zeros(3))


# ------------------------------------------------------------------ disk full


def _enospc(*_args: Any, **_kwargs: Any) -> None:
    raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize("fmt", ["parquet", "json", "csv"])
def test_injected_disk_full_during_the_data_write_keeps_the_previous_version(
    tmp_path: Path, fmt: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = FileStore(tmp_path, format=fmt)
    old = store.put("t", trades(10))
    before = visible(tmp_path)
    monkeypatch.setattr(durable, "fsync_file", _enospc)
    with pytest.raises(StorageError, match="disk is full") as err:
        store.put("t", trades(20))
    assert err.value.errno == errno.ENOSPC and "previous state is intact" in str(err.value)
    with pytest.raises(StorageError, match="disk is full"):
        store.put("new", trades(20))
    monkeypatch.undo()
    assert store.get("t").equals(trades(10))
    assert store.list() == [old]
    assert visible(tmp_path) == before and leftovers(tmp_path) == []
    assert store.stats()["write_failures"] == 2


@pytest.mark.parametrize("fmt", ["arrow", "parquet"])
def test_injected_disk_full_while_committing_the_manifest_restores_the_previous_file(
    tmp_path: Path, fmt: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The data file is already renamed into place when the manifest write fails: the
    previous file must come back, else the manifest would describe bytes that are gone."""
    store = FileStore(tmp_path, format=fmt)
    store.put("t", trades(10))
    real_write_json = durable.write_json

    def failing_manifest(final: Path, obj: Any, what: str) -> str:
        raise durable.storage_error(OSError(errno.ENOSPC, "No space left on device"), what)

    monkeypatch.setattr("phasekit.stores.file.write_json", failing_manifest)
    with pytest.raises(StorageError, match="disk is full"):
        store.put("t", trades(30))
    monkeypatch.setattr("phasekit.stores.file.write_json", real_write_json)
    assert store.get("t").equals(trades(10))
    assert leftovers(tmp_path) == []


def test_a_backup_left_by_a_crash_is_restored_on_open(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    ref = store.put("t", trades(10))
    assert ref.path is not None
    # what a crash between the data rename and the manifest write leaves behind
    backup = durable.tmp_name(ref.path, durable.OLD_SUFFIX)
    os.link(ref.path, backup)
    newer = trades(99)
    with pa.ipc.new_file(str(ref.path) + ".x", newer.schema) as w:
        w.write_table(newer)
    os.replace(str(ref.path) + ".x", ref.path)
    reopened = FileStore(tmp_path)
    assert reopened.get("t").equals(trades(10))
    assert leftovers(tmp_path) == []
    # a stale backup (not the committed bytes) is removed and the committed file kept
    backup.write_bytes(b"stale")
    assert FileStore(tmp_path).get("t").equals(trades(10))
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("fmt", ["arrow", "parquet", "json"])
def test_real_disk_full_keeps_previous_state(small_disk: Path, fmt: str) -> None:  # noqa: F811
    store = FileStore(small_disk, format=fmt, compression=None)
    small = pa.table({"x": np.arange(1000, dtype=np.int64)})
    big = pa.table({"x": np.random.default_rng(0).random(400_000)})  # 3.2 MB > 1 MiB
    ref = store.put("a", small)
    store.put("b", {"k": 1})
    before = visible(small_disk)
    with pytest.raises(StorageError, match="disk is full"):
        store.put("a", big)
    with pytest.raises(StorageError, match="disk is full"):
        store.put("c", big)
    assert visible(small_disk) == before and leftovers(small_disk) == []
    assert store.get("a").equals(small) and store.get("b") == {"k": 1}
    assert [r.key for r in store.list()] == ["a", "b"] and store.ref("a") == ref
    # once there is room again, writes work
    store.delete("b")
    store.put("a", pa.table({"x": np.arange(10, dtype=np.int64)}))
    assert store.get("a").num_rows == 10


# ------------------------------------------------------------------ group commit


@pytest.mark.parametrize("fmt", ["arrow", "parquet", "json", "csv"])
def test_put_many_commits_a_group(tmp_path: Path, fmt: str) -> None:
    rec = JsonLinesRecorder(tmp_path / "rec.jsonl")
    store = FileStore(tmp_path / "s", format=fmt, recorder=rec)
    store.put("k3", trades(3))
    frames = {f"k{i}": trades(10 + i) for i in range(12)}
    refs = store.put_many(frames, {"stage": "opt"})
    assert [r.key for r in refs] == list(frames)
    for ref, table in zip(refs, frames.values()):
        assert ref.path is not None and durable.file_checksum(ref.path) == ref.checksum
        assert store.get(ref).equals(table) and ref.metadata["stage"] == "opt"
    assert len(JsonLinesRecorder.read(tmp_path / "rec.jsonl")) == 12
    assert leftovers(tmp_path) == []
    with pytest.raises(InvalidArgument, match="more than once"):
        store.put_many([("a", trades(1)), ("a", trades(2))])


def test_put_many_failure_leaves_every_previous_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = FileStore(tmp_path)
    store.put_many({f"k{i}": trades(5) for i in range(6)})
    before = visible(tmp_path)
    real_replace = os.replace
    calls = {"n": 0}

    def flaky_replace(src: Any, dst: Any) -> None:
        calls["n"] += 1
        if calls["n"] == 4:  # in the middle of renaming the data files
            raise OSError(errno.ENOSPC, "No space left on device")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", flaky_replace)
    with pytest.raises(StorageError, match="disk is full"):
        store.put_many({f"k{i}": trades(50) for i in range(3, 10)})
    monkeypatch.undo()
    assert visible(tmp_path) == before and leftovers(tmp_path) == []
    for i in range(6):
        assert store.get(f"k{i}").equals(trades(5))
    assert "k7" not in store


def test_put_many_sends_partitioned_values_through_put(tmp_path: Path) -> None:
    store = FileStore(tmp_path, format="parquet", partition_by=["symbol"])
    refs = store.put_many({"a": trades(40), "m": {"sharpe": 1.0}})
    assert refs[0].path is not None and refs[0].path.is_dir()
    assert store.get("m") == {"sharpe": 1.0}
