"""The position book of EventRing: lots from FILL events, a trade per closing fill,
retention bounded by open positions (both backends; expected values worked out by hand)."""

from __future__ import annotations

import math
from types import ModuleType
from typing import Any

import numpy as np
import pytest

from phasekit.errors import InvalidArgument
from phasekit.events import EventType

FILL = int(EventType.FILL)
ORDER = int(EventType.ORDER)
OPEN = int(EventType.POSITION_OPEN)
CLOSE = int(EventType.POSITION_CLOSE)
POLICIES = ("sliding_window", "trade_complete", "minimal", "keep_all")


def ts_of(ring: Any) -> list[int]:
    return ring.to_arrow().column("ts").to_pylist()


def trade_rows(ring: Any) -> list[tuple[Any, ...]]:
    cols = ("key", "symbol", "open_ts", "close_ts", "entry_price", "exit_price", "quantity")
    return [tuple(r[c] for c in (*cols, "pnl", "n_events")) for r in ring.trades().to_pylist()]


def test_book_constants(backend: ModuleType) -> None:
    assert backend.POSITION_FIELDS == ("symbol", "quantity", "avg_price", "open_ts", "n_events")
    assert backend.REALIZED_FIELDS == (
        "trades",
        "winning",
        "losing",
        "pnl",
        "gross_profit",
        "gross_loss",
    )


def test_long_open_add_partial_and_full_close(backend: ModuleType) -> None:
    ring = backend.EventRing("trade_complete")
    ring.append(1, ORDER, 20, 1)  # an order of key 20: tied to the lot by its fill
    ring.append(2, FILL, 20, 1, 10.0, 100.0)  # buy 100 at 10
    ring.append(3, FILL, 21, 1, 12.0, 100.0)  # buy 100 at 12: 200 at 11
    assert ring.positions() == [
        {"symbol": 1, "quantity": 200.0, "avg_price": 11.0, "open_ts": 2, "n_events": 2}
    ]
    ring.append(4, FILL, 22, 1, 15.0, -50.0)  # sell 50 at 15: (15 - 11) * 50 = 200
    assert ring.positions()[0]["quantity"] == 150.0
    assert ring.positions()[0]["avg_price"] == 11.0
    assert ts_of(ring) == [1, 2, 3, 4]
    ring.append(5, FILL, 23, 1, 9.0, -150.0)  # sell 150 at 9: (9 - 11) * 150 = -300
    assert ring.positions() == []
    assert len(ring) == 0  # flat: the fills and key 20's order are dropped
    assert trade_rows(ring) == [
        (22, 1, 2, 4, 11.0, 15.0, 50.0, 200.0, 3),
        (23, 1, 2, 5, 11.0, 9.0, 150.0, -300.0, 4),
    ]
    assert ring.realized() == {
        "trades": 2,
        "winning": 1,
        "losing": 1,
        "pnl": -100.0,
        "gross_profit": 200.0,
        "gross_loss": 300.0,
    }
    assert ring.stats()["open_positions"] == 0


def test_short_round_trip_and_reversal(backend: ModuleType) -> None:
    ring = backend.EventRing("trade_complete")
    ring.append(1, FILL, -1, 5, 50.0, -10.0)  # sell short 10 at 50
    ring.append(2, FILL, -1, 5, 46.0, -30.0)  # 40 short at (10*50 + 30*46)/40 = 47
    assert ring.positions()[0]["avg_price"] == 47.0
    ring.append(3, FILL, -1, 5, 45.0, 60.0)  # covers 40 at 45: (47 - 45) * 40 = 80; 20 long
    assert ring.positions() == [
        {"symbol": 5, "quantity": 20.0, "avg_price": 45.0, "open_ts": 3, "n_events": 1}
    ]
    assert ts_of(ring) == [3]  # only the reversing fill, first of the new lot
    ring.append(4, FILL, -1, 5, 44.0, -20.0)  # (44 - 45) * 20 = -20
    assert trade_rows(ring) == [
        (-1, 5, 1, 3, 47.0, 45.0, -40.0, 80.0, 3),
        (-1, 5, 3, 4, 45.0, 44.0, 20.0, -20.0, 2),
    ]
    assert len(ring) == 0


def test_fill_value_is_cash_assigned_to_trades(backend: ModuleType) -> None:
    """Commissions (negative values): the opening fills' share goes with the quantity
    closed, a closing fill's share with the quantity it closes."""
    ring = backend.EventRing("minimal", keep_trades=True)
    ring.append(1, FILL, 0, 0, 10.0, 100.0, -4.0)
    ring.append(2, FILL, 0, 0, 11.0, -25.0, -1.0)  # 25 x 1 - 4/4 - 1 = 23
    ring.append(3, FILL, 0, 0, 12.0, -125.0, -5.0)  # closes 75: 75 x 2 - 3 - 5 x 75/125 = 144
    pnl = [r[7] for r in trade_rows(ring)]
    assert pnl == [23.0, 144.0]
    assert ring.positions()[0]["quantity"] == -50.0
    ring.append(4, FILL, 0, 0, 12.0, 50.0, 0.0)  # flat; the rest of the fill's cost: -2
    assert [r[7] for r in trade_rows(ring)][-1] == -2.0


def test_near_equal_size_is_a_full_close(backend: ModuleType) -> None:
    ring = backend.EventRing("trade_complete")
    ring.append(1, FILL, 0, 0, 1.0, 0.1)
    ring.append(2, FILL, 0, 0, 1.0, 0.2)
    ring.append(3, FILL, 0, 0, 2.0, -0.3)  # 0.1 + 0.2 != 0.3 in floats; still flat
    assert ring.positions() == []
    assert len(ring) == 0
    assert backend.FLAT_TOLERANCE == 1e-9


def test_zero_and_non_finite_fills_do_not_move_the_book(backend: ModuleType) -> None:
    ring = backend.EventRing("trade_complete")
    ring.append(1, FILL, 3, 0, 10.0, 0.0)  # a keyed event of key 3
    ring.append(2, FILL, 4, 0, 10.0, math.nan)
    ring.append(3, FILL, -1, 0, 10.0, math.inf)  # no key: not retained
    assert ring.positions() == []
    assert ts_of(ring) == [1, 2]
    assert ring.stats()["open_positions"] == 2


@pytest.mark.parametrize("policy", POLICIES)
def test_position_close_counts_only_symbols_without_fills(backend: ModuleType, policy: str) -> None:
    ring = backend.EventRing(policy, keep_trades=True)
    ring.append(1, FILL, 7, 3, 10.0, 1.0)
    ring.append(1, OPEN, 7, 3, 10.0, 1.0)
    ring.append(2, FILL, 7, 3, 11.0, -1.0)
    ring.append(2, CLOSE, 7, 3, 11.0, -1.0, 1.0)  # the fill closed it already
    ring.append(3, OPEN, 8, 4, 5.0, 2.0)
    ring.append(4, CLOSE, 8, 4, 4.0, 2.0, -2.0)  # symbol 4 has no fills: a trade
    assert [r[7] for r in trade_rows(ring)] == [1.0, -2.0]
    assert ring.realized()["trades"] == 2
    if policy in ("trade_complete", "minimal"):
        assert len(ring) == 0


def test_keep_trades_overrides_the_policy_default(backend: ModuleType) -> None:
    for policy, keep, expected in [
        ("trade_complete", None, 1),
        ("trade_complete", False, 0),
        ("sliding_window", None, 0),
        ("sliding_window", True, 1),
        ("minimal", True, 1),
    ]:
        ring = backend.EventRing(policy, keep_trades=keep)
        assert ring.keep_trades == (expected == 1)
        ring.append(1, FILL, 0, 0, 1.0, 1.0)
        ring.append(2, FILL, 0, 0, 2.0, -1.0)
        assert ring.trades().num_rows == expected, (policy, keep)
        assert ring.realized()["pnl"] == 1.0  # counted under every policy
    with pytest.raises(InvalidArgument, match="keep_trades must be True, False or None"):
        backend.EventRing("minimal", keep_trades=1)


@pytest.mark.parametrize("policy", ["trade_complete", "minimal"])
def test_five_thousand_round_trips_stay_bounded(backend: ModuleType, policy: str) -> None:
    """5,000 closed round trips (long and short, 3 symbols, an order, a POSITION_OPEN,
    two fills and a POSITION_CLOSE each) leave only the open positions' events."""
    ring = backend.EventRing(policy)
    t = 0
    for k in range(5000):
        symbol, side = k % 3, (1.0 if k % 2 == 0 else -1.0)
        ring.append(t, ORDER, k, symbol)
        ring.append(t + 1, FILL, k, symbol, 100.0, side * 5.0)
        ring.append(t + 1, OPEN, k, symbol, 100.0, side * 5.0)
        ring.append(t + 2, FILL, k, symbol, 101.0, -side * 5.0)
        ring.append(t + 2, CLOSE, k, symbol, 101.0, -side * 5.0, side * 5.0)
        t += 3
    ring.append(t, ORDER, 10**6, 1)
    ring.append(t + 1, FILL, 10**6, 1, 1.0, 2.0)  # one open position: 2 events
    stats = ring.stats()
    assert (stats["seen"], stats["retained"]) == (25002, 2)
    assert ts_of(ring) == [t, t + 1]
    realized = ring.realized()
    assert (realized["trades"], realized["winning"], realized["losing"]) == (5000, 2500, 2500)
    assert realized["pnl"] == 0.0  # +5 per long, -5 per short
    assert stats["trades"] == (5000 if policy == "trade_complete" else 0)


@pytest.mark.parametrize("policy", POLICIES)
def test_extend_applies_the_book_like_append(backend: ModuleType, policy: str) -> None:
    rng = np.random.default_rng(11)
    n = 400
    cols = {
        "ts": np.arange(n, dtype=np.int64),
        "kind": rng.choice([FILL, FILL, ORDER, OPEN, CLOSE], size=n).astype(np.uint16),
        "key": rng.integers(-1, 6, size=n),
        "symbol": rng.integers(0, 3, size=n).astype(np.int32),
        "price": rng.uniform(90, 110, size=n).round(2),
        "quantity": rng.choice([-3.0, -1.0, 1.0, 2.0, 4.0], size=n),
        "value": rng.uniform(-1, 0, size=n),
    }
    a = backend.EventRing(policy, capacity=50, max_events=80, keep_trades=True)
    b = backend.EventRing(policy, capacity=50, max_events=80, keep_trades=True)
    a.extend(cols)
    for row in zip(*(cols[f].tolist() for f in backend.EVENT_FIELDS)):
        b.append(*row)
    assert a.positions() == b.positions()
    assert a.realized() == b.realized()
    assert repr(a.trades().to_pylist()) == repr(b.trades().to_pylist())
    assert a.stats() == b.stats()
    assert a.realized()["trades"] > 50


def test_clear_resets_the_book(backend: ModuleType) -> None:
    ring = backend.EventRing("sliding_window")
    ring.append(1, FILL, 0, 0, 1.0, 1.0)
    ring.append(2, FILL, 0, 0, 2.0, -2.0)
    ring.clear()
    assert ring.positions() == []
    assert ring.realized()["trades"] == 0
    ring.append(3, FILL, 0, 0, 5.0, 1.0)
    assert ring.positions()[0]["avg_price"] == 5.0


def test_trades_from_a_start_row(backend: ModuleType) -> None:
    ring = backend.EventRing("trade_complete")
    for i in range(3):
        ring.append(2 * i, FILL, i, 0, 10.0, 1.0)
        ring.append(2 * i + 1, FILL, i, 0, 10.0 + i, -1.0)
    assert ring.trades(1).column("pnl").to_pylist() == [1.0, 2.0]
    assert ring.trades(3).num_rows == 0
    assert ring.trades(99).num_rows == 0
    with pytest.raises(InvalidArgument, match="start must be >= 0"):
        ring.trades(-1)


@pytest.mark.parametrize("traced", [("FILL", "POSITION_CLOSE"), ("PORTFOLIO_UPDATE",)])
def test_container_tracer_takes_trades_from_the_book(backend_name: str, traced: Any) -> None:
    """Whether or not FILL is traced, the tracer's metrics count the book's trades
    (a second, minimal ring holds the book when the traced ring does not)."""
    from phasekit.tracing import ContainerTracer, TracerSettings

    tracer = ContainerTracer(TracerSettings(event_tracing=traced))
    # long 2 at 10 then 20: a +20 trade; short 1 at 30, covered at 35: a -5 trade
    tracer.trace(
        {
            "ts": np.arange(4, dtype=np.int64),
            "kind": np.full(4, FILL, dtype=np.uint16),
            "key": np.arange(4),
            "symbol": np.zeros(4, dtype=np.int32),
            "price": np.array([10.0, 20.0, 30.0, 35.0]),
            "quantity": np.array([2.0, -2.0, -1.0, 1.0]),
            "value": np.zeros(4),
        }
    )
    metrics = tracer.metrics.result()
    assert (metrics["trade_count"], metrics["win_rate"], metrics["profit_factor"]) == (
        2,
        0.5,
        4.0,
    )
    assert (tracer.book is tracer.ring) == ("FILL" in traced)
    assert len(tracer.ring) == 0


@pytest.mark.parametrize("policy", ["sliding_window", "trade_complete"])
def test_extend_with_default_columns_reaches_the_book(backend: ModuleType, policy: str) -> None:
    """Columns left out (symbol, value) take their defaults in the book too."""
    ring = backend.EventRing(policy, capacity=2, keep_trades=True)
    ring.extend(
        {
            "ts": np.arange(3, dtype=np.int64),
            "kind": np.array([FILL, ORDER, FILL], dtype=np.uint16),
            "price": np.array([10.0, 0.0, 13.0]),
            "quantity": np.array([3.0, 0.0, -3.0]),
        }
    )
    assert trade_rows(ring) == [(-1, 0, 0, 2, 10.0, 13.0, 3.0, 9.0, 2)]
