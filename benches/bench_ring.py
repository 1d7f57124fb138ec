"""EventRing benchmarks: append, extend, closing positions, whole workloads, export.

Implementations: ``rust`` (phasekit._core), ``python`` (phasekit._pure) and, for the
sliding-window append, the peer a user would otherwise write: ``deque`` (a
``collections.deque(maxlen=N)`` of 7-tuples). Ids such as ``rust-extend`` are other
ways into the Rust ring, compared against ``rust`` in the same group. ``items`` are
events (rows for the export). Every benchmark checks the ring afterwards: what it
retained, the events it saw, the trades it closed.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from phasekit.backend import backend_module

BAR, ORDER, FILL, OPEN, CLOSE = 1, 3, 4, 5, 6
APPENDS = 50_000
EXTEND_ROWS = 1_000_000
EXTEND_TRACKED_ROWS = 200_000
POSITIONS = 10_000
EXPORT_ROWS = 200_000


def ring_class(impl: str) -> Any:
    return backend_module("rust" if impl.startswith("rust") else "python").EventRing


def rounds(impl: str) -> int:
    return 3 if impl == "python" else 10


def columns(n: int, seed: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "ts": np.arange(n, dtype=np.int64),
        "kind": rng.choice([BAR, ORDER, OPEN, CLOSE], size=n).astype(np.uint16),
        "key": rng.integers(-1, 1000, size=n),
        "symbol": rng.integers(0, 50, size=n).astype(np.int32),
        "price": rng.random(n),
        "quantity": rng.random(n),
        "value": rng.random(n),
    }


# ---------------------------------------------------------------- append


def _append_events(append: Callable[..., None], n: int) -> None:
    for i in range(n):
        append(i, 1, -1, 0, 1.0, 2.0, 3.0)


def _append_tuples(append: Callable[[Any], None], n: int) -> None:
    for i in range(n):
        append((i, 1, -1, 0, 1.0, 2.0, 3.0))


@pytest.mark.parametrize("impl", ["rust", "python", "deque"])
def test_append(benchmark: Any, impl: str) -> None:
    """One 7-field event per call into a sliding window of 1000."""
    benchmark.group = "ring:append"
    benchmark.extra_info.update(items=APPENDS, unit="events")
    if impl == "deque":
        window: deque[tuple[Any, ...]] = deque(maxlen=1000)
        benchmark.pedantic(_append_tuples, (window.append, APPENDS), rounds=10, iterations=1)
        assert len(window) == 1000 and [e[0] for e in window] == list(
            range(APPENDS - 1000, APPENDS)
        )
        return
    ring = ring_class(impl)("sliding_window", capacity=1000)
    benchmark.pedantic(_append_events, (ring.append, APPENDS), rounds=rounds(impl), iterations=1)
    assert len(ring) == 1000
    assert ring.to_arrow().column("ts").to_pylist() == list(range(APPENDS - 1000, APPENDS))


# ---------------------------------------------------------------- extend


@pytest.mark.parametrize("impl", ["rust", "rust-numpy", "python"])
def test_extend(benchmark: Any, impl: str) -> None:
    """A million events from Arrow (or numpy) columns into a full keep_all ring."""
    benchmark.group = "ring:extend"
    benchmark.extra_info.update(items=EXTEND_ROWS, unit="events")
    cols = columns(EXTEND_ROWS)
    source: Any = cols if impl == "rust-numpy" else pa.record_batch(cols)
    ring = ring_class(impl)("keep_all", max_events=EXTEND_ROWS)
    ring.extend(source)  # full from here on: every later row replaces the oldest
    benchmark.pedantic(ring.extend, (source,), rounds=rounds(impl), iterations=1)
    assert len(ring) == EXTEND_ROWS and ring.stats()["seen"] % EXTEND_ROWS == 0
    kept = ring.to_arrow()  # the last EXTEND_ROWS rows seen: the source itself
    for name in ("ts", "kind", "key", "price"):
        np.testing.assert_array_equal(kept.column(name).to_numpy(), cols[name])


@pytest.mark.parametrize("impl", ["rust", "python"])
def test_extend_trade_complete(benchmark: Any, impl: str) -> None:
    """Events of ~1000 concurrent positions from Arrow columns under trade_complete."""
    benchmark.group = "ring:extend_trade_complete"
    benchmark.extra_info.update(items=EXTEND_TRACKED_ROWS, unit="events")
    batch = pa.record_batch(columns(EXTEND_TRACKED_ROWS))
    ring = ring_class(impl)("trade_complete")
    benchmark.pedantic(ring.extend, (batch,), rounds=rounds(impl), iterations=1)
    cols = columns(EXTEND_TRACKED_ROWS)
    closes = int(np.count_nonzero((cols["kind"] == CLOSE) & (cols["key"] >= 0)))
    stats = ring.stats()
    passes = stats["seen"] // EXTEND_TRACKED_ROWS
    assert passes >= 1 and stats["seen"] == passes * EXTEND_TRACKED_ROWS
    assert stats["trades"] == passes * closes


# ---------------------------------------------------------------- closing positions


def _open_positions(impl: str) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """A trade_complete ring with POSITIONS open positions of 9 events each."""
    ring = ring_class(impl)("trade_complete")
    n = POSITIONS
    keys = np.tile(np.arange(n), 9)  # position k: events k, n + k, 2n + k, ...
    kinds = np.full(9 * n, FILL, dtype=np.uint16)
    kinds[:n] = OPEN
    ring.extend({"ts": np.arange(9 * n), "kind": kinds, "key": keys, "price": np.ones(9 * n)})
    return (ring,), {}


def _close_all(ring: Any) -> None:
    append = ring.append
    for k in range(POSITIONS):
        append(k, CLOSE, k, 3, 2.0, 1.0, 5.0)


def _close_all_batch(ring: Any) -> None:
    n = POSITIONS
    ring.extend(
        {
            "ts": np.arange(n),
            "kind": np.full(n, CLOSE, dtype=np.uint16),
            "key": np.arange(n),
            "symbol": np.full(n, 3, dtype=np.int32),
            "price": np.full(n, 2.0),
            "quantity": np.ones(n),
            "value": np.full(n, 5.0),
        }
    )


@pytest.mark.parametrize("impl", ["rust", "rust-extend", "python"])
def test_close_position(benchmark: Any, impl: str) -> None:
    """POSITION_CLOSE of 10-event positions (9 retained + the close), one per call
    (``rust-extend``: all closes in one batch, the cost inside Rust)."""
    benchmark.group = "ring:close_position"
    benchmark.extra_info.update(items=POSITIONS, unit="positions")
    run = _close_all_batch if impl == "rust-extend" else _close_all
    rings: list[Any] = []

    def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        args, kwargs = _open_positions(impl)
        rings.append(args[0])
        return args, kwargs

    benchmark.pedantic(run, setup=setup, rounds=rounds(impl), iterations=1)
    ring = rings[-1]
    assert len(ring) == 0
    assert ring.trades().column("n_events").to_pylist()[:2] == [10, 10]


# ---------------------------------------------------------------- workloads


def workload(positions: int = 2000, concurrent: int = 50, seed: int = 3) -> list[tuple[Any, ...]]:
    """A trading trace: ``concurrent`` positions at a time, each OPEN, 7 orders/bars, CLOSE,
    with a market bar (key -1) between position events."""
    rng = np.random.default_rng(seed)
    events: list[tuple[Any, ...]] = []
    stage = {k: 0 for k in range(concurrent)}
    next_key = concurrent
    ts = 0
    closed = 0
    while closed < positions:
        key = int(rng.choice(list(stage)))
        step = stage[key]
        price = float(100 + rng.standard_normal())
        kind = OPEN if step == 0 else CLOSE if step == 8 else ORDER if step % 2 else BAR
        events.append((ts, kind, key, key % 20, price, 1.0, 0.5 if kind == CLOSE else 0.0))
        events.append((ts + 1, BAR, -1, key % 20, price, 0.0, 0.0))
        ts += 2
        if kind == CLOSE:
            del stage[key]
            stage[next_key] = 0
            next_key += 1
            closed += 1
        else:
            stage[key] = step + 1
    return events


def _replay(append: Callable[..., None], events: list[tuple[Any, ...]]) -> None:
    for e in events:
        append(*e)


def _workload_bench(benchmark: Any, impl: str, policy: str) -> None:
    events = workload()
    benchmark.extra_info.update(items=len(events), unit="events")
    batch = pa.record_batch(
        {
            name: pa.array([e[i] for e in events], type)
            for i, (name, type) in enumerate(
                [
                    ("ts", pa.int64()),
                    ("kind", pa.uint16()),
                    ("key", pa.int64()),
                    ("symbol", pa.int32()),
                    ("price", pa.float64()),
                    ("quantity", pa.float64()),
                    ("value", pa.float64()),
                ]
            )
        }
    )
    cls = ring_class(impl)
    rings: list[Any] = []

    def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        ring = cls(policy)
        rings.append(ring)
        if impl == "rust-extend":
            return (ring.extend, batch), {}
        return (ring.append, events), {}

    run: Callable[..., Any] = (lambda extend, b: extend(b)) if impl == "rust-extend" else _replay
    benchmark.pedantic(run, setup=setup, rounds=rounds(impl), iterations=1)
    # the events of positions never closed stay; a closed position leaves a trade summary
    closed = {e[2] for e in events if e[1] == CLOSE}
    open_events = [e for e in events if e[2] >= 0 and e[2] not in closed]
    stats = rings[-1].stats()
    assert stats["seen"] == len(events) and stats["retained"] == len(open_events)
    assert stats["open_positions"] == len({e[2] for e in open_events})
    assert stats["trades"] == (len(closed) if policy == "trade_complete" else 0)


@pytest.mark.parametrize("impl", ["rust", "rust-extend", "python"])
def test_trade_complete_workload(benchmark: Any, impl: str) -> None:
    """A 36,000-event trace replayed event by event (``rust-extend``: as one batch)."""
    benchmark.group = "ring:trade_complete_workload"
    _workload_bench(benchmark, impl, "trade_complete")


@pytest.mark.parametrize("impl", ["rust", "rust-extend", "python"])
def test_minimal_workload(benchmark: Any, impl: str) -> None:
    """The same trace under the minimal policy."""
    benchmark.group = "ring:minimal_workload"
    _workload_bench(benchmark, impl, "minimal")


# ---------------------------------------------------------------- export


@pytest.mark.parametrize("impl", ["rust", "rust-capsule", "rust-trade_complete", "python"])
def test_export(benchmark: Any, impl: str) -> None:
    """Retained events to a pyarrow.RecordBatch: ``to_arrow()``; ``rust-capsule`` through
    ``pyarrow.record_batch(ring)``; ``rust-trade_complete`` from a log with closed rows."""
    benchmark.group = "ring:export"
    benchmark.extra_info.update(items=EXPORT_ROWS, unit="rows")
    if impl == "rust-trade_complete":
        ring = ring_class(impl)("trade_complete")
        n = EXPORT_ROWS
        # open positions 0..n/2 (two events each) between closed one-event positions
        keys = np.arange(2 * n) // 2
        ts = np.arange(2 * n)
        kind = np.full(2 * n, FILL, dtype=np.uint16)
        # every other pair: position key closed by a second event
        closing = (keys % 2 == 1) & (ts % 2 == 1)
        kind[closing] = CLOSE
        ring.extend({"ts": ts, "kind": kind, "key": keys})
        # even keys keep both their events: n retained, n dead
        assert len(ring) == n
        batch = benchmark.pedantic(ring.to_arrow, rounds=10, iterations=1)
        assert batch.num_rows == n and batch.column("key").to_pylist() == list(keys[keys % 2 == 0])
        return
    ring = ring_class(impl)("keep_all", max_events=EXPORT_ROWS)
    ring.extend(columns(EXPORT_ROWS))
    export = (lambda: pa.record_batch(ring)) if impl == "rust-capsule" else ring.to_arrow
    batch = benchmark.pedantic(export, rounds=rounds(impl), iterations=1)
    assert batch.num_rows == EXPORT_ROWS
    expected = columns(EXPORT_ROWS)
    for name in ("ts", "key", "value"):
        np.testing.assert_array_equal(batch.column(name).to_numpy(), expected[name])
