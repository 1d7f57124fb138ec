"""The catalog in a PostgreSQL database through psycopg 3 (same schema and behaviour).

The URL is passed to libpq as is (``postgresql://user:pw@host:port/db?options=...``);
the tables are created on first use under an advisory lock, so several processes may
open a new database at once.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from phasekit._optional import require
from phasekit.catalog.base import Catalog, Exec, Rows
from phasekit.catalog.encode import to_json
from phasekit.catalog.liveness import AdvisoryRunLock, RunLock
from phasekit.catalog.schema import POSTGRES_DDL, POSTGRES_MIGRATIONS
from phasekit.catalog.uris import CatalogLocation
from phasekit.errors import CatalogError

_SCHEMA_LOCK = 0x70_6B_63_61  # advisory lock id held while creating the tables


class PostgresCatalog(Catalog):
    """A :class:`Catalog` in a PostgreSQL database."""

    dialect = "postgresql"
    _metadata_text = "metadata::text"
    _like = "ILIKE"

    def __init__(
        self, location: CatalogLocation, *, create: bool = True, connect_timeout: int = 10
    ) -> None:
        super().__init__(location)
        psycopg = require("psycopg", feature=f"catalog {self.url}")
        from psycopg.types.string import TextLoader

        self._errors: type[Exception] = psycopg.Error
        try:
            self._conn = psycopg.connect(
                location.target, autocommit=True, connect_timeout=connect_timeout
            )
        except psycopg.Error as exc:
            raise CatalogError(
                f"cannot connect to catalog {self.url}: {str(exc).strip()}"
            ) from None
        for name in ("json", "jsonb"):  # decode JSON ourselves, the same way as SQLite
            self._conn.adapters.register_loader(name, TextLoader)
        try:
            self._setup(create)
        except BaseException:
            self._conn.close()
            raise
        self._opened()

    def _setup(self, create: bool) -> None:
        with self._transaction() as execute:
            exists = execute("SELECT to_regclass('intermediate_data') IS NOT NULL", ())[0][0]
            if not exists and not create:
                raise CatalogError(f"database {self.url} holds no phasekit catalog")
            if not exists:
                execute("SELECT pg_advisory_xact_lock(?)", (_SCHEMA_LOCK,))
                for statement in POSTGRES_DDL:
                    execute(statement, ())
            self._check_version(execute)

    @contextmanager
    def _transaction(self, write: bool = True) -> Iterator[Exec]:
        conn = self._conn
        errors = self._errors
        with self._lock:

            def execute(sql: str, params: Sequence[Any]) -> Rows:
                try:
                    cur = conn.execute(sql.replace("?", "%s"), tuple(params))
                    return cur.fetchall() if cur.description is not None else []
                except errors as exc:
                    raise CatalogError(
                        f"catalog {self.url}: {str(exc).strip()} (in: {sql.split()[0]} ...)"
                    ) from None

            try:
                with conn.transaction():
                    yield execute
            except errors as exc:
                raise CatalogError(
                    f"catalog {self.url}: transaction failed: {str(exc).strip()}"
                ) from None

    def _ts_param(self, value: datetime) -> Any:
        return value

    def _ts_value(self, value: Any) -> datetime:
        return value.astimezone(UTC)

    def _meta_clause(self, path: list[str], value: Any) -> tuple[str, list[Any]]:
        return "jsonb_extract_path(metadata, VARIADIC ?::text[]) = ?::jsonb", [path, to_json(value)]

    @property
    def _migrations(self) -> Mapping[int, Sequence[str]]:
        return POSTGRES_MIGRATIONS

    def table_columns(self, table: str) -> list[str]:
        with self._lock, self._transaction(write=False) as execute:
            rows = execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = ? "
                "AND table_schema = current_schema() ORDER BY ordinal_position",
                (table,),
            )
        return [str(r[0]) for r in rows]

    def lock_run(self, process_id: str, run_dir: Path) -> RunLock:
        """A session advisory lock keyed on the run id (``pg_try_advisory_lock``): every
        process of every host that records into this database sees it."""
        return AdvisoryRunLock(self, process_id)

    def close(self) -> None:
        with self._lock:
            self._conn.close()
