"""Blocks: many portfolio containers of one window as one unit of work.

A :class:`BlockJob` names a window, its span of bars, a built-in strategy, the block's
parameter sets (the strategy's keyword arguments), the portfolio settings and, per
container, its id and tracer settings. :func:`run_block_job` (what a worker runs)
evaluates the whole block in one call of the backend's block kernel
(:func:`phasekit.backtest.block.run_block`, one thread) and hands back three Arrow IPC
streams: the results (a row per container: ``container_id``, ``window_id``, the
strategy's parameters, ``bars``, every metric and the ``events.*`` statistics of the
container's event ring), the closed trades and the equity curves of the traced
containers; a block sent with a :class:`~phasekit.workflow.blockwrite.PartSink` (on a
cluster) writes its part of each window table where it runs and hands back only a
:class:`~phasekit.workflow.blockwrite.WrittenBlock` (:data:`Ran`).

The ``events.*`` columns are what each container's tracer would report
(``EventRing.stats()``): the kernel's FILL, POSITION_OPEN and POSITION_CLOSE events
of a set follow from its closed trades and from whether a position is still open at the
window's end (the bars the set held a position, ``exposure * bars``, exceed the bars
its closed trades held); they go through an :class:`~phasekit.EventRing` under the
container's retention policy, kind by kind as a container's event bus delivers them,
PORTFOLIO_UPDATE (a bar each) last when it is traced. A ring's statistics follow from
how many events of each kind it reads, in that order, so sets alike in those counts
share one ring's measurement (:func:`stats_line`, :func:`probe_stats`).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional, Union

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

import phasekit
from phasekit.backtest.bars import Bars
from phasekit.backtest.block import BLOCK_KINDS, run_block, supports_block
from phasekit.backtest.metrics import segment_trade_metrics
from phasekit.backtest.portfolio import PortfolioSettings
from phasekit.errors import ConfigError
from phasekit.events import EventType
from phasekit.tracing import TracerSettings
from phasekit.workflow.executor import IN_FLIGHT_PER_SLOT, DataSpec, bars_for
from phasekit.workflow.sequences import Span

if TYPE_CHECKING:
    from phasekit.workflow.blockwrite import PartSink, WrittenBlock

log = logging.getLogger(__name__)

__all__ = [
    "BLOCK_KINDS",
    "BlockJob",
    "BlockOutcome",
    "Ran",
    "block_refusal",
    "block_sizes",
    "phase_engine",
    "run_block_bars",
    "run_block_job",
]

EVENT_STATS = ("seen", "retained", "evicted", "retained_bytes", "open_positions", "trades")
"""The statistics of a container's event ring, as ``events.<name>`` result columns."""
EVENT_COLUMNS = tuple(f"events.{name}" for name in EVENT_STATS)
MIN_BLOCK = 64
"""The fewest sets a block holds when a window is cut into blocks (unless it has fewer)."""
MAX_BLOCK = 2_000
"""The most sets a block holds."""
BLOCK_BYTES = 32 << 20
"""The most result bytes (estimated) a block holds: a block keeping equity curves of a
long window holds fewer sets, so the blocks in flight stay tens of MiB."""
CURVE_ROW_BYTES = 48
"""Bytes of one row of a block's equity curves, estimated (time, equity, position and
the container's id)."""
LANE_BLOCK = 8
"""The fewest sets a block cut by its bytes holds (one vector step of the kernel)."""
BUDGET_SHARE = 16
"""A block under a memory budget holds at most budget / (this x slots) bytes: the 2
blocks per slot in flight, each with its copies, stay a small share of the budget."""

DEFAULT_STRATEGY = "sma_crossover"
"""The strategy a phase runs when its ``strategy.type`` is not set."""
BOOTSTRAP_SEQUENCES = ("monte_carlo",)
"""The sequences whose blocks run no strategy (a window's simulations bootstrap one run
of the phase's set, :func:`phasekit.backtest.metrics.bootstrap_block`): any strategy
runs them as blocks."""


def strategy_type_of(params: Any) -> str:
    """The strategy a phase's ``config`` (its resolved params) runs."""
    strategy = getattr(params, "strategy", None)
    return (strategy.type if strategy is not None and strategy.type else None) or DEFAULT_STRATEGY


def block_refusal(strategy_type: str) -> Optional[str]:
    """Why a phase running ``strategy_type`` cannot run its windows as blocks (None
    when it can)."""
    if not supports_block(strategy_type):
        return (
            f"strategy.type {strategy_type!r} has no block kernel (built-in kinds: "
            f"{', '.join(BLOCK_KINDS)})"
        )
    return None


def phase_engine(engine: str, sequence: str, strategy_type: str, phase: str) -> str:
    """How a phase runs its windows' parameter sets (a ``monte_carlo`` phase: its
    simulations), ``block`` or ``container``: the run's ``engine`` (``container``;
    ``block``, ``ConfigError`` where the phase's strategy has no block path; ``auto``:
    blocks where it has one). Simulations run as blocks under any strategy. The one
    decision the run (:meth:`~phasekit.workflow.phase.PhaseContext.uses_blocks`) and its
    plan share."""
    if engine == "container":
        return "container"
    if sequence in BOOTSTRAP_SEQUENCES:
        return "block"
    why = block_refusal(strategy_type)
    if why is not None and engine == "block":
        raise ConfigError(f"engine: block: phase {phase!r} cannot run as blocks: {why}")
    return "container" if why is not None else "block"


_FILL = int(EventType.FILL)
_OPEN = int(EventType.POSITION_OPEN)
_CLOSE = int(EventType.POSITION_CLOSE)
_UPDATE = int(EventType.PORTFOLIO_UPDATE)


@dataclass(frozen=True)
class BlockJob:
    """One block: picklable for worker processes (containers of one pattern share one
    :class:`TracerSettings`, pickled once)."""

    window_id: str
    span: Span
    strategy_type: str
    param_sets: Sequence[Mapping[str, Any]]
    """The strategy's keyword arguments of each set (a tuple, or
    :class:`~phasekit.backtest.block.SetColumns` from a parameter space's columns)."""
    portfolio: PortfolioSettings
    container_ids: tuple[str, ...]
    tracers: tuple[TracerSettings, ...]
    symbol: str
    index: int = 0
    """The block's position in its window (0, 1, ...)."""
    parameters: tuple[Mapping[str, Any], ...] = ()
    """The sets as the phase lists them (the containers' ``parameters``)."""
    sink: Optional[PartSink] = None
    """Where the process that runs the block writes its window-table parts (a cluster
    worker, :mod:`phasekit.workflow.blockwrite`); None: its rows go back to the client."""

    def __len__(self) -> int:
        return len(self.container_ids)

    @property
    def traced(self) -> tuple[bool, ...]:
        """Per container: its equity curve is kept (PORTFOLIO_UPDATE traced), asked of
        each distinct tracer once."""
        tracers, group = tracer_groups(self.tracers)
        keeps = np.array([t.keeps_equity for t in tracers], dtype=bool)
        return tuple(keeps[group].tolist())


IpcStream = Union[bytes, pa.Buffer]
"""An Arrow IPC stream's bytes: an Arrow buffer as written (no copy into ``bytes``), or
bytes read back or received."""


@dataclass(frozen=True)
class BlockOutcome:
    """What a block hands back: its three batches as Arrow IPC streams."""

    job: BlockJob
    results: IpcStream
    trades: IpcStream
    curves: IpcStream

    def tables(self) -> tuple[pa.Table, pa.Table, pa.Table]:
        """The results, trades and curves as tables."""
        return read_stream(self.results), read_stream(self.trades), read_stream(self.curves)


def stream_bytes(batch: pa.RecordBatch | pa.Table) -> pa.Buffer:
    """A batch (or a table) as an Arrow IPC stream, in the buffer it was written to."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batch.schema) as writer:
        writer.write(batch)
    return sink.getvalue()


NO_BATCH = stream_bytes(pa.table({}))
"""An IPC stream of no columns: a block's trades or curves where it has none."""


def read_stream(data: IpcStream) -> pa.Table:
    return pa.ipc.open_stream(
        data if isinstance(data, pa.Buffer) else pa.py_buffer(data)
    ).read_all()


def block_sizes(n_sets: int, slots: int, set_bytes: int = 0, budget: Optional[int] = None) -> int:
    """How many sets a block of a window of ``n_sets`` holds: at least 2 blocks per
    slot (worker) when there are enough sets, between :data:`MIN_BLOCK` and
    :data:`MAX_BLOCK`; and, for sets of ``set_bytes`` result bytes each, no more than
    :data:`BLOCK_BYTES` (under a memory ``budget``: budget / (:data:`BUDGET_SHARE` x
    slots)) hold, but at least :data:`LANE_BLOCK`."""
    per = -(-n_sets // max(1, 2 * slots))
    size = max(1, min(MAX_BLOCK, max(MIN_BLOCK, per), n_sets))
    if set_bytes > 0:
        cap = BLOCK_BYTES if budget is None else min(BLOCK_BYTES, budget // (BUDGET_SHARE * slots))
        size = min(size, max(LANE_BLOCK, cap // set_bytes))
    return size


def in_flight_bytes(size: int, slots: int, set_bytes: int) -> int:
    """Result bytes (estimated) a window's blocks of ``size`` sets of ``set_bytes`` each
    hold outside its store at most: :data:`~phasekit.workflow.executor.IN_FLIGHT_PER_SLOT`
    per slot in flight, and the one being stored."""
    return (IN_FLIGHT_PER_SLOT * slots + 1) * size * set_bytes


def executor_slots(executor: object) -> int:
    """The blocks an executor runs at once: its ``workers``, else (Dask, Ray) its
    cluster's threads or CPUs, else 1."""
    workers = getattr(executor, "workers", None)
    if isinstance(workers, int) and workers > 0:
        return workers
    threads = getattr(executor, "threads", None)
    return max(1, int(threads())) if callable(threads) else 1


# ---------------------------------------------------------------- worker side


Ran = Union[BlockOutcome, "WrittenBlock"]
"""What running a block gives: its rows, or (sent with a sink this process reaches) the
parts it wrote."""


def run_block_job(spec: DataSpec, job: BlockJob, backend: Optional[str] = None) -> Ran:
    """Run a block over the bars of ``spec``, loaded once per process (what local worker
    processes execute)."""
    return run_block_bars(bars_for(spec), job, backend)


def run_block_bars(bars: Bars, job: BlockJob, backend: Optional[str] = None) -> Ran:
    """Run a block over ``bars`` (the data window it slices) in this process: its rows as
    Arrow IPC streams, or, when the block carries a :class:`~phasekit.workflow.blockwrite.
    PartSink` this process reaches, its parts written there
    (:func:`~phasekit.workflow.blockwrite.written_block`)."""
    results, trades, curves = block_batches(bars, job, backend)
    sink = job.sink
    if sink is not None:
        if sink.reachable():
            from phasekit.workflow.blockwrite import written_block

            table = pa.Table.from_batches
            ts = bars.ts[job.span.start : job.span.stop]
            return written_block(sink, job, table([results]), table([trades]), table([curves]), ts)
        log.info("block %d: %s is not reachable here; its rows go back", job.index, sink.probe)
    return BlockOutcome(job, stream_bytes(results), stream_bytes(trades), stream_bytes(curves))


def block_batches(
    bars: Bars, job: BlockJob, backend: Optional[str] = None
) -> tuple[pa.RecordBatch, pa.RecordBatch, pa.RecordBatch]:
    """A block's results (with its ``events.*`` and trade metrics), trades and curves."""
    if backend is not None and phasekit.get_backend() != backend:
        phasekit.set_backend(backend)
    try:
        run = run_block(
            bars,
            job.span.start,
            job.span.stop,
            job.strategy_type,
            job.param_sets,
            job.portfolio,
            job.container_ids,
            job.window_id,
            traced=job.traced,
            threads=1,
        )
    except ConfigError as exc:
        index = getattr(exc.__cause__, "set_index", None)
        if not isinstance(index, int) or not 0 <= index < len(job.parameters):
            raise
        # the set as the phase lists it, as the container path names it (the kernel's
        # "parameter set N" counts in the block: the container id replaces it)
        why = str(exc.__cause__).removeprefix(f"parameter set {index}: ")
        raise ConfigError(
            f"container {job.container_ids[index]} {dict(job.parameters[index])}: {why}"
        ) from exc
    stats, trade_metrics = event_stats(job, run.results, run.trades, run.curves)
    results = run.results
    for name, values in trade_metrics.items():
        i = results.schema.get_field_index(name)
        results = results.set_column(i, results.schema.field(i), values)
    for name, column in zip(EVENT_COLUMNS, stats):
        results = results.append_column(name, pa.array(column, pa.int64()))
    return results, run.trades, run.curves


def open_at_end(results: pa.RecordBatch, trades: pa.RecordBatch) -> np.ndarray:
    """Per set: a position is still open at the window's end. The bars a set held a
    position (``exposure * bars``, exactly an integer count) exceed those its closed
    trades held exactly when one is open: a closed trade holds its position from its
    entry bar to the bar before its exit."""
    n = results.num_rows
    bars = results.column("bars").to_numpy()
    held = np.rint(results.column("exposure").to_numpy() * bars).astype(np.int64)
    sets = _set_index(results, trades)
    closed = np.bincount(sets, weights=trades.column("bars_held").to_numpy(), minlength=n)
    return held > np.rint(closed).astype(np.int64)


def _set_index(results: pa.RecordBatch, trades: pa.RecordBatch) -> np.ndarray:
    """The row of ``results`` each trade belongs to."""
    if not trades.num_rows:
        return np.zeros(0, dtype=np.int64)
    index = pc.index_in(trades.column("container_id"), value_set=results.column("container_id"))
    return index.to_numpy(zero_copy_only=False).astype(np.int64)


def event_stats(
    job: BlockJob,
    results: pa.RecordBatch,
    trades: pa.RecordBatch,
    curves: pa.RecordBatch,
) -> tuple[list[np.ndarray], dict[str, pa.Array]]:
    """The ``events.*`` columns (see the module docstring), and the trade metrics
    (``win_rate``, ``trade_count``, ``profit_factor``) as a container's tracer folds them:
    from the pnl of its position book (entry and exit fills at the trade's prices, each
    paying its commission), summed as :class:`StreamingMetrics` sums them.

    Both are columns over the block's sets: the statistics of the sets whose tracer
    keeps no curve under a policy of :data:`LINEAR_POLICIES` from one line per tracer
    and open position (:func:`stats_line`), those of the other sets from one probe
    ring per distinct tracer, open position, closed trades and traced equity points
    (:func:`probe_stats`)."""
    n = results.num_rows
    out = [np.zeros(n, dtype=np.int64) for _ in EVENT_STATS]
    if n == 0:
        return out, _trade_columns(segment_trade_metrics(np.zeros(0), np.zeros(0, np.int64)))
    is_open = open_at_end(results, trades)
    sets = _set_index(results, trades)
    if sets.shape[0] and np.any(np.diff(sets) < 0):
        trades = trades.take(pa.array(np.argsort(sets, kind="stable")))
        sets = np.sort(sets, kind="stable")
    counts = np.bincount(sets, minlength=n)
    side = trades.column("direction").to_numpy().astype(np.float64)
    book_pnl = _book_pnl(trades, side, job.portfolio.commission_bps / 1e4)
    folded = segment_trade_metrics(book_pnl, counts)
    tracers, group = tracer_groups(job.tracers)
    ringed = np.ones(n, dtype=bool)
    for g, tracer in enumerate(tracers):
        if _UPDATE in tracer.kinds or tracer.retention_policy not in LINEAR_POLICIES:
            continue
        for opened in (False, True):
            rows = np.flatnonzero((group == g) & (is_open == opened))
            line = stats_line(tracer, opened) if rows.shape[0] else None
            if line is None:
                continue
            for column, name in zip(out, EVENT_STATS):
                column[rows] = line.base[name] + counts[rows] * line.step[name]
            ringed[rows] = False
    if ringed.any():
        rows = np.flatnonzero(ringed)
        updates = _curve_counts(results, curves)
        _probed_stats(out, rows, tracers, group, is_open, counts, updates)
    return out, _trade_columns(folded)


def tracer_groups(tracers: Sequence[TracerSettings]) -> tuple[list[TracerSettings], np.ndarray]:
    """The distinct tracers of a block's sets (containers of one pattern share one
    settings object) and, per set, the index of its tracer among them."""
    first, group = identity_groups(tracers)
    return [tracers[i] for i in first], group


def identity_groups(items: Sequence[object]) -> tuple[list[int], np.ndarray]:
    """Items grouped by identity (objects shared by many containers): the position of
    the first item of each group and each item's group."""
    if not items:
        return [], np.zeros(0, dtype=np.int64)
    keys = np.fromiter(map(id, items), dtype=np.int64, count=len(items))
    _, first, group = np.unique(keys, return_index=True, return_inverse=True)
    return first.tolist(), group.reshape(-1)


def _probed_stats(
    out: list[np.ndarray],
    rows: np.ndarray,
    tracers: Sequence[TracerSettings],
    group: np.ndarray,
    is_open: np.ndarray,
    counts: np.ndarray,
    updates: np.ndarray,
) -> None:
    """The statistics of the sets ``rows`` (their ring's statistics do not grow by a
    line): one probe ring (:func:`probe_stats`) per distinct tracer, open position at
    the end, closed trades and traced equity points among them."""
    keys = np.stack([group[rows], is_open[rows], counts[rows], updates[rows]], axis=1)
    distinct, inverse = np.unique(keys.astype(np.int64), axis=0, return_inverse=True)
    measured = np.array(
        [
            [stats[name] for name in EVENT_STATS]
            for stats in (
                probe_stats(tracers[g], bool(o), t, u) for g, o, t, u in distinct.tolist()
            )
        ],
        dtype=np.int64,
    ).reshape(-1, len(EVENT_STATS))
    for j, column in enumerate(out):
        column[rows] = measured[inverse.reshape(-1), j]


def _curve_counts(results: pa.RecordBatch, curves: pa.RecordBatch) -> np.ndarray:
    """Per set: the points of its equity curve in the block's curves (0 untraced)."""
    out = np.zeros(results.num_rows, dtype=np.int64)
    if curves.num_rows:
        runs = pc.run_end_encode(curves.column("container_id"))
        ends = runs.run_ends.to_numpy().astype(np.int64)
        sizes = np.diff(ends, prepend=0)
        owner = pc.index_in(runs.values, value_set=results.column("container_id"))
        out[owner.to_numpy(zero_copy_only=False).astype(np.int64)] = sizes
    return out


LINEAR_POLICIES = ("trade_complete", "minimal")
"""Policies under which a ring's statistics grow by the same amount with each closed
trade of a set (no cap: a closed trade's events are dropped with it)."""


@dataclass(frozen=True)
class StatsLine:
    """A ring's statistics as a function of a set's closed trades ``t``:
    ``base + t * step``."""

    base: dict[str, int]
    step: dict[str, int]

    def at(self, t: int) -> dict[str, int]:
        return {k: self.base[k] + t * self.step[k] for k in EVENT_STATS}


def stats_line(tracer: TracerSettings, is_open: bool, probes: int = 4) -> Optional[StatsLine]:
    """The statistics of ``tracer``'s ring for a set with 0, 1, 2... closed trades (and a
    position open at the end or not), measured on the ring itself; a line when they grow
    by the same step from each count to the next (None otherwise: each set then goes
    through its own ring)."""
    measured = [probe_stats(tracer, is_open, t) for t in range(probes)]
    step = {k: measured[1][k] - measured[0][k] for k in EVENT_STATS}
    for before, after in itertools.pairwise(measured):
        if any(after[k] - before[k] != step[k] for k in EVENT_STATS):
            return None
    return StatsLine(measured[0], step)


def probe_stats(
    tracer: TracerSettings, is_open: bool, trades: int, updates: int = 0
) -> dict[str, int]:
    """The statistics of ``tracer``'s ring for a set with ``trades`` closed trades, a
    position open at the end or not and ``updates`` equity points traced, measured on
    a ring fed such a set's events (kind by kind, PORTFOLIO_UPDATE last, as
    :func:`event_stats` describes). A ring's statistics follow from the kinds, keys and
    order of its events, not from their times, prices, quantities or values, so the
    probe's events stand for any set's."""
    ring = _ring(tracer)
    kinds = tracer.kinds
    times = np.arange(trades, dtype=np.int64) * 2
    ones, zeros = np.ones(trades), np.zeros(trades)
    for kind, events in _set_events(times, times + 1, ones, zeros, is_open, 2 * trades):
        if kind in kinds:
            ring.extend(events)
    if updates and _UPDATE in kinds:
        flat = np.zeros(updates)
        ring.extend(_events(np.arange(updates), _UPDATE, np.full(updates, -1), flat, flat, flat))
    return {k: int(v) for k, v in ring.stats().items() if k in EVENT_STATS}


def _book_pnl(trades: pa.RecordBatch, side: np.ndarray, comm: float) -> np.ndarray:
    """Each trade's pnl as a position book computes it from its two fills (the formula
    and order of operations of ``EventRing``'s book)."""
    entry = trades.column("entry_price").to_numpy()
    exit_ = trades.column("exit_price").to_numpy()
    quantity = trades.column("quantity").to_numpy()
    open_fee = quantity * entry * comm
    close_fee = quantity * exit_ * comm
    return side * (exit_ - entry) * quantity + (-open_fee) * 1.0 + (-close_fee) * 1.0


def _trade_columns(folded: Mapping[str, np.ndarray]) -> dict[str, pa.Array]:
    defined = folded["_profit_factor_defined"]
    return {
        "win_rate": pa.array(folded["win_rate"], pa.float64()),
        "trade_count": pa.array(folded["trade_count"], pa.int64()),
        "profit_factor": pa.array(
            np.where(defined, folded["profit_factor"], 0.0), pa.float64(), mask=~defined
        ),
    }


def _ring(tracer: TracerSettings) -> Any:
    policy = tracer.retention_policy
    return phasekit.EventRing(
        policy,
        capacity=max(1, tracer.sliding_window_size),
        max_events=max(1, tracer.max_events),
    )


def _events(
    ts: np.ndarray,
    kind: int,
    key: np.ndarray,
    price: np.ndarray,
    qty: np.ndarray,
    value: np.ndarray,
) -> dict[str, np.ndarray]:
    n = ts.shape[0]
    return {
        "ts": ts.astype(np.int64),
        "kind": np.full(n, kind, dtype=np.uint16),
        "key": key.astype(np.int64),
        "symbol": np.zeros(n, dtype=np.int32),
        "price": price.astype(np.float64),
        "quantity": qty.astype(np.float64),
        "value": value.astype(np.float64),
    }


def _set_events(
    entry: np.ndarray,
    exit_: np.ndarray,
    qty: np.ndarray,
    pnl: np.ndarray,
    is_open: bool,
    last_ts: int,
) -> list[tuple[int, dict[str, np.ndarray]]]:
    """A set's FILL, POSITION_OPEN and POSITION_CLOSE events, one batch per kind in the
    order a container's event bus delivers them (by kind). Prices and values do not
    change a ring's statistics and are left at zero (the close carries the pnl)."""
    t = entry.shape[0]
    keys = np.arange(t + int(is_open), dtype=np.int64)
    fill_ts = np.empty(2 * t, dtype=np.int64)
    fill_ts[0::2], fill_ts[1::2] = entry, exit_
    fill_q = np.empty(2 * t)
    fill_q[0::2], fill_q[1::2] = qty, -qty
    fill_key = np.repeat(keys[:t], 2)
    open_ts, open_q = entry, qty
    if is_open:
        fill_ts = np.append(fill_ts, last_ts)
        fill_q = np.append(fill_q, 1.0)
        fill_key = np.append(fill_key, t)
        open_ts = np.append(entry, last_ts)
        open_q = np.append(qty, 1.0)
    out = []
    zeros = np.zeros(fill_ts.shape[0])
    if fill_ts.shape[0]:
        out.append((_FILL, _events(fill_ts, _FILL, fill_key, zeros, fill_q, zeros)))
        zo = np.zeros(open_ts.shape[0])
        out.append((_OPEN, _events(open_ts, _OPEN, keys, zo, open_q, zo)))
    if t:
        out.append((_CLOSE, _events(exit_, _CLOSE, keys[:t], np.zeros(t), -qty, pnl)))
    return out


def container_results(
    row: Mapping[str, Any],
    parameters: Mapping[str, Any],
    metric_names: Sequence[str],
    window: Mapping[str, Any],
) -> dict[str, Any]:
    """A container's results mapping (as its tracer and destroy give it) from its row of a
    block's results."""
    return {
        "container_id": row["container_id"],
        "role": "portfolio",
        "parameters": dict(parameters),
        "metrics": {name: row[name] for name in metric_names},
        "events": {name: row[f"events.{name}"] for name in EVENT_STATS},
        "window": dict(window),
    }
