"""The backtest kernel of the pure-Python backend: the numpy reference of
``phasekit.backtest`` (:mod:`phasekit._pure.sim`) behind the same call as
``phasekit._core.backtest``.

``backtest(bars, start, stop, sma=...)`` computes signals over ``bars[:stop]`` (an SMA
crossover, or the ``target`` column), simulates positions inside ``[start, stop)``
(a decision on the close of bar ``t`` fills at the open of bar ``t + 1``) and returns
record batches of equity and position per bar (``None`` unless ``curves``), closed
trades, fills and position events, plus the summary of the equity curve that
``StreamingMetrics.fold`` takes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import pyarrow as pa

from phasekit._pure.sim import (
    PortfolioSettings,
    equity_summary,
    position_events,
    simulate,
    sma_crossover_targets,
)
from phasekit.errors import ConfigError, InvalidArgument

_TS_TYPES = "int64 or timestamp[ns]"


def _table(bars: Any) -> pa.Table:
    if not (hasattr(bars, "__arrow_c_stream__") or hasattr(bars, "__arrow_c_array__")):
        raise InvalidArgument(
            "expected an Arrow record batch or table (an object with __arrow_c_stream__ or "
            f"__arrow_c_array__, e.g. pyarrow or polars), got {type(bars).__name__}"
        )
    if isinstance(bars, pa.Table):
        return bars
    if isinstance(bars, pa.RecordBatch):
        return pa.Table.from_batches([bars])
    return pa.table(bars)


def _column(table: pa.Table, name: str, dtype: str) -> np.ndarray:
    if name not in table.column_names:
        raise InvalidArgument(f"bars: no column {name!r}; columns are {table.column_names}")
    col = table.column(name)
    typ = col.type
    if dtype == "ts":
        ok = pa.types.is_int64(typ) or (pa.types.is_timestamp(typ) and typ.unit == "ns")
        expected = _TS_TYPES
    else:
        ok = typ == pa.from_numpy_dtype(np.dtype(dtype))
        expected = dtype
    if not ok:
        raise InvalidArgument(f"bars: column {name!r} is {typ}, expected {expected}")
    if col.null_count:
        raise InvalidArgument(f"bars: column {name!r} has {col.null_count} nulls")
    if dtype == "ts":
        col = col.cast(pa.int64())
    return np.asarray(col.to_numpy())


@dataclass(frozen=True)
class _Bars:
    """The columns the simulation reads (:class:`phasekit._pure.sim.PriceBars`)."""

    ts: np.ndarray
    open: np.ndarray
    close: np.ndarray

    def __len__(self) -> int:
        return int(self.ts.shape[0])

    def slice(self, start: int, stop: int) -> _Bars:
        return _Bars(self.ts[start:stop], self.open[start:stop], self.close[start:stop])


def _bars(table: pa.Table, stop: int) -> _Bars:
    ts = _column(table, "ts", "ts")[:stop]
    open_ = _column(table, "open", "float64")[:stop]
    close = _column(table, "close", "float64")[:stop]
    return _Bars(ts, open_, close)


def _span(start: int, stop: Optional[int], n: int) -> tuple[int, int]:
    stop = n if stop is None else stop
    if start < 0 or stop < 0 or start >= stop or stop > n:
        raise InvalidArgument(
            f"window {start}..{stop} is not inside the {n} bars (need start < stop <= bars)"
        )
    return start, stop


def _sma_targets(close: np.ndarray, fast: int, slow: int, long_short: bool) -> np.ndarray:
    return sma_crossover_targets(close, fast, slow, long_short)


def sma_crossover_signals(bars: Any, fast: int, slow: int, long_short: bool = False) -> Any:
    """The int8 targets of an SMA crossover over the ``close`` column, as a record batch
    with one column ``target``."""
    close = _column(_table(bars), "close", "float64")
    target = _sma_targets(close, int(fast), int(slow), bool(long_short))
    return pa.record_batch({"target": pa.array(target, pa.int8())})


def _check_targets(target: np.ndarray) -> None:
    bad = np.flatnonzero((target < -1) | (target > 1))
    if bad.size:
        bar = int(bad[0])
        raise ConfigError(
            f"strategy returned target {int(target[bar])} at bar {bar}; allowed: -1, 0, 1"
        )


def backtest(
    bars: Any,
    start: int = 0,
    stop: Optional[int] = None,
    *,
    sma: Optional[tuple[int, int, bool]] = None,
    initial_capital: float = 100_000.0,
    fraction: float = 1.0,
    whole_units: bool = False,
    commission_bps: float = 0.0,
    slippage_bps: float = 0.0,
    symbol: int = 0,
    curves: bool = True,
) -> dict[str, Any]:
    """See the module docstring; the same call as ``phasekit._core.backtest``."""
    settings = PortfolioSettings(
        initial_capital=float(initial_capital),
        fraction=float(fraction),
        whole_units=bool(whole_units),
        commission_bps=float(commission_bps),
        slippage_bps=float(slippage_bps),
    )
    table = _table(bars)
    start, stop = _span(int(start), stop if stop is None else int(stop), table.num_rows)
    warm = _bars(table, stop)
    if sma is None:
        target = _column(table, "target", "int8")[:stop]
    else:
        fast, slow, short = sma
        target = _sma_targets(warm.close, int(fast), int(slow), bool(short))
    _check_targets(target)
    window = warm.slice(start, stop)
    result = simulate(window, target[start:], settings)
    events = position_events(window, result, int(symbol))
    fills = result.fills
    return {
        "bars": pa.record_batch({"equity": result.equity, "position": result.position})
        if curves
        else None,
        "trades": pa.record_batch(result.trades),
        "fills": pa.record_batch(
            {
                "bar": pa.array([f.bar for f in fills], pa.int64()),
                "quantity": pa.array([f.quantity for f in fills], pa.float64()),
                "price": pa.array([f.price for f in fills], pa.float64()),
                "commission": pa.array([f.commission for f in fills], pa.float64()),
            }
        ),
        "events": pa.record_batch(events),
        "summary": equity_summary(
            result.equity, result.position, settings.initial_capital, settings.initial_capital
        ),
    }
