"""The reference backtest: bars, strategies, a portfolio simulation and metrics.

Containers of the ``backtest`` topology call into this layer; it knows nothing of
stores, catalogs or workflows.
"""

from __future__ import annotations

from phasekit.backtest.bars import Bars, load_bars, synthetic_bars
from phasekit.backtest.metrics import StreamingMetrics, compute_metrics
from phasekit.backtest.portfolio import PortfolioSettings, SimResult, simulate
from phasekit.backtest.strategies import STRATEGIES, Strategy, make_strategy
from phasekit.registry import METRIC_NAMES

__all__ = [
    "METRIC_NAMES",
    "STRATEGIES",
    "Bars",
    "PortfolioSettings",
    "SimResult",
    "Strategy",
    "StreamingMetrics",
    "compute_metrics",
    "load_bars",
    "make_strategy",
    "simulate",
    "synthetic_bars",
]
