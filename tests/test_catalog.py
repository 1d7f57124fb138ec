"""The catalog API on SQLite and on a real PostgreSQL server."""

from __future__ import annotations

import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest

from catalog_util import store
from phasekit.catalog import (
    INLINE_MAX_BYTES,
    Catalog,
    CatalogRecorder,
    NewItem,
    open_catalog,
    path_to_uri,
    ref_fields,
    reference_checksum,
)
from phasekit.errors import CatalogError, InvalidArgument, UnknownKey

pytest_plugins = ["conftest_pg"]

T0 = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)


def test_record_and_get_round_trip(catalog: Catalog) -> None:
    run = catalog.start_process("opt", config={"b": 1, "a": {"c": [1, 2]}}, backend="rust")
    item_id = store(
        catalog,
        run,
        "optimize",
        "portfolio_3",
        metadata={"metrics": {"sharpe": 1.25}, "rows": 100},
        phase="optimize",
        window_id="w001",
        container_id="portfolio_3",
        created_at=T0,
    )
    item = catalog.get_item(item_id)
    assert item.id == item_id
    assert (item.process_id, item.stage_name, item.entity_name) == (run, "optimize", "portfolio_3")
    assert (item.phase, item.window_id, item.container_id) == ("optimize", "w001", "portfolio_3")
    assert item.storage_type == "reference" and item.state == "present" and item.format == "arrow"
    assert item.metadata == {"metrics": {"sharpe": 1.25}, "rows": 100}
    assert item.created_at == T0 and item.created_at.tzinfo is not None
    assert item.path is not None and item.path.exists()
    assert item.size_bytes == item.path.stat().st_size
    assert item.checksum == reference_checksum(item.path)
    assert item.data_reference == path_to_uri(item.path)
    proc = catalog.get_process(run)
    assert proc.config == {"b": 1, "a": {"c": [1, 2]}}
    assert list(proc.config) == ["b", "a"]
    assert proc.backend == "rust" and proc.status == "running" and proc.finished_at is None
    with pytest.raises(UnknownKey, match="item 999999"):
        catalog.get_item(999999)


def test_inline_items_keep_value_and_key_order(catalog: Catalog) -> None:
    run = catalog.start_process("wf")
    value = {"zeta": [1.5, None, "x"], "alpha": {"nested": True}}
    item = catalog.get_item(catalog.record_item(run, "summary", "phase_summary", inline_data=value))
    assert item.storage_type == "inline" and item.data_reference is None and item.path is None
    assert item.inline_data == value and list(item.inline_data) == ["zeta", "alpha"]
    assert item.size_bytes == len(b'{"zeta":[1.5,null,"x"],"alpha":{"nested":true}}')
    scalar = catalog.get_item(catalog.record_item(run, "summary", "count", inline_data=42))
    assert scalar.inline_data == 42
    with pytest.raises(InvalidArgument, match=f"at most {INLINE_MAX_BYTES}"):
        catalog.record_item(run, "summary", "big", inline_data="x" * (INLINE_MAX_BYTES + 1))
    with pytest.raises(InvalidArgument, match="needs data_reference"):
        catalog.record_item(run, "summary", "nothing")


def test_memory_and_stream_references_need_no_file(catalog: Catalog) -> None:
    run = catalog.start_process("wf")
    a = catalog.record_item(run, "p", "k", data_reference=f"memory://{run}/p/k", size_bytes=10)
    b = catalog.record_item(run, "p", "s", data_reference=f"stream://{run}/p/s")
    assert catalog.get_item(a).path is None
    assert catalog.get_item(b).data_reference == f"stream://{run}/p/s"
    assert [i.id for i in catalog.items_by_reference(f"memory://{run}/p/k")] == [a]


def test_metadata_cleaned_for_json(catalog: Catalog) -> None:
    np = pytest.importorskip("numpy")
    run = catalog.start_process("wf")
    meta = {
        "n": np.int64(3),
        "x": np.float32(0.5),
        "nan": float("nan"),
        "arr": np.arange(3),
        "p": Path("/a"),
    }
    item = catalog.get_item(catalog.record_item(run, "p", "e", inline_data=1, metadata=meta))
    assert item.metadata == {"n": 3, "x": 0.5, "nan": None, "arr": [0, 1, 2], "p": "/a"}
    with pytest.raises(InvalidArgument, match=r"metadata.*not JSON-encodable"):
        catalog.record_item(run, "p", "e", inline_data=1, metadata={"o": object()})


def _filter_fixture(catalog: Catalog) -> tuple[str, str, dict[str, int]]:
    run = catalog.start_process("sweep", started_at=T0)
    other = catalog.start_process("sweep", started_at=T0 + timedelta(hours=1))
    ids = {
        "a": store(catalog, run, "optimize", "AAPL", phase="optimize", container_id="c1",
                   metadata={"metrics": {"sharpe": 1.5}, "fast": 5, "tag": "x", "ok": True},
                   created_at=T0),
        "b": store(catalog, run, "optimize", "MSFT", phase="optimize", container_id="c2",
                   metadata={"metrics": {"sharpe": 2}, "fast": 10, "tag": "y", "ok": False},
                   created_at=T0 + timedelta(minutes=10)),
        "c": store(catalog, run, "validate", "AAPL", phase="validate", window_id="w1",
                   metadata={"metrics": {"sharpe": 1.0}, "fast": 5, "tag": None, "ok": 1},
                   created_at=T0 + timedelta(minutes=20)),
        "d": store(catalog, other, "optimize", "AAPL", metadata={"fast": 5}, created_at=T0),
    }  # fmt: skip
    return run, other, ids


def test_list_filters(catalog: Catalog) -> None:
    run, other, ids = _filter_fixture(catalog)

    def listed(**kw: object) -> list[int]:
        return [i.id for i in catalog.list_items(**kw)]  # type: ignore[arg-type]

    assert listed(process_id=run) == [ids["a"], ids["b"], ids["c"]]
    assert listed() == sorted(ids.values())
    assert listed(process_id=run, stage="optimize") == [ids["a"], ids["b"]]
    assert listed(process_id=run, entity="AAPL") == [ids["a"], ids["c"]]
    assert listed(entity="AAPL") == [ids["a"], ids["c"], ids["d"]]
    assert listed(process_id=run, phase="validate", window="w1") == [ids["c"]]
    assert listed(process_id=run, container="c2") == [ids["b"]]
    assert listed(process_id=run, limit=2) == [ids["a"], ids["b"]]
    assert listed(process_id=run, stage="nope") == []
    assert listed(process_id=other) == [ids["d"]]


@pytest.mark.parametrize(
    ("meta", "expected"),
    [
        ({"fast": 5}, "ac"),
        ({"fast": 5.0}, "ac"),
        ({"fast": 10}, "b"),
        ({"metrics.sharpe": 2.0}, "b"),
        ({"metrics.sharpe": 1}, "c"),
        ({"tag": "x"}, "a"),
        ({"tag": None}, "c"),
        ({"ok": True}, "a"),
        ({"ok": False}, "b"),
        ({"ok": 1}, "c"),
        ({"fast": "5"}, ""),
        ({"fast": 5, "tag": "x"}, "a"),
        ({"missing": 1}, ""),
        ({"metrics.missing": 1}, ""),
    ],
)
def test_meta_filters(catalog: Catalog, meta: dict[str, object], expected: str) -> None:
    run, _, ids = _filter_fixture(catalog)
    got = [i.id for i in catalog.list_items(run, meta=meta)]
    assert got == [ids[k] for k in expected]


def test_meta_filter_rejects_bad_keys_and_values(catalog: Catalog) -> None:
    run = catalog.start_process("wf")
    with pytest.raises(InvalidArgument, match="metadata filter key"):
        catalog.list_items(run, meta={'a"b': 1})
    with pytest.raises(InvalidArgument, match="metadata filter key"):
        catalog.list_items(run, meta={"a..b": 1})
    with pytest.raises(InvalidArgument, match="string, number, boolean or None"):
        catalog.list_items(run, meta={"a": [1]})


def test_since_filter(catalog: Catalog) -> None:
    run, _, ids = _filter_fixture(catalog)
    assert [i.id for i in catalog.list_items(run, since=T0 + timedelta(minutes=10))] == [
        ids["b"],
        ids["c"],
    ]
    assert [i.id for i in catalog.list_items(run, since="2024-05-01T12:15:00+00:00")] == [ids["c"]]
    assert [i.id for i in catalog.list_items(run, since="2024-05-01T14:15:00+02:00")] == [ids["c"]]
    assert [i.id for i in catalog.list_items(run, since=datetime(2024, 5, 1, 12, 5))] == [
        ids["b"],
        ids["c"],
    ]
    assert catalog.list_items(run, since="1h") == []
    fresh = catalog.record_item(run, "late", "x", inline_data=1)
    assert [i.id for i in catalog.list_items(run, since="30m")] == [fresh]
    with pytest.raises(InvalidArgument, match="since 'yesterday'"):
        catalog.list_items(run, since="yesterday")


def test_processes(catalog: Catalog) -> None:
    a = catalog.start_process("wf1", process_id="run-a", started_at=T0)
    b = catalog.start_process("wf1", process_id="run-b", started_at=T0 + timedelta(days=1))
    c = catalog.start_process("wf2", process_id="run-c", started_at=T0 + timedelta(hours=1))
    assert (a, b, c) == ("run-a", "run-b", "run-c")
    assert [p.process_id for p in catalog.list_processes()] == ["run-b", "run-c", "run-a"]
    assert [p.process_id for p in catalog.list_processes("wf1")] == ["run-b", "run-a"]
    latest = catalog.latest_process()
    assert latest is not None and latest.process_id == "run-b"
    latest2 = catalog.latest_process("wf2")
    assert latest2 is not None and latest2.process_id == "run-c"
    assert catalog.latest_process("none") is None
    assert catalog.resolve_run("latest").process_id == "run-b"
    done = catalog.finish_process(a, "failed", finished_at=T0 + timedelta(minutes=5))
    assert done.status == "failed" and done.finished_at == T0 + timedelta(minutes=5)
    assert [p.process_id for p in catalog.list_processes(status="running")] == ["run-b", "run-c"]
    with pytest.raises(CatalogError, match="already exists"):
        catalog.start_process("wf1", process_id="run-a")
    with pytest.raises(UnknownKey, match="run 'nope'"):
        catalog.finish_process("nope")
    with pytest.raises(InvalidArgument, match="allowed: completed, failed, interrupted"):
        catalog.finish_process(a, "running")
    with pytest.raises(InvalidArgument, match="allowed: running, completed"):
        catalog.list_processes(status="bogus")
    generated = catalog.start_process("wf3")
    assert generated.startswith("wf3-") and catalog.get_process(generated).workflow == "wf3"


def test_record_needs_a_known_run(catalog: Catalog) -> None:
    with pytest.raises(CatalogError, match=r"run 'ghost' is not in catalog .*start_process"):
        catalog.record_item("ghost", "p", "e", inline_data=1)


def test_record_checks_the_file(catalog: Catalog, results_dir: Path) -> None:
    run = catalog.start_process("wf")
    path = results_dir / "f.json"
    path.write_text("[1, 2, 3]")
    uri, crc = path_to_uri(path), reference_checksum(path)
    with pytest.raises(CatalogError, match="only once its file is durable"):
        catalog.record_item(
            run, "p", "e", data_reference=path_to_uri(results_dir / "nope"), checksum=crc
        )
    with pytest.raises(CatalogError, match="has 9 bytes, size_bytes says 5"):
        catalog.record_item(run, "p", "e", data_reference=uri, size_bytes=5, checksum=crc)
    with pytest.raises(InvalidArgument, match="with its checksum"):
        catalog.record_item(run, "p", "e", data_reference=uri, size_bytes=9)
    with pytest.raises(InvalidArgument, match="checksum 'md5:x' is not valid"):
        catalog.record_item(run, "p", "e", data_reference=uri, size_bytes=9, checksum="md5:x")
    with pytest.raises(
        CatalogError, match="unsupported scheme; allowed: file://, memory://, stream://, s3://"
    ):
        catalog.record_item(run, "p", "e", data_reference="ftp://bucket/x", size_bytes=9)
    # an object (results on object storage) needs its checksum and a run on object storage
    with pytest.raises(InvalidArgument, match="object; record it with its checksum"):
        catalog.record_item(run, "p", "e", data_reference="s3://bucket/x", size_bytes=9)
    with pytest.raises(CatalogError, match="not on object storage"):
        catalog.record_item(run, "p", "e", data_reference="s3://bucket/x", checksum=crc)
    with pytest.raises(CatalogError, match="names host"):
        catalog.record_item(run, "p", "e", data_reference="file://remote/x", checksum=crc)
    with pytest.raises(InvalidArgument, match="size_bytes -1"):
        catalog.record_item(run, "p", "e", data_reference=uri, size_bytes=-1, checksum=crc)
    with pytest.raises(InvalidArgument, match="storage_type 'blob'"):
        catalog.record_item(run, "p", "e", inline_data=1, storage_type="blob")
    assert catalog.list_items(run) == []
    ok = catalog.record_item(run, "p", "e", data_reference=uri, size_bytes=9, checksum=crc)
    assert catalog.verify_item(ok).id == ok


def test_record_items_is_all_or_nothing(catalog: Catalog) -> None:
    run = catalog.start_process("wf")
    good = NewItem(run, "p", "a", inline_data=1)
    with pytest.raises(InvalidArgument):
        catalog.record_items([good, NewItem(run, "p", "../x", inline_data=2)])
    with pytest.raises(CatalogError, match="run 'ghost'"):
        catalog.record_items([good, NewItem("ghost", "p", "b", inline_data=2)])
    assert catalog.list_items(run) == []
    ids = catalog.record_items([good, NewItem(run, "p", "b", inline_data=2)])
    assert [i.id for i in catalog.list_items(run)] == ids and len(set(ids)) == 2
    assert catalog.record_items([]) == []


def test_usage_by_run_and_stage(catalog: Catalog) -> None:
    run, other, ids = _filter_fixture(catalog)
    rows = {(u.process_id, u.stage_name): u for u in catalog.usage()}
    sizes = {k: catalog.get_item(v).size_bytes for k, v in ids.items()}
    assert rows[(run, "optimize")].items == 2 and rows[(run, "optimize")].files == 2
    assert rows[(run, "optimize")].size_bytes == sizes["a"] + sizes["b"]
    assert rows[(run, "validate")].size_bytes == sizes["c"]
    assert rows[(other, "optimize")].size_bytes == sizes["d"]
    assert [u.process_id for u in catalog.usage(other)] == [other]


def test_compare_runs(catalog: Catalog) -> None:
    a = catalog.start_process("wf", process_id="a", config={"fast": 5, "slow": 20, "x": {"y": 1}})
    b = catalog.start_process("wf", process_id="b", config={"fast": 10, "slow": 20, "z": 1})
    for run, sharpe, dd in ((a, 1.0, -0.2), (b, 1.5, -0.2)):
        catalog.record_item(run, "opt", "AAPL", inline_data=1, container_id="c1",
                            metadata={"metrics": {"sharpe": sharpe, "max_drawdown": dd, "n": True}})  # fmt: skip
    catalog.record_item(a, "opt", "MSFT", inline_data=1, metadata={"metrics": {"sharpe": 0.5}})
    catalog.record_item(b, "opt", "MSFT", inline_data=1, metadata={"metrics": {"sharpe": 0.1}})
    catalog.record_item(b, "opt", "MSFT", inline_data=1, metadata={"metrics": {"sharpe": 0.7}})
    catalog.record_item(
        b, "opt", "TSLA", inline_data=1, metadata={"metrics": {"win": {"rate": 0.6}}}
    )
    catalog.record_item(b, "opt", "NOMETRICS", inline_data=1, metadata={"rows": 5})
    result = catalog.compare(a, b)
    table = {(m.entity_name, m.metric): m for m in result.metrics}
    assert set(table) == {
        ("AAPL", "max_drawdown"),
        ("AAPL", "sharpe"),
        ("MSFT", "sharpe"),
        ("TSLA", "win.rate"),
    }
    sharpe = table[("AAPL", "sharpe")]
    assert (sharpe.a, sharpe.b, sharpe.diff, sharpe.rel_diff) == (1.0, 1.5, 0.5, 0.5)
    assert sharpe.container_id == "c1"
    assert table[("AAPL", "max_drawdown")].diff == 0
    assert table[("MSFT", "sharpe")].b == 0.7  # the latest item of a key counts
    tsla = table[("TSLA", "win.rate")]
    assert tsla.a is None and tsla.b == 0.6 and tsla.diff is None
    config = {c.path: (c.a, c.b) for c in result.config}
    assert config == {"fast": (5, 10), "x.y": (1, None), "z": (None, 1)}
    as_json = result.to_dict()
    assert as_json["run_a"]["process_id"] == "a" and len(as_json["metrics"]) == 4
    with pytest.raises(UnknownKey):
        catalog.compare(a, "missing-run")


def test_reopen_keeps_everything(catalog_url: str, results_dir: Path) -> None:
    with open_catalog(catalog_url, results_dir=results_dir) as cat:
        run = cat.start_process("wf", process_id="keep")
        item = store(cat, run, "p", "e")
    with open_catalog(catalog_url, results_dir=results_dir, create=False) as cat:
        assert cat.get_item(item).process_id == "keep"
        assert cat.get_process("keep").workflow == "wf"


def test_newer_schema_is_refused(catalog_url: str, results_dir: Path) -> None:
    with open_catalog(catalog_url, results_dir=results_dir) as cat:
        cat._write("UPDATE phasekit_schema SET version = 99")
    with pytest.raises(CatalogError, match="schema version 99, newer"):
        open_catalog(catalog_url, results_dir=results_dir)


def test_sqlite_catalog_is_a_wal_file_in_the_results_dir(results_dir: Path) -> None:
    with open_catalog(results_dir) as cat:
        assert cat.dialect == "sqlite"
        assert cat._read("PRAGMA journal_mode") == [("wal",)]
        assert cat._read("PRAGMA foreign_keys") == [(1,)]
    assert (results_dir / "catalog.sqlite").exists()
    with open_catalog(f"sqlite:///{results_dir}/catalog.sqlite") as cat:
        assert cat.results_dir == results_dir
    with pytest.raises(CatalogError, match="no catalog at"):
        open_catalog(results_dir / "elsewhere", create=False)
    with open_catalog(f"sqlite://{results_dir}/catalog.sqlite?synchronous=full&timeout=5") as cat:
        assert cat._read("PRAGMA synchronous") == [(2,)]
    with open_catalog(results_dir) as cat:
        assert cat._read("PRAGMA synchronous") == [(1,)]  # normal, in WAL mode
    with pytest.raises(
        CatalogError, match="unknown option 'fsync'; allowed: synchronous, timeout, wal"
    ):
        open_catalog(f"sqlite://{results_dir}/catalog.sqlite?fsync=1")
    with pytest.raises(CatalogError, match="synchronous 'sometimes' is not valid"):
        open_catalog(f"sqlite://{results_dir}/catalog.sqlite?synchronous=sometimes")


def test_threads_share_one_catalog(catalog: Catalog) -> None:
    run = catalog.start_process("wf")
    errors: list[BaseException] = []

    def work(t: int) -> None:
        try:
            for i in range(50):
                catalog.record_item(run, "p", f"t{t}-{i}", inline_data=i)
                catalog.list_items(run, stage="p", limit=5)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(catalog.list_items(run)) == 200


_WORKER = """
import sys
from phasekit.catalog import open_catalog
url, rdir, run, worker, n = sys.argv[1:6]
with open_catalog(url, results_dir=rdir) as cat:
    for i in range(int(n)):
        cat.record_item(run, "p", f"w{worker}-{i}", inline_data={"i": i}, metadata={"worker": int(worker)})
"""


def test_processes_record_concurrently(
    catalog: Catalog, catalog_url: str, results_dir: Path
) -> None:
    run = catalog.start_process("wf")
    n, workers = 150, 4
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WORKER, catalog_url, str(results_dir), run, str(w), str(n)]
        )
        for w in range(workers)
    ]
    assert [p.wait(timeout=240) for p in procs] == [0] * workers
    items = catalog.list_items(run)
    assert len(items) == n * workers and len({i.id for i in items}) == n * workers
    for w in range(workers):
        mine = catalog.list_items(run, meta={"worker": w})
        assert [i.inline_data["i"] for i in mine] == list(range(n))


def test_recorder_bridge_from_store_refs(catalog: Catalog, results_dir: Path) -> None:
    run = catalog.start_process("wf")
    rec = CatalogRecorder(catalog, run, "optimize", window_id="w2", container_id="strategy_1")
    path = results_dir / run / "optimize" / "trades.arrow"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"0123456789")
    ref = SimpleNamespace(
        uri=path_to_uri(path),
        key="trades",
        kind="arrow_table",
        format="arrow",
        size_bytes=10,
        checksum=reference_checksum(path),
        metadata={"rows": 3},
        created_at=T0.timestamp(),
    )
    item = catalog.get_item(rec.record_item(ref))
    assert (item.stage_name, item.phase, item.entity_name) == ("optimize", "optimize", "trades")
    assert (item.window_id, item.container_id, item.created_at) == ("w2", "strategy_1", T0)
    fields = ref_fields(item)
    assert fields == {
        "uri": ref.uri,
        "key": "trades",
        "kind": "arrow_table",
        "format": "arrow",
        "size_bytes": 10,
        "checksum": ref.checksum,
        "metadata": {"rows": 3},
        "created_at": T0.timestamp(),
    }
    rec.forget_item(ref)
    assert catalog.list_items(run) == [] and path.exists()


def test_unreachable_postgres_names_the_url() -> None:
    with pytest.raises(
        CatalogError, match=r"cannot connect to catalog postgresql://u:\*\*\*@127.0.0.1:1/db"
    ):
        open_catalog("postgresql://u:secret@127.0.0.1:1/db?connect_timeout=2")


def test_env_default_location(monkeypatch: pytest.MonkeyPatch, results_dir: Path) -> None:
    from phasekit.catalog import default_location

    monkeypatch.delenv("PHASEKIT_CATALOG", raising=False)
    monkeypatch.setenv("PHASEKIT_RESULTS_DIR", str(results_dir))
    assert default_location() == str(results_dir)
    monkeypatch.setenv("PHASEKIT_CATALOG", "postgresql://x@h/db")
    assert default_location() == "postgresql://x@h/db"


def test_file_store_records_through_the_recorder(catalog: Catalog, results_dir: Path) -> None:
    import pyarrow as pa

    from phasekit.stores.file import FileStore
    from phasekit.stores.memory import MemoryStore
    from phasekit.stores.ref import Ref

    run = catalog.start_process("wf", process_id="stored")
    rec = CatalogRecorder(catalog, run, "optimize", container_id="portfolio_1")
    table = pa.table({"a": [1, 2, 3], "b": [4.0, 5.0, 6.0]})
    folder = results_dir / run / "optimize"
    stores = {
        fmt: FileStore(folder, format=fmt, run=run, phase="optimize", recorder=rec)
        for fmt in ("arrow", "parquet")
    }
    stores["parted"] = FileStore(
        folder, format="parquet", partition_by=["a"], run=run, phase="optimize", recorder=rec
    )
    refs = {
        name: store.put(f"t_{name}", table, metadata={"metrics": {"sharpe": 1.0}})
        for name, store in stores.items()
    }
    MemoryStore(run=run, phase="optimize", recorder=rec).put("in_memory", {"x": 1})
    items = {i.entity_name: i for i in catalog.list_items(run)}
    assert set(items) == {"t_arrow", "t_parquet", "t_parted", "in_memory"}
    for name, ref in refs.items():
        item = items[f"t_{name}"]
        assert (item.data_reference, item.checksum, item.size_bytes) == (
            ref.uri,
            ref.checksum,
            ref.size_bytes,
        )
        catalog.verify_item(item)
        back = Ref.from_dict(ref_fields(item))
        assert back == ref
        assert stores[name].get(back).sort_by("a").equals(table)
    assert items["in_memory"].data_reference == f"memory://{run}/optimize/in_memory"
    report = catalog.doctor()
    assert report.ok and report.findings == []
