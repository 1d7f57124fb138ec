"""A block of parameter sets of one built-in strategy over one window, in one call of the
backend's block kernel (``backtest_block`` of ``phasekit._core`` or ``phasekit._pure``).

Each distinct indicator of the block is computed once and shared; each set's signals,
next-open fills, costs, positions and metrics (those of
:class:`~phasekit.backtest.metrics.StreamingMetrics`) come out as columns: one record
batch of results (a row per set), one of closed trades and one of the equity curves of
the traced sets, each naming its container.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Optional

import numpy as np
import pyarrow as pa

from phasekit._pure.backtest import BLOCK_KINDS
from phasekit.backend import backend_module
from phasekit.backtest.bars import Bars
from phasekit.backtest.portfolio import PortfolioSettings
from phasekit.backtest.strategies import MODES, STRATEGIES
from phasekit.errors import ConfigError, InvalidArgument

_NAMED = ("container_id", "window_id")


def supports_block(strategy_type: str) -> bool:
    """True for the built-in strategies the block kernel runs."""
    return strategy_type in BLOCK_KINDS


@dataclass(frozen=True)
class BlockRun:
    """What a block returns: ``results`` (container_id, window_id, the strategy's
    parameters, bars and every metric; a row per set, in the order of the sets),
    ``trades`` (container_id, window_id and the trade columns) and ``curves``
    (container_id, bar, equity, position of the traced sets)."""

    results: pa.RecordBatch
    trades: pa.RecordBatch
    curves: pa.RecordBatch
    indicators: int
    threads: int


def _defaults(kind: str) -> dict[str, object]:
    sig = inspect.signature(STRATEGIES[kind])
    return {name: p.default for name, p in sig.parameters.items()}


def params_batch(kind: str, param_sets: Sequence[Mapping[str, object]]) -> pa.RecordBatch:
    """The ``params`` columns of the block kernel from the sets' strategy parameters
    (their keyword arguments; the strategy's defaults fill what a set leaves out)."""
    if not supports_block(kind):
        raise ConfigError(
            f"strategy.type: {kind!r} has no block kernel; allowed: {', '.join(BLOCK_KINDS)}"
        )
    defaults = _defaults(kind)
    for i, params in enumerate(param_sets):
        unknown = sorted(set(params) - set(defaults))
        if unknown:
            raise ConfigError(
                f"parameter set {i}: strategy {kind!r} has no parameter {unknown[0]!r}; "
                f"allowed: {', '.join(defaults)}"
            )
    cols: dict[str, np.ndarray] = {}
    for name, dtype in BLOCK_KINDS[kind]:
        values = [params.get(name, defaults[name]) for params in param_sets]
        try:
            cols[name] = np.asarray(values, dtype=np.float64).astype(dtype)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"strategy.{name}: {exc}; expected numbers") from exc
    modes = [params.get("mode", defaults["mode"]) for params in param_sets]
    for i, mode in enumerate(modes):
        if mode not in MODES:
            raise ConfigError(
                f"parameter set {i}: strategy.mode: {mode!r} is not allowed; "
                f"use {' or '.join(MODES)}"
            )
    cols["long_short"] = np.asarray([MODES.index(str(m)) for m in modes], dtype=np.int8)
    return pa.record_batch(cols)


def _named(ids: pa.Array, window_id: str, batch: pa.RecordBatch) -> dict[str, pa.Array]:
    """The batch's columns with ``set`` replaced by container_id and window_id."""
    index = batch.column(batch.schema.get_field_index("set"))
    out: dict[str, pa.Array] = {
        "container_id": ids.take(index),
        "window_id": pa.array(np.full(batch.num_rows, window_id, dtype=object), pa.string()),
    }
    for name in batch.schema.names:
        if name != "set":
            out[name] = batch.column(batch.schema.get_field_index(name))
    return out


def _results(
    ids: pa.Array, window_id: str, params: pa.RecordBatch, batch: pa.RecordBatch
) -> pa.RecordBatch:
    named = _named(ids, window_id, batch)
    cols = {k: named[k] for k in _NAMED}
    for name in params.schema.names:
        col = params.column(params.schema.get_field_index(name))
        if name == "long_short":
            names = np.asarray(MODES, dtype=object)
            cols["mode"] = pa.array(names[col.to_numpy()], pa.string())
        else:
            cols[name] = col
    cols.update({k: v for k, v in named.items() if k not in _NAMED})
    return pa.record_batch(cols)


def _trades(ids: pa.Array, window_id: str, batch: pa.RecordBatch) -> pa.RecordBatch:
    cols = _named(ids, window_id, batch)
    utc = pa.timestamp("ns", tz="UTC")
    cols["entry_time"] = cols.pop("entry_ts").cast(utc)
    cols["exit_time"] = cols.pop("exit_ts").cast(utc)
    order = [*_NAMED, "entry_time", "exit_time"]
    order += [k for k in cols if k not in order]
    return pa.record_batch({k: cols[k] for k in order})


def _curves(ids: pa.Array, batch: pa.RecordBatch) -> pa.RecordBatch:
    cols = _named(ids, "", batch)
    del cols["window_id"]
    return pa.record_batch(cols)


def _check_ids(container_ids: Sequence[str], n_sets: int) -> pa.Array:
    if len(container_ids) != n_sets:
        raise InvalidArgument(
            f"container_ids: {len(container_ids)} ids for {n_sets} parameter sets"
        )
    return pa.array(list(container_ids), pa.string())


def run_block(
    bars: Bars,
    start: int,
    stop: int,
    strategy_type: str,
    param_sets: Sequence[Mapping[str, object]],
    portfolio: PortfolioSettings,
    container_ids: Sequence[str],
    window_id: str,
    traced: Optional[Sequence[bool]] = None,
    threads: Optional[int] = None,
) -> BlockRun:
    """Every set of ``param_sets`` (strategy keyword arguments; container
    ``container_ids[i]``) over ``bars[start:stop]``, signals over ``bars[:stop]``;
    the equity curves of the sets flagged in ``traced``. A set that cannot run fails the
    block with a ``ConfigError`` naming its container."""
    params = params_batch(strategy_type, param_sets)
    ids = _check_ids(container_ids, params.num_rows)
    columns = pa.record_batch(
        {"ts": bars.ts[:stop], "open": bars.open[:stop], "close": bars.close[:stop]}
    )
    try:
        out = backend_module().backtest_block(
            columns,
            strategy_type,
            params,
            start,
            stop,
            traced=list(traced) if traced is not None else None,
            initial_capital=portfolio.initial_capital,
            fraction=portfolio.fraction,
            whole_units=portfolio.whole_units,
            commission_bps=portfolio.commission_bps,
            slippage_bps=portfolio.slippage_bps,
            periods_per_year=bars.periods_per_year,
            threads=threads,
        )
    except ConfigError as exc:
        index = getattr(exc, "set_index", None)
        if index is None or not 0 <= index < len(container_ids):
            raise
        raise ConfigError(
            f"container {container_ids[index]} {dict(param_sets[index])}: {exc}"
        ) from exc
    return BlockRun(
        results=_results(ids, window_id, params, out["results"]),
        trades=_trades(ids, window_id, out["trades"]),
        curves=_curves(ids, out["curves"]),
        indicators=int(out["indicators"]),
        threads=int(out["threads"]),
    )
