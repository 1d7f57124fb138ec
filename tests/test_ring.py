"""EventRing: every policy against hand-computed results, Arrow in and out, bad input,
and a stateful comparison of the two backends."""

from __future__ import annotations

import math
from types import ModuleType
from typing import Any

import hypothesis.strategies as st
import numpy as np
import polars as pl
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from phasekit.backend import backend_module
from phasekit.errors import InvalidArgument
from phasekit.events import EventType

OPEN = int(EventType.POSITION_OPEN)
CLOSE = int(EventType.POSITION_CLOSE)
BAR = int(EventType.BAR)
FILL = int(EventType.FILL)
ORDER = int(EventType.ORDER)
NAN = float("nan")

EVENT_SCHEMA = pa.schema(
    [
        pa.field("ts", pa.int64(), nullable=False),
        pa.field("kind", pa.uint16(), nullable=False),
        pa.field("key", pa.int64(), nullable=False),
        pa.field("symbol", pa.int32(), nullable=False),
        pa.field("price", pa.float64(), nullable=False),
        pa.field("quantity", pa.float64(), nullable=False),
        pa.field("value", pa.float64(), nullable=False),
    ]
)


def rows(batch: pa.RecordBatch) -> list[tuple[Any, ...]]:
    """Rows of a batch as tuples, NaN replaced by a marker so rows compare equal."""
    return [
        tuple("NaN" if isinstance(v, float) and math.isnan(v) else v for v in row.values())
        for row in batch.to_pylist()
    ]


def ts_of(ring: Any) -> list[int]:
    return ring.to_arrow().column("ts").to_pylist()


def stats(seen: int, retained: int, open_positions: int = 0, trades: int = 0) -> dict[str, int]:
    return {
        "seen": seen,
        "retained": retained,
        "evicted": seen - retained,
        "retained_bytes": 46 * retained + 68 * trades,
        "open_positions": open_positions,
        "trades": trades,
    }


# ---------------------------------------------------------------- constants and construction


def test_constants(backend: ModuleType) -> None:
    assert backend.EVENT_FIELDS == ("ts", "kind", "key", "symbol", "price", "quantity", "value")
    assert backend.EVENT_BYTES == 46
    assert backend.TRADE_FIELDS == (
        "key",
        "symbol",
        "open_ts",
        "close_ts",
        "entry_price",
        "exit_price",
        "quantity",
        "pnl",
        "n_events",
    )
    assert backend.TRADE_BYTES == 68
    assert backend.POLICIES == ("sliding_window", "trade_complete", "minimal", "keep_all")


def test_defaults_and_properties(backend: ModuleType) -> None:
    ring = backend.EventRing()
    assert (ring.policy, ring.capacity, ring.max_events) == ("sliding_window", 1000, 1_000_000)
    assert len(ring) == 0
    assert ring.stats() == stats(0, 0)
    ring = backend.EventRing("keep_all", capacity=3, max_events=7)
    assert (ring.policy, ring.capacity, ring.max_events) == ("keep_all", 3, 7)
    assert repr(ring) == "EventRing(policy='keep_all', capacity=3, max_events=7, len=0)"


# ---------------------------------------------------------------- policies


def test_sliding_window_keeps_the_last_capacity_events(backend: ModuleType) -> None:
    ring = backend.EventRing("sliding_window", capacity=3)
    for t in range(5):
        ring.append(t, BAR, -1, 7, 1.5 * t, 2.0, -float(t))
    assert len(ring) == 3
    assert rows(ring.to_arrow()) == [
        (2, BAR, -1, 7, 3.0, 2.0, -2.0),
        (3, BAR, -1, 7, 4.5, 2.0, -3.0),
        (4, BAR, -1, 7, 6.0, 2.0, -4.0),
    ]
    assert ring.stats() == stats(5, 3)
    assert ring.trades().num_rows == 0


def test_append_defaults_and_keywords(backend: ModuleType) -> None:
    ring = backend.EventRing("keep_all")
    ring.append(1, 2)
    ring.append(ts=2, kind=3, value=9.5, symbol=4)
    ring.append(np.int64(3), np.uint16(4), True, np.int32(5), np.float32(0.5), 2, 3)
    assert rows(ring.to_arrow()) == [
        (1, 2, -1, 0, 0.0, 0.0, 0.0),
        (2, 3, -1, 4, 0.0, 0.0, 9.5),
        (3, 4, 1, 5, 0.5, 2.0, 3.0),
    ]


def test_keep_all_evicts_the_oldest_past_max_events(backend: ModuleType) -> None:
    ring = backend.EventRing("keep_all", capacity=1, max_events=4)
    for t in range(6):
        ring.append(t, FILL, t % 2)
    assert ts_of(ring) == [2, 3, 4, 5]
    assert ring.stats() == stats(6, 4)


def test_trade_complete_keeps_open_positions_and_summaries(backend: ModuleType) -> None:
    ring = backend.EventRing("trade_complete")
    ring.append(1, BAR, -1)  # no position: evicted at once
    ring.append(2, int(EventType.SIGNAL), 10, 3)  # first event of position 10
    ring.append(3, OPEN, 10, 3, 100.0, 5.0)
    ring.append(4, ORDER, 11, 4)
    ring.append(5, ORDER, 10, 3, 100.5, 5.0)
    assert ts_of(ring) == [2, 3, 4, 5]
    assert ring.stats() == stats(5, 4, open_positions=2)
    ring.append(6, CLOSE, 10, 9, 110.0, 4.0, 50.0)
    assert ts_of(ring) == [4]
    assert ring.stats() == stats(6, 1, open_positions=1, trades=1)
    assert ring.trades().to_pylist() == [
        {
            "key": 10,
            "symbol": 9,
            "open_ts": 2,
            "close_ts": 6,
            "entry_price": 100.0,
            "exit_price": 110.0,
            "quantity": 5.0,
            "pnl": 50.0,
            "n_events": 4,
        }
    ]


def test_trade_complete_edge_cases(backend: ModuleType) -> None:
    ring = backend.EventRing("trade_complete")
    ring.append(1, ORDER, 3, 0, 1.0, 7.0)
    ring.append(2, CLOSE, 3, 1, 2.0, 8.0, -1.0)  # no POSITION_OPEN: NaN entry, close quantity
    ring.append(3, CLOSE, 4, 2, 3.0, 9.0, 1.0)  # a lone close is a one-event position
    ring.append(4, CLOSE, -1, 2, 3.0, 9.0, 1.0)  # negative key: evicted, no summary
    ring.append(5, OPEN, 3, 0, 10.0, 1.0)  # key 3 again: a new position
    ring.append(6, OPEN, 3, 0, 20.0, 2.0)  # the first POSITION_OPEN sets entry and quantity
    ring.append(7, CLOSE, 3, 0, 30.0, 3.0, 20.0)
    assert rows(ring.trades()) == [
        (3, 1, 1, 2, "NaN", 2.0, 8.0, -1.0, 2),
        (4, 2, 3, 3, "NaN", 3.0, 9.0, 1.0, 1),
        (3, 0, 5, 7, 10.0, 30.0, 1.0, 20.0, 3),
    ]
    assert len(ring) == 0
    assert ring.stats() == stats(7, 0, trades=3)
    assert ring.trades().schema.names == list(backend.TRADE_FIELDS)


def test_minimal_keeps_open_positions_only(backend: ModuleType) -> None:
    ring = backend.EventRing("minimal")
    ring.append(1, OPEN, 1)
    ring.append(2, OPEN, 2)
    ring.append(3, BAR, -5)
    ring.append(4, FILL, 1)
    ring.append(5, CLOSE, 1)
    assert ts_of(ring) == [2]
    assert ring.stats() == stats(5, 1, open_positions=1)
    assert ring.trades().num_rows == 0


@pytest.mark.parametrize("policy", ["sliding_window", "trade_complete", "minimal", "keep_all"])
def test_clear_resets_events_summaries_and_counters(backend: ModuleType, policy: str) -> None:
    ring = backend.EventRing(policy, capacity=2, max_events=2)
    ring.append(1, OPEN, 1)
    ring.append(2, CLOSE, 1)
    ring.append(3, BAR, 2)
    ring.clear()
    assert len(ring) == 0
    assert ring.stats() == stats(0, 0)
    assert ring.trades().num_rows == 0
    ring.append(4, BAR, 2)
    assert ts_of(ring) == [4]


def test_many_positions_interleaved(backend: ModuleType) -> None:
    """A long-lived position among thousands of short ones keeps arrival order."""
    ring = backend.EventRing("trade_complete")
    expected = []
    t = 0
    for k in range(2000):
        ring.append(t, BAR, 1_000_000)
        expected.append(t)
        ring.append(t + 1, OPEN, k, 0, float(k), 1.0)
        ring.append(t + 2, FILL, k)
        ring.append(t + 3, CLOSE, k, 0, float(k + 1), 1.0, 1.0)
        t += 4
    assert ts_of(ring) == expected
    assert ring.stats() == stats(8000, 2000, open_positions=1, trades=2000)
    trades = ring.trades()
    assert trades.column("n_events").to_pylist() == [3] * 2000
    assert trades.column("entry_price").to_pylist() == [float(k) for k in range(2000)]


# ---------------------------------------------------------------- extend


def sample_columns(n: int = 12) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(5)
    return {
        "ts": np.arange(n, dtype=np.int64) * 10,
        "kind": rng.choice([BAR, OPEN, FILL, CLOSE], size=n).astype(np.uint16),
        "key": rng.integers(-1, 3, size=n),
        "symbol": rng.integers(0, 5, size=n).astype(np.int32),
        "price": rng.random(n),
        "quantity": rng.random(n),
        "value": rng.random(n),
    }


def appended(backend: ModuleType, policy: str, cols: dict[str, np.ndarray]) -> Any:
    ring = backend.EventRing(policy, capacity=4, max_events=6)
    for row in zip(*(cols[f].tolist() for f in backend.EVENT_FIELDS)):
        ring.append(*row)
    return ring


def same(a: Any, b: Any) -> None:
    assert rows(a.to_arrow()) == rows(b.to_arrow())
    assert rows(a.trades()) == rows(b.trades())
    assert a.stats() == b.stats()


def test_chunked_table_source_has_chunks() -> None:
    assert pa.Table.from_batches(pa.table(sample_columns()).to_batches(5)).column(0).num_chunks == 3


SOURCES = {
    "numpy dict": lambda cols: cols,
    "record batch": lambda cols: pa.record_batch(cols),
    "chunked table": lambda cols: pa.Table.from_batches(pa.table(cols).to_batches(5)),
    "polars": lambda cols: pl.DataFrame(cols),
}


@pytest.mark.parametrize("policy", ["sliding_window", "trade_complete", "minimal", "keep_all"])
@pytest.mark.parametrize("source", list(SOURCES))
def test_extend_matches_appends(backend: ModuleType, policy: str, source: str) -> None:
    cols = sample_columns()
    ring = backend.EventRing(policy, capacity=4, max_events=6)
    ring.append(-1, OPEN, 1)
    assert ring.extend(SOURCES[source](cols)) == 12
    expected = backend.EventRing(policy, capacity=4, max_events=6)
    expected.append(-1, OPEN, 1)
    for row in zip(*(cols[f].tolist() for f in backend.EVENT_FIELDS)):
        expected.append(*row)
    same(ring, expected)


def test_extend_casts_widths_and_fills_defaults(backend: ModuleType) -> None:
    ring = backend.EventRing("keep_all")
    n = ring.extend(
        {
            "ts": np.array([1, 2], dtype=np.uint32),
            "kind": np.array([5, 6], dtype=np.int8),
            "price": np.array([1.5, 2.5], dtype=np.float32),
            "quantity": np.array([3, 4], dtype=np.int16),
            "other": ["ignored", "too"],
        }
    )
    assert n == 2
    assert rows(ring.to_arrow()) == [(1, 5, -1, 0, 1.5, 3.0, 0.0), (2, 6, -1, 0, 2.5, 4.0, 0.0)]
    assert ring.extend({"ts": [3], "kind": [1], "key": [7], "value": [0.25]}) == 1
    assert rows(ring.to_arrow())[-1] == (3, 1, 7, 0, 0.0, 0.0, 0.25)


def test_extend_of_a_large_window_keeps_the_tail(backend: ModuleType) -> None:
    ring = backend.EventRing("sliding_window", capacity=3)
    ring.append(0, BAR)
    assert ring.extend({"ts": np.arange(1, 101), "kind": np.full(100, BAR)}) == 100
    assert ts_of(ring) == [98, 99, 100]
    assert ring.stats() == stats(101, 3)


def test_extend_from_itself_and_empty(backend: ModuleType) -> None:
    ring = backend.EventRing("keep_all")
    ring.append(1, BAR)
    ring.append(2, BAR)
    assert ring.extend(ring) == 2
    assert ts_of(ring) == [1, 2, 1, 2]
    assert ring.extend({"ts": np.array([], dtype=np.int64), "kind": np.array([], np.int8)}) == 0
    empty = pa.table({"ts": pa.array([], pa.int64()), "kind": pa.array([], pa.int64())})
    assert ring.extend(empty) == 0
    assert ring.extend(pl.DataFrame(empty)) == 0
    assert len(ring) == 4


# ---------------------------------------------------------------- export


@pytest.mark.parametrize("policy", ["sliding_window", "trade_complete", "keep_all"])
def test_export_is_read_by_pyarrow_and_polars(backend: ModuleType, policy: str) -> None:
    ring = backend.EventRing(policy, capacity=5)
    ring.extend(sample_columns(20))
    batch = ring.to_arrow()
    assert isinstance(batch, pa.RecordBatch)
    assert batch.schema == EVENT_SCHEMA
    assert batch.num_rows == len(ring)
    assert pa.record_batch(ring).equals(batch)
    assert pa.table(ring).to_batches()[0].equals(batch) if len(ring) else True
    assert pa.schema(ring) == EVENT_SCHEMA
    frame = pl.DataFrame(ring)
    assert frame.columns == list(backend.EVENT_FIELDS)
    assert frame.to_dict(as_series=False) == batch.to_pydict()
    # polars reads a PyCapsule producer as one struct column
    unnested = pl.from_arrow(ring).struct.unnest()
    assert unnested.to_dict(as_series=False) == batch.to_pydict()
    assert pl.from_arrow(batch).to_dict(as_series=False) == batch.to_pydict()


def test_export_of_an_empty_ring(backend: ModuleType) -> None:
    ring = backend.EventRing("trade_complete")
    assert ring.to_arrow().schema == EVENT_SCHEMA
    assert ring.to_arrow().num_rows == 0
    assert pa.record_batch(ring).num_rows == 0
    assert pl.DataFrame(ring).height == 0
    assert ring.trades().num_rows == 0
    assert ring.trades().schema.field("n_events").type == pa.int64()


def test_export_is_a_snapshot(backend: ModuleType) -> None:
    ring = backend.EventRing("sliding_window", capacity=2)
    ring.append(1, BAR)
    batch = pa.record_batch(ring)
    ring.append(2, BAR)
    ring.append(3, BAR)
    assert batch.column("ts").to_pylist() == [1]
    assert ts_of(ring) == [2, 3]


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"policy": "fifo"}, "policy must be one of sliding_window"),
        ({"policy": 3}, "policy must be one of"),
        ({"capacity": 0}, "capacity must be >= 1, got 0"),
        ({"capacity": -5}, "capacity must be >= 1"),
        ({"capacity": 2.5}, "capacity must be an int, got float"),
        ({"capacity": 2**70}, "capacity must be in 1.."),
        ({"max_events": 0}, "max_events must be >= 1, got 0"),
        ({"max_events": "many"}, "max_events must be an int, got str"),
    ],
)
def test_bad_constructor_arguments(backend: ModuleType, kwargs: dict, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        backend.EventRing(**kwargs)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("x", 1), "ts must be an int, got str"),
        ((1.5, 1), "ts must be an int, got float"),
        ((2**63, 1), "ts must be in int64 range"),
        ((1, -1), "kind must be in 0..65535, got -1"),
        ((1, 65536), "kind must be in 0..65535, got 65536"),
        ((1, None), "kind must be an int, got NoneType"),
        ((1, 1, -(2**63) - 1), "key must be in int64 range"),
        ((1, 1, 0, 2**31), "symbol must be in int32 range"),
        ((1, 1, 0, 0, "1.5"), "price must be a float, got str"),
        ((1, 1, 0, 0, 0.0, None), "quantity must be a float, got NoneType"),
        ((1, 1, 0, 0, 0.0, 0.0, 10**400), "value must be in float64 range"),
    ],
)
def test_bad_append_arguments(backend: ModuleType, args: tuple, message: str) -> None:
    ring = backend.EventRing("keep_all")
    with pytest.raises(InvalidArgument, match=message):
        ring.append(*args)
    assert ring.stats() == stats(0, 0)


def test_append_call_errors_are_type_errors(backend: ModuleType) -> None:
    ring = backend.EventRing()
    with pytest.raises(TypeError):
        ring.append(1)
    with pytest.raises(TypeError):
        ring.append(1, 2, 3, 4, 5.0, 6.0, 7.0, 8)
    with pytest.raises(TypeError):
        ring.append(1, 2, colour=3)


BAD_BATCHES = [
    ([1, 2, 3], "batch must be an Arrow record batch or table"),
    ("ts", "batch must be an Arrow record batch or table"),
    ({"ts": [1, 2]}, "batch has no 'kind' column"),
    (pa.record_batch({"kind": [1]}), "batch has no 'ts' column"),
    ({"ts": [1, 2], "kind": [1]}, "columns have unequal lengths: ts has 2 rows, kind has 1"),
    ({"ts": [1], "kind": [1], "price": [1.0, 2.0]}, "unequal lengths"),
    ({"ts": [1.5], "kind": [1]}, "column 'ts' has type"),
    ({"ts": [1], "kind": ["a"]}, "column 'kind' has type"),
    ({"ts": [1], "kind": [1], "price": [True]}, "column 'price' has type"),
    ({"ts": [1, None], "kind": [1, 1]}, "column 'ts' has 1 null value"),
    (
        {"ts": [1, 2, 3], "kind": [1, 70000, 1]},
        "column 'kind' row 1: value 70000 is out of range 0..65535",
    ),
    ({"ts": [1], "kind": [1], "symbol": [2**40]}, "column 'symbol' row 0: .* int32 range"),
    (
        {"ts": np.array([2**64 - 1], dtype=np.uint64), "kind": [1]},
        "column 'ts' row 0: .* int64 range",
    ),
    ({"ts": [1], "kind": [1], "key": [[1]]}, "column 'key' has type"),
    ({"ts": object(), "kind": [1]}, "cannot convert the mapping"),
    ({"ts": [], "kind": []}, "column 'ts' has type"),
    (
        pa.table({"ts": pa.array([], pa.string()), "kind": pa.array([], pa.int8())}),
        "column 'ts' has type",
    ),
    (
        pl.DataFrame({"ts": [], "kind": []}, schema={"ts": pl.Int64, "kind": pl.Float64}),
        "column 'kind' has type",
    ),
]


@pytest.mark.parametrize(("batch", "message"), BAD_BATCHES)
def test_bad_extend_input(backend: ModuleType, batch: Any, message: str) -> None:
    ring = backend.EventRing("keep_all")
    ring.append(0, BAR)
    with pytest.raises(InvalidArgument, match=message):
        ring.extend(batch)
    assert ts_of(ring) == [0]
    assert ring.stats() == stats(1, 1)


def test_a_bad_chunk_applies_nothing(backend: ModuleType) -> None:
    good = pa.record_batch({"ts": [1, 2], "kind": [1, 1]})
    bad = pa.record_batch({"ts": [3, 4], "kind": [1, 99999]})
    ring = backend.EventRing("keep_all")
    with pytest.raises(InvalidArgument, match="column 'kind' row 3"):
        ring.extend(pa.Table.from_batches([good, bad]))
    assert len(ring) == 0
    assert ring.stats()["seen"] == 0


# ---------------------------------------------------------------- both backends agree


def test_backends_agree_on_a_large_workload(
    both_backends: tuple[ModuleType, ModuleType],
) -> None:
    rng = np.random.default_rng(11)
    n = 30_000
    cols = {
        "ts": np.arange(n, dtype=np.int64),
        "kind": rng.choice([BAR, OPEN, FILL, FILL, CLOSE], size=n).astype(np.uint16),
        "key": rng.integers(-1, 400, size=n),
        "symbol": rng.integers(0, 9, size=n).astype(np.int32),
        "price": rng.random(n),
        "quantity": rng.random(n),
        "value": rng.random(n),
    }
    for policy in ("sliding_window", "trade_complete", "minimal", "keep_all"):
        rust, python = (m.EventRing(policy, capacity=500, max_events=5000) for m in both_backends)
        for ring in (rust, python):
            ring.extend({k: v[: n // 2] for k, v in cols.items()})
            for row in zip(*(cols[f][n // 2 :].tolist() for f in both_backends[0].EVENT_FIELDS)):
                ring.append(*row)
        same(rust, python)


events = st.tuples(
    st.integers(-(2**63), 2**63 - 1),
    st.sampled_from([0, BAR, 2, FILL, FILL, FILL, OPEN, OPEN, CLOSE, CLOSE, 7, 65535]),
    st.integers(-2, 4),
    # few symbols, so fills meet in the book; any int32 now and then
    st.one_of(st.integers(0, 2), st.integers(-(2**31), 2**31 - 1)),
    st.floats(allow_nan=True, allow_infinity=True),
    # sizes that add, close, reverse; any float now and then
    st.one_of(
        st.sampled_from([1.0, -1.0, 2.0, -2.0, 3.0, -0.5, 0.0]),
        st.floats(allow_nan=True, allow_infinity=True),
    ),
    st.floats(allow_nan=True, allow_infinity=True),
)


def book_of(ring: Any) -> str:
    """The book's positions and counters, printed (NaN compares equal as text)."""
    return repr((ring.positions(), ring.realized()))


def as_columns(batch: list[tuple[Any, ...]], form: str) -> Any:
    fields = ("ts", "kind", "key", "symbol", "price", "quantity", "value")
    types = (np.int64, np.uint16, np.int64, np.int32, np.float64, np.float64, np.float64)
    cols = {
        f: np.array([e[i] for e in batch], dtype=t) for i, (f, t) in enumerate(zip(fields, types))
    }
    if form == "numpy":
        return cols
    if form == "arrow":
        return pa.record_batch(cols)
    return pl.DataFrame(cols)


class RingsAgree(RuleBasedStateMachine):
    """The rust and the python ring see the same operations and must look the same."""

    def __init__(self) -> None:
        super().__init__()
        self.rings: list[Any] = []

    @initialize(
        policy=st.sampled_from(["sliding_window", "trade_complete", "minimal", "keep_all"]),
        capacity=st.integers(1, 6),
        max_events=st.integers(1, 8),
        keep_trades=st.sampled_from([None, True, False]),
    )
    def build(self, policy: str, capacity: int, max_events: int, keep_trades: Any) -> None:
        self.rings = [
            backend_module(name).EventRing(policy, capacity, max_events, keep_trades)
            for name in ("rust", "python")
        ]

    @rule(event=events)
    def append(self, event: tuple[Any, ...]) -> None:
        for ring in self.rings:
            ring.append(*event)

    @rule(batch=st.lists(events, max_size=12), form=st.sampled_from(["numpy", "arrow", "polars"]))
    def extend(self, batch: list[tuple[Any, ...]], form: str) -> None:
        data = as_columns(batch, form)
        assert [ring.extend(data) for ring in self.rings] == [len(batch)] * 2

    @rule()
    def clear(self) -> None:
        for ring in self.rings:
            ring.clear()

    @invariant()
    def agree(self) -> None:
        if not self.rings:
            return
        rust, python = self.rings
        assert len(rust) == len(python)
        assert rust.stats() == python.stats()
        assert rust.stats()["retained"] == len(rust)
        assert rows(rust.to_arrow()) == rows(python.to_arrow())
        assert rust.to_arrow().schema == python.to_arrow().schema
        assert rows(rust.trades()) == rows(python.trades())
        assert book_of(rust) == book_of(python)


RingsAgree.TestCase.settings = settings(
    max_examples=60,
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestRingsAgree = RingsAgree.TestCase
