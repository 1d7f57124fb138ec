"""Design note 002 (event tracing as the metrics system): ``MetricsEventTracer``,
``MetricsObserver``, ``BasicMetricsCalculator`` and ``StandardPhaseConfigs``, giving the
outputs of the note's source system (its metric names and conventions, objective
functions, custom metrics, equity snapshots, results shape).

Drop-in for code written against it::

    from phasekit.compat.tracing import MetricsEventTracer, StandardPhaseConfigs

    self.streaming_metrics = MetricsEventTracer(metrics_config)
    self.event_bus.subscribe(event_type, self.streaming_metrics.trace_event)
    results = self.streaming_metrics.get_results()   # {'metrics', 'summary', ...}

Every traced event goes into a :class:`phasekit.EventRing` (Rust or Python backend)
under the retention policy; its position book turns FILL events into trades (per
symbol: average entry price, partial closes at that average, reversals), so memory
under ``trade_complete`` is bounded by the open positions. docs/migration.md lists
where phasekit differs from the source and why.

Events are event objects (``event_type``, ``payload``, optional ``timestamp`` and
``correlation_id``) or dicts (``event_type`` or ``type``, and ``payload`` or ``data``,
else the dict itself is the payload). Event types are matched by name. From the payload:

* ``FILL``: ``symbol``, ``quantity``, ``price``, ``direction`` (``long``/``buy``/
  ``cover`` buy, ``short``/``sell`` sell; without one the quantity's sign decides);
* ``PORTFOLIO_UPDATE``: ``portfolio_value``;
* ``POSITION_OPEN``/``POSITION_CLOSE``: ``symbol``, ``price`` (or ``entry_price``/
  ``exit_price``), ``quantity``, ``direction``; a close's ``pnl`` (or ``realized_pnl``)
  is a trade only for a symbol without fills (the fills count its trades);
* every event: ``timestamp`` (else the event's own, else the tracing time). Events of
  one trade share a key: the ``correlation_id``, else ``order_id`` (fills) or
  ``order['id']`` (orders), else ``position_id``/``trade_id``, else (position events) the
  symbol.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any, Optional, Protocol, Union

import numpy as np

import phasekit
from phasekit.errors import InvalidArgument
from phasekit.events import RETENTION_POLICIES as RING_POLICIES
from phasekit.events import EventType, event_kind, register_event_kind
from phasekit.workflow.builtin import BUILTIN_WORKFLOWS

log = logging.getLogger(__name__)

FILL = int(EventType.FILL)
OPEN = int(EventType.POSITION_OPEN)
CLOSE = int(EventType.POSITION_CLOSE)
UPDATE = int(EventType.PORTFOLIO_UPDATE)
ORDER = int(EventType.ORDER)

#: The source's retention names and the EventRing policy each one is.
RETENTION_POLICIES = {
    **{policy: policy for policy in RING_POLICIES},
    "all": "keep_all",
    "full": "keep_all",
    "none": "minimal",
}
DEFAULT_INITIAL_CAPITAL = 100000.0
DEFAULT_MAX_EVENTS = 1000
DEFAULT_SNAPSHOT_INTERVAL = 100
DEFAULT_ANNUALIZATION = 252.0
DEFAULT_MIN_PERIODS = 20
DEFAULT_OBJECTIVE = {"name": "sharpe_ratio", "params": {}}
DEFAULT_SORTINO_MULTIPLIER = 1.2
DEFAULT_WEIGHTS = {"sharpe_ratio": 0.4, "win_rate": 0.3, "profit_factor": 0.3}
OBJECTIVES = (
    "sharpe_ratio",
    "total_return",
    "profit_factor",
    "win_rate",
    "calmar_ratio",
    "sortino_ratio",
    "weighted_combination",
)
#: Keys of the tracer's config and of its ``collection`` block.
CONFIG_KEYS = (
    "initial_capital",
    "retention_policy",
    "max_events",
    "objective_function",
    "custom_metrics",
    "collection",
    "annualization_factor",
    "periods_per_year",
    "min_periods",
)
COLLECTION_KEYS = ("store_equity_curve", "snapshot_interval", "store_trades")
_BUY = ("long", "buy", "cover")
_SELL = ("short", "sell")
_EPOCH = datetime(1970, 1, 1)
_EPOCH_UTC = _EPOCH.replace(tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


# ---------------------------------------------------------------- event decoding


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


def _text_time(value: Any) -> Optional[str]:
    """A snapshot's timestamp as the source writes it (ISO text, None when absent)."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, str):
        return value
    return datetime.fromtimestamp(_ns(value) / 1e9, UTC).isoformat()


def _number(payload: Mapping[str, Any], *names: str) -> Optional[float]:
    for name in names:
        value = payload.get(name)
        if value is not None:
            try:
                return float(value)
            except (TypeError, ValueError):
                raise InvalidArgument(
                    f"event payload field {name!r} is {value!r}; a number is needed"
                ) from None
    return None


def _unpack(event: Any) -> tuple[Any, Mapping[str, Any], Any, Any]:
    """(event type, payload, timestamp, correlation id) of an event object or dict."""
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


def _side(payload: Mapping[str, Any], default: Optional[str]) -> float:
    """+1.0 buy, -1.0 sell, 0.0 when neither the payload nor ``default`` says."""
    direction = payload.get("direction", payload.get("side", default))
    if direction is None:
        return 0.0
    word = str(getattr(direction, "value", direction)).lower()
    if word in _BUY:
        return 1.0
    if word in _SELL:
        return -1.0
    allowed = ", ".join((*_BUY, *_SELL))
    raise InvalidArgument(f"event direction {direction!r} is unknown; allowed: {allowed}")


def _signed(quantity: float, side: float) -> float:
    return abs(quantity) * side if side else quantity


class _Names:
    """Interns names (keys, symbols) as small integers for the ring's columns."""

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


class _Traced:
    """What the book made of one event."""

    __slots__ = ("kind", "payload", "stamp", "value")

    def __init__(self, kind: int, payload: Mapping[str, Any], stamp: Any, value: Optional[float]):
        self.kind = kind
        self.payload = payload
        self.stamp = stamp
        self.value = value


class _Book:
    """Events as EventRing rows under a retention policy: the ring's position book makes
    the trades; names (symbols, keys) are interned."""

    def __init__(self, retention_policy: Any, max_events: Any, keep_trades: bool) -> None:
        self.policy = _retention(retention_policy)
        self.max_events = _positive_int("max_events", max_events)
        self.ring = phasekit.EventRing(
            RETENTION_POLICIES[self.policy],
            capacity=self.max_events,
            max_events=self.max_events,
            keep_trades=keep_trades,
        )
        self.symbols = _Names(1)
        self.keys = _Names(0)
        self.tz: Optional[tzinfo] = None
        self._kinds: dict[Any, int] = {}
        self._trades_read = 0
        self._realized = self.ring.realized()

    def _kind_of(self, etype: Any) -> int:
        try:
            return self._kinds[etype]
        except (KeyError, TypeError):
            kind = _kind(etype)
            if getattr(etype, "__hash__", None) is not None:
                self._kinds[etype] = kind
            return kind

    def _key(self, kind: int, payload: Mapping[str, Any], correlation: Any) -> int:
        key = correlation
        if key is None:
            if kind == FILL:
                key = payload.get("order_id")
            elif kind == ORDER or kind == _ORDER_REQUEST:
                order = payload.get("order")
                key = order.get("id") if isinstance(order, Mapping) else None
        if key is None:
            key = payload.get("position_id", payload.get("trade_id"))
        if key is None and kind in (OPEN, CLOSE):
            key = payload.get("symbol")
        return -1 if key is None else self.keys.code(key)

    def add(self, event: Any) -> _Traced:
        etype, payload, event_ts, correlation = _unpack(event)
        kind = self._kind_of(etype)
        get = payload.get
        stamp = get("timestamp") or event_ts
        if isinstance(stamp, datetime):
            self.tz = stamp.tzinfo
        ts = time.time_ns() if stamp is None else _ns(stamp)
        symbol_name = get("symbol")
        symbol = 0 if symbol_name is None else self.symbols.code(symbol_name)
        key = self._key(kind, payload, correlation)
        price = quantity = 0.0
        value: Optional[float] = None
        if kind == FILL:
            price = _number(payload, "price") or 0.0
            quantity = _signed(_number(payload, "quantity") or 0.0, _side(payload, None))
        elif kind == OPEN or kind == CLOSE:
            price_names = ("price", "entry_price") if kind == OPEN else ("price", "exit_price")
            price = _number(payload, *price_names) or 0.0
            quantity = _signed(_number(payload, "quantity") or 0.0, _side(payload, "long"))
            if kind == CLOSE:
                value = _close_pnl(payload, price, quantity)
        elif kind == UPDATE:
            value = _number(payload, "portfolio_value")
        self.ring.append(ts, kind, key, symbol, price, quantity, 0.0 if value is None else value)
        return _Traced(kind, payload, stamp, value)

    def realized_change(self) -> Optional[dict[str, float]]:
        """The realized counters' change since the last call (None: no new trade)."""
        now = self.ring.realized()
        before = self._realized
        if now["trades"] == before["trades"]:
            return None
        self._realized = now
        return {name: now[name] - before[name] for name in now}

    def new_trades(self) -> list[dict[str, Any]]:
        """Trade rows closed since the last call (the ring must keep trades)."""
        rows = self.ring.trades(self._trades_read).to_pylist()
        self._trades_read += len(rows)
        return rows

    def trade_record(self, row: Mapping[str, Any]) -> dict[str, Any]:
        """A ring trade row as the source's trade record."""
        quantity = row["quantity"]
        entry = row["entry_price"]
        return {
            "symbol": self.symbols.names.get(row["symbol"]),
            "direction": "short" if quantity < 0 else "long",
            "entry_price": None if math.isnan(entry) else entry,
            "exit_price": row["exit_price"],
            "quantity": abs(quantity),
            "entry_time": self.when(row["open_ts"]),
            "exit_time": self.when(row["close_ts"]),
            "pnl": row["pnl"],
        }

    def when(self, ns: int) -> datetime:
        """A ring time as a datetime (in the time zone of the events' datetimes)."""
        naive = _EPOCH + timedelta(microseconds=ns // 1000)
        if self.tz is None:
            return naive
        return naive.replace(tzinfo=UTC).astimezone(self.tz)

    def active_trades(self) -> int:
        return int(self.ring.stats()["open_positions"])

    def open_positions(self) -> int:
        return len(self.ring.positions())


_ORDER_REQUEST = register_event_kind("ORDER_REQUEST")


def _close_pnl(payload: Mapping[str, Any], price: float, quantity: float) -> float:
    pnl = _number(payload, "pnl", "realized_pnl")
    if pnl is not None:
        return pnl
    entry = _number(payload, "entry_price")
    exit_ = _number(payload, "exit_price") or price
    return (exit_ - entry) * quantity if entry is not None else 0.0


def _retention(policy: Any) -> str:
    if not isinstance(policy, str) or policy not in RETENTION_POLICIES:
        allowed = ", ".join(RETENTION_POLICIES)
        raise InvalidArgument(f"retention_policy must be one of {allowed}; got {policy!r}")
    return policy


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise InvalidArgument(f"{name} must be an int >= 1, got {value!r}")
    return int(value)


def _positive_number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise InvalidArgument(f"{name} must be a number > 0, got {value!r}")
    return float(value)


def _unknown_keys(where: str, given: Mapping[str, Any], allowed: Sequence[str]) -> None:
    unknown = sorted(set(given) - set(allowed))
    if unknown:
        raise InvalidArgument(
            f"{where} has unknown key(s) {', '.join(map(str, unknown))}; "
            f"allowed: {', '.join(allowed)}"
        )


# ---------------------------------------------------------------- the tracer's metrics


def trade_pnl(entry_price: float, exit_price: float, quantity: float, direction: str) -> float:
    """The pnl of a closed trade: ``long`` gains when the exit is above the entry."""
    if direction == "long":
        return (exit_price - entry_price) * quantity
    return (entry_price - exit_price) * quantity


class StreamingMetrics:
    """The source's streaming metrics: returns of successive portfolio values (Welford
    mean and variance), drawdown from the peak value (a fraction >= 0), Sharpe ratio
    annualised by ``annualization_factor`` and 0.0 below ``min_periods`` returns; trade
    counters from closed trades."""

    def __init__(
        self,
        initial_capital: float = DEFAULT_INITIAL_CAPITAL,
        current_value: Optional[float] = None,
        annualization_factor: float = DEFAULT_ANNUALIZATION,
        min_periods: int = DEFAULT_MIN_PERIODS,
    ) -> None:
        self.initial_capital = float(initial_capital)
        self.current_value = self.initial_capital if current_value is None else current_value
        self.annualization_factor = float(annualization_factor)
        self.min_periods = int(min_periods)
        self.total_return = 0.0
        self.n_trades = 0
        self.winning_trades = 0
        self.losing_trades = 0
        self.max_drawdown = 0.0
        self.current_drawdown = 0.0
        self.peak_value = 0.0
        self.n_returns = 0
        self.mean_return = 0.0
        self.m2 = 0.0
        self.total_pnl = 0.0
        self.gross_profit = 0.0
        self.gross_loss = 0.0
        self.start_time: Any = None
        self.last_update: Any = None

    def update_portfolio_value(self, value: float, timestamp: Any = None) -> None:
        """One portfolio value: a return against the previous value (the first against
        the initial capital); the first value is the first peak."""
        if self.start_time is None:
            self.start_time = timestamp or datetime.now()
            self.peak_value = value
        self.last_update = timestamp or datetime.now()
        if self.current_value > 0:
            ret = (value - self.current_value) / self.current_value
            self.n_returns += 1
            delta = ret - self.mean_return
            self.mean_return += delta / self.n_returns
            self.m2 += delta * (ret - self.mean_return)
        self.current_value = value
        if self.initial_capital > 0:
            self.total_return = (value - self.initial_capital) / self.initial_capital
        if value > self.peak_value:
            self.peak_value = value
            self.current_drawdown = 0.0
        else:
            peak = self.peak_value
            self.current_drawdown = (peak - value) / peak if peak > 0 else 0.0
            self.max_drawdown = max(self.max_drawdown, self.current_drawdown)

    def update_from_trade(
        self, entry_price: float, exit_price: float, quantity: float, direction: str
    ) -> None:
        """One closed trade given by its prices (the source's entry point)."""
        pnl = trade_pnl(entry_price, exit_price, quantity, direction)
        self.add_trades(
            {
                "trades": 1,
                "winning": int(pnl > 0),
                "losing": int(pnl < 0),
                "pnl": pnl,
                "gross_profit": pnl if pnl > 0 else 0.0,
                "gross_loss": -pnl if pnl < 0 else 0.0,
            }
        )

    def add_trades(self, change: Mapping[str, float]) -> None:
        """Closed trades as a change of the book's realized counters."""
        self.n_trades += int(change["trades"])
        self.winning_trades += int(change["winning"])
        self.losing_trades += int(change["losing"])
        self.total_pnl += change["pnl"]
        self.gross_profit += change["gross_profit"]
        self.gross_loss += change["gross_loss"]

    def sharpe_ratio(self) -> float:
        n = self.n_returns
        variance = self.m2 / (n - 1) if n > 1 else 0.0
        std = math.sqrt(variance) if variance > 0 else 0.0
        if std > 0 and n >= self.min_periods:
            return self.mean_return / std * math.sqrt(self.annualization_factor)
        return 0.0

    def win_rate(self) -> float:
        return self.winning_trades / self.n_trades if self.n_trades > 0 else 0.0

    def get_metrics(self) -> dict[str, float]:
        profit_factor = self.gross_profit / self.gross_loss if self.gross_loss > 0 else math.inf
        return {
            "sharpe_ratio": self.sharpe_ratio(),
            "total_return": self.total_return,
            "max_drawdown": self.max_drawdown,
            "current_drawdown": self.current_drawdown,
            "win_rate": self.win_rate(),
            "profit_factor": profit_factor,
            "total_trades": self.n_trades,
            "winning_trades": self.winning_trades,
            "losing_trades": self.losing_trades,
            "total_pnl": self.total_pnl,
            "gross_profit": self.gross_profit,
            "gross_loss": self.gross_loss,
            "current_value": self.current_value,
            "peak_value": self.peak_value,
        }


# ---------------------------------------------------------------- objectives


def _objective_config(value: Any) -> dict[str, Any]:
    if isinstance(value, str):
        value = {"name": value}
    if not isinstance(value, Mapping) or not isinstance(value.get("name"), str):
        raise InvalidArgument(
            f"objective_function must be a mapping with a 'name' (and optional 'params'), "
            f"got {value!r}; names: {', '.join(OBJECTIVES)}"
        )
    _unknown_keys("objective_function", value, ("name", "params"))
    params = value.get("params") or {}
    if not isinstance(params, Mapping):
        raise InvalidArgument(f"objective_function.params must be a mapping, got {params!r}")
    if value["name"] not in OBJECTIVES:
        log.warning("Unknown objective function: %s, using Sharpe ratio", value["name"])
    return {"name": value["name"], "params": dict(params)}


def objective_value(config: Mapping[str, Any], metrics: Mapping[str, Any]) -> float:
    """The objective's value from the metrics (the source's built-in functions; an
    unknown name is the Sharpe ratio)."""
    name = config["name"]
    params = config.get("params") or {}
    if name in ("sharpe_ratio", "total_return", "profit_factor", "win_rate"):
        return metrics.get(name, 0.0)
    if name == "calmar_ratio":
        drawdown = metrics.get("max_drawdown", 0)
        return metrics.get("total_return", 0) / drawdown if drawdown > 0 else 0.0
    if name == "sortino_ratio":
        multiplier = params.get("sortino_multiplier", DEFAULT_SORTINO_MULTIPLIER)
        return metrics.get("sharpe_ratio", 0.0) * multiplier
    if name == "weighted_combination":
        weights = params.get("weights", DEFAULT_WEIGHTS)
        return sum(metrics.get(metric, 0.0) * weight for metric, weight in weights.items())
    return metrics.get("sharpe_ratio", 0.0)


# ---------------------------------------------------------------- MetricsEventTracer


class MetricsEventTracer:
    """Event tracer optimized for metrics calculation (design note 002's source).

    ``config``: initial_capital (100000.0), retention_policy (trade_complete; also
    sliding_window, minimal, keep_all and the aliases all/full = keep_all, none =
    minimal), max_events (1000: the sliding window, the keep_all bound),
    objective_function ({'name': 'sharpe_ratio', 'params': {}}), custom_metrics
    (callables of the metrics dict), collection.store_equity_curve (False),
    collection.snapshot_interval (100 portfolio updates), collection.store_trades
    (True), annualization_factor (252; alias periods_per_year), min_periods (20).
    """

    def __init__(self, config: Optional[Mapping[str, Any]] = None) -> None:
        config = dict(config or {})
        _unknown_keys("MetricsEventTracer config", config, CONFIG_KEYS)
        collection = dict(config.get("collection") or {})
        _unknown_keys("collection", collection, COLLECTION_KEYS)
        self.initial_capital = float(config.get("initial_capital", DEFAULT_INITIAL_CAPITAL))
        self.retention_policy = _retention(config.get("retention_policy", "trade_complete"))
        self.max_events = _positive_int("max_events", config.get("max_events", DEFAULT_MAX_EVENTS))
        self.objective_config = _objective_config(
            config.get("objective_function", copy.deepcopy(DEFAULT_OBJECTIVE))
        )
        self.custom_metrics = list(config.get("custom_metrics") or [])
        for metric in self.custom_metrics:
            if not callable(metric):
                raise InvalidArgument(
                    f"custom_metrics must be callables of the metrics dict, got {metric!r}"
                )
        self.store_equity_curve = bool(collection.get("store_equity_curve", False))
        self.snapshot_interval = _positive_int(
            "collection.snapshot_interval",
            collection.get("snapshot_interval", DEFAULT_SNAPSHOT_INTERVAL),
        )
        self.store_trades = bool(collection.get("store_trades", True))
        factor = config.get("annualization_factor", config.get("periods_per_year"))
        self.annualization_factor = _positive_number(
            "annualization_factor", DEFAULT_ANNUALIZATION if factor is None else factor
        )
        self.min_periods = _positive_int(
            "min_periods", config.get("min_periods", DEFAULT_MIN_PERIODS)
        )
        self.clear()

    def clear(self) -> None:
        """Drop every retained event, trade and equity point; reset the metrics."""
        self._book = _Book(self.retention_policy, self.max_events, self.store_trades)
        self.metrics = StreamingMetrics(
            self.initial_capital,
            annualization_factor=self.annualization_factor,
            min_periods=self.min_periods,
        )
        self.equity_curve: list[dict[str, Any]] = []
        self.update_counter = 0
        self.last_snapshot = 0

    @property
    def ring(self) -> Any:
        """The :class:`phasekit.EventRing` holding the retained events."""
        return self._book.ring

    def trace_event(self, event: Any) -> None:
        """Process one event for the metrics, then retain it under the policy."""
        traced = self._book.add(event)
        if traced.kind == FILL or traced.kind == CLOSE:
            change = self._book.realized_change()
            if change is not None:
                self.metrics.add_trades(change)
        elif traced.kind == UPDATE and traced.value is not None:
            stamp = traced.stamp
            self.metrics.update_portfolio_value(traced.value, stamp)
            if self.store_equity_curve:
                self._snapshot(traced.value, stamp)

    def _snapshot(self, value: float, stamp: Any) -> None:
        self.update_counter += 1
        if self.update_counter >= self.last_snapshot + self.snapshot_interval:
            self.equity_curve.append(
                {
                    "timestamp": _text_time(stamp),
                    "value": value,
                    "drawdown": self.metrics.current_drawdown,
                    "total_return": self.metrics.total_return,
                }
            )
            self.last_snapshot = self.update_counter

    def get_metrics(self) -> dict[str, Any]:
        """The metrics, the event counters, the objective and the custom metrics."""
        metrics: dict[str, Any] = self.metrics.get_metrics()
        metrics["events_retained"] = len(self._book.ring)
        metrics["active_trades"] = self._book.active_trades()
        metrics["open_positions"] = self._book.open_positions()
        metrics["objective_value"] = objective_value(self.objective_config, metrics)
        metrics["objective_function"] = self.objective_config["name"]
        for metric in self.custom_metrics:
            name = getattr(metric, "__name__", "custom")
            metrics[f"custom_{name}"] = metric(metrics)
        return metrics

    @property
    def completed_trades(self) -> list[dict[str, Any]]:
        """The closed trades (when ``collection.store_trades``)."""
        if not self.store_trades:
            return []
        rows = self._book.ring.trades().to_pylist()
        return [self._book.trade_record(row) for row in rows]

    def get_results(self) -> dict[str, Any]:
        """``metrics``, ``summary``, ``trades`` (stored and any) and ``equity_curve``
        (stored and any snapshot)."""
        summary_metrics = self.metrics.get_metrics()
        results: dict[str, Any] = {
            "metrics": self.get_metrics(),
            "summary": {
                "initial_capital": self.initial_capital,
                "final_value": self.metrics.current_value,
                "total_return": self.metrics.total_return,
                "sharpe_ratio": summary_metrics["sharpe_ratio"],
                "max_drawdown": self.metrics.max_drawdown,
                "total_trades": self.metrics.n_trades,
                "win_rate": summary_metrics["win_rate"],
            },
        }
        trades = self.completed_trades
        if trades:
            results["trades"] = trades
        if self.store_equity_curve and self.equity_curve:
            results["equity_curve"] = self.equity_curve
        return results


# ---------------------------------------------------------------- the observer API


class MetricsCalculator(Protocol):
    """What :class:`MetricsObserver` needs of a calculator."""

    def update_from_trade(
        self, entry_price: float, exit_price: float, quantity: float, direction: str
    ) -> None: ...

    def update_portfolio_value(self, value: float, timestamp: Any = None) -> None: ...

    def get_metrics(self) -> dict[str, Any]: ...


class BasicMetricsCalculator:
    """The source's basic calculator: trade counters, capital moved by each trade's
    pnl, drawdown from portfolio values, Sharpe ratio of the per-trade returns."""

    def __init__(
        self,
        initial_capital: float = DEFAULT_INITIAL_CAPITAL,
        annualization_factor: float = DEFAULT_ANNUALIZATION,
    ) -> None:
        self.initial_capital = float(initial_capital)
        self.current_capital = self.initial_capital
        self.annualization_factor = float(annualization_factor)
        self.total_trades = 0
        self.winning_trades = 0
        self.losing_trades = 0
        self.total_pnl = 0.0
        self.gross_profit = 0.0
        self.gross_loss = 0.0
        self.peak_value = self.initial_capital
        self.max_drawdown = 0.0
        self.returns: list[float] = []

    def update_from_trade(
        self, entry_price: float, exit_price: float, quantity: float, direction: str
    ) -> None:
        pnl = trade_pnl(entry_price, exit_price, quantity, direction)
        self.total_trades += 1
        self.total_pnl += pnl
        if pnl > 0:
            self.winning_trades += 1
            self.gross_profit += pnl
        elif pnl < 0:
            self.losing_trades += 1
            self.gross_loss += abs(pnl)
        self.current_capital += pnl
        if self.current_capital > 0:
            self.returns.append(pnl / (self.current_capital - pnl))

    def update_portfolio_value(self, value: float, timestamp: Any = None) -> None:
        self.current_capital = value
        if value > self.peak_value:
            self.peak_value = value
        elif self.peak_value > 0:
            self.max_drawdown = max(self.max_drawdown, (self.peak_value - value) / self.peak_value)

    def get_metrics(self) -> dict[str, Any]:
        initial = self.initial_capital
        trades = self.total_trades
        metrics: dict[str, Any] = {
            "total_return": (self.current_capital - initial) / initial if initial > 0 else 0.0,
            "total_trades": trades,
            "winning_trades": self.winning_trades,
            "losing_trades": self.losing_trades,
            "win_rate": self.winning_trades / trades if trades > 0 else 0.0,
            "total_pnl": self.total_pnl,
            "gross_profit": self.gross_profit,
            "gross_loss": self.gross_loss,
            "profit_factor": (
                self.gross_profit / self.gross_loss if self.gross_loss > 0 else math.inf
            ),
            "max_drawdown": self.max_drawdown,
            "current_capital": self.current_capital,
        }
        metrics["sharpe_ratio"] = _sample_sharpe(self.returns, self.annualization_factor)
        return metrics


def _sample_sharpe(returns: Sequence[float], annualization_factor: float) -> float:
    if len(returns) < 2:
        return 0.0
    mean = sum(returns) / len(returns)
    variance = sum((r - mean) ** 2 for r in returns) / (len(returns) - 1)
    std = math.sqrt(variance) if variance > 0 else 0.0
    return mean / std * math.sqrt(annualization_factor) if std > 0 else 0.0


#: Closed trades ``MetricsObserver.get_results()`` lists (the latest ones).
OBSERVER_TRADES_LISTED = 100


class MetricsObserver:
    """An event bus observer computing metrics with a calculator: ``on_publish`` traces
    each event into an EventRing under the retention policy (``trade_complete`` keeps
    only open trades' events) and hands each closed trade of its position book to the
    calculator; ``on_delivered`` and ``on_error`` are the bus's other hooks."""

    def __init__(
        self,
        calculator: MetricsCalculator,
        retention_policy: str = "trade_complete",
        max_events: int = DEFAULT_MAX_EVENTS,
    ) -> None:
        self.calculator = calculator
        self.retention_policy = _retention(retention_policy)
        self.max_events = _positive_int("max_events", max_events)
        self._book = _Book(self.retention_policy, self.max_events, keep_trades=True)
        self.events_observed = 0
        self.trades_closed = 0
        self.completed_trades: deque[dict[str, Any]] = deque(maxlen=OBSERVER_TRADES_LISTED)
        log.info("MetricsObserver initialized with retention_policy=%r", retention_policy)

    @property
    def ring(self) -> Any:
        return self._book.ring

    @property
    def events_pruned(self) -> int:
        """Events traced and no longer retained."""
        return int(self._book.ring.stats()["evicted"])

    @property
    def active_trades(self) -> int:
        """Trades (correlation ids) with retained events."""
        return self._book.active_trades()

    def on_publish(self, event: Any) -> None:
        """Called when an event is published."""
        self.events_observed += 1
        traced = self._book.add(event)
        if traced.kind == FILL or traced.kind == CLOSE:
            for row in self._book.new_trades():
                self._close(row)
        elif traced.kind == UPDATE and traced.value is not None:
            self.calculator.update_portfolio_value(traced.value, traced.stamp)

    def _close(self, row: Mapping[str, Any]) -> None:
        record = self._book.trade_record(row)
        quantity = record["quantity"]
        exit_price = record["exit_price"]
        entry = record["entry_price"]
        direction = record["direction"]
        if entry is None:  # a POSITION_CLOSE without its open: the entry its pnl implies
            quantity = quantity or 1.0
            entry = exit_price - row["pnl"] / quantity
            direction = "long"
        self.calculator.update_from_trade(entry, exit_price, quantity, direction)
        self.trades_closed += 1
        self.completed_trades.append(
            {
                "correlation_id": self._book.keys.names.get(row["key"]),
                "symbol": record["symbol"],
                "pnl": row["pnl"],
                "event_count": row["n_events"],
                "close_time": record["exit_time"],
            }
        )

    def on_delivered(self, event: Any, handler: Any) -> None:
        """Called when an event reached a handler (nothing to do for metrics)."""

    def on_error(self, event: Any, handler: Any, error: Exception) -> None:
        """Called when a handler raised."""
        log.warning("Handler error for event %s: %s", getattr(event, "event_type", event), error)

    def _stats(self) -> dict[str, Any]:
        observed = self.events_observed
        pruned = self.events_pruned
        return {
            "events_observed": observed,
            "events_pruned": pruned,
            "active_trades": self.active_trades,
            "retention_policy": self.retention_policy,
            "memory_efficiency": pruned / observed if observed > 0 else 0.0,
        }

    def get_metrics(self) -> dict[str, Any]:
        """``{'metrics': calculator metrics with observer_stats, 'observer_stats'}``."""
        metrics = dict(self.calculator.get_metrics())
        stats = self._stats()
        metrics["observer_stats"] = stats
        return {"metrics": metrics, "observer_stats": stats}

    def get_results(self) -> dict[str, Any]:
        """Metrics, observer counters and the latest closed trades."""
        return {
            "metrics": self.calculator.get_metrics(),
            "observer_stats": {
                "events_observed": self.events_observed,
                "events_pruned": self.events_pruned,
                "active_trades": self.active_trades,
                "completed_trades": self.trades_closed,
            },
            "trades": list(self.completed_trades),
        }


# ---------------------------------------------------------------- phase configs


def _phase_defaults(phase: str) -> dict[str, Any]:
    keys = ("results_storage", "event_tracing", "retention_policy", "sliding_window_size")
    defaults = BUILTIN_WORKFLOWS["train_test_optimization"][phase]
    return {k: copy.deepcopy(defaults[k]) for k in keys if k in defaults}


class StandardPhaseConfigs:
    """Reusable phase configurations (design note 002): the defaults of phasekit's
    built-in ``train_test_optimization`` phases, updated by ``overrides``."""

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


CustomMetric = Callable[[Mapping[str, Any]], Union[float, int, None]]

__all__ = [
    "BasicMetricsCalculator",
    "MetricsEventTracer",
    "MetricsObserver",
    "StandardPhaseConfigs",
    "StreamingMetrics",
    "objective_value",
]
