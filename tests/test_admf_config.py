"""The configuration vocabulary of the design notes' source project (docs/migration.md,
"Configuration vocabulary"): every key it maps onto phasekit's settings changes what a
run writes, keeps or records; every key phasekit has no counterpart for is refused with
a message saying what to write instead. And ``results.layout: admf``: the folders, file
names and keys of the source project's ``_save_results_to_disk``.

The YAML written here uses the source project's keys and structure (its
``config/example_with_results.yaml``, its memory-management notes) with phasekit's own
data and strategy sections.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow.feather as feather
import pyarrow.parquet as pq
import pytest

from phasekit.catalog import open_catalog
from phasekit.errors import ConfigError
from phasekit.workflow import RunResult, run
from phasekit.workflow.run import load_and_resolve

PHASE = "parameter_search"
JSON_FILES = {"data_flow": {"mode": "file", "file_settings": {"format": "json"}}}


def config(folder: Path, /, **extra: Any) -> dict[str, Any]:
    """A small optimization; the cases look at each container's own items, so these are
    asked for (``results.collection.store_container_items``)."""
    results = dict(extra.pop("results", {}))
    results["collection"] = {"store_container_items": True, **results.get("collection", {})}
    return {
        "workflow": "optimization",
        "run_name": "vocab",
        "results_dir": str(folder),
        "data": {"n_bars": 400, "frequency": "1h", "seed": 3, "volatility": 0.004},
        "strategy": {"type": "sma_crossover"},
        "parameter_space": {"strategy.fast": [3, 5], "strategy.slow": [20, 40]},
        "top_k": 2,
        "results": results,
        **extra,
    }


def phase_dir(res: RunResult, phase: str = PHASE) -> Path:
    return res.run_dir / phase


def events_of(res: RunResult) -> list[dict[str, Any]]:
    files = sorted((phase_dir(res) / "containers").glob("*_results.json"))
    assert files
    return [json.loads(f.read_text())["events"] for f in files]


def go(tmp: Path, **extra: Any) -> RunResult:
    return run(config(tmp / "results", **extra), workers=1)


# ------------------------------------------------------------------ accepted keys: effects


def _retained_at_most(n: int) -> Callable[[RunResult], None]:
    def check(res: RunResult) -> None:
        events = events_of(res)
        assert all(e["retained"] <= n for e in events) and any(e["seen"] > n for e in events)

    return check


def _kept_all(res: RunResult) -> None:
    events = events_of(res)
    assert all(e["evicted"] == 0 and e["retained"] == e["seen"] > 2 for e in events)


def _no_events(res: RunResult) -> None:
    assert all(e["seen"] == 0 for e in events_of(res))


def _no_trades_file(res: RunResult) -> None:
    assert not list(phase_dir(res).glob("all_trades.*"))
    assert not list(phase_dir(res).glob("trades.*"))
    assert list(phase_dir(res).glob("containers/*_results.json"))


def _file_mode(ext: str) -> Callable[[RunResult], None]:
    def check(res: RunResult) -> None:
        assert len(list((phase_dir(res) / "containers").glob(f"*_results.{ext}"))) == 4

    return check


def _uncompressed(res: RunResult) -> None:
    files = sorted((phase_dir(res) / "containers").glob("*_results.parquet"))
    assert len(files) == 4
    assert pq.ParquetFile(files[0]).metadata.row_group(0).column(0).compression == "UNCOMPRESSED"


def _partitioned(res: RunResult) -> None:
    folders = sorted((phase_dir(res) / "containers").glob("*_results.parquet"))
    assert len(folders) == 4 and all(f.is_dir() for f in folders)
    assert list(folders[0].glob("container_id=portfolio_*"))


def _spilled(res: RunResult) -> None:
    summary = json.loads((phase_dir(res) / "phase_summary.json").read_text())
    stats = summary["store_stats"]["-/hybrid"]
    # the 4 containers' results and the window's containers table (a block window)
    assert stats["items"] == 5 and stats["items_on_disk"] > 0


def _equity_files(present: bool) -> Callable[[RunResult], None]:
    def check(res: RunResult) -> None:
        found = list((phase_dir(res) / "containers").glob("*_equity.*"))
        assert bool(found) is present and list(phase_dir(res).glob("containers/*_results.*"))

    return check


PARQUET = {"data_flow": {"mode": "file"}, "results": {"storage": {"format": "parquet"}}}
TRACED_EQUITY = {"event_tracing": ["POSITION_OPEN", "POSITION_CLOSE", "FILL", "PORTFOLIO_UPDATE"]}

RUN_CASES: dict[str, tuple[dict[str, Any], Callable[[RunResult], None]]] = {
    "results.retention_policy": (
        {**JSON_FILES, "results": {"retention_policy": "keep_all"}},
        _kept_all,
    ),
    "results.max_events": (
        {**JSON_FILES, "results": {"retention_policy": "sliding_window", "max_events": 3}},
        _retained_at_most(3),
    ),
    "results.results_storage": ({"results": {"results_storage": "disk"}}, _file_mode("arrow")),
    "results.collection.store_trades": (
        {**JSON_FILES, "results": {"collection": {"store_trades": False}}},
        _no_trades_file,
    ),
    "results.collection.store_equity_curve-false": (
        {
            **JSON_FILES,
            **TRACED_EQUITY,
            "results": {"collection": {"store_equity_curve": False}},
        },
        _equity_files(False),
    ),
    "results.collection.store_equity_curve-true": (
        {**JSON_FILES, **TRACED_EQUITY, "results": {"collection": {"store_equity_curve": True}}},
        _equity_files(True),
    ),
    "results.storage.format": (PARQUET, _file_mode("parquet")),
    "results.storage.compress": (
        {
            "data_flow": {"mode": "file"},
            "results": {"storage": {"format": "parquet", "compress": False}},
        },
        _uncompressed,
    ),
    "results.storage.partition_by": (
        {
            "data_flow": {"mode": "file"},
            "results": {"storage": {"format": "parquet", "partition_by": ["container_id"]}},
        },
        _partitioned,
    ),
    "results.memory": (
        {"results": {"memory": {"storage_mode": "auto", "global_limit_mb": 0.001}}},
        _spilled,
    ),
    "results.memory.storage_mode-disk": (
        {"results": {"memory": {"storage_mode": "disk"}}},
        _file_mode("arrow"),
    ),
    "execution.retention_policy": (
        {
            **JSON_FILES,
            "execution": {"retention_policy": "sliding_window", "sliding_window_size": 3},
        },
        _retained_at_most(3),
    ),
    "execution.event_tracing": (
        {**JSON_FILES, "execution": {"event_tracing": ["PORTFOLIO_UPDATE"]}},
        _equity_files(True),
    ),
    "execution.enable_event_tracing": (
        {**JSON_FILES, "execution": {"enable_event_tracing": False}},
        _no_events,
    ),
    "execution.trace_settings": (
        {
            **JSON_FILES,
            "execution": {
                "trace_settings": {
                    "retention_policy": "sliding_window",
                    "max_events": 2,
                    "events_to_trace": ["FILL", "POSITION_CLOSE"],
                }
            },
        },
        _retained_at_most(2),
    ),
    "execution.trace_settings.container_settings": (
        {
            **JSON_FILES,
            "execution": {
                "trace_settings": {
                    "container_settings": {
                        "portfolio*": {"max_events": 2, "retention_policy": "sliding_window"}
                    }
                }
            },
        },
        _retained_at_most(2),
    ),
    "container_settings-enabled": (
        {
            **JSON_FILES,
            "execution": {"trace_settings": {"container_settings": {"*": {"enabled": False}}}},
        },
        _no_events,
    ),
    "trace_level-none": ({**JSON_FILES, "trace_level": "none"}, _no_events),
    "trace_level-minimal": ({**JSON_FILES, "trace_level": "minimal"}, _no_trades_file),
    "execution.trace_level-debug": (
        {**JSON_FILES, "execution": {"trace_level": "DEBUG"}, **TRACED_EQUITY},
        _equity_files(True),
    ),
    "trace_level-metrics": (
        {**JSON_FILES, "trace_level": "metrics"},
        _equity_files(True),  # metrics traces PORTFOLIO_UPDATE: the curve is kept
    ),
    "containers.results": (
        {
            **JSON_FILES,
            "containers": {"portfolio_*": {"results": {"retention_policy": "keep_all"}}},
        },
        _kept_all,
    ),
}


@pytest.mark.parametrize("case", list(RUN_CASES))
def test_each_key_takes_effect(tmp_path: Path, case: str) -> None:
    extra, check = RUN_CASES[case]
    res = go(tmp_path, **extra)
    try:
        check(res)
    finally:
        res.close()


def test_the_defaults_keep_what_the_cases_change(tmp_path: Path) -> None:
    # the baseline the cases differ from: trades written, events retained, no equity
    res = go(tmp_path, **JSON_FILES)
    try:
        assert list(phase_dir(res).glob("trades.*"))
        assert all(e["evicted"] > 0 for e in events_of(res))
        _equity_files(False)(res)
    finally:
        res.close()


def equity_rows(res: RunResult) -> list[int]:
    files = sorted((phase_dir(res) / "containers").glob("*_equity.arrow"))
    assert len(files) == 4
    return [feather.read_table(f).num_rows for f in files]


@pytest.mark.parametrize(
    ("settings", "interval"),
    [
        ({"results": {"collection": {"snapshot_interval": 7}}}, 7),
        ({"trace_level": "normal"}, 100),
        ({"execution": {"trace_level": "debug"}}, 10),
    ],
)
def test_snapshot_interval_keeps_every_nth_equity_point(
    tmp_path: Path, settings: dict[str, Any], interval: int
) -> None:
    files = {"data_flow": {"mode": "file"}, **TRACED_EQUITY}
    base = run(config(tmp_path / "a", **files), workers=1)
    every = run(config(tmp_path / "b", **files, **settings), workers=1)
    try:
        full, kept = equity_rows(base), equity_rows(every)
        assert all(k == n // interval for n, k in zip(full, kept)) and min(full) > interval
        first = sorted((phase_dir(base) / "containers").glob("*_equity.arrow"))[0]
        again = sorted((phase_dir(every) / "containers").glob("*_equity.arrow"))[0]
        want = feather.read_table(first).column("equity").to_pylist()[interval - 1 :: interval]
        assert feather.read_table(again).column("equity").to_pylist() == want
    finally:
        base.close()
        every.close()


def test_results_override_sets_one_phase(tmp_path: Path) -> None:
    cfg = config(
        tmp_path / "results",
        **JSON_FILES,
        phases=[
            {"name": "search", "results_override": {"retention_policy": "keep_all"}},
            {"name": "again"},
        ],
    )
    cfg.pop("workflow")
    res = run(cfg, workers=1)
    try:
        assert all(e["evicted"] == 0 for e in events_of_phase(res, "search"))
        assert all(e["evicted"] > 0 for e in events_of_phase(res, "again"))
    finally:
        res.close()


def events_of_phase(res: RunResult, phase: str) -> list[dict[str, Any]]:
    files = sorted((res.run_dir / phase / "containers").glob("*_results.json"))
    assert files
    return [json.loads(f.read_text())["events"] for f in files]


def test_phase_overrides_take_the_source_projects_phase_names(tmp_path: Path) -> None:
    cfg = config(
        tmp_path / "results",
        workflow="train_test_optimization",
        phase_overrides={
            "training": {"results_storage": "memory", "retention_policy": "minimal"},
            "testing": {"results_storage": "disk"},
        },
    )
    resolved = load_and_resolve(cfg)
    search = resolved.phase("parameter_search").settings
    assert search.retention_policy == "minimal"
    assert search.provenance("retention_policy").path == "phase_overrides.training.retention_policy"
    assert resolved.phase("validation").data_flow.mode == "file"
    res = run(cfg, workers=1)
    try:
        # training ran in memory (no container files), testing wrote them (disk)
        assert not list((phase_dir(res) / "train" / "containers").glob("*_results.arrow"))
        assert list((res.run_dir / "validation" / "test" / "containers").glob("*_results.arrow"))
    finally:
        res.close()
    at_runtime = load_and_resolve(cfg, {"phase_overrides.testing.retention_policy": "keep_all"})
    testing = at_runtime.phase("validation").settings
    assert testing.retention_policy == "keep_all"
    assert testing.provenance("retention_policy").path == (
        "--set phase_overrides.testing.retention_policy"
    )
    both = {**cfg, "phase_overrides": {"training": {}, "parameter_search": {}}}
    with pytest.raises(ConfigError, match="another name of it, keep one"):
        load_and_resolve(both)


def test_order_request_is_phasekits_order_kind(tmp_path: Path) -> None:
    res = go(tmp_path, event_tracing=["ORDER_REQUEST", "FILL"])
    try:
        catalog = open_catalog(res.catalog_url)
        try:
            recorded = catalog.resolve_run(res.run_id).config
        finally:
            catalog.close()
        assert recorded["phases"][PHASE]["settings"]["event_tracing"] == ["ORDER", "FILL"]
    finally:
        res.close()


# ------------------------------------------------------------------ refused keys


REFUSED = {
    "POSITION_UPDATE": ({"event_tracing": ["POSITION_UPDATE"]}, "write those instead"),
    "streaming_metrics": (
        {"results": {"collection": {"streaming_metrics": False}}},
        "always computes metrics while events stream",
    ),
    "max_equity_points": (
        {"results": {"collection": {"max_equity_points": 100}}},
        "keeps every equity point",
    ),
    "compress-true": ({"results": {"storage": {"compress": True}}}, "name the codec"),
    "location": ({"results": {"storage": {"location": "./r/{phase_name}/"}}}, "write results_dir"),
    "memory_threshold_mb": (
        {"results": {"memory": {"memory_threshold_mb": 50}}},
        "memory.global_limit_mb",
    ),
    "trace_dir": ({"execution": {"trace_settings": {"trace_dir": "./traces"}}}, "no event trace"),
    "phase-container_settings": (
        {
            "phase_overrides": {
                PHASE: {"execution": {"trace_settings": {"container_settings": {"p*": {}}}}}
            }
        },
        "set it in the top-level execution.trace_settings",
    ),
    "container_settings-save_to_disk": (
        {"execution": {"trace_settings": {"container_settings": {"p*": {"save_to_disk": True}}}}},
        "no event trace files",
    ),
    "container-store_trades": (
        {"containers": {"portfolio_*": {"results": {"collection": {"store_trades": False}}}}},
        "set per phase, not per container",
    ),
    "container-metrics.enabled": (
        {"containers": {"portfolio_*": {"metrics": {"enabled": False}}}},
        "portfolio containers always compute metrics",
    ),
    "container-annualization_factor": (
        {"containers": {"portfolio_*": {"metrics": {"annualization_factor": 365}}}},
        "data.periods_per_year",
    ),
    "phase-layout": (
        {"phase_overrides": {PHASE: {"results": {"layout": "admf"}}}},
        "run-wide setting; set it in the top-level results block",
    ),
    "trace_level-unknown": ({"trace_level": "verbose"}, "allowed: none, minimal"),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_unsupported_keys_say_what_to_write(tmp_path: Path, case: str) -> None:
    extra, message = REFUSED[case]
    with pytest.raises(ConfigError, match=message):
        load_and_resolve(config(tmp_path / "results", **extra))


def test_containers_win_over_container_settings(tmp_path: Path) -> None:
    cfg = config(
        tmp_path / "results",
        execution={
            "trace_settings": {
                "container_settings": {
                    "portfolio_*": {"max_events": 50, "trace_level": "full"},
                    "portfolio_00001": {"enabled": False},
                }
            }
        },
        containers={"portfolio_*": {"sliding_window_size": 60}},
    )
    phase = load_and_resolve(cfg).phase(PHASE)
    one = phase.container("portfolio_00000").settings
    assert one.sliding_window_size == 60 and one.retention_policy == "keep_all"
    assert one.provenance("retention_policy").path == (
        "execution.trace_settings.container_settings.portfolio_*.trace_level"
    )
    assert phase.container("portfolio_00001").settings.event_tracing == ()


def test_true_switches_load(tmp_path: Path) -> None:
    cfg = config(
        tmp_path / "results",
        results={"streaming_metrics": True, "collection": {"streaming_metrics": True}},
        containers={"portfolio_*": {"metrics": {"enabled": True}}},
    )
    assert load_and_resolve(cfg).phase(PHASE).settings.retention_policy == "trade_complete"


def test_a_key_next_to_a_preset_wins_and_two_spellings_must_agree(tmp_path: Path) -> None:
    cfg = config(tmp_path / "results", trace_level="debug", retention_policy="minimal")
    settings = load_and_resolve(cfg).phase(PHASE).settings
    assert settings.retention_policy == "minimal" and settings.sliding_window_size == 50_000
    clash = config(tmp_path / "results", results={"max_events": 5}, sliding_window_size=6)
    with pytest.raises(ConfigError, match="conflicts with"):
        load_and_resolve(clash)


# ------------------------------------------------------------------ results.layout: admf

# The keys of the source project's files, from its sequencer's _save_results_to_disk and
# _aggregate_portfolio_metrics and its tracer's get_results / StreamingMetrics.get_metrics.
AGGREGATE_KEYS = {"aggregate_metrics", "total_trades", "containers_tracked"}
AGGREGATE_METRICS_KEYS = {
    "best_sharpe_ratio",
    "best_portfolio_metrics",
    "portfolio_count",
    "avg_sharpe_ratio",
    "avg_total_return",
    "avg_max_drawdown",
    "avg_win_rate",
}
PHASE_SUMMARY_KEYS = {"phase", "timestamp", "containers", "metrics_summary", "config"}
PHASE_SUMMARY_CONFIG_KEYS = {"results_storage", "event_tracing"}
CONTAINER_KEYS = {"metrics", "summary", "trades", "equity_curve"}
SUMMARY_KEYS = {
    "initial_capital",
    "final_value",
    "total_return",
    "sharpe_ratio",
    "max_drawdown",
    "total_trades",
    "win_rate",
}
METRIC_KEYS = {
    "sharpe_ratio",
    "total_return",
    "max_drawdown",
    "win_rate",
    "profit_factor",
    "total_trades",
    "winning_trades",
    "losing_trades",
    "total_pnl",
    "gross_profit",
    "gross_loss",
    "current_value",
    "events_retained",
}
TRADE_KEYS = {
    "symbol",
    "direction",
    "entry_price",
    "exit_price",
    "quantity",
    "entry_time",
    "exit_time",
    "pnl",
}
EQUITY_POINT_KEYS = {"timestamp", "value", "drawdown", "total_return"}


def read(path: Path) -> Any:
    return json.loads(path.read_text())


def test_the_admf_layout_writes_the_source_projects_files(
    tmp_path: Path, backend_name: str
) -> None:
    cfg = config(
        tmp_path / "results",
        run_name="my_experiment_2024_01",
        results={
            "layout": "admf",
            "collection": {"store_trades": True, "store_equity_curve": True},
        },
        **TRACED_EQUITY,
    )
    res = run(cfg, workers=1)
    try:
        folder = tmp_path / "results" / "my_experiment_2024_01" / PHASE
        names = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
        containers = [f"containers/portfolio_0000{i}_results.json" for i in range(4)]
        assert names == [
            "aggregate_results.json",
            "all_trades.json",
            *containers,
            "phase_summary.json",
        ]
        agg = read(folder / "aggregate_results.json")
        assert set(agg) == AGGREGATE_KEYS
        assert set(agg["aggregate_metrics"]) == AGGREGATE_METRICS_KEYS
        assert agg["containers_tracked"] == 4
        trades = read(folder / "all_trades.json")
        assert agg["total_trades"] == len(trades) > 0
        assert all(set(t) == TRADE_KEYS and t["direction"] in ("long", "short") for t in trades)
        summary = read(folder / "phase_summary.json")
        assert set(summary) == PHASE_SUMMARY_KEYS
        assert set(summary["config"]) == PHASE_SUMMARY_CONFIG_KEYS
        assert summary["phase"] == PHASE and summary["containers"] == [
            c.removeprefix("containers/").removesuffix("_results.json") for c in containers
        ]
        assert summary["metrics_summary"] == agg["aggregate_metrics"]
        records = [read(folder / c) for c in containers]
        best = max(records, key=lambda r: r["metrics"]["sharpe_ratio"])
        assert agg["aggregate_metrics"]["best_portfolio_metrics"] == best["metrics"]
        total = sum(r["metrics"]["total_return"] for r in records) / 4
        assert agg["aggregate_metrics"]["avg_total_return"] == pytest.approx(total)
        for record in records:
            assert set(record) == CONTAINER_KEYS
            assert set(record["summary"]) == SUMMARY_KEYS
            assert METRIC_KEYS <= set(record["metrics"])
            assert record["metrics"]["max_drawdown"] >= 0  # the source project's sign
            assert record["metrics"]["total_trades"] == len(record["trades"])
            assert all(set(p) == EQUITY_POINT_KEYS for p in record["equity_curve"])
        assert sum(len(r["trades"]) for r in records) == len(trades)
        # the catalog records every file written there
        catalog = open_catalog(res.catalog_url)
        try:
            recorded = {Path(i.path).resolve() for i in catalog.list_items(res.run_id) if i.path}
        finally:
            catalog.close()
        assert {(folder / n).resolve() for n in names} <= recorded
        # phasekit's own run folder is still written (resume, dependent phases, CLI)
        assert (phase_dir(res) / "phase_summary.json").exists()
    finally:
        res.close()


def test_the_admf_layout_leaves_out_what_is_not_collected(tmp_path: Path) -> None:
    cfg = config(
        tmp_path / "results",
        results={"layout": "admf", "collection": {"store_trades": False}},
    )
    res = run(cfg, workers=1)
    try:
        folder = tmp_path / "results" / "vocab" / PHASE
        assert not (folder / "all_trades.json").exists()
        record = read(folder / "containers" / "portfolio_00000_results.json")
        assert set(record) == {"metrics", "summary"}
        assert read(folder / "aggregate_results.json")["total_trades"] == 0
    finally:
        res.close()
    # a second run would write over the first one's files: refused before it starts
    with pytest.raises(ConfigError, match="exists from an earlier run"):
        run(cfg, workers=1)


def test_the_default_layout_is_phasekits(tmp_path: Path) -> None:
    res = go(tmp_path)
    try:
        assert not (tmp_path / "results" / "vocab").exists()
        assert (phase_dir(res) / "phase_summary.json").exists()
    finally:
        res.close()


def test_the_layout_names_one_owner(tmp_path: Path) -> None:
    from phasekit.registry import RESULTS_LAYOUTS

    with pytest.raises(ConfigError, match="allowed: " + ", ".join(RESULTS_LAYOUTS)):
        load_and_resolve(config(tmp_path / "results", results={"layout": "original"}))


# ------------------------------------------------------------------ the source project's files


FOREIGN = {
    "strategies": (
        "workflow: optimization\nresults: {retention_policy: minimal}\nsymbols: [SPY]\n"
        "strategies:\n  - {type: momentum}\nclassifiers: []\n",
        "line 4: section 'strategies'",
    ),
    "renamed": (
        "symbols: [SPY]\nexecution: {enable_event_tracing: true}\n",
        "line 1: section 'symbols'",
    ),
    "workflow-mapping": (
        "workflow:\n  name: x\n  phases: []\nresults: {max_events: 10}\n",
        "section 'workflow'",
    ),
    "strategy-list": (
        "workflow: optimization\nstrategy:\n  - {type: momentum}\n",
        "line 2: section 'strategy'",
    ),
    "data.start_date": (
        "workflow: optimization\ndata:\n  start_date: '2020-01-01'\n",
        "line 3: section 'data.start_date'",
    ),
}


@pytest.mark.parametrize("case", list(FOREIGN))
def test_a_source_project_section_is_refused_in_one_line(tmp_path: Path, case: str) -> None:
    text, message = FOREIGN[case]
    path = tmp_path / "original.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as err:
        load_and_resolve(path)
    assert "\n" not in str(err.value) and "not supported by phasekit" in str(err.value)


def test_a_file_in_the_source_projects_vocabulary_loads_and_runs(tmp_path: Path) -> None:
    # example_with_results.yaml's keys and structure, with phasekit's data and strategy
    text = f"""
workflow: train_test_optimization
results_dir: {tmp_path / "results"}
results:
  retention_policy: trade_complete
  max_events: 1000
  collection:
    streaming_metrics: true
    store_trades: false
    store_equity_curve: false
    store_container_items: true
  storage:
    format: parquet
    compress: false
  memory:
    global_limit_mb: 2000
    storage_mode: auto
phase_overrides:
  training:
    results_storage: disk
    event_tracing: ['POSITION_OPEN', 'POSITION_CLOSE', 'FILL', 'PORTFOLIO_UPDATE']
    retention_policy: sliding_window
  testing:
    results:
      collection: {{store_trades: true}}
data: {{n_bars: 400, frequency: 1h, seed: 3}}
strategy: {{type: sma_crossover}}
parameter_space: {{strategy.fast: [3, 5], strategy.slow: [20, 40]}}
execution:
  enable_event_tracing: true
  trace_settings:
    events_to_trace: [ORDER_REQUEST, FILL, POSITION_OPEN, POSITION_CLOSE]
trace_level: normal
"""
    path = tmp_path / "example_with_results.yaml"
    path.write_text(text)
    resolved = load_and_resolve(path)
    assert resolved.phase("parameter_search").data_flow.file.format == "parquet"
    assert "trades" not in resolved.phase("parameter_search").output
    assert "trades" in resolved.phase("validation").output
    res = run(path, workers=1)
    try:
        search = phase_dir(res) / "train"
        assert len(list((search / "containers").glob("*_results.parquet"))) == 4
        assert not list(search.glob("trades.*"))
        assert list((res.run_dir / "validation" / "test").glob("trades.*"))
    finally:
        res.close()


def test_config_show_loads_the_vocabulary_and_lists_a_foreign_section_run_refuses(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from phasekit.cli import main

    good = tmp_path / "with_results.yaml"
    good.write_text(
        "workflow: optimization\nresults:\n  max_events: 500\n  retention_policy: sliding_window\n"
        "phase_overrides:\n  parameter_search:\n    execution: {trace_level: debug}\n"
    )
    assert main(["config", "show", str(good), "--json"]) == 0
    view = json.loads(capsys.readouterr().out)
    settings = view["phases"][PHASE]["settings"]
    # the phase's preset wins over the top level; the top level's max_events is below it
    assert settings["sliding_window_size"] == 50_000
    assert settings["sources"]["sliding_window_size"]["path"] == (
        "phase_overrides.parameter_search.execution.trace_level"
    )
    assert view["base"]["sources"]["sliding_window_size"]["path"] == "results.max_events"
    bad = tmp_path / "original.yaml"
    bad.write_text("workflow: optimization\nresults: {max_events: 5}\nclassifiers: []\n")
    assert main(["config", "show", str(bad), "--json"]) == 0
    view = json.loads(capsys.readouterr().out)
    assert view["base"]["sliding_window_size"] == 5
    assert [(u["path"], u["line"]) for u in view["unsupported"]] == [("classifiers", 3)]
    assert main(["run", str(bad)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "section 'classifiers'" in err and "line 3" in err
