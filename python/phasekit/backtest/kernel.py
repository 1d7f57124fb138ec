"""One parameter set through the backend's backtest kernel (``backtest`` of
``phasekit._core`` or ``phasekit._pure``): signals, simulation, position events and
the equity summary in one call, as numpy arrays.

``sma_crossover`` runs entirely in the kernel; other strategies (built-in or
``module:Class``) compute their targets in Python and the kernel simulates them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from phasekit.backend import backend_module
from phasekit.backtest.bars import Bars
from phasekit.backtest.portfolio import Fill, PortfolioSettings, SimResult
from phasekit.backtest.signals import as_targets
from phasekit.backtest.strategies import SmaCrossover, make_strategy


@dataclass
class KernelRun:
    """A kernel's results over one window of bars (``equity`` and ``position`` are empty
    when the run was asked for no curves)."""

    equity: np.ndarray
    position: np.ndarray
    trades: dict[str, np.ndarray]
    fills: dict[str, np.ndarray]
    events: dict[str, np.ndarray]
    summary: dict[str, Any]

    def sim_result(self) -> SimResult:
        """The same results as ``phasekit.backtest.portfolio.simulate`` returns."""
        f = self.fills
        fills = [
            Fill(int(b), float(q), float(p), float(c))
            for b, q, p, c in zip(f["bar"], f["quantity"], f["price"], f["commission"])
        ]
        return SimResult(self.equity, self.position, fills, dict(self.trades))


def _columns(batch: pa.RecordBatch) -> dict[str, np.ndarray]:
    return {name: batch.column(i).to_numpy() for i, name in enumerate(batch.schema.names)}


def _targets(bars: Bars, stop: int, strategy_type: str, params: Mapping[str, Any]) -> np.ndarray:
    strategy = make_strategy(strategy_type, dict(params))
    return as_targets(strategy.signals(bars.slice(0, stop)), (stop,))


def run_kernel(
    bars: Bars,
    start: int,
    stop: int,
    strategy_type: str,
    params: Mapping[str, Any],
    portfolio: PortfolioSettings,
    symbol_id: int = 0,
    curves: bool = True,
) -> KernelRun:
    """Signals over ``bars[:stop]``, positions inside ``[start, stop)``; equity and
    position per bar only with ``curves`` (the summary and trades always)."""
    columns: dict[str, Any] = {"ts": bars.ts, "open": bars.open, "close": bars.close}
    sma = None
    if strategy_type == "sma_crossover":
        strategy = make_strategy(strategy_type, dict(params))
        assert isinstance(strategy, SmaCrossover)
        sma = (strategy.fast, strategy.slow, strategy.short)
        columns = {k: v[:stop] for k, v in columns.items()}
    else:
        target = _targets(bars, stop, strategy_type, params)
        columns = {k: v[:stop] for k, v in columns.items()}
        columns["target"] = target
    out = backend_module().backtest(
        pa.record_batch(columns),
        start,
        stop,
        sma=sma,
        initial_capital=portfolio.initial_capital,
        fraction=portfolio.fraction,
        whole_units=portfolio.whole_units,
        commission_bps=portfolio.commission_bps,
        slippage_bps=portfolio.slippage_bps,
        symbol=symbol_id,
        curves=curves,
    )
    per_bar = out["bars"]
    empty = np.empty(0, dtype=np.float64)
    return KernelRun(
        equity=per_bar.column(0).to_numpy() if per_bar is not None else empty,
        position=per_bar.column(1).to_numpy() if per_bar is not None else empty,
        trades=_columns(out["trades"]),
        fills=_columns(out["fills"]),
        events=_columns(out["events"]),
        summary=dict(out["summary"]),
    )
