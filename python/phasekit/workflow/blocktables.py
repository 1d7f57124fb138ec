"""A block window's tables and its blocks' catalog rows.

A block window (:mod:`phasekit.workflow.blocks`, :meth:`BlockTables.put`) writes
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
columns).
"""

from __future__ import annotations

import io
import logging
import secrets
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from phasekit.errors import PhasekitError
from phasekit.paths import make_private_dir
from phasekit.stores import HybridStore, trim
from phasekit.stores.factory import DataFlow
from phasekit.stores.partset import PROBE, commit
from phasekit.stores.ref import Ref, file_uri
from phasekit.stores.streamparts import Part
from phasekit.workflow.blockparts import PARTS_KEY, block_entity, block_marker
from phasekit.workflow.blocks import (
    BOOTSTRAP_SEQUENCES,
    BlockJob,
    container_results,
    identity_groups,
)
from phasekit.workflow.blockwrite import (
    PartSink,
    WrittenBlock,
    block_tables_of,
    table_folder,
    write_block_parts,
)
from phasekit.workflow.topology import TRADES_SCHEMA

if TYPE_CHECKING:
    from phasekit.catalog.publish import PublishingCatalog
    from phasekit.workflow.results import ContainerPlan, PhaseResults

log = logging.getLogger(__name__)


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


def keep_curves(summaries: list[dict[str, Any]], block: BlockRows) -> None:
    """Add each container's equity curve (``_equity``, when traced) and its trades' pnl
    (``_pnl``) to its summary, as the container path keeps them."""
    ids = block.job.container_ids
    trades = block.trades
    trade_rows = _slices(trades, ids) if trades is not None else [(0, 0)] * len(ids)
    pnl = trades.column("pnl").to_numpy() if trades is not None else np.zeros(0)
    curve = _own_curves(block)
    for i, summary in enumerate(summaries):
        equity = curve(i)
        if equity is not None:
            summary["_equity"] = equity
        lo, hi = trade_rows[i]
        summary["_pnl"] = pnl[lo:hi]


BLOCK_PART_VIEW = "_block_parts"
"""The view (of a hybrid window's store) holding its tables' block parts until the
window's end."""


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


def streams_table(name: str, flow: DataFlow, encrypted: bool, execution_store: bool) -> bool:
    """A window table is streamed block by block to an Arrow file: it goes to a file
    under ``flow``, whose format is Arrow, unencrypted, unpartitioned, and (for
    ``trades``) no ``execution`` store takes it; it is gathered for the window's end
    otherwise."""
    if window_table_store(flow.mode, name) != "file":
        return False
    plain = not encrypted and flow.file.format == "arrow" and not flow.file.partition_by
    return plain and not (name == "trades" and execution_store)


def writes_part_sets(
    cluster: bool, outputs: Collection[str], admf: bool, streams: Callable[[str], bool]
) -> bool:
    """The window tables are part sets, a part per block (:mod:`phasekit.stores.partset`):
    the blocks run on a ``cluster`` whose workers may write them, every table is streamed
    (``streams(name)``, :func:`streams_table`), the ``containers`` table is among the
    ``outputs``, and no output asks for each container's own items."""
    return (
        cluster
        and "container_results" in outputs
        and all(streams(name) for name in _TABLE_OUTPUTS)
        and not items_wanted(outputs, admf, ())
    )


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


def trades_table(trades: pa.Table, symbol: str) -> pa.Table:
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


def _own_curves(block: BlockRows) -> Callable[[int], Optional[pa.Table]]:
    """Container ``i``'s equity curve of a block as its tracer keeps it (``ts``,
    ``equity``), None when it keeps none."""
    curves = block.curves
    if curves is None:
        return lambda _i: None
    rows = _slices(curves, block.job.container_ids)

    def curve(i: int) -> Optional[pa.Table]:
        if not block.job.tracers[i].keeps_equity:
            return None
        lo, hi = rows[i]
        return _curve_table(curves.slice(lo, hi - lo), block.ts)

    return curve


def _per_plan(
    plans: Sequence[ContainerPlan], value: Callable[[ContainerPlan], Any], dtype: Any
) -> np.ndarray:
    """``value`` of each container's plan, asked once per distinct plan object (the
    containers the same patterns match share one, :meth:`Planner.containers`)."""
    first, group = identity_groups(plans)
    return np.array([value(plans[i]) for i in first], dtype=dtype)[group]


def equity_table(
    curves: pa.Table, ts: np.ndarray, container_ids: Sequence[str], intervals: np.ndarray
) -> pa.Table:
    """The block's equity curves as a window table (``container_id``, ``ts``,
    ``equity``, ``position``): every ``intervals[i]``-th point of container ``i``'s
    curve (its ``snapshot_interval``, the points
    :func:`~phasekit.workflow.results.snapshots` keeps)."""
    bar = curves.column("bar").to_numpy()
    if curves.num_rows and bool(np.any(intervals > 1)):
        index = pc.index_in(curves.column("container_id"), value_set=pa.array(container_ids))
        every = np.asarray(intervals, dtype=np.int64)[index.to_numpy(zero_copy_only=False)]
        keep = (bar + 1) % every == 0
        curves, bar = curves.filter(pa.array(keep)), bar[keep]
    return pa.table(
        {
            "container_id": compact(curves.column("container_id")),
            "ts": pa.array(ts[bar], _UTC),
            "equity": compact(curves.column("equity")),
            "position": compact(curves.column("position")),
        }
    )


def compact(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """``column`` in buffers of its own. A block's curves are read as views into the
    Arrow IPC buffer they arrived in, which holds their ``bar`` column too; a window
    table that kept the views would keep the whole buffer alive while a store counts only
    the columns it holds (about 75 MB more resident than counted in the 10,000-set
    memory benchmark, ``benches/bench_workflow.py``)."""
    return pa.chunked_array(
        [pa.concat_arrays([chunk, chunk.slice(0, 0)]) for chunk in column.chunks],
        type=column.type,
    )


class BlockTables:
    """The block windows' tables of one phase (``out``: where its results go), gathered
    block by block and written at each window's end."""

    def __init__(self, out: PhaseResults) -> None:
        self.out = out
        self._gathered: dict[str, dict[str, list[pa.Table]]] = {}
        self._part_views: dict[str, HybridStore] = {}
        self._parts: dict[str, dict[str, list[tuple[Ref, int]]]] = {}
        self._writers: dict[str, dict[str, tuple[Any, pa.Schema]]] = {}
        self._row_counts: dict[str, int] = {}
        self._table_uris: dict[str, str] = {}
        self._persist_tables: set[str] = set()
        self._part_sets: dict[str, dict[str, tuple[list[Part], pa.Schema]]] = {}
        self._part_mode: Optional[bool] = None
        self._probe: Optional[tuple[str, str]] = None

    def put(
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
        trades = None if block.trades is None else trades_table(block.trades, job.symbol)
        plans = self.out.plans(job.container_ids)
        if _per_plan(plans, lambda p: bool(p.persist), bool).any():
            self._persist_tables.add(key)
        parts: Optional[dict[str, Part]] = None
        if self.part_mode:  # this block's part of each table, written here
            intervals = _per_plan(plans, lambda p: int(p.snapshot_interval), np.int64)
            tables = block_tables_of(
                job,
                block.results,
                block.trades,
                block.curves,
                block.ts,
                self._part_tables(),
                intervals,
            )
            parts = write_block_parts(
                self.out.window_dir(window_id), job, tables, self._compression
            )
            self._add_parts(key, parts, {name: t.schema for name, t in tables.items()})
            first = 0
        else:
            self._add_tables(window_id, block, trades, plans)
            first = self._row_counts.get(key, 0)
            self._row_counts[key] = first + block.results.num_rows
        names = metric_names(block.results.schema.names)
        items = self._items_wanted(plans)
        if items.any():
            metrics = _plain_rows(block.results.select(names))
            self._put_items(window_id, block, trades, metrics, np.flatnonzero(items))
        columns = None
        if "container_results" in self.out.outputs and not items.all():
            if parts is not None:
                uri = self._part_uri(window_id, parts)
            else:
                uri = self._table_uri(window_id, block.results)
            rows = np.flatnonzero(~items)
            columns = {"table": "containers", "uri": uri, "first_row": first}
            if parts is not None:
                columns[PARTS_KEY] = {name: asdict(part) for name, part in parts.items()}
            table = block.results.select(names)
            columns["columns"] = {
                "container_id": np.asarray(job.container_ids, dtype=str)[rows],
                **_json_columns(table if not items.any() else table.take(rows)),
            }
            if items.any():  # the others' rows of the table
                columns[ROWS_KEY] = (rows + first).tolist()
        if not reused:
            self.out.catalog.record_items([self._marker(window_id, job, columns)])
        if self.out.budget_bytes is not None:  # the block's buffers were just freed
            trim.release()
        return metric_columns(block.results)

    def _add_tables(
        self,
        window_id: Optional[str],
        block: BlockRows,
        trades: Optional[pa.Table],
        plans: list[ContainerPlan],
    ) -> None:
        """Add a block's rows to the window's tables (written at the window's end)."""
        job = block.job
        if "container_results" in self.out.outputs:
            self._add_table(window_id, "containers", block.results)
        if trades is not None and "trades" in self.out.outputs:
            self._add_table(window_id, "trades", trades)
        if block.curves is not None and "equity_curves" in self.out.outputs:
            intervals = _per_plan(plans, lambda p: int(p.snapshot_interval), np.int64)
            equity = equity_table(block.curves, block.ts, job.container_ids, intervals)
            if equity.num_rows:
                self._add_table(window_id, "equity", equity)

    # ------------------------------------------------------------------ part sets

    @property
    def part_mode(self) -> bool:
        """The window tables are part sets, a part per block
        (:mod:`phasekit.stores.partset`): the run's blocks run on a cluster whose
        workers may write them (:meth:`PhaseResults.worker_parts`), every table goes to an
        Arrow file (:meth:`_streams_tables`: file flow, unencrypted, unpartitioned, no
        ``execution`` store), the ``containers`` table is written, and no output asks
        for each container's own items."""
        if self._part_mode is None:
            out = self.out
            self._part_mode = writes_part_sets(
                out.worker_parts, out.outputs, out.writes_admf, self._streams_tables
            )
        return self._part_mode

    @property
    def _compression(self) -> Optional[str]:
        return self.out.flow.file.compression

    def _part_tables(self) -> tuple[str, ...]:
        return tuple(name for name, kind in _TABLE_OUTPUTS.items() if kind in self.out.outputs)

    def sink_for(self, window_id: Optional[str], job: BlockJob) -> BlockJob:
        """``job`` with the :class:`~phasekit.workflow.blockwrite.PartSink` its worker
        writes its parts to (in :attr:`part_mode`, unless some of its containers get
        their own items: those blocks' rows come back and are written here)."""
        if not self.part_mode:
            return job
        plans = self.out.plans(job.container_ids)
        if self._items_wanted(plans).any():
            return job
        intervals = _per_plan(plans, lambda p: int(p.snapshot_interval), np.int64)
        probe, token = self._reach_probe()
        window = self.out.window_dir(window_id).resolve()
        objects = self._publisher()
        sink = PartSink(
            window_dir=str(window),
            tables=self._part_tables(),
            compression=self._compression,
            intervals=None if bool(np.all(intervals <= 1)) else tuple(intervals.tolist()),
            probe=probe,
            token=token,
            objects=None if objects is None else objects.root.url,
            window_key=None if objects is None else objects.object_key(window),
        )
        return replace(job, sink=sink)

    def _publisher(self) -> Optional[PublishingCatalog]:
        """The run's publishing catalog when its results live on object storage."""
        from phasekit.catalog.publish import PublishingCatalog

        catalog = self.out.catalog
        return catalog if isinstance(catalog, PublishingCatalog) else None

    def _reach_probe(self) -> tuple[str, str]:
        """What a worker reads to learn that it sees the run's results folder (a file
        holding a fresh token in the phase's folder; on object storage, an object),
        written once per phase: its path (or key) and the token."""
        if self._probe is None:
            from phasekit.stores.durable import write_bytes

            folder = self.out.window_dir(None)
            make_private_dir(folder)
            token = secrets.token_hex(16)
            path = (folder / PROBE).resolve()
            objects = self._publisher()
            if objects is not None:
                where = objects.object_key(path)
                objects.root.put_stream(where, io.BytesIO(token.encode()), None)
            else:
                where = str(path)
                write_bytes(path, token.encode(), f"writing {PROBE} of phase {self.out.phase}")
            self._probe = (where, token)
        return self._probe

    def _drop_probe(self) -> None:
        found, self._probe = self._probe, None
        if found is None:
            return
        objects = self._publisher()
        try:
            if objects is not None:
                objects.root.delete(found[0])
            else:
                Path(found[0]).unlink(missing_ok=True)
        except (OSError, PhasekitError) as exc:  # a leftover probe is harmless
            log.warning("cannot remove %s: %s", found[0], exc)

    def _add_parts(
        self, key: str, parts: Mapping[str, Part], schemas: Mapping[str, pa.Schema]
    ) -> None:
        sets = self._part_sets.setdefault(key, {})
        for name, part in parts.items():
            found = sets.get(name)
            if found is None:
                sets[name] = ([part], schemas[name])
            else:
                found[0].append(part)

    def _part_uri(self, window_id: Optional[str], parts: Mapping[str, Part]) -> str:
        """The URI of a block's part of the ``containers`` table (its rows' table)."""
        folder = table_folder(self.out.window_dir(window_id), "containers")
        uri = (folder / parts["containers"].file).resolve().as_uri()
        objects = self._publisher()
        return uri if objects is None else str(objects.object_uri(uri))

    def put_written(self, window_id: Optional[str], block: WrittenBlock, reused: bool) -> None:
        """Store a block whose worker wrote its parts (:mod:`phasekit.workflow.blockwrite`):
        its parts join the window's part sets, and its catalog row (unless ``reused``)
        points at its ``containers`` part, with its containers and metrics as columns."""
        job = block.job
        # the folder of its parts is what tells a resumed run to look for them
        make_private_dir(table_folder(self.out.window_dir(window_id), "containers"))
        self._add_parts(window_id or "", block.parts, {n: block.schema(n) for n in block.parts})
        if reused:
            return
        metrics = block.metrics_table()
        columns: dict[str, Any] = {
            "table": "containers",
            "uri": self._part_uri(window_id, block.parts),
            "first_row": 0,
            PARTS_KEY: {name: asdict(part) for name, part in block.parts.items()},
            "columns": {
                "container_id": np.asarray(job.container_ids, dtype=str),
                **_json_columns(metrics),
            },
        }
        self.out.catalog.record_items([self._marker(window_id, job, columns)])

    def _commit_parts(self, window_id: Optional[str]) -> dict[str, str]:
        """Commit the window's part sets (their manifests) and record each as its
        table; returns their URIs by name."""
        uris: dict[str, str] = {}
        for name, (parts, schema) in self._part_sets.pop(window_id or "", {}).items():
            folder = table_folder(self.out.window_dir(window_id), name)
            local = self._publisher() is None  # else the workers' parts are objects already
            size, checksum = commit(folder, schema, self._compression, parts, local)
            meta = {
                "rows": sum(p.rows for p in parts),
                "output_type": _TABLE_OUTPUTS[name],
                "parts": len(parts),
            }
            uris[name] = self.out.record_part_set(window_id, name, folder, size, checksum, meta)
        return uris

    def _marker(
        self, window_id: Optional[str], job: BlockJob, columns: Optional[Mapping[str, Any]]
    ) -> Any:
        """A block's catalog row: its marker (``inline_data``: :func:`block_marker`) and,
        with ``columns``, its containers."""
        from phasekit.catalog.blockrows import BLOCK_OUTPUT
        from phasekit.catalog.rows import NewItem

        return NewItem(
            process_id=self.out.run_id,
            stage_name=self.out.phase,
            entity_name=block_entity(job.index),
            inline_data=block_marker(job),
            metadata={"output_type": BLOCK_OUTPUT, "window_id": window_id, **(columns or {})},
            phase=self.out.phase,
            window_id=window_id,
            storage_type="inline",
        )

    def _items_wanted(self, plans: list[ContainerPlan]) -> np.ndarray:
        """Per container of a block: whether it gets its own items (:func:`items_wanted`
        of its own flow's mode)."""
        if items_wanted(self.out.outputs, self.out.writes_admf, ()):
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
        curve = _own_curves(block)
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
            equity = curve(i)
            own = None
            if trades is not None and trade_rows is not None:
                lo, hi = trade_rows[i]
                own = trades.slice(lo, hi - lo)
            self.out.put_container(window_id, cid, record, equity, metrics[i], trades=own)

    def _streams_tables(self, name: str) -> bool:
        """:func:`streams_table` under the phase's flow."""
        out = self.out
        return streams_table(name, out.flow, out.encryption is not None, out.has_role("execution"))

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
        if window_table_store(self.out.flow.mode, name) != "file":
            return self.out.store(window_id).uri(name)
        if self._streams_tables(name):
            return (self.out.window_dir(window_id) / f"{name}.arrow").resolve().as_uri()
        meta = {"output_type": _TABLE_OUTPUTS[name]}
        with self.out.window_files(window_id) as files:
            return file_uri(files.path_for(name, table, meta))

    def _add_table(self, window_id: Optional[str], name: str, table: pa.Table) -> None:
        key = window_id or ""
        if window_table_store(self.out.flow.mode, name) == "hybrid":
            self._put_part(window_id, name, table)
            return
        if not self._streams_tables(name):
            self._gathered.setdefault(key, {}).setdefault(name, []).append(table)
            return
        writers = self._writers.setdefault(key, {})
        writer = writers.get(name)
        if writer is None:
            writer = writers[name] = (
                self.out.window_writer(window_id, name, table.schema),
                table.schema,
            )
        if table.num_rows:
            writer[0].write(table if table.schema == writer[1] else table.cast(writer[1]))

    def _parts_view(self, window_id: Optional[str]) -> HybridStore:
        """Where a hybrid window's tables are held block by block until the window's end:
        a view of the window's store (under the phase's budget less what its blocks hold
        in flight, :meth:`PhaseResults.reserve`; spilled past it) whose items are not
        recorded (the joined table is)."""
        key = window_id or ""
        view = self._part_views.get(key)
        if view is None:
            window = self.out.store(window_id)
            assert isinstance(window, HybridStore)
            budget = max(0, self.out.flow.memory_limit_bytes - self.out.reserved(window_id))
            view = window.container(BLOCK_PART_VIEW, budget)
            view.recorder = None
            self._part_views[key] = view
        return view

    def _put_part(self, window_id: Optional[str], name: str, table: pa.Table) -> None:
        parts = self._parts.setdefault(window_id or "", {}).setdefault(name, [])
        ref = self._parts_view(window_id).put(f"{name}.{len(parts):06d}", table)
        parts.append((ref, table.num_rows))

    def _join_parts(
        self, window_id: Optional[str], name: str, parts: list[tuple[Ref, int]], persist: bool
    ) -> str:
        """A hybrid window table from its blocks' parts (:meth:`HybridStore.join`: one
        item, written to the spill folder part by part)."""
        meta = {"rows": sum(n for _, n in parts), "output_type": _TABLE_OUTPUTS[name]}
        store = self.out.store(window_id)
        assert isinstance(store, HybridStore)
        ref = store.join(name, [r for r, _ in parts], meta)
        if persist:  # written as its containers' items are (read back whole for it)
            self.out.persist_store(window_id, self.out.flow).put(name, store.get(ref), meta)
        return ref.uri

    def finish(self, window_id: Optional[str]) -> dict[str, str]:
        """Write the window's block tables (``containers``, ``trades``, ``equity``) in the
        phase's file format and record them; returns their URIs by name."""
        key = window_id or ""
        tables = self._gathered.pop(key, {})
        self._row_counts.pop(key, None)
        self._table_uris.pop(key, None)
        persist = key in self._persist_tables
        self._persist_tables.discard(key)
        uris = self._commit_parts(window_id)
        for name, parts in self._parts.pop(key, {}).items():
            uris[name] = self._join_parts(window_id, name, parts, persist)
        for name, (writer, _) in self._writers.pop(key, {}).items():
            meta = {"output_type": _TABLE_OUTPUTS[name]}
            uris[name] = self.out.close_writer(window_id, writer, name, meta)
        for name, parts in tables.items():
            table = pa.concat_tables(parts)
            meta = {"rows": table.num_rows, "output_type": _TABLE_OUTPUTS[name]}
            if window_table_store(self.out.flow.mode, name) != "file":  # never ``trades``
                uris[name] = self.out.store(window_id).put(name, table, meta).uri
                if persist:  # kept in memory, and written as its containers' items are
                    self.out.persist_store(window_id, self.out.flow).put(name, table, meta)
                continue
            trades = name == "trades"
            uris[name] = self.out.put_window_file(window_id, name, table, meta, trades=trades)
        return uris

    def close(self) -> None:
        """Drop what unfinished windows gathered (their Arrow files aborted; their parts
        stay for a resumed run)."""
        self._gathered.clear()
        self._part_sets.clear()
        self._drop_probe()
        self._parts.clear()
        for view in self._part_views.values():
            view.close()
        self._part_views.clear()
        for writers in self._writers.values():
            for writer, _ in writers.values():
                writer.abort()
        self._writers.clear()
