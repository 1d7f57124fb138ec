"""The portfolio simulation of the reference backtest and the PORTFOLIO_UPDATE events.

The simulation (fills at the next bar's open, slippage, commission, sizing, marking to
market) is the numpy reference in :mod:`phasekit._pure.sim`, re-exported here.
"""

from __future__ import annotations

import numpy as np

from phasekit._pure.sim import (
    TRADE_COLUMNS,
    Fill,
    PortfolioSettings,
    SimResult,
    position_events,
    simulate,
)
from phasekit.backtest.bars import Bars


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


__all__ = [
    "TRADE_COLUMNS",
    "Fill",
    "PortfolioSettings",
    "SimResult",
    "portfolio_updates",
    "position_events",
    "simulate",
]
