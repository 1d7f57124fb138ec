"""Real-time bars: tick feed -> dedupe -> 1-minute OHLCV bars -> SMA crossover signal -> Arrow file.

A synthetic feed replays ticks of several symbols (with resent duplicates and a little
disorder, as live feeds have). Bars are cut by event time, a strategy computes a fast/
slow moving-average crossover per symbol on each closed bar, and every bar with its
signal is written to an Arrow IPC file through ``phasekit.IpcWriter``. Prometheus
metrics are served on 127.0.0.1 while the DAG runs.

    python examples/dag_realtime_bars.py --out bars.arrow              # as fast as possible
    python examples/dag_realtime_bars.py --speed 60 --port 9109        # 60x real time
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
import urllib.request
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.ipc

from phasekit.stream import Dag, NodeContext
from phasekit.stream import operators as ops
from phasekit.stream.connectors import ipc_sink

S = 1_000_000_000
T0 = 1_767_225_600 * S  # 2026-01-01 00:00 UTC

SCHEMA = pa.schema(
    [
        ("symbol", pa.string()),
        ("ts", pa.timestamp("ns", tz="UTC")),
        ("open", pa.float64()),
        ("high", pa.float64()),
        ("low", pa.float64()),
        ("close", pa.float64()),
        ("volume", pa.float64()),
        ("trades", pa.int64()),
        ("sma_fast", pa.float64()),
        ("sma_slow", pa.float64()),
        ("signal", pa.int8()),
    ]
)


class TickFeed:
    """Synthetic ticks: a random walk per symbol, ~5 ticks/s each, 2% sent twice, and
    delivery jitter of up to 1 s. ``speed`` > 0 replays at that multiple of real time."""

    def __init__(self, symbols: int, minutes: int, speed: float, seed: int = 11) -> None:
        self.symbols = [f"SYM{i}" for i in range(symbols)]
        self.minutes = minutes
        self.speed = speed
        self.rng = random.Random(seed)
        self.sent = 0

    def open(self, ctx: NodeContext) -> None:
        self.ctx = ctx

    def _ticks(self) -> Iterator[tuple[int, dict[str, Any]]]:
        rng = self.rng
        price = {s: 100.0 + 10 * i for i, s in enumerate(self.symbols)}
        ts, end, tick_id = T0, T0 + self.minutes * 60 * S, 0
        while True:
            ts += int(rng.expovariate(5.0 * len(self.symbols)) * S) + 1
            if ts >= end:
                return
            sym = rng.choice(self.symbols)
            price[sym] *= 1 + rng.gauss(0, 0.0004)
            tick = {"id": tick_id, "symbol": sym, "ts": ts, "price": round(price[sym], 4),
                    "volume": float(rng.randint(1, 50))}  # fmt: skip
            tick_id += 1
            arrival = ts + rng.randrange(S)  # delivered up to 1 s late
            yield arrival, tick
            if rng.random() < 0.02:
                yield arrival + rng.randrange(S), tick  # resent

    def __iter__(self) -> Iterator[dict[str, Any]]:
        pending: list[tuple[int, int, dict[str, Any]]] = []
        started = time.monotonic()
        import heapq

        for n, (arrival, tick) in enumerate(self._ticks()):
            heapq.heappush(pending, (arrival, n, tick))
            while pending and pending[0][0] <= arrival - 2 * S:
                due, _, out = heapq.heappop(pending)
                self._pace(started, due)
                self.sent += 1
                yield out
        while pending:
            _, _, out = heapq.heappop(pending)
            self.sent += 1
            yield out

    def _pace(self, started: float, due: int) -> None:
        if self.speed > 0:
            wait = (due - T0) / S / self.speed - (time.monotonic() - started)
            if wait > 0:
                self.ctx.sleep(wait)


def crossover(
    state: dict[str, deque[float]] | None, bar: dict[str, Any]
) -> tuple[Any, dict[str, Any]]:
    """SMA(5) vs SMA(20) of closes; +1 when fast crosses strictly above slow, -1 below."""
    closes: deque[float] = state["closes"] if state else deque(maxlen=20)
    prev_diff = state["diff"] if state else None
    closes.append(bar["close"])
    fast = sum(list(closes)[-5:]) / min(5, len(closes))
    slow = sum(closes) / len(closes)
    diff = fast - slow if len(closes) == 20 else None
    signal = 0
    if diff is not None and prev_diff is not None:
        if prev_diff < 0 < diff:
            signal = 1
        elif prev_diff > 0 > diff:
            signal = -1
    row = {**bar, "sma_fast": fast, "sma_slow": slow, "signal": signal}
    return {"closes": closes, "diff": diff}, row


def build(out: Path, symbols: int, minutes: int, speed: float) -> tuple[Dag, TickFeed]:
    feed = TickFeed(symbols, minutes, speed)
    dag = Dag("realtime_bars", capacity=1024)
    dag.add_source("ticks", feed)
    dag.add_node("dedupe", ops.dedupe(key="id", last_n=50_000))
    dag.add_node("bars", ops.ohlc_resample("1m", by="symbol", max_delay="2s"))
    dag.add_node("signal", ops.stateful_map("symbol", crossover), key="symbol")
    dag.add_sink("arrow", ipc_sink(out, schema=SCHEMA, rows_per_batch=256))
    dag.chain("ticks", "dedupe", "bars", "signal", "arrow")
    return dag, feed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="Arrow file to write")
    parser.add_argument("--symbols", type=int, default=4)
    parser.add_argument("--minutes", type=int, default=90, help="minutes of market data")
    parser.add_argument("--speed", type=float, default=0.0, help="x real time (0: max speed)")
    parser.add_argument("--port", type=int, default=0, help="metrics port on 127.0.0.1")
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp()) / "bars.arrow"

    dag, feed = build(out, args.symbols, args.minutes, args.speed)
    with dag.serve_metrics(port=args.port) as server:
        print(f"metrics: {server.url}")
        result = dag.run()
        with urllib.request.urlopen(server.url, timeout=10) as resp:
            metrics = resp.read().decode()
    written = result.results["arrow"]
    print(f"ticks sent {feed.sent}, duplicates dropped "
          f"{result.nodes['dedupe']['counters']['duplicates']}, late ticks "
          f"{result.nodes['bars']['late']}")  # fmt: skip
    print(f"wrote {written['rows']} bars to {written['path']} ({written['checksum']})")
    with pa.memory_map(str(out)) as source:
        table = pa.ipc.open_file(source).read_all()
    signals = table.filter(pa.compute.not_equal(table["signal"], 0))
    print(f"read back {table.num_rows} rows; {signals.num_rows} crossover signals")
    print(signals.slice(0, 5).select(["symbol", "ts", "close", "signal"]).to_pandas().to_string())
    for line in metrics.splitlines():
        if line.startswith(
            ("phasekit_stream_items_in_total", "phasekit_stream_latency_seconds_count")
        ):
            print(line)
    assert table.num_rows == written["rows"] > 0
    assert table.schema.equals(SCHEMA)


if __name__ == "__main__":
    main()
