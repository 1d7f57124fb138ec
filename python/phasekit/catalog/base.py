"""The Catalog API over SQL, shared by the SQLite and the PostgreSQL implementation.

Stores call :meth:`Catalog.record_item` once a file is durable (written to a temporary
name, fsynced, renamed, its folder fsynced)::

    item_id = catalog.record_item(
        process_id, stage_name, entity_name,
        data_reference="file:///abs/path/x.arrow",   # or memory://run/phase/key, stream://...
        inline_data=None,           # a small JSON value instead of a reference (storage_type inline)
        metadata={"rows": 10, "metrics": {"sharpe": 1.2}},
        size_bytes=1234,            # bytes of the file (of all files, for a folder)
        checksum="crc32:0a1b2c3d",  # required for file:// references (integrity.reference_checksum)
        format="arrow",             # arrow | parquet | csv | json | pickle | hdf5 | ...
        phase="optimize", window_id="w003", container_id="portfolio_12",
        created_at=None,            # default: now (UTC)
        storage_type=None,          # default: "inline" if inline_data is given, else "reference"
    ) -> int

The file of a ``file://`` reference must exist when it is recorded and a plain file must
have ``size_bytes`` bytes. :meth:`Catalog.record_items` records many :class:`NewItem` in
one transaction.
"""

from __future__ import annotations

import abc
import json
import logging
import os
import re
import secrets
import socket
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar

from phasekit.catalog.encode import as_utc, parse_since, to_json, utc_now
from phasekit.catalog.liveness import FileRunLock, RunLock, process_alive, this_host
from phasekit.catalog.names import check_name, check_optional_name
from phasekit.catalog.rowcheck import (
    check_item_fields,
    check_name_field,
    check_process_fields,
    check_time,
    load_json,
    row_check,
    verify_check,
)
from phasekit.catalog.rows import (
    FINAL_STATUSES,
    ITEM_STATES,
    PROCESS_STATUSES,
    STORAGE_TYPES,
    ItemRow,
    NewItem,
    ProcessRow,
    UsageRow,
)
from phasekit.catalog.schema import ITEM_COLUMNS, PROCESS_COLUMNS, SCHEMA_VERSION
from phasekit.catalog.uris import CatalogLocation, check_reference, redact, uri_to_path
from phasekit.crypt.objects import fetch_key
from phasekit.errors import (
    CatalogError,
    CorruptDataError,
    InvalidArgument,
    UnknownKey,
    UnsafePath,
)
from phasekit.objstore import OBJECT_PREFIXES, OBJECT_SCHEMES, ObjectRoot, is_object_url
from phasekit.paths import contained
from phasekit.stores.partset import fetch_part_set, is_part_set_key, object_part_set_problem

if TYPE_CHECKING:
    from phasekit.catalog.cleanup import CleanupReport, RemovalReport
    from phasekit.catalog.compare import Comparison
    from phasekit.catalog.doctor import DoctorReport
    from phasekit.catalog.export import ExportReport

log = logging.getLogger("phasekit.catalog")

INLINE_MAX_BYTES = 64 * 1024
LISTED_STATES = ("present", "missing", "corrupt", "released")
MEMORY_PREFIX = "memory://"
STORED_PREFIXES = ("file://", *(f"{scheme}://" for scheme in OBJECT_SCHEMES), *OBJECT_PREFIXES)
"""References whose bytes a run stored (files and objects): what ``usage`` counts."""
_CHECKSUM = re.compile(r"^crc32:[0-9a-f]{8}$")
_CHUNK = 500
_ITEM_FIELDS = f"SELECT {', '.join(ITEM_COLUMNS)}, row_check FROM intermediate_data"
_PROCESS_FIELDS = f"SELECT {', '.join(PROCESS_COLUMNS)}, row_check FROM processes"
_INSERT_ITEM = (
    f"INSERT INTO intermediate_data ({', '.join(ITEM_COLUMNS[1:])}) "
    f"VALUES ({', '.join('?' for _ in ITEM_COLUMNS[1:])}) RETURNING id"
)

Rows = list[tuple[Any, ...]]
Exec = Callable[[str, Sequence[Any]], Rows]


def is_stored(item: ItemRow) -> bool:
    """Whether ``item``'s bytes lie in a file or object a run stored (not in memory,
    inline or a stream): the items whose bytes ``usage`` counts and deleting frees."""
    ref = item.data_reference
    return ref is not None and ref.startswith(STORED_PREFIXES)


OWNER_PID_KEY = "_pid"
OWNER_HOST_KEY = "_host"


def owner_of_memory() -> dict[str, Any]:
    """Which process holds an in-memory item: recorded in its metadata so that ``doctor``
    can tell, after a crash, that the memory is gone."""
    return {OWNER_PID_KEY: os.getpid(), OWNER_HOST_KEY: socket.gethostname()}


def _chunks(values: Sequence[Any]) -> Iterator[Sequence[Any]]:
    for start in range(0, len(values), _CHUNK):
        yield values[start : start + _CHUNK]


def _marks(n: int) -> str:
    return ", ".join("?" for _ in range(n))


def _meta_path(key: str) -> list[str]:
    parts = key.split(".")
    for part in parts:
        if not part or '"' in part or any(ord(c) < 32 for c in part):
            raise InvalidArgument(
                f"metadata filter key {key!r} is not valid; allowed: dotted names "
                "(metrics.sharpe) without quotes or control characters"
            )
    return parts


def _check_meta_value(key: str, value: Any) -> Any:
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    raise InvalidArgument(
        f"metadata filter {key}={value!r}: the value must be a string, number, boolean or None"
    )


class Catalog(abc.ABC):
    """Records runs and stored items; lists, compares, exports and cleans them up."""

    dialect: ClassVar[str]
    row_checks: ClassVar[bool] = False
    """Whether rows carry a ``row_check`` (SQLite; see :mod:`.rowcheck`)."""
    not_indexed: ClassVar[str] = ""
    _metadata_text: ClassVar[str] = "metadata"
    """The metadata column as text (PostgreSQL: ``metadata::text``)."""
    _like: ClassVar[str] = "LIKE"
    """The case-insensitive LIKE of the dialect (SQLite's LIKE is, for ASCII)."""
    """Appended to the table of item and run reads so that a damaged index cannot hide a
    row (SQLite: `` NOT INDEXED``, reads scan the table)."""

    def __init__(self, location: CatalogLocation) -> None:
        self.location = location
        self.results_dir: Path | None = location.results_dir
        self.interrupted_on_open: list[str] = []
        self._lock = threading.RLock()

    # ----------------------------------------------------------- dialect hooks
    @abc.abstractmethod
    def _transaction(self, write: bool = True) -> AbstractContextManager[Exec]:
        """A context in which the yielded callable runs statements in one transaction.

        ``write=False`` promises reads only (SQLite then takes no write lock).
        """

    @abc.abstractmethod
    def _ts_param(self, value: datetime) -> Any:
        """A UTC time as this dialect stores it."""

    @abc.abstractmethod
    def _ts_value(self, value: Any) -> datetime:
        """A stored time back as an aware UTC datetime."""

    @abc.abstractmethod
    def _meta_clause(self, path: list[str], value: Any) -> tuple[str, list[Any]]:
        """SQL (with ``?`` marks) matching rows whose metadata at ``path`` equals ``value``."""

    @property
    @abc.abstractmethod
    def _migrations(self) -> Mapping[int, Sequence[str]]:
        """Statements that bring a catalog of schema version N to N + 1."""

    @abc.abstractmethod
    def close(self) -> None:
        """Close the connection."""

    def integrity_problems(self) -> list[str]:
        """What the database's own integrity check reports (SQLite; PostgreSQL: none)."""
        return []

    def reindex(self) -> None:
        """Rebuild the indexes from the tables (SQLite; PostgreSQL: nothing to do)."""
        log.debug("catalog %s: no index rebuild for %s", self.url, self.dialect)

    @abc.abstractmethod
    def table_columns(self, table: str) -> list[str]:
        """The columns ``table`` has in the database (empty when it is missing)."""

    def scan_rows(
        self,
    ) -> tuple[list[ProcessRow], list[ItemRow], list[tuple[str, int | None, str]]]:
        """Every run and item row, each checked on its own: (good runs, good items,
        [(kind, row id, problem)] for the damaged ones). For ``doctor``."""
        bad: list[tuple[str, int | None, str]] = []
        runs: list[ProcessRow] = []
        items: list[ItemRow] = []
        with self._lock:
            raw_runs = self._read(self._process_select)
            raw_items = self._read(self._item_select + " ORDER BY id")
        for raw in raw_runs:
            try:
                runs.append(self._process(raw))
            except CatalogError as exc:
                bad.append(("bad_run", None, str(exc)))
        for raw in raw_items:
            try:
                items.append(self._item(raw))
            except CatalogError as exc:
                bad.append(("bad_row", raw[0] if type(raw[0]) is int else None, str(exc)))
        return runs, items, bad

    def _read(self, sql: str, params: Sequence[Any] = ()) -> Rows:
        with self._lock, self._transaction(write=False) as execute:
            return execute(sql, params)

    def _write(self, sql: str, params: Sequence[Any] = ()) -> Rows:
        with self._lock, self._transaction() as execute:
            return execute(sql, params)

    # ------------------------------------------------------------- plumbing
    @property
    def url(self) -> str:
        """Where the catalog lives (a path, or a URL without its password)."""
        return redact(self.location.target)

    def __enter__(self) -> Catalog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"

    @property
    def _item_select(self) -> str:
        return _ITEM_FIELDS + self.not_indexed

    @property
    def _process_select(self) -> str:
        return _PROCESS_FIELDS + self.not_indexed

    def _check_version(self, execute: Exec) -> None:
        rows = execute("SELECT version FROM phasekit_schema", ())
        if not rows:
            execute("INSERT INTO phasekit_schema (version) VALUES (?)", (SCHEMA_VERSION,))
            return
        try:
            version = int(rows[0][0])
        except (TypeError, ValueError):
            raise CatalogError(
                f"catalog {self.url} is damaged: its schema version {rows[0][0]!r} is not a "
                "number; run `phasekit doctor`"
            ) from None
        if version > SCHEMA_VERSION:
            raise CatalogError(
                f"catalog {self.url} has schema version {version}, newer than this "
                f"phasekit understands ({SCHEMA_VERSION}); upgrade phasekit"
            )
        if version < 1:
            raise CatalogError(f"catalog {self.url} has schema version {version}; damaged")
        while version < SCHEMA_VERSION:
            for statement in self._migrations[version]:
                execute(statement, ())
            version += 1
            execute("UPDATE phasekit_schema SET version = ?", (version,))
            log.info("catalog %s upgraded to schema version %d", self.url, version)

    # ------------------------------------------------------------- processes
    def _process(self, row: Sequence[Any]) -> ProcessRow:
        """A stored run row, checked (``CatalogError`` naming it when damaged)."""
        *stored, check = row
        what = f"run row {str(stored[0])[:80]!r}"
        if self.row_checks:
            verify_check(stored, check, what)
        values = dict(zip(PROCESS_COLUMNS, stored))
        values["config"] = load_json(values["config"], what, "config")
        check_process_fields(values, what)
        check_name_field(values["run_name"], what, "run_name", optional=True)
        try:
            started = self._ts_value(values["started_at"])
            finished = values["finished_at"]
            finished = None if finished is None else self._ts_value(finished)
        except (TypeError, ValueError, AttributeError) as exc:
            raise CatalogError(f"{what} is damaged: a time does not parse ({exc})") from None
        check_time(started, what, "started_at")
        if finished is not None:
            check_time(finished, what, "finished_at")
        return ProcessRow(
            process_id=values["process_id"],
            workflow=values["workflow"],
            config=values["config"],
            backend=values["backend"],
            status=values["status"],
            started_at=started,
            finished_at=finished,
            results_dir=values["results_dir"],
            run_name=values["run_name"],
            pid=_optional_int(values["pid"], what, "pid"),
            host=values["host"] if isinstance(values["host"], str) else None,
        )

    def _seal_process(self, execute: Exec, process_id: str) -> None:
        """Recompute the row check of a run after phasekit changed its row."""
        if not self.row_checks:
            return
        rows = execute(f"{_PROCESS_FIELDS} WHERE process_id = ?", (process_id,))
        for row in rows:
            check = row_check(row[:-1])
            execute("UPDATE processes SET row_check = ? WHERE process_id = ?", (check, process_id))

    def start_process(
        self,
        workflow: str,
        *,
        config: Mapping[str, Any] | None = None,
        backend: str | None = None,
        results_dir: str | Path | None = None,
        process_id: str | None = None,
        started_at: datetime | None = None,
        run_name: str | None = None,
    ) -> str:
        """Record a new run of a workflow type with status ``running``; returns its process
        id (``<run_name or workflow>-<time>-<hex>`` unless given)."""
        check_name("workflow", workflow)
        check_optional_name("run_name", run_name)
        started = as_utc(started_at) if started_at else utc_now()
        if process_id is None:
            prefix = run_name or workflow
            process_id = f"{prefix}-{started:%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"
        check_name("process_id", process_id)
        rdir = results_dir if results_dir is not None else self.results_dir
        params = (
            process_id,
            workflow,
            to_json(dict(config or {}), "config"),
            backend,
            "running",
            self._ts_param(started),
            None,
            None if rdir is None else _results_dir_text(rdir),
            run_name,
            os.getpid(),
            this_host(),
        )
        with self._lock, self._transaction() as execute:
            if execute("SELECT 1 FROM processes WHERE process_id = ?", (process_id,)):
                raise CatalogError(f"run {process_id!r} already exists in catalog {self.url}")
            execute(
                f"INSERT INTO processes ({', '.join(PROCESS_COLUMNS)}) "
                f"VALUES ({_marks(len(PROCESS_COLUMNS))})",
                params,
            )
            self._seal_process(execute, process_id)
        log.debug("started run %s (%s)", process_id, workflow)
        return process_id

    def finish_process(
        self, process_id: str, status: str = "completed", finished_at: datetime | None = None
    ) -> ProcessRow:
        """Set a run's final status (completed, failed or interrupted) and end time; its
        in-memory items (``memory://``) become ``released``: their process has ended."""
        if status not in FINAL_STATUSES:
            raise InvalidArgument(
                f"status {status!r} is not a final run status; allowed: {', '.join(FINAL_STATUSES)}"
            )
        finished = self._ts_param(as_utc(finished_at) if finished_at else utc_now())
        with self._lock, self._transaction() as execute:
            rows = execute(
                "UPDATE processes SET status = ?, finished_at = ? WHERE process_id = ? "
                "RETURNING process_id",
                (status, finished, process_id),
            )
            if rows:
                self._release_memory(execute, process_id)
            self._seal_process(execute, process_id)
        if not rows:
            raise UnknownKey(f"run {process_id!r} is not in catalog {self.url}")
        return self.get_process(process_id)

    def reopen_process(self, process_id: str) -> ProcessRow:
        """Mark a run ``running`` again (no end time) by this process (its pid and host)
        while it is resumed: cleanups and ``doctor`` then treat its items as those of a
        live run."""
        with self._lock, self._transaction() as execute:
            rows = execute(
                "UPDATE processes SET status = 'running', finished_at = NULL, pid = ?, "
                "host = ? WHERE process_id = ? RETURNING process_id",
                (os.getpid(), this_host(), process_id),
            )
            self._seal_process(execute, process_id)
        if not rows:
            raise UnknownKey(f"run {process_id!r} is not in catalog {self.url}")
        return self.get_process(process_id)

    def _opened(self) -> None:
        """Once connected: runs whose process died show as ``interrupted`` from now on
        (their ids in :attr:`interrupted_on_open`)."""
        try:
            self.interrupted_on_open = self.mark_interrupted_runs()
        except CatalogError as exc:  # a read-only or damaged catalog still opens
            log.debug("catalog %s: cannot mark interrupted runs: %s", self.url, exc)

    def mark_interrupted_runs(self) -> list[str]:
        """Mark ``interrupted`` (and release their memory items) the running runs whose
        process, on this host, is gone; returns their ids. Called when a catalog opens."""
        with self._lock:
            rows = self._read(
                "SELECT process_id, pid FROM processes WHERE status = 'running' AND host = ?",
                (this_host(),),
            )
        dead = [
            str(run_id)
            for run_id, pid in rows
            if isinstance(pid, int) and process_alive(pid, this_host()) is False
        ]
        finished = self._ts_param(utc_now())
        marked = []
        for run_id in dead:
            with self._lock, self._transaction() as execute:
                if execute(
                    "UPDATE processes SET status = 'interrupted', finished_at = ? "
                    "WHERE process_id = ? AND status = 'running' RETURNING process_id",
                    (finished, run_id),
                ):
                    self._release_memory(execute, run_id)
                    self._seal_process(execute, run_id)
                    marked.append(run_id)
        for run_id in marked:
            log.warning("run %s: its process is gone; marked interrupted", run_id)
        return marked

    def lock_run(self, process_id: str, run_dir: Path) -> RunLock:
        """Hold the lock of a run while it runs (see :mod:`.liveness`); ``CatalogError``
        when another process holds it. ``release()`` it when the run ends."""
        return FileRunLock(process_id, Path(run_dir))

    def _release_memory(self, execute: Exec, process_id: str) -> list[int]:
        rows = execute(
            "UPDATE intermediate_data SET state = 'released' WHERE process_id = ? "
            "AND state = 'present' AND substr(data_reference, 1, 9) = ? RETURNING id",
            (process_id, MEMORY_PREFIX),
        )
        return [int(r[0]) for r in rows]

    def release_memory_items(self, process_id: str) -> list[int]:
        """Mark the present ``memory://`` items of an ended run ``released``; their ids."""
        with self._lock, self._transaction() as execute:
            return self._release_memory(execute, process_id)

    def get_process(self, process_id: str) -> ProcessRow:
        with self._lock:
            rows = self._read(f"{self._process_select} WHERE process_id = ?", (process_id,))
        if not rows:
            raise UnknownKey(f"run {process_id!r} is not in catalog {self.url}")
        return self._process(rows[0])

    def list_processes(
        self,
        workflow: str | None = None,
        status: str | None = None,
        limit: int | None = None,
        *,
        run_name: str | None = None,
        since: datetime | str | None = None,
        before: tuple[datetime, str] | None = None,
    ) -> list[ProcessRow]:
        """Runs, newest first; of a workflow type, a status, a run name, started at or after
        ``since``; ``before`` (a run's ``(started_at, process_id)``) pages: only runs that
        come after that run in this order."""
        if status is not None and status not in PROCESS_STATUSES:
            raise InvalidArgument(
                f"status {status!r} is not a run status; allowed: {', '.join(PROCESS_STATUSES)}"
            )
        where: list[str] = []
        params: list[Any] = []
        if since is not None:
            where.append("started_at >= ?")
            params.append(self._ts_param(parse_since(since)))
        if before is not None:
            started = self._ts_param(as_utc(before[0]))
            where.append("(started_at < ? OR (started_at = ? AND process_id < ?))")
            params.extend((started, started, before[1]))
        if workflow is not None:
            where.append("workflow = ?")
            params.append(workflow)
        if status is not None:
            where.append("status = ?")
            params.append(status)
        if run_name is not None:
            where.append("run_name = ?")
            params.append(run_name)
        sql = self._process_select + (f" WHERE {' AND '.join(where)}" if where else "")
        sql += " ORDER BY started_at DESC, process_id DESC"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        with self._lock:
            return [self._process(r) for r in self._read(sql, params)]

    def latest_process(
        self, workflow: str | None = None, status: str | None = None
    ) -> ProcessRow | None:
        """The most recently started run (of ``workflow``), or ``None``."""
        rows = self.list_processes(workflow, status, limit=1)
        return rows[0] if rows else None

    def resolve_run(self, name: str) -> ProcessRow:
        """A run by id; ``latest`` names the newest run unless a run is called that."""
        try:
            return self.get_process(name)
        except UnknownKey:
            if name != "latest":
                raise
        latest = self.latest_process()
        if latest is None:
            raise UnknownKey(f"catalog {self.url} holds no runs")
        return latest

    # ----------------------------------------------------------------- items
    def _item(self, row: Sequence[Any]) -> ItemRow:
        """A stored item row, checked (``CatalogError`` naming it when damaged)."""
        *stored, check = row
        what = f"item row {stored[0]!r}"
        if self.row_checks:
            verify_check(stored[:-1], check, what)  # all but the state
        values = dict(zip(ITEM_COLUMNS, stored))
        if type(values["id"]) is not int:
            raise CatalogError(f"{what} is damaged: its id is not an integer")
        what = f"item row {values['id']} ({str(values['process_id'])[:80]})"
        if values["inline_data"] is not None:
            values["inline_data"] = load_json(values["inline_data"], what, "inline_data")
        values["metadata"] = load_json(values["metadata"], what, "metadata")
        if not isinstance(values["metadata"], dict):
            raise CatalogError(f"{what} is damaged: its metadata is not a JSON object")
        check_item_fields(values, what)
        try:
            values["created_at"] = self._ts_value(values["created_at"])
        except (TypeError, ValueError, AttributeError) as exc:
            raise CatalogError(f"{what} is damaged: created_at does not parse ({exc})") from None
        check_time(values["created_at"], what, "created_at")
        return ItemRow(**values)

    def _item_params(self, item: NewItem) -> tuple[Any, ...]:
        check_name("process_id", item.process_id)
        check_name("stage_name", item.stage_name)
        check_name("entity_name", item.entity_name)
        check_optional_name("phase", item.phase)
        check_optional_name("window_id", item.window_id)
        check_optional_name("container_id", item.container_id)
        storage = item.storage_type or ("inline" if item.inline_data is not None else "reference")
        if storage not in STORAGE_TYPES:
            raise InvalidArgument(
                f"storage_type {storage!r} is not valid; allowed: {', '.join(STORAGE_TYPES)}"
            )
        if (
            isinstance(item.size_bytes, bool)
            or not isinstance(item.size_bytes, int)
            or item.size_bytes < 0
        ):
            raise InvalidArgument(f"size_bytes {item.size_bytes!r} must be an integer >= 0")
        if item.checksum is not None and not _CHECKSUM.match(str(item.checksum)):
            raise InvalidArgument(
                f"checksum {item.checksum!r} is not valid; allowed: 'crc32:' and 8 lowercase hex digits"
            )
        if not isinstance(item.metadata, Mapping):
            raise InvalidArgument(f"metadata must be a mapping, got {type(item.metadata).__name__}")
        inline = None
        size = item.size_bytes
        if storage == "inline":
            inline = to_json(item.inline_data, "inline_data")
            inline_size = len(inline.encode())
            if inline_size > INLINE_MAX_BYTES:
                raise InvalidArgument(
                    f"inline_data of {item.stage_name}/{item.entity_name} is {inline_size} "
                    f"bytes of JSON; allowed: at most {INLINE_MAX_BYTES}; store it by reference"
                )
            size = size or inline_size
        elif item.data_reference is None:
            raise InvalidArgument(
                f"item {item.stage_name}/{item.entity_name}: a reference item needs data_reference"
            )
        if item.data_reference is not None:
            self._check_file(item)
        metadata = dict(item.metadata)
        if (item.data_reference or "").startswith(MEMORY_PREFIX):
            metadata.update(owner_of_memory())
        created = as_utc(item.created_at) if item.created_at else utc_now()
        return (
            item.process_id,
            item.stage_name,
            item.entity_name,
            storage,
            item.data_reference,
            inline,
            to_json(metadata, "metadata"),
            self._ts_param(created),
            size,
            item.format,
            item.checksum,
            item.phase,
            item.window_id,
            item.container_id,
            item.key_id,
            "present",
        )

    def _check_file(self, item: NewItem) -> None:
        ref = check_reference(item.data_reference or "")
        if is_object_url(ref):
            if item.checksum is None:
                raise InvalidArgument(
                    f"data reference {ref} is an object; record it with its checksum"
                )
            what = f"data reference of {item.stage_name}/{item.entity_name}"
            try:
                self._object_root(item.process_id, what).relative(ref)
            except UnsafePath as exc:
                raise CatalogError(f"{what}: {exc}") from None
            return
        path = uri_to_path(ref)
        if path is None:
            return
        if item.checksum is None:
            raise InvalidArgument(f"data reference {ref} is a file; record it with its checksum")
        what = f"data reference of {item.stage_name}/{item.entity_name}"
        path = self._contained(path, what)
        try:
            st = path.stat()
        except OSError as exc:
            raise CatalogError(
                f"cannot record {ref}: {exc.strerror or exc}; record an item only once its file is durable"
            ) from None
        if path.is_file() and st.st_size != item.size_bytes:
            raise CatalogError(
                f"cannot record {ref}: the file has {st.st_size} bytes, size_bytes says {item.size_bytes}"
            )

    def _contained(self, path: Path, what: str) -> Path:
        """``path`` if it lies under the catalog's results folder, else ``CatalogError``."""
        if self.results_dir is None:
            raise CatalogError(
                f"{what}: file {path} cannot be checked, the catalog {self.url} was opened "
                "without a results folder; pass results_dir (--results-dir)"
            )
        try:
            return contained(path, self.results_dir, f"{what}: file")
        except UnsafePath as exc:
            raise CatalogError(str(exc)) from None

    def _object_root(self, process_id: str, what: str) -> ObjectRoot:
        """The object storage root of a run (its recorded ``results_dir``)."""
        rdir = self.get_process(process_id).results_dir
        if not is_object_url(rdir):
            raise CatalogError(
                f"{what}: an s3:// reference, but run {process_id} keeps its results in "
                f"{rdir!r}, not on object storage"
            )
        return ObjectRoot.from_url(str(rdir))

    def item_object(self, row: ItemRow) -> tuple[ObjectRoot, str] | None:
        """The object root and key of a row's ``s3://`` reference, checked to lie under the
        run's results prefix (``CatalogError`` otherwise); ``None`` for other references."""
        if not is_object_url(row.data_reference):
            return None
        root = self._object_root(row.process_id, row.label)
        try:
            return root, root.relative(str(row.data_reference))
        except UnsafePath as exc:
            raise CatalogError(f"{row.label}: {exc}") from None

    def read_object(self, row: ItemRow) -> bytes | None:
        """The bytes of a row's object, checked against its size and checksum
        (``CorruptDataError`` naming the row otherwise); ``None`` for other references."""
        found = self.item_object(row)
        if found is None or is_part_set_key(found[1]):  # many objects: see item_local
            return None
        data = found[0].read(found[1], row.checksum, row.label)
        if len(data) != row.size_bytes:
            raise CorruptDataError(
                f"{row.label}: {row.data_reference} has {len(data)} bytes, the catalog "
                f"recorded {row.size_bytes}"
            )
        return data

    def item_local(self, row: ItemRow, cache: Path) -> Path | None:
        """A local file holding the row's bytes: its own file, or its object fetched (and
        verified) into ``cache`` (with its key object when it is encrypted, so that it
        decrypts like a local file); ``None`` for references that are not files."""
        found = self.item_object(row)
        if found is None:
            return self.item_path(row)
        root, rel = found
        if is_part_set_key(rel):  # its manifest and parts, each verified
            return fetch_part_set(root, rel, contained(rel, cache, row.label), row.label)
        local = root.download(rel, contained(rel, cache, row.label), row.checksum, row.label)
        fetch_key(root, rel, cache, row.label)  # an encrypted object's wrapped data key
        return local

    def item_path(self, row: ItemRow) -> Path | None:
        """The local file of a row's ``file://`` reference, checked to lie under the results
        folder (``CatalogError`` naming the row otherwise); ``None`` for other references."""
        try:
            path = row.path
        except (CatalogError, ValueError) as exc:
            raise CatalogError(f"{row.label}: bad data reference: {exc}") from None
        if path is None:
            return None
        return self._contained(path, row.label)

    def record_item(
        self,
        process_id: str,
        stage_name: str,
        entity_name: str,
        *,
        data_reference: str | None = None,
        inline_data: Any = None,
        metadata: Mapping[str, Any] | None = None,
        size_bytes: int = 0,
        checksum: str | None = None,
        format: str | None = None,
        phase: str | None = None,
        window_id: str | None = None,
        container_id: str | None = None,
        created_at: datetime | None = None,
        storage_type: str | None = None,
        replace: bool = False,
        key_id: str | None = None,
    ) -> int:
        """Record one stored item (see the module docstring); returns its id. With
        ``replace``, the run's earlier rows of the same ``data_reference`` (a file written
        again, say on ``--resume``) are deleted in the same transaction."""
        item = NewItem(
            process_id=process_id,
            stage_name=stage_name,
            entity_name=entity_name,
            data_reference=data_reference,
            inline_data=inline_data,
            metadata=dict(metadata or {}),
            size_bytes=size_bytes,
            checksum=checksum,
            format=format,
            phase=phase,
            window_id=window_id,
            container_id=container_id,
            created_at=created_at,
            storage_type=storage_type,
            key_id=key_id,
        )
        return self.record_items([item], replace=replace)[0]

    def record_items(self, items: Sequence[NewItem], *, replace: bool = False) -> list[int]:
        """Record several items in one transaction (all or none); returns their ids.
        ``replace``: see :meth:`record_item`."""
        params = [self._item_params(item) for item in items]
        if not params:
            return []
        try:
            with self._lock, self._transaction() as execute:
                if replace:
                    for item in items:
                        if item.data_reference is not None:
                            execute(
                                "DELETE FROM intermediate_data WHERE process_id = ? "
                                "AND data_reference = ?",
                                (item.process_id, item.data_reference),
                            )
                return [self._insert_item(execute, p) for p in params]
        except CatalogError:
            self._raise_unknown_runs({item.process_id for item in items})
            raise

    def _insert_item(self, execute: Exec, params: tuple[Any, ...]) -> int:
        item_id = int(execute(_INSERT_ITEM, params)[0][0])
        if self.row_checks:
            check = row_check((item_id, *params[:-1]))  # all but the state
            execute("UPDATE intermediate_data SET row_check = ? WHERE id = ?", (check, item_id))
        return item_id

    def _raise_unknown_runs(self, runs: set[str]) -> None:
        for run in sorted(runs):
            try:
                self.get_process(run)
            except UnknownKey:
                raise CatalogError(
                    f"run {run!r} is not in catalog {self.url}; call start_process first"
                ) from None

    def get_item(self, item_id: int) -> ItemRow:
        with self._lock:
            rows = self._read(f"{self._item_select} WHERE id = ?", (int(item_id),))
        if not rows:
            raise UnknownKey(f"item {item_id} is not in catalog {self.url}")
        return self._item(rows[0])

    def get_items(self, ids: Sequence[int]) -> list[ItemRow]:
        """The rows of ``ids`` that exist (any state), in id order."""
        found: list[ItemRow] = []
        with self._lock, self._transaction(write=False) as execute:
            for chunk in _chunks([int(i) for i in ids]):
                rows = execute(f"{self._item_select} WHERE id IN ({_marks(len(chunk))})", chunk)
                found.extend(self._item(r) for r in rows)
        return sorted(found, key=lambda row: row.id)

    def items_by_reference(self, data_reference: str) -> list[ItemRow]:
        """Every row recording ``data_reference``."""
        with self._lock:
            rows = self._read(
                f"{self._item_select} WHERE data_reference = ? ORDER BY id", (data_reference,)
            )
        return [self._item(r) for r in rows]

    def list_items(
        self,
        process_id: str | None = None,
        stage: str | None = None,
        entity: str | None = None,
        since: datetime | str | None = None,
        meta: Mapping[str, Any] | None = None,
        *,
        phase: str | None = None,
        container: str | None = None,
        window: str | None = None,
        states: Sequence[str] | None = None,
        limit: int | None = None,
        after_id: int | None = None,
        text: Sequence[str] = (),
    ) -> list[ItemRow]:
        """Items in id order; ``meta`` keys may be dotted paths (``metrics.sharpe``).

        ``states`` defaults to present, missing and corrupt (rows being deleted are left out).
        ``after_id`` pages: only items with a larger id. ``text``: words that must all
        occur in the item's metadata (its JSON text, keys and values, case-insensitive
        for ASCII letters). ``container``: that container's rows, and its row within a
        block row (:mod:`.blockrows`; the block row's id, in id order with the others).
        """
        where: list[str] = []
        params: list[Any] = []
        if after_id is not None:
            where.append("id > ?")
            params.append(int(after_id))
        for word in text:
            where.append(f"{self._metadata_text} {self._like} ? ESCAPE '\\'")
            params.append(f"%{_like_escape(word)}%")
        for column, value in (
            ("process_id", process_id),
            ("stage_name", stage),
            ("entity_name", entity),
            ("phase", phase),
            ("container_id", container),
            ("window_id", window),
        ):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        if since is not None:
            where.append("created_at >= ?")
            params.append(self._ts_param(parse_since(since)))
        for key, value in (meta or {}).items():
            clause, extra = self._meta_clause(_meta_path(key), _check_meta_value(key, value))
            where.append(clause)
            params.extend(extra)
        wanted = tuple(states) if states is not None else LISTED_STATES
        bad = [s for s in wanted if s not in ITEM_STATES]
        if bad:
            raise InvalidArgument(
                f"item state {bad[0]!r} is not valid; allowed: {', '.join(ITEM_STATES)}"
            )
        where.append(f"state IN ({_marks(len(wanted))})")
        params.extend(wanted)
        sql = f"{self._item_select} WHERE {' AND '.join(where)} ORDER BY id"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        with self._lock:
            rows = [self._item(r) for r in self._read(sql, params)]
        if container is None:
            return rows
        from phasekit.catalog.blockrows import BLOCK_OUTPUT, container_rows, matches

        blocks = self.list_items(
            process_id, stage, None, since, {"output_type": BLOCK_OUTPUT},
            phase=phase, window=window, states=states, after_id=after_id,
        )  # fmt: skip
        found = [
            r
            for b in blocks
            for r in container_rows(b, container)
            if matches(r, entity, meta or {}, text)
        ]
        if not found:
            return rows
        merged = sorted([*rows, *found], key=lambda r: r.id)
        return merged[:limit] if limit is not None else merged

    def usage(self, process_id: str | None = None) -> list[UsageRow]:
        """Items, bytes stored (of file and object items only: not in-memory or
        inline items; a stream's persisted parts are items of their own, so its
        ``stream://`` item is not counted twice) and files (or objects) per run and stage
        (rows being deleted are left out).

        Where rows carry row checks, the sums are made over checked rows (a damaged row
        raises ``CatalogError`` instead of changing a total).
        """
        if self.row_checks:
            return self._usage_of(self.list_items(process_id, states=LISTED_STATES))
        stored = " OR ".join(
            f"substr(data_reference, 1, {len(p)}) = '{p}'" for p in STORED_PREFIXES
        )
        sql = (
            "SELECT process_id, stage_name, COUNT(*), COALESCE(SUM(CASE WHEN "
            f"{stored} THEN size_bytes ELSE 0 END), 0), "
            f"COUNT(DISTINCT CASE WHEN {stored} "
            "THEN data_reference END) FROM intermediate_data WHERE state <> 'deleting'"
        )
        params: list[Any] = []
        if process_id is not None:
            sql += " AND process_id = ?"
            params.append(process_id)
        sql += " GROUP BY process_id, stage_name ORDER BY process_id, stage_name"
        with self._lock:
            rows = self._read(sql, params)
        return [UsageRow(r[0], r[1], int(r[2]), int(r[3]), int(r[4])) for r in rows]

    @staticmethod
    def _usage_of(items: Sequence[ItemRow]) -> list[UsageRow]:
        groups: dict[tuple[str, str], list[ItemRow]] = {}
        for item in items:
            groups.setdefault((item.process_id, item.stage_name), []).append(item)
        out = []
        for (run, stage), rows in sorted(groups.items()):
            on_disk = [r for r in rows if is_stored(r)]
            files = {r.data_reference for r in on_disk}
            size = sum(r.size_bytes for r in on_disk)
            out.append(UsageRow(run, stage, len(rows), size, len(files)))
        return out

    # ------------------------------------------------------ state changes
    def mark_items(
        self, ids: Sequence[int], state: str, *, from_states: Sequence[str] | None = None
    ) -> list[int]:
        """Set the state of rows (optionally only of rows in ``from_states``); returns their ids."""
        if state not in ITEM_STATES:
            raise InvalidArgument(
                f"item state {state!r} is not valid; allowed: {', '.join(ITEM_STATES)}"
            )
        changed: list[int] = []
        with self._lock, self._transaction() as execute:
            for chunk in _chunks([int(i) for i in ids]):
                sql = f"UPDATE intermediate_data SET state = ? WHERE id IN ({_marks(len(chunk))})"
                params: list[Any] = [state, *chunk]
                if from_states is not None:
                    sql += f" AND state IN ({_marks(len(from_states))})"
                    params.extend(from_states)
                changed.extend(int(r[0]) for r in execute(sql + " RETURNING id", params))
        return sorted(changed)

    def set_key_id(self, old_key_ids: Sequence[str], new_key_id: str) -> int:
        """Record that the items encrypted under ``old_key_ids`` now have their data keys
        wrapped with ``new_key_id`` (``phasekit keys rotate``); returns how many rows."""
        old = [str(k) for k in old_key_ids if k != new_key_id]
        if not old:
            return 0
        with self._lock, self._transaction() as execute:
            ids = [
                int(r[0])
                for r in execute(
                    f"UPDATE intermediate_data SET key_id = ? WHERE key_id IN ({_marks(len(old))}) "
                    "RETURNING id",
                    [new_key_id, *old],
                )
            ]
            if self.row_checks:
                for item_id in ids:
                    stored = execute(f"{self._item_select} WHERE id = ?", (item_id,))[0]
                    check = row_check(stored[:-2])  # all but the state (and the check)
                    execute(
                        "UPDATE intermediate_data SET row_check = ? WHERE id = ?", (check, item_id)
                    )
        return len(ids)

    def delete_item_rows(self, ids: Sequence[int], *, state: str | None = None) -> int:
        """Delete rows only (no file is touched); with ``state``, only rows in that state."""
        count = 0
        with self._lock, self._transaction() as execute:
            for chunk in _chunks([int(i) for i in ids]):
                sql = f"DELETE FROM intermediate_data WHERE id IN ({_marks(len(chunk))})"
                params: list[Any] = list(chunk)
                if state is not None:
                    sql += " AND state = ?"
                    params.append(state)
                count += len(execute(sql + " RETURNING id", params))
        return count

    def live_references(self, references: Sequence[str]) -> set[str]:
        """The subset of ``references`` still recorded by a row that is not being deleted."""
        found: set[str] = set()
        with self._lock, self._transaction(write=False) as execute:
            for chunk in _chunks(list(references)):
                rows = execute(
                    f"SELECT DISTINCT data_reference FROM intermediate_data WHERE data_reference IN "
                    f"({_marks(len(chunk))}) AND state <> 'deleting'",
                    chunk,
                )
                found.update(r[0] for r in rows)
        return found

    # --------------------------------------------------------- operations
    def verify_item(self, item: ItemRow | int) -> ItemRow:
        """Check a file item's size and checksum; raises ``CorruptDataError`` naming it."""
        from phasekit.catalog.integrity import verify_file

        row = item if isinstance(item, ItemRow) else self.get_item(item)
        found = self.item_object(row)
        if found is not None and is_part_set_key(found[1]):
            problem = object_part_set_problem(found[0], found[1], row.size_bytes, row.checksum)
            if problem is not None:
                raise CorruptDataError(f"{row.label}: {row.data_reference} {problem}")
            return row
        if self.read_object(row) is not None:
            return row
        path = self.item_path(row)
        if path is not None:
            verify_file(path, row.size_bytes, row.checksum, row.label)
        return row

    def remove_items(self, ids: Sequence[int], *, delete_files: bool = True) -> RemovalReport:
        """Delete items: their files (unless still recorded by other rows), then their rows."""
        from phasekit.catalog.cleanup import remove_items

        return remove_items(self, ids, delete_files=delete_files)

    def cleanup(
        self,
        policy: str,
        stages_to_persist: Sequence[str] | None = None,
        dry_run: bool = False,
        workflow: str | None = None,
        run_name: str | None = None,
    ) -> CleanupReport:
        """Apply a cleanup policy (keep_all, keep_latest, keep_none) to the runs of a
        workflow type and run name (all when ``None``); see :mod:`.cleanup`."""
        from phasekit.catalog.cleanup import run_cleanup

        return run_cleanup(
            self, policy, stages_to_persist, dry_run=dry_run, workflow=workflow, run_name=run_name
        )

    def doctor(
        self,
        repair: bool = False,
        *,
        verify: bool = True,
        grace_seconds: float | None = None,
        object_grace_seconds: float | None = None,
    ) -> DoctorReport:
        """Find (and with ``repair`` fix what is safe) inconsistencies; see :mod:`.doctor`
        (its ``GRACE_SECONDS`` and ``OBJECT_GRACE_SECONDS`` when a grace is None)."""
        from phasekit.catalog import doctor

        return doctor.run_doctor(
            self,
            repair=repair,
            verify=verify,
            grace_seconds=doctor.GRACE_SECONDS if grace_seconds is None else grace_seconds,
            object_grace_seconds=(
                doctor.OBJECT_GRACE_SECONDS
                if object_grace_seconds is None
                else object_grace_seconds
            ),
        )

    def compare(self, run_a: str, run_b: str) -> Comparison:
        """Metrics of two runs side by side; see :mod:`.compare`."""
        from phasekit.catalog.compare import compare_runs

        return compare_runs(self, run_a, run_b)

    def export(self, run: str, to_dir: str | Path, format: str | None = None) -> ExportReport:
        """Copy or convert a run's files into ``to_dir``; see :mod:`.export`."""
        from phasekit.catalog.export import export_run

        return export_run(self, run, to_dir, format)


def _like_escape(word: str) -> str:
    """``word`` for a LIKE pattern with ``\\`` as the escape character."""
    if not isinstance(word, str) or not word or "\x00" in word:
        raise InvalidArgument(f"search word {word!r} is not valid; allowed: non-empty text")
    return word.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _load(value: Any) -> Any:
    return json.loads(value) if isinstance(value, (str, bytes)) else value


def _optional_int(value: Any, what: str, field: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise CatalogError(f"{what} is damaged: {field} {str(value)[:40]!r} is not an integer")
    return value


def _results_dir_text(rdir: str | Path) -> str:
    """How a run's results folder is recorded: an object storage URL as given, a local
    folder as an absolute path."""
    if is_object_url(rdir):
        return ObjectRoot.from_url(str(rdir)).url
    return str(Path(rdir).absolute())
