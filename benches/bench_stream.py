"""Streaming DAG throughput against an asyncio.Queue pipeline; ohlc_resample against polars.

``stream:pipeline``: ``N_ITEMS`` Python ints through source -> map (a Python callable)
-> sink (a Python callable) on the rust and python Channel backends, and through the
same three stages connected by bounded ``asyncio.Queue``s (one coroutine per stage).
``items`` = items per call.
``stream:pipeline_arrow``: the same with Arrow record batches of ``ROWS`` rows; the map
computes a column with pyarrow.compute. ``items`` = rows per call.
``stream:ohlc``: ``N_TICKS`` ticks (timestamp, price, volume) in batches of
``TICK_BATCH`` rows streamed through a Dag (source -> ohlc_resample("1m") -> sink) on
each backend, against polars ``group_by_dynamic`` on the whole table at once.
``items`` = ticks per call.
``stream:peer_*`` (phasekit against ``market-data-pipeline`` 0.8.70, the DAG runtime
design note 003 planned, from the bench extra, and against plain ``asyncio.Queue``
pipelines; rounds without warm-up, since the peer takes about a minute per million
items): ``peer_pipeline``: ``N_PEER`` ints through source -> map -> sink (the peer: one
``Node`` coroutine per stage over its ``Channel``s); ``peer_ohlc``: ``N_PEER_TICKS`` tick dicts
(100 symbols, datetime times) into 1-minute bars per symbol (the peer's
``resample_ohlc``; phasekit's ``ohlc_resample(by=...)``; a dict-of-bars coroutine);
``peer_partition``: ``N_PEER`` dicts partitioned 8 ways by symbol (the peer's
``hash_partition``; phasekit's keyed ``parallelism=8``) into a slow sink that waits
``SLOW_WAIT`` seconds per ``SLOW_EVERY`` items it receives (a write), per partition.
Every benchmark checks the last call's output: the sink's count and sum of the items
(the same counting sink for every implementation), the rows and the summed column of
the batches, the bars equal to polars' bars (peer groups: equal across implementations).
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any, Callable

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pytest

import phasekit
from phasekit.stream import Dag
from phasekit.stream.ohlc import ohlc_resample

N_ITEMS = 300_000
CAPACITY = 1024
ROWS = 10_000
N_BATCHES = 1000
N_TICKS = 10_000_000
TICK_BATCH = 100_000
ROUNDS = 3
IMPLS = ["rust", "python", "asyncio.Queue"]
N_PEER = 100_000
N_PEER_TICKS = 1_000_000  # the OHLC group: the 1 M ticks
PEER_IMPLS = ["rust", "python", "market-data-pipeline", "asyncio.Queue"]
PARTITIONS = 8
SLOW_EVERY = 100
SLOW_WAIT = 0.001


@pytest.fixture
def use_backend(request: pytest.FixtureRequest) -> Any:
    previous = phasekit.get_backend()
    yield lambda name: phasekit.set_backend(name)
    phasekit.set_backend(previous)


def _dag_pipeline(source: Any, fn: Callable[[Any], Any], sink: Callable[[Any], Any]) -> Any:
    def run() -> Any:
        dag = Dag("bench", capacity=CAPACITY)
        dag.add_source("src", source)
        dag.add_node("map", fn)
        dag.add_sink("sink", sink)
        dag.chain("src", "map", "sink")
        return dag.run()

    return run


def _asyncio_pipeline(source: Any, fn: Callable[[Any], Any], sink: Callable[[Any], Any]) -> Any:
    end = object()

    async def main() -> None:
        q1: asyncio.Queue[Any] = asyncio.Queue(CAPACITY)
        q2: asyncio.Queue[Any] = asyncio.Queue(CAPACITY)

        async def produce() -> None:
            for item in source:
                await q1.put(item)
            await q1.put(end)

        async def transform() -> None:
            while (item := await q1.get()) is not end:
                await q2.put(fn(item))
            await q2.put(end)

        async def consume() -> None:
            while (item := await q2.get()) is not end:
                sink(item)

        await asyncio.gather(produce(), transform(), consume())

    return lambda: asyncio.run(main())


def _runner(impl: str, use_backend: Any, source: Any, fn: Any, sink: Any) -> Any:
    if impl == "asyncio.Queue":
        return _asyncio_pipeline(source, fn, sink)
    use_backend(impl)
    return _dag_pipeline(source, fn, sink)


class Tally:
    """The sink of every implementation: counts items and sums a value of each."""

    def __init__(self, value: Callable[[Any], Any]) -> None:
        self.value = value
        self.count = 0
        self.total: Any = 0
        self.last: Any = None

    def __call__(self, item: Any) -> None:
        self.count += 1
        self.total += self.value(item)
        self.last = item

    def counted(self, run: Callable[[], Any]) -> Callable[[], tuple[int, Any]]:
        """``run`` from a zeroed tally; returns (items, sum) of that call."""

        def once() -> tuple[int, Any]:
            self.count, self.total = 0, 0
            run()
            return self.count, self.total

        return once


@pytest.mark.parametrize("impl", IMPLS)
def test_pipeline_items(benchmark: Any, impl: str, use_backend: Any) -> None:
    benchmark.group = "stream:pipeline"
    benchmark.extra_info.update(items=N_ITEMS, unit="items")
    items = range(N_ITEMS)
    tally = Tally(lambda x: x)
    run = tally.counted(_runner(impl, use_backend, items, lambda x: x + 1, tally))
    got = benchmark.pedantic(run, rounds=ROUNDS, iterations=1, warmup_rounds=1)
    assert got == (N_ITEMS, N_ITEMS * (N_ITEMS + 1) // 2)  # 1 .. N_ITEMS, each once


@pytest.fixture(scope="module")
def arrow_batches() -> list[pa.RecordBatch]:
    rng = np.random.default_rng(5)
    base = pa.record_batch(
        {"id": pa.array(np.arange(ROWS)), "price": pa.array(100 + rng.standard_normal(ROWS))}
    )
    return [base] * N_BATCHES


def _scale(batch: pa.RecordBatch) -> pa.RecordBatch:
    return pa.RecordBatch.from_arrays(
        [batch.column(0), pc.multiply(batch.column(1), 2.0)], names=["id", "price2"]
    )


@pytest.mark.parametrize("impl", IMPLS)
def test_pipeline_arrow_batches(
    benchmark: Any, impl: str, use_backend: Any, arrow_batches: list[pa.RecordBatch]
) -> None:
    benchmark.group = "stream:pipeline_arrow"
    benchmark.extra_info.update(items=ROWS * N_BATCHES, unit="rows")
    tally = Tally(lambda b: b.num_rows)
    run = tally.counted(_runner(impl, use_backend, arrow_batches, _scale, tally))
    got = benchmark.pedantic(run, rounds=ROUNDS, iterations=1, warmup_rounds=1)
    assert got == (N_BATCHES, ROWS * N_BATCHES)
    base = arrow_batches[-1]
    assert tally.last.column("id").equals(base.column("id"))
    np.testing.assert_array_equal(tally.last.column("price2"), base.column("price").to_numpy() * 2)


@pytest.fixture(scope="module")
def ticks() -> pa.Table:
    rng = np.random.default_rng(1)
    ts = 1_700_000_000 * 10**9 + np.cumsum(rng.integers(1, 20_000_000, N_TICKS))
    return pa.table(
        {
            "ts": pa.array(ts.astype(np.int64)).cast(pa.timestamp("ns")),
            "price": 100 + np.cumsum(rng.normal(0, 0.01, N_TICKS)),
            "volume": rng.random(N_TICKS) * 100,
        }
    )


def _polars_ohlc(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.group_by_dynamic("ts", every="1m").agg(
        pl.col("price").first().alias("open"),
        pl.col("price").max().alias("high"),
        pl.col("price").min().alias("low"),
        pl.col("price").last().alias("close"),
        pl.col("volume").sum(),
        pl.len().alias("trades"),
    )


@pytest.mark.parametrize("impl", ["rust", "python", "polars"])
def test_ohlc_resample(benchmark: Any, impl: str, use_backend: Any, ticks: pa.Table) -> None:
    benchmark.group = "stream:ohlc"
    benchmark.extra_info.update(items=N_TICKS, unit="ticks")
    if impl == "polars":
        frame = pl.from_arrow(ticks)
        result = benchmark.pedantic(
            lambda: _polars_ohlc(frame), rounds=ROUNDS, iterations=1, warmup_rounds=1
        )
        assert result.height > 0 and int(result["trades"].sum()) == N_TICKS
        return
    use_backend(impl)
    batches = ticks.to_batches(max_chunksize=TICK_BATCH)
    bars: list[pa.RecordBatch] = []

    def run() -> None:
        bars.clear()
        dag = Dag("ohlc", capacity=8)
        dag.add_source("ticks", batches)
        dag.add_node("bars", ohlc_resample("1m"))
        dag.add_sink("out", bars.append)
        dag.chain("ticks", "bars", "out")
        dag.run()

    benchmark.pedantic(run, rounds=ROUNDS, iterations=1, warmup_rounds=1)
    ours = pl.from_arrow(pa.Table.from_batches(bars))
    theirs = _polars_ohlc(pl.from_arrow(ticks))
    assert ours.height == theirs.height
    for name in ("open", "high", "low", "close"):
        assert ours[name].to_list() == theirs[name].to_list(), name


# ------------------------------------------------------------------ against market-data-pipeline


def _peer() -> Any:
    return pytest.importorskip(
        "market_data_pipeline.orchestration.dag", reason="the bench extra's market-data-pipeline"
    )


def _peer_pipeline(n: int, fn: Callable[[Any], Any], sink: Callable[[Any], Any]) -> Any:
    dag_mod = _peer()

    async def src(_in: Any, out: Any) -> None:
        (ch,) = out.values()
        for i in range(n):
            await ch.put(i)

    async def stage(ins: Any, out: Any) -> None:
        (src_ch,), (dst,) = ins.values(), out.values()
        while True:
            try:
                x = await src_ch.get()
            except dag_mod.ChannelClosed:
                return
            await dst.put(fn(x))

    async def snk(ins: Any, _out: Any) -> None:
        (ch,) = ins.values()
        while True:
            try:
                sink(await ch.get())
            except dag_mod.ChannelClosed:
                return

    def run() -> None:
        dag = dag_mod.Dag()
        for name, node in (("src", src), ("map", stage), ("sink", snk)):
            dag.add_node(dag_mod.Node(name, node))
        dag.add_edge("src", "map")
        dag.add_edge("map", "sink")
        asyncio.run(dag_mod.DagRuntime(dag, dag_mod.RunConfig(channel_capacity=CAPACITY)).start())

    return run


@pytest.mark.parametrize("impl", PEER_IMPLS)
def test_peer_pipeline(benchmark: Any, impl: str, use_backend: Any) -> None:
    benchmark.group = "stream:peer_pipeline"
    benchmark.extra_info.update(items=N_PEER, unit="items")
    tally = Tally(lambda x: x)
    fn = lambda x: x + 1  # noqa: E731
    if impl == "market-data-pipeline":
        run = _peer_pipeline(N_PEER, fn, tally)
    else:
        run = _runner(impl, use_backend, range(N_PEER), fn, tally)
    got = benchmark.pedantic(tally.counted(run), rounds=ROUNDS, iterations=1, warmup_rounds=0)
    assert got == (N_PEER, N_PEER * (N_PEER + 1) // 2)


BASE_TIME = datetime(2024, 1, 2, 9, 30, tzinfo=UTC)


@pytest.fixture(scope="module")
def tick_dicts() -> list[dict[str, Any]]:
    rng = np.random.default_rng(3)
    prices = (100 + np.cumsum(rng.normal(0, 0.01, N_PEER_TICKS))).tolist()
    step = timedelta(milliseconds=6)  # 1 M ticks: 100 minutes of 100 symbols
    return [
        {"sym": f"S{i % 100:02d}", "t": BASE_TIME + i * step, "px": prices[i]}
        for i in range(N_PEER_TICKS)
    ]


BarKey = tuple[str, int, float, float, float, float, int]


def _minute(t: datetime) -> int:
    return int((t - BASE_TIME).total_seconds() // 60)


def _ohlc_phasekit(ticks: list[dict[str, Any]], out: list[BarKey]) -> Callable[[], None]:
    def run() -> None:
        dag = Dag("peer-ohlc", capacity=CAPACITY)
        dag.add_source("ticks", ticks)
        dag.add_node("bars", ohlc_resample("1m", ts="t", price="px", volume=None, by="sym"))
        dag.add_sink("out", lambda b: out.append(_bar_key(b["sym"], b["t"], b)))
        dag.chain("ticks", "bars", "out")
        dag.run()

    return run


def _bar_key(sym: str, start: Any, b: Any) -> BarKey:
    if not isinstance(start, datetime):
        start = datetime.fromtimestamp(start / 1e9, UTC)
    get = b.get if isinstance(b, dict) else lambda f: getattr(b, f)
    count = get("trades") if isinstance(b, dict) else b.count
    return (sym, _minute(start), get("open"), get("high"), get("low"), get("close"), int(count))


def _ohlc_peer(ticks: list[dict[str, Any]], out: list[BarKey]) -> Callable[[], None]:
    contrib = pytest.importorskip(
        "market_data_pipeline.orchestration.dag.contrib.operators_contrib"
    )

    async def main() -> None:
        async def src() -> Any:
            for t in ticks:
                yield t

        async for bar in contrib.resample_ohlc(
            src(), get_symbol=lambda x: x["sym"], get_price=lambda x: x["px"],
            get_time=lambda x: x["t"], window=timedelta(minutes=1),
        ):  # fmt: skip
            out.append(_bar_key(bar.symbol, bar.start, bar))

    return lambda: asyncio.run(main())


def _ohlc_asyncio(ticks: list[dict[str, Any]], out: list[BarKey]) -> Callable[[], None]:
    end = object()

    async def main() -> None:
        q1: asyncio.Queue[Any] = asyncio.Queue(CAPACITY)
        q2: asyncio.Queue[Any] = asyncio.Queue(CAPACITY)

        async def produce() -> None:
            for t in ticks:
                await q1.put(t)
            await q1.put(end)

        async def aggregate() -> None:
            bars: dict[tuple[str, int], list[Any]] = {}
            current = -1
            while (t := await q1.get()) is not end:
                minute, px = _minute(t["t"]), t["px"]
                if minute > current:  # in-order input: earlier minutes are complete
                    for key in sorted(k for k in bars if k[1] < minute):
                        await q2.put((key, bars.pop(key)))
                    current = minute
                bar = bars.get((t["sym"], minute))
                if bar is None:
                    bars[(t["sym"], minute)] = [px, px, px, px, 1]
                else:
                    bar[1], bar[2], bar[3], bar[4] = (
                        max(bar[1], px),
                        min(bar[2], px),
                        px,
                        bar[4] + 1,
                    )
            for key in sorted(bars):
                await q2.put((key, bars[key]))
            await q2.put(end)

        async def consume() -> None:
            while (item := await q2.get()) is not end:
                (sym, minute), (o, h, lo, c, n) = item
                out.append((sym, minute, o, h, lo, c, n))

        await asyncio.gather(produce(), aggregate(), consume())

    return lambda: asyncio.run(main())


@pytest.mark.timeout(1800)
@pytest.mark.parametrize("impl", PEER_IMPLS)
def test_peer_ohlc(
    benchmark: Any, impl: str, use_backend: Any, tick_dicts: list[dict[str, Any]]
) -> None:
    benchmark.group = "stream:peer_ohlc"
    benchmark.extra_info.update(items=N_PEER_TICKS, unit="ticks")
    bars: list[BarKey] = []
    if impl == "market-data-pipeline":
        run = _ohlc_peer(tick_dicts, bars)
    elif impl == "asyncio.Queue":
        run = _ohlc_asyncio(tick_dicts, bars)
    else:
        use_backend(impl)
        run = _ohlc_phasekit(tick_dicts, bars)

    def once() -> None:
        bars.clear()
        run()

    # the peer takes about three minutes per round here: one round of it
    rounds = 1 if impl == "market-data-pipeline" else ROUNDS
    benchmark.pedantic(once, rounds=rounds, iterations=1, warmup_rounds=0)
    assert sum(b[-1] for b in bars) == N_PEER_TICKS
    reference: list[BarKey] = []
    _ohlc_asyncio(tick_dicts, reference)()
    assert sorted(bars) == sorted(reference)


@pytest.fixture(scope="module")
def keyed_items() -> list[dict[str, Any]]:
    return [{"sym": f"S{i % 100:02d}", "x": i} for i in range(N_PEER)]


class SlowSink:
    """Counts items and sums ``x``; every ``SLOW_EVERY`` items it waits ``SLOW_WAIT``."""

    def open(self) -> None:
        self.count = 0
        self.total = 0

    def process(self, item: dict[str, Any]) -> None:
        self.count += 1
        self.total += item["x"]
        if self.count % SLOW_EVERY == 0:
            time.sleep(SLOW_WAIT)

    def close(self) -> tuple[int, int]:
        return self.count, self.total


def _partition_phasekit(items: list[dict[str, Any]]) -> Callable[[], tuple[int, int]]:
    def run() -> tuple[int, int]:
        dag = Dag("peer-partition", capacity=CAPACITY)
        dag.add_source("src", items)
        dag.add_sink("sink", SlowSink, parallelism=PARTITIONS, key="sym")
        dag.connect("src", "sink")
        parts = dag.run().results["sink"]
        assert sum(1 for c, _ in parts if c) == PARTITIONS
        return sum(c for c, _ in parts), sum(t for _, t in parts)

    return run


async def _slow_drain(stream: Any, tally: list[int]) -> None:
    count = 0
    async for item in stream:
        count += 1
        tally[0] += 1
        tally[1] += item["x"]
        if count % SLOW_EVERY == 0:
            await asyncio.sleep(SLOW_WAIT)


def _partition_peer(items: list[dict[str, Any]]) -> Callable[[], tuple[int, int]]:
    dag_mod = _peer()

    async def main() -> tuple[int, int]:
        async def src() -> Any:
            for it in items:
                yield it

        parts = await dag_mod.hash_partition(
            src(), get_key=lambda x: x["sym"],
            spec=dag_mod.PartitioningSpec(partitions=PARTITIONS, capacity=CAPACITY),
        )  # fmt: skip
        tally = [0, 0]
        await asyncio.gather(
            *(_slow_drain(parts.stream_partition(i), tally) for i in range(PARTITIONS))
        )
        return tally[0], tally[1]

    return lambda: asyncio.run(main())


def _partition_asyncio(items: list[dict[str, Any]]) -> Callable[[], tuple[int, int]]:
    end = object()

    async def main() -> tuple[int, int]:
        queues: list[asyncio.Queue[Any]] = [asyncio.Queue(CAPACITY) for _ in range(PARTITIONS)]

        async def produce() -> None:
            for it in items:
                await queues[hash(it["sym"]) % PARTITIONS].put(it)
            for q in queues:
                await q.put(end)

        async def stream(q: asyncio.Queue[Any]) -> Any:
            while (it := await q.get()) is not end:
                yield it

        tally = [0, 0]
        await asyncio.gather(produce(), *(_slow_drain(stream(q), tally) for q in queues))
        return tally[0], tally[1]

    return lambda: asyncio.run(main())


@pytest.mark.parametrize("impl", PEER_IMPLS)
def test_peer_partition_slow_sink(
    benchmark: Any, impl: str, use_backend: Any, keyed_items: list[dict[str, Any]]
) -> None:
    benchmark.group = "stream:peer_partition"
    benchmark.extra_info.update(items=N_PEER, unit="items")
    if impl == "market-data-pipeline":
        run = _partition_peer(keyed_items)
    elif impl == "asyncio.Queue":
        run = _partition_asyncio(keyed_items)
    else:
        use_backend(impl)
        run = _partition_phasekit(keyed_items)
    got = benchmark.pedantic(run, rounds=ROUNDS, iterations=1, warmup_rounds=0)
    assert got == (N_PEER, N_PEER * (N_PEER - 1) // 2)
