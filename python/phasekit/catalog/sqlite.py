"""The catalog in a SQLite file (WAL mode, busy timeout, short transactions).

Several processes may record into one file at once: each write is one short
``BEGIN IMMEDIATE`` transaction and waits up to ``timeout`` seconds for the lock.

``synchronous=normal`` (the default, in WAL mode) survives a crash of any process: a
committed row stays committed. A power cut may lose the last commits; since files are
made durable before their rows, that leaves files without rows (doctor reports them),
never rows without files. ``?synchronous=full`` fsyncs every commit too.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from phasekit.catalog.base import Catalog, Exec, Rows
from phasekit.catalog.encode import ts_text
from phasekit.catalog.schema import SQLITE_DDL, SQLITE_MIGRATIONS
from phasekit.catalog.uris import CatalogLocation
from phasekit.errors import CatalogError

SYNCHRONOUS = ("off", "normal", "full", "extra")
OPTIONS = ("synchronous", "timeout", "wal")


class SqliteCatalog(Catalog):
    """A :class:`Catalog` in one SQLite file."""

    dialect = "sqlite"

    def __init__(
        self,
        location: CatalogLocation,
        *,
        create: bool = True,
        timeout: float = 30.0,
        synchronous: str = "normal",
        wal: bool = True,
    ) -> None:
        super().__init__(location)
        if synchronous not in SYNCHRONOUS:
            raise CatalogError(
                f"synchronous {synchronous!r} is not valid; allowed: {', '.join(SYNCHRONOUS)}"
            )
        path = Path(location.target)
        if not path.exists():
            if not create:
                raise CatalogError(f"no catalog at {path}; run a workflow first or pass --catalog")
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise CatalogError(f"cannot create the folder of catalog {path}: {exc}") from None
        self.path = path
        try:
            self._conn = sqlite3.connect(
                str(path), timeout=timeout, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise CatalogError(f"cannot open catalog {path}: {exc}") from None
        try:
            self._setup(timeout, synchronous, wal)
        except BaseException:
            self._conn.close()
            raise

    def _setup(self, timeout: float, synchronous: str, wal: bool) -> None:
        conn = self._conn
        conn.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
        deadline = time.monotonic() + timeout
        mode = "wal" if wal else "delete"
        while True:  # switching the journal mode ignores the busy handler
            try:
                conn.execute(f"PRAGMA journal_mode = {mode}")
                break
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise CatalogError(f"cannot open catalog {self.path}: {exc}") from None
                time.sleep(0.01)
        conn.execute(f"PRAGMA synchronous = {synchronous}")
        conn.execute("PRAGMA foreign_keys = ON")
        with self._transaction() as execute:
            for statement in SQLITE_DDL:
                execute(statement, ())
            self._check_version(execute)

    @contextmanager
    def _transaction(self, write: bool = True) -> Iterator[Exec]:
        conn = self._conn
        with self._lock:
            try:
                conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            except sqlite3.Error as exc:
                raise CatalogError(
                    f"catalog {self.path}: cannot begin a transaction: {exc}"
                ) from None

            def execute(sql: str, params: Sequence[Any]) -> Rows:
                try:
                    return conn.execute(sql, tuple(params)).fetchall()
                except sqlite3.Error as exc:
                    raise CatalogError(
                        f"catalog {self.path}: {exc} (in: {sql.split()[0]} ...)"
                    ) from None

            try:
                yield execute
            except BaseException:
                self._rollback()
                raise
            try:
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback()
                raise CatalogError(f"catalog {self.path}: commit failed: {exc}") from None

    def _rollback(self) -> None:
        if self._conn.in_transaction:
            self._conn.execute("ROLLBACK")

    def _ts_param(self, value: datetime) -> Any:
        return ts_text(value)

    def _ts_value(self, value: Any) -> datetime:
        return datetime.fromisoformat(value)

    def _meta_clause(self, path: list[str], value: Any) -> tuple[str, list[Any]]:
        jpath = "$" + "".join(f'."{part}"' for part in path)
        if value is None:
            return "json_type(metadata, ?) = 'null'", [jpath]
        if isinstance(value, bool):
            return "json_type(metadata, ?) = ?", [jpath, "true" if value else "false"]
        # the cheap equality first: the type check then runs on matching rows only
        if isinstance(value, (int, float)):
            kinds = "('integer', 'real')"
            return f"json_extract(metadata, ?) = ? AND json_type(metadata, ?) IN {kinds}", [
                jpath,
                value,
                jpath,
            ]
        return "json_extract(metadata, ?) = ? AND json_type(metadata, ?) = 'text'", [
            jpath,
            value,
            jpath,
        ]

    @property
    def _migrations(self) -> Mapping[int, Sequence[str]]:
        return SQLITE_MIGRATIONS

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def sqlite_catalog(location: CatalogLocation, *, create: bool = True) -> SqliteCatalog:
    """A :class:`SqliteCatalog` with the options of its URL (``?synchronous=full`` ...)."""
    options = dict(location.options)
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise CatalogError(
            f"catalog {location.target}: unknown option {unknown[0]!r}; allowed: {', '.join(OPTIONS)}"
        )
    try:
        timeout = float(options.get("timeout", 30.0))
    except ValueError:
        raise CatalogError(
            f"catalog option timeout={options['timeout']!r} is not a number"
        ) from None
    wal = options.get("wal", "true").lower() not in ("0", "false", "no", "off")
    synchronous = options.get("synchronous", "normal").lower()
    return SqliteCatalog(location, create=create, timeout=timeout, synchronous=synchronous, wal=wal)
