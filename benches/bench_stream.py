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
Every benchmark checks the last call's output: the sink's count and sum of the items
(the same counting sink for every implementation), the rows and the summed column of
the batches, the bars equal to polars' bars.
"""

from __future__ import annotations

import asyncio
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
