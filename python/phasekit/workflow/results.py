"""Where a phase's results go, each stored item recorded in the catalog::

    <results_dir>/<run>/<phase>/[<window>/]{containers.<ext>, trades.<ext>, equity.<ext>}
    <base_path>/<run>/<phase>/[<window>/]containers/<container_id>_results.<ext>
    <base_path>/<run>/<phase>/[<window>/]containers/<container_id>_equity.<ext>
    <results_dir>/<run>/<phase>/[<window>/]{all_trades.<ext>, aggregate_results.json,
                                             window_complete.json}
    <results_dir>/<run>/<phase>/{phase_summary.json, selected_parameters.json}

A block window (:mod:`phasekit.workflow.blocks`, :meth:`PhaseResults.put_block`) writes
its containers' rows, trades and traced equity curves as the three window tables (a
Monte Carlo window: its simulations' rows, no trades or curves) and a
catalog row per block (its marker) that carries the block's containers as columns:
their ids, their metrics and where their rows of the ``containers`` item are
(:mod:`phasekit.catalog.blockrows`). Where
the tables go follows the phase's data flow (:func:`window_table_store`): ``file`` and
``streaming``: files in the phase's file format (Arrow streamed block by block);
``memory``: ``containers`` and ``equity`` are items of the window's MemoryStore (no
files); ``hybrid``: items of the window's view of the phase's HybridStore, each block's
part put into the store as it comes (spilled past the phase's budget) and joined at
the window's end (:meth:`HybridStore.join`: on disk, part by part, when over it); ``trades`` is a file in every mode, as ``all_trades`` is. A table
kept in memory is also written to files when the phase persists. Each container's own
items are written only with the output ``container_items`` or where
``results.layout: admf`` or a ``streaming`` flow needs them (the stream store takes
each container's results; its rows are then those items', and the block's row has no
columns). A window run one container
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
import os
import shutil
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

import phasekit
from phasekit.crypt import Encryption, open_encryption
from phasekit.errors import InvalidArgument, PhasekitError
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
from phasekit.stores.ref import Ref, file_uri
from phasekit.stores.sealed import arrow_buffer, read_plain, write_sealed_bytes
from phasekit.workflow.admf import PhaseAggregate, container_record, file_name, trade_records
from phasekit.workflow.blocks import (
    BOOTSTRAP_SEQUENCES,
    BlockJob,
    BlockOutcome,
    container_results,
    identity_groups,
    read_stream,
)
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
        self._block_tables: dict[str, dict[str, list[pa.Table]]] = {}
        self._part_views: dict[str, HybridStore] = {}
        self._block_parts: dict[str, dict[str, list[tuple[Ref, int]]]] = {}
        self._block_writers: dict[str, dict[str, tuple[Any, pa.Schema]]] = {}
        self._block_rows: dict[str, int] = {}
        self._table_uris: dict[str, str] = {}
        self._persist_tables: set[str] = set()

    @property
    def mode(self) -> str:
        return self.flow.mode

    # ------------------------------------------------------------------ stores

    def _dir(self, window_id: Optional[str]) -> Path:
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

    def _persist_store(self, window_id: Optional[str], flow: DataFlow) -> FileStore:
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
                persist = self._persist_store(window_id, plan.flow)
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

    # ------------------------------------------------------------------ blocks

    def plan(self, container_id: str) -> ContainerPlan:
        """The plan of a container's results."""
        return self._plan(container_id)

    def put_block(
        self,
        window_id: Optional[str],
        block: BlockRows,
        reused: bool = False,
    ) -> dict[str, np.ndarray]:
        """Store a block's rows: the window's ``containers``, ``trades`` and ``equity``
        tables (written at the window's end; no ``trades`` or ``equity`` for a block
        without them, see :class:`BlockRows`) and one catalog row for the block (entity
        ``block_<index>``, what a resumed run reuses the block by) that carries its
        containers as columns (their ids, metrics, and where their rows of the window's
        ``containers`` table are; see :mod:`phasekit.catalog.blockrows`); the containers
        whose own items are wanted (:func:`items_wanted`: all of them with output
        ``container_items`` or ``results.layout: admf``, else those whose own flow is
        ``streaming``) get those through their stores instead, and are not among the
        block row's columns (with none left, it has none). A ``reused`` block (its row recorded
        by an earlier attempt) records none. Returns the block's metrics as float64
        columns (:func:`metric_columns`)."""
        from phasekit.catalog.blockrows import ROWS_KEY

        key = window_id or ""
        job = block.job
        trades = None if block.trades is None else _trades_table(block.trades, job.symbol)
        plans = self._plans(job.container_ids)
        if _per_plan(plans, lambda p: bool(p.persist), bool).any():
            self._persist_tables.add(key)
        if "container_results" in self.outputs:
            self._add_table(window_id, "containers", block.results)
        if trades is not None and "trades" in self.outputs:
            self._add_table(window_id, "trades", trades)
        if block.curves is not None and "equity_curves" in self.outputs:
            intervals = _per_plan(plans, lambda p: int(p.snapshot_interval), np.int64)
            equity = _equity_table(block.curves, block.ts, job.container_ids, intervals)
            if equity.num_rows:
                self._add_table(window_id, "equity", equity)
        first = self._block_rows.get(key, 0)
        self._block_rows[key] = first + block.results.num_rows
        names = metric_names(block.results.schema.names)
        items = self._items_wanted(plans)
        if items.any():
            metrics = _plain_rows(block.results.select(names))
            self._put_items(window_id, block, trades, metrics, np.flatnonzero(items))
        columns = None
        if "container_results" in self.outputs and not items.all():
            uri = self._table_uri(window_id, block.results)
            rows = np.flatnonzero(~items)
            columns = {"table": "containers", "uri": uri, "first_row": first}
            table = block.results.select(names)
            columns["columns"] = {
                "container_id": np.asarray(job.container_ids, dtype=str)[rows],
                **_json_columns(table if not items.any() else table.take(rows)),
            }
            if items.any():  # the others' rows of the table
                columns[ROWS_KEY] = (rows + first).tolist()
        if not reused:
            self.catalog.record_items([self._marker(window_id, job, columns)])
        return metric_columns(block.results)

    def _marker(
        self, window_id: Optional[str], job: BlockJob, columns: Optional[Mapping[str, Any]]
    ) -> Any:
        """A block's catalog row: its marker (``inline_data``: :func:`block_marker`) and,
        with ``columns``, its containers."""
        from phasekit.catalog.blockrows import BLOCK_OUTPUT
        from phasekit.catalog.rows import NewItem

        return NewItem(
            process_id=self.run_id,
            stage_name=self.phase,
            entity_name=block_entity(job.index),
            inline_data=block_marker(job),
            metadata={"output_type": BLOCK_OUTPUT, "window_id": window_id, **(columns or {})},
            phase=self.phase,
            window_id=window_id,
            storage_type="inline",
        )

    # ------------------------------------------------------------------ block resume

    def _parts_dir(self, window_id: Optional[str]) -> Path:
        return self._dir(window_id) / BLOCK_PARTS

    def save_block(self, window_id: Optional[str], outcome: BlockOutcome) -> None:
        """Keep a block's batches (Arrow IPC streams as the worker sent them; sealed when
        the run encrypts) until its window is complete: a resumed run reads them back."""
        folder = self._parts_dir(window_id)
        make_private_dir(folder)
        for name, data in zip(PART_NAMES, (outcome.results, outcome.trades, outcome.curves)):
            path = folder / f"{block_entity(outcome.job.index)}.{name}.arrows"
            what = f"writing {path.name} of phase {self.phase}"
            if self.encryption is not None:
                write_sealed_bytes(path, data, self.encryption, what)
            else:
                # not synced: a part a crash damages fails to read back and its block is
                # computed again
                tmp = path.with_name(f".{path.name}.tmp")
                tmp.write_bytes(data)
                make_private(tmp)
                os.replace(tmp, path)

    def drop_block_parts(self, window_id: Optional[str]) -> None:
        """Delete a window's kept block batches (once the window is complete)."""
        shutil.rmtree(self._parts_dir(window_id), ignore_errors=True)

    def done_blocks(
        self, window_id: Optional[str], blocks: Sequence[BlockJob]
    ) -> dict[int, BlockOutcome]:
        """The blocks of ``blocks`` an earlier attempt of the run completed (its marker
        recorded, its batches kept), read back; the rows of any other block of that
        attempt in this window are deleted (they are computed again). Nothing to read
        without kept batches: a window's rows are committed after its batches are kept,
        and the batches are deleted only once the window is complete."""
        if not self._parts_dir(window_id).is_dir():
            return {}
        rows = [
            r
            for r in self.catalog.list_items(self.run_id, stage=self.phase)
            if r.window_id == window_id and r.storage_type == "inline"
        ]
        markers = {r.entity_name: r for r in rows if r.metadata.get("output_type") == "block"}
        if not markers:
            return {}
        done: dict[int, BlockOutcome] = {}
        for job in blocks:
            marker = markers.get(block_entity(job.index))
            if marker is None or marker.inline_data != block_marker(job):
                continue
            outcome = self._read_block(window_id, job)
            if outcome is not None:
                done[job.index] = outcome
        by_index = {job.index: job for job in blocks}
        kept = {cid for i in done for cid in by_index[i].container_ids}
        kept_markers = {block_entity(i) for i in done}
        # only these blocks' rows: an earlier call in the window (a walk-forward
        # window's train sets before its test set) keeps its own
        mine = {cid for job in blocks for cid in job.container_ids}
        names = {block_entity(job.index) for job in blocks}
        stale = [
            r.id
            for r in rows
            if (r.entity_name in names and r.entity_name not in kept_markers)
            or (r.container_id in mine and r.container_id not in kept)
        ]
        if stale:
            self.catalog.delete_item_rows(stale)
        log.info("phase %s: window %s: %d block(s) reused", self.phase, window_id, len(done))
        return done

    def _read_block(self, window_id: Optional[str], job: BlockJob) -> Optional[BlockOutcome]:
        parts = []
        for name in PART_NAMES:
            path = self._parts_dir(window_id) / f"{block_entity(job.index)}.{name}.arrows"
            try:
                plain = read_plain(path, self.encryption, f"block part {path.name}")
                data = bytes(plain) if plain is not None else path.read_bytes()
                read_stream(data)
            except (OSError, ValueError, pa.ArrowException, PhasekitError) as exc:
                log.warning(
                    "block %s of window %s is computed again: %s", job.index, window_id, exc
                )
                return None
            parts.append(data)
        return BlockOutcome(job, *parts)

    def _items_wanted(self, plans: list[ContainerPlan]) -> np.ndarray:
        """Per container of a block: whether it gets its own items (:func:`items_wanted`
        of its own flow's mode)."""
        if items_wanted(self.outputs, self._admf is not None, ()):
            return np.ones(len(plans), dtype=bool)
        return _per_plan(plans, lambda p: p.flow.mode == "streaming", bool)

    def _put_items(
        self,
        window_id: Optional[str],
        block: BlockRows,
        trades: Optional[pa.Table],
        metrics: list[dict[str, Any]],
        which: np.ndarray,
    ) -> None:
        """The own items of the containers ``which`` (indices in the block) from their
        block rows, as the container path stores them."""
        job = block.job
        names = metric_names(block.results.schema.names)
        trade_rows = _slices(trades, job.container_ids) if trades is not None else None
        curves = block.curves
        curve_rows = _slices(curves, job.container_ids) if curves is not None else None
        rows = block.results.take(which).to_pylist()
        for i, row in zip(which.tolist(), rows):
            cid = job.container_ids[i]
            if block.record is not None:
                record = block.record(row, metrics[i])
            else:
                record = container_results(row, block.parameters[i], names, block.window)
                if not record["parameters"]:  # as a container without parameters reports
                    del record["parameters"]
                record["metrics"] = metrics[i]
            equity = None
            if curves is not None and curve_rows is not None and job.tracers[i].keeps_equity:
                lo, hi = curve_rows[i]
                equity = _curve_table(curves.slice(lo, hi - lo), block.ts)
            own = None
            if trades is not None and trade_rows is not None:
                lo, hi = trade_rows[i]
                own = trades.slice(lo, hi - lo)
            self.put_container(window_id, cid, record, equity, metrics[i], trades=own)

    def _streams_tables(self, name: str) -> bool:
        """A window table is streamed block by block to an Arrow file (it goes to a file,
        the phase's format is Arrow, unencrypted, unpartitioned, and no ``execution``
        store takes trades); it is gathered for the window's end otherwise."""
        if window_table_store(self.flow.mode, name) != "file":
            return False
        file = self.flow.file
        plain = self.encryption is None and file.format == "arrow" and not file.partition_by
        return plain and not (name == "trades" and self._role_plan("execution") is not None)

    def _table_uri(self, window_id: Optional[str], table: pa.Table) -> str:
        """The URI the window's ``containers`` table has (or will have once written at
        the window's end): what its containers' catalog rows point at."""
        key = window_id or ""
        uri = self._table_uris.get(key)
        if uri is None:
            uri = self._table_uris[key] = self._locate_table(window_id, table)
        return uri

    def _locate_table(self, window_id: Optional[str], table: pa.Table) -> str:
        name = "containers"
        if window_table_store(self.flow.mode, name) != "file":
            return self.store(window_id).uri(name)
        if self._streams_tables(name):
            return (self._dir(window_id) / f"{name}.arrow").resolve().as_uri()
        meta = {"output_type": _TABLE_OUTPUTS[name]}
        with open_file_store(self.flow.file, self._place(self._dir(window_id), window_id)) as files:
            return file_uri(files.path_for(name, table, meta))

    def _add_table(self, window_id: Optional[str], name: str, table: pa.Table) -> None:
        key = window_id or ""
        if window_table_store(self.flow.mode, name) == "hybrid":
            self._put_part(window_id, name, table)
            return
        if not self._streams_tables(name):
            self._block_tables.setdefault(key, {}).setdefault(name, []).append(table)
            return
        writers = self._block_writers.setdefault(key, {})
        writer = writers.get(name)
        if writer is None:
            folder = self._dir(window_id)
            make_private_dir(folder)
            writer = writers[name] = (
                phasekit.IpcWriter(
                    str(folder / f"{name}.arrow"),
                    schema=table.schema,
                    compression=self.flow.file.compression,
                ),
                table.schema,
            )
        if table.num_rows:
            writer[0].write(table if table.schema == writer[1] else table.cast(writer[1]))

    def _parts_view(self, window_id: Optional[str]) -> HybridStore:
        """Where a hybrid window's tables are held block by block until the window's end:
        a view of the window's store (under the phase's budget, spilled past it) whose
        items are not recorded (the joined table is)."""
        key = window_id or ""
        view = self._part_views.get(key)
        if view is None:
            window = self.store(window_id)
            assert isinstance(window, HybridStore)
            view = window.container(BLOCK_PART_VIEW, self.flow.memory_limit_bytes)
            view.recorder = None
            self._part_views[key] = view
        return view

    def _put_part(self, window_id: Optional[str], name: str, table: pa.Table) -> None:
        parts = self._block_parts.setdefault(window_id or "", {}).setdefault(name, [])
        ref = self._parts_view(window_id).put(f"{name}.{len(parts):06d}", table)
        parts.append((ref, table.num_rows))

    def _join_parts(
        self, window_id: Optional[str], name: str, parts: list[tuple[Ref, int]], persist: bool
    ) -> str:
        """A hybrid window table from its blocks' parts (:meth:`HybridStore.join`: one
        item, written to the spill folder part by part)."""
        meta = {"rows": sum(n for _, n in parts), "output_type": _TABLE_OUTPUTS[name]}
        store = self.store(window_id)
        assert isinstance(store, HybridStore)
        ref = store.join(name, [r for r, _ in parts], meta)
        if persist:  # written as its containers' items are (read back whole for it)
            self._persist_store(window_id, self.flow).put(name, store.get(ref), meta)
        return ref.uri

    def finish_blocks(self, window_id: Optional[str]) -> dict[str, str]:
        """Write the window's block tables (``containers``, ``trades``, ``equity``) in the
        phase's file format and record them; returns their URIs by name."""
        key = window_id or ""
        tables = self._block_tables.pop(key, {})
        self._block_rows.pop(key, None)
        self._table_uris.pop(key, None)
        persist = key in self._persist_tables
        self._persist_tables.discard(key)
        uris: dict[str, str] = {}
        for name, parts in self._block_parts.pop(key, {}).items():
            uris[name] = self._join_parts(window_id, name, parts, persist)
        for name, (writer, _) in self._block_writers.pop(key, {}).items():
            info = writer.close()
            make_private(Path(info["path"]))
            meta = {"rows": info["rows"], "output_type": _TABLE_OUTPUTS[name]}
            uris[name] = self._record_file(
                Path(info["path"]), name, window_id, info, None, "arrow", meta
            )
        for name, parts in tables.items():
            table = pa.concat_tables(parts)
            meta = {"rows": table.num_rows, "output_type": _TABLE_OUTPUTS[name]}
            plan = self._role_plan("execution") if name == "trades" else None
            if plan is not None:
                uris[name] = self.store(window_id, plan.flow).put(name, table, meta).uri
                continue
            if window_table_store(self.flow.mode, name) != "file":
                uris[name] = self.store(window_id).put(name, table, meta).uri
                if persist:  # kept in memory, and written as its containers' items are
                    self._persist_store(window_id, self.flow).put(name, table, meta)
                continue
            place = self._place(self._dir(window_id), window_id)
            with open_file_store(self.flow.file, place) as files:
                uris[name] = files.put(name, table, meta).uri
        return uris

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
            self._persist_store(window_id, plan.flow).put(key, equity, meta)
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
                folder = self._dir(window_id)
                make_private_dir(folder)
                writer = phasekit.IpcWriter(
                    str(folder / "all_trades.arrow"),
                    schema=TRADES_SCHEMA,
                    compression=self.flow.file.compression,
                )
                self._trade_writers[key] = writer
            if table.num_rows:
                writer.write(table)
            return
        self._trade_tables.setdefault(key, []).append(table)

    def _finish_trades(self, window_id: Optional[str]) -> Optional[str]:
        key = window_id or ""
        writer = self._trade_writers.pop(key, None)
        if writer is not None:
            info = writer.close()
            make_private(Path(info["path"]))
            return self._record_file(
                Path(info["path"]),
                "all_trades",
                window_id,
                info,
                None,
                "arrow",
                {"rows": info["rows"]},
            )
        tables = self._trade_tables.pop(key, None)
        if tables is None:
            return None
        trades = pa.concat_tables(tables) if tables else TRADES_SCHEMA.empty_table()
        meta = {"rows": trades.num_rows, "output_type": "trades"}
        plan = self._role_plan("execution")
        if plan is not None:
            return self.store(window_id, plan.flow).put("all_trades", trades, meta).uri
        place = self._place(self._dir(window_id), window_id)
        with open_file_store(self.flow.file, place) as files:
            return files.put("all_trades", trades, meta).uri

    # ------------------------------------------------------------------ phase files

    def write_table(self, window_id: Optional[str], name: str, table: pa.Table) -> str:
        """Write ``<name>.arrow`` in the window's folder (the phase's with None) and
        record it; returns its URI."""
        return self._write_table(self._dir(window_id) / f"{name}.arrow", table, name, window_id)

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
        path = self._dir(window_id) / f"{name}.json"
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
        self.finish_blocks(window_id)
        return self._finish_trades(window_id)

    def stats(self) -> dict[str, Any]:
        return {f"{w or '-'}/{m}": store.stats() for (w, m, _), store in self._stores.items()}

    def close(self) -> None:
        for writer in self._trade_writers.values():
            writer.abort()
        self._trade_writers.clear()
        self._trade_tables.clear()
        self._block_tables.clear()
        self._block_parts.clear()
        for view in self._part_views.values():
            view.close()
        self._part_views.clear()
        for writers in self._block_writers.values():
            for writer, _ in writers.values():
                writer.abort()
        self._block_writers.clear()
        for store in reversed(list(self._stores.values())):  # hybrid views before their root
            store.close()


@dataclass
class AdmfFiles:
    """What ``results.layout: admf`` gathers over a phase: its folder, the portfolios'
    initial capital, the running aggregate and the trades for ``all_trades.json``."""

    folder: Path
    initial_capital: float
    aggregate: PhaseAggregate = field(default_factory=PhaseAggregate)
    trades: list[pa.Table] = field(default_factory=list)


def keep_curves(summaries: list[dict[str, Any]], block: BlockRows) -> None:
    """Add each container's equity curve (``_equity``, when traced) and its trades' pnl
    (``_pnl``) to its summary, as the container path keeps them."""
    ids = block.job.container_ids
    trades, curves = block.trades, block.curves
    trade_rows = _slices(trades, ids) if trades is not None else [(0, 0)] * len(ids)
    pnl = trades.column("pnl").to_numpy() if trades is not None else np.zeros(0)
    curve_rows = _slices(curves, ids) if curves is not None else None
    for i, summary in enumerate(summaries):
        if curves is not None and curve_rows is not None and block.job.tracers[i].keeps_equity:
            lo, hi = curve_rows[i]
            summary["_equity"] = _curve_table(curves.slice(lo, hi - lo), block.ts)
        lo, hi = trade_rows[i]
        summary["_pnl"] = pnl[lo:hi]


ItemRecord = Callable[[Mapping[str, Any], Mapping[str, Any]], dict[str, Any]]
"""A container's own results mapping (what its items hold) from its row of a block's
results and its metrics (plain JSON)."""


@dataclass(frozen=True)
class BlockRows:
    """A block's outcome as the parent stores it: its job, the sets' parameters (as the
    phase lists them), its results, trades and curves, the window (``window_id``,
    ``start``, ``end``, ``bars``) and the window's bar times. ``trades`` and ``curves``
    are None for a block whose containers make no trades and keep no curves (a Monte
    Carlo window's simulations): its window has no ``trades`` or ``equity`` table.
    ``record``: each container's own results mapping, when it is not a portfolio's
    (:func:`~phasekit.workflow.blocks.container_results`)."""

    job: BlockJob
    parameters: Sequence[Mapping[str, Any]]
    results: pa.Table
    trades: Optional[pa.Table]
    curves: Optional[pa.Table]
    window: Mapping[str, Any]
    ts: np.ndarray
    record: Optional[ItemRecord] = None


BLOCK_PART_VIEW = "_block_parts"
"""The view (of a hybrid window's store) holding its tables' block parts until the
window's end."""
BLOCK_PARTS = ".blocks"
"""The folder (in a window's folder) of the batches of the window's completed blocks,
kept until the window is complete."""
PART_NAMES = ("results", "trades", "curves")


def block_entity(index: int) -> str:
    """The catalog entity of a block's marker."""
    return f"block_{index:05d}"


def block_marker(job: BlockJob) -> dict[str, Any]:
    """What a block's marker records: its containers (first, last, count)."""
    ids = job.container_ids
    return {"first": ids[0], "last": ids[-1], "containers": len(ids)}


def items_wanted(outputs: Iterable[str], admf: bool, modes: Iterable[str]) -> bool:
    """Containers of a block get their own items (and no rows pointing at the window's
    table): all of them with output ``container_items`` or ``results.layout: admf``
    (``admf``); else each one whose data-flow mode (of ``modes``) is ``streaming`` (a
    stream store takes its results while the phase runs), the block's others keeping
    their rows of the table."""
    return "container_items" in outputs or admf or "streaming" in modes


def window_table_store(mode: str, name: str) -> str:
    """Where a block window's table ``name`` goes under the phase's data-flow ``mode``:
    ``containers`` and ``equity`` as items of the phase's ``memory`` or ``hybrid`` store,
    files in the phase's file format otherwise (``file``, ``streaming``); ``trades``, like
    a container window's ``all_trades``, is a phase file in every mode."""
    return mode if name != "trades" and mode in ("memory", "hybrid") else "file"


_TABLE_OUTPUTS = {
    "containers": "container_results",
    "trades": "trades",
    "equity": "equity_curves",
}
"""The window tables of block windows and the output kind each one is."""
WINDOW_TABLES: Mapping[str, str] = _TABLE_OUTPUTS


def block_tables(sequence: str) -> tuple[str, ...]:
    """The window tables a block window of ``sequence`` can write: a ``monte_carlo``
    window's simulations make no trades and keep no curves (their blocks' rows have
    neither, :class:`BlockRows`), so only ``containers``."""
    return ("containers",) if sequence in BOOTSTRAP_SEQUENCES else tuple(WINDOW_TABLES)


def metric_names(columns: Sequence[str]) -> list[str]:
    """The metric columns of a block's results: those after ``bars`` but the ``events.*``."""
    names = list(columns)
    return [c for c in names[names.index("bars") + 1 :] if not c.startswith("events.")]


def metric_columns(results: pa.Table) -> dict[str, np.ndarray]:
    """A block's metrics as float64 columns, NaN where a value is missing or not finite
    (as a summary's plain JSON metric reads to :func:`~phasekit.workflow.topology.rank`)."""
    out = {}
    for name in metric_names(results.schema.names):
        col = results.column(name).cast(pa.float64()).to_numpy(zero_copy_only=False)
        out[name] = np.where(np.isfinite(col), col, np.nan)
    return out


def _plain_rows(table: pa.Table) -> list[dict[str, Any]]:
    """The rows of a table of numbers as plain JSON (NaN and infinities as None)."""
    cols = {}
    for name in table.schema.names:
        col = table.column(name)
        if pa.types.is_floating(col.type):
            col = pc.if_else(pc.is_finite(col), col, pa.scalar(None, col.type))
        cols[name] = col
    return pa.table(cols).to_pylist()


def _json_columns(table: pa.Table) -> dict[str, Any]:
    """The columns of a table of numbers as numpy arrays (a list where a value is
    missing), what :func:`~phasekit.catalog.encode.to_json` writes as plain JSON lists
    (non-finite floats as null) with no Python step per value."""
    out: dict[str, Any] = {}
    for name in table.schema.names:
        col = table.column(name)
        if pa.types.is_floating(col.type):  # a missing value as NaN: null in JSON
            out[name] = col.to_numpy(zero_copy_only=False).astype(np.float64)
        elif col.null_count:
            out[name] = col.to_pylist()
        else:
            out[name] = col.to_numpy()
    return out


def _trades_table(trades: pa.Table, symbol: str) -> pa.Table:
    """A block's trades in :data:`TRADES_SCHEMA` (the symbol added)."""
    cols = {name: trades.column(name) for name in trades.schema.names}
    cols["symbol"] = pa.repeat(pa.scalar(symbol, pa.string()), trades.num_rows)
    return pa.table({f.name: cols[f.name] for f in TRADES_SCHEMA}, schema=TRADES_SCHEMA)


def _slices(table: pa.Table, container_ids: Sequence[str]) -> list[tuple[int, int]]:
    """Per container: its rows ``[lo, hi)`` of a table grouped by container in the order
    of ``container_ids``."""
    if not table.num_rows:
        return [(0, 0)] * len(container_ids)
    index = pc.index_in(table.column("container_id"), value_set=pa.array(container_ids))
    sets = index.to_numpy(zero_copy_only=False)
    counts = np.bincount(sets, minlength=len(container_ids))
    edges = np.concatenate(([0], np.cumsum(counts)))
    return [(int(edges[i]), int(edges[i + 1])) for i in range(len(container_ids))]


_UTC = pa.timestamp("ns", tz="UTC")


def _curve_table(part: pa.Table, ts: np.ndarray) -> pa.Table:
    """One container's equity curve as its tracer keeps it (``ts``, ``equity``)."""
    bar = part.column("bar").to_numpy()
    return pa.table(
        {"ts": pa.array(ts[bar], _UTC), "equity": part.column("equity").combine_chunks()}
    )


def _per_plan(
    plans: Sequence[ContainerPlan], value: Callable[[ContainerPlan], Any], dtype: Any
) -> np.ndarray:
    """``value`` of each container's plan, asked once per distinct plan object (the
    containers the same patterns match share one, :meth:`Planner.containers`)."""
    first, group = identity_groups(plans)
    return np.array([value(plans[i]) for i in first], dtype=dtype)[group]


def _equity_table(
    curves: pa.Table, ts: np.ndarray, container_ids: Sequence[str], intervals: np.ndarray
) -> pa.Table:
    """The block's equity curves as a window table (``container_id``, ``ts``,
    ``equity``, ``position``): every ``intervals[i]``-th point of container ``i``'s
    curve (its ``snapshot_interval``, the points :func:`snapshots` keeps)."""
    bar = curves.column("bar").to_numpy()
    if curves.num_rows and bool(np.any(intervals > 1)):
        index = pc.index_in(curves.column("container_id"), value_set=pa.array(container_ids))
        every = np.asarray(intervals, dtype=np.int64)[index.to_numpy(zero_copy_only=False)]
        keep = (bar + 1) % every == 0
        curves, bar = curves.filter(pa.array(keep)), bar[keep]
    return pa.table(
        {
            "container_id": curves.column("container_id"),
            "ts": pa.array(ts[bar], _UTC),
            "equity": curves.column("equity"),
            "position": curves.column("position"),
        }
    )


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
    """An Arrow IPC file a run wrote (decrypted with ``encryption`` when it is encrypted)."""
    import pyarrow.feather as feather

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
