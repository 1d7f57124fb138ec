"""Metrics against hand computations written here from their definitions (DESIGN.md
"Metrics"; sortino as phasekit.backtest.metrics defines it), in plain Python: no call to
the metric helpers or the kernels' summaries, so a wrong formula there cannot agree
with itself. The backtest case is traded by hand too: its equity and trades are
literals worked out bar by bar."""

from __future__ import annotations

import math
from types import ModuleType
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from phasekit.backtest.metrics import StreamingMetrics, compute_metrics

PPY = 252.0


def hand_metrics(
    initial: float, equity: list[float], pnl: list[float], position: list[float]
) -> dict[str, Any]:
    """Every metric from its definition, one loop per metric."""
    curve = [initial, *equity]
    rets = [curve[i] / curve[i - 1] - 1 for i in range(1, len(curve))]
    n = len(rets)
    mean = sum(rets) / n
    std = math.sqrt(sum((r - mean) ** 2 for r in rets) / (n - 1))  # ddof = 1
    downside = math.sqrt(sum(min(r, 0.0) ** 2 for r in rets) / n)  # over all periods
    worst, peak = 0.0, curve[0]
    for value in curve:
        peak = max(peak, value)
        worst = min(worst, value / peak - 1)
    wins = [p for p in pnl if p > 0]
    losses = [p for p in pnl if p < 0]
    return {
        "total_return": curve[-1] / initial - 1,
        "sharpe_ratio": mean / std * math.sqrt(PPY),
        "sortino_ratio": mean / downside * math.sqrt(PPY),
        "max_drawdown": worst,
        "win_rate": len(wins) / len(pnl),
        "trade_count": len(pnl),
        "profit_factor": sum(wins) / -sum(losses) if losses else None,
        "exposure": sum(1 for q in position if q != 0) / len(position),
        "final_equity": curve[-1],
    }


def assert_metrics(got: dict[str, Any], want: dict[str, Any]) -> None:
    assert set(got) == set(want)
    for key, value in want.items():
        if value is None or isinstance(value, int):
            assert got[key] == value, key
        else:
            assert got[key] == pytest.approx(value, rel=1e-12, abs=1e-15), key


# A curve that moves on its first bar, with a new peak after a drawdown, a flat bar and a deeper second drawdown;
# trades with a win, two losses and a zero-pnl trade (not a win); long and short bars.
EQUITY = [1050.0, 1100.0, 1100.0, 990.0, 1210.0, 1150.0, 968.0, 1331.0]
PNL = [100.0, -40.0, 0.0, 250.0, -85.0]
POSITION = [0.0, 5.0, 5.0, -3.0, 0.0, 0.0, 2.0, 2.0]


def test_the_hand_computation_is_what_it_claims() -> None:
    """The hand formulas on numbers small enough to check on paper."""
    m = hand_metrics(100.0, [110.0, 99.0, 121.0], [5.0, -5.0, 0.0], [0.0, 1.0, 1.0])
    assert m["total_return"] == pytest.approx(0.21)
    assert m["max_drawdown"] == pytest.approx(99 / 110 - 1)
    rets = [0.1, -0.1, 121 / 99 - 1]
    assert m["sortino_ratio"] == pytest.approx(
        (sum(rets) / 3) / math.sqrt(0.01 / 3) * math.sqrt(PPY)
    )
    assert (m["win_rate"], m["profit_factor"], m["exposure"]) == (1 / 3, 1.0, 2 / 3)


def test_reference_metrics_equal_the_hand_computation() -> None:
    got = compute_metrics(np.array(EQUITY), 1000.0, PPY, np.array(PNL), np.array(POSITION))
    assert_metrics(got, hand_metrics(1000.0, EQUITY, PNL, POSITION))


@pytest.mark.parametrize("chunks", [[8], [1, 7], [3, 1, 4], [2, 2, 2, 2]])
def test_streaming_metrics_equal_the_hand_computation(chunks: list[int]) -> None:
    m = StreamingMetrics(1000.0, PPY)
    at = 0
    for size in chunks:
        m.update_equity(np.array(EQUITY[at : at + size]), np.array(POSITION[at : at + size]))
        at += size
    for pnl in PNL:
        m.on_trade(pnl)
    assert_metrics(m.result(), hand_metrics(1000.0, EQUITY, PNL, POSITION))


def test_undefined_ratios_are_zero_and_no_loss_has_no_profit_factor() -> None:
    flat = compute_metrics(np.full(4, 500.0), 500.0, PPY, np.array([3.0]), np.zeros(4))
    assert (flat["sharpe_ratio"], flat["sortino_ratio"], flat["max_drawdown"]) == (0.0, 0.0, 0.0)
    assert (flat["win_rate"], flat["trade_count"], flat["profit_factor"]) == (1.0, 1, None)
    none = compute_metrics(np.full(4, 500.0), 500.0, PPY, np.array([]), np.zeros(4))
    assert (none["win_rate"], none["trade_count"], none["profit_factor"]) == (0.0, 0, None)


# ------------------------------------------------------------------ a backtest by hand
# capital 1000, whole units, no costs; target decided on the close of bar t, filled at
# the open of bar t + 1:
#  bar 1 buy 100 @ 10 (cash 0)            bar 3 sell 100 @ 12: pnl +200, cash 1200
#  bar 4 short 100 @ 12 (cash 2400)       bar 6 cover 100 @ 15: pnl -300, cash 900,
#                                               then buy 60 @ 15 (cash 0)
#  bar 8 sell 60 @ 15: pnl 0, cash 900
OPEN = [10.0, 10.0, 12.0, 12.0, 12.0, 13.0, 15.0, 15.0, 15.0]
CLOSE = [10.0, 11.0, 12.0, 11.0, 13.0, 14.0, 15.0, 16.0, 15.0]
TARGET = [1, 1, 0, -1, -1, 1, 1, 0, 0]
HAND_EQUITY = [1000.0, 1100.0, 1200.0, 1200.0, 1100.0, 1000.0, 900.0, 960.0, 900.0]
HAND_POSITION = [0.0, 100.0, 100.0, 0.0, -100.0, -100.0, 60.0, 60.0, 0.0]
HAND_PNL = [200.0, -300.0, 0.0]


def test_hand_traded_backtest_and_its_metrics(backend: ModuleType) -> None:
    batch = pa.record_batch(
        {
            "ts": pa.array(np.arange(9) * 3_600_000_000_000, pa.int64()),
            "open": OPEN,
            "close": CLOSE,
            "target": pa.array(TARGET, pa.int8()),
        }
    )
    out = backend.backtest(batch, initial_capital=1000.0, whole_units=True)
    assert out["bars"].column("equity").to_pylist() == HAND_EQUITY
    assert out["bars"].column("position").to_pylist() == HAND_POSITION
    trades = out["trades"]
    assert trades.column("pnl").to_pylist() == HAND_PNL
    assert trades.column("direction").to_pylist() == [1, -1, 1]
    # the metrics a container reports: the kernel's summary folded, trades added
    m = StreamingMetrics(1000.0, PPY)
    m.fold(out["summary"])
    for pnl in trades.column("pnl").to_pylist():
        m.on_trade(pnl)
    assert_metrics(m.result(), hand_metrics(1000.0, HAND_EQUITY, HAND_PNL, HAND_POSITION))
