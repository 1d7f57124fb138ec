"""Monte Carlo benchmark (group ``workflow:monte-carlo``): ``phasekit.run`` in this
process of one ``monte_carlo`` phase, 10,000 simulations (batches of 1,000, method
``returns``) of an SMA crossover over 10,000 hourly bars, results in files, on the rust
and python backends, with ``engine: block`` (a batch window's simulations as one block,
``bootstrap_block``) and ``engine: container`` (one container, its own files and catalog
row, per simulation; one round: a round takes 1-2 minutes, three overran the suite's
300 s test timeout on a loaded machine). ``extra_info`` has the result files and catalog rows per batch
window and the p50 of ``total_return``, which both engines give equal.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pytest

import phasekit
from phasekit.catalog import open_catalog
from phasekit.workflow import run

SIMULATIONS = 10_000
BATCH = 1_000
BARS = 10_000


def config(results: Path, engine: str) -> dict[str, Any]:
    return {
        "run_name": "mc-bench",
        "results_dir": str(results),
        "engine": engine,
        "data_flow": {"mode": "file"},
        "data": {"n_bars": BARS, "frequency": "1h", "seed": 5, "volatility": 0.004},
        "strategy": {"type": "sma_crossover", "fast": 5, "slow": 40},
        "portfolio": {"commission_bps": 2, "slippage_bps": 1},
        "phases": [
            {
                "name": "mc",
                "sequence": "monte_carlo",
                "monte_carlo": {"n": SIMULATIONS, "batch": BATCH, "seed": 1},
            }
        ],
    }


ROUNDS = {"block": 3, "container": 1}
"""Rounds per engine."""


@pytest.mark.parametrize("engine", ["block", "container"])
@pytest.mark.parametrize("backend", ["rust", "python"])
@pytest.mark.timeout(900)
def test_monte_carlo(benchmark: Any, backend: str, engine: str, tmp_path: Path) -> None:
    benchmark.group = "workflow:monte-carlo"
    before = phasekit.get_backend()
    phasekit.set_backend(backend)
    seen: dict[str, Any] = {}

    def once() -> None:
        res = run(config(Path(tempfile.mkdtemp(dir=tmp_path)), engine), workers=1)
        try:
            windows = len(res.phases["mc"].windows)
            files = [p for p in (res.run_dir / "mc").rglob("*") if p.is_file()]
            with open_catalog(res.catalog_url) as catalog:
                rows = catalog.list_items(res.run_id, stage="mc")
            seen.update(
                status=res.status,
                containers=res.phases["mc"].containers,
                files=len(files) / windows,
                rows=len(rows) / windows,
                p50=res.phases["mc"].summary["distribution"]["total_return"]["p50"],
            )
        finally:
            res.close()

    try:
        benchmark.pedantic(once, rounds=ROUNDS[engine], iterations=1, warmup_rounds=0)
    finally:
        phasekit.set_backend(before)
    assert seen["status"] == "completed" and seen["containers"] == SIMULATIONS
    benchmark.extra_info.update(
        items=SIMULATIONS,
        unit="simulations",
        bars=BARS,
        engine=engine,
        files_per_window=seen["files"],
        catalog_rows_per_window=seen["rows"],
        p50_total_return=seen["p50"],
    )
