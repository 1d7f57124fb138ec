"""Every example config runs through ``phasekit run`` (a subprocess, on small data) and
leaves what its use case promises: the phases, their results files, the data flow of
their container results and one catalog row per stored item."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow.feather as feather
import pyarrow.parquet as pq
import pytest

from phasekit.catalog import open_catalog

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
CLI = (sys.executable, "-m", "phasekit.cli", "run")
CONTAINER_RESULTS = re.compile(r"^[a-z]+_\d{5}_results$")


def phasekit_run(config: Path, results: Path, *sets: str, workers: int = 1) -> dict[str, Any]:
    args = [*CLI, str(config), "--json"]
    args += ["--results-dir", str(results), "--workers", str(workers)]
    for item in sets:
        args += ["--set", item]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary: dict[str, Any] = json.loads(proc.stdout)
    assert summary["status"] == "completed"
    return summary


class Run:
    """A finished run: its summary, folder and catalog rows."""

    def __init__(self, summary: dict[str, Any]) -> None:
        self.summary = summary
        self.dir = Path(summary["results"])
        catalog = open_catalog(summary["catalog"])
        try:
            self.items = catalog.list_items(summary["run_id"])
            for item in self.items:  # every file recorded exists and verifies
                if item.data_reference and item.data_reference.startswith("file://"):
                    catalog.verify_item(item)
        finally:
            catalog.close()

    def containers(self, phase: str) -> int:
        return int(self.summary["phases"][phase]["containers"])

    def rows(self, phase: str, entity: str | None = None) -> list[Any]:
        return [
            i
            for i in self.items
            if i.stage_name == phase and (entity is None or i.entity_name == entity)
        ]

    def container_rows(self, phase: str) -> list[Any]:
        return [i for i in self.rows(phase) if CONTAINER_RESULTS.match(i.entity_name)]

    def phase_summary(self, phase: str) -> dict[str, Any]:
        return dict(json.loads((self.dir / phase / "phase_summary.json").read_text()))

    def ranking(self, phase: str, window: str | None = None) -> list[dict[str, Any]]:
        folder = self.dir / phase / window if window else self.dir / phase
        return list(json.loads((folder / "aggregate_results.json").read_text())["ranking"])

    def trades(self, phase: str, window: str | None = None) -> Any:
        folder = self.dir / phase / window if window else self.dir / phase
        # in the phase's file format; in the execution container's store when a
        # `containers: execution` pattern gives it one
        (path,) = [*folder.glob("all_trades.*"), *folder.glob("containers/all_trades.*")]
        return pq.read_table(path) if path.suffix == ".parquet" else feather.read_table(path)


def check_backtest_phase(run: Run, phase: str, windows: list[str | None]) -> None:
    """The results layout of a backtest phase and its catalog rows."""
    assert (run.dir / phase / "phase_summary.json").exists()
    assert run.rows(phase, "phase_summary") and run.rows(phase, "selected_parameters")
    for window in windows:
        ranking = run.ranking(phase, window)
        assert ranking and all("metrics" in r and "parameters" in r for r in ranking)
        table = run.trades(phase, window)
        assert set(table.column_names) >= {"entry_time", "exit_time", "pnl", "bars_held"}
        rows = [r for r in run.rows(phase, "aggregate_results") if r.window_id == window]
        assert len(rows) == 1, (phase, window)
        assert [r for r in run.rows(phase, "all_trades") if r.window_id == window]


# ---------------------------------------------------------------- one check per use case


def small_workflow(runs: list[Run]) -> None:
    (run,) = runs
    assert list(run.summary["phases"]) == ["optimization", "analysis"]
    assert run.containers("optimization") == 25
    check_backtest_phase(run, "optimization", [None])
    rows = run.container_rows("optimization")
    assert len(rows) == 25 and all(r.data_reference.startswith("memory://") for r in rows)
    assert not (run.dir / "optimization" / "containers").exists()  # nothing written
    analysis = run.phase_summary("analysis")
    assert analysis["ranked"] == 25 and len(analysis["selected_parameters"]) == 5


def large_optimization(runs: list[Run]) -> None:
    (run,) = runs
    assert run.containers("parameter_search") == 14
    check_backtest_phase(run, "parameter_search", [None])
    # file_settings.format parquet (snappy): results and trades are Parquet files
    files = sorted((run.dir / "parameter_search" / "containers").glob("*_results.parquet"))
    assert len(files) == 14
    meta = pq.ParquetFile(files[0]).metadata
    assert meta.row_group(0).column(0).compression == "SNAPPY"
    row = pq.read_table(files[0]).to_pylist()[0]
    assert {"sharpe_ratio", "max_drawdown", "param.strategy.fast"} <= set(row)
    assert (run.dir / "parameter_search" / "all_trades.parquet").exists()
    assert not list((run.dir / "parameter_search").rglob("*.json.*"))
    rows = run.container_rows("parameter_search")
    assert len(rows) == 14 and all(r.data_reference.startswith("file://") for r in rows)
    assert run.ranking("parameter_search")[0]["objective"] is not None  # sortino ranked


def realtime_analysis(runs: list[Run]) -> None:
    (run,) = runs
    assert run.containers("live_search") == 24
    check_backtest_phase(run, "live_search", [None])
    assert run.phase_summary("live_search")["data_flow"] == "streaming"
    stream = run.dir / "live_search" / "containers" / ".stream"
    assert list(stream.rglob("manifest.json")) and list(stream.rglob("part-*.arrow"))
    assert run.rows("live_search", "container_results")
    assert run.phase_summary("analysis")["ranked"] == 24
    streamed = run.phase_summary("analysis")["streamed"]  # read while the search ran
    assert streamed["items"] == 24 and streamed["running_rankings"] == 3
    assert streamed["high_water"] <= streamed["capacity"] == 10


def mixed_workflow(runs: list[Run]) -> None:
    (run,) = runs
    assert list(run.summary["phases"]) == ["search", "walk_forward_check", "analysis"]
    check_backtest_phase(run, "search", [None])
    stats = run.phase_summary("search")["store_stats"]["-/hybrid"]
    assert stats["store"] == "hybrid" and stats["spills"] > 0  # the tiny budget overflowed
    assert stats["peak_bytes_in_memory"] <= stats["budget_bytes"] + 8192
    windows = run.summary["phases"]["walk_forward_check"]["windows"]
    assert len(windows) == 7
    check_backtest_phase(run, "walk_forward_check", windows)
    assert (run.dir / "walk_forward_check" / "oos_equity.arrow").exists()
    wf = run.rows("walk_forward_check")
    assert {r.window_id for r in wf} >= set(windows)
    assert all(
        r.data_reference.startswith("file://") for r in run.container_rows("walk_forward_check")
    )


def optimization_1000(runs: list[Run]) -> None:
    (run,) = runs
    assert run.containers("parameter_search") == 1000
    check_backtest_phase(run, "parameter_search", [None])
    assert len(run.ranking("parameter_search")) == 1000
    rows = run.container_rows("parameter_search")
    # hybrid in memory, and persisted on completion (persistence.on_completion)
    kept = [r for r in rows if r.data_reference.startswith("memory://")]
    persisted = [r for r in rows if r.data_reference.startswith("file://")]
    assert len(kept) == 1000 and len(persisted) == 1000
    assert {r.container_id for r in persisted} == {f"portfolio_{i:05d}" for i in range(1000)}
    files = list((run.dir / "parameter_search" / "containers").glob("*_results.arrow"))
    assert len(files) == 1000
    stats = run.phase_summary("parameter_search")["store_stats"]["-/hybrid"]
    assert stats["store"] == "hybrid" and stats["items"] == 1000
    assert stats["items_on_disk"] > 0
    assert stats["peak_bytes_in_memory"] <= stats["budget_bytes"] + 8192
    best = run.summary["phases"]["parameter_search"]["best"]
    assert best["container_id"] == run.ranking("parameter_search")[0]["container_id"]


def high_frequency(runs: list[Run]) -> None:
    (run,) = runs
    assert run.containers("scalping_search") == 16
    check_backtest_phase(run, "scalping_search", [None])
    assert run.phase_summary("scalping_search")["data_flow"] == "streaming"
    trades = run.trades("scalping_search")
    assert trades.num_rows > 0
    assert all(q == int(q) for q in trades.column("quantity").to_pylist())  # whole units


def memory_constrained(runs: list[Run]) -> None:
    (run,) = runs
    windows = run.summary["phases"]["walk_forward"]["windows"]
    assert len(windows) == 7
    check_backtest_phase(run, "walk_forward", windows)
    summary = run.phase_summary("walk_forward")
    assert summary["data_flow"] == "hybrid"
    assert len(summary["windows_detail"]) == 7
    oos = feather.read_table(run.dir / "walk_forward" / "oos_equity.arrow")
    assert oos.num_rows == 7 * 400  # every test window stitched
    assert run.rows("walk_forward", "oos_equity")


def train_test_overrides(runs: list[Run]) -> None:
    (run,) = runs
    assert list(run.summary["phases"]) == ["parameter_search", "validation"]
    assert "my_experiment_2024_01" not in str(run.dir)  # --results-dir wins over the file
    check_backtest_phase(run, "parameter_search", ["train", "test"])
    check_backtest_phase(run, "validation", ["test"])  # the selected sets, once
    # the per-phase override: the search stays in memory, with equity traced
    search = run.container_rows("parameter_search")
    assert search and all(r.data_reference.startswith("memory://") for r in search)
    assert [r for r in run.rows("parameter_search") if r.entity_name.endswith("_equity")]
    assert not (run.dir / "parameter_search" / "train" / "containers").exists()
    # the global override: validation writes to disk (its workflow default is memory)
    test_dir = run.dir / "validation" / "test" / "containers"
    assert len(list(test_dir.glob("*_results.arrow"))) == 5  # validation's own top_k
    assert len(list(test_dir.glob("*_equity.arrow"))) == 5  # PORTFOLIO_UPDATE traced
    assert run.containers("parameter_search") == 20 + 10
    assert run.summary["phases"]["validation"]["best_out_of_sample"] is not None


def storage_strategy(runs: list[Run]) -> None:
    first, second = runs
    assert first.summary["run_id"] != second.summary["run_id"]
    assert len(first.container_rows("screening")) == 15  # rows listed after the first run
    check_backtest_phase(second, "screening", [None])
    for run in runs:
        assert run.phase_summary("selection")["ranked"] == 15
    # keep_latest removed the first run's screening files (and their emptied folders) ...
    # (the file store's own manifests under .phasekit/ are not catalog items)
    left_files = [
        p
        for p in (first.dir / "screening").rglob("*")
        if p.is_file() and ".phasekit" not in p.parts
    ]
    assert left_files == []
    catalog = open_catalog(second.summary["catalog"])
    try:
        left = catalog.list_items(first.summary["run_id"])
        assert left and {i.stage_name for i in left} == {"selection"}  # ... not selection
        for item in left:
            catalog.verify_item(item)
        assert len(catalog.list_items(second.summary["run_id"], stage="screening")) > 15
        assert {p.process_id for p in catalog.list_processes()} >= {
            first.summary["run_id"],
            second.summary["run_id"],
        }
    finally:
        catalog.close()
    assert len(list((second.dir / "screening" / "containers").glob("*_results.arrow"))) == 15


def quickstart(runs: list[Run]) -> None:
    (run,) = runs
    assert run.containers("parameter_search") >= 100
    check_backtest_phase(run, "parameter_search", ["train", "test"])
    check_backtest_phase(run, "validation", ["test"])  # the selected sets, once


SPACE_14 = (
    "parameter_space={strategy.fast: {range: [2, 42, 8]}, strategy.slow: [30, 110, 210],"
    ' constraints: ["strategy.fast < strategy.slow"]}'
)
WF_SMALL = ("walk_forward.train=1200", "walk_forward.test=400", "walk_forward.step=400")

# example -> (--set arguments, workers, runs, check)
CASES: dict[str, tuple[tuple[str, ...], int, int, Callable[[list[Run]], None]]] = {
    "small_workflow_memory": (("data.n_bars=2000",), 1, 1, small_workflow),
    "large_optimization_file": (("data.n_bars=3000", SPACE_14), 2, 1, large_optimization),
    "realtime_analysis_streaming": (("data.n_bars=3000",), 1, 1, realtime_analysis),
    "mixed_workflow_hybrid": (
        (
            "data.n_bars=4000",
            "data_flow.memory_limit_mb=0.002",
            *(f"phases.walk_forward_check.{s}" for s in WF_SMALL),
        ),
        1,
        1,
        mixed_workflow,
    ),
    "optimization_1000_containers": (
        ("data.n_bars=2000", "data_flow.memory_limit_mb=0.05"),
        2,
        1,
        optimization_1000,
    ),
    "high_frequency": (("data.n_bars=3000",), 1, 1, high_frequency),
    "memory_constrained": (("data.n_bars=4000", *WF_SMALL), 2, 1, memory_constrained),
    "train_test_overrides": (("data.end=2020-03-31",), 1, 1, train_test_overrides),
    "storage_strategy_cleanup": (("data.n_bars=2000",), 1, 2, storage_strategy),
    "quickstart": (("data.n_bars=3000",), 2, 1, quickstart),
}


def test_every_example_has_a_case() -> None:
    names = {p.stem for p in EXAMPLES.glob("*.yaml")}
    missing = names - set(CASES) - {"stream_phase"}  # stream phases: tests/test_stream_*
    assert not missing, f"examples without a test case: {sorted(missing)}"


@pytest.mark.parametrize("name", sorted(CASES))
def test_example_runs(name: str, tmp_path: Path) -> None:
    sets, workers, times, check = CASES[name]
    config = EXAMPLES / f"{name}.yaml"
    runs = [
        Run(phasekit_run(config, tmp_path / "results", *sets, workers=workers))
        for _ in range(times)
    ]
    check(runs)


def test_example_dry_runs_write_nothing(tmp_path: Path) -> None:
    for name in ("optimization_1000_containers", "train_test_overrides"):
        proc = subprocess.run(
            [*CLI, str(EXAMPLES / f"{name}.yaml"), "--dry-run", "--results-dir", str(tmp_path)],
            capture_output=True,
            text=True,
            env={**os.environ, "COLUMNS": "200"},
            timeout=120,
        )
        assert proc.returncode == 0, proc.stderr
        assert "parameter_search" in proc.stdout
    assert not any(tmp_path.iterdir())
