"""Semantics of dedupe, throttle, router, batch, stateful_map and map/filter/flat_map."""

from __future__ import annotations

from typing import Any

import pytest

from _stream_support import stream_backend  # noqa: F401
from phasekit.errors import InvalidArgument, StreamError
from phasekit.stream import Dag, Out
from phasekit.stream import operators as ops
from phasekit.stream.connectors import collect


def _apply_filter(op: Any, items: list[Any]) -> list[Any]:
    return [x for x in items if op.fn(x)]


def test_dedupe_last_n_remembers_the_last_n_emitted_keys() -> None:
    op = ops.dedupe(last_n=2)
    assert _apply_filter(op, list("abacab")) == list("abcab")
    assert op.counters["duplicates"] == 1


def test_dedupe_within_event_time_window() -> None:
    op = ops.dedupe(key=lambda e: e[0], within=10, timestamp=lambda e: e[1])
    items = [("x", 0), ("x", 5), ("y", 6), ("x", 10), ("x", 12), ("x", 25), ("y", 8)]
    # a key is remembered until the newest timestamp is `within` past it: ("y", 8) comes
    # after ts 25, when ("y", 6) is forgotten, so it passes
    assert _apply_filter(op, items) == [("x", 0), ("y", 6), ("x", 10), ("x", 25), ("y", 8)]
    assert op.counters["duplicates"] == 2


def test_dedupe_within_processing_time_uses_the_clock() -> None:
    now = [0]
    op = ops.dedupe(key="id", within="1s", clock=lambda: now[0])
    assert op.fn({"id": 1}) and not op.fn({"id": 1})
    now[0] = 999_999_999
    assert not op.fn({"id": 1})
    now[0] = 1_000_000_000
    assert op.fn({"id": 1})


def test_dedupe_arguments() -> None:
    with pytest.raises(InvalidArgument, match="exactly one"):
        ops.dedupe()
    with pytest.raises(InvalidArgument, match="last_n"):
        ops.dedupe(last_n=0)


def test_throttle_drop_mode_is_a_token_bucket() -> None:
    now = [0.0]
    op = ops.throttle(10, burst=2, mode="drop", clock=lambda: now[0])
    passed = []
    for i, t in enumerate([0.0, 0.0, 0.0, 0.1, 0.1, 1.0]):
        now[0] = t
        if op.admit(i):
            passed.append(i)
    # burst of 2 at t=0, one token refilled by t=0.1, full bucket again by t=1.0
    assert passed == [0, 1, 3, 5]
    assert op.counters == {"passed": 4, "dropped": 2, "delayed": 0}


def test_throttle_delay_mode_waits_for_tokens_and_drops_nothing() -> None:
    now = [0.0]
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(round(seconds, 9))
        now[0] += seconds

    op = ops.throttle(10, burst=1, mode="delay", clock=lambda: now[0], sleep=sleep)
    assert all(op.admit(i) for i in range(4))
    assert sleeps == [0.1, 0.1, 0.1]
    assert op.counters["dropped"] == 0 and op.counters["delayed"] == 3


def test_throttle_per_key_and_cost() -> None:
    now = [0.0]
    op = ops.throttle(
        100, burst=100, mode="drop", key="k", cost=lambda x: x["n"], clock=lambda: now[0]
    )
    assert op.admit({"k": "a", "n": 60}) and not op.admit({"k": "a", "n": 60})
    assert op.admit({"k": "b", "n": 60})  # b has its own bucket


def test_router_by_predicate_first_match_default_and_all_matches() -> None:
    op = ops.router({"big": lambda x: x > 100, "even": lambda x: x % 2 == 0}, default="other")
    assert op.route(200) == [Out("big", 200)]
    assert op.route(4) == [Out("even", 4)]
    assert op.route(3) == [Out("other", 3)]
    both = ops.router({"big": lambda x: x > 100, "even": lambda x: x % 2 == 0}, all_matches=True)
    assert both.route(200) == [Out("big", 200), Out("even", 200)]
    assert both.route(3) == [] and both.counters["unrouted"] == 1


def test_router_by_key_with_a_port_mapping() -> None:
    op = ops.router(key="sym", ports={"AAPL": "tech", "MSFT": "tech", "XOM": "energy"})
    assert op.output_ports == ("tech", "energy")
    assert op.route({"sym": "XOM"}) == [Out("energy", {"sym": "XOM"})]
    assert op.route({"sym": "ZZZ"}) == [] and op.counters["unrouted"] == 1


def test_batch_by_size_timeout_and_end() -> None:
    now = [0.0]
    op = ops.batch(3, timeout=0.5, clock=lambda: now[0])
    outs = [op.process(i) for i in range(4)]
    assert outs == [None, None, [0, 1, 2], None]
    now[0] = 0.4
    assert op.on_tick(0) is None
    now[0] = 0.5
    assert op.on_tick(0) == [[3]]
    op.process(9)
    assert op.close() == [[9]]


def test_stateful_map_keeps_state_per_key() -> None:
    op = ops.stateful_map("k", lambda s, x: (s + x["v"], (x["k"], s + x["v"])), init=0)
    items = [{"k": "a", "v": 1}, {"k": "b", "v": 10}, {"k": "a", "v": 2}]
    assert [op.fn(x) for x in items] == [("a", 1), ("b", 10), ("a", 3)]


@pytest.mark.usefixtures("stream_backend")
def test_operators_in_a_dag() -> None:
    dag = Dag("ops", capacity=4)
    dag.add_source("src", range(30))
    dag.add_node("sq", ops.map(lambda x: x * x))
    dag.add_node("odd", ops.filter(lambda x: x % 2))
    dag.add_node("pair", ops.flat_map(lambda x: (x, -x)))
    dag.add_node("dd", ops.dedupe(key=abs, last_n=100))
    dag.add_node("route", ops.router({"neg": lambda x: x < 0}, default="pos"))
    dag.add_node("chunks", ops.batch(4))
    dag.add_sink("neg", collect())
    dag.add_sink("pos", collect())
    dag.chain("src", "sq", "odd", "pair", "dd", "route")
    dag.connect("route", "neg", port="neg")
    dag.connect("route", "chunks", port="pos")
    dag.connect("chunks", "pos")
    result = dag.run()
    odd_squares = [x * x for x in range(30) if x % 2]
    assert result.results["neg"] == []  # every -x is a duplicate of x
    assert [x for chunk in result.results["pos"] for x in chunk] == odd_squares
    assert [len(c) for c in result.results["pos"]] == [4, 4, 4, 3]
    assert result.nodes["dd"]["counters"]["duplicates"] == 15


@pytest.mark.usefixtures("stream_backend")
def test_router_ports_must_be_connected_and_emitting_to_an_undeclared_port_fails() -> None:
    dag = Dag("r")
    dag.add_source("src", range(3))
    dag.add_node("route", ops.router({"a": lambda x: True, "b": lambda x: False}))
    dag.add_sink("a", collect())
    dag.connect("src", "route")
    dag.connect("route", "a", port="a")
    with pytest.raises(StreamError, match="transform 'route': port 'b' must be connected"):
        dag.validate()

    bad = Dag("r2")
    bad.add_source("src", range(3))
    bad.add_node("emit", lambda x: Out("nowhere", x), outputs=("somewhere",))
    bad.add_sink("sink", collect())
    bad.add_sink("some", collect())
    bad.chain("src", "emit", "sink")
    bad.connect("emit", "some", port="somewhere")
    with pytest.raises(StreamError, match="port 'nowhere'"):
        bad.run(timeout=30)


@pytest.mark.usefixtures("stream_backend")
def test_throttle_delay_in_a_dag_passes_everything() -> None:
    dag = Dag("th")
    dag.add_source("src", range(20))
    dag.add_node("th", ops.throttle(2000, burst=5))
    dag.add_sink("sink", collect())
    dag.chain("src", "th", "sink")
    result = dag.run()
    assert result.results["sink"] == list(range(20))
    assert result.nodes["th"]["counters"]["delayed"] >= 1
