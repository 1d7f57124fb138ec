"""Errors of ``phasekit serve`` name runs and items, never the server's paths.

A missing file, a corrupt file and a catalog row pointing outside the results folder are
provoked on a live server (SQLite and PostgreSQL catalogs); no absolute path of the
server (the results folder, the catalog file, anything else) is in the response body.
The CLI keeps the full text.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

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
        "db postgresql://me:***@db:5432/pk; ratio 3/4; env:NAME"
    )
    assert public_text(text, paths) == (
        "file run-1/x.arrow, key run-1/.phasekit/keys/k.key: in run-2/y.csv; catalog "
        "<catalog> (<catalog>); folder <results>. temp <server path>; object "
        "s3://bucket/pre/run-1/x.arrow; db postgresql://me:***@db:5432/pk; ratio 3/4; env:NAME"
    )
    # a path spelled through a symbolic link of the results folder is found too
    results.mkdir()
    link = tmp_path / "link"
    link.symlink_to(results)
    linked = ServerPaths(link, None)
    assert public_text(f"at {results}/a/b.csv", linked) == "at a/b.csv"
    assert public_text(f"at {link}/a/b.csv", linked) == "at a/b.csv"
