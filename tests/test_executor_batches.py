"""The executor sizes its batches by the bytes their results hand back, so the results
in flight between workers and the parent stay bounded."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from phasekit.backtest.portfolio import PortfolioSettings
from phasekit.tracing import TracerSettings
from phasekit.workflow import run
from phasekit.workflow.executor import BATCH_BYTES, MAX_BATCH, Outcome, batch_size
from phasekit.workflow.sequences import Span
from phasekit.workflow.topology import TRADES_SCHEMA, PortfolioJob


def outcome(equity_rows: int) -> Outcome:
    job = PortfolioJob(
        "portfolio_00000",
        "full",
        Span(0, 1),
        "sma_crossover",
        {},
        {},
        PortfolioSettings(),
        TracerSettings(),
        "SYN",
    )
    equity = None
    if equity_rows:
        equity = pa.table({"equity": np.ones(equity_rows)})
    return Outcome(job, {"metrics": {"sharpe_ratio": 0.0}}, TRADES_SCHEMA.empty_table(), equity)


def test_small_results_make_full_batches(backend_name: str) -> None:
    assert batch_size([outcome(0)] * 4, 8) == MAX_BATCH


def test_large_results_make_small_batches(backend_name: str) -> None:
    # 50,000 floats = 400 KB a container: two fit in the batch's 1 MiB
    assert batch_size([outcome(50_000)] * 4, MAX_BATCH) == BATCH_BYTES // 400_000 == 2


def test_huge_results_still_make_progress(backend_name: str) -> None:
    assert batch_size([outcome(2_000_000)], MAX_BATCH) == 1
    assert batch_size([], 7) == 7


def test_results_do_not_depend_on_batching(tmp_path: Path, backend_name: str) -> None:
    cfg: dict[str, Any] = {
        "workflow": "optimization",
        "run_name": "b",
        "data": {"n_bars": 3000, "frequency": "1min", "seed": 2},
        "parameter_space": {"strategy.fast": [2, 3, 4, 5, 6], "strategy.slow": [20, 30, 40, 50]},
        "event_tracing": ["FILL", "PORTFOLIO_UPDATE"],
    }
    one = run({**cfg, "results_dir": str(tmp_path / "one")}, workers=1)
    two = run({**cfg, "results_dir": str(tmp_path / "two")}, workers=2)
    try:
        assert (
            one.metrics("parameter_search").to_pylist()
            == two.metrics("parameter_search").to_pylist()
        )
    finally:
        one.close()
        two.close()
