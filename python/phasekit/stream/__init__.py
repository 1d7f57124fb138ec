"""Streaming DAGs over backpressured channels: sources, operators, sinks, windows, metrics.

from phasekit.stream import Dag, operators as ops

dag = Dag("bars")
dag.add_source("ticks", tick_feed)
dag.add_node("dedupe", ops.dedupe(key="id", last_n=10_000))
dag.add_node("bars", ops.ohlc_resample("1m"))
dag.add_sink("out", print)
dag.chain("ticks", "dedupe", "bars", "out")
dag.run()
"""

from __future__ import annotations

from phasekit.stream.dag import Dag, EdgeSpec, NodeSpec, StreamSettings
from phasekit.stream.eventtime import Watermark, parse_duration, to_ns
from phasekit.stream.feedback import Feedback
from phasekit.stream.metrics import MetricsServer, serve_metrics
from phasekit.stream.nodes import END, DeadLetter, NodeContext, Out
from phasekit.stream.partition import KeyedState, murmur3_32, partition
from phasekit.stream.runtime import DagHandle, RunResult

__all__ = [
    "END",
    "Dag",
    "DagHandle",
    "DeadLetter",
    "EdgeSpec",
    "Feedback",
    "KeyedState",
    "MetricsServer",
    "NodeContext",
    "NodeSpec",
    "Out",
    "RunResult",
    "StreamSettings",
    "Watermark",
    "murmur3_32",
    "parse_duration",
    "partition",
    "serve_metrics",
    "to_ns",
]
