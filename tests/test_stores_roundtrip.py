"""Every store with every value type: get returns the type and content that was put."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pytest

from phasekit.errors import InvalidArgument, UnknownKey
from phasekit.stores import FileStore, HybridStore, MemoryStore, Store, StreamStore
from phasekit.stores.values import KINDS, kind_of
from stores_util import assert_same, sample_values, store_backend  # noqa: F401

pytestmark = pytest.mark.usefixtures("store_backend")
VALUES = sample_values()
NAMES = list(VALUES)

# what each file format stores (the others refuse with InvalidArgument, tested below)
FORMAT_KINDS = {
    "arrow": NAMES,
    "parquet": NAMES,
    "json": NAMES,
    "pickle": NAMES,
    "csv": ["table", "batch", "polars", "pandas", "numpy"],
    "hdf5": ["batch", "polars", "pandas", "numpy", "json"],  # no nulls: "table" has some
}


def test_sample_values_cover_every_kind() -> None:
    assert sorted(kind_of(v) for v in VALUES.values()) == sorted(KINDS)


@pytest.mark.parametrize("name", NAMES)
def test_memory_store_returns_the_same_object(name: str) -> None:
    store = MemoryStore(run="r", phase="p")
    value = VALUES[name]
    ref = store.put(name, value, {"note": "x"})
    assert ref.uri == f"memory://r/p/{name}"
    assert ref.kind == kind_of(value) and ref.format == "memory"
    assert dict(ref.metadata) == {"note": "x"}
    assert store.get(ref) is value
    assert store.get(name) is value
    assert isinstance(store, Store)


def test_memory_store_copy_on_put_isolates_mutable_values() -> None:
    store = MemoryStore(copy_on_put=True)
    arr = np.zeros(4)
    frame = pd.DataFrame({"a": [1, 2]})
    doc = {"a": [1]}
    table = VALUES["table"]
    store.put("arr", arr)
    store.put("frame", frame)
    store.put("doc", doc)
    store.put("table", table)
    arr[0] = 9
    frame.loc[0, "a"] = 9
    doc["a"].append(2)
    assert store.get("arr")[0] == 0
    assert store.get("frame").loc[0, "a"] == 1
    assert store.get("doc") == {"a": [1]}
    assert store.get("table") is table  # Arrow data is immutable: never copied


def test_memory_store_accepts_any_object_and_counts() -> None:
    store = MemoryStore()
    obj = object()
    ref = store.put("o", obj)
    assert ref.kind == "object" and store.get("o") is obj
    with pytest.raises(UnknownKey, match="no item 'missing'"):
        store.get("missing")
    store.delete(ref)
    with pytest.raises(UnknownKey):
        store.delete("o")
    stats = store.stats()
    assert (stats["puts"], stats["hits"], stats["misses"], stats["deletes"]) == (1, 1, 1, 1)


@pytest.mark.parametrize("fmt,name", [(f, n) for f, names in FORMAT_KINDS.items() for n in names])
def test_file_store_round_trip(tmp_path: Path, fmt: str, name: str) -> None:
    if fmt == "hdf5":
        pytest.importorskip("h5py", reason="hdf5 is an optional extra")
    store = FileStore(tmp_path, format=fmt, allow_pickle=True, run="r", phase="p")
    value = VALUES[name]
    ref = store.put(name, value, {"stage": "opt"})
    assert ref.format == fmt and ref.kind == kind_of(value)
    assert ref.checksum is not None and ref.checksum.startswith("crc32:")
    assert ref.path is not None and ref.path.exists() and ref.path.parent == tmp_path
    assert ref.size_bytes == ref.path.stat().st_size
    assert_same(value, store.get(ref))
    # a fresh store on the same folder (another process, later) reads it too
    assert_same(value, FileStore(tmp_path, allow_pickle=True).get(name))
    assert [r.key for r in store.list()] == [name]


@pytest.mark.parametrize("fmt", ["csv", "hdf5"])
def test_file_formats_refuse_what_they_cannot_hold(tmp_path: Path, fmt: str) -> None:
    if fmt == "hdf5":
        pytest.importorskip("h5py", reason="hdf5 is an optional extra")
    store = FileStore(tmp_path, format=fmt)
    bad = {"csv": VALUES["json"], "hdf5": VALUES["table"]}[fmt]
    with pytest.raises(InvalidArgument, match=f"format '{fmt}'"):
        store.put("x", bad)
    assert store.list() == []
    assert [p.name for p in tmp_path.iterdir()] == [".phasekit"]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("budget", [10**9, 0], ids=["in_memory", "spilled"])
def test_hybrid_store_round_trip(tmp_path: Path, name: str, budget: int) -> None:
    with HybridStore(budget, tmp_path) as store:
        value = VALUES[name]
        ref = store.put(name, value)
        assert ref.format == "hybrid" and ref.uri == f"memory://run/phase/{name}"
        stats = store.stats()
        if budget:
            assert store.get(ref) is value
            assert stats["items_in_memory"] == 1 and stats["spills"] == 0
        else:
            assert stats["items_on_disk"] == 1 and stats["spills"] == 1
            assert_same(value, store.get(ref))
            assert_same(value, store.get(name))


def test_hybrid_refuses_object_arrays_and_non_json(tmp_path: Path) -> None:
    with HybridStore(100, tmp_path) as store:
        with pytest.raises(InvalidArgument, match="object"):
            store.put("o", np.array([object()], dtype=object))
        with pytest.raises(InvalidArgument, match="tuple"):
            store.put("t", {"a": (1, 2)})


@pytest.mark.parametrize("name", ["table", "batch", "polars", "pandas"])
def test_stream_store_round_trip(tmp_path: Path, name: str) -> None:
    value = VALUES[name]
    with StreamStore(tmp_path, buffer_size=2) as store:
        for _ in range(3):
            ref = store.put(name, value)
        assert ref.kind == kind_of(value) and ref.uri == f"stream://run/phase/{name}"
        final = store.finish(name)
    assert final.metadata["items"] == 3
    items = list(StreamStore(tmp_path).items(name))
    assert len(items) == 3
    for item in items:
        if isinstance(value, pd.DataFrame):
            # a part shares one schema, so pandas items come back with their columns
            pd.testing.assert_frame_equal(item, value, check_index_type=False)
        else:
            assert_same(value, item)
    whole = StreamStore(tmp_path).get(name)
    expected_type: Any = pa.Table if isinstance(value, (pa.Table, pa.RecordBatch)) else type(value)
    assert type(whole) is expected_type
    assert len(whole) == 3 * len(value)


def test_stream_store_rows_and_one_kind_per_stream(tmp_path: Path) -> None:
    with StreamStore(tmp_path, buffer_size=4) as store:
        for i in range(10):
            store.put("rows", {"i": i, "x": i / 2})
        with pytest.raises(InvalidArgument, match="one item type"):
            store.put("rows", pa.table({"i": [1]}))
        with pytest.raises(InvalidArgument, match="stream carries"):
            store.put("other", np.zeros(3))
    assert StreamStore(tmp_path).get("rows") == [{"i": i, "x": i / 2} for i in range(10)]


def test_polars_and_pandas_travel_through_arrow_in_files(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    store.put("pl", pl.DataFrame({"a": [1, None, 3]}))
    store.put("pd", pd.DataFrame({"a": pd.array([1, None, 3], dtype="Int64")}))
    assert store.get("pl")["a"].to_list() == [1, None, 3]
    assert store.get("pd")["a"].isna().tolist() == [False, True, False]
