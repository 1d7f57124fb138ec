"""Errors of ``phasekit serve`` name runs and items, never the server's paths.

A missing file, a corrupt file and a catalog row pointing outside the results folder are
provoked on a live server (SQLite and PostgreSQL catalogs); no absolute path of the
server (the results folder, the catalog file, anything else) is in the response body.
The CLI keeps the full text.
"""

from __future__ import annotations

import io
import re
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from phasekit.catalog import Catalog, open_catalog
from phasekit.serve import create_app
from phasekit.serve.public import ServerPaths, public_text
from serve_util import Filled, LiveServer, fill

pytest_plugins = ["conftest_pg"]

ABSOLUTE = re.compile(r"(?<![\w/.:])/(?:tmp|home|root|var|work|private)\b")


class Setup:
    def __init__(self, catalog: Catalog, filled: Filled, results: Path, where: str) -> None:
        self.catalog = catalog
        self.filled = filled
        self.results = results
        self.where = where


@pytest.fixture(params=("sqlite", "postgresql"))
def setup(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Setup]:
    results = tmp_path / "results"
    results.mkdir()
    if request.param == "sqlite":
        where = str(results)
    else:
        pg = request.getfixturevalue("pg_server")
        name, where = pg.new_schema()
        request.addfinalizer(lambda: pg.drop_schema(name))
    catalog = open_catalog(where, results_dir=results)
    yield Setup(catalog, fill(catalog), results, where)
    catalog.close()


def assert_no_server_path(body: str, setup: Setup) -> None:
    assert str(setup.results) not in body
    assert str(setup.results.resolve()) not in body
    assert str(setup.results.parent) not in body
    assert ABSOLUTE.search(body) is None, body
    assert "file://" not in body and "sqlite://" not in body


def test_missing_file(setup: Setup) -> None:
    f = setup.filled
    path = setup.catalog.get_item(f.csv).path
    assert path is not None
    path.unlink()
    with LiveServer(create_app(setup.catalog)) as server, server.client() as c:
        for url in (f"/items/{f.csv}/data", f"/items/{f.csv}/file"):
            response = c.get(url)
            assert response.status_code == 409, (url, response.text)
            body = response.json()
            assert body["error"] == "CorruptDataError"
            # the item and its place below the results folder, not the server's path
            assert body["message"] == (
                f"item {f.csv} (opt-a/optimize/summary): file opt-a/optimize/summary.csv is missing"
            )
            assert_no_server_path(response.text, setup)


def test_corrupt_file(setup: Setup) -> None:
    f = setup.filled
    path = setup.catalog.get_item(f.parquet).path
    assert path is not None
    data = bytearray(path.read_bytes())
    data[60] ^= 0xFF
    path.write_bytes(bytes(data))
    with LiveServer(create_app(setup.catalog)) as server, server.client() as c:
        response = c.get(f"/items/{f.parquet}/data")
        assert response.status_code == 409
        message = response.json()["message"]
        assert "opt-a/optimize/trades.parquet fails its checksum" in message
        assert_no_server_path(response.text, setup)


def test_catalog_row_outside_the_results_folder(setup: Setup, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere" / "x.csv"
    outside.parent.mkdir()
    outside.write_text("a\n1\n")
    f = setup.filled
    setup.catalog._write(
        "UPDATE intermediate_data SET data_reference = ?, row_check = NULL WHERE id = ?",
        (outside.as_uri(), f.csv),
    )
    with LiveServer(create_app(setup.catalog)) as server, server.client() as c:
        for url in (f"/items/{f.csv}/data", f"/items/{f.csv}/file", "/runs/opt-a/export"):
            response = c.get(url)
            assert response.status_code == 409, (url, response.text)
            message = response.json()["message"]
            assert f"item {f.csv} (opt-a/optimize/summary)" in message
            assert "<server path>" in message and "outside its root" in message
            assert_no_server_path(response.text, setup)


def test_the_cli_keeps_the_full_text(setup: Setup) -> None:
    f = setup.filled
    path = setup.catalog.get_item(f.csv).path
    assert path is not None
    path.unlink()
    where = ["--catalog", setup.where, "--results-dir", str(setup.results)]
    proc = subprocess.run(
        [sys.executable, "-m", "phasekit.cli", "show", str(f.csv), "--verify", *where],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1
    assert str(path) in proc.stderr and "is missing" in proc.stderr


def test_public_text_rewrites_each_kind_of_path(tmp_path: Path) -> None:
    results = tmp_path / "res"
    paths = ServerPaths(results, results / "catalog.sqlite")
    text = (
        f"file {results}/run-1/x.arrow, key {results}/run-1/.phasekit/keys/k.key: "
        f"in {results.as_uri()}/run-2/y.csv; catalog {results}/catalog.sqlite "
        f"(sqlite:///{results}/catalog.sqlite); folder {results}. "
        "temp /var/tmp/phasekit-x/a.bin; object s3://bucket/pre/run-1/x.arrow; "
        "db postgresql://me:***@db:5432/pk; ratio 3/4; env:NAME; GET /items/{id}/file"
    )
    assert public_text(text, paths) == (
        "file run-1/x.arrow, key run-1/.phasekit/keys/k.key: in run-2/y.csv; catalog "
        "<catalog> (<catalog>); folder <results>. temp <server path>; object "
        "s3://bucket/pre/run-1/x.arrow; db postgresql://me:***@db:5432/pk; ratio 3/4; env:NAME; "
        "GET /items/{id}/file"
    )
    # a path spelled through a symbolic link of the results folder is found too
    results.mkdir()
    link = tmp_path / "link"
    link.symlink_to(results)
    linked = ServerPaths(link, None)
    assert public_text(f"at {results}/a/b.csv", linked) == "at a/b.csv"
    assert public_text(f"at {link}/a/b.csv", linked) == "at a/b.csv"


def _record_run_with_paths(setup: Setup, tmp_path: Path) -> int:
    """A run whose config and an item's metadata hold server paths, as a workflow run's
    do (its results folder, a data file, a key file), and a run to compare it with."""
    config = {
        "results_dir": str(setup.results),
        "data": {"path": str(tmp_path / "bars" / "es.csv"), "symbols": ["ES"]},
        "encryption": {"enabled": True, "key": f"file:{tmp_path}/master.key"},
        "spill_dir": (setup.results / "spill").as_uri(),
        "fast": 10,
    }
    setup.catalog.start_process("wf1", process_id="paths-a", config=config)
    setup.catalog.start_process(
        "wf1", process_id="paths-b", config={**config, "data": {"path": "/var/data/nq.csv"}}
    )
    item = setup.catalog.record_item(
        "paths-a",
        "optimize",
        "best",
        inline_data={"fast": 10},
        metadata={"source": str(tmp_path / "bars" / "es.csv"), "metrics": {"sharpe": 1.0}},
    )
    setup.catalog.finish_process("paths-a")
    return item


def _paths_in(response: Any, setup: Setup, what: str) -> None:
    assert response.status_code in (200, 206), (what, response.status_code, response.text[:300])
    headers = "\n".join(f"{k}: {v}" for k, v in response.headers.items())
    kind = response.headers.get("content-type", "")
    body = response.text if kind.startswith(("application/json", "text/")) else ""
    if kind.startswith("application/x-tar"):
        with tarfile.open(fileobj=io.BytesIO(response.content)) as tar:
            body = "\n".join(tar.getnames())
            manifest = [m for m in tar.getmembers() if m.name.endswith("manifest.json")]
            body += tar.extractfile(manifest[0]).read().decode()  # type: ignore[union-attr]
    assert body or kind.startswith(("application/vnd", "application/octet")), what
    try:
        if kind.startswith("text/html"):  # plotly's code holds the text "file://"
            body = body.replace('"file://"', "")
        assert_no_server_path(headers + "\n" + body, setup)
    except AssertionError as exc:
        raise AssertionError(f"{what}: {exc}") from None


def test_successful_answers_hold_no_server_path(setup: Setup, tmp_path: Path) -> None:
    """Every endpoint, answering successfully, names no path of the server: run configs
    and item metadata have their paths rewritten like error texts (a path under the
    results folder relative to it, others as <server path>)."""
    f = setup.filled
    inline = _record_run_with_paths(setup, tmp_path)
    ids = [f.arrow, f.parquet, f.csv, f.json_file, f.inline, f.memory, f.folder, f.other_run]
    with LiveServer(create_app(setup.catalog)) as server, server.client() as c:
        urls = ["/health", "/metrics", "/runs", "/tokens", "/search?q=sharpe", "/openapi.json"]
        urls += ["/compare?a=paths-a&b=paths-b", "/compare?a=opt-a&b=paths-a"]
        for run in ("opt-a", "val-b", "paths-a", "paths-b", "latest"):
            urls += [f"/runs/{run}", f"/runs/{run}/items", f"/runs/{run}/export"]
        urls.append("/runs/opt-a/report")
        for item in [*ids, inline]:
            urls.append(f"/items/{item}")
        for item in (f.arrow, f.parquet, f.csv, f.json_file, f.inline, f.folder):
            as_json = item in (f.inline, f.json_file)
            urls.append(f"/items/{item}/data" + ("?format=json" if as_json else ""))
        for item in (f.arrow, f.csv):
            urls.append(f"/items/{item}/file")
        for url in urls:
            _paths_in(c.get(url), setup, url)
        _paths_in(c.get(f"/items/{f.csv}/file", headers={"Range": "bytes=0-9"}), setup, "range")
        run = c.get("/runs/paths-a").json()
        assert run["config"]["results_dir"] == "<results>"
        assert run["config"]["data"] == {"path": "<server path>", "symbols": ["ES"]}
        assert run["config"]["encryption"]["key"] == "<server path>"
        assert run["config"]["spill_dir"] == "spill"
        assert run["config"]["fast"] == 10
        meta = c.get(f"/items/{inline}").json()["metadata"]
        assert meta == {"source": "<server path>", "metrics": {"sharpe": 1.0}}
        diff = c.get("/compare?a=paths-a&b=paths-b").json()["config"]
        assert {"path": "data.path", "a": "<server path>", "b": "<server path>"} in diff
        for item in (f.csv, inline):  # a removal reports what it removed, no path
            _paths_in(c.delete(f"/items/{item}"), setup, f"DELETE /items/{item}")
