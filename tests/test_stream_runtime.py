"""The Dag runtime on both backends: data flow, node forms, errors, stop, backpressure."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from _stream_support import stream_backend  # noqa: F401
from phasekit.errors import StreamError, Timeout
from phasekit.stream import END, Dag, DeadLetter, Feedback, NodeContext, Out, partition
from phasekit.stream.connectors import collect

pytestmark = pytest.mark.usefixtures("stream_backend")


def _pipeline(source: Any, fn: Any, *, capacity: int = 16) -> tuple[Dag, list[Any]]:
    out: list[Any] = []
    dag = Dag("t", capacity=capacity)
    dag.add_source("src", source)
    dag.add_node("fn", fn)
    dag.add_sink("sink", out.append)
    dag.chain("src", "fn", "sink")
    return dag, out


def test_linear_pipeline_keeps_order_and_counts() -> None:
    dag, out = _pipeline(range(5000), lambda x: x * 2, capacity=8)
    result = dag.run()
    assert out == [2 * i for i in range(5000)]
    assert result.nodes["src"]["items_out"] == 5000
    assert result.nodes["fn"]["items_in"] == 5000
    assert result.nodes["sink"]["items_in"] == 5000
    for stats in result.queues.values():
        assert stats[0]["high_water"] <= 8
        assert stats[0]["sent"] == stats[0]["received"] == 5000


def test_none_means_no_output_and_generator_functions_fan_out() -> None:
    def explode(x: int) -> Any:
        yield from [x] * (x % 3)

    dag = Dag("t")
    got: list[int] = []
    dag.add_source("src", range(10))
    dag.add_node("odd", lambda x: x if x % 2 else None)
    dag.add_node("explode", explode)
    dag.add_sink("sink", got.append)
    dag.chain("src", "odd", "explode", "sink")
    dag.run()
    assert got == [1, 5, 5, 7]


def test_fan_out_copies_to_every_consumer_and_fan_in_merges() -> None:
    dag = Dag("t", capacity=4)
    dag.add_source("a", range(100))
    dag.add_source("b", range(1000, 1100))
    dag.add_node("merge", lambda x: x)
    dag.add_sink("left", collect())
    dag.add_sink("right", collect())
    dag.connect("a", "merge")
    dag.connect("b", "merge")
    dag.connect("merge", "left")
    dag.connect("merge", "right")
    result = dag.run()
    left, right = result.results["left"], result.results["right"]
    assert sorted(left) == sorted(right) == [*range(100), *range(1000, 1100)]
    assert [x for x in left if x < 1000] == list(range(100))  # per-source order kept
    assert result.queues["merge"][0]["capacity"] == 8  # fan-in: sum of the two edges


def test_class_nodes_open_process_close_and_sink_result() -> None:
    events: list[str] = []

    class Doubler:
        def open(self, ctx: NodeContext) -> None:
            events.append(f"open {ctx.node}[{ctx.instance}/{ctx.parallelism}]")

        def process(self, item: int) -> int:
            return item * 2

        def close(self) -> list[str]:
            events.append("close doubler")
            return ["flushed"]

    class Summer:
        def open(self) -> None:
            self.total = 0

        def process(self, item: Any) -> None:
            if isinstance(item, int):
                self.total += item

        def close(self) -> int:
            return self.total

    dag = Dag("t")
    dag.add_source("src", range(10))
    dag.add_node("double", Doubler)
    dag.add_sink("sum", Summer())
    dag.chain("src", "double", "sum")
    result = dag.run()
    assert result.results["sum"] == 90
    assert events == ["open double[0/1]", "close doubler"]
    assert result.nodes["double"]["items_out"] == 11


def test_generator_function_async_and_polling_sources() -> None:
    def gen() -> Any:
        yield from range(3)

    async def agen() -> Any:
        for i in range(10, 13):
            await asyncio.sleep(0)
            yield i

    class Poller:
        def __init__(self) -> None:
            self.calls = 0

        def process(self) -> Any:
            self.calls += 1
            if self.calls > 6:
                return END
            return None if self.calls % 2 else 100 + self.calls

    dag = Dag("t")
    dag.add_source("gen", gen)
    dag.add_source("agen", agen)
    dag.add_source("poll", Poller())
    dag.add_sink("sink", collect())
    for src in ("gen", "agen", "poll"):
        dag.connect(src, "sink")
    got = dag.run().results["sink"]
    assert sorted(got) == [0, 1, 2, 10, 11, 12, 102, 104, 106]


def test_error_in_a_node_fails_the_run_with_its_traceback() -> None:
    def boom(x: int) -> int:
        if x == 7:
            raise ValueError("bad item 7")
        return x

    dag, _ = _pipeline(range(100), boom)
    with pytest.raises(StreamError) as info:
        dag.run(timeout=30)
    err = info.value
    assert err.node == "fn"  # type: ignore[attr-defined]
    assert "transform 'fn'" in str(err) and "bad item 7" in str(err)
    assert "in boom" in str(err) and "raise ValueError" in str(err)
    assert isinstance(err.__cause__, ValueError)


def test_error_in_a_source_surfaces_from_wait() -> None:
    def feed() -> Any:
        yield 1
        raise RuntimeError("feed broke")

    dag, _ = _pipeline(feed, lambda x: x)
    handle = dag.start()
    with pytest.raises(StreamError, match=r"source 'src'.*feed broke"):
        handle.wait(timeout=30)


def test_skip_policy_counts_errors_and_goes_on() -> None:
    out: list[int] = []
    dag = Dag("t")
    dag.add_source("src", range(20))
    dag.add_node("inv", lambda x: 100 // (x % 5), on_error="skip")
    dag.add_sink("sink", out.append)
    dag.chain("src", "inv", "sink")
    result = dag.run()
    assert result.nodes["inv"]["errors"] == 4
    assert out == [100 // (x % 5) for x in range(20) if x % 5]


def test_dead_letter_policy_sends_the_item_and_error() -> None:
    dag = Dag("t")
    dag.add_source("src", [1, 0, 2, 0])
    dag.add_node("inv", lambda x: 10 // x, on_error="dead_letter")
    dag.add_sink("ok", collect())
    dag.add_sink("dlq", collect())
    dag.connect("src", "inv")
    dag.connect("inv", "ok")
    dag.connect("inv", "dlq", port="errors")
    result = dag.run()
    assert result.results["ok"] == [10, 5]
    letters = result.results["dlq"]
    assert [d.item for d in letters] == [0, 0]
    assert all(isinstance(d, DeadLetter) and d.node == "inv" for d in letters)
    assert "ZeroDivisionError" in letters[0].error and "10 // x" in letters[0].traceback
    assert result.nodes["inv"]["errors"] == 2


def test_graceful_stop_drains_everything_in_flight() -> None:
    produced = []

    def endless() -> Any:
        i = 0
        while True:
            produced.append(i)
            yield i
            i += 1

    def slow(x: int) -> int:
        time.sleep(0.0005)
        return x

    dag = Dag("t", capacity=32)
    dag.add_source("src", endless)
    dag.add_node("slow", slow)
    dag.add_sink("sink", collect())
    dag.chain("src", "slow", "sink")
    handle = dag.start()
    while len(produced) < 200:
        time.sleep(0.01)
    result = handle.stop(drain=True, timeout=60)
    got = result.results["sink"]
    assert result.stopped and not result.cancelled
    assert got == produced[: len(got)]
    assert len(got) == result.nodes["src"]["items_out"] == len(produced)


def test_graceful_stop_of_an_async_source_waiting_for_data() -> None:
    async def idle_feed() -> Any:
        yield 1
        yield 2
        await asyncio.sleep(3600)
        yield 3

    dag = Dag("t")
    dag.add_source("src", idle_feed)
    dag.add_sink("sink", collect())
    dag.chain("src", "sink")
    handle = dag.start()
    while handle.stats().nodes and sum(n.items_out for n in handle.stats().nodes) < 2:
        time.sleep(0.01)
    result = handle.stop(timeout=30)
    assert result.results["sink"] == [1, 2]


def test_cancel_ends_the_run_without_draining() -> None:
    gate = threading.Event()

    def blocked(x: int) -> int:
        gate.wait(30)
        return x

    dag = Dag("t", capacity=4)
    dag.add_source("src", lambda: iter(range(10**9)))
    dag.add_node("blocked", blocked)
    dag.add_sink("sink", collect())
    dag.chain("src", "blocked", "sink")
    handle = dag.start()
    time.sleep(0.05)
    handle.cancel()
    gate.set()
    result = handle.wait(timeout=30)
    assert result.cancelled
    assert result.nodes["src"]["items_out"] < 10**9


def test_run_timeout_raises_and_cancels() -> None:
    dag = Dag("t")
    dag.add_source("src", lambda: iter(range(10**12)))
    dag.add_sink("sink", lambda x: None)
    dag.chain("src", "sink")
    with pytest.raises(Timeout):
        dag.run(timeout=0.2)


def test_memory_stays_bounded_with_a_sink_100x_slower() -> None:
    """The source may run ahead of the sink by at most what the channels and the nodes'
    in-hand batches hold."""
    capacity, batch = 8, 4
    produced = 0
    consumed = 0
    max_ahead = 0
    lock = threading.Lock()

    def fast() -> Any:
        nonlocal produced, max_ahead
        for i in range(600):
            with lock:
                produced += 1
                max_ahead = max(max_ahead, produced - consumed)
            yield i

    def slow_sink(x: int) -> None:
        nonlocal consumed
        time.sleep(0.001)  # the source takes ~10 us per item: 100x faster
        with lock:
            consumed += 1

    dag = Dag("t", capacity=capacity, batch_size=batch)
    dag.add_source("src", fast)
    dag.add_node("id", lambda x: x)
    dag.add_sink("sink", slow_sink)
    dag.chain("src", "id", "sink")
    result = dag.run()
    assert consumed == 600
    for node in ("id", "sink"):
        q = result.queues[node][0]
        assert q["high_water"] <= capacity
    assert result.queues["sink"][0]["high_water"] == capacity  # the slow sink's channel filled
    assert result.queues["sink"][0]["blocked_send_seconds"] > 0
    # two channels + what each of the two readers holds + the item being produced
    assert max_ahead <= 2 * capacity + 2 * batch + 1


def test_keyed_parallel_node_keeps_per_key_order_on_one_instance() -> None:
    seen: dict[int, list[tuple[str, int]]] = {}
    lock = threading.Lock()

    class Tag:
        def open(self, ctx: NodeContext) -> None:
            self.instance = ctx.instance

        def process(self, item: tuple[str, int]) -> tuple[int, str, int]:
            return (self.instance, *item)

    def record(item: tuple[int, str, int]) -> None:
        with lock:
            seen.setdefault(item[0], []).append(item[1:])

    keys = [f"sym{i}" for i in range(20)]
    items = [(keys[i % 20], i) for i in range(2000)]
    dag = Dag("t", capacity=16)
    dag.add_source("src", items)
    dag.add_node("tag", Tag, parallelism=4, key=lambda it: it[0])
    dag.add_sink("sink", record)
    dag.chain("src", "tag", "sink")
    dag.run()
    assert sum(len(v) for v in seen.values()) == 2000
    for instance, got in seen.items():
        for key in {k for k, _ in got}:
            assert partition(key, 4) == instance
            seq = [i for k, i in got if k == key]
            assert seq == sorted(seq) and len(seq) == 100


def test_unkeyed_parallel_instances_share_the_input() -> None:
    dag = Dag("t")
    dag.add_source("src", range(3000))
    dag.add_node("sq", lambda x: x * x, parallelism=3)
    dag.add_sink("sink", collect())
    dag.chain("src", "sq", "sink")
    result = dag.run()
    assert sorted(result.results["sink"]) == [x * x for x in range(3000)]
    assert [q["instance"] for q in result.queues["sq"]] == ["shared"]


def test_named_ports_route_outputs() -> None:
    def split(x: int) -> Out:
        return Out("even" if x % 2 == 0 else "odd", x)

    dag = Dag("t")
    dag.add_source("src", range(10))
    dag.add_node("split", split, outputs=("even", "odd"))
    dag.add_sink("even", collect())
    dag.add_sink("odd", collect())
    dag.add_sink("rest", collect())
    dag.connect("src", "split")
    dag.connect("split", "even", port="even")
    dag.connect("split", "odd", port="odd")
    dag.connect("split", "rest")
    result = dag.run()
    assert result.results["even"] == [0, 2, 4, 6, 8]
    assert result.results["odd"] == [1, 3, 5, 7, 9]
    assert result.results["rest"] == []


def test_feedback_pauses_sources_above_high_and_resumes_below_low() -> None:
    fb = Feedback(high=10, low=3, name="store")
    produced: list[int] = []

    def feed() -> Any:
        for i in range(100):
            produced.append(i)
            yield i

    class Store:
        def open(self, ctx: NodeContext) -> None:
            self.ctx = ctx
            self.n = 0

        def process(self, item: int) -> None:
            self.n += 1
            if self.n == 20:
                self.ctx.report_pressure(15)  # the store's queue is backed up

    dag = Dag("t", capacity=4)
    dag.add_source("src", feed, feedback=fb)
    dag.add_sink("store", Store(), feedback=fb)
    dag.chain("src", "store")
    handle = dag.start()
    while not fb.throttled:
        time.sleep(0.005)
    time.sleep(0.1)
    paused_at = len(produced)
    time.sleep(0.2)
    assert len(produced) == paused_at < 100  # nothing produced while throttled
    fb.report(5)  # between low and high: still throttled (hysteresis)
    time.sleep(0.1)
    assert len(produced) == paused_at and fb.throttled
    fb.report(2)  # at or below low: resume
    result = handle.wait(timeout=30)
    assert result.nodes["store"]["items_in"] == 100
    assert fb.episodes == 1 and fb.throttled_seconds > 0
    snap = handle.stats()
    assert snap.feedbacks[0].name == "store" and not snap.feedbacks[0].throttled


def test_feedback_probe_is_polled_by_the_runtime() -> None:
    pressure = [100.0]
    produced: list[int] = []
    fb = Feedback(high=50, low=10, probe=lambda: pressure[0], interval=0.01)

    def feed() -> Any:
        for i in range(200):
            time.sleep(0.002)
            produced.append(i)
            yield i

    dag = Dag("t")
    dag.add_source("src", feed, feedback=fb)
    dag.add_sink("sink", collect())
    dag.chain("src", "sink")
    handle = dag.start()
    while not fb.throttled:
        time.sleep(0.005)
    time.sleep(0.05)
    paused_at = len(produced)
    time.sleep(0.1)
    assert len(produced) == paused_at < 200
    pressure[0] = 0.0
    result = handle.wait(timeout=30)
    assert len(result.results["sink"]) == 200 and not fb.throttled


def test_latency_histogram_is_sampled_at_sinks() -> None:
    from phasekit.stream import StreamSettings

    def slowish() -> Any:
        for i in range(40):
            time.sleep(0.005)
            yield i

    dag = Dag("lat", settings=StreamSettings(latency_interval=0.01))
    dag.add_source("src", slowish)
    dag.add_node("id", lambda x: x)
    dag.add_sink("sink", lambda x: None)
    dag.chain("src", "id", "sink")
    dag.run()
    count = dag.registry.get_sample_value(
        "phasekit_stream_latency_seconds_count", {"dag": "lat", "node": "sink"}
    )
    assert count is not None and count >= 1


@pytest.mark.parametrize("kind", ["map", "flat_map", "filter", "sink"])
def test_every_processor_resumes_after_a_skipped_error(kind: str) -> None:
    from phasekit.stream.nodes import ErrorPolicy, make_processor
    from phasekit.stream.operators import filter as filter_op
    from phasekit.stream.operators import flat_map

    seen: list[int] = []

    def fn(x: int) -> Any:
        if x % 4 == 3:
            raise ValueError(x)
        seen.append(x)
        return [x] if kind == "flat_map" else x

    impl: Any = {"flat_map": flat_map(fn), "filter": filter_op(fn)}.get(kind, fn)
    policy = ErrorPolicy("dead_letter", "n", 0)
    proc = make_processor(impl, "sink" if kind == "sink" else "transform", policy)
    out: list[Any] = []
    proc.process(list(range(10)), out)
    letters = [o.value.item for o in out if type(o) is Out]
    assert letters == [3, 7] and policy.count == 2
    assert seen == [0, 1, 2, 4, 5, 6, 8, 9]
    expected = [] if kind == "sink" else [x for x in seen if kind != "filter" or x]
    assert [o for o in out if type(o) is not Out] == expected


def _tick_batches(kind: str) -> list[Any]:
    import polars as pl
    import pyarrow as pa

    out: list[Any] = []
    for b in range(12):
        rows = range(b * 50, b * 50 + 50)
        cols = {"symbol": [f"S{(i * 7) % 11}" for i in rows], "seq": list(rows)}
        if b == 5:
            cols["symbol"][3] = None  # a null key partitions as None does for one item
        batch = pa.record_batch(cols)
        if kind == "table":
            out.append(pa.Table.from_batches([batch.slice(0, 20), batch.slice(20)]))
        elif kind == "polars":
            out.append(pl.from_arrow(batch))
        else:
            out.append(batch)
    return out


@pytest.mark.parametrize("kind", ["record_batch", "table", "polars"])
def test_keyed_parallel_node_splits_columnar_batches_by_row_key(kind: str) -> None:
    import pyarrow as pa

    lock = threading.Lock()
    seen: dict[Any, set[int]] = {}
    order: dict[Any, list[int]] = {}

    class Record:
        def open(self, ctx: NodeContext) -> None:
            self.instance = ctx.instance

        def process(self, item: Any) -> None:
            table = item.to_arrow() if hasattr(item, "to_arrow") else item
            assert isinstance(table, (pa.RecordBatch, pa.Table)), type(item)
            with lock:
                for s, q in zip(
                    table.column("symbol").to_pylist(), table.column("seq").to_pylist()
                ):
                    seen.setdefault(s, set()).add(self.instance)
                    order.setdefault(s, []).append(q)

    dag = Dag("t", capacity=4)
    dag.add_source("src", _tick_batches(kind))
    dag.add_sink("sink", Record, parallelism=3, key="symbol")
    dag.connect("src", "sink")
    dag.run(timeout=60)
    assert sum(len(v) for v in order.values()) == 600
    assert len(seen) == 12  # 11 symbols and the null key
    for key, instances in seen.items():
        # every row of a key on one instance, the one partition() gives a single item
        assert instances == {partition(key, 3)}, key
        assert order[key] == sorted(order[key])


def test_key_giving_one_value_for_a_batch_sends_it_whole() -> None:
    import pyarrow as pa

    lock = threading.Lock()
    got: list[tuple[int, str, int]] = []

    class Record:
        def open(self, ctx: NodeContext) -> None:
            self.instance = ctx.instance

        def process(self, item: Any) -> None:
            with lock:
                got.append((self.instance, item.schema.metadata[b"symbol"].decode(), item.num_rows))

    batches = [
        pa.record_batch({"v": list(range(n))}).replace_schema_metadata({"symbol": f"S{n}"})
        for n in range(1, 9)
    ]
    dag = Dag("t")
    dag.add_source("src", batches)
    dag.add_sink("sink", Record, parallelism=3, key=lambda b: b.schema.metadata[b"symbol"].decode())
    dag.connect("src", "sink")
    dag.run(timeout=60)
    assert sorted(got, key=lambda g: g[2]) == [
        (partition(f"S{n}", 3), f"S{n}", n) for n in range(1, 9)
    ]


def test_keyed_parallel_event_time_node_refuses_columnar_batches() -> None:
    import pyarrow as pa

    from phasekit.stream import operators as ops

    batch = pa.record_batch(
        {"symbol": ["A", "B"], "ts": [1_000_000_000, 2_000_000_000], "price": [1.0, 2.0]}
    )
    dag = Dag("t")
    dag.add_source("src", [batch])
    dag.add_node(
        "bars",
        ops.ohlc_resample("1s", volume=None, by="symbol"),
        parallelism=2,
        key="symbol",
    )
    dag.add_sink("sink", collect())
    dag.chain("src", "bars", "sink")
    with pytest.raises(StreamError, match="keyed parallel event-time node got a columnar batch"):
        dag.run(timeout=60)
