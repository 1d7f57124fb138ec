"""Fixtures for the catalog suite: a session PostgreSQL server and a catalog per dialect.

Load with ``pytest_plugins = ["conftest_pg"]``. Without the server binaries the
PostgreSQL tests fail with instructions, unless ``PHASEKIT_ALLOW_NO_POSTGRES=1``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from pg import NO_POSTGRES_ENV, PgServer, PostgresUnavailable
from phasekit.catalog import Catalog, open_catalog

DIALECTS = ("sqlite", "postgresql")


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """A private PostgreSQL server for the whole session (started on first use)."""
    try:
        server = PgServer()
    except PostgresUnavailable as exc:
        if os.environ.get(NO_POSTGRES_ENV) == "1":
            pytest.skip(f"{exc} ({NO_POSTGRES_ENV}=1)")
        pytest.fail(str(exc), pytrace=False)
    try:
        server.start()
    except BaseException:
        server.stop()
        raise
    yield server
    server.stop()


@pytest.fixture
def pg_url(pg_server: PgServer) -> Iterator[str]:
    """A URL whose search_path is a fresh, empty schema (dropped afterwards)."""
    name, url = pg_server.new_schema()
    yield url
    pg_server.drop_schema(name)


@pytest.fixture
def results_dir(tmp_path: Path) -> Path:
    path = tmp_path / "results"
    path.mkdir()
    return path


@pytest.fixture(params=DIALECTS)
def catalog_url(request: pytest.FixtureRequest, results_dir: Path) -> str:
    """A catalog location of each dialect: the results folder, or a PostgreSQL URL."""
    if request.param == "sqlite":
        return str(results_dir)
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
def catalog(catalog_url: str, results_dir: Path) -> Iterator[Catalog]:
    cat = open_catalog(catalog_url, results_dir=results_dir)
    yield cat
    cat.close()
