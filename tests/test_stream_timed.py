"""Processing-time behaviour of a running Dag: throttled items reach the sink when due, and a
source paused by feedback resumes when only a node downstream reports pressure."""

from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from typing import Any

import pytest

from phasekit.errors import InvalidArgument
from phasekit.stream import Dag, Feedback, NodeContext
from phasekit.stream import operators as ops

pytestmark = pytest.mark.usefixtures("backend_name")


class _Arrivals:
    """A sink that notes when each item arrives (processing time)."""

    def open(self) -> None:
        self.times: list[float] = []

    def process(self, item: Any) -> None:
        self.times.append(time.perf_counter())

    def close(self) -> list[float]:
        return self.times


def _run_throttled(n: int, rate: float, **options: Any) -> tuple[float, list[float]]:
    dag = Dag("throttled")
    dag.add_source("src", list(range(n)))
    dag.add_node("throttle", ops.throttle(rate, **options))
    dag.add_sink("sink", _Arrivals())
    dag.chain("src", "throttle", "sink")
    t0 = time.perf_counter()
    times = dag.run().results["sink"]
    return t0, times


def test_throttled_items_reach_the_sink_spaced_by_the_rate() -> None:
    t0, times = _run_throttled(5, 5.0)
    assert len(times) == 5
    gaps = [b - a for a, b in itertools.pairwise(times)]
    # 5/s: one item every 0.2 s; generous bounds for a loaded machine
    assert all(0.1 <= g <= 0.5 for g in gaps), gaps
    assert times[0] - t0 < 0.15  # the bucket starts full: the first item passes at once


def test_throttle_initial_tokens_delay_the_first_item() -> None:
    t0, times = _run_throttled(5, 5.0, initial=0)
    assert len(times) == 5
    assert times[0] - t0 >= 0.18  # an empty bucket: the first item waits 1/rate
    assert times[-1] - t0 >= 0.9  # 5 items at 5/s take a full second


def test_throttle_initial_must_be_a_number_within_the_burst() -> None:
    with pytest.raises(InvalidArgument, match="initial"):
        ops.throttle(5.0, burst=2, initial=3)
    with pytest.raises(InvalidArgument, match="initial"):
        ops.throttle(5.0, initial=-1)


class _BackgroundStore:
    """A sink writing to a store that drains its queue in the background; it reports the
    queue depth per item and answers ``pressure()`` with the current depth."""

    def __init__(self, drain_every: float = 0.002) -> None:
        self.drain_every = drain_every

    def open(self, ctx: NodeContext) -> None:
        self.ctx = ctx
        self.queue: deque[int] = deque()
        self.written = 0
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._drain, daemon=True)
        self.thread.start()

    def _drain(self) -> None:
        while not self.done.is_set():
            time.sleep(self.drain_every)
            if self.queue:
                self.queue.popleft()
                self.written += 1

    def pressure(self) -> float:
        return float(len(self.queue))

    def process(self, item: int) -> None:
        self.queue.append(item)
        self.ctx.report_pressure(len(self.queue))

    def close(self) -> int:
        while self.queue:
            time.sleep(self.drain_every)
        self.done.set()
        self.thread.join()
        return self.written


def test_a_pause_reported_only_by_the_sink_resumes() -> None:
    fb = Feedback(high=20, low=5, name="store")

    def feed() -> Any:
        yield from range(300)

    dag = Dag("t", capacity=4)
    dag.add_source("src", feed, feedback=fb)
    dag.add_sink("store", _BackgroundStore(), feedback=fb)
    dag.chain("src", "store")
    result = dag.start().wait(timeout=20)
    assert result.results["store"] == 300
    # paused (the queue reached 20 of 300) and resumed each time: every item was written
    assert fb.episodes >= 1 and fb.throttled_seconds > 0


def test_a_transform_can_report_pressure() -> None:
    fb = Feedback(high=3, low=1, name="stage")
    seen: list[int] = []

    class Stage:
        def open(self, ctx: NodeContext) -> None:
            self.ctx = ctx
            self.level = 0.0

        def pressure(self) -> float:
            self.level = max(0.0, self.level - 1)
            return self.level

        def process(self, item: int) -> int:
            seen.append(item)
            if item == 10:
                self.level = 5.0
                self.ctx.report_pressure(self.level)
            return item

    dag = Dag("t", capacity=2)
    dag.add_source("src", lambda: iter(range(50)), feedback=fb)
    dag.add_node("stage", Stage(), feedback=fb)
    dag.add_sink("sink", lambda x: None)
    dag.chain("src", "stage", "sink")
    dag.start().wait(timeout=20)
    assert seen == list(range(50)) and fb.episodes == 1 and not fb.throttled


def test_a_partial_batch_leaves_when_its_timeout_is_due_not_at_the_next_tick() -> None:
    from phasekit.stream import StreamSettings

    def feed() -> Any:
        yield from range(3)
        time.sleep(1.0)  # a quiet feed: the partial list must not wait for more items

    dag = Dag("b", settings=StreamSettings(tick_interval=0.5))
    dag.add_source("src", feed)
    dag.add_node("batch", ops.batch(1000, timeout=0.05))
    dag.add_sink("sink", _Arrivals())
    dag.chain("src", "batch", "sink")
    t0 = time.perf_counter()
    times = dag.run().results["sink"]
    assert len(times) == 1
    assert 0.04 <= times[0] - t0 <= 0.3, times[0] - t0  # due at 0.05 s; the tick is 0.5 s


def test_an_idle_window_fires_when_the_idle_timeout_is_due() -> None:
    from phasekit.stream import StreamSettings

    def feed() -> Any:
        yield {"ts": 0}
        time.sleep(1.0)

    dag = Dag("w", settings=StreamSettings(tick_interval=0.5))
    dag.add_source("src", feed)
    dag.add_node("win", ops.tumbling("50ms", timestamp="ts", idle_timeout=0.1, aggregate=len))
    dag.add_sink("sink", _Arrivals())
    dag.chain("src", "win", "sink")
    t0 = time.perf_counter()
    times = dag.run().results["sink"]
    assert len(times) == 1  # [0, 50 ms) fires once the feed is idle for 0.1 s
    assert times[0] - t0 <= 0.4, times[0] - t0  # idle at 0.1 s; the tick is 0.5 s


def test_idle_timeout_fires_partitioned_windows_too() -> None:
    from phasekit.stream import StreamSettings

    def feed() -> Any:
        yield {"ts": 0, "k": "a"}
        yield {"ts": 10**6, "k": "b"}
        time.sleep(1.0)

    dag = Dag("w", settings=StreamSettings(tick_interval=0.5))
    dag.add_source("src", feed)
    window = ops.tumbling("50ms", timestamp="ts", key="k", idle_timeout=0.1, aggregate=len)
    dag.add_node("win", window, parallelism=2, key="k")
    dag.add_sink("sink", _Arrivals())
    dag.chain("src", "win", "sink")
    t0 = time.perf_counter()
    times = dag.run().results["sink"]
    assert len(times) == 2  # one window per key, each fired by its idle instance
    assert max(times) - t0 <= 0.4, [t - t0 for t in times]


def test_feedback_polls_the_largest_of_its_probe_and_the_nodes_pressure() -> None:
    fb = Feedback(high=10, low=2, probe=lambda: 1.0)
    store = [30.0]
    fb.attach(lambda: store[0])
    fb.poll()
    assert fb.pressure == 30.0 and fb.throttled
    store[0] = 0.0
    fb.poll()
    assert fb.pressure == 1.0 and not fb.throttled


def test_a_pause_nothing_can_end_is_reported_in_the_log(caplog: pytest.LogCaptureFixture) -> None:
    fb = Feedback(high=5, low=1, name="blind")

    class Reporter:
        def open(self, ctx: NodeContext) -> None:
            self.ctx = ctx

        def process(self, item: int) -> None:
            if item == 10:
                self.ctx.report_pressure(9)  # and never again: no pressure(), no probe

    dag = Dag("t", capacity=2)
    dag.add_source("src", lambda: iter(range(40)), feedback=fb)
    dag.add_sink("sink", Reporter(), feedback=fb)
    dag.chain("src", "sink")
    with caplog.at_level("WARNING", logger="phasekit.stream.runtime"):
        handle = dag.start()
        deadline = time.monotonic() + 10
        while "keeps its sources paused" not in caplog.text and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "feedback 'blind' keeps its sources paused" in caplog.text
        fb.report(0)
        assert handle.wait(timeout=20).items_in("sink") == 40
