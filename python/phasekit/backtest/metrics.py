"""Performance metrics (DESIGN.md "Metrics"): a vectorised reference and a streaming tracer.

* total_return = final / initial equity - 1
* sharpe_ratio = mean / std (ddof=1) of simple period returns x sqrt(periods per year)
* sortino_ratio = mean / downside deviation (root mean square of negative returns, over
  all periods) x sqrt(periods per year)
* max_drawdown = min over time of equity / running peak - 1 (a value <= 0)
* win_rate = winning closed trades / closed trades; trade_count; profit_factor = gross
  profit / gross loss (None when there is no loss); exposure = share of bars with a position

Ratios that are undefined (no variation, no trades) are ``0.0``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from phasekit._pure.sim import equity_summary


def trade_metrics(pnl: np.ndarray) -> dict[str, Any]:
    """``win_rate``, ``trade_count`` and ``profit_factor`` of closed trades' pnl (the
    metrics a container's tracer and a block's rows share)."""
    count = int(pnl.shape[0])
    wins = float(pnl[pnl > 0].sum())
    losses = float(-pnl[pnl < 0].sum())
    return {
        "win_rate": float((pnl > 0).sum() / count) if count else 0.0,
        "trade_count": count,
        "profit_factor": (wins / losses) if losses > 0 else None,
    }


def compute_metrics(
    equity: np.ndarray,
    initial_capital: float,
    periods_per_year: float,
    trade_pnl: np.ndarray,
    position: np.ndarray | None = None,
) -> dict[str, Any]:
    """The reference metrics from a full equity curve (one value per bar close)."""
    eq = np.concatenate(([initial_capital], np.asarray(equity, dtype=np.float64)))
    rets = eq[1:] / eq[:-1] - 1.0
    ann = math.sqrt(periods_per_year)
    sd = float(rets.std(ddof=1)) if rets.shape[0] > 1 else 0.0
    mean = float(rets.mean()) if rets.shape[0] else 0.0
    down = float(np.sqrt(np.mean(np.minimum(rets, 0.0) ** 2))) if rets.shape[0] else 0.0
    peak = np.maximum.accumulate(eq)
    out: dict[str, Any] = {
        "total_return": float(eq[-1] / initial_capital - 1.0),
        "sharpe_ratio": mean / sd * ann if sd > 0 else 0.0,
        "sortino_ratio": mean / down * ann if down > 0 else 0.0,
        "max_drawdown": float((eq / peak - 1.0).min()),
        "exposure": float(np.mean(position != 0))
        if position is not None and len(position)
        else 0.0,
        "final_equity": float(eq[-1]),
    }
    out.update(trade_metrics(np.asarray(trade_pnl, dtype=np.float64)))
    return out


class StreamingMetrics:
    """The same metrics computed incrementally from equity updates and closed trades,
    so a container needs no equity curve in memory unless it keeps one by choice."""

    def __init__(self, initial_capital: float, periods_per_year: float) -> None:
        self.initial = float(initial_capital)
        self.ppy = float(periods_per_year)
        self.last = self.initial
        self.peak = self.initial
        self.mdd = 0.0
        self.n = 0
        self.mean = 0.0
        self.m2 = 0.0
        self.down_sq = 0.0
        self.bars_in_market = 0
        self.pnl: list[float] = []

    def update_equity(self, equity: np.ndarray, position: np.ndarray | None = None) -> None:
        """Fold a batch of consecutive bar-close equity values (and positions) in."""
        self.fold(equity_summary(equity, position, self.last, self.peak))

    def fold(self, summary: Mapping[str, Any]) -> None:
        """Fold in the :func:`equity_summary` of the equity values that follow (the
        backends' backtest kernels return one with their results)."""
        n_b = int(summary["n"])
        if n_b == 0:
            return
        # Chan et al. parallel combination of mean and M2
        mean_b = float(summary["mean"])
        n = self.n + n_b
        delta = mean_b - self.mean
        self.mean += delta * n_b / n
        self.m2 += float(summary["m2"]) + delta * delta * self.n * n_b / n
        self.n = n
        self.down_sq += float(summary["down_sq"])
        self.mdd = min(self.mdd, float(summary["max_drawdown"]))
        self.peak = float(summary["peak"])
        self.last = float(summary["last"])
        self.bars_in_market += int(summary["bars_in_market"])

    def on_trade(self, pnl: float) -> None:
        self.pnl.append(float(pnl))

    def result(self) -> dict[str, Any]:
        ann = math.sqrt(self.ppy)
        sd = math.sqrt(self.m2 / (self.n - 1)) if self.n > 1 else 0.0
        down = math.sqrt(self.down_sq / self.n) if self.n else 0.0
        out: dict[str, Any] = {
            "total_return": self.last / self.initial - 1.0,
            "sharpe_ratio": self.mean / sd * ann if sd > 0 else 0.0,
            "sortino_ratio": self.mean / down * ann if down > 0 else 0.0,
            "max_drawdown": self.mdd,
            "exposure": self.bars_in_market / self.n if self.n else 0.0,
            "final_equity": self.last,
        }
        out.update(trade_metrics(np.asarray(self.pnl, dtype=np.float64)))
        return out


# ---------------------------------------------------------------- across containers

AVERAGED_METRICS = ("sharpe_ratio", "total_return", "max_drawdown", "win_rate")
DISTRIBUTION_METRICS = ("total_return", "sharpe_ratio", "max_drawdown", "final_equity")
PERCENTILES = (5, 25, 50, 75, 95)


def average_metrics(metrics: Sequence[Mapping[str, Any]]) -> dict[str, float | None]:
    """``avg_<name>`` of :data:`AVERAGED_METRICS` over containers (None where no value)."""
    out: dict[str, float | None] = {}
    for key in AVERAGED_METRICS:
        vals = [m[key] for m in metrics if m.get(key) is not None]
        out[f"avg_{key}"] = float(np.mean(vals)) if vals else None
    return out


def stitch_equity(
    curves: Sequence[tuple[np.ndarray, np.ndarray]], initial: float
) -> tuple[np.ndarray, np.ndarray]:
    """Chain (timestamps, equity) curves that each start from ``initial`` into one
    curve: each continues from the last value of the one before."""
    ts_parts, eq_parts, level = [], [], float(initial)
    for ts, eq in curves:
        if eq.shape[0] == 0:
            continue
        scaled = np.asarray(eq, dtype=np.float64) / initial * level
        ts_parts.append(np.asarray(ts))
        eq_parts.append(scaled)
        level = float(scaled[-1])
    if not ts_parts:
        return np.empty(0, dtype="datetime64[ns]"), np.empty(0, dtype=np.float64)
    return np.concatenate(ts_parts), np.concatenate(eq_parts)


def bootstrap_metrics(
    rets: np.ndarray,
    pnl: np.ndarray,
    method: str,
    seed: int,
    sim: int,
    initial: float,
    periods_per_year: float,
) -> dict[str, Any]:
    """Metrics of one bootstrap simulation, seeded by ``(seed, sim)``: bar returns
    (``returns``) or trade pnls (``trades``) drawn with replacement."""
    rng = np.random.default_rng([seed, sim])
    if method == "trades":
        if pnl.shape[0] == 0:
            return compute_metrics(np.array([initial]), initial, periods_per_year, pnl)
        sample = rng.choice(pnl, size=pnl.shape[0], replace=True)
        equity = initial + np.cumsum(sample)
        ppy = periods_per_year * pnl.shape[0] / max(1, rets.shape[0])
        return compute_metrics(equity, initial, ppy, sample)
    sample = rng.choice(rets, size=rets.shape[0], replace=True)
    equity = initial * np.cumprod(1.0 + sample)
    return compute_metrics(equity, initial, periods_per_year, pnl)


BOOTSTRAP_CELLS = 1 << 20
"""The most draws (simulations x draws each) :func:`bootstrap_block` holds at once: its
simulations are computed in chunks of at most this many."""


def bootstrap_block(
    rets: np.ndarray,
    pnl: np.ndarray,
    method: str,
    seed: int,
    sims: Sequence[int],
    initial: float,
    periods_per_year: float,
) -> pa.Table:
    """The metrics of :func:`bootstrap_metrics` for every simulation of ``sims``, a row
    each in their order (a column per metric, as :func:`compute_metrics` names and orders
    them; ``profit_factor`` null where it is None). Each simulation draws what
    :func:`bootstrap_metrics` draws for it (a generator seeded by ``(seed, sim)``); the
    metrics are computed over the simulations at once, on a 2-D array of their draws, by
    the same operations in the same order per simulation: the values are equal, not
    merely close."""
    rets = np.asarray(rets, dtype=np.float64)
    pnl = np.asarray(pnl, dtype=np.float64)
    sims = list(sims)
    if method == "trades":
        values, ppy = pnl, periods_per_year * pnl.shape[0] / max(1, rets.shape[0])
    else:
        values, ppy = rets, periods_per_year
    per = max(1, BOOTSTRAP_CELLS // max(1, values.shape[0]))
    parts = [
        _chunk_metrics(_draws(values, seed, sims[lo : lo + per]), method, pnl, initial, ppy)
        for lo in range(0, max(1, len(sims)), per)
    ]
    columns = {name: np.concatenate([c[name] for c in parts]) for name in parts[0]}
    defined = columns.pop("_profit_factor_defined")
    return pa.table(
        {
            **{k: pa.array(v) for k, v in columns.items() if k != "profit_factor"},
            "profit_factor": pa.array(columns["profit_factor"], mask=~defined),
        }
    )


def _draws(values: np.ndarray, seed: int, sims: Sequence[int]) -> np.ndarray:
    """A row per simulation: what it draws from ``values`` (as :func:`bootstrap_metrics`)."""
    sample = np.empty((len(sims), values.shape[0]), dtype=np.float64)
    if values.shape[0] == 0:
        return sample  # nothing to draw (no trades: bootstrap_metrics draws nothing either)
    for row, sim in enumerate(sims):
        rng = np.random.default_rng([seed, sim])
        sample[row] = rng.choice(values, size=values.shape[0], replace=True)
    return sample


def _chunk_metrics(
    sample: np.ndarray, method: str, pnl: np.ndarray, initial: float, ppy: float
) -> dict[str, np.ndarray]:
    """The metrics of simulations that drew ``sample`` (a row each)."""
    m, n = sample.shape
    if method == "trades" and pnl.shape[0] == 0:
        # no trades to draw: every simulation is the flat curve
        eq = np.full((m, 2), float(initial))
        return _equity_columns(eq, initial, ppy, _trade_columns(sample))
    # each row: the initial capital, then the equity after each draw (in place, the
    # operations of bootstrap_metrics: initial + cumsum, initial * cumprod(1 + r))
    eq = np.empty((m, n + 1), dtype=np.float64)
    eq[:, 0] = initial
    curve = eq[:, 1:]
    if method == "trades":
        np.cumsum(sample, axis=1, out=curve)
        curve += initial
        return _equity_columns(eq, initial, ppy, _trade_columns(sample))
    np.add(sample, 1.0, out=curve)
    np.cumprod(curve, axis=1, out=curve)
    curve *= initial
    trades = {k: np.repeat(v, m) for k, v in _trade_columns(pnl[np.newaxis, :]).items()}
    return _equity_columns(eq, initial, ppy, trades)


def _equity_columns(
    eq: np.ndarray, initial: float, ppy: float, trades: dict[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """:func:`compute_metrics` of each row of ``eq`` (the initial capital, then the
    equity at each bar close; without positions), with the trade metrics ``trades``."""
    m, n = eq.shape[0], eq.shape[1] - 1
    rets = np.divide(eq[:, 1:], eq[:, :-1])
    rets -= 1.0
    ann = math.sqrt(ppy)
    zeros = np.zeros(m)
    sd = rets.std(axis=1, ddof=1) if n > 1 else zeros
    mean = rets.mean(axis=1) if n else zeros
    if n:
        np.minimum(rets, 0.0, out=rets)
        rets *= rets
        down = np.sqrt(np.mean(rets, axis=1))
    else:
        down = zeros
    drawdown = np.maximum.accumulate(eq, axis=1)
    np.divide(eq, drawdown, out=drawdown)
    drawdown -= 1.0
    with np.errstate(divide="ignore", invalid="ignore"):
        sharpe = np.where(sd > 0, mean / sd * ann, 0.0)
        sortino = np.where(down > 0, mean / down * ann, 0.0)
    return {
        "total_return": eq[:, -1] / initial - 1.0,
        "sharpe_ratio": sharpe,
        "sortino_ratio": sortino,
        "max_drawdown": drawdown.min(axis=1),
        "exposure": zeros,
        "final_equity": eq[:, -1].copy(),
        **trades,
    }


def _trade_columns(pnl: np.ndarray) -> dict[str, np.ndarray]:
    """:func:`trade_metrics` of each row of ``pnl`` (``_profit_factor_defined``: where
    ``profit_factor`` is not None)."""
    m, count = pnl.shape
    wins = _masked_row_sums(pnl, pnl > 0)
    losses = -_masked_row_sums(pnl, pnl < 0)
    defined = losses > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        factor = np.where(defined, wins / np.where(defined, losses, 1.0), np.nan)
    return {
        "win_rate": (pnl > 0).sum(axis=1) / count if count else np.zeros(m),
        "trade_count": np.full(m, count, dtype=np.int64),
        "profit_factor": factor,
        "_profit_factor_defined": defined,
    }


def _masked_row_sums(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Per row, the sum of its values where ``mask`` holds, equal to summing that row's
    selected values as a 1-D array (``values[i][mask[i]].sum()``): the rows with ``k``
    selected values are summed together as a ``(rows, k)`` array, which numpy sums row by
    row in the order it sums a 1-D array of ``k``."""
    out = np.zeros(values.shape[0], dtype=np.float64)
    counts = mask.sum(axis=1)
    for k in np.unique(counts):
        if k == 0:
            continue
        rows = np.flatnonzero(counts == k)
        picked = values[rows][mask[rows]].reshape(rows.shape[0], int(k))
        out[rows] = picked.sum(axis=1)
    return out


def segment_trade_metrics(pnl: np.ndarray, counts: np.ndarray) -> dict[str, np.ndarray]:
    """:func:`trade_metrics` of each of ``len(counts)`` sets whose closed trades' pnl
    follow one another in ``pnl`` (set ``i`` owns the next ``counts[i]`` values), the
    same values: ``win_rate``, ``trade_count``, ``profit_factor`` (NaN where
    :func:`trade_metrics` gives None) and ``_profit_factor_defined``."""
    owner = np.repeat(np.arange(counts.shape[0]), counts)
    wins = _segment_sums(pnl[pnl > 0], owner[pnl > 0], counts.shape[0])
    losses = -_segment_sums(pnl[pnl < 0], owner[pnl < 0], counts.shape[0])
    won = np.bincount(owner[pnl > 0], minlength=counts.shape[0])
    defined = losses > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        factor = np.where(defined, wins / np.where(defined, losses, 1.0), np.nan)
        win_rate = np.where(counts > 0, won / np.maximum(counts, 1), 0.0)
    return {
        "win_rate": win_rate,
        "trade_count": counts.astype(np.int64),
        "profit_factor": factor,
        "_profit_factor_defined": defined,
    }


def _segment_sums(values: np.ndarray, owner: np.ndarray, n: int) -> np.ndarray:
    """Per set ``0..n-1``, the sum of its values (``owner``: the set of each value, in
    order), equal to summing that set's values as a 1-D array: the sets with ``k``
    values are summed together as a ``(sets, k)`` array (see :func:`_masked_row_sums`)."""
    out = np.zeros(n, dtype=np.float64)
    counts = np.bincount(owner, minlength=n)
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    for k in np.unique(counts):
        if k == 0:
            continue
        rows = np.flatnonzero(counts == k)
        out[rows] = values[starts[rows, None] + np.arange(int(k))].sum(axis=1)
    return out


def metric_distribution(
    metrics: Sequence[Mapping[str, Any]], extra: Sequence[str] = ()
) -> dict[str, dict[str, float]]:
    """:func:`column_distribution` of the metrics of simulations given one mapping each."""
    names = dict.fromkeys([*DISTRIBUTION_METRICS, *extra])
    return column_distribution(metric_columns_of(metrics, names), extra)


def metric_columns_of(
    metrics: Sequence[Mapping[str, Any]], names: Iterable[str]
) -> dict[str, np.ndarray]:
    """The metrics ``names`` of several mappings as float64 columns, NaN where a value is
    missing (None)."""
    out = {}
    for key in names:
        values = [m.get(key) for m in metrics]
        out[key] = np.array([np.nan if v is None else v for v in values], dtype=float)
    return out


def column_distribution(
    columns: Mapping[str, np.ndarray], extra: Sequence[str] = ()
) -> dict[str, dict[str, float]]:
    """Percentiles (:data:`PERCENTILES`), mean and std (ddof 1) of each of
    :data:`DISTRIBUTION_METRICS` (and the metrics ``extra``, such as the objective) over
    simulations, from a float64 column per metric (a value per simulation; missing and
    non-finite values are left out)."""
    out: dict[str, dict[str, float]] = {}
    for key in dict.fromkeys([*DISTRIBUTION_METRICS, *extra]):
        column = columns.get(key)
        if column is None:
            continue
        vals = np.asarray(column, dtype=float)
        vals = vals[np.isfinite(vals)]
        if vals.size == 0:
            continue
        pct = np.percentile(vals, PERCENTILES)
        out[key] = {
            "mean": float(vals.mean()),
            "std": float(vals.std(ddof=1)) if vals.size > 1 else 0.0,
            **{f"p{p}": float(v) for p, v in zip(PERCENTILES, pct)},
        }
    return out


def trade_stats(pnl: np.ndarray) -> dict[str, float]:
    """What closed trades contribute to the trade metrics: count, winners, gross profit
    and gross loss (a positive number); :func:`combine_trade_stats` adds them up."""
    pnl = np.asarray(pnl, dtype=np.float64)
    return {
        "count": int(pnl.shape[0]),
        "wins": int((pnl > 0).sum()),
        "gross_profit": float(pnl[pnl > 0].sum()),
        "gross_loss": float(-pnl[pnl < 0].sum()),
    }


def combine_trade_stats(parts: Sequence[Mapping[str, float]]) -> dict[str, Any]:
    """``trade_count``, ``win_rate`` and ``profit_factor`` of the trades of several
    :func:`trade_stats` together (the definitions of :func:`compute_metrics`)."""
    count = int(sum(p["count"] for p in parts))
    wins = int(sum(p["wins"] for p in parts))
    profit = float(sum(p["gross_profit"] for p in parts))
    loss = float(sum(p["gross_loss"] for p in parts))
    return {
        "trade_count": count,
        "win_rate": wins / count if count else 0.0,
        "profit_factor": profit / loss if loss > 0 else None,
    }


def annualised_return(total_return: float, n_bars: int, periods_per_year: float) -> float:
    """``(1 + total_return) ** (periods_per_year / n_bars) - 1`` (0 for no bars; -1 for a
    total loss)."""
    if n_bars <= 0:
        return 0.0
    if total_return <= -1.0:
        return -1.0
    return float((1.0 + total_return) ** (periods_per_year / n_bars) - 1.0)
