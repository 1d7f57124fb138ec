"""The DAG API of ``market-data-pipeline`` (design note 003) as a thin face over phasekit.

Code written for ``market_data_pipeline.orchestration.dag`` runs after its imports
change to ``phasekit.compat.market_data_pipeline``: graphs of ``Node(name, async fn(in,
out))`` run by an awaitable ``DagRuntime(dag, RunConfig(...)).start()``; nodes talk
through ``Channel`` objects with async ``put``/``get`` (phasekit Channels underneath, on
the chosen backend); ``hash_partition``, ``tumbling_window_event_time``,
``resample_ohlc``, ``deduplicate``, ``throttle`` and ``router`` work on async
iterators and delegate to phasekit's partitioner, window, OHLC and throttle operators;
``build_dag_from_dict`` builds a runnable graph from a dict and a ``ComponentRegistry``.

Where the original is plainly wrong phasekit's behaviour is kept (see
docs/migration.md): bars take their open and close by timestamp, not arrival; a
window or bar is never emitted twice as two partial results; a node's exception fails
the run instead of being swallowed; the default partition of a key is the same in every
process whatever ``PYTHONHASHSEED`` is.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import graphlib
import logging
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Callable, Generic, Optional, TypeVar

import phasekit
from phasekit.errors import (
    ChannelClosed,
    ChannelEmpty,
    ChannelFull,
    ConfigError,
    InvalidArgument,
    StreamError,
)
from phasekit.stream.dag import StreamSettings
from phasekit.stream.eventtime import field_getter, non_negative_duration, positive_duration, to_ns
from phasekit.stream.nodes import Out
from phasekit.stream.ohlc import OhlcResample
from phasekit.stream.operators import Throttle
from phasekit.stream.partition import check_partitions, partition
from phasekit.stream.windows import TumblingWindows, WindowOperator, WindowResult

log = logging.getLogger(__name__)

T = TypeVar("T")
K = TypeVar("K")

UTC = _dt.UTC
_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=UTC)

DagValidationError = StreamError
"""An invalid graph (a ``ValueError``, as in the original)."""

DagBuildError = ConfigError
"""A graph description that cannot be built (a ``ValueError``)."""

Callback = Callable[[], Awaitable[None]]
PartitionCallback = Callable[[int], Awaitable[None]]

__all__ = [
    "Bar",
    "Channel",
    "ChannelClosed",
    "ComponentRegistry",
    "Dag",
    "DagBuildError",
    "DagRunStats",
    "DagRuntime",
    "DagValidationError",
    "Edge",
    "Node",
    "PartitionedChannel",
    "PartitioningSpec",
    "RunConfig",
    "TumblingWindowSpec",
    "Watermark",
    "WatermarkPolicy",
    "WindowFrame",
    "buffer_async",
    "build_dag_from_dict",
    "deduplicate",
    "default_registry",
    "filter_async",
    "hash_partition",
    "map_async",
    "resample_ohlc",
    "router",
    "throttle",
    "tumbling_window_event_time",
]


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidArgument(f"{name} must be an integer >= 1, got {value!r}")
    return value


def _fraction(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
        raise InvalidArgument(f"{name} must be a fraction in (0, 1], got {value!r}")
    return float(value)


def _marks(capacity: int, high: Any, low: Any, where: str) -> Watermark:
    """The depth marks of a channel of ``capacity`` at fractions ``high`` and ``low``."""
    h, lo = _fraction(high, f"{where} high mark"), _fraction(low, f"{where} low mark")
    if lo > h:
        raise InvalidArgument(f"{where}: the low mark ({lo}) must not exceed the high mark ({h})")
    return Watermark(high=max(1, int(capacity * h)), low=max(1, int(capacity * lo)))


def _datetime(ns: int) -> _dt.datetime:
    return _EPOCH + _dt.timedelta(microseconds=ns // 1000)


def _keep(tasks: set[asyncio.Task[Any]], coro: Awaitable[Any]) -> None:
    """Run ``coro`` as a task that cannot be garbage-collected while it runs."""
    task = asyncio.ensure_future(coro)
    tasks.add(task)
    task.add_done_callback(tasks.discard)


# ------------------------------------------------------------------ channels


@dataclass(frozen=True)
class Watermark:
    """Depth marks of a Channel: ``on_high`` fires when the depth reaches ``high``,
    ``on_low`` when it falls back to ``low`` (each once per crossing)."""

    high: int
    low: int


class Channel(Generic[T]):
    """A bounded channel for asyncio code: ``await put(x)`` waits while full, ``await
    get()`` while empty; after ``close()`` puts raise ``ChannelClosed`` and gets drain what
    is left, then raise ``ChannelClosed``. The items sit in a phasekit Channel."""

    def __init__(
        self,
        capacity: int = 2048,
        *,
        watermark: Optional[Watermark] = None,
        on_high: Optional[Callback] = None,
        on_low: Optional[Callback] = None,
    ) -> None:
        _positive_int(capacity, "Channel: capacity")
        wm = watermark or Watermark(high=max(1, capacity * 3 // 4), low=max(1, capacity // 4))
        if not 0 <= wm.low <= wm.high:
            raise InvalidArgument(
                f"Channel: watermark needs 0 <= low <= high, got low={wm.low}, high={wm.high}"
            )
        self._ch = phasekit.Channel(capacity)
        self._watermark = wm
        self._on_high = on_high
        self._on_low = on_low
        self._above = False
        self._getters: deque[asyncio.Future[None]] = deque()
        self._putters: deque[asyncio.Future[None]] = deque()
        self._callbacks: set[asyncio.Task[Any]] = set()

    @property
    def capacity(self) -> int:
        return int(self._ch.capacity)

    @property
    def watermark(self) -> Watermark:
        return self._watermark

    def size(self) -> int:
        return len(self._ch)

    def closed(self) -> bool:
        return bool(self._ch.closed)

    async def close(self) -> None:
        self._ch.close()
        for waiters in (self._getters, self._putters):
            while waiters:
                fut = waiters.popleft()
                if not fut.done():
                    fut.set_result(None)

    async def put(self, item: T) -> None:
        ch = self._ch
        while True:
            try:
                ch.try_send(item)
                break
            except ChannelFull:
                await self._wait(self._putters)
        self._wake(self._getters)
        self._signal()

    async def get(self) -> T:
        ch = self._ch
        while True:
            try:
                item = ch.try_recv()
                break
            except ChannelEmpty:
                await self._wait(self._getters)
        self._wake(self._putters)
        self._signal()
        return item  # type: ignore[no-any-return]

    async def _wait(self, waiters: deque[asyncio.Future[None]]) -> None:
        fut = asyncio.get_running_loop().create_future()
        waiters.append(fut)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self._wake(waiters)  # pass the wake-up on to the next waiter
            raise

    @staticmethod
    def _wake(waiters: deque[asyncio.Future[None]]) -> None:
        while waiters:
            fut = waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                return

    def _signal(self) -> None:
        depth = len(self._ch)
        if not self._above and depth >= self._watermark.high:
            self._above = True
            if self._on_high is not None:
                _keep(self._callbacks, self._on_high())
        elif self._above and depth <= self._watermark.low:
            self._above = False
            if self._on_low is not None:
                _keep(self._callbacks, self._on_low())


async def _items(channels: Iterable[Channel[Any]]) -> AsyncIterator[Any]:
    """Every item of the channels, each drained in turn after the previous one closed."""
    for ch in channels:
        while True:
            try:
                yield await ch.get()
            except ChannelClosed:
                break


# ------------------------------------------------------------------ graph and runtime


@dataclass(frozen=True)
class Node:
    """A node: ``fn(in_channels, out_channels)`` is an async callable; both arguments map
    the neighbouring node's name to the Channel of that edge."""

    name: str
    fn: Callable[..., Any]


@dataclass(frozen=True)
class Edge:
    src: str
    dst: str


@dataclass
class Dag:
    """Nodes and the edges between them; ``validate()`` checks it is a non-empty DAG."""

    nodes: dict[str, Node] = field(default_factory=dict)
    edges: list[Edge] = field(default_factory=list)

    def add_node(self, node: Node) -> None:
        if node.name in self.nodes:
            raise DagValidationError(f"duplicate node name {node.name!r}")
        if not callable(node.fn):
            raise DagValidationError(f"node {node.name!r}: fn must be callable, got {node.fn!r}")
        self.nodes[node.name] = node

    def add_edge(self, src: str, dst: str) -> None:
        for end, name in (("source", src), ("destination", dst)):
            if name not in self.nodes:
                known = ", ".join(map(repr, self.nodes)) or "none"
                raise DagValidationError(
                    f"edge {src!r} -> {dst!r}: unknown {end} node {name!r} (nodes: {known})"
                )
        if Edge(src, dst) in self.edges:
            raise DagValidationError(f"edge {src!r} -> {dst!r} already exists")
        self.edges.append(Edge(src, dst))

    def validate(self) -> None:
        if not self.nodes:
            raise DagValidationError("the graph has no nodes")
        order = graphlib.TopologicalSorter({n: set() for n in self.nodes})
        for e in self.edges:
            order.add(e.dst, e.src)
        try:
            order.prepare()
        except graphlib.CycleError as exc:
            cycle = " -> ".join(map(repr, exc.args[1]))
            raise DagValidationError(f"the graph has a cycle: {cycle}") from None

    def sources(self) -> list[str]:
        targets = {e.dst for e in self.edges}
        return [n for n in self.nodes if n not in targets]

    def successors(self, name: str) -> list[str]:
        return [e.dst for e in self.edges if e.src == name]


@dataclass(frozen=True)
class RunConfig:
    """``channel_capacity`` of every edge; its ``Watermark`` at ``high_watermark_pct`` and
    ``low_watermark_pct`` of the capacity (crossings are counted in ``DagRunStats``);
    ``max_concurrency``: most nodes a graph may have."""

    channel_capacity: int = 2048
    high_watermark_pct: float = 0.75
    low_watermark_pct: float = 0.25
    max_concurrency: int = 64

    def __post_init__(self) -> None:
        _positive_int(self.channel_capacity, "RunConfig.channel_capacity")
        _positive_int(self.max_concurrency, "RunConfig.max_concurrency")
        self.watermark()

    def watermark(self) -> Watermark:
        return _marks(
            self.channel_capacity, self.high_watermark_pct, self.low_watermark_pct,
            "RunConfig (high_watermark_pct, low_watermark_pct)",
        )  # fmt: skip


@dataclass
class DagRunStats:
    tasks_started: int = 0
    tasks_completed: int = 0
    cancelled: bool = False
    high_watermark_events: int = 0
    low_watermark_events: int = 0


class DagRuntime:
    """Runs every node of a Dag as a task on the caller's event loop, one Channel per edge.

    ``await start()`` returns when every node has returned (a node's output channels are
    closed when it returns); the first node to raise cancels the others and ``start()``
    raises ``StreamError`` naming it. ``await stop()`` cancels a run in progress.
    """

    def __init__(self, dag: Dag, config: Optional[RunConfig] = None) -> None:
        dag.validate()
        self._dag = dag
        self._cfg = config or RunConfig()
        if len(dag.nodes) > self._cfg.max_concurrency:
            raise DagValidationError(
                f"the graph has {len(dag.nodes)} nodes, more than RunConfig.max_concurrency "
                f"({self._cfg.max_concurrency})"
            )
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._channels: dict[tuple[str, str], Channel[Any]] = {}
        self._stats = DagRunStats()

    @property
    def stats(self) -> DagRunStats:
        return self._stats

    async def _on_high(self) -> None:
        self._stats.high_watermark_events += 1

    async def _on_low(self) -> None:
        self._stats.low_watermark_events += 1

    def _wire(self) -> None:
        wm = self._cfg.watermark()
        for e in self._dag.edges:
            self._channels[(e.src, e.dst)] = Channel(
                self._cfg.channel_capacity, watermark=wm, on_high=self._on_high, on_low=self._on_low
            )

    async def _run_node(self, node: Node) -> None:
        ins = {s: ch for (s, d), ch in self._channels.items() if d == node.name}
        outs = {d: ch for (s, d), ch in self._channels.items() if s == node.name}
        try:
            await node.fn(ins, outs)
        finally:
            for ch in outs.values():
                await ch.close()

    async def start(self) -> DagRunStats:
        if self._tasks:
            return self._stats
        self._wire()
        for name, node in self._dag.nodes.items():
            self._tasks[name] = asyncio.create_task(self._run_node(node), name=f"dag-node:{name}")
            self._stats.tasks_started += 1
        try:
            await self._supervise()
        finally:
            for ch in self._channels.values():
                await ch.close()
        return self._stats

    async def _supervise(self) -> None:
        pending = set(self._tasks.values())
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_EXCEPTION)
            failed = [t for t in done if not t.cancelled() and t.exception() is not None]
            if failed:
                await self._cancel(pending)
                raise self._error(failed[0])
        self._stats.tasks_completed = sum(
            1 for t in self._tasks.values() if not t.cancelled() and t.exception() is None
        )

    def _error(self, task: asyncio.Task[None]) -> StreamError:
        name = next(n for n, t in self._tasks.items() if t is task)
        exc = task.exception()
        err = StreamError(f"node {name!r} failed with {type(exc).__name__}: {exc}")
        err.node = name  # type: ignore[attr-defined]
        err.__cause__ = exc
        return err

    async def _cancel(self, tasks: Iterable[asyncio.Task[None]]) -> None:
        tasks = list(tasks)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def stop(self) -> None:
        if not self._tasks:
            return
        self._stats.cancelled = True
        await self._cancel(self._tasks.values())
        for ch in self._channels.values():
            await ch.close()


# ------------------------------------------------------------------ partitioning


@dataclass(frozen=True)
class PartitioningSpec:
    """``partitions`` channels of ``capacity``; ``on_high(i)`` / ``on_low(i)`` fire when
    partition i's depth crosses ``high_watermark`` / ``low_watermark`` (fractions)."""

    partitions: int = 8
    high_watermark: float = 0.75
    low_watermark: float = 0.25
    capacity: int = 2048

    def __post_init__(self) -> None:
        check_partitions(self.partitions, "PartitioningSpec.partitions")
        _positive_int(self.capacity, "PartitioningSpec.capacity")
        self.marks()

    def marks(self) -> Watermark:
        return _marks(
            self.capacity, self.high_watermark, self.low_watermark,
            "PartitioningSpec (high_watermark, low_watermark)",
        )  # fmt: skip


class PartitionedChannel(Generic[K, T]):
    """N channels; an item goes to one of them by the hash of its key."""

    def __init__(
        self,
        spec: PartitioningSpec,
        *,
        on_high: Optional[PartitionCallback] = None,
        on_low: Optional[PartitionCallback] = None,
    ) -> None:
        self._spec = spec
        wm = spec.marks()
        self._parts = [
            Channel[T](
                spec.capacity,
                watermark=wm,
                on_high=None if on_high is None else _bind(on_high, i),
                on_low=None if on_low is None else _bind(on_low, i),
            )
            for i in range(spec.partitions)
        ]
        self.error: Optional[BaseException] = None

    def partitions(self) -> int:
        return self._spec.partitions

    def channel(self, idx: int) -> Channel[T]:
        return self._parts[idx]

    async def put(self, key_hash: int, item: T) -> None:
        """Put ``item`` into partition ``(key_hash & 0x7FFFFFFF) % partitions``."""
        await self._parts[(int(key_hash) & 0x7FFFFFFF) % self._spec.partitions].put(item)

    async def put_partition(self, idx: int, item: T) -> None:
        await self._parts[idx].put(item)

    async def stream_partition(self, idx: int) -> AsyncIterator[T]:
        """The items of partition ``idx`` until it is closed and drained; raises
        ``StreamError`` then if the feeding source failed."""
        ch = self._parts[idx]
        while True:
            try:
                item = await ch.get()
            except ChannelClosed:
                break
            yield item
        if self.error is not None:
            raise StreamError(f"hash_partition: the source failed: {self.error!r}") from self.error

    async def close(self) -> None:
        for p in self._parts:
            await p.close()


def _bind(fn: PartitionCallback, idx: int) -> Callback:
    async def call() -> None:
        await fn(idx)

    return call


_PUMPS: set[asyncio.Task[Any]] = set()


async def hash_partition(
    source: AsyncIterator[T],
    *,
    get_key: Callable[[T], Any],
    hasher: Optional[Callable[[Any], int]] = None,
    spec: Optional[PartitioningSpec] = None,
    on_high: Optional[PartitionCallback] = None,
    on_low: Optional[PartitionCallback] = None,
) -> PartitionedChannel[Any, T]:
    """Fan ``source`` out into ``spec.partitions`` channels by key, in a background task.

    Without ``hasher`` a key goes to ``phasekit.stream.partition(key, n)`` (murmur3, the
    same in every process); with one, to ``(hasher(key) & 0x7FFFFFFF) % n``.
    """
    spec = spec or PartitioningSpec()
    getter = field_getter(get_key, "hash_partition: get_key")
    assert getter is not None
    parts: PartitionedChannel[Any, T] = PartitionedChannel(spec, on_high=on_high, on_low=on_low)
    n = spec.partitions

    async def pump() -> None:
        try:
            async for item in source:
                key = getter(item)
                if hasher is None:
                    await parts.put_partition(partition(key, n), item)
                else:
                    await parts.put(hasher(key), item)
        except Exception as exc:
            parts.error = exc
            log.error("hash_partition: the source failed: %r", exc)
        finally:
            await parts.close()

    _keep(_PUMPS, pump())
    return parts


# ------------------------------------------------------------------ windows


@dataclass(frozen=True)
class WatermarkPolicy:
    """Watermark = largest event time seen - ``lag``; a window takes items until the
    watermark passes its end + ``allowed_lateness`` (phasekit's ``max_out_of_orderness``
    and ``allowed_lateness``)."""

    lag: _dt.timedelta = _dt.timedelta(seconds=5)
    allowed_lateness: _dt.timedelta = _dt.timedelta(seconds=0)


@dataclass(frozen=True)
class TumblingWindowSpec:
    """Windows of ``size`` aligned to the epoch. ``emit_partial``: while the source is
    quiet for ``flush_interval`` seconds, the windows still open are emitted as they
    stand (``WindowFrame.partial``), before their final frame."""

    size: _dt.timedelta
    emit_partial: bool = False


@dataclass(frozen=True)
class WindowFrame(Generic[K, T]):
    """One window's items (arrival order). ``firing`` counts earlier final frames of the
    same window (late items within the allowed lateness fire it again with all its
    items); ``partial`` frames come before the final one (``emit_partial``)."""

    key: Optional[K]
    start: _dt.datetime
    end: _dt.datetime
    items: tuple[T, ...]
    firing: int = 0
    partial: bool = False


def _frame(r: WindowResult, partial: bool = False) -> WindowFrame[Any, Any]:
    return WindowFrame(
        r.key, _datetime(r.start), _datetime(r.end), tuple(r.value), r.firing, partial
    )


def _late(on_late: Optional[Callable[[Any], Any]], item: Any, where: str) -> None:
    if on_late is not None:
        on_late(item)
    else:
        log.debug("%s: dropped a late item %r", where, item)


async def tumbling_window_event_time(
    source: AsyncIterator[T],
    spec: TumblingWindowSpec,
    *,
    get_event_time: Callable[[T], _dt.datetime],
    get_key: Optional[Callable[[T], Any]] = None,
    watermark_policy: Optional[WatermarkPolicy] = None,
    flush_interval: float = 0.250,
    on_late: Optional[Callable[[T], Any]] = None,
) -> AsyncIterator[WindowFrame[Any, T]]:
    """Event-time tumbling windows over phasekit's window operator: a frame is emitted
    once the watermark passes the window's end, and every open window at the end of the
    input. Items too late for their window go to ``on_late`` (default: dropped and
    logged at debug level). ``flush_interval``: see ``TumblingWindowSpec.emit_partial``.
    """
    policy = watermark_policy or WatermarkPolicy()
    if not isinstance(flush_interval, (int, float)) or flush_interval <= 0:
        raise InvalidArgument(
            f"tumbling_window_event_time: flush_interval must be seconds > 0, got {flush_interval!r}"
        )
    op = WindowOperator(
        TumblingWindows(positive_duration(spec.size, "TumblingWindowSpec.size")),
        timestamp=get_event_time,
        key=get_key,
        max_out_of_orderness=non_negative_duration(policy.lag, "WatermarkPolicy.lag"),
        allowed_lateness=non_negative_duration(
            policy.allowed_lateness, "WatermarkPolicy.allowed_lateness"
        ),
    )
    where = "tumbling_window_event_time"
    async for batch in _pull(source, flush_interval if spec.emit_partial else None):
        if batch is None:
            for r in op.pending():
                yield _frame(r, partial=True)
            continue
        for r in op.process(batch[0]) or ():
            if type(r) is Out:
                _late(on_late, r.value, where)
            else:
                yield _frame(r)
    for r in op.close():
        yield _frame(r)


async def _pull(
    source: AsyncIterator[T], quiet: Optional[float]
) -> AsyncIterator[Optional[tuple[T]]]:
    """``(item,)`` for each item of ``source``; with ``quiet`` seconds, also ``None``
    whenever the source has been quiet that long."""
    it = source.__aiter__()
    if quiet is None:
        async for item in it:
            yield (item,)
        return
    pending: Optional[asyncio.Future[T]] = None
    try:
        while True:
            if pending is None:
                pending = asyncio.ensure_future(it.__anext__())
            done, _ = await asyncio.wait({pending}, timeout=quiet)
            if not done:
                yield None
                continue
            try:
                item = pending.result()
            except StopAsyncIteration:
                pending = None
                return
            pending = None
            yield (item,)
    finally:
        if pending is not None:
            pending.cancel()


async def _available(source: AsyncIterator[T], most: int) -> AsyncIterator[list[T]]:
    """The items of ``source`` in lists of what has arrived (at most ``most``), so that a
    vectorised operator takes them at once: an item never waits for others (a source that
    awaits between items gives lists of one), while a source that does not pause fills
    lists of ``most``. The source's error is raised after the items before it."""
    buf: list[T] = []
    more, room = asyncio.Event(), asyncio.Event()
    state: dict[str, Any] = {"done": False, "error": None}

    async def pump() -> None:
        try:
            async for item in source:
                buf.append(item)
                more.set()
                if len(buf) >= most:
                    room.clear()
                    await room.wait()
        except Exception as exc:
            state["error"] = exc
        finally:
            state["done"] = True
            more.set()

    task = asyncio.ensure_future(pump())
    try:
        while True:
            if not buf:
                if state["done"]:
                    break
                more.clear()
                await more.wait()
                continue
            batch = buf[:]
            buf.clear()
            room.set()
            yield batch
        if state["error"] is not None:
            raise state["error"]
    finally:
        task.cancel()


# ------------------------------------------------------------------ contrib operators


@dataclass
class Bar:
    symbol: str
    open: float
    high: float
    low: float
    close: float
    start: _dt.datetime
    end: _dt.datetime
    count: int


async def resample_ohlc(
    src: AsyncIterator[Any],
    *,
    get_symbol: Any,
    get_price: Any,
    get_time: Any,
    window: _dt.timedelta,
    watermark_lag: _dt.timedelta = _dt.timedelta(seconds=2),
    on_late: Optional[Callable[[Any], Any]] = None,
) -> AsyncIterator[Bar]:
    """OHLC bars of ``window`` per symbol over phasekit's ``ohlc_resample``: open and
    close are the prices of the earliest and latest tick by time; a bar is emitted once
    the watermark (latest time - ``watermark_lag``) passes its end, and at the end of the
    input. Getters are callables or field names. Late ticks go to ``on_late`` (default:
    dropped and logged at debug level). The ticks that have arrived are aggregated
    together (vectorised); a tick never waits for more to arrive."""
    sym, price, ts = (
        field_getter(g, f"resample_ohlc: {n}")
        for g, n in ((get_symbol, "get_symbol"), (get_price, "get_price"), (get_time, "get_time"))
    )
    assert sym is not None and price is not None and ts is not None
    op = OhlcResample(window, ts="ts", price="price", volume=None, by="symbol",
                      max_delay=non_negative_duration(watermark_lag, "watermark_lag"))  # fmt: skip
    span = op.interval
    async for ticks in _available(src, StreamSettings().batch_size):
        rows = [{"ts": to_ns(ts(t)), "price": price(t), "symbol": sym(t), "tick": t} for t in ticks]
        for out in op.process_batch(rows):
            if type(out) is Out:
                _late(on_late, out.value["tick"], "resample_ohlc")
            else:
                yield _bar(out, span)
    for out in op.close():
        yield _bar(out, span)


def _bar(row: Mapping[str, Any], span: int) -> Bar:
    start = int(row["ts"])
    return Bar(
        symbol=row["symbol"],
        open=row["open"],
        high=row["high"],
        low=row["low"],
        close=row["close"],
        start=_datetime(start),
        end=_datetime(start + span),
        count=int(row["trades"]),
    )


async def deduplicate(
    src: AsyncIterator[Any], *, key_fn: Callable[[Any], tuple[Any, Any]], ttl: float = 5.0
) -> AsyncIterator[Any]:
    """Drops an item whose ``key_fn(item) == (key, value)`` repeats the value last passed
    for that key less than ``ttl`` seconds ago (processing time)."""
    if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or ttl < 0:
        raise InvalidArgument(f"deduplicate: ttl must be seconds >= 0, got {ttl!r}")
    loop = asyncio.get_running_loop()
    last: dict[Any, tuple[Any, float]] = {}
    async for item in src:
        key, value = key_fn(item)
        now = loop.time()
        prev = last.get(key)
        if prev is not None and prev[0] == value and now - prev[1] < ttl:
            continue
        last[key] = (value, now)
        yield item


async def throttle(src: AsyncIterator[T], *, rate_limit: float = 100) -> AsyncIterator[T]:
    """At most ``rate_limit`` items per second, evenly spaced; the first item waits
    ``1 / rate_limit`` too, so n items take n / rate_limit seconds (phasekit's
    ``Throttle(rate, initial=0)``, waiting without blocking the event loop)."""
    waits: list[float] = []
    bucket = Throttle(rate_limit, initial=0, sleep=waits.append)
    async for item in src:
        bucket.admit(item)
        while waits:
            await asyncio.sleep(waits.pop())
        yield item


async def router(
    src: AsyncIterator[Any], routes: Mapping[Any, Channel[Any]], *, route_key: Any
) -> None:
    """Puts each item into ``routes[route_key(item)]``; items of other keys are counted
    and logged; every route is closed at the end."""
    key_of = field_getter(route_key, "router: route_key")
    assert key_of is not None
    unrouted = 0
    try:
        async for item in src:
            ch = routes.get(key_of(item))
            if ch is None:
                unrouted += 1
                continue
            await ch.put(item)
    finally:
        for ch in routes.values():
            await ch.close()
        if unrouted:
            log.warning("router: %d items had a key with no route and were dropped", unrouted)


async def map_async(src: Channel[Any], dst: Channel[Any], fn: Callable[[Any], Any]) -> None:
    """``fn(item)`` (awaited when it is a coroutine) for every item; closes ``dst``."""
    async for item in _items([src]):
        r = fn(item)
        await dst.put(await r if asyncio.iscoroutine(r) else r)
    await dst.close()


async def filter_async(
    src: Channel[Any], dst: Channel[Any], predicate: Callable[[Any], Any]
) -> None:
    """The items for which ``predicate`` (awaited when a coroutine) is true; closes ``dst``."""
    async for item in _items([src]):
        r = predicate(item)
        if await r if asyncio.iscoroutine(r) else r:
            await dst.put(item)
    await dst.close()


async def buffer_async(
    src: Channel[Any], dst: Channel[Any], *, max_items: int = 500, flush_interval: float = 0.25
) -> None:
    """Lists of up to ``max_items``; a shorter list once ``flush_interval`` seconds pass
    without the list filling; the rest at the end. Closes ``dst``."""
    _positive_int(max_items, "buffer_async: max_items")
    buf: list[Any] = []
    async for batch in _pull(_items([src]), flush_interval):
        if batch is not None:
            buf.append(batch[0])
        if buf and (batch is None or len(buf) >= max_items):
            await dst.put(buf)
            buf = []
    if buf:
        await dst.put(buf)
    await dst.close()


# ------------------------------------------------------------------ building from a dict


@dataclass
class ComponentRegistry:
    """Node types by name: ``providers`` make sources (``factory(**params)`` returns an
    iterable or async iterable), ``operators`` transform an async iterator of the node's
    input (``factory(items, **params)`` returns an async iterator of outputs, or a
    coroutine for a sink)."""

    providers: dict[str, Callable[..., Any]] = field(default_factory=dict)
    operators: dict[str, Callable[..., Any]] = field(default_factory=dict)

    def register_provider(self, type_id: str, factory: Callable[..., Any]) -> None:
        self.providers[type_id] = factory

    def register_operator(self, type_id: str, factory: Callable[..., Any]) -> None:
        self.operators[type_id] = factory

    def build_provider(self, type_id: str, **kwargs: Any) -> Any:
        if type_id not in self.providers:
            raise DagBuildError(f"provider type {type_id!r} is not registered ({self._known()})")
        return self.providers[type_id](**kwargs)

    def get_operator(self, type_id: str) -> Callable[..., Any]:
        if type_id not in self.operators:
            raise DagBuildError(f"operator type {type_id!r} is not registered ({self._known()})")
        return self.operators[type_id]

    def _known(self) -> str:
        names = sorted([*self.providers, *self.operators])
        return "registered: " + (", ".join(names) or "none")


def default_registry() -> ComponentRegistry:
    """The async-iterator operators of this module under their original type names."""
    reg = ComponentRegistry()
    reg.register_operator("operator.resample_ohlc", resample_ohlc)
    reg.register_operator("operator.deduplicate", deduplicate)
    reg.register_operator("operator.throttle", throttle)
    reg.register_operator("operator.tumbling_window_event_time", tumbling_window_event_time)
    return reg


async def _send_all(items: Any, outs: Mapping[str, Channel[Any]]) -> None:
    if hasattr(items, "__aiter__"):
        async for x in items:
            for ch in outs.values():
                await ch.put(x)
    else:
        for x in items:
            for ch in outs.values():
                await ch.put(x)


def _node_fn(type_id: str, params: dict[str, Any], registry: ComponentRegistry) -> Any:
    if type_id in registry.providers:

        async def provider_node(_in: Any, out: Mapping[str, Channel[Any]]) -> None:
            await _send_all(registry.build_provider(type_id, **params), out)

        return provider_node
    factory = registry.get_operator(type_id)

    async def operator_node(
        ins: Mapping[str, Channel[Any]], out: Mapping[str, Channel[Any]]
    ) -> None:
        result = factory(_items(ins.values()), **params)
        if hasattr(result, "__aiter__"):
            await _send_all(result, out)
        elif asyncio.iscoroutine(result):
            await result
        elif result is not None:
            raise StreamError(
                f"operator {type_id!r} returned {type(result).__name__}; expected an async "
                "iterator, a coroutine or None"
            )

    return operator_node


def build_dag_from_dict(config: Mapping[str, Any], registry: ComponentRegistry) -> Dag:
    """A runnable Dag from ``{"dag": {"nodes": [{"id", "type", "params"}], "edges":
    [[src, dst], ...]}}``: each node's type is looked up in ``registry`` now, so an
    unknown type fails here, not at run time."""
    spec = config.get("dag") if isinstance(config, Mapping) else None
    if not isinstance(spec, Mapping) or not spec:
        raise DagBuildError("the config needs a non-empty 'dag' mapping with 'nodes' and 'edges'")
    nodes = spec.get("nodes") or []
    edges = spec.get("edges") or []
    dag = Dag()
    if not nodes:
        log.warning("build_dag_from_dict: 'dag.nodes' is empty; the graph has no nodes")
        return dag
    for i, n in enumerate(nodes):
        where = f"dag.nodes[{i}]"
        if not isinstance(n, Mapping) or not n.get("id") or not n.get("type"):
            raise DagBuildError(f"{where}: each node needs 'id' and 'type', got {n!r}")
        params = n.get("params") or {}
        if not isinstance(params, Mapping):
            raise DagBuildError(f"{where}.params must be a mapping, got {params!r}")
        try:
            fn = _node_fn(str(n["type"]), dict(params), registry)
        except DagBuildError as exc:
            raise DagBuildError(f"{where}: {exc}") from None
        dag.add_node(Node(str(n["id"]), fn))
    for i, e in enumerate(edges):
        if not isinstance(e, (list, tuple)) or len(e) != 2:
            raise DagBuildError(f"dag.edges[{i}] must be [from, to], got {e!r}")
        dag.add_edge(str(e[0]), str(e[1]))
    dag.validate()
    return dag
