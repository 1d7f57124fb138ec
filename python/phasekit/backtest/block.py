"""A block of parameter sets of one strategy over one window, in one call of the
backend's block kernel (``backtest_block`` or ``backtest_block_signals`` of
``phasekit._core`` or ``phasekit._pure``).

For a built-in strategy (:func:`run_block`) each distinct indicator of the block is
computed once and shared, and the kernel computes every set's signals. For a user
strategy (``module:Class``, :func:`run_block_signals`) the targets of all sets come from
:func:`~phasekit.backtest.signals.block_signals` (the class's vectorised
``signals_block``, or its per-set ``signals`` stacked) and the kernel folds them. Either
way the next-open fills, costs, positions and metrics (those of
:class:`~phasekit.backtest.metrics.StreamingMetrics`) come out as columns: one record
batch of results (a row per set), one of closed trades and one of the equity curves of
the traced sets, each naming its container.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import pyarrow as pa

from phasekit._pure.backtest import BLOCK_KINDS
from phasekit.backend import backend_module
from phasekit.backtest.bars import Bars
from phasekit.backtest.portfolio import PortfolioSettings
from phasekit.backtest.setcolumns import SetColumns
from phasekit.backtest.signals import BlockParams, StrategyRef, block_params, signals_of
from phasekit.backtest.strategies import MODES, STRATEGIES
from phasekit.errors import ConfigError, InvalidArgument

_NAMED = ("container_id", "window_id")


def supports_block(strategy_type: str) -> bool:
    """True for the strategies a block runs: the built-ins with a block kernel and user
    strategies (``module:Class``), whose targets the kernel folds."""
    return strategy_type in BLOCK_KINDS or _is_user(strategy_type)


def _is_user(strategy_type: str) -> bool:
    return ":" in strategy_type


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
    if kind not in BLOCK_KINDS:
        raise ConfigError(
            f"strategy.type: {kind!r} has no block kernel; allowed: {', '.join(BLOCK_KINDS)} "
            "(other strategies give their targets to run_block_signals)"
        )
    defaults = _defaults(kind)
    key_sets = [param_sets.keys] if isinstance(param_sets, SetColumns) else param_sets
    for i, params in enumerate(key_sets):
        unknown = sorted(set(params) - set(defaults))
        if unknown:
            raise ConfigError(
                f"parameter set {i}: strategy {kind!r} has no parameter {unknown[0]!r}; "
                f"allowed: {', '.join(defaults)}"
            )

    def values(name: str) -> list[object]:
        if isinstance(param_sets, SetColumns):
            return param_sets.values(name, defaults[name])
        return [params.get(name, defaults[name]) for params in param_sets]

    cols: dict[str, np.ndarray] = {}
    for name, dtype in BLOCK_KINDS[kind]:
        try:
            cols[name] = np.asarray(values(name), dtype=np.float64).astype(dtype)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"strategy.{name}: {exc}; expected numbers") from exc
    modes = values("mode")
    allowed = np.fromiter(map(MODES.__contains__, modes), dtype=bool, count=len(modes))
    if not allowed.all():
        i = int(np.argmin(allowed))
        raise ConfigError(
            f"parameter set {i}: strategy.mode: {modes[i]!r} is not allowed; "
            f"use {' or '.join(MODES)}"
        )
    codes = np.fromiter(map(MODES.index, map(str, modes)), dtype=np.int8, count=len(modes))
    cols["long_short"] = codes
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


def _builtin_params(params: pa.RecordBatch) -> dict[str, pa.Array]:
    """The parameter columns of a built-in block's results (``long_short`` as ``mode``)."""
    cols: dict[str, pa.Array] = {}
    for name in params.schema.names:
        col = params.column(params.schema.get_field_index(name))
        if name == "long_short":
            names = np.asarray(MODES, dtype=object)
            cols["mode"] = pa.array(names[col.to_numpy()], pa.string())
        else:
            cols[name] = col
    return cols


def _user_params(block: BlockParams) -> dict[str, pa.Array]:
    """The parameter columns of a user strategy's block: Arrow's type for each column,
    text where the values have none in common."""
    cols: dict[str, pa.Array] = {}
    for name, values in block.columns.items():
        try:
            cols[name] = pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError):
            cols[name] = pa.array(list(map(str, values)), pa.string())
    return cols


def _results(
    ids: pa.Array, window_id: str, params: Mapping[str, pa.Array], batch: pa.RecordBatch
) -> pa.RecordBatch:
    named = _named(ids, window_id, batch)
    clash = sorted(set(params) & set(named))
    if clash:
        raise ConfigError(
            f"strategy parameter {clash[0]!r} has the name of a result column; results "
            f"hold {', '.join(named)} besides the parameters"
        )
    cols = {k: named[k] for k in _NAMED}
    cols.update(params)
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
    block with a ``ConfigError`` naming its container. A user strategy
    (``module:Class``) runs as :func:`run_block_signals`."""
    if _is_user(strategy_type):
        return run_block_signals(
            bars,
            start,
            stop,
            strategy_type,
            param_sets,
            portfolio,
            container_ids,
            window_id,
            traced,
            threads,
        )
    params = params_batch(strategy_type, param_sets)
    ids = _check_ids(container_ids, params.num_rows)
    with _naming(container_ids, param_sets):
        out = backend_module().backtest_block(
            _bar_columns(bars, stop),
            strategy_type,
            params,
            start,
            stop,
            **_kernel_options(bars, portfolio, traced, threads),
        )
    return _block_run(ids, window_id, _builtin_params(params), out)


def run_block_signals(
    bars: Bars,
    start: int,
    stop: int,
    strategy: StrategyRef,
    param_sets: Sequence[Mapping[str, object]],
    portfolio: PortfolioSettings,
    container_ids: Sequence[str],
    window_id: str,
    traced: Optional[Sequence[bool]] = None,
    threads: Optional[int] = None,
) -> BlockRun:
    """:func:`run_block` for any strategy (``module:Class``, a built-in's name or a
    strategy class): the targets of every set over ``bars[:stop]`` come from
    :func:`~phasekit.backtest.signals.block_signals` (the class's ``signals_block``, or
    its ``signals`` per set), and the backend's ``backtest_block_signals`` folds them
    over ``bars[start:stop]`` as the built-in block folds its own. Results carry the
    sets' parameters (the constructor's defaults filled in) as columns."""
    ids = _check_ids(container_ids, len(param_sets))
    with _naming(container_ids, param_sets):
        block = block_params(strategy, param_sets)
        targets = signals_of(block, bars.slice(0, stop))
        out = backend_module().backtest_block_signals(
            _bar_columns(bars, stop),
            pa.record_batch({"target": pa.array(targets.reshape(-1), pa.int8())}),
            block.size,
            start,
            stop,
            **_kernel_options(bars, portfolio, traced, threads),
        )
    return _block_run(ids, window_id, _user_params(block), out)


def _bar_columns(bars: Bars, stop: int) -> pa.RecordBatch:
    return pa.record_batch(
        {"ts": bars.ts[:stop], "open": bars.open[:stop], "close": bars.close[:stop]}
    )


def _kernel_options(
    bars: Bars,
    portfolio: PortfolioSettings,
    traced: Optional[Sequence[bool]],
    threads: Optional[int],
) -> dict[str, object]:
    return {
        "traced": list(traced) if traced is not None else None,
        "initial_capital": portfolio.initial_capital,
        "fraction": portfolio.fraction,
        "whole_units": portfolio.whole_units,
        "commission_bps": portfolio.commission_bps,
        "slippage_bps": portfolio.slippage_bps,
        "periods_per_year": bars.periods_per_year,
        "threads": threads,
    }


@contextmanager
def _naming(
    container_ids: Sequence[str], param_sets: Sequence[Mapping[str, object]]
) -> Iterator[None]:
    """A ``ConfigError`` of one set (``set_index``) re-raised naming its container; any
    other exception of one set gets a note naming it."""
    try:
        yield
    except Exception as exc:
        index = getattr(exc, "set_index", None)
        if not isinstance(index, int) or not 0 <= index < len(container_ids):
            raise
        where = f"container {container_ids[index]} {dict(param_sets[index])}"
        if not isinstance(exc, ConfigError):
            exc.add_note(where)
            raise
        raise ConfigError(f"{where}: {exc}") from exc


def _block_run(
    ids: pa.Array, window_id: str, params: Mapping[str, pa.Array], out: Mapping[str, Any]
) -> BlockRun:
    """The kernel's batches (``backtest_block``'s dict) naming containers and window."""
    return BlockRun(
        results=_results(ids, window_id, params, out["results"]),
        trades=_trades(ids, window_id, out["trades"]),
        curves=_curves(ids, out["curves"]),
        indicators=int(out["indicators"]),
        threads=int(out["threads"]),
    )
