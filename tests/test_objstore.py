"""Results on object storage, against a real S3-compatible server (moto in server mode on
127.0.0.1): the URL and key rules, the write-once protocol (a failed upload leaves no
object), checksums on read, and a full ``phasekit run`` whose files are objects read back
by pyarrow, polars and DuckDB and checked by the catalog commands."""

from __future__ import annotations

import io
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
import pyarrow as pa
import pyarrow.fs as pafs
import pytest

from phasekit.catalog import open_catalog
from phasekit.catalog.publish import PublishingCatalog
from phasekit.cli import main
from phasekit.errors import (
    CatalogError,
    ConfigError,
    CorruptDataError,
    InvalidArgument,
    StorageError,
    UnsafePath,
)
from phasekit.objstore import (
    PART_BYTES,
    ObjectRoot,
    check_relative,
    is_object_url,
    is_storage_url,
    storage_schemes,
)
from phasekit.workflow.run import resolve_target
from s3_util import Breaks, cli_json, corrupt_and_check

if TYPE_CHECKING:
    from s3_util import S3Server

pytest_plugins = ["s3_util", "conftest_pg"]

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "small_workflow_memory.yaml"


# ---------------------------------------------------------------- URLs and keys


def test_only_object_schemes_are_object_urls() -> None:
    assert is_object_url("s3://bucket/prefix")
    assert is_object_url("S3://bucket")
    assert is_object_url("fsspec+memory://bucket/prefix")  # fsspec's memory://, prefixed
    others = ("memory://run/phase/key", "file:///tmp/x", "stream://a/b", "results", "/abs",
              "fsspec+://b/p", "gs://b/p")  # fmt: skip
    for other in others:
        assert not is_object_url(other), other
    fs_root = ObjectRoot.from_url("fsspec+memory://bkt/p")
    assert (fs_root.scheme, fs_root.uri("r/x")) == ("fsspec+memory", "fsspec+memory://bkt/p/r/x")
    with pytest.raises(UnsafePath):  # same bucket and key, another scheme: not this root's
        fs_root.relative("memory://bkt/p/r/x")
    with pytest.raises(InvalidArgument, match="no usable filesystem"):
        ObjectRoot.from_url("fsspec+nosuchfs://bkt/p").exists("x")
    root = ObjectRoot.from_url("s3://bkt/a/b/")
    assert (root.bucket, root.prefix, root.url) == ("bkt", "a/b", "s3://bkt/a/b")
    assert root.uri("run/x.arrow") == "s3://bkt/a/b/run/x.arrow"
    for bad in ("s3:///no-bucket", "s3://bkt/p?x=1", "nosuchfs://bkt/p", "file:///tmp/x"):
        with pytest.raises(InvalidArgument):
            ObjectRoot.from_url(bad)
    with pytest.raises(UnsafePath):
        ObjectRoot.from_url("s3://bkt/a/../b")


@pytest.mark.parametrize(
    "key", ["../x", "a/../../b", "/abs", "a//b", "a/./b", "a\\b", "a\x00b", "", "run/..", "a\nb"]
)
def test_keys_cannot_leave_the_prefix(key: str) -> None:
    with pytest.raises(UnsafePath):
        check_relative(key, "key")
    with pytest.raises(UnsafePath):
        ObjectRoot("bkt", "runs").key(key)


@pytest.mark.parametrize(
    "uri",
    ["s3://bkt/other/x", "s3://elsewhere/runs/x", "s3://bkt/runs/../x", "s3://bkt/runsx/y",
     "file:///bkt/runs/x"],
)  # fmt: skip
def test_uris_outside_the_root_are_refused(uri: str) -> None:
    with pytest.raises(UnsafePath):
        ObjectRoot("bkt", "runs").relative(uri)


# ---------------------------------------------------------------- write once, verify on read


def test_put_read_and_a_corrupt_object(bucket: str, tmp_path: Path) -> None:
    root = ObjectRoot.from_url(f"s3://{bucket}/p")
    src = tmp_path / "x.bin"
    src.write_bytes(b"phasekit" * 1000)
    from phasekit.checksum import file_checksum

    sum_ = file_checksum(src)
    assert root.put_file("run/x.bin", src, sum_) == 8000
    assert root.read("run/x.bin", sum_) == src.read_bytes()
    assert list(root.list()) == ["run/x.bin"]
    boto3.client("s3").put_object(Bucket=bucket, Key="p/run/x.bin", Body=b"phasekiT" * 1000)
    with pytest.raises(CorruptDataError, match="fails its checksum"):
        root.read("run/x.bin", sum_)
    with pytest.raises(CorruptDataError, match="changed"):
        root.put_file("run/y.bin", src, "crc32:00000000")
    assert not root.exists("run/y.bin")


def _pending_uploads(bucket: str) -> list[Any]:
    return list(boto3.client("s3").list_multipart_uploads(Bucket=bucket).get("Uploads", []))


def test_a_failure_mid_upload_leaves_no_object(bucket: str) -> None:
    root = ObjectRoot(bucket, "p")
    data = bytes(range(256)) * ((PART_BYTES + (1 << 20)) // 256)
    source = Breaks(data)
    with pytest.raises(StorageError, match="no object was made visible"):
        root.put_stream("big.bin", source, None)
    assert source.reads == 2  # the first part went up before the failure
    assert not root.exists("big.bin")
    assert _pending_uploads(bucket) == []  # the multipart upload was aborted
    with pytest.raises(CorruptDataError):  # a wrong checksum at the end: aborted too
        root.put_stream("big.bin", io.BytesIO(data), "crc32:00000000")
    assert not root.exists("big.bin") and _pending_uploads(bucket) == []
    import zlib

    from phasekit.checksum import format_crc32

    assert root.put_stream("big.bin", io.BytesIO(data), format_crc32(zlib.crc32(data))) == len(data)
    assert root.read("big.bin", format_crc32(zlib.crc32(data))) == data


def test_publishing_refuses_files_outside_the_local_folder(bucket: str, tmp_path: Path) -> None:
    with open_catalog(tmp_path / "catalog.sqlite", results_dir=tmp_path) as catalog:
        run_id = catalog.start_process("w", results_dir=f"s3://{bucket}/runs")
        pub = PublishingCatalog(catalog, tmp_path / "local", ObjectRoot(bucket, "runs"))
        outside = tmp_path / "outside.json"
        outside.write_text("{}")
        with pytest.raises(UnsafePath):
            pub.record_item(run_id, "s", "e", data_reference=outside.as_uri(), checksum="x")
        # a row naming an object outside the run's prefix is refused by the catalog
        with pytest.raises(CatalogError, match="outside"):
            _record(catalog, run_id, f"s3://{bucket}/other/x.json")
        local = tmp_path / "other-run"
        local.mkdir()
        run_b = catalog.start_process("w", results_dir=str(local))
        with pytest.raises(CatalogError, match="not on object storage"):
            _record(catalog, run_b, f"s3://{bucket}/runs/x.json")


def _record(catalog: Any, run_id: str, reference: str) -> None:
    catalog.record_item(run_id, "s", "e", data_reference=reference, checksum="crc32:00000000")


# ---------------------------------------------------------------- settings


def test_settings_object_storage_refuses_or_needs(bucket: str, tmp_path: Path) -> None:
    url = f"s3://{bucket}/runs"
    with pytest.raises(ConfigError, match="--local-dir"):
        resolve_target(str(EXAMPLE), None, url)
    for other in ("nosuchfs://bucket/p", "file:///tmp/x", "https://h/p"):  # not folders either
        with pytest.raises(ConfigError, match="no storage phasekit writes to") as refused:
            resolve_target(str(EXAMPLE), None, other, str(tmp_path / "local"))
        for allowed in ("s3://", "memory://", "gs://", "fsspec+PROTOCOL://"):
            assert allowed in str(refused.value)
        assert "file://" not in str(refused.value).split("allowed:")[1]
    with pytest.raises(ConfigError, match="only used with results_dir on object storage"):
        resolve_target(str(EXAMPLE), None, str(tmp_path / "r"), str(tmp_path / "local"))
    parted = {
        "data_flow.mode": "file",
        "data_flow.file_settings.format": "parquet",
        "data_flow.file_settings.partition_by": ["symbol"],
    }
    with pytest.raises(InvalidArgument, match="partition_by is not supported with results on"):
        resolve_target(str(EXAMPLE), parted, url, str(tmp_path / "local"))
    hdf5 = {"data_flow.mode": "file", "data_flow.file_settings.format": "hdf5"}
    with pytest.raises(InvalidArgument, match="hdf5 is not supported with results on"):
        resolve_target(str(EXAMPLE), hdf5, url, str(tmp_path / "local"))
    admf = {"results.layout": "admf"}
    with pytest.raises(InvalidArgument, match="admf is not supported with results on"):
        resolve_target(str(EXAMPLE), admf, url, str(tmp_path / "local"))
    resolved, root = resolve_target(str(EXAMPLE), None, url, str(tmp_path / "local"))
    assert root is not None and root.url == url
    # local_dir takes effect: the run's folders and its default catalog live there
    assert Path(resolved.results_dir) == tmp_path / "local"
    assert resolved.catalog.display().endswith(str(tmp_path / "local" / "catalog.sqlite"))


def test_bare_fsspec_urls_name_object_storage(monkeypatch: pytest.MonkeyPatch) -> None:
    for url, scheme in [
        ("memory://bkt/p", "fsspec+memory"),
        ("gs://bkt/p", "fsspec+gs"),  # a pyarrow.fs URI too
        ("hdfs://bkt/p", "fsspec+hdfs"),
        ("fsspec+memory://bkt/p", "fsspec+memory"),
        ("S3://bkt/p", "s3"),
    ]:
        assert is_storage_url(url), url
        root = ObjectRoot.from_url(url)
        assert (root.scheme, root.bucket, root.prefix) == (scheme, "bkt", "p")
        assert root.url == f"{scheme}://bkt/p"  # what catalog rows and the run record
    assert not is_object_url("memory://bkt/p")  # a row's memory:// is phasekit's own
    for other in ("file:///tmp/x", "zip://a/b", "nosuchfs://b/p", "results", "/abs"):
        assert not is_storage_url(other), other
    assert {"memory", "gs", "abfs", "hdfs"} <= set(storage_schemes())
    assert not {"file", "local", "http", "zip"} & set(storage_schemes())
    monkeypatch.setitem(sys.modules, "fsspec", None)  # without fsspec: S3 only
    assert storage_schemes() == ("s3",)
    with pytest.raises(
        InvalidArgument, match="allowed: a folder path, or BUCKET/PREFIX under s3://, f"
    ):
        ObjectRoot.from_url("memory://bkt/p")


# ---------------------------------------------------------------- a full run


def _s3fs(server: S3Server) -> pafs.S3FileSystem:
    env = server.env()
    return pafs.S3FileSystem(
        endpoint_override=server.endpoint,
        access_key=env["AWS_ACCESS_KEY_ID"],
        secret_key=env["AWS_SECRET_ACCESS_KEY"],
        region=env["AWS_DEFAULT_REGION"],
        allow_bucket_creation=False,
    )


@pytest.mark.parametrize("mode", ["file", "streaming"])
def test_phasekit_run_with_results_on_s3(
    mode: str,
    bucket: str,
    s3_env: S3Server,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    local = tmp_path / "local"
    url = f"s3://{bucket}/team/results"
    args = ["run", str(EXAMPLE), "--results-dir", url, "--local-dir", str(local), "--workers", "1"]
    # each container's own items too (file stores with their manifests; a block window's
    # tables are files of their own)
    items_too = ["--set", "results.collection.store_container_items=true"]
    assert (
        main([*args, "--set", f"data_flow.mode={mode}", "--set", "data.n_bars=1500", *items_too])
        == 0
    )
    where = ["--results-dir", str(local)]
    (run_row,) = cli_json(capsys, "runs", *where)
    assert run_row["results_dir"] == url
    items = cli_json(capsys, "ls", "latest", *where)
    refs = [i["data_reference"] for i in items if i["data_reference"]]
    objects = [r for r in refs if r.startswith("s3://")]
    assert objects and not [r for r in refs if r.startswith("file://")]
    assert all(r.startswith(f"{url}/{run_row['process_id']}/") for r in objects)
    # every file of the run is an object now; the local folder keeps only the catalog
    assert not (local / run_row["process_id"]).exists()
    client = boto3.client("s3")
    keys = {o["Key"] for o in client.list_objects_v2(Bucket=bucket)["Contents"]}
    assert {r[len(f"s3://{bucket}/") :] for r in objects} <= keys
    if mode == "file":  # the file store's manifests went along
        assert any("/.phasekit/" in k for k in keys)
    else:  # the stream's parts are objects
        assert any(i["format"] == "arrow" and "stream" in i["data_reference"] for i in items)

    # read back by pyarrow (its own S3 client), polars and DuckDB
    fs = _s3fs(s3_env)
    arrow_refs = [i for i in items if i["format"] == "arrow" and i["size_bytes"] > 0]
    assert arrow_refs
    first = arrow_refs[0]
    with fs.open_input_file(first["data_reference"][len("s3://") :]) as fh:
        table = pa.ipc.open_file(fh).read_all()
    assert table.num_rows > 0
    import polars as pl

    frame = pl.read_ipc(
        first["data_reference"],
        storage_options=s3_env.polars_options(),
    )
    assert frame.height == table.num_rows
    import duckdb

    # DuckDB reads s3:// through its httpfs extension, which is not bundled and is
    # downloaded on first use (no network here): it gets the table pyarrow read instead
    con = duckdb.connect()
    con.register("results", table)
    assert con.execute("SELECT count(*) FROM results").fetchall() == [(table.num_rows,)]

    # the catalog commands: show --verify, doctor; a corrupt object is found
    shown = cli_json(capsys, "show", str(first["id"]), "--verify", *where)
    assert shown["verified"] == "ok"
    assert cli_json(capsys, "doctor", *where)["ok"] is True
    # du counts the objects' bytes; export fetches, verifies and copies them
    stored = {i["data_reference"]: i["size_bytes"] for i in items if i in _objects(items)}
    assert cli_json(capsys, "du", *where)["total_bytes"] == sum(stored.values())
    out = tmp_path / "export"
    exported = cli_json(capsys, "export", "latest", "--to", str(out), *where)
    by_source = {e["source"]: e for e in exported["exported"]}
    assert set(stored) <= set(by_source)
    copy = out / by_source[first["data_reference"]]["target"]
    assert pa.ipc.open_file(pa.memory_map(str(copy))).read_all().equals(table)
    assert by_source[first["data_reference"]]["target"].startswith("optimization/")
    # an object no row names (an upload whose row never came) is reported, left alone
    stray = f"team/results/{run_row['process_id']}/optimization/stray.arrow"
    client.put_object(Bucket=bucket, Key=stray, Body=b"x")
    report = cli_json(capsys, "doctor", *where)
    unreferenced = [f["path"] for f in report["findings"] if f["kind"] == "unreferenced_object"]
    assert report["ok"] is True and unreferenced == [f"s3://{bucket}/{stray}"]
    client.delete_object(Bucket=bucket, Key=stray)
    key = first["data_reference"][len(f"s3://{bucket}/") :]
    corrupt_and_check(capsys, bucket, key, first["id"], where)
    # cleanup removes the objects (and the manifests with them) along with the rows
    removal = cli_json(capsys, "cleanup", "--policy", "keep_none", *where)["removal"]
    assert removal["failed"] == [] and len(removal["removed"]) == len(items)
    assert client.list_objects_v2(Bucket=bucket).get("Contents", []) == []
    assert cli_json(capsys, "ls", "latest", *where) == []


def test_run_result_loads_its_objects(
    bucket: str, tmp_path: Path, backend_name: str, catalog_url: str
) -> None:
    """Both backends, both catalogs (SQLite in the local folder, the suite's PostgreSQL)."""
    from phasekit.workflow import run

    url = f"s3://{bucket}/api"
    result = run(
        str(EXAMPLE), workers=1, results_dir=url, local_dir=str(tmp_path / "local"),
        data_flow__mode="file", data__n_bars=1500, catalog=catalog_url,
    )  # fmt: skip
    try:
        items = result._catalog.list_items(result.run_id)
        pg = catalog_url.startswith("postgresql")
        assert result.catalog_url.startswith("postgresql") == pg
        for item in items:  # every file row is an object, verified against its checksum
            assert result._catalog.verify_item(item) == item
        assert result._catalog.doctor().ok
        ranked = result.metrics("optimization")  # aggregate_results.json, fetched and verified
        assert ranked.num_rows > 0
        arrow = [r for r in result.outputs("optimization") if r.format == "arrow"]
        assert arrow and all(r.uri.startswith(f"{url}/{result.run_id}/") for r in arrow)
        table = arrow[0].load()
        root = ObjectRoot.from_url(url)
        raw = root.read(root.relative(arrow[0].uri), None)
        assert pa.ipc.open_file(pa.py_buffer(raw)).read_all().equals(table)
    finally:
        result.close()


def test_a_failed_upload_leaves_no_row_and_no_object(
    bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bucket of the results URL does not exist: the first upload fails, the run
    fails with StorageError, and no row names an object."""
    from phasekit.workflow import run

    local = tmp_path / "local"
    with pytest.raises(StorageError, match="no object was made visible"):
        run(
            str(EXAMPLE), workers=1, results_dir=f"s3://{bucket}-missing/x",
            local_dir=str(local), data_flow__mode="file", data__n_bars=1500,
        )  # fmt: skip
    with open_catalog(local / "catalog.sqlite", results_dir=local) as catalog:
        (proc,) = catalog.list_processes()
        assert proc.status == "failed"
        refs = [i.data_reference or "" for i in catalog.list_items(proc.process_id)]
        assert not [r for r in refs if r.startswith("s3://")]
    assert boto3.client("s3").list_objects_v2(Bucket=bucket).get("KeyCount", 0) == 0


def _unreferenced(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f["path"]: f for f in report["findings"] if f["kind"] == "unreferenced_object"}


def test_doctor_repair_deletes_old_unreferenced_objects_of_a_run_only(
    bucket: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An object a crash left unrecorded is deleted by ``doctor --repair`` once older than
    the object grace (by default an hour: kept; ``--object-grace 0``: deleted), a running
    run's young objects are not touched, and nothing outside a run's prefix is."""
    from phasekit.workflow import run

    local = tmp_path / "local"
    url = f"s3://{bucket}/team/results"
    result = run(
        str(EXAMPLE), workers=1, results_dir=url, local_dir=str(local),
        data_flow__mode="file", data__n_bars=1500,
    )  # fmt: skip
    result.close()
    client = boto3.client("s3")
    stray = f"team/results/{result.run_id}/optimization/stray.arrow"
    outside = [  # no run of the catalog has these prefixes
        "team/results/no-such-run/stray.arrow",
        f"elsewhere/{result.run_id}/optimization/stray.arrow",
        "team/results/stray.arrow",
    ]
    for key in [stray, *outside]:
        client.put_object(Bucket=bucket, Key=key, Body=b"x")
    with open_catalog(local / "catalog.sqlite", results_dir=local) as catalog:
        live = catalog.start_process("optimization", results_dir=url)  # a run in progress
    in_flight = f"team/results/{live}/optimization/uploading.arrow"
    client.put_object(Bucket=bucket, Key=in_flight, Body=b"y")

    def keys() -> set[str]:
        return {o["Key"] for o in client.list_objects_v2(Bucket=bucket)["Contents"]}

    recorded = keys() - {stray, in_flight, *outside}
    where = ["--results-dir", str(local)]
    report = cli_json(capsys, "doctor", "--repair", *where)  # the default grace: an hour
    found = _unreferenced(report)
    assert list(found) == [f"s3://{bucket}/{stray}"]  # the live run's young upload: unseen
    assert found[f"s3://{bucket}/{stray}"]["repaired"] is False
    assert "younger than the grace of 3600 s" in found[f"s3://{bucket}/{stray}"]["action"]
    assert keys() == recorded | {stray, in_flight, *outside}
    report = cli_json(capsys, "doctor", "--repair", "--object-grace", "0", *where)
    found = _unreferenced(report)
    assert set(found) == {f"s3://{bucket}/{stray}", f"s3://{bucket}/{in_flight}"}
    assert all(f["repaired"] and f["action"].startswith("deleted") for f in found.values())
    assert keys() == recorded | set(outside)  # every recorded object and the others stay
    report = cli_json(capsys, "doctor", *where)
    assert report["ok"] is True and not _unreferenced(report)


def test_fsspec_objects_carry_their_modification_time(memfs: Any) -> None:
    import time

    root = ObjectRoot.from_url("memory://phasekit-test/p")
    before = time.time()
    root.put_stream("run/x.bin", io.BytesIO(b"x"), None)
    ((rel, modified),) = root.entries("run/")
    assert rel == "run/x.bin" and modified is not None
    assert before - 2 <= modified <= time.time() + 2


def _objects(items: list[Any]) -> list[Any]:
    return [i for i in items if (i["data_reference"] or "").startswith("s3://")]


# ---------------------------------------------------------------- phasekit serve


def test_serve_reads_objects(bucket: str, tmp_path: Path) -> None:
    """``/items/{id}/data``, ``/file`` (with a Range) and ``/runs/{id}/export`` of a run
    on S3 read the objects, verified; a corrupt object is refused."""
    import tarfile

    from phasekit.serve import create_app
    from phasekit.workflow import run
    from serve_util import LiveServer

    local = tmp_path / "local"
    result = run(
        str(EXAMPLE), workers=1, results_dir=f"s3://{bucket}/srv", local_dir=str(local),
        data_flow__mode="file", data__n_bars=1500,
    )  # fmt: skip
    result.close()
    with open_catalog(local / "catalog.sqlite", results_dir=local) as catalog:
        items = catalog.list_items(result.run_id)
        arrow = next(i for i in items if i.format == "arrow" and i.size_bytes > 0)
        found = catalog.item_object(arrow)
        assert found is not None
        root, rel = found
        raw = root.read(rel, arrow.checksum)
        with LiveServer(create_app(catalog)) as server:
            c = server.client()
            data = c.get(f"/items/{arrow.id}/data")
            assert data.status_code == 200, data.text
            table = pa.ipc.open_stream(pa.py_buffer(data.content)).read_all()
            assert table.equals(pa.ipc.open_file(pa.py_buffer(raw)).read_all())
            assert c.get(f"/items/{arrow.id}/file").content == raw
            part = c.get(f"/items/{arrow.id}/file", headers={"Range": "bytes=2-9"})
            assert part.status_code == 206 and part.content == raw[2:10]
            tar = c.get(f"/runs/{result.run_id}/export")
            assert tar.status_code == 200
            names = tarfile.open(fileobj=io.BytesIO(tar.content)).getnames()
            assert rel in names
            boto3.client("s3").put_object(Bucket=bucket, Key=root.key(rel), Body=raw[:-1])
            refused = c.get(f"/items/{arrow.id}/file")
            assert refused.status_code >= 400 and "checksum" in refused.text


# ---------------------------------------------------------------- resume


def _tt_config(results: str) -> dict[str, Any]:
    return {
        "workflow": "train_test_optimization",
        "run_name": "s3resume",
        "results_dir": results,
        "data": {"n_bars": 3000, "frequency": "1h", "seed": 5, "volatility": 0.004},
        "parameter_space": {"strategy.fast": [3, 5, 8, 13], "strategy.slow": [20, 40, 60]},
        "data_flow": {"mode": "file"},
        "top_k": 3,
    }


class _StopAfter:
    """An observer that stops the run (as Ctrl-C does) once ``at`` is done."""

    def __init__(self, at: tuple[str, str]) -> None:
        self.at = at
        self.windows: list[tuple[str, str, bool]] = []

    def phase_started(self, phase: str, windows: int, containers: int) -> None:
        pass

    def containers_done(self, phase: str, count: int) -> None:
        pass

    def window_done(self, phase: str, window_id: str, resumed: bool) -> None:
        self.windows.append((phase, window_id, resumed))
        if (phase, window_id) == self.at and not resumed:
            raise KeyboardInterrupt

    def phase_done(self, phase: str, outcome: Any) -> None:
        pass


def _rankings(result: Any) -> dict[tuple[str, str], list[Any]]:
    windows = [("parameter_search", "train"), ("parameter_search", "test"), ("validation", "test")]
    return {(p, w): result.metrics(p, w).to_pylist() for p, w in windows}


@pytest.mark.parametrize("scheme", ["s3", "pyarrow+s3"])  # boto3, pyarrow's own S3 client
def test_resume_a_run_on_s3_equals_an_uninterrupted_one(
    scheme: str, bucket: str, tmp_path: Path
) -> None:
    from phasekit.workflow import run
    from phasekit.workflow.run import RunInterrupted

    reference = run(_tt_config(str(tmp_path / "reference")), workers=1)
    try:
        expected = _rankings(reference)
    finally:
        reference.close()
    cfg = _tt_config(f"{scheme}://{bucket}/resume")
    local = str(tmp_path / "local")
    stop = _StopAfter(("parameter_search", "train"))
    with pytest.raises(RunInterrupted) as interrupted:
        run(cfg, workers=1, local_dir=local, observer=stop)
    run_id = interrupted.value.run_id
    shutil.rmtree(Path(local) / run_id)  # resumed where only the catalog and the objects are
    again = _StopAfter(("", ""))
    result = run(cfg, workers=1, local_dir=local, resume=run_id, observer=again)
    try:
        assert ("parameter_search", "train", True) in again.windows  # kept, not recomputed
        assert _rankings(result) == expected
        items = result._catalog.list_items(run_id)
        assert any((i.data_reference or "").startswith(f"{scheme}://{bucket}/") for i in items)
        for item in items:
            assert not (item.data_reference or "").startswith("file://")
            result._catalog.verify_item(item)
    finally:
        result.close()


# ---------------------------------------------------------------- any fsspec filesystem


@pytest.fixture
def memfs() -> Any:
    """fsspec's in-process memory filesystem, emptied after the test."""
    import fsspec

    fs = fsspec.filesystem("memory")
    yield fs
    fs.rm("/phasekit-test", recursive=True) if fs.exists("/phasekit-test") else None


def test_fsspec_upload_is_all_or_nothing(memfs: Any) -> None:
    root = ObjectRoot.from_url("fsspec+memory://phasekit-test/p")
    data = bytes(range(256)) * ((PART_BYTES + (1 << 20)) // 256)
    with pytest.raises(StorageError, match="no object was made visible"):
        root.put_stream("big.bin", Breaks(data), None)
    assert not root.exists("big.bin") and not memfs.exists("/phasekit-test/p/big.bin")
    with pytest.raises(CorruptDataError):
        root.put_stream("big.bin", io.BytesIO(data), "crc32:00000000")
    assert not root.exists("big.bin")
    import zlib

    from phasekit.checksum import format_crc32

    sum_ = format_crc32(zlib.crc32(data))
    assert root.put_stream("big.bin", io.BytesIO(data), sum_) == len(data)
    assert memfs.cat_file("/phasekit-test/p/big.bin") == data
    assert list(root.list()) == ["big.bin"]
    memfs.pipe_file("/phasekit-test/p/big.bin", data[:-1] + b"?")
    with pytest.raises(CorruptDataError, match="fails its checksum"):
        root.read("big.bin", sum_)
    root.delete("big.bin")
    assert list(root.list()) == []


@pytest.mark.parametrize("given", ["fsspec+memory", "memory"])
def test_run_on_an_fsspec_filesystem(memfs: Any, tmp_path: Path, given: str) -> None:
    """The prefixed URL and the bare one (fsspec's memory://) name the same storage; rows
    name objects by the prefixed form (never phasekit's own memory:// references)."""
    from phasekit.workflow import run

    url = "fsspec+memory://phasekit-test/results"
    result = run(
        str(EXAMPLE), workers=1, results_dir=f"{given}://phasekit-test/results",
        local_dir=str(tmp_path / "local"), data_flow__mode="file", data__n_bars=1500,
    )  # fmt: skip
    try:
        catalog = result._catalog
        assert catalog.get_process(result.run_id).results_dir == url
        items = catalog.list_items(result.run_id)
        refs = [i.data_reference for i in items if i.data_reference]
        assert refs and all(r.startswith(f"{url}/{result.run_id}/") for r in refs if "://" in r)
        files = [i for i in items if (i.data_reference or "").startswith(url)]
        assert files and all(catalog.verify_item(i) == i for i in files)
        arrow = next(i for i in files if i.format == "arrow")
        path = "/phasekit-test/results/" + arrow.data_reference[len(url) + 1 :]
        with memfs.open(path, "rb") as fh:
            assert pa.ipc.open_file(fh).read_all().num_rows > 0
        assert result.metrics("optimization").num_rows > 0
        memfs.pipe_file(path, b"not arrow")
        with pytest.raises(CorruptDataError):
            catalog.verify_item(arrow)
    finally:
        result.close()
