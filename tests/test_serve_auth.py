"""Access control of ``phasekit serve``: API tokens (scrypt hashes in the catalog), 401 and
403 with no hint of what exists, the scope matrix, run and stage patterns, expiry,
revocation, the loopback rule, and traversal and injection attempts in every parameter.

Real components: uvicorn on 127.0.0.1 and httpx, SQLite and PostgreSQL catalogs.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote

import pytest

from phasekit.catalog import Catalog, open_catalog, reference_checksum, reference_size
from phasekit.catalog.schema import SCHEMA_VERSION, TOKEN_COLUMNS
from phasekit.catalog.tokens import (
    UNAUTHENTICATED,
    authenticate,
    create_token,
    hash_secret,
    list_tokens,
    revoke_token,
    secret_matches,
)
from phasekit.errors import AccessDenied, InvalidArgument, NotAuthenticated
from phasekit.serve import check_bind, create_app, is_loopback
from phasekit.serve.auth import FORBIDDEN
from serve_util import Filled, LiveServer, fill

pytest_plugins = ["conftest_pg"]

DIALECTS = ("sqlite", "postgresql")
MARKER = "phasekit-outside-marker-7c1f"


class Setup:
    def __init__(
        self, server: LiveServer, catalog: Catalog, filled: Filled, tokens: dict[str, str]
    ):
        self.server = server
        self.catalog = catalog
        self.filled = filled
        self.tokens = tokens

    def get(self, who: str | None, url: str, **kwargs: object) -> object:
        with self.server.client(self.tokens[who] if who else None) as client:
            return client.get(url, **kwargs)  # type: ignore[arg-type]


def _catalog(request: pytest.FixtureRequest, dialect: str, results: Path) -> Catalog:
    if dialect == "sqlite":
        return open_catalog(results, results_dir=results)
    pg = request.getfixturevalue("pg_server")
    name, url = pg.new_schema()
    request.addfinalizer(lambda: pg.drop_schema(name))
    return open_catalog(url, results_dir=results)


@pytest.fixture(scope="module", params=DIALECTS)
def setup(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Setup]:
    """A filled catalog with a token of each scope and two limited read tokens."""
    root = tmp_path_factory.mktemp("auth")
    (root / "secret.txt").write_text(MARKER)  # outside the results folder
    results = root / "results"
    results.mkdir()
    catalog = _catalog(request, request.param, results)
    filled = fill(catalog)
    tokens = {scope: create_token(catalog, scope)[0] for scope in ("read", "write", "admin")}
    tokens["opt_runs"] = create_token(catalog, "read", runs="opt-*")[0]
    tokens["validate_stage"] = create_token(catalog, "read", stages="validate")[0]
    with LiveServer(create_app(catalog)) as server:
        yield Setup(server, catalog, filled, tokens)
    catalog.close()


# ------------------------------------------------------------------ storage of tokens
def test_tokens_are_kept_only_as_salted_scrypt_hashes(tmp_path: Path) -> None:
    catalog = open_catalog(tmp_path, results_dir=tmp_path)
    first, row = create_token(catalog, "read", name="ci")
    second, _ = create_token(catalog, "read")
    stored = catalog._read("SELECT token_id, secret_hash FROM api_tokens ORDER BY created_at")
    catalog.close()
    secret = first.split(".", 1)[1]
    assert stored[0][0] == row.token_id and first.startswith(f"phk_{row.token_id}.")
    kinds = [h.split("$") for _, h in stored]
    assert [k[:4] for k in kinds] == [["scrypt", "16384", "8", "1"]] * 2
    assert kinds[0][4] != kinds[1][4]  # a salt per token
    assert secret not in json.dumps(stored)
    raw = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("catalog"))
    assert secret.encode() not in raw and row.token_id.encode() in raw
    assert second != first


def test_secret_matching() -> None:
    stored = hash_secret("s3cret-value-long-enough", salt=b"0" * 16)
    assert secret_matches("s3cret-value-long-enough", stored)
    assert not secret_matches("s3cret-value-long-enougH", stored)
    assert not secret_matches("x", "scrypt$16384$8$1$zz$00")  # a damaged hash matches nothing
    assert not secret_matches("x", "md5$x")


def test_authenticate_one_message_for_every_failure(tmp_path: Path) -> None:
    catalog = open_catalog(tmp_path, results_dir=tmp_path)
    good, row = create_token(catalog, "write")
    assert authenticate(catalog, good).token_id == row.token_id
    wrong = good[:-2] + ("AA" if not good.endswith("AA") else "BB")
    unknown = "phk_" + "0" * 16 + "." + good.split(".", 1)[1]
    for presented in ("", "garbage", good + "x" * 200, wrong, unknown):
        with pytest.raises(NotAuthenticated) as exc:
            authenticate(catalog, presented)
        assert str(exc.value) == UNAUTHENTICATED
    revoke_token(catalog, row.token_id)
    with pytest.raises(NotAuthenticated, match="requires an API token"):
        authenticate(catalog, good)
    catalog.close()


def test_token_arguments_are_checked(tmp_path: Path) -> None:
    catalog = open_catalog(tmp_path, results_dir=tmp_path)
    with pytest.raises(InvalidArgument, match="allowed: read, write, admin"):
        create_token(catalog, "root")
    with pytest.raises(InvalidArgument, match="not in the future"):
        create_token(catalog, "read", expires=datetime.now(UTC) - timedelta(seconds=1))
    with pytest.raises(InvalidArgument, match="allowed: an age like 30m"):
        create_token(catalog, "read", expires="tomorrow")
    with pytest.raises(InvalidArgument, match="run pattern"):
        create_token(catalog, "read", runs="\n")
    week = create_token(catalog, "read", expires="7d")[1]
    assert week.expires_at is not None
    assert timedelta(days=6.99) < week.expires_at - week.created_at <= timedelta(days=7)
    assert list_tokens(catalog)[0].status() == "active"
    catalog.close()


# ------------------------------------------------------------------ 401 and 403
ENDPOINTS = (
    ("GET", "/runs", "read"),
    ("GET", "/runs/opt-a", "read"),
    ("GET", "/runs/opt-a/items", "read"),
    ("GET", "/search?q=sharpe", "read"),
    ("GET", "/items/{arrow}", "read"),
    ("GET", "/items/{arrow}/data", "read"),
    ("GET", "/items/{arrow}/file", "read"),
    ("GET", "/compare?a=opt-a&b=val-b", "read"),
    ("GET", "/runs/opt-a/export", "read"),
    ("GET", "/runs/opt-a/report", "read"),
    ("GET", "/metrics", "read"),
    ("DELETE", "/items/999999", "write"),
    ("GET", "/tokens", "admin"),
    ("DELETE", "/tokens/0000000000000000", "admin"),
)
LEVEL = {"read": 0, "write": 1, "admin": 2}


def _url(setup: Setup, url: str) -> str:
    return url.format(arrow=setup.filled.arrow)


@pytest.mark.parametrize(("method", "url", "needs"), ENDPOINTS)
def test_without_token_401(setup: Setup, method: str, url: str, needs: str) -> None:
    with setup.server.client() as client:
        for headers in ({}, {"Authorization": "Basic abc"}, {"Authorization": "Bearer nope"}):
            response = client.request(method, _url(setup, url), headers=headers)
            assert response.status_code == 401
            assert response.headers["www-authenticate"] == "Bearer"
            assert response.json() == {"error": "NotAuthenticated", "message": UNAUTHENTICATED}


@pytest.mark.parametrize("scope", ["read", "write", "admin"])
@pytest.mark.parametrize(("method", "url", "needs"), ENDPOINTS)
def test_scope_matrix(setup: Setup, scope: str, method: str, url: str, needs: str) -> None:
    with setup.server.client(setup.tokens[scope]) as client:
        response = client.request(method, _url(setup, url))
    if LEVEL[scope] >= LEVEL[needs]:
        assert response.status_code in (200, 404), response.text
    else:
        assert response.status_code == 403
        assert response.json() == {"error": "AccessDenied", "message": FORBIDDEN}


def test_health_needs_no_token(setup: Setup) -> None:
    with setup.server.client() as client:
        assert client.get("/health").json()["auth"] is True


def test_run_pattern_hides_other_runs(setup: Setup) -> None:
    f = setup.filled
    with setup.server.client(setup.tokens["opt_runs"]) as c:
        assert [r["process_id"] for r in c.get("/runs").json()["items"]] == ["opt-a"]
        forbidden = [
            c.get("/runs/val-b"),
            c.get("/runs/val-nothing"),  # missing and outside: the same answer
            c.get("/runs/val-b/items"),
            c.get(f"/items/{f.other_run}"),
            c.get(f"/items/{f.other_run}/data"),
            c.get("/items/999999"),  # missing: a limited token cannot tell
            c.get("/compare", params={"a": "opt-a", "b": "val-b"}),
            c.get("/runs/val-b/export"),
            c.get("/runs/val-b/report"),
            c.get("/search", params={"q": "sharpe", "run": "val-b"}),
        ]
        for response in forbidden:
            assert response.status_code == 403, response.request.url
            assert response.json() == {"error": "AccessDenied", "message": FORBIDDEN}
        assert c.get("/runs/opt-nothing").status_code == 404  # inside the pattern
        found = [r["id"] for r in c.get("/search", params={"q": "sharpe"}).json()["items"]]
        assert found == [f.arrow]


def test_stage_pattern_filters_items(setup: Setup) -> None:
    f = setup.filled
    with setup.server.client(setup.tokens["validate_stage"]) as c:
        assert c.get("/runs/opt-a/items").json()["items"] == []
        listed = [r["id"] for r in c.get("/runs/val-b/items").json()["items"]]
        assert listed == [f.other_run]
        assert c.get(f"/items/{f.arrow}").status_code == 403
        assert c.get(f"/items/{f.other_run}/data").status_code == 200
        # a report draws every stage of its run: not for a token limited to stages
        assert c.get("/runs/val-b/report").status_code == 403
        metrics = c.get("/compare", params={"a": "opt-a", "b": "val-b"}).json()["metrics"]
        assert {m["stage_name"] for m in metrics} == {"validate"}
        page = c.get("/runs/opt-a/items", params={"limit": 1}).json()
        assert page == {"items": [], "next_cursor": None}


def test_expired_token_is_refused(setup: Setup) -> None:
    token, _ = create_token(
        setup.catalog, "read", expires=datetime.now(UTC) + timedelta(seconds=1.5)
    )
    with setup.server.client(token) as c:
        assert c.get("/runs").status_code == 200
        time.sleep(1.6)
        response = c.get("/runs")
    assert response.status_code == 401
    assert response.json()["message"] == UNAUTHENTICATED


def test_revoked_token_is_refused_at_once(setup: Setup) -> None:
    token, row = create_token(setup.catalog, "read")
    with setup.server.client(token) as c:
        assert c.get("/runs").status_code == 200  # verified once, then remembered
        with setup.server.client(setup.tokens["admin"]) as admin:
            revoked = admin.delete(f"/tokens/{row.token_id}").json()
        assert revoked["status"] == "revoked" and revoked["revoked_at"]
        assert c.get("/runs").status_code == 401
    with setup.server.client(setup.tokens["admin"]) as admin:
        listed = {t["token_id"]: t for t in admin.get("/tokens").json()}
    assert listed[row.token_id]["status"] == "revoked"
    assert all("secret" not in key and "hash" not in key for t in listed.values() for key in t)


def test_a_limited_admin_token_cannot_manage_tokens(setup: Setup) -> None:
    limited, _ = create_token(setup.catalog, "admin", runs="opt-*")
    _, victim = create_token(setup.catalog, "read")
    with setup.server.client(limited) as c:
        assert c.get("/runs").status_code == 200  # an admin token, limited to some runs
        listed = c.get("/tokens")
        revoked = c.delete(f"/tokens/{victim.token_id}")
    assert listed.status_code == revoked.status_code == 403
    assert listed.json()["message"] == revoked.json()["message"] == FORBIDDEN
    with setup.server.client(setup.tokens["admin"]) as admin:
        listed_all = {t["token_id"]: t for t in admin.get("/tokens").json()}
    assert listed_all[victim.token_id]["status"] == "active"


# ------------------------------------------------------------------ loopback rule
def test_loopback_rule(tmp_path: Path) -> None:
    catalog = open_catalog(tmp_path, results_dir=tmp_path)
    for host in ("127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"):
        assert is_loopback(host)
        check_bind(catalog, host)
    for host in ("0.0.0.0", "::", "192.168.1.4", "example.org"):
        assert not is_loopback(host)
        with pytest.raises(AccessDenied, match="refuses to listen on") as exc:
            check_bind(catalog, host)
        assert "phasekit token create" in str(exc.value)
    _, row = create_token(catalog, "read")
    check_bind(catalog, "0.0.0.0")
    revoke_token(catalog, row.token_id)
    with pytest.raises(AccessDenied, match="no active API token"):
        check_bind(catalog, "0.0.0.0")
    catalog.close()


# ------------------------------------------------------------------ hostile input
def _cursor(value: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode()


HOSTILE = (
    "../../secret.txt",
    "..%2F..%2Fsecret.txt",
    "/etc/passwd",
    "' OR '1'='1",
    "x'); DROP TABLE intermediate_data; --",
    "%",
    "\\",
    "..\\..\\secret.txt",
    "a\x01b",
    "🙂" * 3,
)


def _attempts(setup: Setup, value: str) -> list[tuple[str, str, dict[str, object]]]:
    arrow = setup.filled.arrow
    q: dict[str, object] = {"params": {}}
    out: list[tuple[str, str, dict[str, object]]] = []
    for segment in {quote(value, safe=""), quote(value, safe="/%")}:
        out += [
            ("GET", f"/runs/{segment}", q),
            ("GET", f"/runs/{segment}/items", q),
            ("GET", f"/runs/{segment}/export", q),
            ("GET", f"/runs/{segment}/report", q),
            ("GET", f"/items/{segment}", q),
            ("GET", f"/items/{segment}/data", q),
            ("GET", f"/items/{segment}/file", q),
            ("DELETE", f"/tokens/{segment}", q),
            ("DELETE", f"/items/{segment}", q),
        ]
    out += [
        ("GET", "/compare", {"params": {"a": value, "b": "opt-a"}}),
        ("GET", "/compare", {"params": {"a": "opt-a", "b": value}}),
        ("GET", "/search", {"params": {"q": value}}),
        ("GET", "/search", {"params": {"q": "sharpe", "run": value}}),
        ("GET", f"/items/{arrow}/data", {"params": {"format": value}}),
        ("GET", f"/items/{arrow}/data", {"params": {"columns": value}}),
        ("GET", f"/items/{arrow}/data", {"params": {"limit": value}}),
        ("GET", f"/items/{arrow}/file", {"headers": {"Range": value.encode()}}),
        ("GET", "/runs", {"params": {"cursor": value}}),
        ("GET", "/runs", {"params": {"cursor": _cursor([value, value])}}),
        ("GET", "/runs/opt-a/items", {"params": {"cursor": _cursor(value)}}),
        ("GET", "/runs/opt-a/items", {"params": {"cursor": _cursor(2**70)}}),
        ("GET", "/search", {"params": {"q": value, "cursor": _cursor(-1)}}),
    ]
    for name in ("workflow", "status", "since"):
        out.append(("GET", "/runs", {"params": {name: value}}))
    for name in ("stage", "entity", "phase", "window", "container", "since", "meta"):
        out.append(("GET", "/runs/opt-a/items", {"params": {name: value}}))
    out.append(("GET", "/runs/opt-a/items", {"params": {"meta": f"{value}={value}"}}))
    return out


@pytest.mark.parametrize("value", HOSTILE, ids=range(len(HOSTILE)))
def test_traversal_and_injection_in_every_parameter(setup: Setup, value: str) -> None:
    before = len(setup.catalog.list_items())
    with setup.server.client(setup.tokens["admin"]) as client:
        for method, url, kwargs in _attempts(setup, value):
            response = client.request(method, url, **kwargs)  # type: ignore[arg-type]
            assert response.status_code in (200, 400, 403, 404), (url, kwargs, response.text)
            assert MARKER not in response.text, (url, kwargs)
            if response.status_code != 200:
                assert set(response.json()) == {"error", "message"}
    assert len(setup.catalog.list_items()) == before  # nothing deleted, no table dropped


def test_catalog_row_pointing_outside_the_root_is_refused(tmp_path: Path) -> None:
    results = tmp_path / "results"
    results.mkdir()
    outside = tmp_path / "secret.txt"
    outside.write_text(MARKER)
    catalog = open_catalog(results, results_dir=results)
    filled = fill(catalog)
    catalog._write(
        "UPDATE intermediate_data SET data_reference = ?, row_check = NULL WHERE id = ?",
        (outside.as_uri(), filled.csv),
    )
    link = results / "opt-a" / "optimize" / "summary.csv"
    link.unlink()
    link.symlink_to(outside)
    catalog._write(
        "UPDATE intermediate_data SET row_check = NULL WHERE id = ?", (filled.json_file,)
    )
    (results / "opt-a" / "optimize" / "w001" / "params.json").unlink()
    (results / "opt-a" / "optimize" / "w001" / "params.json").symlink_to(outside)
    parts = results / "opt-a" / "optimize" / "parts"
    (parts / "year=2021" / "x.parquet").symlink_to(outside)
    catalog._write(  # recorded with the link: only the containment check can refuse it
        "UPDATE intermediate_data SET size_bytes = ?, checksum = ?, row_check = NULL WHERE id = ?",
        (reference_size(parts), reference_checksum(parts), filled.folder),
    )
    with LiveServer(create_app(catalog)) as server, server.client() as c:
        for url in (
            f"/items/{filled.folder}/data?format=json",
            f"/items/{filled.csv}/data?format=csv",
            f"/items/{filled.csv}/file",
            f"/items/{filled.json_file}/data?format=json",
            f"/items/{filled.json_file}/file",
            "/runs/opt-a/export",
        ):
            response = c.get(url)
            assert response.status_code == 409, (url, response.text)
            assert MARKER not in response.text
            assert "outside its root" in response.text or "symbolic link" in response.text
    catalog.close()


def test_a_version_4_catalog_gains_the_tokens_table(catalog_url: str, results_dir: Path) -> None:
    with open_catalog(catalog_url, results_dir=results_dir) as cat:
        cat.start_process("wf", process_id="old")
        cat._write("DROP TABLE api_tokens")
        cat._write("ALTER TABLE intermediate_data DROP COLUMN key_id")
        cat._write("UPDATE phasekit_schema SET version = 4")
        assert cat.table_columns("api_tokens") == []
    with open_catalog(catalog_url, results_dir=results_dir, create=False) as cat:
        assert cat.table_columns("api_tokens") == list(TOKEN_COLUMNS)
        token, row = create_token(cat, "admin", runs="old")
        assert authenticate(cat, token).token_id == row.token_id
        assert cat._read("SELECT version FROM phasekit_schema")[0][0] == SCHEMA_VERSION
