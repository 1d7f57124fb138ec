"""Event-time windows: per-sensor 10-second averages from an out-of-order stream.

Events arrive up to 3 seconds out of order (tolerated by the watermark); a few arrive
much later and go to the late side output instead of being lost; sliding 30-second
maxima and per-sensor sessions run on the same input (fan-out).

    python examples/dag_windowed.py
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

from phasekit.stream import Dag
from phasekit.stream import operators as ops
from phasekit.stream.connectors import collect

S = 1_000_000_000  # timestamps are integer nanoseconds
T0 = 1_700_000_000 * S


def readings(n: int = 600, seed: int = 3) -> Iterator[dict[str, Any]]:
    """One reading per sensor every ~1 s, shuffled by up to 3 s, 1% delayed by 60 s."""
    rng = random.Random(seed)
    events = []
    for i in range(n):
        sensor = f"s{i % 3}"
        ts = T0 + (i // 3) * S + rng.randrange(S)
        arrival = ts + rng.randrange(3 * S) + (60 * S if rng.random() < 0.01 else 0)
        events.append((arrival, {"sensor": sensor, "ts": ts, "value": 20 + rng.gauss(0, 2)}))
    for _, event in sorted(events, key=lambda pair: pair[0]):
        yield event


def mean(events: list[dict[str, Any]]) -> float:
    return round(sum(e["value"] for e in events) / len(events), 3)


def build() -> Dag:
    dag = Dag("sensors")
    dag.add_source("readings", readings)
    dag.add_node(
        "avg10s",
        ops.tumbling("10s", timestamp="ts", key="sensor", aggregate=mean, max_delay="3s"),
    )
    dag.add_node(
        "max30s",
        ops.sliding("30s", "10s", timestamp="ts", aggregate=lambda es: max(e["value"] for e in es),
                    max_delay="3s", allowed_lateness="5s"),
    )  # fmt: skip
    dag.add_node("sessions", ops.session("2s", timestamp="ts", key="sensor", aggregate=len,
                                         max_delay="3s"))  # fmt: skip
    for node in ("avg10s", "max30s", "sessions"):
        dag.connect("readings", node)
        dag.add_sink(f"{node}_out", collect())
        dag.connect(node, f"{node}_out")
    dag.add_sink("late", collect())
    dag.connect("avg10s", "late", port="late")
    return dag


def main() -> None:
    result = build().run()
    windows = result.results["avg10s_out"]
    late = result.results["late"]
    print(f"{len(windows)} ten-second windows; first three:")
    for w in windows[:3]:
        print(
            f"  {w.key} [{(w.start - T0) // S:>3}s, {(w.end - T0) // S:>3}s) mean={w.value} n={w.n_items}"
        )
    print(f"sliding 30s maxima: {len(result.results['max30s_out'])} (with late updates)")
    print(f"sessions: {len(result.results['sessions_out'])}")
    print(f"late events sent to the side output: {len(late)} "
          f"(counted: {result.nodes['avg10s']['late']})")  # fmt: skip
    assert len(late) == result.nodes["avg10s"]["late"]
    assert sum(w.n_items for w in windows) + len(late) == 600


if __name__ == "__main__":
    main()
