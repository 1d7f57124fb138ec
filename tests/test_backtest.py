"""The reference backtest: hand-computed trades and metrics on tiny series."""

from __future__ import annotations

import math
from types import ModuleType

import numpy as np
import pyarrow as pa
import pytest

from phasekit.backtest import (
    Bars,
    PortfolioSettings,
    StreamingMetrics,
    compute_metrics,
    make_strategy,
    simulate,
    synthetic_bars,
)
from phasekit.errors import ConfigError

DAY = 86_400_000_000_000


def bars_from(close: list[float], open_: list[float] | None = None) -> Bars:
    c = np.asarray(close, dtype=float)
    o = np.asarray(open_ if open_ is not None else close, dtype=float)
    ts = np.arange(len(c), dtype=np.int64) * DAY
    return Bars("T", ts, o, np.maximum(o, c), np.minimum(o, c), c, np.ones(len(c)))


def test_signal_on_close_fills_next_open() -> None:
    bars = bars_from([10, 11, 12, 13, 14], open_=[10, 10.5, 11.5, 12.5, 13.5])
    target = np.array([0, 1, 1, 0, 0])
    res = simulate(bars, target, PortfolioSettings(initial_capital=1000.0))
    # decided on close of bar 1, filled at open of bar 2 (11.5); closed at open of bar 4 (13.5)
    assert [f.bar for f in res.fills] == [2, 4]
    qty = 1000.0 / 11.5
    assert res.fills[0].price == 11.5 and res.fills[0].quantity == pytest.approx(qty)
    assert res.trades["pnl"][0] == pytest.approx(qty * (13.5 - 11.5))
    assert res.trades["bars_held"][0] == 2
    assert res.trades["entry_ts"][0] == 2 * DAY and res.trades["exit_ts"][0] == 4 * DAY
    # equity marked at closes: flat 1000 until the fill, then cash + qty * close
    expected = [1000, 1000, qty * 12, qty * 13, 1000 + qty * 2]
    np.testing.assert_allclose(res.equity, expected)


def test_commission_and_slippage() -> None:
    bars = bars_from([100, 100, 110, 110], open_=[100, 100, 100, 120])
    s = PortfolioSettings(initial_capital=10_000.0, commission_bps=10, slippage_bps=50)
    res = simulate(bars, np.array([1, 1, 0, 0]), s)
    buy = 100 * 1.005
    qty = 10_000 / (buy * 1.001)
    sell = 120 * 0.995
    fee_in, fee_out = qty * buy * 0.001, qty * sell * 0.001
    assert res.trades["pnl"][0] == pytest.approx(qty * (sell - buy) - fee_in - fee_out)
    assert res.equity[-1] == pytest.approx(10_000 - qty * buy - fee_in + qty * sell - fee_out)


def test_whole_units_and_short() -> None:
    bars = bars_from([10, 10, 8, 8], open_=[10, 10, 9, 8])
    s = PortfolioSettings(initial_capital=95.0, whole_units=True)
    res = simulate(bars, np.array([-1, -1, 0, 0]), s)
    assert res.fills[0].quantity == -9  # floor(95 / 10)
    assert res.trades["direction"][0] == -1
    assert res.trades["pnl"][0] == pytest.approx(9 * (10 - 8))


# fast = 1, slow = 2: the fast SMA is the close, the slow one the mean of the last two
# closes, so fast - slow = (close[t] - close[t-1]) / 2: above on a rise, below on a fall,
# tied (exactly, integer closes) when the close is unchanged. A cross needs strictly
# below on the previous bar and strictly above on this one (DESIGN.md "Metrics").
CROSSOVER_CASES = [
    # (closes, targets long_only, targets long_short)
    ([10, 9, 9, 10], [0, 0, 0, 0], [0, 0, 0, 0]),  # fall, tie, rise: no cross up
    ([10, 9, 8, 8], [0, 0, 0, 0], [0, 0, 0, 0]),  # fall, fall, tie: no cross up
    ([10, 9, 10, 10, 9], [0, 0, 1, 1, 1], [0, 0, 1, 1, 1]),  # up; rise, tie, fall: no cross
    ([10, 9, 10, 11, 11], [0, 0, 1, 1, 1], [0, 0, 1, 1, 1]),  # up; rise, rise, tie: no cross
    ([10, 9, 10, 9], [0, 0, 1, 0], [0, 0, 1, -1]),  # up, then down
    ([10, 9, 9, 10, 9, 10], [0, 0, 0, 0, 0, 1], [0, 0, 0, 0, -1, 1]),  # tie; down; up
]


@pytest.mark.parametrize(("close", "long_only", "long_short"), CROSSOVER_CASES)
def test_sma_crossover_strictness(
    close: list[int], long_only: list[int], long_short: list[int]
) -> None:
    bars = bars_from([float(c) for c in close])
    for mode, want in (("long_only", long_only), ("long_short", long_short)):
        got = make_strategy("sma_crossover", {"fast": 1, "slow": 2, "mode": mode}).signals(bars)
        assert got.tolist() == want, mode


@pytest.mark.parametrize(("close", "long_only", "long_short"), CROSSOVER_CASES)
def test_sma_crossover_strictness_in_the_kernels(
    backend: ModuleType, close: list[int], long_only: list[int], long_short: list[int]
) -> None:
    batch = pa.record_batch(
        {
            "ts": pa.array(np.arange(len(close)) * DAY, pa.int64()),
            "open": np.asarray(close, dtype=float),
            "close": np.asarray(close, dtype=float),
        }
    )
    for short, want in ((False, long_only), (True, long_short)):
        sig = backend.sma_crossover_signals(batch, 1, 2, short)
        assert sig.column(0).to_pylist() == want, short
        # the kernel fills a target decided on bar t at the open of bar t + 1
        out = backend.backtest(batch, sma=(1, 2, short))
        position = np.sign(out["bars"].column("position").to_numpy()).astype(int)
        assert position.tolist() == [0, *want[:-1]], short


@pytest.mark.parametrize(
    ("mode", "want"), [("long_only", [0, 0, 0, 1, 0, 0]), ("long_short", [0, 0, 0, 1, 0, -1])]
)
def test_momentum_needs_a_return_beyond_the_threshold(mode: str, want: list[int]) -> None:
    # lookback 1, threshold 0: a return of exactly 0 is neither long nor short
    bars = bars_from([10.0, 10.0, 10.0, 11.0, 11.0, 10.0])
    got = make_strategy("momentum", {"lookback": 1, "threshold": 0.0, "mode": mode}).signals(bars)
    assert got.tolist() == want


def test_mean_reversion_exits_at_a_z_score_of_exactly_exit_z() -> None:
    # window 3: bar 4 closes at 7 after 10, 10 (mean 9, std sqrt(2), z = -1.41 < -1:
    # long); bar 5 closes at 8.5, the mean of 10, 7, 8.5, so z = 0 = exit_z: flat
    bars = bars_from([10.0, 10.0, 10.0, 10.0, 7.0, 8.5])
    got = make_strategy("mean_reversion", {"window": 3, "entry_z": 1.0, "exit_z": 0.0})
    assert got.signals(bars).tolist() == [0, 0, 0, 0, 1, 0]


def test_metrics_reference_definitions() -> None:
    eq = np.array([100.0, 110.0, 99.0, 120.0])
    m = compute_metrics(eq, 100.0, 252.0, np.array([5.0, -2.0, 3.0]), np.array([0, 1, 1, 0]))
    rets = np.array([0.0, 0.1, -0.1, 120 / 99 - 1])
    assert m["total_return"] == pytest.approx(0.2)
    assert m["sharpe_ratio"] == pytest.approx(rets.mean() / rets.std(ddof=1) * math.sqrt(252))
    assert m["max_drawdown"] == pytest.approx(99 / 110 - 1)
    assert m["win_rate"] == pytest.approx(2 / 3)
    assert m["profit_factor"] == pytest.approx(8 / 2)
    assert m["exposure"] == pytest.approx(0.5)


def test_streaming_metrics_equal_reference() -> None:
    bars = synthetic_bars(n_bars=5000, seed=3, frequency="1h")["SYN"]
    sig = make_strategy("mean_reversion", {"window": 20, "mode": "long_short"}).signals(bars)
    res = simulate(bars, sig, PortfolioSettings(commission_bps=2))
    ref = compute_metrics(
        res.equity, 100_000.0, bars.periods_per_year, res.trades["pnl"], res.position
    )
    sm = StreamingMetrics(100_000.0, bars.periods_per_year)
    for i in range(0, len(bars), 333):
        sm.update_equity(res.equity[i : i + 333], res.position[i : i + 333])
    for p in res.trades["pnl"]:
        sm.on_trade(p)
    got = sm.result()
    for key, value in ref.items():
        assert got[key] == pytest.approx(value, rel=1e-9, abs=1e-12), key


def test_synthetic_is_deterministic() -> None:
    a = synthetic_bars(["A", "B"], n_bars=100, seed=7)
    b = synthetic_bars(["A", "B"], n_bars=100, seed=7)
    np.testing.assert_array_equal(a["A"].close, b["A"].close)
    assert not np.array_equal(a["A"].close, a["B"].close)


@pytest.mark.parametrize(
    ("kind", "params", "message"),
    [
        ("sma_crossover", {"fast": 30, "slow": 10}, "fast (30) must be smaller than slow (10)"),
        ("sma_cross", {}, "did you mean 'sma_crossover'"),
        ("momentum", {"lookbak": 3}, "bad parameters"),
        ("nosuchmodule:Thing", {}, "cannot import 'nosuchmodule:Thing'"),
    ],
)
def test_bad_strategies(kind: str, params: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        make_strategy(kind, params)
