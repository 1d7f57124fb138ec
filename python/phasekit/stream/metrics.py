"""Prometheus metrics of a Dag: one registry per Dag, read from the running graph at scrape time.

Counters and queue gauges are not updated on the hot path: the runtime keeps plain
integers and channel statistics, and a collector turns a snapshot of them into
metric families when Prometheus scrapes. Only the end-to-end latency histogram is
observed as it happens (a few samples per second per sink).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Callable, Optional
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, Histogram, make_wsgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from phasekit.errors import InvalidArgument
from phasekit.stream.eventtime import MIN_TIME, NS_PER_S

PREFIX = "phasekit_stream"
LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip


@dataclass
class NodeSnapshot:
    node: str
    kind: str
    items_in: int
    items_out: int
    errors: int
    on_error: str
    late: int = 0
    counters: dict[str, int] = field(default_factory=dict)
    watermark_ns: Optional[int] = None
    throttled_sources: int = 0


@dataclass
class QueueSnapshot:
    node: str
    instance: str
    depth: int
    capacity: int
    high_water: int
    sent: int
    received: int
    blocked_send_seconds: float


@dataclass
class FeedbackSnapshot:
    name: str
    pressure: float
    high: float
    low: float
    throttled: bool
    episodes: int
    throttled_seconds: float


@dataclass
class Snapshot:
    running: bool
    nodes: list[NodeSnapshot]
    queues: list[QueueSnapshot]
    feedbacks: list[FeedbackSnapshot]


class _RuntimeCollector(Collector):
    def __init__(self, owner: DagMetrics) -> None:
        self.owner = owner

    def collect(self) -> Iterator[Any]:
        snap = self.owner.snapshot()
        if snap is None:
            return
        yield from _families(self.owner.dag, snap)

    def describe(self) -> list[Any]:
        return []


def _gauge(name: str, doc: str, labels: list[str]) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"{PREFIX}_{name}", doc, labels=labels)


def _counter(name: str, doc: str, labels: list[str]) -> CounterMetricFamily:
    return CounterMetricFamily(f"{PREFIX}_{name}", doc, labels=labels)


def _node_families(dag: str, nodes: list[NodeSnapshot]) -> Iterator[Any]:
    items_in = _counter("items_in", "Items received by a node", ["dag", "node", "kind"])
    items_out = _counter("items_out", "Items emitted by a node", ["dag", "node", "kind"])
    errors = _counter("errors", "Items whose processing raised", ["dag", "node", "on_error"])
    late = _counter("late_events", "Events that arrived after their window closed", ["dag", "node"])
    ops = _counter(
        "operator_events", "Operator counters (dropped, late, ...)", ["dag", "node", "event"]
    )
    lag = _gauge("watermark_lag_seconds", "Wall clock minus the node's watermark", ["dag", "node"])
    throttled = _gauge("source_throttled", "1 while feedback throttles the source", ["dag", "node"])
    now_ns = time.time_ns()
    for n in nodes:
        items_in.add_metric([dag, n.node, n.kind], n.items_in)
        items_out.add_metric([dag, n.node, n.kind], n.items_out)
        errors.add_metric([dag, n.node, n.on_error], n.errors)
        for event, value in sorted(n.counters.items()):
            ops.add_metric([dag, n.node, event], value)
        if "late" in n.counters or n.late:
            late.add_metric([dag, n.node], n.late or n.counters.get("late", 0))
        if n.watermark_ns is not None and n.watermark_ns > MIN_TIME:
            lag.add_metric([dag, n.node], (now_ns - n.watermark_ns) / NS_PER_S)
        if n.kind == "source":
            throttled.add_metric([dag, n.node], float(n.throttled_sources))
    yield from (items_in, items_out, errors, late, ops, lag, throttled)


def _queue_families(dag: str, queues: list[QueueSnapshot]) -> Iterator[Any]:
    labels = ["dag", "node", "instance"]
    depth = _gauge("queue_depth", "Items waiting in a node's input channel", labels)
    capacity = _gauge("queue_capacity", "Capacity of a node's input channel", labels)
    high = _gauge("queue_high_water", "Largest depth seen in a node's input channel", labels)
    util = _gauge(
        "queue_utilization", "Largest depth/capacity over a node's input channels", ["dag", "node"]
    )
    blocked = _counter(
        "backpressure_seconds",
        "Seconds upstream senders spent blocked on a node's full input channel",
        ["dag", "node"],
    )
    worst: dict[str, float] = {}
    blocked_by_node: dict[str, float] = {}
    for q in queues:
        key = [dag, q.node, q.instance]
        depth.add_metric(key, q.depth)
        capacity.add_metric(key, q.capacity)
        high.add_metric(key, q.high_water)
        worst[q.node] = max(worst.get(q.node, 0.0), q.depth / q.capacity)
        blocked_by_node[q.node] = blocked_by_node.get(q.node, 0.0) + q.blocked_send_seconds
    for node, value in worst.items():
        util.add_metric([dag, node], value)
    for node, value in blocked_by_node.items():
        blocked.add_metric([dag, node], value)
    yield from (depth, capacity, high, util, blocked)


def _feedback_families(dag: str, feedbacks: list[FeedbackSnapshot]) -> Iterator[Any]:
    labels = ["dag", "feedback"]
    pressure = _gauge("feedback_pressure", "Last pressure reported to a feedback", labels)
    ratio = _gauge("feedback_pressure_ratio", "Pressure divided by the high watermark", labels)
    throttled = _gauge("feedback_throttled", "1 while the feedback throttles its sources", labels)
    episodes = _counter(
        "feedback_episodes", "Times the pressure crossed the high watermark", labels
    )
    seconds = _counter("feedback_throttled_seconds", "Seconds spent throttled", labels)
    for f in feedbacks:
        pressure.add_metric([dag, f.name], f.pressure)
        ratio.add_metric([dag, f.name], f.pressure / f.high if f.high else 0.0)
        throttled.add_metric([dag, f.name], 1.0 if f.throttled else 0.0)
        episodes.add_metric([dag, f.name], f.episodes)
        seconds.add_metric([dag, f.name], f.throttled_seconds)
    yield from (pressure, ratio, throttled, episodes, seconds)


def _families(dag: str, snap: Snapshot) -> Iterator[Any]:
    running = _gauge("running", "1 while the Dag runs", ["dag"])
    running.add_metric([dag], 1.0 if snap.running else 0.0)
    yield running
    yield from _node_families(dag, snap.nodes)
    yield from _queue_families(dag, snap.queues)
    yield from _feedback_families(dag, snap.feedbacks)


class DagMetrics:
    """The Prometheus registry of one Dag and the latency histogram of its sinks."""

    def __init__(self, dag: str) -> None:
        self.dag = dag
        self.registry = CollectorRegistry(auto_describe=False)
        self.latency = Histogram(
            f"{PREFIX}_latency_seconds",
            "End-to-end latency from a source's emission to a sink's processing, sampled",
            ["dag", "node"],
            registry=self.registry,
            buckets=LATENCY_BUCKETS,
        )
        self._snapshot: Optional[Callable[[], Snapshot]] = None
        self.registry.register(_RuntimeCollector(self))

    def attach(self, snapshot: Callable[[], Snapshot]) -> None:
        """Read per-node values from ``snapshot()`` (the latest run of the Dag)."""
        self._snapshot = snapshot

    def snapshot(self) -> Optional[Snapshot]:
        return None if self._snapshot is None else self._snapshot()

    def observe_latency(self, node: str, seconds: float) -> None:
        self.latency.labels(self.dag, node).observe(seconds)


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


class _ThreadingWSGIServer(WSGIServer):
    daemon_threads = True

    def process_request(self, request: Any, client_address: Any) -> None:
        thread = threading.Thread(target=self._handle, args=(request, client_address), daemon=True)
        thread.start()

    def _handle(self, request: Any, client_address: Any) -> None:
        try:
            self.finish_request(request, client_address)
        except Exception:
            self.handle_error(request, client_address)
        finally:
            self.shutdown_request(request)


class MetricsServer:
    """An HTTP server exposing a registry in the Prometheus text format at any path."""

    def __init__(self, registry: CollectorRegistry, port: int, addr: str) -> None:
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise InvalidArgument(f"port must be an integer in 0..65535, got {port!r}")
        app = make_wsgi_app(registry)
        self._server = make_server(
            addr, port, app, server_class=_ThreadingWSGIServer, handler_class=_QuietHandler
        )
        self.addr = addr
        self.port = int(self._server.server_port)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name=f"phasekit-metrics:{self.port}", daemon=True
        )
        self._thread.start()

    @property
    def url(self) -> str:
        host = f"[{self.addr}]" if ":" in self.addr else self.addr
        return f"http://{host}:{self.port}/metrics"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def __enter__(self) -> MetricsServer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"MetricsServer({self.url!r})"


def serve_metrics(port: int = 0, addr: str = "127.0.0.1", registry: Any = None) -> MetricsServer:
    """Serve ``registry`` (a Dag, a DagHandle, or a CollectorRegistry) on ``addr:port``.

    ``port=0`` picks a free port (read it from ``.port``). The default address is the
    loopback interface; pass ``addr="0.0.0.0"`` deliberately to expose it.
    """
    if registry is None:
        from prometheus_client import REGISTRY

        registry = REGISTRY
    inner = getattr(registry, "registry", registry)
    if not isinstance(inner, CollectorRegistry):
        raise InvalidArgument(
            f"registry must be a Dag, a DagHandle or a prometheus CollectorRegistry, got {registry!r}"
        )
    return MetricsServer(inner, port, addr)
