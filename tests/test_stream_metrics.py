"""The metrics endpoint: served on 127.0.0.1, parsed by prometheus_client's text parser."""

from __future__ import annotations

import threading
import time
import urllib.request
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from _stream_support import stream_backend  # noqa: F401
from phasekit.stream import Dag, StreamSettings, serve_metrics
from phasekit.stream import operators as ops

pytestmark = pytest.mark.usefixtures("stream_backend")


def _scrape(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=10) as resp:
        text = resp.read().decode()
    return {f.name: f for f in text_string_to_metric_families(text)}


def _value(families: dict[str, Any], family: str, sample: str, **labels: str) -> float:
    for s in families[family].samples:
        if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items()):
            return float(s.value)
    raise AssertionError(f"no sample {sample} {labels} in {family}")


def test_metrics_endpoint_during_and_after_a_run() -> None:
    gate = threading.Event()
    holding = threading.Event()

    def held(x: int) -> int:
        if x == 50:
            holding.set()
            gate.wait(30)
        return x

    dag = Dag("m", settings=StreamSettings(capacity=8, latency_interval=0.01))
    dag.add_source("src", range(200))
    dag.add_node("held", held)
    dag.add_node("win", ops.tumbling(10, timestamp=lambda x: x))
    dag.add_sink("sink", lambda x: None)
    dag.chain("src", "held", "win", "sink")
    with dag.serve_metrics(port=0) as server:
        assert server.addr == "127.0.0.1" and server.url.startswith("http://127.0.0.1:")
        handle = dag.start()
        holding.wait(30)
        while handle.stats().queues[0].depth < 8:  # "held"'s input fills while it waits
            time.sleep(0.01)
        live = _scrape(server.url)
        assert _value(live, "phasekit_stream_running", "phasekit_stream_running") == 1.0
        assert (
            _value(live, "phasekit_stream_queue_depth", "phasekit_stream_queue_depth", node="held")
            == 8
        )
        assert (
            _value(
                live,
                "phasekit_stream_queue_utilization",
                "phasekit_stream_queue_utilization",
                node="held",
            )
            == 1.0
        )
        gate.set()
        handle.wait(timeout=30)
        done = _scrape(server.url)
    assert _value(done, "phasekit_stream_running", "phasekit_stream_running") == 0.0
    assert (
        _value(done, "phasekit_stream_items_in", "phasekit_stream_items_in_total", node="sink")
        == 20
    )
    assert (
        _value(done, "phasekit_stream_items_out", "phasekit_stream_items_out_total", node="src")
        == 200
    )
    assert _value(done, "phasekit_stream_errors", "phasekit_stream_errors_total", node="held") == 0
    assert (
        _value(done, "phasekit_stream_queue_capacity", "phasekit_stream_queue_capacity", node="win")
        == 8
    )
    assert (
        _value(
            done,
            "phasekit_stream_queue_high_water",
            "phasekit_stream_queue_high_water",
            node="held",
        )
        == 8
    )
    assert (
        _value(
            done,
            "phasekit_stream_backpressure_seconds",
            "phasekit_stream_backpressure_seconds_total",
            node="held",
        )
        > 0
    )
    assert (
        _value(done, "phasekit_stream_late_events", "phasekit_stream_late_events_total", node="win")
        == 0
    )
    assert "phasekit_stream_watermark_lag_seconds" in done
    assert done["phasekit_stream_latency_seconds"].type == "histogram"


def test_serve_metrics_function_accepts_a_dag_or_handle() -> None:
    dag = Dag("m2")
    dag.add_source("src", range(5))
    dag.add_sink("sink", lambda x: None)
    dag.chain("src", "sink")
    handle = dag.start()
    handle.wait(timeout=30)
    with serve_metrics(0, registry=handle) as server:
        families = _scrape(server.url)
    assert (
        _value(families, "phasekit_stream_items_in", "phasekit_stream_items_in_total", node="sink")
        == 5
    )
