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

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import pyarrow as pa

from phasekit._pure.sim import (
    PortfolioSettings,
    check_sma,
    equity_summary,
    position_events,
    simulate,
    sma,
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


def _column(table: pa.Table, name: str, dtype: str, what: str = "bars") -> np.ndarray:
    if name not in table.column_names:
        raise InvalidArgument(f"{what}: no column {name!r}; columns are {table.column_names}")
    col = table.column(name)
    typ = col.type
    if dtype == "ts":
        ok = pa.types.is_int64(typ) or (pa.types.is_timestamp(typ) and typ.unit == "ns")
        expected = _TS_TYPES
    else:
        ok = typ == pa.from_numpy_dtype(np.dtype(dtype))
        expected = dtype
    if not ok:
        raise InvalidArgument(f"{what}: column {name!r} is {typ}, expected {expected}")
    if col.null_count:
        raise InvalidArgument(f"{what}: column {name!r} has {col.null_count} nulls")
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


# ---------------------------------------------------------------- a block of sets

# strategy kind -> its parameter columns (int64 windows, float64 levels); every kind also
# reads the int8 column ``long_short``
BLOCK_KINDS: dict[str, tuple[tuple[str, str], ...]] = {
    "sma_crossover": (("fast", "int64"), ("slow", "int64")),
    "momentum": (("lookback", "int64"), ("threshold", "float64")),
    "mean_reversion": (("window", "int64"), ("entry_z", "float64"), ("exit_z", "float64")),
}


def _required(names: str, typ: pa.DataType) -> list[pa.Field]:
    return [pa.field(name, typ, nullable=False) for name in names.split()]


_I64, _F64 = pa.int64(), pa.float64()
BLOCK_RESULTS = pa.schema(
    _required("set bars", _I64)
    + _required(
        "total_return sharpe_ratio sortino_ratio max_drawdown exposure final_equity win_rate",
        _F64,
    )
    + _required("trade_count", _I64)
    + [pa.field("profit_factor", _F64, nullable=True)]
)
BLOCK_TRADES = pa.schema(
    _required("set entry_ts exit_ts", _I64)
    + _required("entry_price exit_price", _F64)
    + _required("direction", pa.int8())
    + _required("quantity pnl return", _F64)
    + _required("bars_held", _I64)
)
BLOCK_CURVES = pa.schema(_required("set bar", _I64) + _required("equity position", _F64))
# cells (sets x bars) of one chunk of sets: bounds the memory of the 2-D arrays
_CHUNK_CELLS = 1 << 21


class _SetError(ConfigError):
    """A parameter set that cannot run, with its index in the block (``set_index``)."""

    def __init__(self, index: int, why: str) -> None:
        super().__init__(f"parameter set {index}: {why}")
        self.set_index = index


def _block_params(kind: str, params: Any) -> dict[str, np.ndarray]:
    if kind not in BLOCK_KINDS:
        allowed = "; ".join(
            f"{k} ({', '.join([*(c for c, _ in cols), 'long_short'])})"
            for k, cols in BLOCK_KINDS.items()
        )
        raise ConfigError(f"strategy.type: {kind!r} has no block kernel; allowed: {allowed}")
    table = _table(params)
    cols = {"long_short": _column(table, "long_short", "int8", "params") != 0}
    for name, dtype in BLOCK_KINDS[kind]:
        cols[name] = _column(table, name, dtype, "params")
    return cols


def _check_sets(kind: str, p: dict[str, np.ndarray]) -> None:
    """The first set that cannot run fails the block (the messages of strategies.py)."""
    if kind == "sma_crossover":
        bad = np.flatnonzero((p["fast"] < 1) | (p["slow"] < 1) | (p["fast"] >= p["slow"]))
        if bad.size:
            i = int(bad[0])
            try:
                check_sma(int(p["fast"][i]), int(p["slow"][i]))
            except ConfigError as exc:
                raise _SetError(i, str(exc)) from None
    elif kind == "momentum":
        bad = np.flatnonzero(p["lookback"] < 1)
        if bad.size:
            i = int(bad[0])
            raise _SetError(i, f"strategy.lookback: {int(p['lookback'][i])} must be at least 1")
    else:
        bad = np.flatnonzero(p["window"] < 2)
        if bad.size:
            i = int(bad[0])
            raise _SetError(i, f"strategy.window: {int(p['window'][i])} must be at least 2")


def _momentum(close: np.ndarray, lookback: int) -> np.ndarray:
    out = np.zeros(close.shape[0])
    if lookback < close.shape[0]:
        out[lookback:] = close[lookback:] / close[:-lookback] - 1.0
    return out


def _zscore(close: np.ndarray, window: int) -> np.ndarray:
    mean = sma(close, window)
    sq = sma(close * close, window)
    std = np.sqrt(np.maximum(sq - mean * mean, 0.0))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(std > 0, (close - mean) / std, np.nan)


def _indicators(kind: str, p: dict[str, np.ndarray], close: np.ndarray) -> dict[int, np.ndarray]:
    """Each distinct indicator of the block (keyed by its length), computed once."""
    if kind == "sma_crossover":
        lengths = np.unique(np.concatenate([p["fast"], p["slow"]]))
        return {int(n): sma(close, int(n)) for n in lengths}
    if kind == "momentum":
        return {int(n): _momentum(close, int(n)) for n in np.unique(p["lookback"])}
    return {int(n): _zscore(close, int(n)) for n in np.unique(p["window"])}


def _stack(ind: dict[int, np.ndarray], lengths: np.ndarray) -> np.ndarray:
    return np.stack([ind[int(n)] for n in lengths])


def _hold_rows(decisions: np.ndarray) -> np.ndarray:
    """:func:`hold_states` of each row."""
    idx = np.where(np.isnan(decisions), 0, np.arange(decisions.shape[1]))
    np.maximum.accumulate(idx, axis=1, out=idx)
    return np.nan_to_num(np.take_along_axis(decisions, idx, axis=1)).astype(np.int8)


def _block_targets(
    kind: str, p: dict[str, np.ndarray], ind: dict[int, np.ndarray], rows: slice
) -> np.ndarray:
    """The targets (sets x bars) of the sets ``rows``, as strategies.py computes them."""
    short = p["long_short"][rows][:, None]
    with np.errstate(invalid="ignore"):
        if kind == "sma_crossover":
            f, s = _stack(ind, p["fast"][rows]), _stack(ind, p["slow"][rows])
            dec = np.full(f.shape, np.nan)
            above = (f[:, :-1] < s[:, :-1]) & (f[:, 1:] > s[:, 1:])
            below = (f[:, :-1] > s[:, :-1]) & (f[:, 1:] < s[:, 1:])
            dec[:, 1:][above] = 1.0
            dec[:, 1:] = np.where(below, np.where(short, -1.0, 0.0), dec[:, 1:])
            return _hold_rows(dec)
        if kind == "momentum":
            r = _stack(ind, p["lookback"][rows])
            thr = p["threshold"][rows][:, None]
            out = np.zeros(r.shape, dtype=np.int8)
            out[r > thr] = 1
            out[short & (r < -thr)] = -1
            return out
        z = _stack(ind, p["window"][rows])
        entry, exit_ = p["entry_z"][rows][:, None], p["exit_z"][rows][:, None]
        dec = np.full(z.shape, np.nan)
        dec[np.abs(z) <= exit_] = 0.0
        dec[z < -entry] = 1.0
        dec[short & (z > entry)] = -1.0
        return _hold_rows(dec)


@dataclass
class _Books:
    """The portfolios of a chunk of sets, one entry per set (``simulate`` of sim.py,
    vectorised over the sets: every set's k-th change is filled in one step)."""

    cash: np.ndarray
    qty: np.ndarray
    e_bar: np.ndarray
    e_px: np.ndarray
    e_qty: np.ndarray
    e_fee: np.ndarray

    @classmethod
    def start(cls, k: int, capital: float) -> _Books:
        return cls(
            cash=np.full(k, capital),
            qty=np.zeros(k),
            e_bar=np.zeros(k, np.int64),
            e_px=np.zeros(k),
            e_qty=np.zeros(k),
            e_fee=np.zeros(k),
        )


def _close_positions(
    books: _Books, s: np.ndarray, bar: np.ndarray, o: np.ndarray, slip: float, comm: float
) -> dict[str, np.ndarray]:
    """Closes the open positions of sets ``s`` at the opens ``o`` of bars ``bar``."""
    q = books.qty[s]
    side = np.where(q > 0, 1.0, -1.0)
    px = o * (1 - side * slip)
    fee = np.abs(q) * px * comm
    books.cash[s] += q * px - fee
    e_px, e_qty = books.e_px[s], books.e_qty[s]
    pnl = e_qty * (px - e_px) - books.e_fee[s] - fee
    books.qty[s] = 0.0
    return {
        "set": s,
        "entry_bar": books.e_bar[s],
        "exit_bar": bar,
        "entry_price": e_px,
        "exit_price": px,
        "direction": side.astype(np.int8),
        "quantity": np.abs(e_qty),
        "pnl": pnl,
        "return": pnl / (np.abs(e_qty) * e_px),
        "bars_held": bar - books.e_bar[s],
    }


def _open_positions(
    books: _Books,
    s: np.ndarray,
    bar: np.ndarray,
    want: np.ndarray,
    o: np.ndarray,
    settings: PortfolioSettings,
) -> None:
    slip = settings.slippage_bps / 1e4
    comm = settings.commission_bps / 1e4
    px = o * (1 + want * slip)
    size = settings.fraction * books.cash[s] / (px * (1 + comm))
    if settings.whole_units:
        size = np.floor(size)
    ok = size > 0
    s, bar, px, size = s[ok], bar[ok], px[ok], size[ok]
    q = want[ok] * size
    fee = size * px * comm
    books.cash[s] -= q * px + fee
    books.qty[s] = q
    books.e_bar[s], books.e_px[s], books.e_qty[s], books.e_fee[s] = bar, px, q, fee


def _simulate_rows(
    target: np.ndarray, open_: np.ndarray, settings: PortfolioSettings
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[dict[str, np.ndarray]]]:
    """Fills of every set (rows of ``target``, window bars): the changes as (set, bar)
    with the cash and quantity after each, and the closed trades."""
    k, m = target.shape
    prev = np.concatenate([np.zeros((k, 1), np.int8), target[:, :-1]], axis=1)
    rows, cols = np.nonzero((target != prev)[:, : m - 1])
    bar = cols + 1
    want = target[rows, cols].astype(np.float64)
    counts = np.bincount(rows, minlength=k)
    rank = np.arange(rows.shape[0]) - (np.cumsum(counts) - counts)[rows]
    order = np.argsort(rank, kind="stable")
    edges = np.searchsorted(rank[order], np.arange(int(counts.max(initial=0)) + 1))
    books = _Books.start(k, settings.initial_capital)
    post_cash, post_qty = np.empty(rows.shape[0]), np.empty(rows.shape[0])
    slip, comm = settings.slippage_bps / 1e4, settings.commission_bps / 1e4
    trades = []
    for lo, hi in itertools.pairwise(edges):
        sel = order[lo:hi]
        s, b, w = rows[sel], bar[sel], want[sel]
        o = open_[b]
        closing = books.qty[s] != 0.0
        if closing.any():
            trades.append(_close_positions(books, s[closing], b[closing], o[closing], slip, comm))
        opening = w != 0
        if opening.any():
            _open_positions(books, s[opening], b[opening], w[opening], o[opening], settings)
        post_cash[sel], post_qty[sel] = books.cash[s], books.qty[s]
    return rows, bar, post_cash, post_qty, trades


def _forward(
    k: int, m: int, rows: np.ndarray, bar: np.ndarray, values: np.ndarray, first: float
) -> np.ndarray:
    """Per bar of each row: the value set at its last change (``first`` before any)."""
    grid = np.full((k, m), first)
    grid[rows, bar] = values
    mark = np.zeros((k, m), dtype=bool)
    mark[rows, bar] = True
    idx = np.where(mark, np.arange(m), 0)
    np.maximum.accumulate(idx, axis=1, out=idx)
    return np.take_along_axis(grid, idx, axis=1)


def _fold_rows(
    equity: np.ndarray, position: np.ndarray, capital: float, ppy: float
) -> dict[str, np.ndarray]:
    """``StreamingMetrics`` folded once with each row's :func:`equity_summary`, then
    ``result()`` (the equity metrics)."""
    k, n = equity.shape
    prev = np.concatenate([np.full((k, 1), capital), equity[:, :-1]], axis=1)
    rets = equity / prev - 1.0
    mean_b = rets.mean(axis=1)
    m2 = ((rets - mean_b[:, None]) ** 2).sum(axis=1)
    down_sq = (np.minimum(rets, 0.0) ** 2).sum(axis=1)
    peaks = np.maximum.accumulate(np.maximum(equity, capital), axis=1)
    mdd = np.minimum(0.0, (equity / peaks - 1.0).min(axis=1))
    mean = 0.0 + mean_b * n / n
    ann = math.sqrt(ppy)
    sd = np.sqrt(m2 / (n - 1)) if n > 1 else np.zeros(k)
    down = np.sqrt(down_sq / n)
    with np.errstate(invalid="ignore", divide="ignore"):
        sharpe = np.where(sd > 0, mean / sd * ann, 0.0)
        sortino = np.where(down > 0, mean / down * ann, 0.0)
    last = equity[:, -1]
    return {
        "total_return": last / capital - 1.0,
        "sharpe_ratio": sharpe,
        "sortino_ratio": sortino,
        "max_drawdown": mdd,
        "exposure": np.count_nonzero(position, axis=1) / n,
        "final_equity": last,
    }


def _trade_rows(k: int, trades: dict[str, np.ndarray]) -> dict[str, Any]:
    s, pnl = trades["set"], trades["pnl"]
    count = np.bincount(s, minlength=k)
    won = np.bincount(s, weights=pnl > 0, minlength=k)
    profit = np.bincount(s, weights=np.where(pnl > 0, pnl, 0.0), minlength=k)
    loss = np.bincount(s, weights=np.where(pnl < 0, -pnl, 0.0), minlength=k)
    with np.errstate(invalid="ignore", divide="ignore"):
        return {
            "win_rate": np.where(count > 0, won / np.maximum(count, 1), 0.0),
            "trade_count": count.astype(np.int64),
            "profit_factor": pa.array(profit / np.where(loss > 0, loss, 1.0), mask=~(loss > 0)),
        }


def _concat_trades(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    if not parts:
        return {f.name: np.empty(0, f.type.to_pandas_dtype()) for f in BLOCK_TRADES} | {
            "entry_bar": np.empty(0, np.int64),
            "exit_bar": np.empty(0, np.int64),
        }
    cols = {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}
    order = np.lexsort((cols["exit_bar"], cols["set"]))
    return {name: col[order] for name, col in cols.items()}


def _run_chunk(
    target: np.ndarray,
    window: _Bars,
    settings: PortfolioSettings,
    ppy: float,
    keep: np.ndarray,
) -> tuple[dict[str, Any], dict[str, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    k, m = target.shape
    rows, bar, post_cash, post_qty, parts = _simulate_rows(target, window.open, settings)
    cash = _forward(k, m, rows, bar, post_cash, settings.initial_capital)
    qty = _forward(k, m, rows, bar, post_qty, 0.0)
    equity = cash + qty * window.close
    metrics = _fold_rows(equity, qty, settings.initial_capital, ppy)
    trades = _concat_trades(parts)
    metrics.update(_trade_rows(k, trades))
    trades["entry_ts"] = window.ts[trades.pop("entry_bar")]
    trades["exit_ts"] = window.ts[trades.pop("exit_bar")]
    return metrics, trades, (equity[keep], qty[keep])


def _traced_flags(traced: Optional[list[bool]], n: int) -> np.ndarray:
    if traced is None or len(traced) == 0:
        return np.zeros(n, dtype=bool)
    if len(traced) != n:
        raise InvalidArgument(
            f"traced: {len(traced)} flags for {n} parameter sets (give one per set or none)"
        )
    return np.asarray(traced, dtype=bool)


def _block_batches(
    results: list[dict[str, Any]],
    trades: list[dict[str, np.ndarray]],
    curves: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
    n_sets: int,
    bars: int,
) -> dict[str, pa.RecordBatch]:
    if not results:
        return {
            name: pa.RecordBatch.from_pylist([], schema=schema)
            for name, schema in (
                ("results", BLOCK_RESULTS),
                ("trades", BLOCK_TRADES),
                ("curves", BLOCK_CURVES),
            )
        }
    cols: dict[str, Any] = {"set": np.arange(n_sets, dtype=np.int64)}
    cols["bars"] = np.full(n_sets, bars, dtype=np.int64)
    for f in BLOCK_RESULTS:
        if f.name not in cols:
            parts = [r[f.name] for r in results]
            cols[f.name] = (
                pa.concat_arrays(parts) if f.name == "profit_factor" else np.concatenate(parts)
            )
    trade_cols = {f.name: np.concatenate([t[f.name] for t in trades]) for f in BLOCK_TRADES}
    sets = np.concatenate([c[0] for c in curves])
    eq = np.concatenate([c[1] for c in curves]) if curves else np.empty((0, bars))
    pos = np.concatenate([c[2] for c in curves]) if curves else np.empty((0, bars))
    curve_cols = {
        "set": np.repeat(sets, bars),
        "bar": np.tile(np.arange(bars, dtype=np.int64), sets.shape[0]),
        "equity": eq.reshape(-1),
        "position": pos.reshape(-1),
    }
    return {
        "results": pa.record_batch(cols, schema=BLOCK_RESULTS),
        "trades": pa.record_batch(trade_cols, schema=BLOCK_TRADES),
        "curves": pa.record_batch(curve_cols, schema=BLOCK_CURVES),
    }


def _settings(
    initial_capital: float,
    fraction: float,
    whole_units: bool,
    commission_bps: float,
    slippage_bps: float,
) -> PortfolioSettings:
    return PortfolioSettings(
        initial_capital=float(initial_capital),
        fraction=float(fraction),
        whole_units=bool(whole_units),
        commission_bps=float(commission_bps),
        slippage_bps=float(slippage_bps),
    )


def _check_threads(threads: Optional[int]) -> None:
    if threads is not None and int(threads) < 1:
        raise InvalidArgument(f"threads: {threads} must be at least 1")


def _run_sets(
    targets: Callable[[slice], np.ndarray],
    n_sets: int,
    warm: _Bars,
    start: int,
    settings: PortfolioSettings,
    ppy: float,
    keep: np.ndarray,
) -> dict[str, Any]:
    """The fold of every set in chunks: ``targets(rows)`` gives the targets of the sets
    ``rows`` over the window (sets x window bars)."""
    stop = len(warm)
    window = warm.slice(start, stop)
    chunk = max(1, _CHUNK_CELLS // stop)
    results, trades, curves = [], [], []
    for lo in range(0, n_sets, chunk):
        rows = slice(lo, min(n_sets, lo + chunk))
        metrics, chunk_trades, (eq, pos) = _run_chunk(
            targets(rows), window, settings, ppy, keep[rows]
        )
        chunk_trades["set"] = chunk_trades["set"] + lo
        results.append(metrics)
        trades.append(chunk_trades)
        curves.append((np.flatnonzero(keep[rows]) + lo, eq, pos))
    return _block_batches(results, trades, curves, n_sets, stop - start)


def backtest_block(
    bars: Any,
    kind: str,
    params: Any,
    start: int = 0,
    stop: Optional[int] = None,
    *,
    traced: Optional[list[bool]] = None,
    initial_capital: float = 100_000.0,
    fraction: float = 1.0,
    whole_units: bool = False,
    commission_bps: float = 0.0,
    slippage_bps: float = 0.0,
    periods_per_year: float = 252.0,
    threads: Optional[int] = None,
) -> dict[str, Any]:
    """Every parameter set (a row of ``params``) of the strategy ``kind`` over
    ``bars[start:stop]``; the same call as ``phasekit._core.backtest_block``. The sets
    are vectorised with numpy in one thread (``threads`` is checked, and 1 is used)."""
    settings = _settings(initial_capital, fraction, whole_units, commission_bps, slippage_bps)
    p = _block_params(kind, params)
    table = _table(bars)
    start, stop = _span(int(start), stop if stop is None else int(stop), table.num_rows)
    _check_threads(threads)
    n_sets = int(p["long_short"].shape[0])
    keep = _traced_flags(traced, n_sets)
    _check_sets(kind, p)
    warm = _bars(table, stop)
    ind = _indicators(kind, p, warm.close)

    def targets(rows: slice) -> np.ndarray:
        return _block_targets(kind, p, ind, rows)[:, start:]

    out = _run_sets(targets, n_sets, warm, start, settings, float(periods_per_year), keep)
    out["indicators"] = len(ind)
    out["threads"] = 1
    return out


def _target_rows(signals: Any, n_sets: int, stop: int) -> np.ndarray:
    """The ``target`` column of ``signals`` as sets x ``stop`` rows, each checked."""
    target = _column(_table(signals), "target", "int8", "signals")
    if n_sets * stop != target.shape[0]:
        raise InvalidArgument(
            f"signals: {target.shape[0]} targets for {n_sets} parameter sets of {stop} bars "
            f"(expected one row of {stop} targets per set)"
        )
    rows = target.reshape(n_sets, stop)
    if rows.size and (int(rows.min()) < -1 or int(rows.max()) > 1):
        i = int(np.flatnonzero(((rows < -1) | (rows > 1)).any(axis=1))[0])
        try:
            _check_targets(rows[i])
        except ConfigError as exc:
            raise _SetError(i, str(exc)) from None
    return rows


def backtest_block_signals(
    bars: Any,
    signals: Any,
    sets: int,
    start: int = 0,
    stop: Optional[int] = None,
    *,
    traced: Optional[list[bool]] = None,
    initial_capital: float = 100_000.0,
    fraction: float = 1.0,
    whole_units: bool = False,
    commission_bps: float = 0.0,
    slippage_bps: float = 0.0,
    periods_per_year: float = 252.0,
    threads: Optional[int] = None,
) -> dict[str, Any]:
    """``sets`` sets whose targets are the int8 column ``target`` of ``signals`` (one
    row of ``stop`` targets per set, set after set) over ``bars[start:stop]``; the same
    call as ``phasekit._core.backtest_block_signals``."""
    settings = _settings(initial_capital, fraction, whole_units, commission_bps, slippage_bps)
    _check_threads(threads)
    n_sets = int(sets)
    if n_sets < 0:
        raise InvalidArgument(f"sets: {n_sets} must be at least 0")
    keep = _traced_flags(traced, n_sets)
    table = _table(bars)
    start, stop = _span(int(start), stop if stop is None else int(stop), table.num_rows)
    warm = _bars(table, stop)
    rows = _target_rows(signals, n_sets, stop)

    def targets(chunk: slice) -> np.ndarray:
        return rows[chunk, start:]

    out = _run_sets(targets, n_sets, warm, start, settings, float(periods_per_year), keep)
    out["indicators"] = 0
    out["threads"] = 1
    return out
