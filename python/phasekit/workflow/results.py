"""Where a phase's results go, each stored item recorded in the catalog::

    <results_dir>/<run>/<phase>/[<window>/]{containers.<ext>, trades.<ext>, equity.<ext>}
    <base_path>/<run>/<phase>/[<window>/]containers/<container_id>_results.<ext>
    <base_path>/<run>/<phase>/[<window>/]containers/<container_id>_equity.<ext>
    <results_dir>/<run>/<phase>/[<window>/]{all_trades.<ext>, aggregate_results.json,
                                             window_complete.json}
    <results_dir>/<run>/<phase>/{phase_summary.json, selected_parameters.json}

A block window's tables and its blocks' catalog rows are written by
:class:`~phasekit.workflow.blocktables.BlockTables` (``PhaseResults.blocks``), its completed
blocks kept for a resumed run by :class:`~phasekit.workflow.blockparts.BlockParts`
(``PhaseResults.parts``). A window run one container
at a time (``engine: container``) writes each container's items and ``all_trades``.

A container's results go through the store of the container's own resolved data flow
(:class:`ContainerPlan`, from :func:`phasekit.stores.factory.open_store`): ``file``
writes the files above in ``file_settings.format`` (JSON as a mapping, every other
format as a one-row table: ``container_id``, ``window_id``, ``param.<name>`` and one
column per metric); ``memory`` keeps them in a MemoryStore; ``hybrid`` keeps them in
memory under the phase's budget (and the container's own ``memory_limit_mb`` as a child
budget) and spills the least recently used; ``streaming`` hands them to a StreamStore
that persists them in the background (and, through ``tap``, to the phases consuming
them while this one runs). With ``persist`` (file mode,
``persistence.save_all_phases``, ``save_final_only`` on a final phase, or the
container's ``persistence.on_completion``) results kept in memory are also written to
files in ``persistence.format``.

The phase's ``output`` list says what is written at all: ``container_results``,
``equity_curves``, ``trades``, ``aggregate_metrics``, ``selected_parameters``,
``container_items``.

Role containers of design note 001: when a ``containers:`` pattern selects ``data``,
the bars the phase runs on are stored through its flow; ``features``, the indicator
columns the strategies compute; ``execution``, each window's fills (``all_trades``).
Without such a pattern the bars and features are not stored and the trades are a phase
file in the phase's file format.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import pyarrow as pa

import phasekit
from phasekit.crypt import Encryption, open_encryption
from phasekit.errors import InvalidArgument
from phasekit.paths import make_private, make_private_dir
from phasekit.stores import FileStore, HybridStore, StreamStore
from phasekit.stores.durable import json_default, write_json
from phasekit.stores.factory import (
    AnyStore,
    DataFlow,
    StorePlace,
    open_file_store,
    open_persist_store,
    open_store,
)
from phasekit.stores.formats.arrow import ipc_file_bytes
from phasekit.stores.partset import is_part_set, read_part_set
from phasekit.stores.sealed import arrow_buffer, read_plain, write_sealed_bytes
from phasekit.workflow.admf import AdmfFiles, container_record, file_name, trade_records
from phasekit.workflow.blockparts import BlockParts
from phasekit.workflow.blocktables import BlockTables
from phasekit.workflow.topology import TRADES_SCHEMA

log = logging.getLogger(__name__)

OUTPUTS = (
    "container_results",
    "aggregate_metrics",
    "trades",
    "equity_curves",
    "selected_parameters",
)
STREAM_KEY = "container_results"
"""The stream a window's container results go to in ``streaming`` mode."""
StreamTap = Callable[[Optional[str], StreamStore], None]
"""Called before each container result goes into a window's stream store (the window
and the store): how phases consuming this one subscribe while it runs."""
ROLE_CONTAINERS = ("data", "features", "execution")
"""The role containers a ``containers:`` pattern can select besides portfolios."""


def jsonable(value: Any) -> Any:
    """Plain JSON values: NaN and infinities become None, numpy scalars Python numbers."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def snapshots(equity: Optional[pa.Table], interval: int) -> Optional[pa.Table]:
    """Every ``interval``-th point of an equity curve (the ``interval``-th, the
    ``2 * interval``-th...), as the source project's tracer snapshots it."""
    if equity is None or interval <= 1:
        return equity
    return equity.take(pa.array(range(interval - 1, equity.num_rows, interval), pa.int64()))


def result_row(results: Mapping[str, Any], window_id: Optional[str]) -> pa.Table:
    """A container's results as a one-row table: its id and window, ``param.<name>``
    per parameter, one column per metric, other scalars as they are (anything else as
    JSON text)."""
    row: dict[str, Any] = {"container_id": results.get("container_id"), "window_id": window_id}
    for key, value in results.items():
        if key in ("container_id", "window_id"):
            continue
        if key == "parameters" and isinstance(value, Mapping):
            row.update({f"param.{k}": v for k, v in value.items()})
        elif key == "metrics" and isinstance(value, Mapping):
            row.update(value)
        elif value is None or isinstance(value, (bool, int, float, str)):
            row[key] = value
        else:
            row[key] = json.dumps(jsonable(value), sort_keys=True)
    return pa.Table.from_pylist([jsonable(row)])


@dataclass(frozen=True)
class ContainerPlan:
    """How one container's results are kept: the store of its ``flow``; a hybrid child
    budget of ``budget_bytes`` (its own ``memory_limit_mb``); ``persist``: also written
    to files when the store keeps them in memory."""

    flow: DataFlow
    budget_bytes: Optional[int] = None
    persist: bool = False
    snapshot_interval: int = 1
    """Every how many equity points one is stored."""


class PhaseResults:
    """Writes one phase's results and records every stored item in the catalog."""

    def __init__(
        self,
        run_dir: Path,
        run_id: str,
        phase: str,
        flow: DataFlow,
        catalog: Any,
        *,
        plan: Optional[Callable[[str], ContainerPlan]] = None,
        plans: Optional[Callable[[Sequence[str]], list[ContainerPlan]]] = None,
        role_plan: Optional[Callable[[str], Optional[ContainerPlan]]] = None,
        outputs: tuple[str, ...] = OUTPUTS,
        allow_pickle: bool = False,
        base_path: Optional[str] = None,
        tap: Optional[StreamTap] = None,
        encryption: Optional[Encryption] = None,
    ) -> None:
        self.run_id, self.phase, self.flow = run_id, phase, flow
        self.encryption = encryption
        self.tap = tap
        self.phase_dir = run_dir / phase
        self.store_dir = Path(base_path or run_dir.parent) / run_id / phase
        self.catalog = catalog
        self.outputs = frozenset(outputs)
        self.allow_pickle = allow_pickle
        self._plan = plan or (lambda _cid: ContainerPlan(flow))
        self._plans = plans or (lambda ids: [self._plan(cid) for cid in ids])
        self._role_plan = role_plan or (lambda _role: None)
        self._stores: dict[tuple[str, str, Any], AnyStore] = {}
        self._views: dict[tuple[str, str], HybridStore] = {}
        self._trade_writers: dict[str, Any] = {}
        self._trade_tables: dict[str, list[pa.Table]] = {}
        self._streams: dict[str, list[StreamStore]] = {}
        self._admf: Optional[AdmfFiles] = None
        self.worker_parts = False
        """The run's blocks run on a cluster whose workers may write their window tables'
        parts (set by the run for a ``dask`` or ``ray`` executor;
        :attr:`BlockTables.part_mode`)."""
        self._reserved: dict[str, int] = {}
        self.blocks = BlockTables(self)
        self.parts = BlockParts(self.window_dir, run_id, phase, catalog, encryption)

    @property
    def mode(self) -> str:
        return self.flow.mode

    def reserve(self, window_id: Optional[str], nbytes: int) -> None:
        """Hold ``nbytes`` of the phase's memory budget back from where window
        ``window_id``'s blocks' tables are held (what the window holds outside it: its
        blocks in flight); it takes effect when that place is created, at the window's
        first block (``BlockTables._parts_view``)."""
        self._reserved[window_id or ""] = max(0, int(nbytes))

    def reserved(self, window_id: Optional[str]) -> int:
        """The bytes :meth:`reserve` holds back for window ``window_id``."""
        return self._reserved.get(window_id or "", 0)

    @property
    def budget_bytes(self) -> Optional[int]:
        """The phase's memory budget where its flow keeps results in memory (``memory``,
        ``hybrid``); None for the others."""
        return self.flow.memory_limit_bytes if self.flow.mode in ("memory", "hybrid") else None

    # ------------------------------------------------------------------ stores

    def window_dir(self, window_id: Optional[str]) -> Path:
        """The window's folder of phase files (the phase's with None)."""
        return self.phase_dir / window_id if window_id else self.phase_dir

    def _store_dir(self, window_id: Optional[str]) -> Path:
        return self.store_dir / window_id if window_id else self.store_dir

    def _recorder(self, window_id: Optional[str], container_id: Optional[str] = None) -> Any:
        from phasekit.catalog import CatalogRecorder

        return CatalogRecorder(
            self.catalog,
            self.run_id,
            self.phase,
            window_id=window_id,
            stage_name=self.phase,
            container_id=container_id,
        )

    def _place(
        self, folder: Path, window_id: Optional[str], namespace: tuple[str, ...] = ()
    ) -> StorePlace:
        return StorePlace(
            folder,
            self.run_id,
            self.phase,
            self._recorder(window_id),
            self.allow_pickle,
            namespace=namespace,
            encryption=self.encryption,
        )

    def store(self, window_id: Optional[str], flow: Optional[DataFlow] = None) -> AnyStore:
        """The container store of a window for a data flow (the phase's by default),
        created on first use."""
        flow = flow or self.flow
        key = (window_id or "", flow.mode, _store_key(flow))
        store = self._stores.get(key)
        if store is None and flow.mode == "hybrid" and window_id:
            # one budget for the phase: a window's store is a view of the phase's
            root = self.store(None, flow)
            assert isinstance(root, HybridStore)
            store = self._stores[key] = root.container(window_id, flow.memory_limit_bytes)
            store.recorder = self._recorder(window_id)  # its items are the window's
        elif store is None:
            folder = self._store_dir(window_id) / "containers"
            # a window's memory or stream store is named after it: two windows' items
            # (the same container ids in train and test; each window's stream) have
            # two URIs
            named = flow.mode in ("memory", "streaming")
            names = (window_id,) if window_id and named else ()
            store = self._stores[key] = open_store(flow, self._place(folder, window_id, names))
        return store

    def persist_store(self, window_id: Optional[str], flow: DataFlow) -> FileStore:
        key = (window_id or "", "persist", (flow.persistence.format, _store_key(flow)))
        store = self._stores.get(key)
        if store is None:
            folder = self._store_dir(window_id) / "containers"
            store = self._stores[key] = open_persist_store(flow, self._place(folder, window_id))
        assert isinstance(store, FileStore)
        return store

    def _container_store(
        self, window_id: Optional[str], container_id: str, plan: ContainerPlan
    ) -> AnyStore:
        store = self.store(window_id, plan.flow)
        if plan.budget_bytes is None or not isinstance(store, HybridStore):
            return store
        view = self._views.get((window_id or "", container_id))
        if view is None:
            view = self._views[(window_id or "", container_id)] = store.container(
                container_id, plan.budget_bytes
            )
        return view

    # ------------------------------------------------------------------ containers

    def put_container(
        self,
        window_id: Optional[str],
        container_id: str,
        results: Mapping[str, Any],
        equity: Optional[pa.Table],
        metrics: Optional[dict[str, Any]] = None,
        *,
        trades: Optional[pa.Table] = None,
    ) -> dict[str, Any]:
        """Store one destroyed container's results (and equity curve) through the store of
        its plan; returns the URIs of what was stored. ``metrics``: the results' metrics as
        plain JSON already (the caller keeps the same dict, so the items' metadata and the
        caller's summary share one copy). With ``results.layout: admf`` the container's
        ``<id>_results.json`` (with its ``trades``) is written too."""
        plan = self._plan(container_id)
        equity = snapshots(equity, plan.snapshot_interval)
        mode = plan.flow.mode
        meta = {
            "container_id": container_id,
            "window_id": window_id,
            "output_type": "container_results",
            "metrics": jsonable(results.get("metrics", {})) if metrics is None else metrics,
        }
        clean = jsonable(results)
        uris: dict[str, Any] = {}
        if "container_results" in self.outputs:
            store = self._container_store(window_id, container_id, plan)
            key = STREAM_KEY if mode == "streaming" else f"{container_id}_results"
            if self.tap is not None and isinstance(store, StreamStore):
                self.tap(window_id, store)
            ref = store.put(key, self._record(store, clean, window_id), meta)
            if isinstance(store, StreamStore):
                streams = self._streams.setdefault(window_id or "", [])
                if store not in streams:
                    streams.append(store)
            uris["results"] = ref.uri
            if plan.persist and mode in ("memory", "hybrid"):
                persist = self.persist_store(window_id, plan.flow)
                uris["persisted"] = persist.put(
                    f"{container_id}_results", self._record(persist, clean, window_id), meta
                ).uri
        if equity is not None and "equity_curves" in self.outputs:
            uris["equity_curve"] = self._put_equity(window_id, container_id, plan, equity, meta)
        if self._admf is not None:
            uris["admf"] = self._put_admf(
                self._admf, window_id, container_id, results, trades, equity
            )
        return uris

    def plan(self, container_id: str) -> ContainerPlan:
        """The plan of a container's results."""
        return self._plan(container_id)

    def plans(self, container_ids: Sequence[str]) -> list[ContainerPlan]:
        """The plans of containers' results (one object for the containers the same
        patterns match)."""
        return self._plans(container_ids)

    @property
    def writes_admf(self) -> bool:
        """The phase also writes ``results.layout: admf`` files (:meth:`use_admf`)."""
        return self._admf is not None

    # ------------------------------------------------------------------ admf layout

    def use_admf(self, folder: Path, initial_capital: float) -> None:
        """Also write the source project's files (``results.layout: admf``, see
        :mod:`phasekit.workflow.admf`) in ``folder``, the phase's folder there."""
        self._admf = AdmfFiles(folder, initial_capital)

    def _put_admf(
        self,
        admf: AdmfFiles,
        window_id: Optional[str],
        container_id: str,
        results: Mapping[str, Any],
        trades: Optional[pa.Table],
        equity: Optional[pa.Table],
    ) -> str:
        record = container_record(
            results,
            trades if "trades" in self.outputs else None,
            equity if "equity_curves" in self.outputs else None,
            admf.initial_capital,
        )
        name = file_name(container_id, window_id)
        admf.aggregate.add(name, record)
        if trades is not None and trades.num_rows and "trades" in self.outputs:
            admf.trades.append(trades)
        path = admf.folder / "containers" / f"{name}_results.json"
        return self._json_file(path, f"admf_{name}_results", window_id, jsonable(record), None)

    def finish_admf(self, event_tracing: bool) -> dict[str, str]:
        """The phase's ``aggregate_results.json``, ``all_trades.json`` (when it has trades)
        and ``phase_summary.json`` in the source project's folder; returns their URIs."""
        admf = self._admf
        if admf is None:
            return {}
        agg = admf.aggregate
        uris = {
            "admf_aggregate_results": self._json_file(
                admf.folder / "aggregate_results.json",
                "admf_aggregate_results",
                None,
                jsonable(agg.aggregate_results()),
                None,
            )
        }
        if admf.trades:
            rows = jsonable(trade_records(pa.concat_tables(admf.trades)))
            uris["admf_all_trades"] = self._json_file(
                admf.folder / "all_trades.json", "admf_all_trades", None, rows, None
            )
        summary = jsonable(agg.phase_summary(self.phase, self.flow.mode, event_tracing))
        uris["admf_phase_summary"] = self._json_file(
            admf.folder / "phase_summary.json", "admf_phase_summary", None, summary, None
        )
        return uris

    def _record(self, store: AnyStore, results: dict[str, Any], window_id: Optional[str]) -> Any:
        """The value a store keeps for a container's results: the mapping, or a one-row
        table for a file format other than JSON and pickle."""
        if not isinstance(store, FileStore):
            return results
        fmt = store.formats.get("container_results", store.format.name)
        return results if fmt in ("json", "pickle") else result_row(results, window_id)

    def _put_equity(
        self,
        window_id: Optional[str],
        container_id: str,
        plan: ContainerPlan,
        equity: pa.Table,
        meta: Mapping[str, Any],
    ) -> str:
        meta = {**meta, "output_type": "equity_curves"}
        key = f"{container_id}_equity"
        if plan.flow.mode == "streaming":
            place = self._place(self._store_dir(window_id) / "containers", window_id)
            with open_file_store(plan.flow.file, place) as files:
                return files.put(key, equity, meta).uri
        store = self._container_store(window_id, container_id, plan)
        uri = store.put(key, equity, meta).uri
        if plan.persist and plan.flow.mode in ("memory", "hybrid"):
            self.persist_store(window_id, plan.flow).put(key, equity, meta)
        return uri

    # ------------------------------------------------------------------ roles

    def has_role(self, role: str) -> bool:
        """A pattern selects the role container ``role``."""
        return self._role_plan(role) is not None

    def put_role(self, role: str, key: str, table: pa.Table) -> Optional[str]:
        """Store a role container's item (``data``: the bars; ``features``: indicators)
        through the flow its pattern gives it; None when no pattern selects the role."""
        plan = self._role_plan(role)
        if plan is None:
            return None
        store = self.store(None, plan.flow)
        meta = {"container_id": role, "output_type": role}
        return store.put(f"{role}_{key}", table, meta).uri

    # ------------------------------------------------------------------ trades

    def add_trades(self, window_id: Optional[str], table: pa.Table) -> None:
        """Add trades to the window's ``all_trades``: streamed batch by batch to an Arrow
        file, or gathered for the window's end in another format or store."""
        if "trades" not in self.outputs:
            return
        key = window_id or ""
        streamed = self.encryption is None and self.flow.file.format == "arrow"
        if self._role_plan("execution") is None and streamed:
            writer = self._trade_writers.get(key)
            if writer is None:
                writer = self._trade_writers[key] = self.window_writer(
                    window_id, "all_trades", TRADES_SCHEMA
                )
            if table.num_rows:
                writer.write(table)
            return
        self._trade_tables.setdefault(key, []).append(table)

    def _finish_trades(self, window_id: Optional[str]) -> Optional[str]:
        key = window_id or ""
        writer = self._trade_writers.pop(key, None)
        if writer is not None:
            return self.close_writer(window_id, writer, "all_trades", {})
        tables = self._trade_tables.pop(key, None)
        if tables is None:
            return None
        trades = pa.concat_tables(tables) if tables else TRADES_SCHEMA.empty_table()
        meta = {"rows": trades.num_rows, "output_type": "trades"}
        return self.put_window_file(window_id, "all_trades", trades, meta, trades=True)

    def window_writer(self, window_id: Optional[str], name: str, schema: pa.Schema) -> Any:
        """A writer of ``<name>.arrow`` in the window's folder, batch by batch in the
        phase's file compression (closed by :meth:`close_writer`)."""
        folder = self.window_dir(window_id)
        make_private_dir(folder)
        return phasekit.IpcWriter(
            str(folder / f"{name}.arrow"), schema=schema, compression=self.flow.file.compression
        )

    def close_writer(
        self, window_id: Optional[str], writer: Any, entity: str, meta: Mapping[str, Any]
    ) -> str:
        """Close a :meth:`window_writer`'s file and record it as ``entity`` (its ``rows``
        and ``meta`` as metadata); returns its URI."""
        info = writer.close()
        path = Path(info["path"])
        make_private(path)
        metadata = {"rows": info["rows"], **meta}
        return self._record_file(path, entity, window_id, info, None, "arrow", metadata)

    def record_part_set(
        self,
        window_id: Optional[str],
        name: str,
        folder: Path,
        size_bytes: int,
        checksum: str,
        meta: Mapping[str, Any],
    ) -> str:
        """Record a committed part set (:mod:`phasekit.stores.partset`) as the window's
        table ``name``; returns its URI."""
        info = {"size_bytes": size_bytes, "checksum": checksum}
        return self._record_file(folder, name, window_id, info, None, "arrow", meta)

    def put_window_file(
        self,
        window_id: Optional[str],
        name: str,
        table: pa.Table,
        meta: Mapping[str, Any],
        *,
        trades: bool = False,
    ) -> str:
        """Write a window's table ``name`` in the phase's file format and record it;
        ``trades``: through the ``execution`` role's store instead when a pattern selects
        it. Returns its URI."""
        plan = self._role_plan("execution") if trades else None
        if plan is not None:
            return self.store(window_id, plan.flow).put(name, table, meta).uri
        with self.window_files(window_id) as files:
            return files.put(name, table, meta).uri

    def window_files(self, window_id: Optional[str]) -> FileStore:
        """A file store of the window's folder in the phase's file settings."""
        return open_file_store(self.flow.file, self._place(self.window_dir(window_id), window_id))

    # ------------------------------------------------------------------ phase files

    def write_table(self, window_id: Optional[str], name: str, table: pa.Table) -> str:
        """Write ``<name>.arrow`` in the window's folder (the phase's with None) and
        record it; returns its URI."""
        return self._write_table(
            self.window_dir(window_id) / f"{name}.arrow", table, name, window_id
        )

    def read_table(self, uri: str) -> pa.Table:
        """A table this run wrote (an Arrow IPC file, by its URI; decrypted if need be)."""
        from phasekit.catalog import uri_to_path

        path = uri_to_path(uri)
        if path is None:
            raise InvalidArgument(f"{uri!r} is not a file this run wrote (a file:// URI)")
        return read_arrow(path, self.encryption)

    def _write_table(
        self,
        path: Path,
        table: pa.Table,
        entity: str,
        window_id: Optional[str],
        container_id: Optional[str] = None,
    ) -> str:
        make_private_dir(path.parent)
        if self.encryption is not None:
            what = f"writing {path.name} of phase {self.phase}"
            data = ipc_file_bytes(table, "lz4")
            size, checksum = write_sealed_bytes(path, data, self.encryption, what)
            info: Mapping[str, Any] = {"size_bytes": size, "checksum": checksum}
            return self._record_file(path, entity, window_id, info, container_id, "arrow")
        with phasekit.IpcWriter(str(path), schema=table.schema, compression="lz4") as writer:
            if table.num_rows:
                writer.write(table)
            info = writer.close()
        make_private(path)
        return self._record_file(Path(info["path"]), entity, window_id, info, container_id, "arrow")

    def _record_file(
        self,
        path: Path,
        entity: str,
        window_id: Optional[str],
        info: Mapping[str, Any],
        container_id: Optional[str],
        fmt: str,
        metadata: Optional[Mapping[str, Any]] = None,
    ) -> str:
        uri = path.resolve().as_uri()
        self.catalog.record_item(
            self.run_id,
            self.phase,
            entity,
            data_reference=uri,
            metadata=dict(metadata or {}),
            size_bytes=int(info["size_bytes"]),
            checksum=info["checksum"],
            format=fmt,
            phase=self.phase,
            window_id=window_id,
            container_id=container_id,
            storage_type="reference",
            replace=True,  # a file written again (on --resume) replaces its row
            key_id=self.encryption.key_id if self.encryption is not None else None,
        )
        return uri

    def write_json(
        self,
        window_id: Optional[str],
        name: str,
        obj: Any,
        metadata: Optional[Mapping[str, Any]] = None,
        clean: bool = False,
    ) -> str:
        """Write ``<name>.json`` in the window's folder and record it; ``clean``: ``obj``
        holds plain JSON values already (no copy through :func:`jsonable`)."""
        path = self.window_dir(window_id) / f"{name}.json"
        return self._json_file(path, name, window_id, obj if clean else jsonable(obj), metadata)

    def _json_file(
        self,
        path: Path,
        entity: str,
        window_id: Optional[str],
        value: Any,
        metadata: Optional[Mapping[str, Any]],
    ) -> str:
        """Write ``value`` (plain JSON values) at ``path`` atomically and record it as
        ``entity``."""
        make_private_dir(path.parent)
        what = f"writing {path.name} of phase {self.phase}"
        if self.encryption is not None:
            text = json.dumps(value, indent=1, sort_keys=True, default=json_default).encode()
            size, checksum = write_sealed_bytes(path, text, self.encryption, what)
            info = {"size_bytes": size, "checksum": checksum}
            return self._record_file(path, entity, window_id, info, None, "json", metadata)
        checksum = write_json(path, value, what)
        info = {"size_bytes": path.stat().st_size, "checksum": checksum}
        return self._record_file(path, entity, window_id, info, None, "json", metadata)

    def finish_window(self, window_id: Optional[str]) -> Optional[str]:
        """Finish the window's container streams (streaming mode) and its trades; both
        are recorded. Returns the trades' URI (None when none were written)."""
        for store in self._streams.pop(window_id or "", []):
            store.finish(STREAM_KEY)
        self.blocks.finish(window_id)
        return self._finish_trades(window_id)

    def stats(self) -> dict[str, Any]:
        return {f"{w or '-'}/{m}": store.stats() for (w, m, _), store in self._stores.items()}

    def close(self) -> None:
        for writer in self._trade_writers.values():
            writer.abort()
        self._trade_writers.clear()
        self._trade_tables.clear()
        self.blocks.close()
        for store in reversed(list(self._stores.values())):  # hybrid views before their root
            store.close()


def _store_key(flow: DataFlow) -> Any:
    """What tells two flows' stores apart within a mode."""
    file = flow.file
    return (
        file.format,
        file.compression,
        tuple(file.partition_by),
        flow.memory_limit_bytes,
        flow.streaming.buffer_size,
        flow.streaming.flush_interval,
        tuple(sorted(flow.persistence.formats.items())),
    )


def read_json(path: Path, encryption: Optional[Encryption] = None) -> Any:
    """A JSON file a run wrote (decrypted with ``encryption`` when it is encrypted)."""
    plain = read_plain(path, encryption, f"results file {path}")
    if plain is not None:
        return json.loads(plain)
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def read_arrow(path: Path, encryption: Optional[Encryption] = None) -> pa.Table:
    """An Arrow IPC file a run wrote (decrypted with ``encryption`` when it is encrypted),
    or a part set of them."""
    import pyarrow.feather as feather

    if is_part_set(path):  # a table of Arrow parts (:mod:`phasekit.stores.partset`)
        return read_part_set(path, f"results table {path}")
    plain = read_plain(path, encryption, f"results file {path}", arrow_buffer)
    if plain is not None:
        return pa.ipc.open_file(pa.py_buffer(plain)).read_all()
    return feather.read_table(path)


def run_encryption(target: Any) -> Optional[Encryption]:
    """The encryption of a resolved configuration's ``encryption`` (an ``EncryptionTarget``
    or its ``to_dict()`` as a run records it): its master key loaded, or None when off."""
    enabled = target.get("enabled") if isinstance(target, Mapping) else target.enabled
    key = target.get("key") if isinstance(target, Mapping) else target.key
    return open_encryption(key) if enabled else None
