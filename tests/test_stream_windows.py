"""Event-time windows against hand-computed results, with out-of-order and late events."""

from __future__ import annotations

from typing import Any

import pytest

from _stream_support import stream_backend  # noqa: F401
from phasekit.errors import InvalidArgument
from phasekit.stream import Dag, Out, Watermark
from phasekit.stream.connectors import collect
from phasekit.stream.operators import WindowResult, session, sliding, tumbling


def _feed(op: Any, items: list[Any]) -> tuple[list[WindowResult], list[Any]]:
    results: list[WindowResult] = []
    late: list[Any] = []
    for item in items:
        for out in op.process(item) or []:
            if type(out) is Out:
                assert out.port == "late"
                late.append(out.value)
            else:
                results.append(out)
    results.extend(op.close())
    return results, late


def _sum(items: list[tuple[int, int]]) -> int:
    return sum(v for _, v in items)


TUMBLING_INPUT = [
    (1, 1),
    (4, 2),
    (12, 3),
    (9, 4),
    (11, 5),
    (15, 6),
    (13, 7),
    (25, 8),
    (19, 9),
    (21, 10),
]


def test_watermark_is_max_seen_minus_delay_and_never_decreases() -> None:
    wm = Watermark(max_out_of_orderness=2)
    assert [wm.observe(t) for t in (5, 3, 10, 7)] == [3, 3, 8, 8]
    assert wm.advance_to(4) == 8 and wm.advance_to(20) == 20


def test_tumbling_out_of_order_within_delay_and_late_events_to_side_output() -> None:
    op = tumbling(10, timestamp=lambda e: e[0], aggregate=_sum, max_delay=2)
    results, late = _feed(op, TUMBLING_INPUT)
    # W = max ts - 2. (12) -> W=10 fires [0,10) = {1,4}; (9) is then late;
    # (25) -> W=23 fires [10,20) = {12,11,15,13}; (19) is late; the end fires [20,30).
    assert results == [
        WindowResult(None, 0, 10, 3, 2, 0),
        WindowResult(None, 10, 20, 21, 4, 0),
        WindowResult(None, 20, 30, 18, 2, 0),
    ]
    assert late == [(9, 4), (19, 9)]
    assert op.counters["late"] == 2


def test_allowed_lateness_refires_windows_with_updates() -> None:
    op = tumbling(10, timestamp=lambda e: e[0], aggregate=_sum, max_delay=2, allowed_lateness=5)
    results, late = _feed(op, TUMBLING_INPUT)
    assert results == [
        WindowResult(None, 0, 10, 3, 2, 0),
        WindowResult(None, 0, 10, 7, 3, 1),  # (9) within lateness: update
        WindowResult(None, 10, 20, 21, 4, 0),
        WindowResult(None, 10, 20, 30, 5, 1),  # (19): 20 + 5 > W = 23
        WindowResult(None, 20, 30, 18, 2, 0),
    ]
    assert late == [] and op.counters["updates"] == 2
    # past end + lateness the window is gone: an event for it is late
    op2 = tumbling(10, timestamp=lambda e: e[0], allowed_lateness=5)
    _, late2 = _feed(op2, [(1, 1), (16, 2), (2, 3)])
    assert late2 == [(2, 3)]


def test_keyed_tumbling_windows_with_string_durations_and_field_names() -> None:
    s = 1_000_000_000
    events = [
        {"k": "a", "t": 1 * s, "v": 1},
        {"k": "b", "t": 2 * s, "v": 2},
        {"k": "a", "t": 6 * s, "v": 3},
        {"k": "b", "t": 4 * s, "v": 4},
    ]
    op = tumbling("5s", timestamp="t", key="k", aggregate=lambda xs: [x["v"] for x in xs])
    results, late = _feed(op, events)
    # (6s) moves W to 6s: [0,5s) fires for a then b (opening order); then [5s,10s) of a;
    # b's (4s) arrives after [0,5s) fired: late
    assert results == [
        WindowResult("a", 0, 5 * s, [1], 1, 0),
        WindowResult("b", 0, 5 * s, [2], 1, 0),
        WindowResult("a", 5 * s, 10 * s, [3], 1, 0),
    ]
    assert late == [events[3]]


def test_sliding_windows_assign_each_event_to_size_over_slide_windows() -> None:
    op = sliding(10, 5, timestamp=lambda e: e[0], aggregate=_sum)
    results, late = _feed(op, [(1, 1), (6, 2), (12, 3), (3, 4)])
    assert results == [
        WindowResult(None, -5, 5, 1, 1, 0),
        WindowResult(None, 0, 10, 3, 2, 0),
        WindowResult(None, 5, 15, 5, 2, 0),
        WindowResult(None, 10, 20, 3, 1, 0),
    ]
    assert late == [(3, 4)]


def test_session_windows_merge_per_key_and_close_after_the_gap() -> None:
    op = session(
        5, timestamp=lambda e: e[1], key=lambda e: e[0], aggregate=lambda xs: [x[2] for x in xs]
    )
    items = [("a", 1, 1), ("a", 3, 2), ("b", 2, 10), ("a", 10, 3), ("a", 7, 4), ("b", 20, 20),
             ("a", 30, 5), ("a", 2, 99)]  # fmt: skip
    results, late = _feed(op, items)
    assert results == [
        WindowResult("b", 2, 7, [10], 1, 0),
        WindowResult("a", 1, 8, [1, 2], 2, 0),
        WindowResult("a", 7, 15, [3, 4], 2, 0),  # (7) bridged into the session of (10)
        WindowResult("b", 20, 25, [20], 1, 0),
        WindowResult("a", 30, 35, [5], 1, 0),
    ]
    assert late == [("a", 2, 99)]


def test_session_gap_is_exclusive() -> None:
    op = session(5, timestamp=lambda e: e, aggregate=len)
    results, _ = _feed(op, [0, 4, 9])  # 4 -> 9 is exactly the gap: a new session
    assert [(r.start, r.end, r.value) for r in results] == [(0, 9, 2), (9, 14, 1)]


def test_idle_timeout_advances_the_watermark_by_processing_time() -> None:
    now = [0]
    op = tumbling(10, timestamp=lambda e: e, idle_timeout=5, clock=lambda: now[0], aggregate=len)
    assert op.process(1) is None and op.process(4) is None
    now[0] = 3
    assert op.on_tick(0) is None  # idle 3 < 5
    now[0] = 8
    assert op.on_tick(0) == [WindowResult(None, 0, 10, 2, 2, 0)]  # W = 4 + 8 >= 10


def test_window_arguments_are_checked() -> None:
    with pytest.raises(InvalidArgument, match="slide"):
        sliding(5, 10, timestamp="t")
    with pytest.raises(InvalidArgument, match="size"):
        tumbling("0s", timestamp="t")
    with pytest.raises(InvalidArgument, match="duration"):
        tumbling("5 parsecs", timestamp="t")
    with pytest.raises(InvalidArgument, match="timestamp"):
        tumbling(5, timestamp=None)


@pytest.mark.usefixtures("stream_backend")
def test_windows_in_a_dag_with_the_late_port_connected() -> None:
    dag = Dag("w", capacity=4)
    dag.add_source("events", TUMBLING_INPUT)
    dag.add_node("win", tumbling(10, timestamp=lambda e: e[0], aggregate=_sum, max_delay=2))
    dag.add_sink("results", collect())
    dag.add_sink("late", collect())
    dag.connect("events", "win")
    dag.connect("win", "results")
    dag.connect("win", "late", port="late")
    result = dag.run()
    assert [(r.start, r.value) for r in result.results["results"]] == [(0, 3), (10, 21), (20, 18)]
    assert result.results["late"] == [(9, 4), (19, 9)]
    assert result.nodes["win"]["late"] == 2


@pytest.mark.usefixtures("stream_backend")
def test_unconnected_late_port_counts_late_events() -> None:
    dag = Dag("w")
    dag.add_source("events", TUMBLING_INPUT)
    dag.add_node("win", tumbling(10, timestamp=lambda e: e[0], max_delay=2))
    dag.add_sink("results", collect())
    dag.chain("events", "win", "results")
    result = dag.run()
    assert result.nodes["win"]["late"] == 2
    assert result.nodes["win"]["counters"]["unconnected_late"] == 2
