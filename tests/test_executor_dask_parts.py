"""Window tables written by the Dask workers (:mod:`phasekit.workflow.blockwrite`).

On the real loopback cluster (:mod:`conftest_dask`), a block window's ``containers``,
``trades`` and ``equity`` tables are part sets whose parts the worker processes wrote:
the client gets back only each block's metadata and never calls the writer for those
blocks. What the run stored reads back (pyarrow, polars, DuckDB, the catalog, the CLI,
the server) as the local run's single files do; a killed client resumes to the same
tables; a damaged or missing part is an error for readers and a finding for doctor.
The cluster tests run once, not per backend.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import signal
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.feather as feather
import pytest

from cluster_support import config, outputs
from dask_util import DaskCluster
from phasekit.catalog import open_catalog
from phasekit.cli import main as cli_main
from phasekit.errors import CorruptDataError
from phasekit.stores import partset
from phasekit.workflow import blocktables, run
from phasekit.workflow.blockwrite import WrittenBlock
from phasekit.workflow.executors.remote import RemoteExecutor

pytest_plugins = ["conftest_dask", "s3_util", "conftest_pg"]
pytestmark = pytest.mark.one_pass

TABLES = ("containers", "trades", "equity")


def _table(window: Path, name: str) -> pa.Table | None:
    """A window table as the local run (one Arrow file) or the cluster run (a part set)
    stored it; None when the window has none."""
    if (window / f"{name}.arrow").is_file():
        return feather.read_table(window / f"{name}.arrow")
    if (window / f"{name}{partset.SUFFIX}").is_dir():
        return partset.read_part_set(window / f"{name}{partset.SUFFIX}")
    return None


def _windows(res: Any, phase: str) -> list[Path]:
    return sorted(p for p in (res.run_dir / phase).iterdir() if p.is_dir())


def _rows(catalog_url: str, run_id: str) -> list[tuple[Any, ...]]:
    """The run's catalog rows as what they say (not where their files are)."""
    with open_catalog(catalog_url) as catalog:
        rows = catalog.list_items(run_id)
    return sorted(
        (
            r.stage_name,
            str(r.window_id),
            r.entity_name,
            r.format,
            r.metadata.get("rows"),
            json.dumps(r.metadata.get("columns"), sort_keys=True, default=str),
        )
        for r in rows
    )


def _outcome_kinds(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The type of each block outcome the cluster executors hand the run, as they come."""
    kinds: list[str] = []
    map_blocks = RemoteExecutor.map_blocks

    def seen(self: RemoteExecutor[Any, Any], *args: Any, **kw: Any) -> Iterator[Any]:
        for outcome in map_blocks(self, *args, **kw):
            kinds.append(type(outcome).__name__)
            yield outcome

    monkeypatch.setattr(RemoteExecutor, "map_blocks", seen)
    return kinds


def _planned_parts(cfg: dict[str, Any], executor: Any) -> set[Any]:
    """Who the dry-run plan says writes the window tables' parts, over every phase's
    tables (``workers``; None for tables that are no part sets)."""
    from phasekit.workflow.plan import plan_run
    from phasekit.workflow.run import resolve_target

    resolved = resolve_target(cfg, {"executor": executor})[0]
    return {t.get("parts") for p in plan_run(resolved) for t in p.tables.values()}


def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    capsys.readouterr()
    code = cli_main(list(args))
    out = capsys.readouterr().out
    assert code == 0, out
    return out


@pytest.fixture(scope="module")
def pair(
    dask_cluster: DaskCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Any, Any, list[tuple[str, int]], list[tuple[int, int]]]]:
    """A local run and the same run on the cluster, with the blocks whose parts the
    client wrote (window folder, block index) and, per block a worker wrote, the bytes
    of what it handed back and of the parts it wrote."""
    tmp = tmp_path_factory.mktemp("parts")
    client_wrote: list[tuple[str, int]] = []
    handed: list[tuple[int, int]] = []
    write = blocktables.write_block_parts
    map_blocks = RemoteExecutor.map_blocks

    def counted_write(window_dir: Path, job: Any, tables: Any, compression: Any) -> Any:
        client_wrote.append((Path(window_dir).name, job.index))
        return write(window_dir, job, tables, compression)

    def measured(self: RemoteExecutor[Any, Any], *args: Any, **kw: Any) -> Iterator[Any]:
        for outcome in map_blocks(self, *args, **kw):
            if isinstance(outcome, WrittenBlock):
                written = sum(p.size_bytes for p in outcome.parts.values())
                handed.append((len(pickle.dumps(outcome)), written))
            yield outcome

    local = run({**config(11), "results_dir": str(tmp / "local")})
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(blocktables, "write_block_parts", counted_write)
        mp.setattr(RemoteExecutor, "map_blocks", measured)
        remote = run(
            {**config(11), "results_dir": str(tmp / "dask")},
            executor={"dask": dask_cluster.address},
        )
    try:
        yield local, remote, client_wrote, handed
    finally:
        local.close()
        remote.close()


def test_the_workers_write_the_parts_and_hand_back_metadata(pair: Any) -> None:
    local, remote, client_wrote, handed = pair
    assert outputs(remote) == outputs(local)
    # the search windows' training blocks came back as metadata only: a few KiB, not
    # their rows
    assert len(handed) >= 3
    for size, written in handed:
        assert size < 16_384 and size < written
    for window in _windows(remote, "search"):
        folder = window / "containers.parts"
        parts = partset.part_files(folder)
        # block 0 (the training sets) was written by a worker, the test set's block by
        # the client (its equity curve is kept in the client for the out-of-sample curve)
        assert (window.name, 0) not in client_wrote
        assert folder / partset.part_name(0) in parts
        assert (window.name, 1) in client_wrote
        assert not (window / "containers.arrow").exists()
    # what the dry run said
    executor = {"dask": "tcp://127.0.0.1:1"}
    assert _planned_parts(config(11), executor) == {"workers"}
    assert _planned_parts(config(11), "local") == {None}


def test_the_tables_read_as_the_local_run_s(pair: Any) -> None:
    import duckdb
    import polars
    import pyarrow.dataset as ds

    local, remote, _, _ = pair
    for phase in ("search", "check"):
        mine, theirs = _windows(remote, phase), _windows(local, phase)
        assert [w.name for w in mine] == [w.name for w in theirs]
        for window, want_window in zip(mine, theirs):
            for name in TABLES:
                want = _table(want_window, name)
                folder = window / f"{name}{partset.SUFFIX}"
                if want is None:  # a window without curves has no equity table
                    assert name == "equity" and not folder.exists()
                    continue
                got = ds.dataset(str(folder), format="arrow", exclude_invalid_files=True)
                assert got.to_table().to_pylist() == want.to_pylist(), (window, name)
                frame = polars.scan_ipc(f"{folder}/part-*.arrow").collect()
                assert (
                    frame.to_arrow().to_pylist() == polars.from_arrow(want).to_arrow().to_pylist()
                )
                con = duckdb.connect()
                con.register("t", partset.read_part_set(folder))
                count = con.execute("SELECT count(*) FROM t").fetchone()
                assert count is not None and count[0] == want.num_rows


def test_the_catalog_and_its_readers_see_the_local_run_s_rows(
    pair: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    local, remote, _, _ = pair
    assert _rows(remote.catalog_url, remote.run_id) == _rows(local.catalog_url, local.run_id)
    # the run's own reader
    for ref in remote.outputs("search"):
        if ref.entity in TABLES:
            (want,) = [
                r for r in local.outputs("search")
                if (r.entity, r.window_id) == (ref.entity, ref.window_id)
            ]  # fmt: skip
            assert ref.load().equals(want.load())
    where = ["--catalog", remote.catalog_url]
    # ls --container and show --container find a container's row within its block's part
    listed = json.loads(_cli(capsys, "ls", remote.run_id, "--container", "train_00004",
                             "--json", *where))  # fmt: skip
    row = next(r for r in listed if r["window_id"] == "w0000")
    shown = json.loads(_cli(capsys, "show", str(row["id"]), "--container", "train_00004",
                            "--json", "--verify", *where))  # fmt: skip
    assert shown["inline_data"]["uri"].endswith("containers.parts/part-000001.arrow")
    # export converts a part set like a file; du counts it
    for res, to in ((local, tmp_path / "local"), (remote, tmp_path / "dask")):
        _cli(capsys, "export", res.run_id, "--to", str(to), "--format", "parquet",
             "--catalog", res.catalog_url)  # fmt: skip
    import pyarrow.parquet as pq

    exported = sorted(
        p.relative_to(tmp_path / "local") for p in (tmp_path / "local").rglob("containers*.parquet")
    )
    assert exported
    for rel in exported:
        mine = (
            tmp_path / "dask" / str(rel).replace("containers.parquet", "containers.parts.parquet")
        )
        if not mine.exists():
            mine = next((tmp_path / "dask" / rel.parent).glob("containers*.parquet"))
        assert pq.read_table(mine).equals(pq.read_table(tmp_path / "local" / rel))
    assert remote.run_id in _cli(capsys, "du", *where)
    from phasekit.report.data import read_run

    with open_catalog(remote.catalog_url) as catalog:
        assert read_run(catalog, remote.run_id).unreadable == 0
    _cli(capsys, "report", remote.run_id, "-o", str(tmp_path / "report.html"), *where)
    assert (tmp_path / "report.html").stat().st_size > 0
    doctor = json.loads(_cli(capsys, "doctor", "--json", *where))
    assert [f for f in doctor["findings"] if f["severity"] == "error"] == []


def test_the_server_sends_a_part_set_as_the_local_file(pair: Any) -> None:
    from phasekit.serve import create_app
    from phasekit.serve.client import read_table
    from serve_util import LiveServer

    local, remote, _, _ = pair
    got: dict[str, pa.Table] = {}
    for key, res in (("local", local), ("dask", remote)):
        with open_catalog(res.catalog_url) as catalog:
            (item,) = catalog.list_items(
                res.run_id, stage="search", entity="trades", window="w0001"
            )
            with LiveServer(create_app(catalog)) as server, server.client() as client:
                body = client.get(f"/items/{item.id}/data", params={"format": "arrow"})
                assert body.status_code == 200, body.text
                got[key] = pa.ipc.open_stream(body.content).read_all()
                part = client.get(f"/items/{item.id}/data", params={"format": "json", "limit": 2})
                assert len(part.json()) == 2
                # phasekit's reader over several connections: /file in ranges for a
                # single file, /data for a part set (whose /file is refused as a folder)
                many = read_table(server.url, item.id, connections=3)
                assert many.equals(pa.ipc.open_stream(body.content).read_all())
                if key == "dask":
                    refused = client.get(f"/items/{item.id}/file")
                    assert refused.status_code == 400 and "a folder" in refused.text
    assert got["dask"].equals(got["local"])


def test_a_damaged_or_missing_part_is_an_error(
    dask_cluster: DaskCluster, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    res = run({**config(12), "results_dir": str(tmp_path)}, executor={"dask": dask_cluster.address})
    try:
        _damage(res, capsys)
        with open_catalog(res.catalog_url) as catalog:
            (table,) = catalog.list_items(res.run_id, entity="containers", window="w0001")
    finally:
        res.close()
    # a catalog rebuilt from the results folder has the table as one folder item
    from phasekit.catalog.rebuild import rebuild_catalog

    rebuild_catalog(str(tmp_path / "catalog.sqlite"), results_dir=tmp_path)
    with open_catalog(str(tmp_path / "catalog.sqlite"), results_dir=tmp_path) as catalog:
        (rebuilt,) = catalog.list_items(res.run_id, entity="containers", window="w0001")
        assert (rebuilt.data_reference, rebuilt.checksum, rebuilt.size_bytes) == (
            table.data_reference,
            table.checksum,
            table.size_bytes,
        )
        assert rebuilt.metadata["rows"] == table.metadata["rows"] and rebuilt.format == "arrow"


def _damage(res: Any, capsys: pytest.CaptureFixture[str]) -> None:
    folder = res.run_dir / "search" / "w0000" / "containers.parts"
    first = folder / partset.part_name(0)
    data = bytearray(first.read_bytes())
    data[len(data) // 2] ^= 0xFF
    first.write_bytes(bytes(data))
    with pytest.raises(CorruptDataError, match="fails its checksum"):
        partset.read_part_set(folder)
    (ref,) = [
        r for r in res.outputs("search") if (r.entity, r.window_id) == ("containers", "w0000")
    ]
    with pytest.raises(CorruptDataError):
        ref.load()
    where = ["--catalog", res.catalog_url]
    capsys.readouterr()
    cli_main(["doctor", "--json", *where])
    findings = json.loads(capsys.readouterr().out)["findings"]
    assert any(
        f["kind"] == "corrupt_file" and f["path"].endswith("w0000/containers.parts")
        for f in findings
    )
    first.unlink()
    with pytest.raises(CorruptDataError, match="missing"):
        partset.read_part_set(folder)
    # cleanup removes a part set as one item: its folder, manifest and parts
    with open_catalog(res.catalog_url) as catalog:
        (item,) = catalog.list_items(res.run_id, entity="containers", window="w0000")
        report = catalog.remove_items([item.id])
    assert not report.failed and not folder.exists()


KILL = """
import json, sys
from phasekit.workflow import run
run(json.loads(sys.argv[1]), executor={"dask": sys.argv[2]})
"""


def test_a_killed_client_resumes_to_the_uninterrupted_run(
    dask_cluster: DaskCluster, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Killed once the third block is stored (window w0001's training block, whose parts
    a worker wrote), the resumed run reuses that block from its parts."""
    import logging

    cfg = {**config(13), "results_dir": str(tmp_path / "killed")}
    env = {**os.environ, "PHASEKIT_FAILPOINT": "blocks.after_block@3"}
    proc = subprocess.run(
        [sys.executable, "-c", KILL, json.dumps(cfg), dask_cluster.address],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    with open_catalog(str(tmp_path / "killed")) as catalog:
        (killed,) = catalog.list_processes()
    with caplog.at_level(logging.INFO, logger="phasekit.workflow"):
        resumed = run(cfg, executor={"dask": dask_cluster.address}, resume=killed.process_id)
    assert "window w0001: 1 block(s) reused" in caplog.text
    whole = run({**config(13), "results_dir": str(tmp_path / "whole")})
    try:
        assert outputs(resumed) == outputs(whole)
        for phase in ("search", "check"):
            for window, want in zip(_windows(resumed, phase), _windows(whole, phase)):
                for name in TABLES:
                    got, expected = _table(window, name), _table(want, name)
                    assert (got is None and expected is None) or (
                        got is not None and expected is not None and got.equals(expected)
                    ), (window, name)
        assert _rows(resumed.catalog_url, resumed.run_id) == _rows(whole.catalog_url, whole.run_id)
    finally:
        resumed.close()
        whole.close()


@pytest.fixture(scope="module")
def s3_cluster(s3_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaskCluster]:
    """A cluster whose workers have the S3 server's settings in their environment."""
    from dask_util import start_cluster

    with pytest.MonkeyPatch.context() as mp:
        for name, value in s3_server.env().items():
            mp.setenv(name, value)
        cluster = start_cluster(tmp_path_factory.mktemp("s3-cluster"))
    try:
        yield cluster
    finally:
        cluster.stop()


def test_on_object_storage_the_workers_write_the_parts_as_objects(
    bucket: str, s3_cluster: DaskCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Results on S3 (moto): the workers (of a cluster started with the server's
    settings in its environment) write their parts as objects; the client uploads only
    the manifests and the parts it wrote; readers fetch and verify them."""
    import boto3

    from phasekit.serve import create_app
    from serve_util import LiveServer

    client_wrote: list[tuple[str, int]] = []
    write = blocktables.write_block_parts

    def counted_write(window_dir: Path, job: Any, tables: Any, compression: Any) -> Any:
        client_wrote.append((Path(window_dir).name, job.index))
        return write(window_dir, job, tables, compression)

    monkeypatch.setattr(blocktables, "write_block_parts", counted_write)
    url = f"s3://{bucket}/parts"
    remote = run(
        {**config(14), "results_dir": url},
        executor={"dask": s3_cluster.address},
        local_dir=str(tmp_path / "local"),
    )
    local = run({**config(14), "results_dir": str(tmp_path / "plain")})
    try:
        assert outputs(remote) == outputs(local)
        keys = {o["Key"] for o in boto3.client("s3").list_objects_v2(Bucket=bucket)["Contents"]}
        for window in _windows(local, "search"):
            base = f"parts/{remote.run_id}/search/{window.name}/containers.parts"
            assert {f"{base}/manifest.json", f"{base}/{partset.part_name(0)}"} <= keys
            assert (window.name, 0) not in client_wrote  # a worker wrote it
        assert not any(k.endswith(partset.PROBE) for k in keys)
        for ref in remote.outputs("search"):
            if ref.entity in TABLES:
                assert ref.uri.startswith(f"{url}/") and ref.uri.endswith(".parts")
                want = _table(local.run_dir / "search" / str(ref.window_id), ref.entity)
                assert want is not None and ref.load().equals(want), ref.uri
        with open_catalog(
            str(tmp_path / "local" / "catalog.sqlite"), results_dir=tmp_path / "local"
        ) as catalog:
            assert catalog.doctor().ok
            (item,) = catalog.list_items(
                remote.run_id, stage="search", entity="trades", window="w0001"
            )
            catalog.verify_item(item)
            with LiveServer(create_app(catalog)) as server, server.client() as c:
                body = c.get(f"/items/{item.id}/data", params={"format": "arrow"})
                assert body.status_code == 200, body.text
                want = _table(local.run_dir / "search" / "w0001", "trades")
                assert pa.ipc.open_stream(body.content).read_all().equals(want)
                tar = c.get(f"/runs/{remote.run_id}/export")
                assert tar.status_code == 200, tar.text
                archive = tarfile.open(fileobj=io.BytesIO(tar.content))
                base = f"{remote.run_id}/search/w0001/trades.parts"
                names = set(archive.getnames())
                assert {f"{base}/manifest.json", f"{base}/{partset.part_name(0)}"} <= names
                member = archive.extractfile(f"{base}/{partset.part_name(0)}")
                assert member is not None
                first = pa.ipc.open_file(pa.py_buffer(member.read())).read_all()
                assert first.equals(want.slice(0, first.num_rows))
            # a damaged part object: reads and doctor say so
            key = f"parts/{remote.run_id}/search/w0001/trades.parts/{partset.part_name(0)}"
            s3 = boto3.client("s3")
            raw = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
            s3.put_object(Bucket=bucket, Key=key, Body=raw[:-1] + bytes([raw[-1] ^ 0xFF]))
            with pytest.raises(CorruptDataError):
                catalog.verify_item(item)
            findings = catalog.doctor().findings
            assert [f.kind for f in findings if f.item_id == item.id] == ["corrupt_file"]
            # removing the table deletes its manifest and every part
            catalog.remove_items([item.id])
            left = boto3.client("s3").list_objects_v2(Bucket=bucket, Prefix=key.rsplit("/", 1)[0])
            assert left.get("KeyCount", 0) == 0
    finally:
        remote.close()
        local.close()


@pytest.mark.parametrize("kind", ["encrypted", "hybrid"])
def test_encrypted_and_in_memory_tables_stay_the_client_s(
    dask_cluster: DaskCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    """An encrypted run (the client seals every file, no key goes to the workers) and a
    ``hybrid`` one (its tables are items of the client's store) get their blocks' rows
    back and write their tables as before: no part set, no block written by a worker."""
    from phasekit.crypt import generate_key

    kinds = _outcome_kinds(monkeypatch)
    extra: dict[str, Any] = {"data_flow": {"mode": "hybrid"}}
    if kind == "encrypted":
        monkeypatch.setenv("PK_PARTS_KEY", generate_key())
        extra = {"encryption": {"enabled": True, "key": "env:PK_PARTS_KEY"}}
    res = run(
        {**config(15), **extra, "results_dir": str(tmp_path)},
        executor={"dask": dask_cluster.address},
    )
    try:
        assert kinds and set(kinds) == {"BlockOutcome"}
        assert not list(res.run_dir.rglob(f"*{partset.SUFFIX}"))
        assert _planned_parts({**config(15), **extra}, {"dask": dask_cluster.address}) == {None}
        window = res.run_dir / "search" / "w0000"
        assert (window / "trades.arrow").is_file()
        if kind == "encrypted":
            assert (window / "containers.arrow").read_bytes().startswith(b"PKCRYPT")
        (ref,) = [
            r for r in res.outputs("search") if (r.entity, r.window_id) == ("trades", "w0000")
        ]
        assert ref.load().num_rows > 0
    finally:
        res.close()


S3_KILL = """
import json, sys
from phasekit.workflow import run
run(json.loads(sys.argv[1]), executor={"dask": sys.argv[2]}, local_dir=sys.argv[3])
"""


def test_on_object_storage_a_killed_client_resumes_to_the_uninterrupted_run(
    bucket: str, s3_cluster: DaskCluster, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Killed once window w0001's worker-written block is stored, a run on S3 resumes,
    reusing that block from its part objects, to the uninterrupted run's tables and
    rows."""
    import logging

    cfg = {**config(16), "results_dir": f"s3://{bucket}/killed"}
    local = str(tmp_path / "local")
    env = {**os.environ, "PHASEKIT_FAILPOINT": "blocks.after_block@3"}
    proc = subprocess.run(
        [sys.executable, "-c", S3_KILL, json.dumps(cfg), s3_cluster.address, local],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    with open_catalog(str(Path(local) / "catalog.sqlite"), results_dir=local) as catalog:
        (killed,) = catalog.list_processes()
        # doctor's repair keeps the parts the unfinished window's block rows name (no
        # table row names them yet), however old
        report = catalog.doctor(repair=True, object_grace_seconds=0)
        deleted = [f.detail for f in report.findings if f.kind == "unreferenced_object"]
        assert not [d for d in deleted if "/w0001/" in d and ".parts/" in d], deleted
    with caplog.at_level(logging.INFO, logger="phasekit.workflow"):
        resumed = run(
            cfg, executor={"dask": s3_cluster.address}, resume=killed.process_id, local_dir=local
        )
    assert "window w0001: 1 block(s) reused" in caplog.text
    whole = run({**config(16), "results_dir": str(tmp_path / "whole")})
    try:
        assert outputs(resumed) == outputs(whole)
        for ref in resumed.outputs("search"):
            if ref.entity in TABLES:
                want = _table(whole.run_dir / "search" / str(ref.window_id), ref.entity)
                assert want is not None and ref.load().equals(want), ref.uri
        rows = _rows(resumed.catalog_url, resumed.run_id)
        assert rows == _rows(whole.catalog_url, whole.run_id)
    finally:
        resumed.close()
        whole.close()


def test_workers_that_cannot_see_the_results_hand_the_rows_back(
    dask_cluster: DaskCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A probe the workers do not find (as on machines without the shared folder): the
    blocks come back whole, the client writes their parts, the tables are the same."""
    from phasekit.workflow.blockwrite import PartSink

    kinds = _outcome_kinds(monkeypatch)
    nowhere = str(tmp_path / "elsewhere" / partset.PROBE)
    monkeypatch.setattr(blocktables.BlockTables, "_reach_probe", lambda self: (nowhere, "t"))
    assert not PartSink("", (), None, None, nowhere, "t").reachable()
    res = run(
        {**config(11), "results_dir": str(tmp_path / "r")}, executor={"dask": dask_cluster.address}
    )
    local = run({**config(11), "results_dir": str(tmp_path / "local")})
    try:
        assert kinds and set(kinds) == {"BlockOutcome"}
        for window, want in zip(_windows(res, "search"), _windows(local, "search")):
            assert (window / "containers.parts").is_dir()
            for name in TABLES:
                got, expected = _table(window, name), _table(want, name)
                assert got is not None and expected is not None and got.equals(expected)
        assert outputs(res) == outputs(local)
    finally:
        res.close()
        local.close()


def test_a_probe_is_found_once_by_its_token(tmp_path: Path) -> None:
    from phasekit.workflow.blockwrite import PartSink

    probe = tmp_path / partset.PROBE
    probe.write_text("right")
    assert not PartSink("", (), None, None, str(probe), "wrong").reachable()
    sink = PartSink("", (), None, None, str(probe), "right")
    assert sink.reachable()
    probe.unlink()  # once found, not read again by this process
    assert sink.reachable()
    assert not PartSink("", (), None, None, str(probe), "other").reachable()


def test_a_shared_postgresql_catalog_records_the_part_sets(
    dask_cluster: DaskCluster, tmp_path: Path, pg_url: str
) -> None:
    """Two runs on the cluster into one PostgreSQL catalog: each window table is one row
    naming its part set, every block one row pointing at its part; doctor finds them
    sound and the runs equal the local run."""
    results = tmp_path / "results"
    runs = [
        run(
            {**config(17), "results_dir": str(results), "catalog": pg_url},
            executor={"dask": dask_cluster.address},
        )
        for _ in range(2)
    ]
    local = run({**config(17), "results_dir": str(tmp_path / "local")})
    try:
        with open_catalog(pg_url, results_dir=results) as catalog:
            for res in runs:
                assert outputs(res) == outputs(local)
                tables = catalog.list_items(res.run_id, entity="containers")
                assert tables and all(
                    str(t.data_reference).endswith("containers.parts") for t in tables
                )
                for table in tables:
                    catalog.verify_item(table)
                blocks = [
                    r for r in catalog.list_items(res.run_id) if r.entity_name.startswith("block_")
                ]
                assert blocks and all(".parts/part-" in r.metadata["uri"] for r in blocks)
            assert catalog.doctor().ok
    finally:
        for res in runs:
            res.close()
        local.close()
