"""Streaming between phases and the items of ``topology: stream`` phases."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Optional

import pyarrow.feather as feather
import pytest

from phasekit.catalog import uri_to_path
from phasekit.errors import ConfigError
from phasekit.stream import Dag
from phasekit.workflow import run
from phasekit.workflow.results import read_json


def stream_config(tmp_path: Path, nodes: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "run_name": "sinks",
        "results_dir": str(tmp_path),
        "phases": [{"name": "numbers", "topology": "stream", "dag": {"name": "d", "nodes": nodes}}],
    }


def square(x: int) -> dict[str, int]:
    return {"x": x, "sq": x * x}


def test_stream_sinks_are_catalogued_items(tmp_path: Path, backend_name: str) -> None:
    nodes = [
        {"id": "src", "type": "range", "args": {"stop": 500}},
        {"id": "rows", "type": "map", "args": {"fn": f"{__name__}:square"}, "inputs": ["src"]},
        {"id": "table", "type": "collect", "inputs": ["rows"]},
        {"id": "plain", "type": "collect", "inputs": ["src"]},
    ]
    res = run(stream_config(tmp_path, nodes), workers=1)
    try:
        items = {ref.entity: ref for ref in res.outputs("numbers")}
        assert {"sink_table", "sink_plain", "phase_summary"} <= set(items)
        table = feather.read_table(uri_to_path(items["sink_table"].uri))
        assert table.num_rows == 500
        assert sorted(table.column("sq").to_pylist()) == [x * x for x in range(500)]
        plain = read_json(Path(uri_to_path(items["sink_plain"].uri)))
        assert sorted(plain["result"]) == list(range(500))
        summary = res.phases["numbers"].summary
        assert summary["sinks"]["table"] == {
            "uri": items["sink_table"].uri,
            "format": "arrow",
            "rows": 500,
        }
        assert summary["sinks"]["plain"]["items"] == 500
        assert "results" not in summary  # no truncated repr any more
    finally:
        res.close()


def test_dag_bindings_name_extra_node_types() -> None:
    seen: list[int] = []
    spec = {
        "nodes": [{"id": "a", "type": "mine"}, {"id": "b", "type": "list_sink", "inputs": ["a"]}]
    }
    dag = Dag.from_spec(spec, bindings={"mine": [1, 2, 3], "list_sink": seen.append})
    dag.run(timeout=30)
    assert seen == [1, 2, 3]
    with pytest.raises(ConfigError, match="unknown type 'mine'"):
        Dag.from_spec(spec)
    bad = {
        "nodes": [
            {"id": "a", "type": "mine", "args": {"x": 1}},
            {"id": "b", "type": "discard", "inputs": ["a"]},
        ]
    }
    with pytest.raises(ConfigError, match="'mine' takes no args"):
        Dag.from_spec(bad, bindings={"mine": [1]})


# ---------------------------------------------------------------- streaming between phases

RUN_TIMEOUT = 60.0
"""Seconds a run may take before the test calls it hung."""
SLEEP = {"seconds": 0.0}
"""Seconds the slow objective sleeps per call (set by the tests that need it)."""
FAIL_AT = {"calls": -1}
"""The slow objective raises at this call (-1: never)."""
CALLS = {"n": 0}


def slow_return(metrics: dict[str, Any]) -> float:
    """An objective that takes ``SLEEP`` seconds per call (a slow consumer) and fails at
    call ``FAIL_AT``."""
    CALLS["n"] += 1
    if CALLS["n"] == FAIL_AT["calls"]:
        raise RuntimeError("objective failed on purpose")
    time.sleep(SLEEP["seconds"])
    return float(metrics["total_return"] or 0.0)


class FailingCrossover:
    """sma_crossover that fails for ``fast == 90`` (a producer failing mid-stream)."""

    def __init__(self, fast: int = 5, slow: int = 200) -> None:
        if fast == 90:
            raise RuntimeError("strategy failed on purpose")
        self.fast, self.slow = fast, slow

    def signals(self, bars: Any) -> Any:
        import numpy as np

        from phasekit.backtest.strategies import sma

        fast, slow = sma(bars.close, self.fast), sma(bars.close, self.slow)
        return np.nan_to_num(np.sign(fast - slow)).astype(np.int8)


def pipeline(
    tmp_path: Path,
    consumer: dict[str, Any],
    *,
    n_sets: int = 24,
    buffer_size: int = 2,
    mode: str = "streaming",
    strategy: str = "sma_crossover",
) -> dict[str, Any]:
    """A backtest phase ``search`` (``n_sets`` parameter sets, data flow ``mode``) and
    the consumer phase ``consumer`` depending on it."""
    return {
        "run_name": "pipe",
        "results_dir": str(tmp_path),
        "data": {"n_bars": 400, "frequency": "1h", "seed": 3, "volatility": 0.01},
        "strategy": {"type": strategy, "slow": 200},
        "phases": [
            {
                "name": "search",
                "data_flow": {
                    "mode": mode,
                    "streaming_settings": {"buffer_size": buffer_size, "flush_interval": 60},
                },
                "parameter_space": {"strategy.fast": list(range(2, 2 + n_sets))},
            },
            {"name": "consumer", "depends_on": ["search"], **consumer},
        ],
    }


ANALYSIS = {"topology": "analysis", "top_k": 3}


def run_bounded(cfg: dict[str, Any]) -> Any:
    """``run(cfg)`` in a thread; fails the test if it is not over in RUN_TIMEOUT."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["result"] = run(cfg, workers=1)
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(RUN_TIMEOUT)
    assert not thread.is_alive(), f"the run did not finish in {RUN_TIMEOUT} s (a hang)"
    if "error" in box:
        raise box["error"]
    return box["result"]


@pytest.fixture(autouse=True)
def _reset_objective() -> Iterator[None]:
    SLEEP["seconds"], FAIL_AT["calls"], CALLS["n"] = 0.0, -1, 0
    yield
    SLEEP["seconds"], FAIL_AT["calls"], CALLS["n"] = 0.0, -1, 0


def created(res: Any, phase: str, entity: Optional[str] = None) -> list[Any]:
    items = res._catalog.list_items(res.run_id, stage=phase, entity=entity)
    return sorted(i.created_at for i in items)


def test_consumer_stores_before_the_producer_ends(tmp_path: Path, backend_name: str) -> None:
    res = run_bounded(pipeline(tmp_path, ANALYSIS))
    try:
        running = created(res, "consumer", "running_ranking")
        streamed = res.phases["consumer"].summary["streamed"]
        assert streamed["items"] == 24 and streamed["windows"] == 1
        assert len(running) == streamed["running_rankings"] == 12  # every 2 items
        producer_parts = [
            i.created_at
            for i in res._catalog.list_items(res.run_id, stage="search")
            if i.entity_name.startswith("container_results")
        ]
        # the consumer's first stored item precedes the producer's last stored result
        assert running[0] < max(producer_parts)
        assert running[0] < created(res, "search")[-1]
    finally:
        res.close()


def test_concurrent_analysis_equals_the_sequential_run(tmp_path: Path, backend_name: str) -> None:
    conc = run_bounded(pipeline(tmp_path / "c", ANALYSIS))
    seq = run_bounded(pipeline(tmp_path / "s", ANALYSIS, mode="memory"))
    try:
        assert "streamed" in conc.phases["consumer"].summary
        assert "streamed" not in seq.phases["consumer"].summary  # memory: no stream to read
        a, b = conc.phases["consumer"], seq.phases["consumer"]
        assert a.selected == b.selected and len(a.selected) == 3
        keep = ("source", "container_id", "parameters", "metrics", "objective")
        assert {k: a.best[k] for k in keep} == {k: b.best[k] for k in keep}

        def ranking(res: Any) -> list[tuple[Any, ...]]:
            agg = read_json(res.run_dir / "consumer" / "aggregate_results.json")
            return [(r["source"], r["container_id"], r["objective"]) for r in agg["ranking"]]

        assert ranking(conc) == ranking(seq) and len(ranking(seq)) == 24
        # the running ranking built from the stream ends where the final ranking does
        top = a.summary["running"]["ranking"]
        assert [r["parameters"] for r in top] == a.selected
    finally:
        conc.close()
        seq.close()


def slow_row(item: dict[str, Any]) -> dict[str, Any]:
    """A slow consumer's per-item work: ``SLEEP`` seconds."""
    time.sleep(SLEEP["seconds"])
    return row_of(item)


def test_slow_consumer_bounds_the_fast_producer(tmp_path: Path, backend_name: str) -> None:
    quick = run_bounded(pipeline(tmp_path / "q", ANALYSIS, n_sets=100, mode="memory"))
    per_container = quick.phases["search"].seconds / 100
    quick.close()
    SLEEP["seconds"] = 110 * per_container
    n, buffer_size = 16, 2
    dag = STREAM_CONSUMER["dag"]
    nodes = [dict(node) for node in dag["nodes"]]
    nodes[1]["args"] = {"fn": f"{__name__}:slow_row"}
    consumer = {"topology": "stream", "dag": {**dag, "capacity": 1, "nodes": nodes}}
    res = run_bounded(pipeline(tmp_path / "s", consumer, n_sets=n, buffer_size=buffer_size))
    try:
        streamed = res.phases["consumer"].summary["streamed"]
        per_item = res.phases["consumer"].seconds / n
        assert per_item > 100 * per_container, (per_item, per_container)
        assert streamed["items"] == n
        # the channel between them never held more than its capacity ...
        assert streamed["capacity"] == buffer_size
        assert 0 < streamed["high_water"] <= buffer_size
        # ... the stream store kept less than two buffers unflushed ...
        peak = streamed["producer_peak"]
        saved = read_json(res.run_dir / "consumer" / "phase_summary.json")["streamed"]
        assert saved["producer_peak"] == peak
        assert peak["channel_depth"] <= buffer_size
        assert peak["pending"] < 2 * buffer_size
        # ... because the producer waited for the consumer (backpressure): it could run
        # ahead by the buffers between them (about 4 channels of 2 items and the Dag's)
        assert streamed["blocked_send_seconds"] > 0
        assert res.phases["search"].seconds > (n - 5 * buffer_size) * per_item * 0.8
    finally:
        res.close()


def test_a_failing_consumer_fails_the_run_and_stops_the_producer(
    tmp_path: Path, backend_name: str
) -> None:
    FAIL_AT["calls"] = 10
    consumer = {**ANALYSIS, "objective_function": f"{__name__}:slow_return"}
    cfg = pipeline(tmp_path, consumer, n_sets=100, buffer_size=2)
    with pytest.raises(RuntimeError, match="objective failed on purpose"):
        run_bounded(cfg)
    run_dir = next(tmp_path.glob("pipe*"))
    assert not (run_dir / "consumer" / "selected_parameters.json").exists()
    assert not (run_dir / "search" / "phase_summary.json").exists()  # stopped early


def test_a_failing_producer_fails_the_run_and_the_consumer_stores_no_result(
    tmp_path: Path, backend_name: str
) -> None:
    cfg = pipeline(tmp_path, ANALYSIS, n_sets=100, strategy=f"{__name__}:FailingCrossover")
    with pytest.raises(Exception, match="strategy failed on purpose"):
        run_bounded(cfg)
    run_dir = next(tmp_path.glob("pipe*"))
    assert list((run_dir / "consumer").glob("items_*/running_ranking.json"))  # it consumed
    assert not (run_dir / "consumer" / "selected_parameters.json").exists()
    assert not (run_dir / "consumer" / "phase_summary.json").exists()


STREAM_CONSUMER = {
    "topology": "stream",
    "dag": {
        "name": "live",
        "capacity": 4,
        "nodes": [
            {"id": "results", "type": "phase_input"},
            {
                "id": "ids",
                "type": "map",
                "args": {"fn": f"{__name__}:row_of"},
                "inputs": ["results"],
            },
            {"id": "out", "type": "collect", "inputs": ["ids"]},
        ],
    },
}


def row_of(item: dict[str, Any]) -> dict[str, Any]:
    return {
        "source": item["source"],
        "container_id": item["container_id"],
        "total_return": item["metrics"]["total_return"],
    }


def test_a_stream_phase_reads_its_producer_while_it_runs(tmp_path: Path, backend_name: str) -> None:
    res = run_bounded(pipeline(tmp_path, STREAM_CONSUMER, n_sets=30, buffer_size=3))
    try:
        summary = res.phases["consumer"].summary
        assert summary["streamed"]["items"] == 30
        assert summary["streamed"]["high_water"] <= 3
        uri = summary["sinks"]["out"]["uri"]
        rows = feather.read_table(uri_to_path(uri)).to_pylist()
        agg = read_json(res.run_dir / "search" / "aggregate_results.json")
        expected = {
            ("search/full", r["container_id"], r["metrics"]["total_return"]) for r in agg["ranking"]
        }
        assert {(r["source"], r["container_id"], r["total_return"]) for r in rows} == expected
        assert len(rows) == 30
    finally:
        res.close()


def test_phase_input_needs_one_streaming_dependency(tmp_path: Path) -> None:
    cfg = pipeline(tmp_path, STREAM_CONSUMER, n_sets=3, mode="memory")
    with pytest.raises(ConfigError, match=r"phase_input.*data_flow.mode streaming"):
        run_bounded(cfg)


FAIL_ON = {"container_id": ""}


def row_or_fail(item: dict[str, Any]) -> dict[str, Any]:
    if item["container_id"] == FAIL_ON["container_id"]:
        raise RuntimeError("consumer failed on purpose")
    return row_of(item)


def test_a_resumed_stream_phase_reads_the_persisted_stream(
    tmp_path: Path, backend_name: str
) -> None:
    dag = STREAM_CONSUMER["dag"]
    nodes = [dict(node) for node in dag["nodes"]]
    nodes[1]["args"] = {"fn": f"{__name__}:row_or_fail"}
    consumer = {"topology": "stream", "dag": {**dag, "nodes": nodes}}
    cfg = pipeline(tmp_path, consumer, n_sets=12, buffer_size=3)
    FAIL_ON["container_id"] = "portfolio_00011"  # the last result: the producer completes
    try:
        with pytest.raises(Exception, match="consumer failed on purpose"):
            run_bounded(cfg)
    finally:
        FAIL_ON["container_id"] = ""
    run_dir = next(tmp_path.glob("pipe*"))
    assert (run_dir / "search" / "phase_summary.json").exists()
    assert not (run_dir / "consumer" / "sink_out.arrow").exists()
    res = run(cfg, workers=1, resume=run_dir.name)
    try:
        summary = res.phases["consumer"].summary
        assert "streamed" not in summary  # read after the producer, from its files
        rows = feather.read_table(uri_to_path(summary["sinks"]["out"]["uri"])).to_pylist()
        assert sorted(r["container_id"] for r in rows) == [f"portfolio_{i:05d}" for i in range(12)]
        assert {r["source"] for r in rows} == {"search/full"}
    finally:
        res.close()


def test_subscription_poll_ends_when_told(tmp_path: Path, backend_name: str) -> None:
    from phasekit.stores import StreamStore

    store = StreamStore(tmp_path / "s", buffer_size=2, flush_interval=60)
    try:
        sub = store.subscribe("k")
        for i in range(2):
            store.put("k", {"i": i})
        seen: list[int] = []
        for item in sub.poll(lambda: len(seen) == 2, interval=0.01):
            seen.append(item["i"])
        assert seen == [0, 1]  # the stream is still open: only stop() ended the loop
        stats = sub.stats()
        assert stats["capacity"] == 2 and stats["received"] == 2
        sub.close()
    finally:
        store.close()
