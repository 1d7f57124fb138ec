"""The portfolio simulation of the reference backtest.

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

import numpy as np

from phasekit.backtest.bars import Bars
from phasekit.errors import ConfigError

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


def simulate(bars: Bars, target: np.ndarray, settings: PortfolioSettings) -> SimResult:
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


def position_events(bars: Bars, result: SimResult, symbol_id: int = 0) -> dict[str, np.ndarray]:
    """FILL, POSITION_OPEN and POSITION_CLOSE events of a simulation as event columns
    (ts, kind, key, symbol, price, quantity, value) in time order. ``key`` numbers the
    positions (the index of the trade); a close carries the trade's pnl in ``value``,
    a fill its commission as a negative ``value``."""
    from phasekit.events import EventType

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


def portfolio_updates(bars: Bars, result: SimResult, symbol_id: int = 0) -> dict[str, np.ndarray]:
    """One PORTFOLIO_UPDATE event per bar close: price = close, quantity = position held,
    value = equity."""
    from phasekit.events import EventType

    n = len(bars)
    return {
        "ts": bars.ts,
        "kind": np.full(n, int(EventType.PORTFOLIO_UPDATE), dtype=np.uint16),
        "key": np.full(n, -1, dtype=np.int64),
        "symbol": np.full(n, symbol_id, dtype=np.int32),
        "price": bars.close,
        "quantity": result.position,
        "value": result.equity,
    }
