"""Design note 002 (event tracing as the metrics system) through phasekit.compat.tracing,
on both backends.

Event streams are replayed through ``MetricsEventTracer`` and the observer API and the
results are compared with numbers worked out by hand from the source's rules: a
position book per symbol from fills (average entry price; partial closes at the
average; trades on closing fills), metrics from portfolio values (Welford returns,
drawdown as a fraction of the peak, Sharpe 0.0 below 20 returns, annualised by 252).
Where phasekit differs from the source on purpose (docs/migration.md) the test says so.
"""

from __future__ import annotations

import json
import logging
import math
from datetime import datetime, timedelta
from typing import Any, Optional

import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, given, settings

from phasekit.compat.containers import Container, ContainerConfig, Event, EventBus, EventType
from phasekit.compat.tracing import (
    BasicMetricsCalculator,
    MetricsEventTracer,
    MetricsObserver,
    StandardPhaseConfigs,
)
from phasekit.config import resolve
from phasekit.errors import InvalidArgument

pytestmark = pytest.mark.usefixtures("backend_name")

T0 = datetime(2024, 1, 2, 9, 30)


def at(i: int) -> datetime:
    return T0 + timedelta(minutes=i)


def fill(
    i: int, symbol: str, direction: str, quantity: float, price: float, cid: Optional[str] = None
) -> Event:
    payload = {"symbol": symbol, "direction": direction, "quantity": quantity, "price": price}
    return Event(EventType.FILL, {**payload, "timestamp": at(i)}, correlation_id=cid)


def update(i: int, value: float) -> Event:
    return Event(EventType.PORTFOLIO_UPDATE, {"portfolio_value": value, "timestamp": at(i)})


def replay(events: list[Event], **config: Any) -> MetricsEventTracer:
    tracer = MetricsEventTracer(config)
    for event in events:
        tracer.trace_event(event)
    return tracer


# ---------------------------------------------------------------- trades from fills


def test_long_scaling_in_and_partial_close() -> None:
    tracer = replay(
        [
            fill(0, "SPY", "buy", 100, 10.0, "o1"),
            fill(1, "SPY", "long", 100, 12.0, "o2"),  # 200 at an average of 11
            fill(2, "SPY", "sell", 50, 15.0, "o3"),  # (15 - 11) x 50 = 200
            fill(3, "SPY", "sell", 150, 9.0, "o4"),  # (9 - 11) x 150 = -300
        ]
    )
    m = tracer.get_metrics()
    assert (m["total_trades"], m["winning_trades"], m["losing_trades"]) == (2, 1, 1)
    assert (m["total_pnl"], m["gross_profit"], m["gross_loss"]) == (-100.0, 200.0, 300.0)
    assert m["win_rate"] == 0.5
    assert m["profit_factor"] == pytest.approx(200.0 / 300.0)
    assert (m["open_positions"], m["events_retained"], m["active_trades"]) == (0, 0, 0)
    # no portfolio update: the value is the initial capital, the peak not set yet
    assert (m["current_value"], m["peak_value"], m["sharpe_ratio"]) == (100000.0, 0.0, 0.0)
    assert tracer.get_results()["trades"] == [
        {
            "symbol": "SPY",
            "direction": "long",
            "entry_price": 11.0,
            "exit_price": 15.0,
            "quantity": 50.0,
            "entry_time": at(0),
            "exit_time": at(2),
            "pnl": 200.0,
        },
        {
            "symbol": "SPY",
            "direction": "long",
            "entry_price": 11.0,
            "exit_price": 9.0,
            "quantity": 150.0,
            "entry_time": at(0),
            "exit_time": at(3),
            "pnl": -300.0,
        },
    ]


def test_short_round_trip_reversal_and_cover() -> None:
    tracer = replay(
        [
            fill(0, "QQQ", "short", 10, 50.0),
            fill(1, "QQQ", "sell", 30, 46.0),  # 40 short at (500 + 1380) / 40 = 47
            fill(2, "QQQ", "buy", 60, 45.0),  # covers 40: (47 - 45) x 40 = 80; 20 long at 45
            fill(3, "QQQ", "sell", 20, 44.0),  # (44 - 45) x 20 = -20 (the source: entry 47)
            fill(4, "IWM", "short", 10, 20.0),
            fill(5, "IWM", "cover", 10, 18.0),  # (20 - 18) x 10 = 20 (the source adds to it)
        ]
    )
    trades = tracer.get_results()["trades"]
    assert [(t["direction"], t["entry_price"], t["quantity"], t["pnl"]) for t in trades] == [
        ("short", 47.0, 40.0, 80.0),
        ("long", 45.0, 20.0, -20.0),
        ("short", 20.0, 10.0, 20.0),
    ]
    assert trades[1]["entry_time"] == at(2)  # the reversal opened the long
    m = tracer.get_metrics()
    assert (m["total_trades"], m["winning_trades"], m["losing_trades"]) == (3, 2, 1)
    assert (m["total_pnl"], m["gross_profit"], m["gross_loss"]) == (80.0, 100.0, 20.0)
    assert m["profit_factor"] == 5.0


def test_open_positions_and_retained_events_while_a_trade_is_open() -> None:
    tracer = replay(
        [
            Event(EventType.ORDER_REQUEST, {"symbol": "SPY"}, correlation_id="c1"),
            Event(EventType.ORDER, {"symbol": "SPY"}, correlation_id="c1"),
            fill(0, "SPY", "buy", 5, 100.0, "c1"),
            fill(1, "TLT", "sell", 3, 90.0, "c2"),
        ]
    )
    m = tracer.get_metrics()
    # the orders of c1 and both fills are retained; c1's orders are one active trade
    assert (m["events_retained"], m["open_positions"], m["active_trades"]) == (4, 2, 1)
    tracer.trace_event(fill(2, "SPY", "sell", 5, 101.0, "c3"))
    m = tracer.get_metrics()
    assert (m["events_retained"], m["open_positions"], m["active_trades"]) == (1, 1, 0)


def test_position_events_and_fills_count_a_trade_once() -> None:
    both = [
        fill(0, "SPY", "buy", 10, 100.0, "t1"),
        Event(
            EventType.POSITION_OPEN,
            {"symbol": "SPY", "price": 100.0, "quantity": 10},
            correlation_id="t1",
        ),
        fill(1, "SPY", "sell", 10, 103.0, "t1"),
        Event(
            EventType.POSITION_CLOSE,
            {"symbol": "SPY", "price": 103.0, "quantity": 10, "pnl": 30.0},
            correlation_id="t1",
        ),
    ]
    m = replay(both).get_metrics()
    assert (m["total_trades"], m["total_pnl"], m["events_retained"]) == (1, 30.0, 0)
    # a POSITION_CLOSE of a symbol without fills is a trade (the source ignores it)
    alone = replay(
        [
            Event(EventType.POSITION_OPEN, {"symbol": "GLD", "price": 50.0, "quantity": 4}),
            Event(EventType.POSITION_CLOSE, {"symbol": "GLD", "price": 48.0, "pnl": -8.0}),
        ]
    )
    assert alone.get_metrics()["total_pnl"] == -8.0
    assert alone.get_results()["trades"][0]["entry_price"] == 50.0


# ---------------------------------------------------------------- portfolio values


def test_portfolio_updates_below_twenty_periods() -> None:
    tracer = replay([update(0, 101000.0), update(1, 99990.0), update(2, 102000.0)])
    m = tracer.get_metrics()
    assert m["sharpe_ratio"] == 0.0  # 3 returns < min_periods 20
    assert m["total_return"] == pytest.approx(0.02)
    assert m["max_drawdown"] == pytest.approx(1010.0 / 101000.0)  # a fraction >= 0
    assert (m["current_drawdown"], m["peak_value"], m["current_value"]) == (
        0.0,
        102000.0,
        102000.0,
    )
    assert m["profit_factor"] == math.inf  # no losing trade: the source's inf
    summary = tracer.get_results()["summary"]
    assert summary == {
        "initial_capital": 100000.0,
        "final_value": 102000.0,
        "total_return": pytest.approx(0.02),
        "sharpe_ratio": 0.0,
        "max_drawdown": pytest.approx(0.01),
        "total_trades": 0,
        "win_rate": 0.0,
    }


def alternating(n: int) -> list[Event]:
    """n portfolio values whose returns are +2 %, -1 %, +2 %, ..."""
    value, events = 100000.0, []
    for i in range(n):
        value *= 1.02 if i % 2 == 0 else 0.99
        events.append(update(i, value))
    return events


# 25 returns: 13 x 0.02 and 12 x -0.01; mean 0.14 / 25 = 0.0056; squared deviations
# 13 x 0.0144^2 + 12 x 0.0156^2 = 0.00269568 + 0.00292032 = 0.005616; sample variance
# 0.005616 / 24 = 0.000234
SHARPE_25 = 0.0056 / math.sqrt(0.000234) * math.sqrt(252)


def test_portfolio_updates_above_twenty_periods() -> None:
    m = replay(alternating(25)).get_metrics()
    assert m["sharpe_ratio"] == pytest.approx(SHARPE_25, rel=1e-9)
    assert m["sharpe_ratio"] == pytest.approx(5.8114, abs=1e-4)
    assert m["total_return"] == pytest.approx(1.02**13 * 0.99**12 - 1, rel=1e-12)
    assert m["max_drawdown"] == pytest.approx(0.01)
    assert m["current_drawdown"] == 0.0  # ends on a rise
    assert replay(alternating(19)).get_metrics()["sharpe_ratio"] == 0.0


def test_annualization_factor_and_min_periods_change_sharpe() -> None:
    weekly = replay(alternating(25), annualization_factor=52).get_metrics()
    assert weekly["sharpe_ratio"] == pytest.approx(0.0056 / math.sqrt(0.000234) * math.sqrt(52))
    # 5 returns: 3 x 0.02, 2 x -0.01; mean 0.008; deviations 3 x 0.012^2 + 2 x 0.018^2 =
    # 0.000432 + 0.000648 = 0.00108; variance 0.00108 / 4 = 0.00027
    few = replay(alternating(5), min_periods=5).get_metrics()
    assert few["sharpe_ratio"] == pytest.approx(0.008 / math.sqrt(0.00027) * math.sqrt(252))
    assert replay(alternating(5)).get_metrics()["sharpe_ratio"] == 0.0
    alias = replay(alternating(25), periods_per_year=52).get_metrics()
    assert alias["sharpe_ratio"] == weekly["sharpe_ratio"]


# ---------------------------------------------------------------- objectives, custom metrics


def losing_stream() -> list[Event]:
    return [
        *alternating(25),
        fill(30, "SPY", "buy", 10, 100.0),
        fill(31, "SPY", "sell", 10, 104.0),  # +40
        fill(32, "SPY", "buy", 10, 100.0),
        fill(33, "SPY", "sell", 10, 98.0),  # -20
    ]


def test_objective_functions(caplog: pytest.LogCaptureFixture) -> None:
    total_return = 1.02**13 * 0.99**12 - 1

    def objective(config: Any) -> tuple[str, float]:
        m = replay(losing_stream(), objective_function=config).get_metrics()
        return m["objective_function"], m["objective_value"]

    assert objective({"name": "sharpe_ratio"}) == ("sharpe_ratio", pytest.approx(SHARPE_25))
    assert objective({"name": "total_return"})[1] == pytest.approx(total_return)
    assert objective({"name": "profit_factor"})[1] == 2.0  # 40 / 20
    assert objective({"name": "win_rate"})[1] == 0.5
    assert objective({"name": "calmar_ratio"})[1] == pytest.approx(total_return / 0.01)
    assert objective({"name": "sortino_ratio"})[1] == pytest.approx(SHARPE_25 * 1.2)
    sortino = {"name": "sortino_ratio", "params": {"sortino_multiplier": 2.0}}
    assert objective(sortino)[1] == pytest.approx(SHARPE_25 * 2.0)
    default_weights = SHARPE_25 * 0.4 + 0.5 * 0.3 + 2.0 * 0.3
    assert objective({"name": "weighted_combination"})[1] == pytest.approx(default_weights)
    weights = {"name": "weighted_combination", "params": {"weights": {"win_rate": 1.0}}}
    assert objective(weights)[1] == 0.5
    with caplog.at_level(logging.WARNING, logger="phasekit.compat.tracing"):
        assert objective({"name": "omega"}) == ("omega", pytest.approx(SHARPE_25))
    assert "Unknown objective function: omega" in caplog.text
    # calmar without a drawdown is 0.0
    flat = replay([update(0, 100000.0)], objective_function={"name": "calmar_ratio"})
    assert flat.get_metrics()["objective_value"] == 0.0


def test_custom_metrics_are_called_with_the_metrics() -> None:
    def doubled_pnl(metrics: dict[str, Any]) -> float:
        return metrics["total_pnl"] * 2

    m = replay(losing_stream(), custom_metrics=[doubled_pnl, lambda m: m["total_trades"]])
    metrics = m.get_metrics()
    assert metrics["custom_doubled_pnl"] == 40.0
    assert metrics["custom_<lambda>"] == 2
    with pytest.raises(InvalidArgument, match="custom_metrics must be callables"):
        MetricsEventTracer({"custom_metrics": ["sharpe"]})


# ---------------------------------------------------------------- collection and retention


def test_snapshot_interval() -> None:
    default = replay(alternating(250), collection={"store_equity_curve": True})
    curve = default.get_results()["equity_curve"]
    assert [p["timestamp"] for p in curve] == [at(99).isoformat(), at(199).isoformat()]
    assert set(curve[0]) == {"timestamp", "value", "drawdown", "total_return"}
    # update 100 is a fall (odd index): drawdown 1 %; its total return by hand
    assert curve[0]["drawdown"] == pytest.approx(0.01)
    assert curve[0]["total_return"] == pytest.approx(1.02**50 * 0.99**50 - 1)
    every7 = replay(
        alternating(20), collection={"store_equity_curve": True, "snapshot_interval": 7}
    )
    points = every7.get_results()["equity_curve"]
    assert [p["timestamp"] for p in points] == [at(6).isoformat(), at(13).isoformat()]
    assert points[0]["drawdown"] == 0.0  # update 7 is a rise
    assert "equity_curve" not in replay(alternating(250)).get_results()
    with pytest.raises(InvalidArgument, match="snapshot_interval must be an int >= 1"):
        MetricsEventTracer({"collection": {"snapshot_interval": 0}})


def test_retention_aliases_and_store_trades() -> None:
    events = [fill(0, "SPY", "buy", 1, 10.0), fill(1, "SPY", "sell", 1, 11.0), update(2, 1.0)]
    for policy, kept in [("all", 3), ("full", 3), ("keep_all", 3), ("none", 0), ("minimal", 0)]:
        tracer = replay(events, retention_policy=policy)
        assert tracer.get_metrics()["events_retained"] == kept, policy
    assert (
        replay(events, retention_policy="sliding_window", max_events=2).get_metrics()[
            "events_retained"
        ]
        == 2
    )
    assert (
        replay(events, retention_policy="all", max_events=1).get_metrics()["events_retained"] == 1
    )
    assert "trades" not in replay(events, collection={"store_trades": False}).get_results()
    with pytest.raises(InvalidArgument, match="retention_policy must be one of"):
        MetricsEventTracer({"retention_policy": "forever"})
    with pytest.raises(InvalidArgument, match="unknown key"):
        MetricsEventTracer({"collection": {"store_equity": True}})


def test_results_shape_and_json() -> None:
    tracer = replay(
        losing_stream(), collection={"store_equity_curve": True, "snapshot_interval": 5}
    )
    results = tracer.get_results()
    assert list(results) == ["metrics", "summary", "trades", "equity_curve"]
    assert set(results["metrics"]) == {
        "sharpe_ratio",
        "total_return",
        "max_drawdown",
        "current_drawdown",
        "win_rate",
        "profit_factor",
        "total_trades",
        "winning_trades",
        "losing_trades",
        "total_pnl",
        "gross_profit",
        "gross_loss",
        "current_value",
        "peak_value",
        "events_retained",
        "active_trades",
        "open_positions",
        "objective_value",
        "objective_function",
    }
    json.dumps(results, default=str)
    tracer.clear()
    assert tracer.get_results() == {
        "metrics": tracer.get_metrics(),
        "summary": {
            "initial_capital": 100000.0,
            "final_value": 100000.0,
            "total_return": 0.0,
            "sharpe_ratio": 0.0,
            "max_drawdown": 0.0,
            "total_trades": 0,
            "win_rate": 0.0,
        },
    }


def test_bad_events() -> None:
    tracer = MetricsEventTracer({})
    with pytest.raises(InvalidArgument, match="event has no type"):
        tracer.trace_event({"payload": {}})
    with pytest.raises(InvalidArgument, match="direction 'up' is unknown"):
        tracer.trace_event(fill(0, "SPY", "up", 1, 1.0))
    with pytest.raises(InvalidArgument, match="objective_function has unknown key"):
        MetricsEventTracer({"objective_function": {"name": "sharpe_ratio", "direction": "max"}})


# ---------------------------------------------------------------- memory bound


def test_five_thousand_round_trips_under_trade_complete() -> None:
    tracer = MetricsEventTracer({"retention_policy": "trade_complete", "max_events": 100})
    for k in range(5000):
        symbol = ("SPY", "QQQ", "IWM")[k % 3]
        side, back = ("buy", "sell") if k % 2 == 0 else ("sell", "buy")
        cid, out = f"open-{k}", f"close-{k}"
        tracer.trace_event(Event(EventType.ORDER_REQUEST, {"symbol": symbol}, correlation_id=cid))
        tracer.trace_event(fill(2 * k, symbol, side, 10, 100.0, cid))
        tracer.trace_event(Event(EventType.ORDER_REQUEST, {"symbol": symbol}, correlation_id=out))
        tracer.trace_event(fill(2 * k + 1, symbol, back, 10, 101.0, out))
    m = tracer.get_metrics()
    assert m["events_retained"] == 0  # the source keeps one event per round trip: 5,000
    assert (m["total_trades"], m["winning_trades"], m["losing_trades"]) == (5000, 2500, 2500)
    tracer.trace_event(fill(10**5, "SPY", "buy", 1, 1.0, "last"))
    assert tracer.get_metrics()["events_retained"] == 1  # the one open position's fill


# ---------------------------------------------------------------- random multi-symbol streams


def book_by_hand(fills: list[tuple[str, str, int, int]]) -> dict[str, Any]:
    """The source's position rules (with the rest of a reversal opening at the fill's
    price), worked out fill by fill."""
    qty: dict[str, int] = {}
    avg: dict[str, float] = {}
    kept: dict[str, int] = {}  # fills of the open lot
    pnls: list[float] = []
    for symbol, direction, q, p in fills:
        sign = 1 if direction == "buy" else -1
        have = qty.get(symbol, 0)
        if have == 0 or (have > 0) == (sign > 0):
            avg[symbol] = (abs(have) * avg.get(symbol, 0.0) + q * p) / (abs(have) + q)
            qty[symbol] = have + sign * q
            kept[symbol] = kept.get(symbol, 0) + 1
            continue
        closed = min(q, abs(have))
        pnls.append((p - avg[symbol]) * closed * (1 if have > 0 else -1))
        if q < abs(have):
            qty[symbol] = have + sign * q
            kept[symbol] += 1
        elif q == abs(have):
            qty[symbol], kept[symbol] = 0, 0
        else:
            qty[symbol], avg[symbol], kept[symbol] = sign * (q - abs(have)), float(p), 1
    return {
        "total_trades": len(pnls),
        "winning_trades": sum(1 for x in pnls if x > 0),
        "losing_trades": sum(1 for x in pnls if x < 0),
        "total_pnl": sum(pnls),
        "gross_profit": sum(x for x in pnls if x > 0),
        "gross_loss": -sum(x for x in pnls if x < 0),
        "open_positions": sum(1 for v in qty.values() if v != 0),
        "events_retained": sum(kept.values()),
    }


fills_strategy = st.lists(
    st.tuples(
        st.sampled_from(["SPY", "QQQ", "IWM"]),
        st.sampled_from(["buy", "sell"]),
        st.integers(1, 6),
        st.integers(90, 110),
    ),
    max_size=40,
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(fills=fills_strategy)
def test_random_multi_symbol_streams(fills: list[tuple[str, str, int, int]]) -> None:
    tracer = replay([fill(i, *f) for i, f in enumerate(fills)])
    m = tracer.get_metrics()
    expected = book_by_hand(fills)
    for name, value in expected.items():
        assert m[name] == pytest.approx(value, abs=1e-9), name


# ---------------------------------------------------------------- the observer API


def portfolio(retention: str = "trade_complete", **config: Any) -> Container:
    settings = {"initial_capital": 100000, "results": {"retention_policy": retention}, **config}
    c = Container(ContainerConfig(name="p", container_type="portfolio", config=settings))
    c.initialize()
    return c


def test_metrics_observer_keeps_open_trades_only() -> None:
    """The source's own test scenario: 10 trades (POSITION_OPEN and a fill without a
    symbol each), every other one closed with pnl 100."""
    c = portfolio()
    observer = next(o for o in c.event_bus._observers if isinstance(o, MetricsObserver))
    for n in range(10):
        cid = f"trade_{n}"
        opening = {"symbol": "SPY", "direction": "long", "quantity": 100, "price": 400.0 + n}
        c.event_bus.publish(Event(EventType.POSITION_OPEN, opening, correlation_id=cid))
        c.event_bus.publish(
            Event(EventType.FILL, {"quantity": 100, "price": 400.0 + n}, correlation_id=cid)
        )
        if n % 2 == 0:
            closing = {"symbol": "SPY", "quantity": 100, "price": 401.0 + n, "pnl": 100.0}
            c.event_bus.publish(Event(EventType.POSITION_CLOSE, closing, correlation_id=cid))
    stats = c.get_metrics()["observer_stats"]
    # 25 events; the 5 closed trades' POSITION_OPEN and POSITION_CLOSE are pruned; the
    # fills (no symbol: one growing long) and the 5 open trades stay
    assert stats == {
        "events_observed": 25,
        "events_pruned": 10,
        "active_trades": 5,
        "retention_policy": "trade_complete",
        "memory_efficiency": 0.4,
    }
    metrics = c.get_metrics()["metrics"]
    # 5 trades of (401 + n - (400 + n)) x 100 = 100; returns 100 / capital before each
    assert (metrics["total_trades"], metrics["total_pnl"]) == (5, 500.0)
    assert metrics["current_capital"] == 100500.0
    returns = [100.0 / (100000.0 + 100.0 * i) for i in range(5)]
    mean = sum(returns) / 5
    std = math.sqrt(sum((r - mean) ** 2 for r in returns) / 4)
    assert metrics["sharpe_ratio"] == pytest.approx(mean / std * math.sqrt(252))
    results = c.get_final_metrics()
    assert results["observer_stats"]["completed_trades"] == 5
    assert [t["correlation_id"] for t in results["trades"]] == [
        f"trade_{n}" for n in (0, 2, 4, 6, 8)
    ]
    c.cleanup()
    assert observer not in c.event_bus._observers


def test_parallel_portfolios_prune_closed_trades() -> None:
    portfolios = [
        portfolio(results={"retention_policy": "trade_complete", "max_events": 50})
        for _ in range(10)
    ]
    for n in range(100):
        c = portfolios[n % 10]
        cid = f"p{n % 10}_t{n}"
        c.event_bus.publish(
            Event(EventType.POSITION_OPEN, {"price": 100.0, "quantity": 10}, correlation_id=cid)
        )
        if n < 80:
            closing = {"price": 101.0, "quantity": 10, "pnl": 10.0}
            c.event_bus.publish(Event(EventType.POSITION_CLOSE, closing, correlation_id=cid))
    for c in portfolios:
        stats = c.get_metrics()["observer_stats"]
        assert (stats["active_trades"], stats["events_pruned"]) == (2, 16)
        assert c.get_metrics()["metrics"]["total_pnl"] == 80.0  # 8 closes x (101 - 100) x 10


def test_observer_settings_and_hooks(caplog: pytest.LogCaptureFixture) -> None:
    calculator = BasicMetricsCalculator(initial_capital=1000.0, annualization_factor=4.0)
    window = MetricsObserver(calculator, retention_policy="sliding_window", max_events=3)
    bus = EventBus()
    bus.attach_observer(window)
    seen: list[Event] = []
    bus.subscribe(EventType.PORTFOLIO_UPDATE, seen.append)
    for i, value in enumerate([1100.0, 990.0, 1050.0, 1200.0]):
        bus.publish(update(i, value))
    assert len(seen) == 4
    assert window.get_metrics()["observer_stats"]["events_pruned"] == 1  # window of 3
    metrics = calculator.get_metrics()
    assert metrics["max_drawdown"] == pytest.approx(0.1)  # 990 against the peak 1100
    assert metrics["total_return"] == pytest.approx(0.2)

    def broken(event: Event) -> None:
        raise RuntimeError("handler failed")

    bus.subscribe(EventType.FILL, broken)
    with caplog.at_level(logging.WARNING, logger="phasekit.compat.tracing"):
        with pytest.raises(RuntimeError):
            bus.publish(fill(9, "SPY", "buy", 1, 1.0))
    assert "Handler error for event EventType.FILL: handler failed" in caplog.text
    with pytest.raises(InvalidArgument, match="retention_policy must be one of"):
        MetricsObserver(calculator, retention_policy="sometimes")


def test_container_settings_reach_the_observer() -> None:
    """initial_capital, metrics.annualization_factor, results.retention_policy and
    results.max_events of a portfolio container's config."""
    c = portfolio(
        initial_capital=1000,
        metrics={"annualization_factor": 4.0},
        results={"retention_policy": "sliding_window", "max_events": 2},
    )
    for n in range(3):  # trades of +10, +20, +30 from POSITION_OPEN / POSITION_CLOSE
        opening = {"symbol": "GLD", "price": 10.0, "quantity": 1}
        c.event_bus.publish(Event(EventType.POSITION_OPEN, opening, correlation_id=f"t{n}"))
        closing = {"symbol": "GLD", "price": 20.0 + 10 * n, "pnl": 10.0 + 10 * n}
        c.event_bus.publish(Event(EventType.POSITION_CLOSE, closing, correlation_id=f"t{n}"))
    metrics = c.get_metrics()
    assert metrics["observer_stats"]["events_pruned"] == 4  # 6 events, a window of 2
    m = metrics["metrics"]
    assert (m["total_pnl"], m["current_capital"]) == (60.0, 1060.0)
    returns = [10.0 / 1000.0, 20.0 / 1010.0, 30.0 / 1030.0]
    mean = sum(returns) / 3
    std = math.sqrt(sum((r - mean) ** 2 for r in returns) / 2)
    assert m["sharpe_ratio"] == pytest.approx(mean / std * math.sqrt(4.0))


def test_initial_capital_sets_the_returns() -> None:
    m = replay([update(0, 1100.0), update(1, 990.0)], initial_capital=1000.0).get_metrics()
    assert m["total_return"] == pytest.approx(-0.01)  # 990 / 1000 - 1
    assert m["max_drawdown"] == pytest.approx(0.1)  # 110 below the peak 1100


# ---------------------------------------------------------------- phase configs


def test_standard_phase_configs_are_the_seeds() -> None:
    assert StandardPhaseConfigs.optimization_phase("parameter_search") == {
        "results_storage": "disk",
        "event_tracing": ["POSITION_OPEN", "POSITION_CLOSE", "FILL"],
        "retention_policy": "trade_complete",
    }
    assert StandardPhaseConfigs.validation_phase("validation") == {
        "results_storage": "memory",
        "event_tracing": ["POSITION_OPEN", "POSITION_CLOSE", "FILL", "PORTFOLIO_UPDATE"],
        "retention_policy": "sliding_window",
        "sliding_window_size": 1000,
    }
    # the seed's usage: merged into a user config; phasekit's resolver reads it
    user_config = {"results_storage": "memory"}
    config = {
        **user_config,
        **StandardPhaseConfigs.optimization_phase("parameter_search", data_split=0.8),
    }
    assert config["data_split"] == 0.8 and config["results_storage"] == "disk"
    resolved = resolve({"phases": [{"name": "parameter_search", "config": config}]}).phase(
        "parameter_search"
    )
    assert resolved.data_flow.mode == "file"
    assert resolved.settings.retention_policy == "trade_complete"
    again = StandardPhaseConfigs.optimization_phase("x")
    again["event_tracing"].append("BAR")  # a copy: the defaults are not changed
    assert "BAR" not in StandardPhaseConfigs.optimization_phase("x")["event_tracing"]
