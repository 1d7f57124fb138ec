"""The block kernel (a block of parameter sets over one window in one call) of both
backends against the per-set kernel, set by set, for every built-in strategy, both modes
and with costs; and the two backends' blocks against each other."""

from __future__ import annotations

import math
from collections.abc import Mapping
from types import ModuleType
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from phasekit.backtest.bars import Bars, synthetic_bars
from phasekit.backtest.block import params_batch, run_block
from phasekit.backtest.kernel import run_kernel
from phasekit.backtest.metrics import StreamingMetrics
from phasekit.backtest.portfolio import PortfolioSettings
from phasekit.errors import ConfigError, InvalidArgument

COSTS = PortfolioSettings(initial_capital=50_000.0, commission_bps=2.0, slippage_bps=1.5)
SETS: dict[str, list[dict[str, Any]]] = {
    "sma_crossover": [
        {"fast": f, "slow": s, "mode": m}
        for f, s in [(2, 9), (5, 40), (9, 40), (13, 14), (1, 300)]
        for m in ("long_only", "long_short")
    ],
    "momentum": [
        {"lookback": lb, "threshold": t, "mode": m}
        for lb, t in [(1, 0.0), (20, 0.002), (60, -0.001), (5, 0.01)]
        for m in ("long_only", "long_short")
    ],
    "mean_reversion": [
        {"window": w, "entry_z": e, "exit_z": x, "mode": m}
        for w, e, x in [(2, 0.5, 0.1), (20, 1.0, 0.0), (50, 1.5, 0.5), (20, 2.0, 0.3)]
        for m in ("long_only", "long_short")
    ],
}
TRADE_COLUMNS = ("entry_price", "exit_price", "quantity", "pnl", "return", "bars_held")


@pytest.fixture(scope="module")
def bars() -> Bars:
    return synthetic_bars(["B"], n_bars=3000, seed=4, volatility=0.01, frequency="1h")["B"]


def ids(n: int) -> list[str]:
    return [f"portfolio_{i:04d}" for i in range(n)]


def per_set(bars: Bars, start: int, stop: int, kind: str, params: Mapping[str, Any]) -> Any:
    run = run_kernel(bars, start, stop, kind, params, COSTS, curves=True)
    metrics = StreamingMetrics(COSTS.initial_capital, bars.periods_per_year)
    metrics.fold(run.summary)
    for pnl in run.trades["pnl"]:
        metrics.on_trade(pnl)
    return run, metrics.result()


def assert_metrics_close(got: Mapping[str, Any], want: Mapping[str, Any], what: str) -> None:
    for name, value in want.items():
        if value is None:
            assert got[name] is None, f"{what} {name}"
        else:
            assert math.isclose(got[name], value, rel_tol=1e-9, abs_tol=1e-12), (
                f"{what} {name}: {got[name]} != {value}"
            )


@pytest.mark.parametrize("kind", sorted(SETS))
@pytest.mark.parametrize("span", [(0, 3000), (800, 2500)])
def test_every_set_equals_the_per_set_kernel(
    backend_name: str, bars: Bars, kind: str, span: tuple[int, int]
) -> None:
    start, stop = span
    sets = SETS[kind]
    traced = [i % 3 == 0 for i in range(len(sets))]
    block = run_block(bars, start, stop, kind, sets, COSTS, ids(len(sets)), "w1", traced)
    results = block.results.to_pylist()
    trades = block.trades.to_pydict()
    entry_ts = block.trades["entry_time"].cast(pa.int64()).to_numpy()
    curves = block.curves.to_pydict()
    assert [r["container_id"] for r in results] == ids(len(sets))
    assert {r["window_id"] for r in results} == {"w1"}
    traded = 0
    for i, params in enumerate(sets):
        run, want = per_set(bars, start, stop, kind, params)
        row = results[i]
        assert row["bars"] == stop - start
        assert row["mode"] == params["mode"]
        assert_metrics_close(row, want, f"set {i} {params}")
        mine = [j for j, c in enumerate(trades["container_id"]) if c == ids(len(sets))[i]]
        assert len(mine) == len(run.trades["pnl"]) == row["trade_count"]
        traded += len(mine)
        for name in TRADE_COLUMNS:
            np.testing.assert_array_equal([trades[name][j] for j in mine], run.trades[name])
        np.testing.assert_array_equal(entry_ts[mine], run.trades["entry_ts"])
        at = [j for j, c in enumerate(curves["container_id"]) if c == ids(len(sets))[i]]
        if traced[i]:
            np.testing.assert_array_equal([curves["equity"][j] for j in at], run.equity)
            np.testing.assert_array_equal([curves["position"][j] for j in at], run.position)
        else:
            assert at == []
    assert traded > 0


def test_whole_units_and_fraction(backend_name: str, bars: Bars) -> None:
    settings = PortfolioSettings(
        initial_capital=5_000.0, fraction=0.5, whole_units=True, commission_bps=3.0
    )
    sets = SETS["sma_crossover"]
    block = run_block(bars, 100, 3000, "sma_crossover", sets, settings, ids(len(sets)), "w")
    for i, params in enumerate(sets):
        run = run_kernel(bars, 100, 3000, "sma_crossover", params, settings, curves=False)
        got = block.trades.filter(pa.compute.equal(block.trades["container_id"], ids(10)[i]))
        np.testing.assert_array_equal(got["quantity"].to_numpy(), run.trades["quantity"])
        assert np.all(np.floor(run.trades["quantity"]) == run.trades["quantity"])


def test_backends_give_the_same_block(both_backends: tuple[ModuleType, ModuleType]) -> None:
    rust, python = both_backends
    b = synthetic_bars(["B"], n_bars=2000, seed=9, volatility=0.02, frequency="1h")["B"]
    columns = pa.record_batch({"ts": b.ts, "open": b.open, "close": b.close})
    for kind, sets in SETS.items():
        params = params_batch(kind, sets)
        traced = [True, False] * (len(sets) // 2)
        kw = {"traced": traced, "commission_bps": 1.0, "slippage_bps": 2.0}
        r = rust.backtest_block(columns, kind, params, 100, 1900, **kw)
        p = python.backtest_block(columns, kind, params, 100, 1900, **kw)
        assert r["results"].schema == p["results"].schema
        for name in r["results"].schema.names:
            np.testing.assert_allclose(
                r["results"][name].to_numpy(zero_copy_only=False),
                p["results"][name].to_numpy(zero_copy_only=False),
                rtol=1e-9,
                err_msg=f"{kind} {name}",
            )
        assert r["trades"].equals(p["trades"]), kind
        assert r["curves"].equals(p["curves"]), kind
        assert r["indicators"] == p["indicators"]


INDICATOR_CASES = [
    ("sma_crossover", [{"fast": 5, "slow": 20}, {"fast": 5, "slow": 30}, {"slow": 30}], 4),
    ("momentum", [{"lookback": 5}, {"lookback": 5, "threshold": 0.1}, {"lookback": 9}], 2),
    ("mean_reversion", [{"window": 5}, {"window": 5, "entry_z": 2.0}], 1),
]


@pytest.mark.parametrize(("kind", "sets", "distinct"), INDICATOR_CASES)
def test_each_indicator_is_computed_once(
    backend_name: str, bars: Bars, kind: str, sets: list[dict[str, Any]], distinct: int
) -> None:
    block = run_block(bars, 0, 500, kind, sets, COSTS, ids(len(sets)), "w")
    assert block.indicators == distinct


def test_a_bad_set_fails_the_block_naming_its_container(backend_name: str, bars: Bars) -> None:
    sets = [*SETS["sma_crossover"][:3], {"fast": 30, "slow": 10}, {"fast": 0, "slow": 4}]
    with pytest.raises(ConfigError, match=r"container portfolio_0003 .*fast \(30\) must be"):
        run_block(bars, 0, 500, "sma_crossover", sets, COSTS, ids(5), "w")
    with pytest.raises(ConfigError, match=r"portfolio_0001 .*lookback: 0 must be at least 1"):
        run_block(bars, 0, 500, "momentum", [{"lookback": 3}, {"lookback": 0}], COSTS, ids(2), "w")
    with pytest.raises(ConfigError, match=r"portfolio_0000 .*window: 1 must be at least 2"):
        run_block(bars, 0, 500, "mean_reversion", [{"window": 1}], COSTS, ids(1), "w")


def test_bad_block_arguments(backend: ModuleType, bars: Bars) -> None:
    columns = pa.record_batch({"ts": bars.ts, "open": bars.open, "close": bars.close})
    params = params_batch("momentum", [{"lookback": 3}, {"lookback": 4}])
    with pytest.raises(ConfigError, match="has no block kernel; allowed: sma_crossover"):
        backend.backtest_block(columns, "breakout", params)
    with pytest.raises(InvalidArgument, match="threads: 0 must be at least 1"):
        backend.backtest_block(columns, "momentum", params, threads=0)
    with pytest.raises(InvalidArgument, match=r"window 9\.\.9 is not inside the 3000 bars"):
        backend.backtest_block(columns, "momentum", params, 9, 9)
    with pytest.raises(InvalidArgument, match="traced: 1 flags for 2 parameter sets"):
        backend.backtest_block(columns, "momentum", params, traced=[True])
    with pytest.raises(InvalidArgument, match="params: no column 'threshold'"):
        backend.backtest_block(columns, "momentum", params.drop_columns(["threshold"]))
    with pytest.raises(ConfigError, match=r"portfolio\.fraction: 1\.5 must be in"):
        backend.backtest_block(columns, "momentum", params, fraction=1.5)


def test_threads_run_groups_of_sets(backend: ModuleType, bars: Bars) -> None:
    columns = pa.record_batch({"ts": bars.ts, "open": bars.open, "close": bars.close})
    sets = [{"fast": f, "slow": 50} for f in range(1, 41)]
    params = params_batch("sma_crossover", sets)
    one = backend.backtest_block(columns, "sma_crossover", params, threads=1)
    two = backend.backtest_block(columns, "sma_crossover", params, threads=2)
    assert one["threads"] == 1
    # the pure-Python backend vectorises the sets in one thread
    assert two["threads"] == (2 if backend.__name__ == "phasekit._core" else 1)
    assert one["results"].equals(two["results"])
    assert one["trades"].equals(two["trades"])


def test_params_batch_checks_the_sets() -> None:
    with pytest.raises(ConfigError, match="parameter set 1: strategy 'momentum' has no parameter"):
        params_batch("momentum", [{"lookback": 2}, {"window": 3}])
    with pytest.raises(
        ConfigError, match=r"parameter set 0: strategy\.mode: 'both' is not allowed"
    ):
        params_batch("momentum", [{"mode": "both"}])
    with pytest.raises(ConfigError, match="has no block kernel"):
        params_batch("pkg.mod:Strategy", [{}])
    batch = params_batch("mean_reversion", [{"window": 7}, {"entry_z": 2, "mode": "long_short"}])
    assert batch.to_pydict() == {
        "window": [7, 20],
        "entry_z": [1.0, 2.0],
        "exit_z": [0.0, 0.0],
        "long_short": [0, 1],
    }


def test_container_ids_must_match_the_sets(backend_name: str, bars: Bars) -> None:
    with pytest.raises(InvalidArgument, match="container_ids: 1 ids for 2 parameter sets"):
        run_block(bars, 0, 100, "momentum", [{}, {}], COSTS, ["a"], "w")


def test_an_empty_block(backend_name: str, bars: Bars) -> None:
    block = run_block(bars, 0, 100, "momentum", [], COSTS, [], "w")
    assert block.results.num_rows == block.trades.num_rows == block.curves.num_rows == 0


def crafted_bars() -> Bars:
    """Closes 10, 12, 11 repeated: the 3-bar z-score is exactly 0 on every 11 (so an
    exit at ``exit_z: 0`` needs ``|z| <= 0``); then 11 held, a rise by 1 a bar to 30
    (3-bar returns from 27% falling below 12% on the way) and 30 held."""
    close = np.concatenate(
        [np.tile([10.0, 12.0, 11.0], 20), np.full(5, 11.0), np.arange(12.0, 31.0), np.full(5, 30.0)]
    )
    open_ = np.concatenate([[close[0]], close[:-1]])
    ts = np.arange(close.shape[0], dtype=np.int64) * 3_600_000_000_000
    return Bars("C", ts, open_, close, close, close, np.ones_like(close), ppy=8760.0)


@pytest.mark.parametrize(
    ("kind", "params", "trades"),
    [
        ("mean_reversion", {"window": 3, "entry_z": 1.0, "exit_z": 0.0}, 19),
        ("mean_reversion", {"window": 3, "entry_z": 1.0, "exit_z": 0.0, "mode": "long_short"}, 38),
        ("momentum", {"lookback": 3, "threshold": 0.12}, 1),
    ],
)
def test_crafted_exits_and_a_single_trade(
    backend_name: str, kind: str, params: dict[str, Any], trades: int
) -> None:
    bars = crafted_bars()
    block = run_block(bars, 0, len(bars), kind, [params], COSTS, ["c"], "w")
    run, want = per_set(bars, 0, len(bars), kind, params)
    row = block.results.to_pylist()[0]
    assert row["trade_count"] == len(run.trades["pnl"]) == trades
    assert_metrics_close(row, want, kind)
    np.testing.assert_array_equal(block.trades["pnl"].to_numpy(), run.trades["pnl"])
