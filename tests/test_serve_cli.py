"""``phasekit serve`` and ``phasekit token`` from the command line: each flag changes what
the server or the catalog does, observed through a real uvicorn server and httpx."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from phasekit.catalog import open_catalog
from phasekit.serve import create_app
from serve_util import LiveServer, fill, free_port, serving

pytest_plugins = ["conftest_pg"]


def cli(*args: str, expect: int = 0) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PHASEKIT_CATALOG")}
    proc = subprocess.run(
        [sys.executable, "-m", "phasekit.cli", *args],
        capture_output=True,
        text=True,
        env={**env, "COLUMNS": "200"},
        timeout=120,
    )
    assert proc.returncode == expect, (proc.stdout, proc.stderr)
    return proc


@pytest.fixture
def results(tmp_path: Path) -> Path:
    folder = tmp_path / "results"
    folder.mkdir()
    with open_catalog(folder, results_dir=folder) as catalog:
        fill(catalog)
    return folder


def runs_at(url: str, token: str | None = None) -> list[str]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = httpx.get(f"{url}/runs", headers=headers, timeout=10)
    assert response.status_code == 200, response.text
    return [r["process_id"] for r in response.json()["items"]]


# ------------------------------------------------------------------ serve
def test_serve_results_dir_and_port(results: Path) -> None:
    port = free_port()
    with serving(str(results), "--port", str(port), port=port) as url:
        assert runs_at(url) == ["val-b", "opt-a"]


def test_serve_catalog_url(results: Path, pg_url: str, tmp_path: Path) -> None:
    other = tmp_path / "pg-results"
    other.mkdir()
    with open_catalog(pg_url, results_dir=other) as catalog:
        catalog.start_process("wfpg", process_id="pg-only")
    port = free_port()
    with serving(str(other), "--catalog", pg_url, "--port", str(port), port=port) as url:
        assert runs_at(url) == ["pg-only"]
    sqlite_file = results / "catalog.sqlite"
    port = free_port()
    with serving("--catalog", str(sqlite_file), "--port", str(port), port=port) as url:
        assert runs_at(url) == ["val-b", "opt-a"]


def test_serve_host(results: Path) -> None:
    port = free_port("127.0.0.2")
    with serving(
        str(results), "--host", "127.0.0.2", "--port", str(port), host="127.0.0.2", port=port
    ) as url:
        assert runs_at(url) == ["val-b", "opt-a"]
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"http://127.0.0.1:{port}/health", timeout=2)


def test_serve_refuses_non_loopback_without_token(results: Path) -> None:
    proc = cli("serve", str(results), "--host", "0.0.0.0", "--port", str(free_port()), expect=1)
    assert "phasekit serve refuses to listen on '0.0.0.0'" in proc.stderr
    assert "phasekit token create" in proc.stderr
    token = cli("token", "create", "--results-dir", str(results)).stdout.strip()
    port = free_port()
    with serving(str(results), "--host", "0.0.0.0", "--port", str(port), port=port) as url:
        assert httpx.get(f"{url}/runs", timeout=10).status_code == 401
        assert runs_at(url, token) == ["val-b", "opt-a"]


def test_serve_needs_a_catalog() -> None:
    proc = cli("serve", expect=1)
    assert "needs a results folder (RESULTS_DIR) or a catalog (--catalog URL)" in proc.stderr
    proc = cli("serve", "--port", "70000", "--catalog", "/nonexistent/catalog.sqlite", expect=1)
    assert "no catalog at /nonexistent/catalog.sqlite" in proc.stderr


# ------------------------------------------------------------------ token
def test_token_scope_runs_and_stages_flags(results: Path) -> None:
    where = ("--results-dir", str(results))
    read = cli("token", "create", *where).stdout.strip()
    write = cli("token", "create", "--scope", "write", *where).stdout.strip()
    runs = cli("token", "create", "--runs", "val-*", *where).stdout.strip()
    stages = cli("token", "create", "--stages", "opt*", *where).stdout.strip()
    with open_catalog(results, results_dir=results) as catalog:
        with LiveServer(create_app(catalog)) as server:
            item = catalog.list_items("opt-a", entity="summary")[0].id
            with server.client(read) as c:
                assert c.delete(f"/items/{item}").status_code == 403
            with server.client(write) as c:
                assert c.delete(f"/items/{item}").status_code == 200
            with server.client(runs) as c:
                assert [r["process_id"] for r in c.get("/runs").json()["items"]] == ["val-b"]
            with server.client(stages) as c:
                stages_seen = {r["stage_name"] for r in c.get("/search?q=sharpe").json()["items"]}
                assert stages_seen == {"optimize"}


def test_token_name_expires_list_and_json(results: Path, pg_url: str) -> None:
    where = ("--results-dir", str(results))
    created = json.loads(
        cli("token", "create", "--name", "nightly", "--expires", "2h", "--json", *where).stdout
    )
    assert created["token"].startswith(f"phk_{created['token_id']}.")
    expires = datetime.fromisoformat(created["expires_at"])
    assert timedelta(hours=1.99) < expires - datetime.now(UTC) <= timedelta(hours=2)
    listed = json.loads(cli("token", "list", "--json", *where).stdout)
    assert [(t["name"], t["status"]) for t in listed] == [("nightly", "active")]
    assert "token" not in listed[0]
    table = cli("token", "list", *where).stdout
    assert "nightly" in table and created["token_id"] in table and created["token"] not in table
    # an expiry a moment ahead: the token then stops working
    soon = datetime.now(UTC) + timedelta(seconds=15)  # the command takes seconds to start
    short = cli("token", "create", "--expires", soon.isoformat(), *where).stdout.strip()
    with (
        open_catalog(results, results_dir=results) as catalog,
        LiveServer(create_app(catalog)) as server,
    ):
        with server.client(short) as c:
            assert c.get("/runs").status_code == 200
            time.sleep(max(0.0, (soon - datetime.now(UTC)).total_seconds()) + 0.2)
            assert c.get("/runs").status_code == 401
    # --catalog: a PostgreSQL catalog keeps its own tokens
    open_catalog(pg_url, results_dir=results).close()
    cli("token", "create", "--name", "pg", "--catalog", pg_url)
    pg_listed = json.loads(cli("token", "list", "--json", "--catalog", pg_url).stdout)
    assert [t["name"] for t in pg_listed] == ["pg"]
    bad = cli("token", "create", "--expires", "yesterday", *where, expect=1)
    assert "token expiry 'yesterday' is not valid; allowed: an age like 30m" in bad.stderr


def test_token_revoke(results: Path) -> None:
    where = ("--results-dir", str(results))
    created = json.loads(cli("token", "create", "--json", *where).stdout)
    assert cli("token", "revoke", created["token_id"], *where).stdout == (
        f"token {created['token_id']} revoked\n"
    )
    listed = json.loads(cli("token", "list", "--json", *where).stdout)
    assert listed[0]["status"] == "revoked"
    with (
        open_catalog(results, results_dir=results) as catalog,
        LiveServer(create_app(catalog)) as server,
    ):
        with server.client(created["token"]) as c:
            assert c.get("/runs").status_code == 401
    other = json.loads(cli("token", "create", "--json", *where).stdout)
    revoked = json.loads(cli("token", "revoke", other["token_id"], "--json", *where).stdout)
    assert revoked["token_id"] == other["token_id"] and revoked["status"] == "revoked"
    assert revoked["revoked_at"] is not None and "token" not in revoked
    missing = cli("token", "revoke", "0" * 16, *where, expect=1)
    assert "API token '0000000000000000' is not in catalog" in missing.stderr
