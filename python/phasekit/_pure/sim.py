"""The numpy reference of the backtest kernel: the portfolio simulation, the SMA
crossover targets, the position events and the equity summary.

The pure-Python backend (:mod:`phasekit._pure.backtest`) runs it behind the same call
as ``phasekit._core.backtest``; :mod:`phasekit.backtest` re-exports it as the reference
implementation. It depends on nothing of phasekit but ``errors`` and ``events``.

A target position decided on the close of bar ``t`` is filled at the open of bar
``t + 1``, adjusted by slippage (basis points, against the trader) and charged a
commission (basis points of the traded notional). Position size is ``fraction`` of
equity at the fill (whole units optionally). Equity is marked to market at every
bar close. A position still open after the last bar stays open: it counts in
equity but not among closed trades.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from phasekit.errors import ConfigError
from phasekit.events import EventType


class PriceBars(Protocol):
    """What the simulation reads of bars: times and open and close prices, per bar."""

    @property
    def ts(self) -> np.ndarray: ...

    @property
    def open(self) -> np.ndarray: ...

    @property
    def close(self) -> np.ndarray: ...

    def __len__(self) -> int: ...


TRADE_COLUMNS = (
    "entry_ts",
    "exit_ts",
    "entry_price",
    "exit_price",
    "direction",
    "quantity",
    "pnl",
    "return",
    "bars_held",
)


@dataclass(frozen=True)
class PortfolioSettings:
    initial_capital: float = 100_000.0
    fraction: float = 1.0
    whole_units: bool = False
    commission_bps: float = 0.0
    slippage_bps: float = 0.0

    def __post_init__(self) -> None:
        if not self.initial_capital > 0:
            raise ConfigError(f"portfolio.initial_capital: {self.initial_capital} must be > 0")
        if not 0 < self.fraction <= 1:
            raise ConfigError(f"portfolio.fraction: {self.fraction} must be in (0, 1]")
        for name in ("commission_bps", "slippage_bps"):
            if getattr(self, name) < 0:
                raise ConfigError(f"portfolio.{name}: {getattr(self, name)} must be >= 0")


@dataclass
class Fill:
    """One executed order: bar index, signed quantity, price, commission."""

    bar: int
    quantity: float
    price: float
    commission: float


@dataclass
class SimResult:
    equity: np.ndarray
    position: np.ndarray  # signed quantity held at each bar close
    fills: list[Fill] = field(default_factory=list)
    trades: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def trade_count(self) -> int:
        return int(self.trades["pnl"].shape[0]) if self.trades else 0


def _empty_trades() -> dict[str, np.ndarray]:
    cols = {name: np.empty(0, dtype=np.float64) for name in TRADE_COLUMNS}
    for name in ("entry_ts", "exit_ts", "bars_held"):
        cols[name] = np.empty(0, dtype=np.int64)
    cols["direction"] = np.empty(0, dtype=np.int8)
    return cols


def simulate(bars: PriceBars, target: np.ndarray, settings: PortfolioSettings) -> SimResult:
    """Run ``target`` (one value in {-1, 0, 1} per bar) over ``bars``."""
    n = len(bars)
    target = np.asarray(target)
    if target.shape != (n,):
        raise ConfigError(f"strategy returned {target.shape} signals for {n} bars")
    slip = settings.slippage_bps / 1e4
    comm = settings.commission_bps / 1e4
    prev = np.concatenate(([0], target[:-1]))
    changes = np.flatnonzero((target != prev)[: n - 1] if n > 1 else [])

    cash = settings.initial_capital
    qty = 0.0
    seg_start = [0]
    seg_cash = [cash]
    seg_qty = [0.0]
    fills: list[Fill] = []
    trades: list[tuple] = []
    entry: tuple[int, float, float, float] | None = None  # bar, price, qty, commission

    for t in changes:
        bar = int(t) + 1
        want = int(target[t])
        open_px = float(bars.open[bar])
        if qty != 0.0 and entry is not None:
            side = 1.0 if qty > 0 else -1.0
            px = open_px * (1 - side * slip)
            fee = abs(qty) * px * comm
            cash += qty * px - fee
            e_bar, e_px, e_qty, e_fee = entry
            pnl = e_qty * (px - e_px) - e_fee - fee
            trades.append(
                (
                    int(bars.ts[e_bar]),
                    int(bars.ts[bar]),
                    e_px,
                    px,
                    int(side),
                    abs(e_qty),
                    pnl,
                    pnl / (abs(e_qty) * e_px),
                    bar - e_bar,
                )
            )
            fills.append(Fill(bar, -qty, px, fee))
            qty, entry = 0.0, None
        if want != 0:
            px = open_px * (1 + want * slip)
            size = settings.fraction * cash / (px * (1 + comm))
            if settings.whole_units:
                size = math.floor(size)
            if size > 0:
                q = want * size
                fee = size * px * comm
                cash -= q * px + fee
                qty, entry = q, (bar, px, q, fee)
                fills.append(Fill(bar, q, px, fee))
        seg_start.append(bar)
        seg_cash.append(cash)
        seg_qty.append(qty)

    counts = np.diff(np.append(seg_start, n))
    cash_arr = np.repeat(seg_cash, counts)
    qty_arr = np.repeat(seg_qty, counts)
    equity = cash_arr + qty_arr * bars.close
    if trades:
        cols = list(zip(*trades))
        trade_cols = {
            name: np.asarray(col, dtype=_empty_trades()[name].dtype)
            for name, col in zip(TRADE_COLUMNS, cols)
        }
    else:
        trade_cols = _empty_trades()
    return SimResult(equity=equity, position=qty_arr, fills=fills, trades=trade_cols)


def position_events(
    bars: PriceBars, result: SimResult, symbol_id: int = 0
) -> dict[str, np.ndarray]:
    """FILL, POSITION_OPEN and POSITION_CLOSE events of a simulation as event columns
    (ts, kind, key, symbol, price, quantity, value) in time order. ``key`` numbers the
    positions (the index of the trade); a close carries the trade's pnl in ``value``,
    a fill its commission as a negative ``value``."""
    rows: list[tuple[int, int, int, float, float, float]] = []
    open_key: int | None = None
    next_key = 0
    for fill in result.fills:
        ts = int(bars.ts[fill.bar])
        if open_key is None:
            open_key, next_key = next_key, next_key + 1
            rows.append((ts, EventType.FILL, open_key, fill.price, fill.quantity, -fill.commission))
            rows.append((ts, EventType.POSITION_OPEN, open_key, fill.price, fill.quantity, 0.0))
        else:
            pnl = float(result.trades["pnl"][open_key])
            rows.append((ts, EventType.FILL, open_key, fill.price, fill.quantity, -fill.commission))
            rows.append((ts, EventType.POSITION_CLOSE, open_key, fill.price, -fill.quantity, pnl))
            open_key = None
    n = len(rows)
    cols = list(zip(*rows)) if rows else [()] * 6
    return {
        "ts": np.asarray(cols[0], dtype=np.int64),
        "kind": np.asarray(cols[1], dtype=np.uint16),
        "key": np.asarray(cols[2], dtype=np.int64),
        "symbol": np.full(n, symbol_id, dtype=np.int32),
        "price": np.asarray(cols[3], dtype=np.float64),
        "quantity": np.asarray(cols[4], dtype=np.float64),
        "value": np.asarray(cols[5], dtype=np.float64),
    }


def sma(values: np.ndarray, window: int) -> np.ndarray:
    """Simple moving average; NaN for the first ``window - 1`` bars."""
    out = np.full(values.shape[0], np.nan)
    if window <= values.shape[0]:
        c = np.cumsum(np.insert(values, 0, 0.0))
        out[window - 1 :] = (c[window:] - c[:-window]) / window
    return out


def hold_states(decisions: np.ndarray) -> np.ndarray:
    """Forward-fill decisions (NaN = keep the previous state; initial state 0)."""
    idx = np.where(np.isnan(decisions), 0, np.arange(decisions.shape[0]))
    np.maximum.accumulate(idx, out=idx)
    return np.nan_to_num(decisions[idx]).astype(np.int8)


def check_sma(fast: int, slow: int) -> None:
    """The SMA crossover's windows: both at least 1, fast below slow."""
    if fast < 1 or slow < 1:
        raise ConfigError(f"strategy: fast={fast} and slow={slow} must be at least 1")
    if fast >= slow:
        raise ConfigError(f"strategy: fast ({fast}) must be smaller than slow ({slow})")


def sma_crossover_targets(close: np.ndarray, fast: int, slow: int, short: bool) -> np.ndarray:
    """Long when the fast SMA crosses above the slow one; on the cross below, flat or
    short (``short``). A cross needs the fast SMA strictly below the slow one on the
    previous bar and strictly above on this one."""
    check_sma(fast, slow)
    n = close.shape[0]
    f, s = sma(close, fast), sma(close, slow)
    above = np.zeros(n, dtype=bool)
    below = np.zeros(n, dtype=bool)
    with np.errstate(invalid="ignore"):
        above[1:] = (f[:-1] < s[:-1]) & (f[1:] > s[1:])
        below[1:] = (f[:-1] > s[:-1]) & (f[1:] < s[1:])
    decisions = np.full(n, np.nan)
    decisions[above] = 1.0
    decisions[below] = -1.0 if short else 0.0
    return hold_states(decisions)


def equity_summary(
    equity: np.ndarray, position: np.ndarray | None, last: float, peak: float
) -> dict[str, Any]:
    """What :meth:`StreamingMetrics.fold` takes from equity values that continue from
    equity ``last`` and running peak ``peak``: the count, mean and sum of squared
    deviations of their simple returns, the sum of squared negative returns, the new
    peak, the worst drawdown (<= 0), the last equity and the bars with a position."""
    eq = np.asarray(equity, dtype=np.float64)
    in_market = int(np.count_nonzero(position)) if position is not None else 0
    if eq.shape[0] == 0:
        return {
            "n": 0,
            "mean": 0.0,
            "m2": 0.0,
            "down_sq": 0.0,
            "peak": float(peak),
            "max_drawdown": 0.0,
            "last": float(last),
            "bars_in_market": in_market,
        }
    prev = np.concatenate(([last], eq[:-1]))
    rets = eq / prev - 1.0
    mean = float(rets.mean())
    peaks = np.maximum.accumulate(np.maximum(eq, peak))
    return {
        "n": int(rets.shape[0]),
        "mean": mean,
        "m2": float(((rets - mean) ** 2).sum()),
        "down_sq": float((np.minimum(rets, 0.0) ** 2).sum()),
        "peak": float(peaks[-1]),
        "max_drawdown": min(0.0, float((eq / peaks - 1.0).min())),
        "last": float(eq[-1]),
        "bars_in_market": in_market,
    }
