"""Seed 002 (event tracing as the metrics system) through phasekit.compat.tracing, on both
backends.

The container below sets up its tracer with the seed's ``_setup_tracing`` code and its
own event type enum and event objects; its results are checked against phasekit's own
``compute_metrics``, ``EventRing`` and ``ContainerTracer`` fed the same events.
"""

from __future__ import annotations

import enum
import json
import math
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Callable, Optional

import numpy as np
import pytest

import phasekit
from phasekit.backtest import compute_metrics
from phasekit.compat.tracing import MetricsEventTracer, StandardPhaseConfigs
from phasekit.config import resolve
from phasekit.errors import ConfigError, InvalidArgument
from phasekit.tracing import ContainerTracer, TracerSettings
from stores_util import store_backend  # noqa: F401

pytestmark = pytest.mark.usefixtures("store_backend")

INITIAL = 100_000.0
T0 = datetime(2024, 1, 2, 9, 30)


class EventType(enum.Enum):
    """The seed system's own event types (names are what matter)."""

    BAR = "bar"
    FILL = "fill"
    POSITION_OPEN = "position_open"
    POSITION_CLOSE = "position_close"
    PORTFOLIO_UPDATE = "portfolio_update"


@dataclass
class Event:
    event_type: EventType
    payload: dict[str, Any]
    timestamp: Optional[datetime] = None
    correlation_id: Optional[str] = None


class EventBus:
    def __init__(self) -> None:
        self.handlers: dict[EventType, list[Callable[[Event], None]]] = defaultdict(list)

    def subscribe(self, event_type: EventType, handler: Callable[[Event], None]) -> None:
        self.handlers[event_type].append(handler)

    def publish(self, event: Event) -> None:
        for handler in self.handlers[event.event_type]:
            handler(event)


@dataclass
class PortfolioContainer:
    """A seed portfolio container: ``_setup_tracing`` is the seed's code."""

    config: dict[str, Any]
    container_id: str = "portfolio_001"
    event_bus: EventBus = field(default_factory=EventBus)
    streaming_metrics: Any = None

    def _setup_tracing(self) -> None:
        execution_config = self.config.get("execution", {})
        event_tracing = execution_config.get(
            "event_tracing", ["POSITION_OPEN", "POSITION_CLOSE", "FILL"]
        )
        retention_policy = execution_config.get("retention_policy", "trade_complete")
        sliding_window_size = execution_config.get("sliding_window_size", 1000)
        store_equity_curve = "PORTFOLIO_UPDATE" in event_tracing
        metrics_config = {
            "initial_capital": self.config.get("initial_capital", 100000.0),
            "retention_policy": retention_policy,
            "max_events": sliding_window_size if retention_policy == "sliding_window" else 10000,
            "collection": {"store_equity_curve": store_equity_curve, "store_trades": True},
            "objective_function": self.config.get("objective_function", {"name": "sharpe_ratio"}),
        }
        self.streaming_metrics = MetricsEventTracer(metrics_config)
        for event_type_str in event_tracing:
            event_type = EventType[event_type_str]
            self.event_bus.subscribe(event_type, self.streaming_metrics.trace_event)


@dataclass
class Simulation:
    events: list[Event]
    rows: list[tuple[int, int, int, int, float, float, float]]  # what the ring must hold
    equity: np.ndarray
    position: np.ndarray
    pnl: np.ndarray
    ts: np.ndarray


def ns(t: datetime) -> int:
    return int(t.replace(tzinfo=UTC).timestamp()) * 1_000_000_000


def simulate(n: int = 400, seed: int = 0) -> Simulation:
    """A long/short strategy on one symbol: the seed's events and the equivalent rows."""
    rng = np.random.default_rng(seed)
    prices = 100.0 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    events: list[Event] = []
    rows: list[tuple[int, int, int, int, float, float, float]] = []
    equity, position, pnl, stamps = [], [], [], []
    realized = 0.0
    trade: Optional[dict[str, Any]] = None
    trades = 0
    k = phasekit.event_kind
    for t in range(n):
        when = T0 + timedelta(minutes=t)
        price = float(prices[t])
        if trade is None and t % 20 == 0 and t < n - 15:
            side = "long" if trades % 2 == 0 else "short"
            qty = 10.0 if side == "long" else -10.0
            trade = {
                "id": f"trade-{trades}",
                "key": trades,
                "entry": price,
                "qty": qty,
                "side": side,
                "close_at": t + 5 + trades % 7,
            }
            trades += 1
            fill = {
                "symbol": "SPY",
                "price": price,
                "quantity": 10.0,
                "direction": "buy" if side == "long" else "sell",
            }
            opening = {"symbol": "SPY", "price": price, "quantity": 10.0, "direction": side}
            for etype, payload in ((EventType.FILL, fill), (EventType.POSITION_OPEN, opening)):
                events.append(Event(etype, payload, when, trade["id"]))
                rows.append((ns(when), k(etype.name), trade["key"], 1, price, qty, 0.0))
        elif trade is not None and t == trade["close_at"]:
            gain = (price - trade["entry"]) * trade["qty"]
            realized += gain
            pnl.append(gain)
            back = "sell" if trade["side"] == "long" else "buy"
            fill = {"symbol": "SPY", "price": price, "quantity": 10.0, "direction": back}
            closing = {
                "symbol": "SPY",
                "price": price,
                "quantity": 10.0,
                "direction": trade["side"],
                "pnl": gain,
            }
            events.append(Event(EventType.FILL, fill, when, trade["id"]))
            rows.append((ns(when), k("FILL"), trade["key"], 1, price, -trade["qty"], 0.0))
            events.append(Event(EventType.POSITION_CLOSE, closing, when, trade["id"]))
            rows.append((ns(when), k("POSITION_CLOSE"), trade["key"], 1, price, trade["qty"], gain))
            trade = None
        open_pnl = 0.0 if trade is None else (price - trade["entry"]) * trade["qty"]
        value = INITIAL + realized + open_pnl
        events.append(Event(EventType.PORTFOLIO_UPDATE, {"portfolio_value": value}, when))
        rows.append((ns(when), k("PORTFOLIO_UPDATE"), -1, 0, 0.0, 0.0, value))
        equity.append(value)
        position.append(0 if trade is None else 1)
        stamps.append(ns(when))
    return Simulation(
        events, rows, np.array(equity), np.array(position), np.array(pnl), np.array(stamps)
    )


def container(execution: dict[str, Any], **config: Any) -> PortfolioContainer:
    c = PortfolioContainer({"execution": execution, "initial_capital": INITIAL, **config})
    c._setup_tracing()
    return c


VALIDATION = StandardPhaseConfigs.validation_phase("validation")
OPTIMIZATION = StandardPhaseConfigs.optimization_phase("parameter_search")


# ---------------------------------------------------------------- results


def test_validation_container_metrics_match_the_reference() -> None:
    sim = simulate()
    c = container(VALIDATION)
    for event in sim.events:
        c.event_bus.publish(event)
    results = c.streaming_metrics.get_results()
    assert {"metrics", "trades", "equity_curve"} <= set(results)
    expected = compute_metrics(sim.equity, INITIAL, 252.0, sim.pnl, sim.position)
    for name, value in expected.items():
        got = results["metrics"][name]
        if value is None:
            assert got is None
        else:
            assert got == pytest.approx(value, rel=1e-9, abs=1e-12), name
    assert results["metrics"]["objective_function"] == "sharpe_ratio"
    assert results["metrics"]["objective_value"] == results["metrics"]["sharpe_ratio"]
    curve = results["equity_curve"]
    assert [p["value"] for p in curve] == pytest.approx(sim.equity.tolist())
    assert curve[0]["timestamp"] == "2024-01-02T09:30:00+00:00"
    json.dumps(results)  # the seed writes it as JSON


def test_trades_are_the_rings_trade_summaries() -> None:
    sim = simulate()
    for execution in (VALIDATION, OPTIMIZATION):  # sliding_window, trade_complete
        c = container(execution)
        for event in sim.events:
            c.event_bus.publish(event)
        trades = c.streaming_metrics.get_results()["trades"]
        assert [t["pnl"] for t in trades] == pytest.approx(sim.pnl.tolist())
        assert [t["position_id"] for t in trades] == [f"trade-{i}" for i in range(len(trades))]
        assert {t["direction"] for t in trades} == {"long", "short"}
        # trades come from the book: the two fills of a round trip
        assert all(t["symbol"] == "SPY" and t["n_events"] == 2 for t in trades)
        # phasekit's own ring under trade_complete, fed the same rows
        ring = phasekit.EventRing("trade_complete")
        for row in sim.rows:
            ring.append(*row)
        own = ring.trades().to_pylist()
        assert [t["entry_price"] for t in trades] == [r["entry_price"] for r in own]
        assert [t["exit_price"] for t in trades] == [r["exit_price"] for r in own]
        assert [t["quantity"] for t in trades] == [abs(r["quantity"]) for r in own]


def test_optimization_container_traces_no_equity() -> None:
    sim = simulate()
    c = container(OPTIMIZATION)
    for event in sim.events:
        c.event_bus.publish(event)
    results = c.streaming_metrics.get_results()
    assert "equity_curve" not in results  # PORTFOLIO_UPDATE not traced
    assert results["metrics"]["trade_count"] == len(sim.pnl)
    assert results["metrics"]["win_rate"] == pytest.approx(float(np.mean(sim.pnl > 0)))
    assert results["events"]["retained"] == 0  # every trade closed: nothing retained


@pytest.mark.parametrize("policy", ["trade_complete", "sliding_window", "minimal", "keep_all"])
def test_retention_matches_the_container_tracer(policy: str) -> None:
    sim = simulate(300)
    tracer = MetricsEventTracer(
        {"initial_capital": INITIAL, "retention_policy": policy, "max_events": 50}
    )
    for event in sim.events[:-7]:  # stop inside a trade
        tracer.trace_event(event)
    own = ContainerTracer(
        TracerSettings(
            event_tracing=("FILL", "POSITION_OPEN", "POSITION_CLOSE", "PORTFOLIO_UPDATE"),
            retention_policy=policy,
            sliding_window_size=50,
            max_events=50,
            initial_capital=INITIAL,
        )
    )
    columns = list(zip(*sim.rows[:-7]))
    names = ("ts", "kind", "key", "symbol", "price", "quantity", "value")
    own.trace({n: np.array(c) for n, c in zip(names, columns)})
    assert tracer.get_results()["events"] == own.ring.stats()
    assert tracer.tracer.ring.to_arrow().equals(own.ring.to_arrow())


# ---------------------------------------------------------------- event shapes and config


def test_dict_events_and_registered_kinds() -> None:
    tracer = MetricsEventTracer(
        {"initial_capital": 1000.0, "collection": {"store_equity_curve": True}}
    )
    tracer.trace_event({"type": "ORDER_REQUEST", "payload": {"symbol": "QQQ"}, "timestamp": T0})
    tracer.trace_event(
        {
            "event_type": "POSITION_OPEN",
            "symbol": "QQQ",
            "entry_price": 10.0,
            "quantity": 3,
            "timestamp": "2024-01-02T10:00:00",
        }
    )
    tracer.trace_event({"event_type": "PORTFOLIO_UPDATE", "total_value": 1003.0, "timestamp": 2.5})
    tracer.trace_event(
        {
            "event_type": "POSITION_CLOSE",
            "symbol": "QQQ",
            "entry_price": 10.0,
            "exit_price": 12.0,
            "quantity": 3,
            "timestamp": "2024-01-02T11:00:00",
        }
    )
    results = tracer.get_results()
    assert results["trades"][0]["pnl"] == 6.0  # computed from entry and exit prices
    # the position's events start with the order request (keyed by its symbol)
    assert results["trades"][0]["entry_time"] == "2024-01-02T09:30:00+00:00"
    assert results["trades"][0]["exit_time"] == "2024-01-02T11:00:00+00:00"
    assert results["trades"][0]["n_events"] == 3
    assert results["equity_curve"] == [
        {"timestamp": "1970-01-01T00:00:02.500000+00:00", "value": 1003.0}
    ]
    assert phasekit.event_kind("ORDER_REQUEST") >= 64  # registered by name
    assert results["events"]["seen"] == 4


def test_objective_function_and_bad_config() -> None:
    sim = simulate(200)
    minimize = MetricsEventTracer(
        {"objective_function": {"name": "max_drawdown", "direction": "minimize"}}
    )
    for event in sim.events:
        minimize.trace_event(event)
    metrics = minimize.get_metrics()
    assert metrics["objective_value"] == metrics["max_drawdown"]
    with pytest.raises(ConfigError, match=r"objective_function.*sharpe_ratio"):
        MetricsEventTracer({"objective_function": {"name": "sharpe_ration"}})
    with pytest.raises(InvalidArgument, match="policy"):
        MetricsEventTracer({"retention_policy": "forever"})
    with pytest.raises(InvalidArgument, match="event has no type"):
        minimize.trace_event({"payload": {}})
    no_trades = MetricsEventTracer({"collection": {"store_trades": False}})
    assert "trades" not in no_trades.get_results()
    minimize.clear()
    assert minimize.get_results()["events"]["seen"] == 0
    assert math.isclose(minimize.get_metrics()["final_equity"], 100000.0)


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
