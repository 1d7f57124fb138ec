"""Results through pyarrow.fs (``results_dir: pyarrow+s3://BUCKET/PREFIX``), against a real
S3-compatible server (moto in server mode on 127.0.0.1): pyarrow's own S3 client, no
boto3 nor fsspec in phasekit's path. The URL rules, the write-once upload, checksums on
read, a full ``phasekit run`` whose objects pyarrow, polars and DuckDB read back, and the
catalog commands (show, du, export, doctor with its object grace, cleanup) on it; an
encrypted run too."""

from __future__ import annotations

import io
import json
import re
import sys
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
import pyarrow as pa
import pyarrow.fs as pafs
import pytest

from phasekit.catalog import open_catalog
from phasekit.checksum import format_crc32
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
    PYARROW_SCHEMES,
    ObjectRoot,
    is_object_url,
    is_storage_url,
)
from phasekit.workflow.run import resolve_target
from s3_util import Breaks, cli_json, corrupt_and_check

if TYPE_CHECKING:
    from s3_util import S3Server

pytest_plugins = ["s3_util"]

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "small_workflow_memory.yaml"


# ---------------------------------------------------------------- URLs


def test_pyarrow_urls_name_pyarrow_filesystems() -> None:
    for scheme in PYARROW_SCHEMES:
        url = f"pyarrow+{scheme}://bkt/a/b"
        assert is_object_url(url) and is_storage_url(url), url
        root = ObjectRoot.from_url(url)
        assert (root.scheme, root.bucket, root.prefix) == (f"pyarrow+{scheme}", "bkt", "a/b")
        assert root.url == url and root.uri("r/x") == f"pyarrow+{scheme}://bkt/a/b/r/x"
    root = ObjectRoot.from_url("PYARROW+S3://bkt/p/")
    assert root.url == "pyarrow+s3://bkt/p"
    for other in ("s3://bkt/p/x", "fsspec+s3://bkt/p/x", "pyarrow+gs://bkt/p/x"):
        with pytest.raises(UnsafePath):  # same bucket and key, another filesystem
            root.relative(other)
    assert root.relative("pyarrow+s3://bkt/p/run/x") == "run/x"


def test_pyarrow_gs_is_pyarrows_gcs_and_an_unusable_one_is_named(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    root = ObjectRoot.from_url("pyarrow+gs://bkt/p")  # no request is made to open it
    assert root.transport.fs.type_name == "gcs"  # type: ignore[attr-defined]
    assert root.transport._path(root.key("r/x")) == "bkt/p/r/x"  # type: ignore[attr-defined]

    class NoJvm:  # pyarrow.fs.FileSystem where HDFS has no libjvm
        @staticmethod
        def from_uri(uri: str) -> Any:
            raise OSError(f"Unable to load libjvm for {uri}")

    monkeypatch.setattr(pafs, "FileSystem", NoJvm)
    opening = re.escape("pyarrow.fs cannot open pyarrow+hdfs://nn:8020: Unable to load libjvm")
    with pytest.raises(InvalidArgument, match=opening):
        ObjectRoot.from_url("pyarrow+hdfs://nn:8020/results").exists("x")


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("pyarrow+nosuchfs://bkt/p", "no storage phasekit writes to; allowed"),
        ("pyarrow+mock://bkt/p", "no storage phasekit writes to; allowed"),
        ("pyarrow+://bkt/p", "no storage phasekit writes to; allowed"),
        ("pyarrow+file:///tmp/results", "local folder: give the folder's path"),
        ("pyarrow+local:///tmp/results", "local folder: give the folder's path"),
    ],
)
def test_bad_pyarrow_urls_name_what_is_allowed(url: str, says: str, tmp_path: Path) -> None:
    assert not is_object_url(url) and not is_storage_url(url)
    with pytest.raises(ConfigError, match=says) as refused:
        resolve_target(str(EXAMPLE), None, url, str(tmp_path / "local"))
    allowed = str(refused.value).split("allowed:")[1]
    assert "pyarrow+SCHEME://" in allowed and ", ".join(PYARROW_SCHEMES) in allowed
    with pytest.raises(InvalidArgument, match="allowed:"):
        ObjectRoot.from_url(url)


def test_pyarrow_keys_cannot_leave_the_prefix() -> None:
    with pytest.raises(UnsafePath):
        ObjectRoot.from_url("pyarrow+s3://bkt/a/../b")
    for bad in ("pyarrow+s3:///no-bucket", "pyarrow+s3://bkt/p?endpoint_override=x"):
        with pytest.raises(InvalidArgument, match="BUCKET/PREFIX"):
            ObjectRoot.from_url(bad)
    root = ObjectRoot.from_url("pyarrow+s3://bkt/runs")
    for key in ("../x", "a/../../b", "/abs", "a//b", "a\\b", "run/.."):
        with pytest.raises(UnsafePath):
            root.key(key)
    for uri in (
        "pyarrow+s3://bkt/other/x",
        "pyarrow+s3://bkt/runs/../x",
        "pyarrow+s3://bkt/runsx/y",
    ):
        with pytest.raises(UnsafePath):
            root.relative(uri)


def test_a_row_outside_the_runs_pyarrow_prefix_is_refused(tmp_path: Path) -> None:
    url = "pyarrow+s3://bkt/runs"
    with open_catalog(tmp_path / "catalog.sqlite", results_dir=tmp_path) as catalog:
        run_id = catalog.start_process("w", results_dir=url)
        assert catalog.get_process(run_id).results_dir == url
        for outside in ("pyarrow+s3://bkt/other/x.json", "s3://bkt/runs/x.json"):
            with pytest.raises(CatalogError, match="outside"):
                catalog.record_item(
                    run_id, "s", "e", data_reference=outside, checksum="crc32:00000000"
                )


# ---------------------------------------------------------------- write once, verify on read


def _no_other_clients(monkeypatch: pytest.MonkeyPatch) -> None:
    """boto3 and fsspec cannot be imported (phasekit must not need them)."""
    monkeypatch.setitem(sys.modules, "boto3", None)
    monkeypatch.setitem(sys.modules, "fsspec", None)


def test_pyarrow_objects_are_written_once_and_verified(
    bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = boto3.client("s3")
    _no_other_clients(monkeypatch)
    root = ObjectRoot.from_url(f"pyarrow+s3://{bucket}/p")
    assert isinstance(root.transport.fs, pafs.S3FileSystem)  # type: ignore[attr-defined]
    data = bytes(range(256)) * ((PART_BYTES + (1 << 20)) // 256)  # beyond one part
    sum_ = format_crc32(zlib.crc32(data))
    source = Breaks(data)
    with pytest.raises(StorageError, match="no object was made visible"):
        root.put_stream("big.bin", source, None)
    assert source.reads == 2 and not root.exists("big.bin")
    with pytest.raises(CorruptDataError, match="nothing was made visible"):
        root.put_stream("big.bin", io.BytesIO(data), "crc32:00000000")
    with pytest.raises(CorruptDataError):
        root.put_stream("small.bin", io.BytesIO(b"abc"), "crc32:00000000")
    assert list(root.list()) == []
    assert root.put_stream("big.bin", io.BytesIO(data), sum_) == len(data)
    small = format_crc32(zlib.crc32(b"abc"))
    assert root.put_stream("run/small.bin", io.BytesIO(b"abc"), small) == 3
    assert root.read("big.bin", sum_) == data and root.read("run/small.bin", small) == b"abc"
    entries = dict(root.entries())
    assert set(entries) == {"big.bin", "run/small.bin"}
    assert all(isinstance(t, float) for t in entries.values())  # modification times
    assert list(root.list("run/")) == ["run/small.bin"]
    monkeypatch.delitem(sys.modules, "boto3")
    stored = {o["Key"] for o in client.list_objects_v2(Bucket=bucket)["Contents"]}
    assert stored == {"p/big.bin", "p/run/small.bin"}  # under the final keys only
    assert client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    client.put_object(Bucket=bucket, Key="p/run/small.bin", Body=b"abd")
    with pytest.raises(CorruptDataError, match="fails its checksum"):
        root.read("run/small.bin", small)
    root.delete("run/small.bin")
    assert not root.exists("run/small.bin") and list(root.list()) == ["big.bin"]
    with pytest.raises(CorruptDataError, match="cannot read"):
        root.read("run/small.bin", small)


def test_a_missing_bucket_fails_the_upload(bucket: str) -> None:
    root = ObjectRoot.from_url(f"pyarrow+s3://{bucket}-missing/p")
    with pytest.raises(StorageError, match="no object was made visible"):
        root.put_stream("x.bin", io.BytesIO(b"x"), None)


# ---------------------------------------------------------------- a full run


def _reader_fs(server: S3Server) -> pafs.S3FileSystem:
    """pyarrow's S3 client pointed at the server explicitly (as a reader elsewhere would)."""
    env = server.env()
    return pafs.S3FileSystem(
        endpoint_override=server.endpoint.removeprefix("http://"),
        scheme="http",
        access_key=env["AWS_ACCESS_KEY_ID"],
        secret_key=env["AWS_SECRET_ACCESS_KEY"],
        region=env["AWS_DEFAULT_REGION"],
    )


def _keys(bucket: str) -> dict[str, int]:
    listed = boto3.client("s3").list_objects_v2(Bucket=bucket).get("Contents", [])
    return {o["Key"]: int(o["Size"]) for o in listed}


@pytest.mark.parametrize("mode", ["file", "streaming"])
def test_phasekit_run_with_results_through_pyarrow(
    mode: str,
    bucket: str,
    s3_env: S3Server,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    local = tmp_path / "local"
    url = f"pyarrow+s3://{bucket}/team/results"
    args = ["run", str(EXAMPLE), "--results-dir", url, "--local-dir", str(local), "--workers", "1"]
    items_too = ["--set", "results.collection.store_container_items=true"]
    with monkeypatch.context() as blocked:
        _no_other_clients(blocked)  # the run uploads through pyarrow alone
        settings = ["--set", f"data_flow.mode={mode}", "--set", "data.n_bars=1500"]
        assert main([*args, *settings, *items_too]) == 0
    where = ["--results-dir", str(local)]
    (run_row,) = cli_json(capsys, "runs", *where)
    assert run_row["results_dir"] == url
    run_id = run_row["process_id"]
    items = cli_json(capsys, "ls", "latest", *where)
    objects = [i for i in items if (i["data_reference"] or "").startswith("pyarrow+s3://")]
    assert objects and not [i for i in items if (i["data_reference"] or "").startswith("file://")]
    assert all(i["data_reference"].startswith(f"{url}/{run_id}/") for i in objects)
    assert not (local / run_id).exists()  # only the catalog stays local
    stored = _keys(bucket)
    plain = f"pyarrow+s3://{bucket}/"
    assert {i["data_reference"][len(plain) :] for i in objects} <= set(stored)
    if mode == "file":  # the file store's manifests went along
        assert any("/.phasekit/" in k for k in stored)
    else:  # the stream's parts are objects
        assert any(i["format"] == "arrow" and "stream" in i["data_reference"] for i in objects)

    # read back by pyarrow (its S3 client pointed at the server), polars and DuckDB
    first = next(i for i in objects if i["format"] == "arrow" and i["size_bytes"] > 0)
    key = first["data_reference"][len(plain) :]
    with _reader_fs(s3_env).open_input_file(f"{bucket}/{key}") as fh:
        table = pa.ipc.open_file(fh).read_all()
    assert table.num_rows > 0
    import polars as pl

    frame = pl.read_ipc(
        f"s3://{bucket}/{key}",
        storage_options=s3_env.polars_options(),
    )
    assert frame.height == table.num_rows
    import duckdb

    # DuckDB's s3:// reader (httpfs) is downloaded on first use (no network here): it
    # gets the table pyarrow read
    con = duckdb.connect()
    con.register("results", table)
    assert con.execute("SELECT count(*) FROM results").fetchall() == [(table.num_rows,)]

    # show --verify, doctor, du, export
    assert cli_json(capsys, "show", str(first["id"]), "--verify", *where)["verified"] == "ok"
    assert cli_json(capsys, "doctor", *where)["ok"] is True
    sizes = {i["data_reference"]: i["size_bytes"] for i in objects}
    assert cli_json(capsys, "du", *where)["total_bytes"] == sum(sizes.values())
    out = tmp_path / "export"
    exported = cli_json(capsys, "export", "latest", "--to", str(out), *where)
    by_source = {e["source"]: e for e in exported["exported"]}
    assert set(sizes) <= set(by_source)
    copy = out / by_source[first["data_reference"]]["target"]
    assert pa.ipc.open_file(pa.memory_map(str(copy))).read_all().equals(table)

    # doctor: an object no row names is reported, kept within the grace, then deleted
    client = boto3.client("s3")
    stray = f"team/results/{run_id}/optimization/stray.arrow"
    client.put_object(Bucket=bucket, Key=stray, Body=b"x")
    report = cli_json(capsys, "doctor", "--repair", *where)
    found = [f for f in report["findings"] if f["kind"] == "unreferenced_object"]
    assert [f["path"] for f in found] == [f"{plain}{stray}"] and found[0]["repaired"] is False
    assert "younger than the grace of 3600 s" in found[0]["action"]
    assert stray in _keys(bucket)
    report = cli_json(capsys, "doctor", "--repair", "--object-grace", "0", *where)
    found = [f for f in report["findings"] if f["kind"] == "unreferenced_object"]
    assert [f["path"] for f in found] == [f"{plain}{stray}"] and found[0]["repaired"] is True
    assert stray not in _keys(bucket)

    # a corrupt object: show --verify and doctor say so
    corrupt_and_check(capsys, bucket, key, first["id"], where)

    # cleanup deletes every object with its row; what pyarrow's S3 client leaves are its
    # folder markers (empty KEY/ objects, pyarrow.fs's directories), which hold no data
    removal = cli_json(capsys, "cleanup", "--policy", "keep_none", *where)["removal"]
    assert removal["failed"] == [] and len(removal["removed"]) == len(items)
    left = _keys(bucket)
    assert all(k.endswith("/") and size == 0 for k, size in left.items()), left
    assert cli_json(capsys, "ls", "latest", *where) == []


def _run(config: Path, url: str, local: Path) -> Any:
    from phasekit.workflow import run

    return run(
        str(config), workers=1, results_dir=url, local_dir=str(local),
        data_flow__mode="file", data__n_bars=1500,
    )  # fmt: skip


def test_run_result_and_serve_read_pyarrow_objects(bucket: str, tmp_path: Path) -> None:
    from phasekit.serve import create_app
    from serve_util import LiveServer

    url = f"pyarrow+s3://{bucket}/api"
    local = tmp_path / "local"
    result = _run(EXAMPLE, url, local)
    try:
        assert result.metrics("optimization").num_rows > 0  # fetched and verified
        arrow = [r for r in result.outputs("optimization") if r.format == "arrow"]
        assert arrow and all(r.uri.startswith(f"{url}/{result.run_id}/") for r in arrow)
        table = arrow[0].load()
    finally:
        result.close()
    with open_catalog(local / "catalog.sqlite", results_dir=local) as catalog:
        item = next(
            i for i in catalog.list_items(result.run_id) if i.data_reference == arrow[0].uri
        )
        with LiveServer(create_app(catalog)) as server:
            c = server.client()
            data = c.get(f"/items/{item.id}/data")
            assert data.status_code == 200, data.text
            assert pa.ipc.open_stream(pa.py_buffer(data.content)).read_all().equals(table)


KEY_VAR = "PHASEKIT_TEST_PA_KEY"
NEW_VAR = "PHASEKIT_TEST_PA_NEW_KEY"


def test_encrypted_run_through_pyarrow(
    bucket: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Files are uploaded sealed with their key objects; readers decrypt; cleanup deletes
    the key objects with the data."""
    from phasekit.crypt import generate_key, load_master_key
    from phasekit.crypt.aead import MAGIC
    from phasekit.crypt.objects import key_stem

    monkeypatch.setenv(KEY_VAR, generate_key())
    config = tmp_path / "encrypted.yaml"
    config.write_text(
        f"{EXAMPLE.read_text()}\nencryption: {{enabled: true, key: 'env:{KEY_VAR}'}}\n"
    )
    url = f"pyarrow+s3://{bucket}/sealed"
    local = tmp_path / "local"
    result = _run(config, url, local)
    try:
        items = result._catalog.list_items(result.run_id)
        arrow = next(i for i in items if i.format == "arrow" and i.size_bytes > 0)
        table = next(
            r for r in result.outputs(arrow.stage_name) if r.uri == arrow.data_reference
        ).load()
    finally:
        result.close()
    root = ObjectRoot.from_url(url)
    rel = root.relative(str(arrow.data_reference))
    client = boto3.client("s3")
    sealed = client.get_object(Bucket=bucket, Key=root.key(rel))["Body"].read()
    assert sealed.startswith(MAGIC) and b"ARROW1" not in sealed
    key_objects = [k for k in _keys(bucket) if key_stem(k[len("sealed/") :]) is not None]
    assert key_objects
    where = ["--results-dir", str(local)]
    assert cli_json(capsys, "show", str(arrow.id), "--verify", *where)["verified"] == "ok"
    out = tmp_path / "export"
    exported = cli_json(capsys, "export", result.run_id, "--to", str(out), *where)
    target = {e["source"]: e for e in exported["exported"]}[arrow.data_reference]["target"]
    assert pa.ipc.open_file(pa.memory_map(str(out / target))).read_all().equals(table)
    # keys rotate re-wraps the key objects through pyarrow too; the new key reads them
    monkeypatch.setenv(NEW_VAR, generate_key())
    new_id = load_master_key(f"env:{NEW_VAR}").key_id
    rotate = ["keys", "rotate", "--results-dir", url, "--catalog", str(local / "catalog.sqlite")]
    rotated = cli_json(capsys, *rotate, "--old", f"env:{KEY_VAR}", "--new", f"env:{NEW_VAR}")
    assert rotated["rewrapped"] == len(key_objects)
    bodies = [client.get_object(Bucket=bucket, Key=k)["Body"].read() for k in key_objects]
    assert all(json.loads(b)["key_id"] == new_id for b in bodies)
    monkeypatch.setenv(KEY_VAR, load_master_key(f"env:{NEW_VAR}").secret.hex())
    again = cli_json(capsys, "export", result.run_id, "--to", str(tmp_path / "new"), *where)
    target = {e["source"]: e for e in again["exported"]}[arrow.data_reference]["target"]
    copy = pa.memory_map(str(tmp_path / "new" / target))
    assert pa.ipc.open_file(copy).read_all().equals(table)
    removal = cli_json(capsys, "cleanup", "--policy", "keep_none", *where)["removal"]
    assert removal["failed"] == []
    assert {root.uri(k[len("sealed/") :]) for k in key_objects} <= set(removal["files_deleted"])
    assert all(k.endswith("/") and size == 0 for k, size in _keys(bucket).items())
