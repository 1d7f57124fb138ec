"""Every example config runs through ``phasekit run`` (a subprocess, on small data) and
leaves what its use case promises: the phases, their results files, the data flow of
their container results and one catalog row per stored item. Each check below follows
the example's comments: every claim a run can show (modes, formats, spills, persistence,
top_k, stream buffers, retention, cleanup, the data the comments describe) is asserted."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.feather as feather
import pyarrow.ipc as ipc
import pyarrow.parquet as pq
import pytest
import yaml

import phasekit
from phasekit.catalog import open_catalog

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
CLI = (sys.executable, "-m", "phasekit.cli", "run")
CONTAINER_RESULTS = re.compile(r"^[a-z]+_\d{5}_results$")


ITEMS = "results.collection.store_container_items=true"
"""The cases check each container's own results items, which are asked for explicitly
(a block window writes its containers' rows in one ``containers`` table otherwise)."""


def phasekit_run(config: Path, results: Path, *sets: str, workers: int = 1) -> dict[str, Any]:
    args = [*CLI, str(config), "--json", "--set", ITEMS]
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

    def aggregate(self, phase: str, window: str | None = None) -> dict[str, Any]:
        folder = self.dir / phase / window if window else self.dir / phase
        return dict(json.loads((folder / "aggregate_results.json").read_text()))

    def selected(self, phase: str) -> list[dict[str, Any]]:
        return list(self.phase_summary(phase)["selected_parameters"])

    def streamed(self, phase: str) -> list[list[dict[str, Any]]]:
        """The persisted parts of a streaming phase's container results, as rows."""
        folder = self.dir / phase / "containers" / ".stream" / "container_results.stream"
        parts = sorted(folder.glob("part-*.arrow"))
        return [ipc.open_file(part).read_all().to_pylist() for part in parts]

    def trades(self, phase: str, window: str | None = None) -> Any:
        folder = self.dir / phase / window if window else self.dir / phase
        # in the phase's file format; in the execution container's store when a
        # `containers: execution` pattern gives it one
        # (a block window's ``trades`` table)
        (path,) = [*folder.glob("trades.*"), *folder.glob("containers/trades.*")]
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
        assert [r for r in run.rows(phase, "trades") if r.window_id == window]


# ---------------------------------------------------------------- one check per use case


def small_workflow(runs: list[Run]) -> None:
    (run,) = runs
    assert list(run.summary["phases"]) == ["optimization", "analysis"]
    assert run.containers("optimization") == 25
    check_backtest_phase(run, "optimization", [None])
    assert run.phase_summary("optimization")["data_flow"] == "memory"
    rows = run.container_rows("optimization")
    assert len(rows) == 25 and all(r.data_reference.startswith("memory://") for r in rows)
    assert {r.state for r in rows} == {"released"}  # only while the run lasted
    assert not (run.dir / "optimization" / "containers").exists()  # nothing written
    for name in ("aggregate_results.json", "trades.arrow", "phase_summary.json"):
        assert (run.dir / "optimization" / name).exists()  # the phase files, catalogued
        assert run.rows("optimization", name.split(".")[0])
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
    assert pq.read_table(files[0]).num_rows == 1  # one row: parameters and metrics
    trades = pq.ParquetFile(run.dir / "parameter_search" / "trades.parquet")
    assert trades.metadata.row_group(0).column(0).compression == "SNAPPY"
    assert not list((run.dir / "parameter_search").rglob("*.json.*"))
    rows = run.container_rows("parameter_search")
    # file mode (and save_all_phases): nothing stays in memory only
    assert len(rows) == 14 and all(r.data_reference.startswith("file://") for r in rows)
    assert not [r for r in run.items if (r.data_reference or "").startswith("memory://")]
    aggregate = run.aggregate("parameter_search")
    assert aggregate["objective"] == {"name": "sortino_ratio", "direction": "maximize"}
    sortino = [r["metrics"]["sortino_ratio"] for r in aggregate["ranking"]]
    assert sortino == sorted(sortino, reverse=True)
    assert len(run.selected("parameter_search")) == 14  # top_k 20 of 14 sets


def realtime_analysis(runs: list[Run]) -> None:
    (run,) = runs
    assert run.containers("live_search") == 24
    check_backtest_phase(run, "live_search", [None])
    assert run.phase_summary("live_search")["data_flow"] == "streaming"
    stream = run.dir / "live_search" / "containers" / ".stream"
    assert list(stream.rglob("manifest.json")) and list(stream.rglob("part-*.arrow"))
    assert run.rows("live_search", "container_results")
    parts = run.streamed("live_search")
    assert len(parts) >= 3 and all(len(part) <= 10 for part in parts)  # buffer_size 10
    results = [row for part in parts for row in part]
    assert len(results) == 24
    # retention_policy minimal: events of closed positions are not retained
    events = [row["events"] for row in results]
    assert sum(e["seen"] for e in events) > 0
    for e in events:
        assert e["evicted"] == e["seen"] - e["retained"]
        assert e["trades"] == 0  # nor summaries of completed trades
        if e["open_positions"] == 0:
            assert e["retained"] == 0
    # no PORTFOLIO_UPDATE traced: no equity curves
    assert not [r for r in run.rows("live_search") if r.entity_name.endswith("_equity")]
    assert run.phase_summary("analysis")["ranked"] == 24
    streamed = run.phase_summary("analysis")["streamed"]  # read while the search ran
    assert streamed["items"] == 24 and streamed["running_rankings"] == 3
    assert streamed["high_water"] <= streamed["capacity"] == 10
    aggregate = run.aggregate("analysis")
    assert aggregate["objective"]["name"] == "total_return"
    returns = [r["metrics"]["total_return"] for r in aggregate["ranking"]]
    assert returns == sorted(returns, reverse=True)
    assert len(run.selected("analysis")) == 3


def mixed_workflow(runs: list[Run]) -> None:
    (run,) = runs
    assert list(run.summary["phases"]) == ["search", "walk_forward_check", "analysis"]
    check_backtest_phase(run, "search", [None])
    stats = run.phase_summary("search")["store_stats"]["-/hybrid"]
    assert stats["store"] == "hybrid" and stats["spills"] > 0  # the tiny budget overflowed
    assert stats["peak_bytes_in_memory"] <= stats["budget_bytes"] + 8192
    assert run.phase_summary("search")["data_flow"] == "hybrid"
    assert len(run.selected("search")) == 3
    windows = run.summary["phases"]["walk_forward_check"]["windows"]
    assert len(windows) == 7
    check_backtest_phase(run, "walk_forward_check", windows)
    assert run.phase_summary("walk_forward_check")["data_flow"] == "file"
    # the 3 best sets of the search re-optimised per window (+ the window's best on test)
    assert run.containers("walk_forward_check") == 7 * (3 + 1)
    for window in windows:
        assert len(run.ranking("walk_forward_check", window)) == 3
    assert run.phase_summary("analysis")["ranked"] == 24  # every search result ranked
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
    # the window's containers table is kept in memory and persisted as the items are
    table = run.dir / "parameter_search" / "containers" / "containers.arrow"
    table_bytes = phasekit.size_of(feather.read_table(table))
    stats = run.phase_summary("parameter_search")["store_stats"]["-/hybrid"]
    # 1000 containers' results and the window's containers table
    assert stats["store"] == "hybrid" and stats["items"] == 1001
    assert stats["items_on_disk"] > 0
    # the store's bound: its budget and the item being put (the window's table, which
    # is larger than this example's 50 KB budget, spilled as it arrives)
    assert stats["peak_bytes_in_memory"] <= stats["budget_bytes"] + max(8192, table_bytes)
    best = run.summary["phases"]["parameter_search"]["best"]
    assert best["container_id"] == run.ranking("parameter_search")[0]["container_id"]
    assert len(run.selected("parameter_search")) == 25  # top_k


def high_frequency(runs: list[Run]) -> None:
    (run,) = runs
    assert run.containers("scalping_search") == 16
    check_backtest_phase(run, "scalping_search", [None])
    summary = run.phase_summary("scalping_search")
    assert summary["data_flow"] == "streaming" and summary["unmatched_patterns"] == []
    # the role containers: data streams the bars, features keeps indicators in memory
    (data,) = [r for r in run.items if r.container_id == "data"]
    assert data.data_reference.startswith("stream://") and data.format == "stream"
    (features,) = [r for r in run.items if r.container_id == "features"]
    assert features.data_reference.startswith("memory://") and features.state == "released"
    parts = run.streamed("scalping_search")
    assert sum(len(p) for p in parts) == 16 and all(len(p) <= 100 for p in parts)
    assert len(run.selected("scalping_search")) == 4  # top_k
    trades = run.trades("scalping_search")
    assert trades.num_rows > 0
    assert all(q == int(q) for q in trades.column("quantity").to_pylist())  # whole units


def memory_constrained(runs: list[Run]) -> None:
    (run,) = runs
    windows = run.summary["phases"]["walk_forward"]["windows"]
    assert len(windows) == 7
    check_backtest_phase(run, "walk_forward", windows)
    summary = run.phase_summary("walk_forward")
    assert summary["data_flow"] == "hybrid" and summary["unmatched_patterns"] == []
    assert len(summary["windows_detail"]) == 7
    # hybrid, 50 MB for the whole phase: each window's store is a view under that budget
    stats = summary["store_stats"]
    budgets = {k: v["budget_bytes"] for k, v in stats.items() if "hybrid" in k}
    assert sorted(budgets) == sorted(["-/hybrid", *(f"{w}/hybrid" for w in windows)])
    assert set(budgets.values()) == {50 * 1024 * 1024}
    assert stats["-/hybrid"]["items"] == sum(stats[f"{w}/hybrid"]["items"] for w in windows)
    assert stats["-/hybrid"]["peak_bytes_in_memory"] <= 50 * 1024 * 1024 + 8192
    # the execution container's file store holds each window's trades
    for window in windows:
        assert list((run.dir / "walk_forward" / window / "containers").glob("trades.*"))
        assert [r for r in run.rows("walk_forward", "trades") if r.window_id == window]
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
    # persist: every stage's results are files
    for run in runs:
        rows = run.container_rows("screening")
        assert rows and all(r.data_reference.startswith("file://") for r in rows)
        assert len(run.selected("selection")) == 2  # top_k of the selection
    assert len(second.selected("screening")) == 5  # top_k of the screening
    # `phasekit du`: the first run's screening items are gone, its selection stays
    results = str(first.dir.parent)
    du = subprocess.run(
        [sys.executable, "-m", "phasekit.cli", "du", "--results-dir", results, "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    usage = {(u["process_id"], u["stage_name"]) for u in json.loads(du.stdout)["usage"]}
    first_id, second_id = first.summary["run_id"], second.summary["run_id"]
    assert (first_id, "screening") not in usage and (first_id, "selection") in usage
    assert {(second_id, "screening"), (second_id, "selection")} <= usage


def quickstart(runs: list[Run]) -> None:
    (run,) = runs
    # 120 sets searched on train, the 10 best run on test
    assert run.containers("parameter_search") == 120 + 10
    check_backtest_phase(run, "parameter_search", ["train", "test"])
    check_backtest_phase(run, "validation", ["test"])  # the selected sets, once
    assert len(run.ranking("parameter_search", "train")) == 120
    assert len(run.selected("parameter_search")) == 10
    # the first 80% of the bars (3,000 here) to train, the last 20% to test
    for window, bars in (("train", 2400), ("test", 600)):
        (path, *_) = (run.dir / "parameter_search" / window / "containers").glob("*_results.*")
        window_info = json.loads(feather.read_table(path).column("window")[0].as_py())
        assert window_info["bars"] == bars
    # validated with equity tracking
    equity = [r for r in run.rows("validation") if r.entity_name.endswith("_equity")]
    assert len(equity) == 10
    # the workflow's defaults (as examples/train_test_overrides.yaml describes them):
    # the search's results on disk, validation's in memory
    assert run.phase_summary("parameter_search")["data_flow"] == "file"
    assert run.phase_summary("validation")["data_flow"] == "memory"
    assert all(r.data_reference.startswith("memory://") for r in run.container_rows("validation"))


def stream_phase(runs: list[Run]) -> None:
    (run,) = runs
    # integers -> square root -> a collecting sink, stored and catalogued
    (row,) = run.rows("numbers", "sink_out")
    assert row.data_reference.startswith("file://")
    values = json.loads(row.path.read_text())["result"]
    assert len(values) == 10000
    assert np.allclose(values, np.sqrt(np.arange(10000)))
    # the run's summary reports the sink's results
    (report,) = run.summary["phases"]["numbers"]["rows"]
    assert report["sample"] == "sink" and report["parameters"] == {"sink": "out", "items": 10000}


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
    "stream_phase": ((), 1, 1, stream_phase),
}


def test_every_example_has_a_case() -> None:
    names = {p.stem for p in EXAMPLES.glob("*.yaml")}
    missing = names - set(CASES)
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


def _plan(name: str, tmp_path: Path) -> dict[str, list[str]]:
    """The cells of each phase's row in ``phasekit run --dry-run``'s plan table."""
    proc = subprocess.run(
        [*CLI, str(EXAMPLES / f"{name}.yaml"), "--dry-run", "--results-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "250"},
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    rows = [line.strip("│ ").split("│") for line in proc.stdout.splitlines() if "│" in line]
    return {cells[0].strip(): [c.strip() for c in cells] for cells in rows if cells[0].strip()}


def test_example_dry_runs_write_nothing(tmp_path: Path) -> None:
    for name in ("optimization_1000_containers", "train_test_overrides"):
        assert "parameter_search" in _plan(name, tmp_path)
    assert not any(tmp_path.iterdir())


WINDOWS, CONTAINERS = 4, 5  # the plan's columns


@pytest.mark.parametrize(
    ("name", "phase", "column", "value"),
    [
        ("large_optimization_file", "parameter_search", CONTAINERS, "394"),  # 20 x 20 - 6
        ("optimization_1000_containers", "parameter_search", CONTAINERS, "1000"),  # 20 x 50
        ("quickstart", "parameter_search", WINDOWS, "train 120, test 10"),
        ("quickstart", "validation", WINDOWS, "test 10"),
    ],
)
def test_example_grids_are_the_sizes_their_comments_give(
    name: str, phase: str, column: int, value: str, tmp_path: Path
) -> None:
    assert _plan(name, tmp_path)[phase][column] == value


# example -> (comment's claim, the check of the example's bars)
DATA_CLAIMS: dict[str, Callable[[Any], bool]] = {
    # "20,000 bars: about 51 weekday sessions of 09:30-16:00, a random walk of about 20%
    # volatility a year, annualised at 252 x 390 bars a year"
    "quickstart": lambda b: (
        b.n == 20000
        and b.periods_per_year == 252 * 390
        and round(b.n / 390) == 51
        and b.sessions in (51, 52)
        and abs(b.annual_vol - 0.20) < 0.02
        and b.weekdays_only
        and b.in_session
    ),
    # "6000 # 7 bars a 09:30-16:00 session: about 3.4 years"
    "small_workflow_memory": lambda b: (
        b.n == 6000 and round(b.sessions / 252, 1) == 3.4 and b.in_session
    ),
    # "one-second bars: about five 6.5-hour sessions"
    "high_frequency": lambda b: b.step_s == 1 and round(b.n / (6.5 * 3600)) == 5 and b.in_session,
    # "about 110% a year, a crypto-like market", "24/7 ... annualised at 365 x 1440 bars",
    # "the 35 days of bars"
    "realtime_analysis_streaming": lambda b: (
        b.periods_per_year == 365 * 1440
        and abs(b.annual_vol - 1.10) < 0.05
        and not b.weekdays_only
        and round(b.days) == 35
    ),
    # "two years of minute bars"
    "large_optimization_file": lambda b: b.step_s == 60 and round(b.sessions / 252) == 2,
}


class _Bars:
    def __init__(self, name: str) -> None:
        from phasekit.workflow.executor import DataSpec, bars_for

        config = yaml.safe_load((EXAMPLES / f"{name}.yaml").read_text())
        bars = bars_for(DataSpec.from_config(config["data"]))
        ts = np.asarray(bars.ts).astype("int64").view("datetime64[ns]").astype("datetime64[s]")
        self.n = len(ts)
        self.periods_per_year = bars.periods_per_year
        self.sessions = len(np.unique(ts.astype("datetime64[D]")))
        self.days = float((ts[-1] - ts[0]) / np.timedelta64(1, "D"))
        self.step_s = int(np.median(np.diff(ts).astype(np.int64)))
        returns = np.diff(np.log(np.asarray(bars.close)))
        self.annual_vol = float(returns.std() * np.sqrt(bars.periods_per_year))
        weekday = (ts.astype("datetime64[D]").astype(np.int64) + 3) % 7  # 0 = Monday
        self.weekdays_only = bool((weekday < 5).all())
        minute = (ts - ts.astype("datetime64[D]")).astype(np.int64) // 60
        self.in_session = bool(((minute >= 9 * 60 + 30) & (minute < 16 * 60)).all())


@pytest.mark.parametrize("name", sorted(DATA_CLAIMS))
def test_example_data_is_what_its_comments_say(name: str) -> None:
    assert DATA_CLAIMS[name](_Bars(name))


def test_realtime_example_returns_are_the_ones_its_comment_quotes(tmp_path: Path) -> None:
    """'from a lucky +14% on 51 trades to -71% on 945 trades' (full data, seed 21)."""
    run = Run(phasekit_run(EXAMPLES / "realtime_analysis_streaming.yaml", tmp_path))
    results = [row for part in run.streamed("live_search") for row in part]
    metrics = sorted((r["metrics"] for r in results), key=lambda m: m["total_return"])
    worst, best = metrics[0], metrics[-1]
    assert (round(best["total_return"], 2), best["trade_count"]) == (0.14, 51)
    assert (round(worst["total_return"], 2), worst["trade_count"]) == (-0.71, 945)


def test_streamed_results_are_persisted_every_buffer_size_items(tmp_path: Path) -> None:
    """realtime_analysis_streaming: 'persisted in the background every `buffer_size`
    items' (seen with a buffer of 5: 24 results in parts of at most 5)."""
    sets = ("data.n_bars=3000", "data_flow.streaming_settings.buffer_size=5")
    run = Run(phasekit_run(EXAMPLES / "realtime_analysis_streaming.yaml", tmp_path, *sets))
    sizes = [len(part) for part in run.streamed("live_search")]
    assert sum(sizes) == 24 and len(sizes) >= 5 and max(sizes) <= 5
