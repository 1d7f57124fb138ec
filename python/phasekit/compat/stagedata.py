"""Seed 004 (intermediate stage data): ``BaseDataContainer``.

Drop-in for code written against the seed's interface::

    from phasekit.compat.stagedata import BaseDataContainer

    container = BaseDataContainer({"storage_strategy": {...}})   # the seed's dict
    container.store_stage_data("cleaning", frames, {"decision": "drop_nulls"})
    frames = container.retrieve_stage_data("cleaning")
    rows = container.list_available_data({"stage_name": "cleaning"})
    container.cleanup("keep_latest")

Every store call becomes a row of the catalog's ``intermediate_data`` table (SQLite under
``results_dir`` by default, PostgreSQL with ``catalog: postgresql://...``) under one run
(``processes``) per container. Where the data lives follows ``storage_strategy`` as
resolved by the config layer:

* a stage is *persisted* when ``mode: persist`` or ``persist_intermediate_results:
  true``, and ``stages_to_persist`` is empty or names it; other stages stay in memory
  (``mode: hybrid``: in a HybridStore that spills the least recently used past
  ``memory_limit_mb``);
* ``persistence: csv`` (default) writes ``<results_dir>/<process_id>/<stage>/<entity>.csv``
  (JSON for values that are not tables) through a FileStore, whose manifests in
  ``.phasekit/`` hold each file's metadata and checksum (the file-based index);
* ``persistence: database`` keeps small JSON values inline in the catalog row
  (``storage_type: inline``) and larger data as Arrow files referenced by the row.

``data`` is one value, or a dict of tables/frames/arrays (one entity per key; the dict
comes back from ``retrieve_stage_data``). Storing a stage again in the same run replaces
it. ``cleanup(policy)`` applies ``keep_all``/``keep_latest``/``keep_none`` through the
catalog (finished runs; ``stages_to_persist`` always kept), and ``keep_none`` also
releases this run's own stage data. ``close()`` finishes the run and applies the
configured ``cleanup_policy``.

The stores come from :func:`phasekit.stores.factory.open_store` (stages held in memory:
the store of the resolved mode, ``memory`` or ``hybrid``, spilling to
``<results_dir>/<process_id>/.spill``) and :func:`~phasekit.stores.factory.open_file_store`
(persisted stages).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Optional

from phasekit.catalog import CLEANUP_POLICIES, INLINE_MAX_BYTES, Catalog, ItemRow
from phasekit.compat._common import CatalogLink, FileSettings, ViewRecorder
from phasekit.config import load_section, resolve
from phasekit.errors import InvalidArgument, UnknownKey
from phasekit.stores import FileStore, HybridStore, Ref, values
from phasekit.stores.factory import StorePlace, open_file_store, open_store
from phasekit.stores.names import check_name

PERSISTENCE = ("csv", "database")
LAYOUT_KEY = "_layout"
"""Metadata key telling whether a stage was one value (``value``) or a dict (``entities``)."""
DEFAULT_ENTITY = "data"
DEFAULT_PROJECT = "base_data_project"
_LISTED = (
    "id",
    "process_id",
    "stage_name",
    "entity_name",
    "storage_type",
    "data_reference",
    "metadata",
    "created_at",
    "size_bytes",
    "format",
    "checksum",
)


def _jsonable_metadata(metadata: Optional[Mapping[str, Any]]) -> dict[str, Any]:
    """Metadata as JSON (values JSON cannot hold, such as datetimes, become text)."""
    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping):
        raise InvalidArgument(f"metadata must be a mapping, got {type(metadata).__name__}")
    return dict(json.loads(json.dumps(dict(metadata), default=str)))


def _entities(data: Any) -> Optional[dict[str, Any]]:
    """The entities of a dict of tables, frames or arrays; None for any other value."""
    if not isinstance(data, Mapping) or not data:
        return None
    try:
        kinds = [values.kind_of(v) for v in data.values()]
    except InvalidArgument:
        return None
    if all(k in (*values.TABULAR, values.NUMPY) for k in kinds):
        return {check_name("entity name", k): v for k, v in data.items()}
    return None


class BaseDataContainer:
    """Stores, retrieves, lists and cleans up intermediate stage data (seed 004).

    ``config``: ``storage_strategy`` (the seed's dict; the config itself when it has no
    such key but a ``mode``), ``persistence`` (``csv`` or ``database``), ``results_dir``
    (``./results``), ``catalog`` (a Catalog, path or URL; default the results folder),
    ``process_id`` (attach to an existing run instead of starting one), ``project_name``
    (the run's workflow name), ``memory_limit_mb`` (hybrid mode), ``allow_pickle``.
    """

    def __init__(self, config: Optional[Mapping[str, Any]] = None) -> None:
        config = dict(config or {})
        strategy = config.get("storage_strategy")
        if strategy is None and "mode" in config:
            strategy = {
                k: config[k]
                for k in (
                    "mode",
                    "persist_intermediate_results",
                    "stages_to_persist",
                    "cleanup_policy",
                )
                if k in config
            }
        self.config = config
        self.storage_strategy: dict[str, Any] = dict(strategy or {})
        load_section("storage_strategy", self.storage_strategy)
        settings: dict[str, Any] = {"storage_strategy": self.storage_strategy}
        if "memory_limit_mb" in config:
            settings["data_flow"] = {"memory_limit_mb": config["memory_limit_mb"]}
        resolved = resolve(settings)
        flow = resolved.base.data_flow
        self.mode = flow.mode
        self.persist_all = flow.persistence.save_all_phases
        self.stages_to_persist = tuple(resolved.stages_to_persist)
        self.cleanup_policy = resolved.cleanup_policy
        self.persistence = str(config.get("persistence", "csv"))
        if self.persistence not in PERSISTENCE:
            raise InvalidArgument(
                f"persistence {self.persistence!r} is not valid; allowed: {', '.join(PERSISTENCE)}"
            )
        self.allow_pickle = bool(config.get("allow_pickle", False))
        self.results_dir = Path(os.path.abspath(config.get("results_dir", "./results")))
        self.project_name = str(config.get("project_name", DEFAULT_PROJECT))
        self._link = CatalogLink(
            config.get("catalog") or self.results_dir,
            config.get("process_id"),
            workflow=self.project_name,
            results_dir=self.results_dir,
            config={"storage_strategy": self.storage_strategy, "persistence": self.persistence},
        )
        self._memory: dict[str, Any] = {}
        self._files: dict[str, FileStore] = {}
        # stages not persisted are held by the store of the resolved mode (file mode
        # persists every stage it names; the others it holds in memory)
        self._held = flow if flow.mode != "file" else dataclasses.replace(flow, mode="memory")
        self._hybrid: Optional[HybridStore] = None
        if self._held.mode == "hybrid":
            place = StorePlace(
                self.results_dir / self.process_id,
                self.process_id,
                "stages",
                ViewRecorder(self._link),
            )
            hybrid = open_store(self._held, place)
            assert isinstance(hybrid, HybridStore)
            self._hybrid = hybrid

    # ---------------------------------------------------------------- plumbing

    @property
    def catalog(self) -> Catalog:
        return self._link.catalog

    @property
    def process_id(self) -> str:
        return self._link.process_id

    def should_persist(self, stage_name: str) -> bool:
        """Whether ``stage_name`` goes to persistent storage under this strategy."""
        wanted = not self.stages_to_persist or stage_name in self.stages_to_persist
        return (self.mode == "file" or self.persist_all) and wanted

    def _memory_store(self, stage: str) -> Any:
        store = self._memory.get(stage)
        if store is None:
            if self._hybrid is not None:  # one budget, a view per stage
                store = self._hybrid.container(stage, self._hybrid.ledger.budget)
            else:
                place = StorePlace(None, self.process_id, stage, self._link.recorder(stage))
                store = open_store(self._held, place)
            self._memory[stage] = store
        return store

    def _file_store(self, stage: str) -> FileStore:
        store = self._files.get(stage)
        if store is None:
            place = StorePlace(
                self.results_dir / self.process_id / stage,
                self.process_id,
                stage,
                self._link.recorder(stage),
                allow_pickle=self.allow_pickle,
            )
            files = FileSettings("csv" if self.persistence == "csv" else "arrow")
            store = self._files[stage] = open_file_store(files, place)
        return store

    def _file_format(self, value: Any) -> str:
        kind = values.kind_of(value, allow_object=self.allow_pickle)
        if kind == values.OBJECT:
            return "pickle"
        if self.persistence == "csv":
            return "csv" if kind in (*values.TABULAR, values.NUMPY) else "json"
        return "arrow"

    # ---------------------------------------------------------------- store

    def store_stage_data(
        self, stage_name: str, data: Any, metadata: Optional[Mapping[str, Any]] = None
    ) -> Any:
        """Store the data of a processing stage (replacing what this run stored for it).

        Returns the data reference (a ``memory://`` URI, a file path or ``inline:<id>``),
        or a dict entity -> reference when ``data`` is a dict of tables/frames/arrays."""
        stage = check_name("stage_name", stage_name)
        meta = _jsonable_metadata(metadata)
        entities = _entities(data)
        layout = "entities" if entities is not None else "value"
        if entities is None:
            entity = check_name("entity_name", str(meta.get("entity_name", DEFAULT_ENTITY)))
            entities = {entity: data}
        meta[LAYOUT_KEY] = layout
        self._drop_stage(stage)
        persist = self.should_persist(stage)
        refs = {
            name: self._store_one(stage, name, value, meta, persist)
            for name, value in entities.items()
        }
        return refs if layout == "entities" else next(iter(refs.values()))

    def _store_one(
        self, stage: str, entity: str, value: Any, meta: dict[str, Any], persist: bool
    ) -> str:
        if not persist:
            return str(self._memory_store(stage).put(entity, value, meta).uri)
        if self.persistence == "database" and values.json_problem(value) is None:
            text = json.dumps(value)
            if len(text.encode()) <= INLINE_MAX_BYTES:
                item_id = self.catalog.record_item(
                    self.process_id,
                    stage,
                    entity,
                    inline_data=value,
                    metadata={**meta, "_kind": values.JSON},
                    format="json",
                    phase=stage,
                )
                return f"inline:{item_id}"
        ref: Ref = self._file_store(stage).put(entity, value, meta, format=self._file_format(value))
        return str(ref.path)

    def _drop_stage(self, stage: str) -> None:
        """Forget what this run stored for ``stage`` (memory, files, inline rows)."""
        memory = self._memory.get(stage)
        if memory is not None:
            for ref in memory.list():
                memory.delete(ref.key)
        files = self._files.get(stage)
        if files is not None:
            for ref in files.list():
                files.delete(ref.key)
        inline = [
            row.id
            for row in self.catalog.list_items(self.process_id, stage=stage)
            if row.storage_type == "inline"
        ]
        if inline:
            self.catalog.remove_items(inline)

    # ---------------------------------------------------------------- retrieve

    def retrieve_stage_data(self, stage_name: str, process_id: Optional[str] = None) -> Any:
        """The data stored for ``stage_name`` by this run (or by run ``process_id``)."""
        pid = process_id or self.process_id
        rows = self.catalog.list_items(pid, stage=stage_name)
        if not rows:
            raise UnknownKey(f"no data for stage {stage_name!r} in process {pid!r}")
        latest: dict[str, ItemRow] = {}
        for row in rows:
            latest[row.entity_name] = row
        data = {entity: self._load(row) for entity, row in latest.items()}
        if any(row.metadata.get(LAYOUT_KEY) == "entities" for row in latest.values()):
            return data
        return next(iter(data.values()))

    def _load(self, row: ItemRow) -> Any:
        if row.storage_type == "inline":
            return row.inline_data
        reference = row.data_reference or ""
        if reference.startswith("memory://"):
            store = self._memory.get(row.stage_name) if row.process_id == self.process_id else None
            if store is None:
                raise UnknownKey(
                    f"{row.label} was held in memory by process {row.process_id!r} and not "
                    "persisted; use storage_strategy.mode: persist (or "
                    "persist_intermediate_results: true) to keep it"
                )
            return store.get(row.entity_name)
        path = row.path
        if path is None:
            raise UnknownKey(f"{row.label}: {reference!r} is neither inline, memory nor a file")
        own = self._files.get(row.stage_name) if row.process_id == self.process_id else None
        if own is not None:
            return own.get(row.entity_name)
        with FileStore(path.parent, allow_pickle=self.allow_pickle) as store:
            return store.get(row.entity_name)  # type: ignore[attr-defined]

    # ---------------------------------------------------------------- discovery

    def list_available_data(
        self, filters: Optional[Mapping[str, Any]] = None
    ) -> list[dict[str, Any]]:
        """Rows of the stored stage data (every run unless filtered), oldest first.

        ``filters``: ``process_id``, ``stage_name`` (or ``stage``), ``entity_name`` (or
        ``entity``), ``since`` (a datetime or ISO text), ``storage_type``, and any other key
        as a metadata filter (dotted paths such as ``metrics.rows``)."""
        f = dict(filters or {})
        storage_type = f.pop("storage_type", None)
        rows = self.catalog.list_items(
            f.pop("process_id", None),
            f.pop("stage_name", f.pop("stage", None)),
            f.pop("entity_name", f.pop("entity", None)),
            f.pop("since", None),
            f.pop("metadata", None) or f or None,
        )
        out = []
        for row in rows:
            if storage_type is not None and row.storage_type != storage_type:
                continue
            entry = {k: getattr(row, k) for k in _LISTED}
            entry["metadata"] = {k: v for k, v in row.metadata.items() if not k.startswith("_")}
            out.append(entry)
        return out

    # ---------------------------------------------------------------- lifecycle

    def cleanup(self, policy: Optional[str] = None) -> dict[str, Any]:
        """Apply a cleanup policy (default: the configured one): the catalog's policy over
        the finished runs of this project (``project_name``), and with ``keep_none`` this run's stage data too (stages in
        ``stages_to_persist`` are always kept). Returns what was removed."""
        policy = policy or self.cleanup_policy
        if policy not in CLEANUP_POLICIES:
            raise InvalidArgument(
                f"cleanup policy {policy!r} is not valid; allowed: {', '.join(CLEANUP_POLICIES)}"
            )
        report = self.catalog.cleanup(
            policy, list(self.stages_to_persist), workflow=self.project_name
        )
        removed = report.removal.removed if report.removal else []
        freed = report.removal.freed_bytes if report.removal else 0
        released: list[str] = []
        if policy == "keep_none":
            stages = {row.stage_name for row in self.catalog.list_items(self.process_id)}
            for stage in sorted(stages - set(self.stages_to_persist)):
                freed += sum(
                    r.size_bytes for r in self.catalog.list_items(self.process_id, stage=stage)
                )
                self._drop_stage(stage)
                released.append(stage)
        return {
            "policy": policy,
            "removed_items": len(removed),
            "freed_bytes": freed,
            "released_stages": released,
            "kept_runs": report.kept_runs,
        }

    def close(self, status: str = "completed", *, cleanup: bool = True) -> None:
        """Finish this run, release its memory, apply the configured cleanup policy."""
        for store in self._memory.values():
            store.close()
        self._memory.clear()
        if self._hybrid is not None:
            self._hybrid.close()
            self._hybrid = None
        for files in self._files.values():
            files.close()
        self._files.clear()
        self._link.finish(status)
        try:
            if cleanup and self.cleanup_policy != "keep_all":
                self.catalog.cleanup(
                    self.cleanup_policy, list(self.stages_to_persist), workflow=self.project_name
                )
        finally:
            self._link.close(status)

    def __enter__(self) -> BaseDataContainer:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        self.close("completed" if exc_type is None else "failed")


__all__ = ["PERSISTENCE", "BaseDataContainer"]
