"""``bootstrap_block``: a batch of Monte Carlo simulations at once gives, for every
simulation, exactly the metrics ``bootstrap_metrics`` gives it (the same draws, the same
operations in the same order): compared with ``==``, no tolerance, for both methods,
several seeds and batch sizes, chunked or not, on the bar returns and trades of a run of
each backend and on edge cases (no trades, one bar, no bars, zero returns)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import phasekit.backtest.metrics as metrics_module
from phasekit.backtest.metrics import bootstrap_block, bootstrap_metrics, compute_metrics
from phasekit.backtest.portfolio import PortfolioSettings
from phasekit.tracing import TracerSettings
from phasekit.workflow.executor import DataSpec, bars_for
from phasekit.workflow.sequences import Span
from phasekit.workflow.topology import PortfolioJob, simulate_job

INITIAL = 10_000.0
SPEC = DataSpec.from_config(
    {"source": "synthetic", "n_bars": 3000, "frequency": "1h", "seed": 11, "volatility": 0.004}
)
METHODS = ("returns", "trades")


def _base_run() -> tuple[np.ndarray, np.ndarray, float]:
    """The bar returns, trades' pnl and periods per year of a run under the selected
    backend (what a Monte Carlo phase draws from)."""
    bars = bars_for(SPEC)
    params = {"fast": 5, "slow": 30, "mode": "long_short"}
    job = PortfolioJob(
        "base_00000",
        "base",
        Span(0, len(bars)),
        "sma_crossover",
        params,
        params,
        PortfolioSettings(initial_capital=INITIAL, commission_bps=2, slippage_bps=1),
        TracerSettings(periods_per_year=bars.periods_per_year),
        bars.symbol,
    )
    window, result = simulate_job(bars, job)
    eq = np.concatenate(([INITIAL], result.equity))
    return eq[1:] / eq[:-1] - 1.0, np.asarray(result.trades["pnl"]), window.periods_per_year


def _same(rets: np.ndarray, pnl: np.ndarray, method: str, seed: int, sims: list[int]) -> None:
    table = bootstrap_block(rets, pnl, method, seed, sims, INITIAL, 8760.0)
    assert table.num_rows == len(sims)
    for sim, row in zip(sims, table.to_pylist()):
        want = bootstrap_metrics(rets, pnl, method, seed, sim, INITIAL, 8760.0)
        assert list(row) == list(want)  # the names, in compute_metrics' order
        assert row == want, (method, seed, sim)  # every value exactly


@pytest.mark.parametrize("method", METHODS)
def test_a_block_equals_each_simulation_on_a_backends_run(backend_name: str, method: str) -> None:
    rets, pnl, ppy = _base_run()
    assert pnl.shape[0] > 20 and (pnl > 0).any() and (pnl < 0).any()
    for seed in (0, 3, 2**40):
        for sims in ([0], list(range(7)), list(range(25, 58))):
            table = bootstrap_block(rets, pnl, method, seed, sims, INITIAL, ppy)
            for sim, row in zip(sims, table.to_pylist()):
                assert row == bootstrap_metrics(rets, pnl, method, seed, sim, INITIAL, ppy)


@pytest.mark.parametrize("method", METHODS)
def test_chunks_change_nothing(
    backend_name: str, method: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch computed a few simulations at a time (``BOOTSTRAP_CELLS`` small) equals
    the batch computed whole, and each simulation alone."""
    rets, pnl, ppy = _base_run()
    sims = list(range(100, 140))
    whole = bootstrap_block(rets, pnl, method, 5, sims, INITIAL, ppy)
    monkeypatch.setattr(metrics_module, "BOOTSTRAP_CELLS", 3 * max(len(rets), len(pnl)))
    chunked = bootstrap_block(rets, pnl, method, 5, sims, INITIAL, ppy)
    assert chunked.equals(whole)
    assert chunked.to_pylist()[17] == bootstrap_metrics(rets, pnl, method, 5, 117, INITIAL, ppy)


EDGES: dict[str, tuple[list[float], list[float]]] = {
    "no trades": ([0.01, -0.02, 0.005, 0.0, 0.03], []),
    "one bar": ([0.02], [15.0]),
    "one bar, no trades": ([-0.01], []),
    "no bars": ([], []),
    "zero returns": ([0.0] * 40, [0.0, 0.0, 0.0]),
    "only losses": ([-0.01, -0.02, -0.005] * 4, [-3.0, -1.0, -2.5]),
    "only wins": ([0.01, 0.02] * 5, [4.0, 1.0, 2.0, 9.0]),
    "one trade": ([0.01, -0.01, 0.02], [-7.5]),
    "nine trades": (list(np.linspace(-0.02, 0.02, 30)), [3.0, -1.0, 0.5, -2.0, 8, -4, 1, 1, -1]),
}


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("case", sorted(EDGES))
def test_edge_cases(case: str, method: str) -> None:
    rets, pnl = (np.asarray(v, dtype=np.float64) for v in EDGES[case])
    for seed in (0, 9):
        _same(rets, pnl, method, seed, list(range(12)))


def test_no_simulations() -> None:
    rets = np.array([0.01, -0.02])
    table = bootstrap_block(rets, np.array([1.0]), "returns", 0, [], INITIAL, 252.0)
    assert table.num_rows == 0
    assert table.schema.names == list(compute_metrics(np.array([INITIAL]), INITIAL, 252.0, rets))


def test_profit_factor_is_null_where_none() -> None:
    """A simulation that draws no losing trade has no profit factor (None), one that does
    has one."""
    pnl = np.array([5.0, -1.0])
    rets = np.array([0.01, 0.02])
    table = bootstrap_block(rets, pnl, "trades", 1, list(range(40)), INITIAL, 252.0)
    factors: list[Any] = table.column("profit_factor").to_pylist()
    assert None in factors and any(f is not None for f in factors)
    assert table.column("profit_factor").null_count == factors.count(None)
