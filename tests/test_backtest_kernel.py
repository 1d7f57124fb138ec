"""The backtest kernel of both backends against the numpy reference of phasekit.backtest
(signals, fills, trades, equity and events bit for bit; the equity summary to rounding)
and against each other, on random bars, targets and settings."""

from __future__ import annotations

import math
from types import ModuleType
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from phasekit.backend import backend_module
from phasekit.backtest.bars import Bars, synthetic_bars
from phasekit.backtest.kernel import run_kernel
from phasekit.backtest.metrics import StreamingMetrics, compute_metrics, equity_summary
from phasekit.backtest.portfolio import PortfolioSettings, position_events, simulate
from phasekit.backtest.strategies import SmaCrossover, make_strategy
from phasekit.errors import ConfigError, InvalidArgument


def random_bars(seed: int, n: int, vol: float = 0.01) -> Bars:
    return synthetic_bars(["R"], n_bars=n, seed=seed, volatility=vol, frequency="1h")["R"]


def batch(bars: Bars, target: np.ndarray | None = None, ts_type: Any = None) -> Any:
    cols: dict[str, Any] = {
        "ts": pa.array(bars.ts, ts_type or pa.int64()),
        "open": bars.open,
        "close": bars.close,
    }
    if target is not None:
        cols["target"] = pa.array(target, pa.int8())
    return pa.record_batch(cols)


def columns(b: pa.RecordBatch) -> dict[str, np.ndarray]:
    return {name: b.column(i).to_numpy() for i, name in enumerate(b.schema.names)}


def reference(bars: Bars, target: np.ndarray, start: int, stop: int, s: PortfolioSettings) -> Any:
    window = bars.slice(start, stop)
    res = simulate(window, target[start:stop], s)
    return window, res, position_events(window, res)


def assert_same_as_reference(
    out: dict[str, Any], bars: Bars, target: np.ndarray, start: int, stop: int, s: PortfolioSettings
) -> None:
    _, res, events = reference(bars, target, start, stop, s)
    per_bar = columns(out["bars"])
    np.testing.assert_array_equal(per_bar["equity"], res.equity)
    np.testing.assert_array_equal(per_bar["position"], res.position)
    trades = columns(out["trades"])
    assert list(trades) == list(res.trades)
    for name, col in res.trades.items():
        assert trades[name].dtype == col.dtype, name
        np.testing.assert_array_equal(trades[name], col, err_msg=name)
    fills = columns(out["fills"])
    assert [(int(b), q, p, c) for b, q, p, c in zip(*fills.values())] == [
        (f.bar, f.quantity, f.price, f.commission) for f in res.fills
    ]
    got_events = columns(out["events"])
    assert list(got_events) == list(events)
    for name, col in events.items():
        assert got_events[name].dtype == col.dtype, name
        np.testing.assert_array_equal(got_events[name], col, err_msg=name)
    want = equity_summary(res.equity, res.position, s.initial_capital, s.initial_capital)
    got = out["summary"]
    assert set(got) == set(want)
    for key, value in want.items():
        assert got[key] == pytest.approx(value, rel=1e-9, abs=1e-15), key


settings_st = st.builds(
    PortfolioSettings,
    initial_capital=st.sampled_from([1_000.0, 100_000.0, 12_345.67]),
    fraction=st.sampled_from([1.0, 0.5, 0.33]),
    whole_units=st.booleans(),
    commission_bps=st.sampled_from([0.0, 1.0, 7.5]),
    slippage_bps=st.sampled_from([0.0, 2.0, 10.0]),
)


def kw(s: PortfolioSettings) -> dict[str, Any]:
    return {
        "initial_capital": s.initial_capital,
        "fraction": s.fraction,
        "whole_units": s.whole_units,
        "commission_bps": s.commission_bps,
        "slippage_bps": s.slippage_bps,
    }


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    n=st.integers(2, 400),
    fast=st.integers(1, 12),
    gap=st.integers(1, 30),
    short=st.booleans(),
    s=settings_st,
    start_frac=st.floats(0.0, 0.9),
)
def test_sma_kernel_equals_reference_on_both_backends(
    seed: int, n: int, fast: int, gap: int, short: bool, s: PortfolioSettings, start_frac: float
) -> None:
    bars = random_bars(seed, n)
    slow = fast + gap
    start = min(int(n * start_frac), n - 1)
    target = SmaCrossover(fast, slow, "long_short" if short else "long_only").signals(bars)
    for name in ("rust", "python"):
        mod = backend_module(name)
        sig = mod.sma_crossover_signals(batch(bars), fast, slow, short)
        np.testing.assert_array_equal(sig.column(0).to_numpy(), target)
        out = mod.backtest(batch(bars), start, n, sma=(fast, slow, short), **kw(s))
        assert_same_as_reference(out, bars, target, start, n, s)
        lean = mod.backtest(batch(bars), start, n, sma=(fast, slow, short), curves=False, **kw(s))
        assert lean["bars"] is None and lean["summary"] == out["summary"]
        for key in ("trades", "fills", "events"):
            assert lean[key].equals(out[key]), key


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    n=st.integers(2, 300),
    s=settings_st,
    p_change=st.sampled_from([0.05, 0.3, 0.9]),
    stop_frac=st.floats(0.2, 1.0),
)
def test_target_kernel_equals_reference_on_both_backends(
    seed: int, n: int, s: PortfolioSettings, p_change: float, stop_frac: float
) -> None:
    rng = np.random.default_rng(seed)
    bars = random_bars(seed, n, vol=0.05)
    changes = rng.random(n) < p_change
    values = rng.integers(-1, 2, n).astype(np.int8)
    target = values[np.maximum.accumulate(np.where(changes, np.arange(n), 0))]
    stop = max(1, int(n * stop_frac))
    start = int(rng.integers(0, stop))
    for name in ("rust", "python"):
        out = backend_module(name).backtest(batch(bars, target), start, stop, **kw(s))
        assert_same_as_reference(out, bars, target, start, stop, s)


def test_hand_computed_trade(backend: ModuleType) -> None:
    bars = Bars(
        "X",
        np.arange(5, dtype=np.int64) * 60,
        np.array([10.0, 10.5, 11.5, 12.5, 12.5]),
        np.zeros(5),
        np.zeros(5),
        np.array([10.0, 11.0, 12.0, 13.0, 12.0]),
        np.zeros(5),
    )
    out = backend.backtest(
        batch(bars, np.array([1, 1, 0, 0, 0])),
        initial_capital=1000.0,
        commission_bps=10.0,
    )
    px_in, comm = 10.5, 0.001
    qty = 1000.0 / (px_in * (1 + comm))
    fee_in = qty * px_in * comm
    fee_out = qty * 12.5 * comm
    trades = columns(out["trades"])
    assert trades["entry_ts"].tolist() == [60] and trades["exit_ts"].tolist() == [180]
    assert trades["bars_held"].tolist() == [2] and trades["direction"].tolist() == [1]
    assert trades["pnl"][0] == pytest.approx(qty * (12.5 - 10.5) - fee_in - fee_out)
    assert columns(out["events"])["kind"].tolist() == [4, 5, 4, 6]
    equity = columns(out["bars"])["equity"]
    assert equity[0] == 1000.0
    assert equity[-1] == pytest.approx(1000.0 + trades["pnl"][0])


def test_timestamp_column_and_chunked_input(backend: ModuleType) -> None:
    bars = random_bars(3, 500)
    plain = backend.backtest(batch(bars), 100, 500, sma=(3, 20, True))
    ts = backend.backtest(
        batch(bars, ts_type=pa.timestamp("ns", tz="UTC")), 100, 500, sma=(3, 20, True)
    )
    table = pa.Table.from_batches([batch(bars).slice(0, 123), batch(bars).slice(123)])
    chunked = backend.backtest(table, 100, 500, sma=(3, 20, True))
    for other in (ts, chunked):
        for key in ("bars", "trades", "fills", "events"):
            assert other[key].equals(plain[key]), key


def test_streaming_metrics_fold_equals_reference(backend: ModuleType) -> None:
    bars = random_bars(11, 3000)
    s = PortfolioSettings(commission_bps=2.0)
    out = backend.backtest(batch(bars), 0, None, sma=(5, 40, True), **kw(s))
    per_bar = columns(out["bars"])
    m = StreamingMetrics(s.initial_capital, bars.periods_per_year)
    m.fold(out["summary"])
    for pnl in columns(out["trades"])["pnl"]:
        m.on_trade(pnl)
    want = compute_metrics(
        per_bar["equity"],
        s.initial_capital,
        bars.periods_per_year,
        columns(out["trades"])["pnl"],
        per_bar["position"],
    )
    got = m.result()
    for key, value in want.items():
        if value is None:
            assert got[key] is None
        else:
            assert math.isclose(got[key], value, rel_tol=1e-9, abs_tol=1e-12), key


@pytest.fixture
def use_backend(backend: ModuleType) -> Any:
    """The backend under test as the one in use (what the topology's kernel calls)."""
    import phasekit

    was = phasekit.get_backend()
    phasekit.set_backend("rust" if backend.__name__.endswith("_core") else "python")
    yield backend
    phasekit.set_backend(was)


def test_run_kernel_with_python_strategies(use_backend: ModuleType) -> None:
    assert backend_module() is use_backend
    bars = random_bars(5, 800)
    s = PortfolioSettings(slippage_bps=3.0)
    for kind, params in (
        ("momentum", {"lookback": 10, "threshold": 0.001, "mode": "long_short"}),
        ("mean_reversion", {"window": 15, "entry_z": 1.0}),
        ("sma_crossover", {"fast": 4, "slow": 30}),
    ):
        run = run_kernel(bars, 200, 800, kind, params, s)
        target = np.asarray(make_strategy(kind, params).signals(bars))
        _, res, events = reference(bars, target, 200, 800, s)
        np.testing.assert_array_equal(run.equity, res.equity)
        np.testing.assert_array_equal(run.trades["pnl"], res.trades["pnl"])
        np.testing.assert_array_equal(run.events["kind"], events["kind"])
        assert run.sim_result().fills == res.fills


def test_run_kernel_rejects_bad_user_targets(use_backend: ModuleType) -> None:
    bars = random_bars(5, 50)
    with pytest.raises(ConfigError, match=r"target 0\.5 at bar 3"):
        run_kernel(bars, 0, 50, "test_backtest_kernel:HalfStep", {}, PortfolioSettings())
    with pytest.raises(ConfigError, match="target 3 at bar 0"):
        run_kernel(bars, 0, 50, "test_backtest_kernel:Three", {}, PortfolioSettings())


class HalfStep:
    def signals(self, bars: Bars) -> np.ndarray:
        out = np.zeros(len(bars))
        out[3:] = 0.5
        return out


class Three:
    def signals(self, bars: Bars) -> np.ndarray:
        return np.full(len(bars), 3, dtype=np.int64)


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        ({"sma": (5, 5, False)}, ConfigError, "fast (5) must be smaller than slow (5)"),
        ({"sma": (0, 5, False)}, ConfigError, "must be at least 1"),
        ({"sma": (2, 5, False), "fraction": 1.5}, ConfigError, "portfolio.fraction"),
        ({"sma": (2, 5, False), "initial_capital": 0.0}, ConfigError, "initial_capital"),
        ({"sma": (2, 5, False), "commission_bps": -1.0}, ConfigError, "commission_bps"),
        ({"sma": (2, 5, False), "start": 10, "stop": 10}, InvalidArgument, "window 10..10"),
        ({"sma": (2, 5, False), "stop": 99}, InvalidArgument, "not inside the 50 bars"),
        ({}, InvalidArgument, "no column 'target'"),
    ],
)
def test_bad_calls(
    backend: ModuleType, call: dict[str, Any], error: type[Exception], message: str
) -> None:
    bars = random_bars(1, 50)
    args = dict(call)
    start, stop = args.pop("start", 0), args.pop("stop", None)
    with pytest.raises(error) as info:
        backend.backtest(batch(bars), start, stop, **args)
    assert message in str(info.value)


def test_bad_targets_and_columns(backend: ModuleType) -> None:
    bars = random_bars(1, 20)
    target = np.zeros(20, dtype=np.int8)
    target[7] = 2
    with pytest.raises(ConfigError, match="target 2 at bar 7; allowed: -1, 0, 1"):
        backend.backtest(batch(bars, target))
    wrong = pa.record_batch({"ts": bars.ts, "open": bars.open, "close": bars.close.astype("f4")})
    with pytest.raises(InvalidArgument, match=r"column 'close' is .*expected float64"):
        backend.backtest(wrong, sma=(2, 5, False))
    with pytest.raises(InvalidArgument, match="Arrow record batch"):
        backend.backtest({"ts": bars.ts}, sma=(2, 5, False))


def test_a_bad_parameter_set_fails_the_run_with_its_container(
    use_backend: ModuleType, tmp_path: Any
) -> None:
    from phasekit.workflow import run

    cfg = {
        "workflow": "optimization",
        "run_name": "bad",
        "data": {"n_bars": 300, "frequency": "1h", "seed": 1},
        "strategy": {"type": "sma_crossover"},
        "parameter_space": {"strategy.fast": [5, 30], "strategy.slow": [20]},  # no constraint
    }
    with pytest.raises(ConfigError) as info:
        run(cfg, workers=1, results_dir=str(tmp_path))
    message = str(info.value)
    assert "container portfolio_00001" in message and "'strategy.fast': 30" in message
    assert "fast (30) must be smaller than slow (20)" in message
