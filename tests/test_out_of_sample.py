"""Out of sample means out of sample: train/test reports the sets train selected on
the test window (never a selection on test data), validation runs them once,
walk-forward stitches trades, Monte Carlo reports percentiles. Each figure is checked
against a computation written here from the equity curves and trades."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.feather as feather
import pytest

from phasekit.backtest.portfolio import PortfolioSettings
from phasekit.tracing import TracerSettings
from phasekit.workflow import run
from phasekit.workflow.executor import DataSpec, bars_for
from phasekit.workflow.sequences import Span
from phasekit.workflow.topology import PortfolioJob, simulate_job, strategy_params

DATA = {"n_bars": 2000, "frequency": "1h", "seed": 21, "volatility": 0.004}
SPACE = {"strategy.fast": [3, 5, 8, 13], "strategy.slow": [20, 40, 60]}
PORTFOLIO = {"commission_bps": 2, "slippage_bps": 1}


def config(results: Path, workflow: str, **extra: Any) -> dict[str, Any]:
    cfg = {
        "workflow": workflow,
        "run_name": "oos",
        "results_dir": str(results),
        "data": dict(DATA),
        "strategy": {"type": "sma_crossover"},
        "parameter_space": dict(SPACE),
        "portfolio": dict(PORTFOLIO),
        "top_k": 3,
    }
    cfg.update(extra)
    return cfg


def sharpe_by_hand(equity: np.ndarray, initial: float, ppy: float) -> float:
    full = np.concatenate(([initial], equity))
    rets = full[1:] / full[:-1] - 1.0
    sd = rets.std(ddof=1)
    return float(rets.mean() / sd * math.sqrt(ppy)) if sd > 0 else 0.0


def hand_run(params: dict[str, Any], span: Span) -> tuple[float, float]:
    """(Sharpe, total return) of one set over ``span``, from the simulated equity."""
    bars = bars_for(DataSpec.from_config(DATA))
    portfolio = PortfolioSettings(**PORTFOLIO)
    job = PortfolioJob(
        "x",
        "w",
        span,
        "sma_crossover",
        strategy_params({}, params),
        params,
        portfolio,
        TracerSettings(),
        bars.symbol,
    )
    window, result = simulate_job(bars, job)
    eq = result.equity
    return (
        sharpe_by_hand(eq, portfolio.initial_capital, window.periods_per_year),
        float(eq[-1] / portfolio.initial_capital - 1.0),
    )


def test_train_test_reports_the_in_sample_selection_out_of_sample(
    tmp_path: Path, backend_name: str
) -> None:
    res = run(config(tmp_path, "train_test_optimization"), workers=1)
    try:
        n = DATA["n_bars"]
        split = round(n * 0.8)
        sets = [
            {"strategy.fast": f, "strategy.slow": s}
            for f in SPACE["strategy.fast"]
            for s in SPACE["strategy.slow"]
        ]
        train = {i: hand_run(p, Span(0, split)) for i, p in enumerate(sets)}
        # rank on train only (ties by index, as container ids sort)
        chosen = sorted(train, key=lambda i: (-train[i][0], i))[:3]
        test = {i: hand_run(sets[i], Span(split, n)) for i in chosen}

        phase = res.phases["parameter_search"]
        assert phase.selected == [sets[i] for i in chosen]
        oos = phase.best_out_of_sample
        assert oos is not None and oos["parameters"] == sets[chosen[0]]
        assert oos["metrics"]["sharpe_ratio"] == pytest.approx(test[chosen[0]][0], rel=1e-9)
        assert oos["metrics"]["total_return"] == pytest.approx(test[chosen[0]][1], rel=1e-9)
        # the test window's ranking keeps the in-sample order
        agg = json.loads(
            (res.run_dir / "parameter_search" / "test" / "aggregate_results.json").read_text()
        )
        assert [r["parameters"] for r in agg["ranking"]] == [sets[i] for i in chosen]
        assert agg["ranked_by"] == "in-sample order"
        got = [r["metrics"]["sharpe_ratio"] for r in agg["ranking"]]
        assert got == pytest.approx([test[i][0] for i in chosen], rel=1e-9)
        # the best on test is only shown under its own label
        summary = json.loads((res.run_dir / "parameter_search" / "phase_summary.json").read_text())
        hindsight = summary["best_on_test_in_hindsight"]
        best_test = max(chosen, key=lambda i: (test[i][0], -i))
        assert (
            hindsight["parameters"] == sets[best_test]
            and "not an out-of-sample" in hindsight["note"]
        )
        assert [r["sample"] for r in summary["report"]] == ["in", "out"]
        # validation runs the selected sets once, on the test window, in the same order
        validation = res.phases["validation"]
        assert validation.windows == ["test"] and validation.containers == 3
        assert validation.best_out_of_sample is not None
        assert validation.best_out_of_sample["metrics"]["sharpe_ratio"] == pytest.approx(
            test[chosen[0]][0], rel=1e-9
        )
    finally:
        res.close()


def test_walk_forward_stitches_trades_and_reports_efficiency(
    tmp_path: Path, backend_name: str
) -> None:
    cfg = config(
        tmp_path,
        "walk_forward_optimization",
        walk_forward={"train": 600, "test": 200, "step": 200},
    )
    res = run(cfg, workers=1)
    try:
        phase_dir = res.run_dir / "walk_forward"
        summary = json.loads((phase_dir / "phase_summary.json").read_text())
        oos = summary["out_of_sample"]
        pnl = []
        for window in summary["windows_detail"]:
            trades = feather.read_table(phase_dir / window["window_id"] / "trades.arrow")
            test_id = window["test"]["container_id"]
            mine = trades.filter(np_equal(trades.column("container_id"), test_id))
            assert mine.num_rows == window["test"]["metrics"]["trade_count"]
            pnl.extend(mine.column("pnl").to_pylist())
        pnl_arr = np.array(pnl)
        assert oos["trade_count"] == len(pnl) > 0  # every window's test trades, together
        assert oos["win_rate"] == pytest.approx((pnl_arr > 0).mean())
        losses = -pnl_arr[pnl_arr < 0].sum()
        assert oos["profit_factor"] == pytest.approx(pnl_arr[pnl_arr > 0].sum() / losses)
        # efficiency: annualised OOS return / mean annualised in-sample return
        ppy = bars_for(DataSpec.from_config(DATA)).periods_per_year  # tested elsewhere
        stitched = feather.read_table(phase_dir / "oos_equity.arrow")
        n_oos = stitched.num_rows
        ann_oos = (1 + oos["total_return"]) ** (ppy / n_oos) - 1
        ann_is = [
            (1 + w["best"]["metrics"]["total_return"]) ** (ppy / 600) - 1
            for w in summary["windows_detail"]
        ]
        assert summary["walk_forward_efficiency"] == pytest.approx(
            ann_oos / np.mean(ann_is), rel=1e-6
        )
    finally:
        res.close()


def np_equal(column: Any, value: str) -> Any:
    import pyarrow.compute as pc

    return pc.equal(column, value)


def test_monte_carlo_reports_percentiles(tmp_path: Path, backend_name: str) -> None:
    cfg = config(
        tmp_path,
        None,
        phases=[{"name": "mc", "sequence": "monte_carlo", "monte_carlo": {"n": 60, "batch": 25}}],
    )
    cfg.pop("workflow")
    cfg.pop("parameter_space")
    res = run(cfg, workers=1)
    try:
        phase_dir = res.run_dir / "mc"
        metrics = []
        for window in ("mc0000", "mc0001", "mc0002"):
            agg = json.loads((phase_dir / window / "aggregate_results.json").read_text())
            metrics.extend(r["metrics"] for r in agg["ranking"])
        assert len(metrics) == 60
        summary = json.loads((phase_dir / "phase_summary.json").read_text())
        for key in ("total_return", "max_drawdown", "sharpe_ratio"):
            values = np.array([m[key] for m in metrics])
            for p in (5, 50, 95):
                assert summary["distribution"][key][f"p{p}"] == pytest.approx(
                    np.percentile(values, p), rel=1e-12
                )
        rows = {r["sample"]: r for r in summary["report"]}
        assert set(rows) == {"p5", "p50", "p95"}
        assert rows["p50"]["metrics"]["total_return"] == pytest.approx(
            np.percentile([m["total_return"] for m in metrics], 50), rel=1e-12
        )
    finally:
        res.close()
