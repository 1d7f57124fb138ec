"""Async transforms and sinks, awaitable results and ``run_async``, on both backends."""

from __future__ import annotations

import asyncio
import gc
import threading
import time
import warnings
from typing import Any

import pytest

from _stream_support import stream_backend  # noqa: F401
from phasekit.errors import StreamError, Timeout
from phasekit.stream import Dag
from phasekit.stream import operators as ops

pytestmark = pytest.mark.usefixtures("stream_backend")


async def double(x: int) -> int:
    await asyncio.sleep(0)
    return 2 * x


async def plus_minus(x: int) -> Any:
    yield x
    await asyncio.sleep(0)
    yield -x


class AsyncCallable:
    async def __call__(self, x: int) -> int:
        return await double(x)


def _line(node: Any, n: int = 300, batch_size: int = 16, **options: Any) -> tuple[Dag, list[Any]]:
    out: list[Any] = []
    dag = Dag("t", capacity=8, batch_size=batch_size)
    dag.add_source("src", range(n))
    dag.add_node("fn", node, **options)
    dag.add_sink("sink", out.append)
    dag.chain("src", "fn", "sink")
    return dag, out


def _no_unawaited_warning(run: Any) -> Any:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = run()
        gc.collect()
    never = [w for w in caught if "never awaited" in str(w.message)]
    assert never == []
    return result


@pytest.mark.parametrize(
    ("node", "expected"),
    [
        (double, [2 * i for i in range(300)]),
        (ops.map(double), [2 * i for i in range(300)]),
        (AsyncCallable(), [2 * i for i in range(300)]),
        (plus_minus, [v for i in range(300) for v in (i, -i)]),
        (ops.flat_map(plus_minus), [v for i in range(300) for v in (i, -i)]),
        (ops.filter(lambda x: asyncio.sleep(0, result=x % 3 == 0)), list(range(0, 300, 3))),
        (lambda x: double(x), [2 * i for i in range(300)]),
        (ops.map(lambda x: double(x)), [2 * i for i in range(300)]),
        (ops.flat_map(lambda x: plus_minus(x)), [v for i in range(300) for v in (i, -i)]),
    ],
    ids=[
        "async-def",
        "ops.map-async",
        "object-with-async-call",
        "async-generator",
        "ops.flat_map-async-generator",
        "ops.filter-returning-coroutine",
        "lambda-returning-coroutine",
        "ops.map-lambda-returning-coroutine",
        "ops.flat_map-lambda-returning-async-generator",
    ],
)
def test_async_transforms_are_awaited_in_order(node: Any, expected: list[Any]) -> None:
    dag, out = _line(node)
    result = _no_unawaited_warning(dag.run)
    assert out == expected
    assert result.nodes["fn"]["items_in"] == 300
    assert result.nodes["fn"]["items_out"] == len(expected)


def test_async_sinks_objects_and_batches_are_awaited() -> None:
    seen: list[int] = []

    async def sink(x: int) -> None:
        await asyncio.sleep(0)
        seen.append(x)

    class Writer:
        async def open(self) -> None:
            self.rows: list[int] = []

        async def process_batch(self, items: list[int]) -> None:
            await asyncio.sleep(0)
            self.rows.extend(items)

        async def close(self) -> int:
            return sum(self.rows)

    dag = Dag("t", capacity=4)
    dag.add_source("src", range(100))
    dag.add_sink("fn_sink", sink)
    dag.add_sink("lambda_sink", lambda x: sink(x + 1000))
    dag.add_sink("writer", Writer())
    for name in ("fn_sink", "lambda_sink", "writer"):
        dag.connect("src", name)
    result = _no_unawaited_warning(dag.run)
    assert sorted(seen) == list(range(100)) + list(range(1000, 1100))
    assert result.results["writer"] == sum(range(100))


def test_parallel_async_instances_interleave_on_the_run_loop() -> None:
    async def slow(x: int) -> int:
        await asyncio.sleep(0.05)
        return x

    # one item per batch, so that the unkeyed instances share the items out
    sequential, _ = _line(slow, n=16, batch_size=1)
    t0 = time.perf_counter()
    sequential.run(timeout=30)
    one = time.perf_counter() - t0
    parallel, out = _line(slow, n=16, batch_size=1, parallelism=8)
    t0 = time.perf_counter()
    parallel.run(timeout=30)
    eight = time.perf_counter() - t0
    assert sorted(out) == list(range(16))
    assert one >= 16 * 0.05
    assert eight < one / 2


def test_async_node_errors_follow_on_error() -> None:
    async def picky(x: int) -> int:
        if x % 10 == 0:
            raise ValueError(f"bad {x}")
        return x

    dag, out = _line(picky, n=50, on_error="skip")
    result = dag.run(timeout=30)
    assert out == [x for x in range(50) if x % 10]
    assert result.nodes["fn"]["errors"] == 5
    dag, _ = _line(picky, n=50)
    with pytest.raises(StreamError, match=r"'fn'.*ValueError: bad 0") as info:
        dag.run(timeout=30)
    assert info.value.node == "fn"  # type: ignore[attr-defined]


def test_the_run_loop_ends_with_the_run() -> None:
    dag, out = _line(double, n=10)
    dag.run(timeout=30)
    assert out == [2 * i for i in range(10)]
    loops = [t for t in threading.enumerate() if t.name == "phasekit-stream:t:loop"]
    assert loops == []


def test_stream_error_is_a_value_error() -> None:
    dag = Dag("t")
    with pytest.raises(ValueError, match="no nodes"):
        dag.validate()


def test_run_async_leaves_the_callers_loop_free() -> None:
    async def main() -> tuple[Any, int]:
        ticks = 0
        stop = asyncio.Event()

        async def ticker() -> None:
            nonlocal ticks
            while not stop.is_set():
                ticks += 1
                await asyncio.sleep(0.005)

        def slow(x: int) -> int:
            time.sleep(0.01)
            return x

        dag, out = _line(slow, n=20)
        task = asyncio.create_task(ticker())
        result = await dag.run_async(timeout=30)
        stop.set()
        await task
        assert out == list(range(20))
        return result, ticks

    result, ticks = asyncio.run(main())
    assert result.nodes["sink"]["items_in"] == 20
    assert ticks >= 5


def test_cancelling_run_async_cancels_the_run() -> None:
    def forever() -> Any:
        i = 0
        while True:
            i += 1
            time.sleep(0.001)
            yield i

    dag = Dag("t", capacity=4)
    dag.add_source("src", forever)
    dag.add_sink("sink", double)
    dag.connect("src", "sink")

    async def main() -> None:
        task = asyncio.create_task(dag.run_async())
        await asyncio.sleep(0.2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    alive = [t for t in threading.enumerate() if t.name.startswith("phasekit-stream:t:")]
    deadline = time.monotonic() + 5
    while alive and time.monotonic() < deadline:
        time.sleep(0.05)
        alive = [t for t in alive if t.is_alive()]
    assert alive == []


def test_run_async_timeout_and_async_handle_stop() -> None:
    def forever() -> Any:
        while True:
            time.sleep(0.001)
            yield 1

    def make() -> tuple[Dag, list[int]]:
        got: list[int] = []
        dag = Dag("t", capacity=4)
        dag.add_source("src", forever)
        dag.add_sink("sink", got.append)
        dag.connect("src", "sink")
        return dag, got

    async def main() -> Any:
        dag, _ = make()
        with pytest.raises(Timeout):
            await dag.run_async(timeout=0.2)
        dag, got = make()
        async with dag.start() as handle:
            await asyncio.sleep(0.1)
            result = await handle.stop_async(drain=True, timeout=10)
        assert result.stopped and not result.cancelled
        assert result.nodes["sink"]["items_in"] == len(got) > 0
        return result

    asyncio.run(main())


def test_an_async_abort_is_awaited_after_a_failure() -> None:
    class Sink:
        aborted = False

        async def process(self, x: int) -> None:
            await asyncio.sleep(0)

        async def abort(self) -> None:
            await asyncio.sleep(0)
            Sink.aborted = True

    def bad(x: int) -> int:
        if x == 50:
            raise RuntimeError("no")
        return x

    dag = Dag("t", capacity=4, batch_size=4)
    dag.add_source("src", range(100))
    dag.add_node("bad", bad)
    dag.add_sink("sink", Sink())
    dag.chain("src", "bad", "sink")
    with pytest.raises(StreamError, match="RuntimeError: no"):
        _no_unawaited_warning(dag.run)
    assert Sink.aborted


def test_stateful_map_with_an_async_step() -> None:
    async def running_sum(state: int, x: int) -> tuple[int, int]:
        await asyncio.sleep(0)
        return state + x, state + x

    dag, out = _line(ops.stateful_map(lambda x: x % 2, running_sum, init=0), n=10)
    _no_unawaited_warning(dag.run)
    assert out == [0, 1, 2, 4, 6, 9, 12, 16, 20, 25]
