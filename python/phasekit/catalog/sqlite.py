"""The catalog in a SQLite file (WAL mode, busy timeout, short transactions).

Several processes may record into one file at once: each write is one short
``BEGIN IMMEDIATE`` transaction and waits up to ``timeout`` seconds for the lock.

``synchronous=normal`` (the default, in WAL mode) survives a crash of any process: a
committed row stays committed. A power cut may lose the last commits; since files are
made durable before their rows, that leaves files without rows (doctor reports them),
never rows without files. ``?synchronous=full`` fsyncs every commit too.
"""

from __future__ import annotations

import logging
import os
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
from phasekit.paths import make_private_dir

log = logging.getLogger("phasekit.catalog")

WAL_CHECKPOINT_PAGES = 256
"""Pages (4 KiB) after which a commit checkpoints the WAL into the file (SQLite: 1000)."""
JOURNAL_SIZE_LIMIT = 1 << 20
"""Bytes a checkpointed WAL is truncated to: the WAL stays about 1 MiB however much is
written (SQLite keeps its high-water size), so a catalog fits where its data does."""

SYNCHRONOUS = ("off", "normal", "full", "extra")
CHECKS = {"quick": "quick_check", "full": "integrity_check", "off": None}
"""``?check=``: the SQLite check run when the catalog opens (default ``quick``)."""
OPTIONS = ("synchronous", "timeout", "wal", "check")


class SqliteCatalog(Catalog):
    """A :class:`Catalog` in one SQLite file."""

    dialect = "sqlite"
    row_checks = True
    not_indexed = " NOT INDEXED"

    def __init__(
        self,
        location: CatalogLocation,
        *,
        create: bool = True,
        timeout: float = 30.0,
        synchronous: str = "normal",
        wal: bool = True,
        check: str = "quick",
    ) -> None:
        super().__init__(location)
        if check not in CHECKS:
            raise CatalogError(f"check {check!r} is not valid; allowed: {', '.join(CHECKS)}")
        if synchronous not in SYNCHRONOUS:
            raise CatalogError(
                f"synchronous {synchronous!r} is not valid; allowed: {', '.join(SYNCHRONOUS)}"
            )
        path = Path(location.target)
        self.path = path
        _refuse_damaged(path, create)
        new = not path.exists()
        if new:
            try:
                make_private_dir(path.parent)
            except OSError as exc:
                raise CatalogError(f"cannot create the folder of catalog {path}: {exc}") from None
        try:
            self._conn = sqlite3.connect(
                str(path), timeout=timeout, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise CatalogError(f"cannot open catalog {path}: {exc}") from None
        if new:  # still empty: 0600 before anything is written (SQLite gives its -wal
            try:  # and -shm files the mode of this file)
                os.chmod(path, 0o600)
            except OSError as exc:
                self._conn.close()
                raise CatalogError(f"cannot open catalog {path}: {exc}") from None
        try:
            self._setup(timeout, synchronous, wal)
            self._check_on_open(check)
        except (sqlite3.Error, UnicodeDecodeError) as exc:
            self._conn.close()
            raise CatalogError(
                f"cannot open catalog {path}: {exc}; run `phasekit doctor`"
            ) from None
        except BaseException:
            self._conn.close()
            raise
        self._opened()

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
        conn.execute(f"PRAGMA wal_autocheckpoint = {WAL_CHECKPOINT_PAGES}")
        conn.execute(f"PRAGMA journal_size_limit = {JOURNAL_SIZE_LIMIT}")
        with self._transaction() as execute:
            for statement in SQLITE_DDL:
                execute(statement, ())
            self._check_version(execute)

    @contextmanager
    def _transaction(self, write: bool = True) -> Iterator[Exec]:
        conn = self._conn
        with self._lock:
            # a transaction an interrupt (Ctrl-C between BEGIN and COMMIT) left open is
            # rolled back: none of it was acknowledged
            self._rollback()
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
                except UnicodeDecodeError as exc:  # damaged text in a row
                    raise CatalogError(
                        f"catalog {self.path} is damaged: a row holds text that is not UTF-8 "
                        f"({exc}); run `phasekit doctor`"
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
            except BaseException:
                self._rollback()
                raise

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

    def _check_on_open(self, check: str) -> None:
        """Refuse a file whose structure is damaged (a lost page, a broken index) before any
        answer is read from it: SQLite's quick_check (default) or integrity_check."""
        pragma = CHECKS[check]
        if pragma is None:
            return
        rows = self._conn.execute(f"PRAGMA {pragma}").fetchall()
        problems = [str(r[0]) for r in rows if r[0] != "ok"]
        if problems:
            raise CatalogError(
                f"catalog {self.path} is damaged: {pragma} reports {problems[0]}"
                f"{f' (and {len(problems) - 1} more)' if len(problems) > 1 else ''}; "
                "run `phasekit doctor`"
            )

    def integrity_problems(self) -> list[str]:
        """What ``PRAGMA integrity_check`` reports (empty when the file is sound)."""
        try:
            with self._lock:
                rows = self._conn.execute("PRAGMA integrity_check").fetchall()
        except (sqlite3.Error, UnicodeDecodeError) as exc:
            return [f"integrity_check failed: {exc}"]
        return [str(r[0]) for r in rows if r[0] != "ok"]

    def reindex(self) -> None:
        """Rebuild every index from its table (the repair of a damaged index)."""
        with self._lock:
            try:
                self._conn.execute("REINDEX")
            except sqlite3.Error as exc:
                raise CatalogError(f"catalog {self.path}: REINDEX failed: {exc}") from None

    def table_columns(self, table: str) -> list[str]:
        with self._lock, self._transaction(write=False) as execute:
            return [str(r[1]) for r in execute(f'PRAGMA table_info("{table}")', ())]

    def close(self) -> None:
        """Checkpoint the WAL into the file and truncate it (best effort), then close."""
        with self._lock:
            try:
                self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except (sqlite3.Error, UnicodeDecodeError) as exc:  # busy, or a damaged file
                log.debug("catalog %s: no checkpoint on close: %s", self.path, exc)
            self._conn.close()


def run_folders(results_dir: Path) -> list[str]:
    """Names of the folders of a results folder that hold files (runs, presumably)."""
    try:
        entries = sorted(os.scandir(results_dir), key=lambda e: e.name)
    except OSError:
        return []
    found = []
    for entry in entries:
        if entry.name.startswith(".") or not entry.is_dir(follow_symlinks=False):
            continue
        if any(files for _root, _dirs, files in os.walk(entry.path)):
            found.append(entry.name)
    return found


def _refuse_damaged(path: Path, create: bool) -> None:
    """A missing or empty catalog next to results is damage, not a catalog without runs."""
    try:
        size: int | None = path.stat().st_size
    except FileNotFoundError:
        size = None
    except OSError as exc:
        raise CatalogError(f"cannot open catalog {path}: {exc}") from None
    runs = run_folders(path.parent) if size in (None, 0) else []
    note = (
        f"; the results folder {path.parent} holds run folders ({', '.join(runs[:5])}"
        f"{', ...' if len(runs) > 5 else ''}): the catalog was lost or truncated, "
        "`phasekit doctor --repair` rebuilds it from the results"
        if runs
        else ""
    )
    if size == 0 and (runs or not create):
        raise CatalogError(f"catalog {path} is empty (0 bytes), not a catalog{note}")
    if size is None and not create:
        raise CatalogError(
            f"no catalog at {path}{note or '; run a workflow first or pass --catalog'}"
        )
    if size is None and runs:
        log.warning("no catalog at %s%s; starting a new one", path, note)


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
    check = options.get("check", "quick").lower()
    return SqliteCatalog(
        location, create=create, timeout=timeout, synchronous=synchronous, wal=wal, check=check
    )
