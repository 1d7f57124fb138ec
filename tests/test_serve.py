"""``phasekit serve``'s API over real components: uvicorn on 127.0.0.1, httpx, SQLite and
PostgreSQL catalogs.

Discovery (filters, search, cursors), data access (formats, columns, limits, checksum
headers, ranges), compare, export, health, metrics, and errors as JSON with the CLI's text.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest

from catalog_util import sample_table, store
from phasekit.catalog import Catalog, CatalogRecorder, open_catalog
from phasekit.checksum import bytes_checksum
from phasekit.crypt import Encryption, generate_key, open_encryption
from phasekit.serve import create_app
from phasekit.serve.public import public_text, server_paths
from phasekit.stores import FileStore
from serve_util import Filled, LiveServer, fill, free_port, serving

pytest_plugins = ["conftest_pg"]

DIALECTS = ("sqlite", "postgresql")


class Served:
    def __init__(
        self, server: LiveServer, catalog: Catalog, filled: Filled, results: Path, where: str
    ) -> None:
        self.where = where  # the catalog's location, as the CLI takes it
        self.server = server
        self.catalog = catalog
        self.filled = filled
        self.results = results
        self.client = server.client()


def _open(request: pytest.FixtureRequest, dialect: str, results: Path) -> tuple[Catalog, str]:
    if dialect == "sqlite":
        return open_catalog(results, results_dir=results), str(results)
    pg = request.getfixturevalue("pg_server")
    name, url = pg.new_schema()
    request.addfinalizer(lambda: pg.drop_schema(name))
    return open_catalog(url, results_dir=results), url


@pytest.fixture(scope="module", params=DIALECTS)
def served(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    """A filled catalog of each dialect behind a live server (shared by read-only tests)."""
    results = tmp_path_factory.mktemp("results")
    catalog, where = _open(request, request.param, results)
    filled = fill(catalog)
    with LiveServer(create_app(catalog)) as server:
        yield Served(server, catalog, filled, results, where)
    catalog.close()


@pytest.fixture(params=DIALECTS)
def fresh(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Served]:
    """Like ``served``, one per test (for tests that change the catalog or its files)."""
    results = tmp_path / "results"
    results.mkdir()
    catalog, where = _open(request, request.param, results)
    filled = fill(catalog)
    with LiveServer(create_app(catalog)) as server:
        yield Served(server, catalog, filled, results, where)
    catalog.close()


def ids(page: dict[str, object]) -> list[object]:
    return [row["id"] if "id" in row else row["process_id"] for row in page["items"]]  # type: ignore[index,union-attr]


# ------------------------------------------------------------------ discovery
def test_runs_filters(served: Served) -> None:
    c = served.client
    assert ids(c.get("/runs").json()) == ["val-b", "opt-a"]
    assert ids(c.get("/runs", params={"workflow": "wf1"}).json()) == ["opt-a"]
    assert ids(c.get("/runs", params={"status": "running"}).json()) == ["val-b"]
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    assert ids(c.get("/runs", params={"since": future}).json()) == []
    assert ids(c.get("/runs", params={"since": "1h"}).json()) == ["val-b", "opt-a"]
    one = c.get("/runs/opt-a").json()
    assert one["workflow"] == "wf1" and one["status"] == "completed"
    assert one["config"] == {"fast": 10, "slow": 30}
    assert c.get("/runs/latest").json()["process_id"] == "val-b"


def test_runs_cursor_pages_through_every_run(served: Served) -> None:
    c = served.client
    first = c.get("/runs", params={"limit": 1}).json()
    assert ids(first) == ["val-b"] and first["next_cursor"]
    second = c.get("/runs", params={"limit": 1, "cursor": first["next_cursor"]}).json()
    assert ids(second) == ["opt-a"] and second["next_cursor"] is None


def test_items_filters(served: Served) -> None:
    c, f = served.client, served.filled

    def listed(**params: object) -> list[object]:
        response = c.get("/runs/opt-a/items", params=params)
        assert response.status_code == 200, response.text
        return ids(response.json())

    everything = [f.arrow, f.parquet, f.csv, f.json_file, f.inline, f.memory, f.folder]
    assert listed() == everything
    assert listed(entity="trades") == [f.parquet]
    assert listed(stage="validate") == []
    assert listed(phase="optimize") == [f.csv]
    assert listed(window="w001") == [f.json_file]
    assert listed(container="nothing") == []
    assert listed(meta="metrics.sharpe=1.25") == [f.arrow]
    assert listed(meta=["kind=trades", "metrics.sharpe=1.25"]) == []
    assert listed(since=(datetime.now(UTC) + timedelta(hours=1)).isoformat()) == []
    assert listed(since="1d") == everything
    row = c.get(f"/items/{f.arrow}").json()
    assert row["path"] == "opt-a/optimize/containers.arrow" and row["location"] == "file"
    assert c.get(f"/items/{f.memory}").json()["location"] == "memory"
    assert c.get(f"/items/{f.inline}").json()["location"] == "inline"


def test_items_cursor_pages(served: Served) -> None:
    c, f = served.client, served.filled
    seen: list[object] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, object] = {"limit": 3}
        if cursor:
            params["cursor"] = cursor
        page = c.get("/runs/opt-a/items", params=params).json()
        seen += ids(page)
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == 3
    assert seen == [f.arrow, f.parquet, f.csv, f.json_file, f.inline, f.memory, f.folder]


def test_search_metadata_words(served: Served) -> None:
    c, f = served.client, served.filled
    assert ids(c.get("/search", params={"q": "crossover"}).json()) == [f.arrow]
    assert ids(c.get("/search", params={"q": "ALPHA crossover"}).json()) == [f.arrow]
    assert ids(c.get("/search", params={"q": "sharpe"}).json()) == [f.arrow, f.other_run]
    assert ids(c.get("/search", params={"q": "sharpe", "run": "val-b"}).json()) == [f.other_run]
    # LIKE wildcards are matched literally: only the in-memory item's keys (_pid) hold "_"
    assert ids(c.get("/search", params={"q": "%"}).json()) == []
    assert ids(c.get("/search", params={"q": "_"}).json()) == [f.memory]
    page = c.get("/search", params={"q": "sharpe", "limit": 1}).json()
    rest = c.get("/search", params={"q": "sharpe", "cursor": page["next_cursor"]}).json()
    assert ids(page) + ids(rest) == [f.arrow, f.other_run]


# ------------------------------------------------------------------ data access
def test_data_arrow_stream_by_default_with_headers(served: Served) -> None:
    f = served.filled
    response = served.client.get(f"/items/{f.arrow}/data")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/vnd.apache.arrow.stream"
    row = served.catalog.get_item(f.arrow)
    assert response.headers["x-phasekit-checksum"] == row.checksum
    assert response.headers["x-phasekit-size"] == str(row.size_bytes)
    assert pa.ipc.open_stream(response.content).read_all().equals(f.table)


@pytest.mark.parametrize("source", ["arrow", "parquet", "csv"])
def test_data_formats_columns_and_limit(served: Served, source: str) -> None:
    f = served.filled
    item = {"arrow": f.arrow, "parquet": f.parquet, "csv": f.csv}[source]
    c = served.client
    expected = f.table.select(["s", "i"]).slice(0, 7)
    params = {"columns": "s,i", "limit": 7}
    by_query = c.get(f"/items/{item}/data", params={**params, "format": "parquet"})
    assert by_query.headers["content-type"] == "application/vnd.apache.parquet"
    assert pq.read_table(io.BytesIO(by_query.content)).equals(expected)
    by_accept = c.get(f"/items/{item}/data", params=params, headers={"Accept": "text/csv"})
    assert by_accept.headers["content-type"].startswith("text/csv")
    assert pcsv.read_csv(io.BytesIO(by_accept.content)).equals(expected)
    as_json = c.get(f"/items/{item}/data", params={**params, "format": "json"}).json()
    assert as_json == expected.to_pylist()
    arrow = c.get(f"/items/{item}/data", params={"limit": 0})
    assert pa.ipc.open_stream(arrow.content).read_all().num_rows == 0


def test_data_of_folder_json_file_and_inline(served: Served) -> None:
    c, f = served.client, served.filled
    rows = c.get(f"/items/{f.folder}/data", params={"format": "json"}).json()
    assert [r["year"] for r in rows] == [2021] * 10 + [2022] * 10
    params_file = c.get(f"/items/{f.json_file}/data", params={"format": "json"}).json()
    assert params_file == f.table.slice(0, 3).to_pydict()
    assert c.get(f"/items/{f.inline}/data", params={"format": "json"}).json() == {
        "fast": 10,
        "slow": 30,
    }


def test_a_format_that_cannot_hold_the_table_is_refused_before_sending(fresh: Served) -> None:
    nested = pa.table({"k": pa.array([[1, 2], [3]], pa.list_(pa.int64()))})
    item = store(fresh.catalog, "val-b", "validate", "nested", nested, "arrow")
    refused = fresh.client.get(f"/items/{item}/data", params={"format": "csv"})
    assert refused.status_code == 400
    assert refused.json()["message"].startswith("format csv cannot hold this table")
    as_json = fresh.client.get(f"/items/{item}/data", params={"format": "json"}).json()
    assert as_json == [{"k": [1, 2]}, {"k": [3]}]


def test_data_errors_name_what_is_allowed(served: Served) -> None:
    c, f = served.client, served.filled
    bad_column = c.get(f"/items/{f.arrow}/data", params={"columns": "i,nope"})
    assert bad_column.status_code == 400
    assert bad_column.json()["message"] == "column 'nope' is not in the table; allowed: i, x, s"
    bad_format = c.get(f"/items/{f.arrow}/data", params={"format": "xml"})
    assert bad_format.status_code == 400 and "allowed: arrow, parquet, csv, json" in bad_format.text
    memory = c.get(f"/items/{f.memory}/data")
    assert memory.status_code == 400 and "has no bytes on disk" in memory.json()["message"]
    inline_arrow = c.get(f"/items/{f.inline}/data")
    assert inline_arrow.status_code == 400 and "inline JSON value" in inline_arrow.text
    json_as_arrow = c.get(f"/items/{f.json_file}/data")
    assert json_as_arrow.status_code == 400 and "not a table" in json_as_arrow.text


def test_file_bytes_and_ranges(served: Served) -> None:
    c, f = served.client, served.filled
    row = served.catalog.get_item(f.csv)
    assert row.path is not None
    raw = row.path.read_bytes()
    whole = c.get(f"/items/{f.csv}/file")
    assert whole.status_code == 200 and whole.content == raw
    assert whole.headers["etag"] == f'"{row.checksum}"'
    assert whole.headers["content-length"] == str(len(raw))
    part = c.get(f"/items/{f.csv}/file", headers={"Range": "bytes=5-14"})
    assert part.status_code == 206 and part.content == raw[5:15]
    assert part.headers["content-range"] == f"bytes 5-14/{len(raw)}"
    tail = c.get(f"/items/{f.csv}/file", headers={"Range": "bytes=-4"})
    assert tail.content == raw[-4:]
    open_end = c.get(f"/items/{f.csv}/file", headers={"Range": f"bytes={len(raw) - 3}-"})
    assert open_end.content == raw[-3:]
    outside = c.get(f"/items/{f.csv}/file", headers={"Range": f"bytes={len(raw)}-"})
    assert outside.status_code == 416 and str(len(raw)) in outside.json()["message"]
    several = c.get(f"/items/{f.csv}/file", headers={"Range": "bytes=0-1,4-5"})
    assert several.status_code == 400 and "allowed: one range" in several.text
    folder = c.get(f"/items/{f.folder}/file")
    assert folder.status_code == 400 and "is a folder" in folder.text


def test_corrupt_file_is_refused_or_cut_short(fresh: Served) -> None:
    c, f = fresh.client, fresh.filled
    path = fresh.catalog.get_item(f.arrow).path
    assert path is not None
    data = bytearray(path.read_bytes())
    data[100] ^= 0xFF
    path.write_bytes(bytes(data))
    refused = c.get(f"/items/{f.arrow}/data")
    assert refused.status_code == 409
    assert refused.json()["error"] == "CorruptDataError"
    assert "fails its checksum" in refused.json()["message"]
    # the raw bytes are checked as they go: the body is cut short, never complete
    with pytest.raises(Exception) as cut:
        c.get(f"/items/{f.arrow}/file").read()
    assert "peer closed" in str(cut.value) or "incomplete" in str(cut.value).lower()


# ------------------------------------------------------------------ compare, export
def test_compare_two_runs(served: Served) -> None:
    body = served.client.get("/compare", params={"a": "opt-a", "b": "val-b"}).json()
    assert body["run_a"]["process_id"] == "opt-a" and body["run_b"]["process_id"] == "val-b"
    assert {"path": "fast", "a": 10, "b": 12} in body["config"]
    sharpe = [m for m in body["metrics"] if m["metric"] == "sharpe"]
    assert {(m["stage_name"], m["a"], m["b"]) for m in sharpe} == {
        ("optimize", 1.25, None),
        ("validate", None, 0.5),
    }


def test_export_streams_a_tar_with_checked_members(served: Served) -> None:
    f = served.filled
    response = served.client.get("/runs/opt-a/export")
    assert response.status_code == 200 and response.headers["content-type"] == "application/x-tar"
    archive = tarfile.open(fileobj=io.BytesIO(response.content))
    names = archive.getnames()
    assert "opt-a/optimize/containers.arrow" in names
    assert "opt-a/optimize/parts/year=2021/part-0.parquet" in names
    assert f"opt-a/inline/optimize/best-{f.inline}.json" in names
    member = archive.extractfile("opt-a/optimize/containers.arrow")
    assert member is not None
    assert pa.ipc.open_file(pa.py_buffer(member.read())).read_all().equals(f.table)
    manifest_file = archive.extractfile("opt-a/manifest.json")
    assert manifest_file is not None
    manifest = json.loads(manifest_file.read())
    listed = {entry["name"]: entry for entry in manifest["files"]}
    row = served.catalog.get_item(f.arrow)
    assert listed["opt-a/optimize/containers.arrow"]["checksum"] == row.checksum
    assert manifest["skipped"] == [
        {"id": f.memory, "reason": "no bytes on disk (memory or stream)"}
    ]
    inline = archive.extractfile(f"opt-a/inline/optimize/best-{f.inline}.json")
    assert inline is not None
    data = inline.read()
    assert json.loads(data) == {"fast": 10, "slow": 30}
    assert listed[f"opt-a/inline/optimize/best-{f.inline}.json"]["checksum"] == bytes_checksum(data)


def test_delete_item_removes_file_and_row(fresh: Served) -> None:
    c, f = fresh.client, fresh.filled
    path = fresh.catalog.get_item(f.csv).path
    assert path is not None and path.exists()
    body = c.delete(f"/items/{f.csv}").json()
    assert body["removed"] == [f.csv] and body["freed_bytes"] > 0
    assert not path.exists()
    assert c.get(f"/items/{f.csv}").status_code == 404


def test_report_page_of_a_run(served: Served) -> None:
    from phasekit.report import render_report

    response = served.client.get("/runs/opt-a/report")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    # the page of a run is the same each time it is rendered: compared whole; the catalog
    # it names is the URL with the server's paths rewritten (<catalog> for SQLite)
    label = "<catalog>" if served.catalog.dialect == "sqlite" else served.catalog.url
    assert response.text == render_report(served.catalog, "opt-a", catalog_label=label)
    assert served.catalog.url not in response.text or served.catalog.dialect != "sqlite"
    assert "opt-a" in response.text
    assert served.client.get("/runs/nope/report").status_code == 404


# ------------------------------------------------------------------ health, metrics, schema
def test_health_metrics_and_openapi(served: Served) -> None:
    c = served.client
    assert c.get("/health").json() == {
        "status": "ok",
        "catalog": served.catalog.dialect,
        "auth": False,
    }
    c.get("/runs/opt-a")
    c.get("/runs/nope")
    text = c.get("/metrics").text
    assert 'phasekit_http_requests_total{method="GET",route="/runs/{run_id}",status="200"}' in text
    assert 'phasekit_http_requests_total{method="GET",route="/runs/{run_id}",status="404"}' in text
    assert "phasekit_http_request_seconds_bucket" in text
    schema = c.get("/openapi.json").json()
    assert {"/runs", "/runs/{run_id}/items", "/items/{item_id}/data", "/search"} <= set(
        schema["paths"]
    )
    assert "HTTPBearer" in schema["components"]["securitySchemes"]


def test_errors_carry_the_cli_text(served: Served) -> None:
    response = served.client.get("/runs/nope/items")
    assert response.status_code == 404
    where = ["--catalog", served.where, "--results-dir", str(served.results)]
    proc = subprocess.run(
        [sys.executable, "-m", "phasekit.cli", "ls", "nope", *where],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1
    # the same text, but for the server's paths (docs/serve.md, Errors)
    location = served.catalog.location
    paths = server_paths(served.catalog.results_dir, location.dialect, location.target)
    cli_text = proc.stderr.strip().removeprefix("phasekit: error: ")
    assert public_text(cli_text, paths) == response.json()["message"]
    if location.dialect == "sqlite":
        assert location.target in cli_text and "<catalog>" in response.json()["message"]
    assert response.json()["error"] == "UnknownKey"


def test_unknown_route_is_json(served: Served) -> None:
    response = served.client.get("/nothing/here")
    assert response.status_code == 404
    assert response.json() == {"error": "HTTPError", "message": "Not Found"}


def test_items_recorded_later_are_listed(fresh: Served) -> None:
    """The server reads the catalog on each request: a row recorded while it runs shows."""
    store(fresh.catalog, "val-b", "validate", "late", sample_table(5), "csv")
    names = [row["entity_name"] for row in fresh.client.get("/runs/val-b/items").json()["items"]]
    assert names == ["containers", "late"]


# ------------------------------------------------------------------ encrypted items
def _encrypted_item(catalog: Catalog, results: Path, table: pa.Table, enc: Encryption) -> int:
    catalog.start_process("wfenc", process_id="enc-run")
    recorder = CatalogRecorder(catalog, "enc-run", "p")
    store = FileStore(
        results / "enc-run", run="enc-run", phase="p", recorder=recorder, encryption=enc
    )
    store.put("t", table)
    return catalog.list_items("enc-run")[0].id


def test_encrypted_item_is_decrypted_with_the_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PK_SERVE_KEY", generate_key())
    enc = open_encryption("env:PK_SERVE_KEY")
    results = tmp_path / "results"
    catalog = open_catalog(results, results_dir=results)
    table = sample_table(300)
    item = _encrypted_item(catalog, results, table, enc)
    with LiveServer(create_app(catalog, enc)) as server, server.client() as c:
        got = c.get(f"/items/{item}/data", params={"columns": "s,i", "limit": 20})
        assert got.status_code == 200, got.text
        assert (
            pa.ipc.open_stream(got.content).read_all().equals(table.select(["s", "i"]).slice(0, 20))
        )
        sent = c.get(f"/items/{item}/file")  # decrypted too
        assert sent.headers["X-Phasekit-Decrypted"] == "true"
        assert pa.ipc.open_file(sent.content).read_all().equals(table)
    with LiveServer(create_app(catalog)) as server, server.client() as c:
        refused = c.get(f"/items/{item}/data")
        assert refused.status_code == 409
        assert refused.json()["error"] == "KeyUnavailable"
        assert enc.key_id in refused.json()["message"]
    catalog.close()


def test_serve_key_flag(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PK_SERVE_FLAG_KEY", generate_key())  # the server process inherits it
    enc = open_encryption("env:PK_SERVE_FLAG_KEY")
    results = tmp_path / "results"
    with open_catalog(results, results_dir=results) as catalog:
        item = _encrypted_item(catalog, results, sample_table(50), enc)
    for args, status in ((["--key", "env:PK_SERVE_FLAG_KEY"], 200), ([], 409)):
        port = free_port()
        with serving(str(results), "--port", str(port), *args, port=port) as url:
            assert httpx.get(f"{url}/items/{item}/data", timeout=30).status_code == status
