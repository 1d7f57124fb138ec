"""Seed 002 (event tracing as the metrics system): ``MetricsEventTracer`` and
``StandardPhaseConfigs``.

Drop-in for code written against the seed's sketches::

    from phasekit.compat.tracing import MetricsEventTracer, StandardPhaseConfigs

    self.streaming_metrics = MetricsEventTracer(metrics_config)   # the seed's dict
    self.event_bus.subscribe(event_type, self.streaming_metrics.trace_event)
    results = self.streaming_metrics.get_results()   # {'metrics', 'trades', 'equity_curve'}

The tracer is a :class:`phasekit.tracing.ContainerTracer`: every traced event goes into
its :class:`phasekit.EventRing` (Rust or Python backend) under the retention policy
(``trade_complete``, ``sliding_window`` of ``max_events``, ``minimal``, ``keep_all``),
and the metrics are folded in while events stream
(:class:`phasekit.backtest.StreamingMetrics`, the definitions of DESIGN.md). Closed
trades are the trade summaries of an EventRing under ``trade_complete`` (the tracer's own
ring under that policy; else a second ring fed only the events of positions, so its
memory is bounded by the open positions).

Events are the seed's event objects (``event_type``, ``payload``, optional ``timestamp``
and ``correlation_id``) or dicts (``event_type`` or ``type``, and ``payload`` or
``data``, else the dict itself is the payload). From the payload:

* ``PORTFOLIO_UPDATE``: ``portfolio_value`` (or ``total_value``, ``equity``, ``value``)
  is one mark-to-market equity point (one period of the Sharpe ratio);
* ``POSITION_OPEN``: ``price`` (or ``entry_price``), ``quantity``;
* ``POSITION_CLOSE``: ``pnl`` (or ``realized_pnl``; else computed from ``entry_price``,
  ``exit_price`` and ``quantity``), ``price`` (or ``exit_price``);
* every event: ``timestamp`` (datetime, ISO text, int ns or float seconds; the event's
  own ``timestamp`` otherwise; the tracing time when none), ``symbol``; the position is
  ``position_id``, ``trade_id``, the event's ``correlation_id`` or the ``symbol``, in that
  order; ``direction``/``side`` ``short`` or ``sell`` makes the quantity negative.

Event types outside :class:`phasekit.EventType` are registered by name.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Optional

import numpy as np

import phasekit
from phasekit.config import load_section
from phasekit.errors import InvalidArgument
from phasekit.events import EventType, event_kind, register_event_kind
from phasekit.tracing import ContainerTracer, TracerSettings
from phasekit.workflow.builtin import BUILTIN_WORKFLOWS
from phasekit.workflow.topology import Objective

OPEN = int(EventType.POSITION_OPEN)
CLOSE = int(EventType.POSITION_CLOSE)
UPDATE = int(EventType.PORTFOLIO_UPDATE)
EQUITY_BATCH = 1024
_VALUE_KEYS = ("portfolio_value", "total_value", "equity", "value")
_SHORT = ("short", "sell", "SHORT", "SELL")


_EPOCH = datetime(1970, 1, 1)
_EPOCH_UTC = _EPOCH.replace(tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def _ns(value: Any) -> int:
    """A timestamp as int64 nanoseconds since the epoch (naive datetimes are UTC)."""
    if type(value) is datetime:
        return (value - (_EPOCH if value.tzinfo is None else _EPOCH_UTC)) // _MICROSECOND * 1000
    nanos = getattr(value, "value", None)  # pandas Timestamp
    if isinstance(nanos, int) and isinstance(value, datetime):
        return nanos
    if isinstance(value, datetime):
        return _ns(datetime(*value.timetuple()[:6], value.microsecond, value.tzinfo))
    if isinstance(value, np.datetime64):
        return int(value.astype("datetime64[ns]").astype(np.int64))
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return round(float(value) * 1e9)
    if isinstance(value, str):
        try:
            return _ns(datetime.fromisoformat(value))
        except ValueError:
            pass
    raise InvalidArgument(
        f"event timestamp {value!r} is not a time; allowed: datetime, ISO text, "
        "int nanoseconds or float seconds since the epoch"
    )


def _iso(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, UTC).isoformat()


def _number(payload: Mapping[str, Any], *names: str) -> Optional[float]:
    for name in names:
        value = payload.get(name)
        if value is not None:
            return float(value)
    return None


def _unpack(event: Any) -> tuple[Any, Mapping[str, Any], Any, Any]:
    """(event type, payload, timestamp, correlation id) of a seed event object or dict."""
    if isinstance(event, Mapping):
        etype = event.get("event_type", event.get("type"))
        payload = event.get("payload", event.get("data"))
        if payload is None:
            payload = {k: v for k, v in event.items() if k not in ("event_type", "type")}
        return etype, payload, event.get("timestamp"), event.get("correlation_id")
    etype = getattr(event, "event_type", None)
    payload = getattr(event, "payload", None) or getattr(event, "data", None) or {}
    return etype, payload, getattr(event, "timestamp", None), getattr(event, "correlation_id", None)


def _kind(etype: Any) -> int:
    if etype is None:
        raise InvalidArgument(
            "event has no type: give an object with event_type (and payload) or a dict with "
            "event_type or type"
        )
    name = getattr(etype, "name", None)
    if isinstance(name, str):
        etype = name
    if isinstance(etype, str):
        try:
            return event_kind(etype)
        except InvalidArgument:
            return register_event_kind(etype)
    return event_kind(int(etype))


class _Names:
    """Interns names (positions, symbols) as small integers for the ring's columns."""

    def __init__(self, first: int) -> None:
        self.codes: dict[Any, int] = {}
        self.names: dict[int, Any] = {}
        self.first = first

    def code(self, name: Any) -> int:
        code = self.codes.get(name)
        if code is None:
            code = self.codes[name] = len(self.codes) + self.first
            self.names[code] = name
        return code


class MetricsEventTracer:
    """Event tracer optimized for metrics calculation (seed 002), over a phasekit
    ContainerTracer. ``config``: initial_capital (100000.0), retention_policy
    (trade_complete), max_events (the sliding window; 10000), collection.store_equity_curve
    (False), collection.store_trades (True), objective_function ({'name': 'sharpe_ratio'};
    a metric name or ``module:function``, optional ``direction``), periods_per_year (252).
    """

    def __init__(self, config: Optional[Mapping[str, Any]] = None) -> None:
        config = dict(config or {})
        collection = dict(config.get("collection") or {})
        self.initial_capital = float(config.get("initial_capital", 100000.0))
        self.retention_policy = str(config.get("retention_policy", "trade_complete"))
        self.max_events = int(config.get("max_events", 10000))
        self.store_equity_curve = bool(collection.get("store_equity_curve", False))
        self.store_trades = bool(collection.get("store_trades", True))
        self.objective_config = config.get("objective_function") or {"name": "sharpe_ratio"}
        section = load_section("phase_config", {"objective_function": self.objective_config})
        parsed = section.objective_function  # type: ignore[attr-defined]
        self.objective = Objective(parsed.name, parsed.direction)
        # The events traced are those the caller subscribes this tracer to; event_tracing
        # only tells the ContainerTracer whether to keep the equity curve.
        self.settings = TracerSettings(
            event_tracing=("PORTFOLIO_UPDATE",) if self.store_equity_curve else (),
            retention_policy=self.retention_policy,
            sliding_window_size=self.max_events,
            max_events=self.max_events,
            initial_capital=self.initial_capital,
            periods_per_year=float(config.get("periods_per_year", 252.0)),
        )
        self.clear()

    def clear(self) -> None:
        """Drop every retained event, trade and equity point; reset the metrics."""
        self.tracer = ContainerTracer(self.settings)
        self._trade_ring: Any = None
        if self.store_trades and self.retention_policy != "trade_complete":
            self._trade_ring = phasekit.EventRing("trade_complete", max_events=self.max_events)
        self._positions = _Names(0)
        self._symbols = _Names(1)
        self._open: set[int] = set()
        self._kind_codes: dict[Any, int] = {}
        self._equity: list[tuple[int, float, int]] = []

    # ------------------------------------------------------------------ tracing

    def trace_event(self, event: Any) -> None:
        """Trace one event: into the ring under the retention policy, and into the metrics."""
        etype, payload, event_ts, correlation = _unpack(event)
        try:
            kind = self._kind_codes[etype]
        except (KeyError, TypeError):
            kind = _kind(etype)
            if getattr(etype, "__hash__", None) is not None:
                self._kind_codes[etype] = kind
        get = payload.get
        stamp = get("timestamp", event_ts)
        ts = time.time_ns() if stamp is None else _ns(stamp)
        symbol_name = get("symbol")
        symbol = 0 if symbol_name is None else self._symbols.code(symbol_name)
        position = get("position_id")
        if position is None:
            position = get("trade_id")
            if position is None:
                position = correlation if correlation is not None else symbol_name
        key = -1 if position is None else self._positions.code(position)
        quantity = _number(payload, "quantity", "qty") or 0.0
        if get("direction", get("side")) in _SHORT:
            quantity = -abs(quantity)
        price = _number(payload, "price", "entry_price" if kind == OPEN else "exit_price") or 0.0
        equity = _number(payload, *_VALUE_KEYS) if kind == UPDATE else None
        value = self._value(kind, payload, price, quantity) if equity is None else equity
        row = (ts, kind, key, symbol, price, quantity, value)
        self.tracer.ring.append(*row)
        if self._trade_ring is not None and key >= 0:
            self._trade_ring.append(*row)  # positions' events only: bounded by open positions
        if kind == OPEN and key >= 0:
            self._open.add(key)
        elif kind == CLOSE:
            self._open.discard(key)
            self.tracer.metrics.on_trade(value)
        elif equity is not None:
            self._equity.append((ts, equity, len(self._open)))
            if len(self._equity) >= EQUITY_BATCH:
                self._flush_equity()

    @staticmethod
    def _value(kind: int, payload: Mapping[str, Any], price: float, quantity: float) -> float:
        if kind == CLOSE:
            pnl = _number(payload, "pnl", "realized_pnl")
            if pnl is not None:
                return pnl
            entry = _number(payload, "entry_price")
            exit_ = _number(payload, "exit_price") or price
            return (exit_ - entry) * quantity if entry is not None else 0.0
        return _number(payload, "value") or 0.0

    def _flush_equity(self) -> None:
        if not self._equity:
            return
        ts, equity, open_positions = (np.array(c) for c in zip(*self._equity))
        self._equity = []
        self.tracer.on_equity(ts.astype(np.int64), equity.astype(np.float64), open_positions)

    # ------------------------------------------------------------------ results

    def get_metrics(self) -> dict[str, Any]:
        """The metrics so far, with the objective's name and value."""
        self._flush_equity()
        metrics = self.tracer.metrics.result()
        score = self.objective.function()(metrics)
        metrics["objective_function"] = self.objective.name
        metrics["objective_value"] = None if math.isnan(score) else score
        return metrics

    def _trades(self) -> list[dict[str, Any]]:
        ring = self._trade_ring if self._trade_ring is not None else self.tracer.ring
        out = []
        for row in ring.trades().to_pylist():
            quantity = row["quantity"]
            entry = row["entry_price"]
            out.append(
                {
                    "symbol": self._symbols.names.get(row["symbol"]),
                    "position_id": self._positions.names.get(row["key"]),
                    "direction": "short" if quantity < 0 else "long",
                    "entry_price": None if math.isnan(entry) else entry,
                    "exit_price": row["exit_price"],
                    "quantity": abs(quantity),
                    "entry_time": _iso(row["open_ts"]),
                    "exit_time": _iso(row["close_ts"]),
                    "pnl": row["pnl"],
                    "n_events": row["n_events"],
                }
            )
        return out

    def equity_curve_table(self) -> Any:
        """The equity curve as a pyarrow Table (ts, equity), or None when not stored."""
        self._flush_equity()
        return self.tracer.equity_curve()

    def get_results(self) -> dict[str, Any]:
        """``metrics`` (with the objective), ``trades`` (when stored), ``equity_curve``
        (when stored: a list of ``{'timestamp', 'value'}``) and ``events`` (ring stats)."""
        results: dict[str, Any] = {"metrics": self.get_metrics()}
        if self.store_trades:
            results["trades"] = self._trades()
        if self.store_equity_curve:
            table = self.equity_curve_table()
            results["equity_curve"] = [
                {"timestamp": _iso(ts), "value": value}
                for ts, value in zip(
                    table.column("ts").cast("int64").to_pylist(),
                    table.column("equity").to_pylist(),
                )
            ]
        results["events"] = self.tracer.ring.stats()
        return results


def _phase_defaults(phase: str) -> dict[str, Any]:
    keys = ("results_storage", "event_tracing", "retention_policy", "sliding_window_size")
    defaults = BUILTIN_WORKFLOWS["train_test_optimization"][phase]
    return {k: copy.deepcopy(defaults[k]) for k in keys if k in defaults}


class StandardPhaseConfigs:
    """Reusable phase configurations (seed 002): the defaults of phasekit's built-in
    ``train_test_optimization`` phases, updated by ``overrides``."""

    @staticmethod
    def optimization_phase(name: str, **overrides: Any) -> dict[str, Any]:
        """Standard config for optimization phases (disk, position events, trade_complete)."""
        config = _phase_defaults("parameter_search")
        config.update(overrides)
        return config

    @staticmethod
    def validation_phase(name: str, **overrides: Any) -> dict[str, Any]:
        """Standard config for validation phases with equity tracking."""
        config = _phase_defaults("validation")
        config.update(overrides)
        return config


__all__ = ["MetricsEventTracer", "StandardPhaseConfigs"]
