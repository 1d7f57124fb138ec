"""Every data-flow setting a run accepts changes what it writes, keeps or records.

Each case runs a small single-pass optimisation (6 parameter sets) with one setting
changed and checks the effect in the results folder, the catalog or the summary. The
cases are the rows of docs/config.md "Where results go", the phase ``output`` list and
the container patterns (``containers.<pattern>``: mode, memory limit, role containers).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb
import polars as pl
import pyarrow.feather as feather
import pyarrow.parquet as pq
import pytest

from phasekit.catalog import open_catalog
from phasekit.errors import ConfigError
from phasekit.workflow import RunResult, run

PHASE = "parameter_search"


def config(results: Path, **extra: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "workflow": "optimization",
        "run_name": "fx",
        "results_dir": str(results),
        "data": {"n_bars": 800, "frequency": "1h", "seed": 3, "volatility": 0.004},
        "strategy": {"type": "sma_crossover"},
        "parameter_space": {"strategy.fast": [3, 5, 8], "strategy.slow": [20, 40]},
        "portfolio": {"commission_bps": 1},
        "top_k": 2,
        # the cases look at each container's own items too: asked for explicitly
        "results": {"collection": {"store_container_items": True}},
    }
    for key, value in extra.items():
        node = cfg
        *head, last = key.split(".")
        for part in head:
            node = node.setdefault(part, {})
        node[last] = value
    return cfg


def items(res: RunResult, entity_suffix: str = "_results") -> list[Any]:
    """The catalog rows of the run's portfolio items (``portfolio_<n><suffix>``); with an
    empty suffix, every row."""
    catalog = open_catalog(res.catalog_url)
    try:
        rows = catalog.list_items(res.run_id)
        if not entity_suffix:
            return rows
        return [
            i
            for i in rows
            if i.entity_name.startswith("portfolio_") and i.entity_name.endswith(entity_suffix)
        ]
    finally:
        catalog.close()


def phase_dir(res: RunResult) -> Path:
    return res.run_dir / PHASE


def summary(res: RunResult) -> dict[str, Any]:
    return dict(json.loads((phase_dir(res) / "phase_summary.json").read_text()))


def results_files(folder: Path, ext: str) -> list[Path]:
    return sorted((folder / "containers").glob(f"*_results.{ext}"))


# ---------------------------------------------------------------- checks, one per case


def mode_memory(res: RunResult, tmp: Path) -> None:
    rows = items(res)
    assert len(rows) == 6 and all(r.data_reference.startswith("memory://") for r in rows)
    assert not (phase_dir(res) / "containers").exists()
    assert not list(phase_dir(res).glob("containers.*"))  # the window table is in memory


LZ4_FRAME = b"\x04\x22\x4d\x18"  # the magic number of an LZ4 frame


def mode_file(res: RunResult, tmp: Path) -> None:
    rows = items(res)
    assert len(rows) == 6 and all(r.data_reference.startswith("file://") for r in rows)
    assert len(results_files(phase_dir(res), "arrow")) == 6
    assert (phase_dir(res) / "containers.arrow").exists()  # the window table
    assert LZ4_FRAME not in (phase_dir(res) / "trades.arrow").read_bytes()  # uncompressed


def mode_streaming(res: RunResult, tmp: Path) -> None:
    assert summary(res)["data_flow"] == "streaming"
    stream = phase_dir(res) / "containers" / ".stream"
    assert list(stream.rglob("part-*.arrow"))


def mode_hybrid(res: RunResult, tmp: Path) -> None:
    stats = summary(res)["store_stats"]["-/hybrid"]
    # the 6 containers' results and the window's containers table
    assert stats["items"] == 7 and stats["store"] == "hybrid"


def tiny_memory_limit(res: RunResult, tmp: Path) -> None:
    stats = summary(res)["store_stats"]["-/hybrid"]
    assert stats["items_on_disk"] > 0  # a 1 KB budget spills


def big_memory_limit(res: RunResult, tmp: Path) -> None:
    stats = summary(res)["store_stats"]["-/hybrid"]
    assert stats["items_on_disk"] == 0


def base_path(res: RunResult, tmp: Path) -> None:
    folder = tmp / "results" / "elsewhere" / res.run_id / PHASE
    assert len(results_files(folder, "arrow")) == 6
    assert not (phase_dir(res) / "containers").exists()
    assert (phase_dir(res) / "phase_summary.json").exists()  # phase files stay put


def parquet_zstd(res: RunResult, tmp: Path) -> None:
    files = results_files(phase_dir(res), "parquet")
    assert len(files) == 6
    assert pq.ParquetFile(files[0]).metadata.row_group(0).column(0).compression == "ZSTD"
    table = pq.read_table(files[0])
    assert table.num_rows == 1 and "sharpe_ratio" in table.column_names
    assert pl.read_parquet(files[0]).height == 1
    con = duckdb.connect()
    got = con.execute(f"select count(*) from read_parquet('{phase_dir(res)}/containers/*.parquet')")
    assert got.fetchone() == (6,)
    trades = pq.read_table(phase_dir(res) / "trades.parquet")
    assert trades.num_rows > 0 and not (phase_dir(res) / "trades.arrow").exists()


def csv_results(res: RunResult, tmp: Path) -> None:
    files = results_files(phase_dir(res), "csv")
    assert len(files) == 6
    assert pl.read_csv(files[0]).height == 1
    assert (phase_dir(res) / "trades.csv").exists()


def arrow_lz4(res: RunResult, tmp: Path) -> None:
    files = results_files(phase_dir(res), "arrow")
    assert len(files) == 6
    assert feather.read_table(files[0]).num_rows == 1
    # the trades file's buffers are LZ4 frames (Arrow's LZ4_FRAME codec)
    path = phase_dir(res) / "trades.arrow"
    assert feather.read_table(path).num_rows > 0
    assert LZ4_FRAME in path.read_bytes()


def partition_by(res: RunResult, tmp: Path) -> None:
    folders = sorted((phase_dir(res) / "containers").glob("*_results.parquet"))
    assert len(folders) == 6 and all(f.is_dir() for f in folders)
    assert list(folders[0].glob("container_id=portfolio_*"))
    assert pq.read_table(folders[0]).num_rows == 1


def save_all_phases(res: RunResult, tmp: Path) -> None:
    rows = items(res)
    assert len([r for r in rows if r.data_reference.startswith("memory://")]) == 6
    assert len([r for r in rows if r.data_reference.startswith("file://")]) == 6
    assert len(results_files(phase_dir(res), "arrow")) == 6


def not_persisted(res: RunResult, tmp: Path) -> None:
    assert not any(r.data_reference.startswith("file://") for r in items(res))


def on_completion_json(res: RunResult, tmp: Path) -> None:
    # persistence.format json: the persisted copies are JSON mappings
    files = results_files(phase_dir(res), "json")
    assert len(files) == 6
    assert "sharpe_ratio" in json.loads(files[0].read_text())["metrics"]


def persistence_formats(res: RunResult, tmp: Path) -> None:
    assert len(results_files(phase_dir(res), "json")) == 6  # container_results: json
    assert not results_files(phase_dir(res), "arrow")


def output_aggregate_only(res: RunResult, tmp: Path) -> None:
    assert not items(res)
    assert not list(phase_dir(res).glob("trades.*"))
    assert (phase_dir(res) / "aggregate_results.json").exists()


def output_without_trades(res: RunResult, tmp: Path) -> None:
    assert not list(phase_dir(res).glob("trades.*"))
    assert len(results_files(phase_dir(res), "arrow")) == 6


def pattern_file_mode(res: RunResult, tmp: Path) -> None:
    refs = {r.entity_name: r.data_reference for r in items(res)}
    assert refs["portfolio_00000_results"].startswith("file://")
    assert refs["portfolio_00005_results"].startswith("memory://")


def pattern_memory_limit(res: RunResult, tmp: Path) -> None:
    stats = summary(res)["store_stats"]["-/hybrid"]
    assert stats["items_on_disk"] > 0  # each container's own 1 KB child budget spills


def roles(res: RunResult, tmp: Path) -> None:
    entities = {r.entity_name: r for r in items(res, "")}
    assert entities["data_bars"].data_reference.startswith("file://")
    assert entities["features_indicators"].data_reference.startswith("memory://")
    bars = feather.read_table(Path(entities["data_bars"].data_reference[len("file://") :]))
    assert bars.num_rows == 800 and "close" in bars.column_names
    trades = phase_dir(res) / "containers" / "trades.parquet"
    assert pq.read_table(trades).num_rows > 0  # the execution container's fills


def equity_traced(res: RunResult, tmp: Path) -> None:
    assert len(items(res, "_equity")) == 6


def no_equity(res: RunResult, tmp: Path) -> None:
    assert not items(res, "_equity")


Check = Callable[[RunResult, Path], None]

MEM = {"data_flow.mode": "memory"}
FILE = {"data_flow.mode": "file"}

CASES: dict[str, tuple[dict[str, Any], Check]] = {
    "mode-memory": (MEM, mode_memory),
    "mode-file": (FILE, mode_file),
    "mode-streaming": ({"data_flow.mode": "streaming"}, mode_streaming),
    "mode-hybrid": ({"data_flow.mode": "hybrid"}, mode_hybrid),
    "results_storage-disk": ({"results_storage": "disk"}, mode_file),
    "results_storage-memory": ({"results_storage": "memory"}, mode_memory),
    "storage_strategy-persist": ({"storage_strategy.mode": "persist"}, mode_file),
    "memory_limit_mb-tiny": (
        {"data_flow.mode": "hybrid", "data_flow.memory_limit_mb": 0.001},
        tiny_memory_limit,
    ),
    "memory_limit_mb-big": (
        {"data_flow.mode": "hybrid", "data_flow.memory_limit_mb": 100},
        big_memory_limit,
    ),
    "file_settings.base_path": (
        {**FILE, "data_flow.file_settings.base_path": "{tmp}/results/elsewhere"},
        base_path,
    ),
    "file_settings.format-parquet-zstd": (
        {
            **FILE,
            "data_flow.file_settings.format": "parquet",
            "data_flow.file_settings.compression": "zstd",
        },
        parquet_zstd,
    ),
    "file_settings.format-csv": ({**FILE, "data_flow.file_settings.format": "csv"}, csv_results),
    "file_settings.compression-lz4": (
        {**FILE, "data_flow.file_settings.compression": "lz4"},
        arrow_lz4,
    ),
    "file_settings.partition_by": (
        {
            **FILE,
            "data_flow.file_settings.format": "parquet",
            "data_flow.file_settings.partition_by": ["container_id"],
        },
        partition_by,
    ),
    "persistence.save_all_phases": (
        {**MEM, "data_flow.persistence.save_all_phases": True},
        save_all_phases,
    ),
    "persist_intermediate_results": (
        {**MEM, "storage_strategy.persist_intermediate_results": True},
        save_all_phases,
    ),
    "stages_to_persist-other": (
        {
            **MEM,
            "data_flow.persistence.save_all_phases": True,
            "phases": [
                {"name": PHASE, "sequence": "single_pass"},
                {"name": "later", "topology": "analysis", "depends_on": [PHASE]},
            ],
            "storage_strategy.stages_to_persist": ["later"],
        },
        not_persisted,
    ),
    "persistence.save_final_only": (
        {**MEM, "data_flow.persistence.save_final_only": True},
        save_all_phases,
    ),
    "persistence.on_completion+format": (
        {
            **MEM,
            "data_flow.persistence.on_completion": True,
            "data_flow.persistence.format": "json",
        },
        on_completion_json,
    ),
    "persistence.formats": (
        {**FILE, "data_flow.persistence.formats": {"container_results": "json"}},
        persistence_formats,
    ),
    "output-aggregate_only": ({**FILE, "output": ["aggregate_metrics"]}, output_aggregate_only),
    "output-no-trades": (
        {**FILE, "output": {"trades": False}},
        output_without_trades,
    ),
    "containers.pattern.mode": (
        {**MEM, "containers": {"portfolio_0000[0-2]": {"data_flow": {"mode": "file"}}}},
        pattern_file_mode,
    ),
    "containers.pattern.memory_limit_mb": (
        {
            "data_flow.mode": "hybrid",
            "data_flow.memory_limit_mb": 100,
            "containers": {"portfolio_*": {"data_flow": {"memory_limit_mb": 0.001}}},
        },
        pattern_memory_limit,
    ),
    "containers.roles": (
        {
            **MEM,
            "containers": {
                "data": {"data_flow": {"mode": "file"}},
                "features": {"data_flow": {"mode": "memory"}},
                "execution": {
                    "data_flow": {"mode": "file", "file_settings": {"format": "parquet"}}
                },
            },
        },
        roles,
    ),
    "event_tracing-portfolio_update": (
        {**MEM, "event_tracing": ["FILL", "PORTFOLIO_UPDATE"]},
        equity_traced,
    ),
    "event_tracing-positions": ({**MEM, "event_tracing": ["FILL"]}, no_equity),
}


def _fill(value: Any, tmp: Path) -> Any:
    return value.replace("{tmp}", str(tmp)) if isinstance(value, str) else value


@pytest.mark.parametrize("case", list(CASES))
def test_setting_takes_effect(case: str, tmp_path: Path, backend_name: str) -> None:
    settings, check = CASES[case]
    extra = {k: _fill(v, tmp_path) for k, v in settings.items()}
    phases = extra.pop("phases", None)
    cfg = config(tmp_path / "results", **extra)
    if phases is not None:
        cfg.pop("workflow")
        cfg["phases"] = phases
    if "output" in cfg:  # a phase's own key
        cfg.pop("workflow")
        cfg["phases"] = [{"name": PHASE, "sequence": "single_pass", "output": cfg.pop("output")}]
    res = run(cfg, workers=1)
    try:
        assert res.status == "completed"
        check(res, tmp_path)
    finally:
        res.close()


def test_a_pattern_that_selects_nothing_is_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = config(tmp_path / "results", containers={"features_*": {"data_flow": {"mode": "file"}}})
    with caplog.at_level(logging.WARNING):
        res = run(cfg, workers=1)
    try:
        assert summary(res)["unmatched_patterns"] == ["features_*"]
        assert any("'features_*' selects no container" in r.message for r in caplog.records)
    finally:
        res.close()


def test_a_base_path_outside_the_results_folder_is_refused(tmp_path: Path) -> None:
    cfg = config(tmp_path / "results", **{**FILE, "data_flow.file_settings.base_path": "/tmp"})
    with pytest.raises(ConfigError, match="base_path: '/tmp' is outside results_dir"):
        run(cfg, workers=1)
    assert not (tmp_path / "results" / "catalog.sqlite").exists()  # nothing recorded


# ---------------------------------------------------------------- tracing, run-wide and
# run parameters: each observed in what the run writes


def events_of(res: RunResult) -> list[dict[str, Any]]:
    """The ``events`` statistics of every container (JSON results files)."""
    files = results_files(phase_dir(res), "json")
    return [json.loads(f.read_text())["events"] for f in files]


def stream_parts(res: RunResult) -> int:
    return len(list((phase_dir(res) / "containers" / ".stream").rglob("part-*.arrow")))


def aggregate(res: RunResult, window: str | None = None) -> dict[str, Any]:
    folder = phase_dir(res) / window if window else phase_dir(res)
    return dict(json.loads((folder / "aggregate_results.json").read_text()))


def process_row(res: RunResult) -> Any:
    catalog = open_catalog(res.catalog_url)
    try:
        return catalog.resolve_run(res.run_id)
    finally:
        catalog.close()


def trades_of(res: RunResult) -> Any:
    return feather.read_table(phase_dir(res) / "trades.arrow")


JSON_FILES = {**FILE, "data_flow.file_settings.format": "json"}

# each case: (settings, check); a check may compare with the run of the baseline config
RUN_CASES: dict[str, tuple[dict[str, Any], Callable[[RunResult, RunResult], None]]] = {
    "streaming_settings.buffer_size": (
        {"data_flow.mode": "streaming", "data_flow.streaming_settings.buffer_size": 1},
        lambda res, base: _assert(stream_parts(res) >= 6),  # a part per item
    ),
    "retention_policy-keep_all": (
        {**JSON_FILES, "retention_policy": "keep_all"},
        lambda res, base: _assert(all(e["evicted"] == 0 for e in events_of(res))),
    ),
    "retention_policy-minimal": (
        {**JSON_FILES, "retention_policy": "minimal"},
        lambda res, base: _assert(all(e["retained"] <= 2 for e in events_of(res))),
    ),
    "sliding_window_size": (
        {**JSON_FILES, "retention_policy": "sliding_window", "sliding_window_size": 3},
        lambda res, base: _assert(
            all(e["retained"] <= 3 for e in events_of(res))
            and any(e["seen"] > 3 for e in events_of(res))
        ),
    ),
    "run_name": ({"run_name": "other"}, lambda res, base: _assert(res.run_id.startswith("other-"))),
    "description": (
        {"description": "a note kept with the run"},
        lambda res, base: _assert(
            "a note kept with the run" in json.dumps(process_row(res).config)
        ),
    ),
    "catalog": (
        {"catalog": "{tmp}/elsewhere.sqlite"},
        lambda res, base: _assert(res.catalog_url.endswith("elsewhere.sqlite")),
    ),
    "allow_pickle": (
        {**FILE, "data_flow.file_settings.format": "pickle", "allow_pickle": True},
        lambda res, base: _assert(len(results_files(phase_dir(res), "pkl")) == 6),
    ),
    "phase_overrides": (
        {**MEM, "phase_overrides": {PHASE: {"data_flow": {"mode": "file"}}}},
        lambda res, base: mode_file(res, Path()),
    ),
    "parameter_space.constraints": (
        {"parameter_space.constraints": ["strategy.fast < 5"]},
        lambda res, base: _assert(res.phases[PHASE].containers == 2),
    ),
    "parameter_space.sample": (
        {"parameter_space.sample": {"n": 3, "seed": 1}},
        lambda res, base: _assert(res.phases[PHASE].containers == 3),
    ),
    "objective_function-minimize": (
        {"objective_function": {"name": "total_return", "direction": "minimize"}},
        lambda res, base: _assert(
            [r["metrics"]["total_return"] for r in aggregate(res)["ranking"]]
            == sorted(r["metrics"]["total_return"] for r in aggregate(res)["ranking"])
        ),
    ),
    "top_k": ({"top_k": 4}, lambda res, base: _assert(len(res.phases[PHASE].selected) == 4)),
    "data.n_bars": (
        {"data.n_bars": 500, "containers": {"data": {"data_flow": {"mode": "file"}}}},
        lambda res, base: _assert(_bars(res).num_rows == 500),
    ),
    "data.seed": ({"data.seed": 4}, lambda res, base: _assert(_returns(res) != _returns(base))),
    "data.volatility": (
        {"data.volatility": 0.02},
        lambda res, base: _assert(_returns(res) != _returns(base)),
    ),
    "data.symbols": (
        {"data.symbols": ["XYZ"]},
        lambda res, base: _assert(set(trades_of(res).column("symbol").to_pylist()) == {"XYZ"}),
    ),
    "data.frequency": (
        {"data.frequency": "1d"},  # the same path on another calendar: annualised otherwise
        lambda res, base: _assert(_sharpes(res) != _sharpes(base)),
    ),
    "strategy.type": (
        {"strategy": {"type": "momentum"}, "parameter_space": {"strategy.lookback": [5, 10]}},
        lambda res, base: _assert(res.phases[PHASE].containers == 2),
    ),
    "portfolio.initial_capital": (
        {"portfolio.initial_capital": 1000.0},
        lambda res, base: _assert(
            aggregate(res)["ranking"][-1]["metrics"]["final_equity"] < 2000
            and aggregate(base)["ranking"][-1]["metrics"]["final_equity"] > 50_000
        ),
    ),
    "portfolio.commission_bps": (
        {"portfolio.commission_bps": 50},
        lambda res, base: _assert(sum(_returns(res)) < sum(_returns(base))),
    ),
    "data.start": (
        {"data.start": "2021-03-01", "containers": {"data": {"data_flow": {"mode": "file"}}}},
        lambda res, base: _assert(str(_bars(res).column("ts")[0].as_py().date()) == "2021-03-01"),
    ),
    "data.initial_price": (
        {"data.initial_price": 5.0, "containers": {"data": {"data_flow": {"mode": "file"}}}},
        lambda res, base: _assert(_bars(res).column("open")[0].as_py() < 6.0),
    ),
    "data.drift": (
        {"data.drift": 0.01},
        lambda res, base: _assert(_returns(res) != _returns(base)),
    ),
    "data.calendar": (
        {"data.calendar": "24/7"},
        lambda res, base: _assert(_sharpes(res) != _sharpes(base)),
    ),
    "data.periods_per_year": (
        {"data.periods_per_year": 10.0},
        lambda res, base: _assert(
            max(abs(x) for x in _sharpes(res)) < max(abs(x) for x in _sharpes(base))
        ),
    ),
    "portfolio.fraction": (
        {"portfolio.fraction": 0.1},
        lambda res, base: _assert(
            max(abs(r) for r in _returns(res)) < max(abs(r) for r in _returns(base))
        ),
    ),
    "portfolio.slippage_bps": (
        {"portfolio.slippage_bps": 50},
        lambda res, base: _assert(sum(_returns(res)) < sum(_returns(base))),
    ),
    "portfolio.whole_units": (
        {"portfolio.whole_units": True, "portfolio.initial_capital": 150.0},
        lambda res, base: _assert(
            all(q == int(q) for q in trades_of(res).column("quantity").to_pylist())
        ),
    ),
    "data_split": (
        {**JSON_FILES, "workflow": "train_test_optimization", "data_split": 0.5},
        lambda res, base: _assert(_window_bars(res, "train") == _window_bars(res, "test") == 400),
    ),
    "walk_forward": (
        {"workflow": "walk_forward_optimization", "walk_forward": {"train": 300, "test": 100}},
        lambda res, base: _assert(
            res.phases["walk_forward"].windows == ["w0000", "w0001", "w0002", "w0003", "w0004"]
        ),
    ),
    "monte_carlo": (
        {
            "workflow": None,
            "phases": [
                {
                    "name": "mc",
                    "sequence": "monte_carlo",
                    "monte_carlo": {"n": 7, "batch": 3, "method": "trades"},
                }
            ],
        },
        lambda res, base: _assert(
            res.phases["mc"].containers == 7 and len(res.phases["mc"].windows) == 3
        ),
    ),
    "workflow": (
        {"workflow": "walk_forward_optimization"},
        lambda res, base: _assert(list(res.phases) == ["walk_forward"]),
    ),
    "results_dir": (
        {"results_dir": "{tmp}/other_results"},
        lambda res, base: _assert(res.run_dir.parent.name == "other_results"),
    ),
    "cleanup_policy-keep_none": (
        {"storage_strategy.cleanup_policy": "keep_none", **FILE},
        lambda res, base: _assert(not items(res)),
    ),
    "workers": ({"workers": 2}, lambda res, base: _assert(_returns(res) == _returns(base))),
}


def _assert(ok: bool) -> None:
    assert ok


def _returns(res: RunResult) -> list[float]:
    return sorted(r["metrics"]["total_return"] for r in aggregate(res)["ranking"])


def _window_bars(res: RunResult, window: str) -> int:
    """The bars a container of ``window`` ran on (from its JSON results)."""
    (first, *_) = results_files(phase_dir(res) / window, "json")
    return int(json.loads(first.read_text())["window"]["bars"])


def _sharpes(res: RunResult) -> list[float]:
    return sorted(r["metrics"]["sharpe_ratio"] for r in aggregate(res)["ranking"])


def _bars(res: RunResult) -> Any:
    (row,) = [r for r in items(res, "") if r.entity_name == "data_bars"]
    return feather.read_table(Path(row.data_reference[len("file://") :]))


@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory) -> Any:
    res = run(config(tmp_path_factory.mktemp("baseline")), workers=1)
    yield res
    res.close()


@pytest.mark.parametrize("case", list(RUN_CASES))
def test_run_setting_takes_effect(
    case: str, tmp_path: Path, baseline: RunResult, backend_name: str
) -> None:
    settings, check = RUN_CASES[case]
    extra = {k: _fill(v, tmp_path) for k, v in settings.items()}
    phases = extra.pop("phases", None)
    workers = extra.pop("workers", 1)
    cfg = config(tmp_path / "results", **extra)
    if cfg.get("workflow") is None:
        cfg.pop("workflow")
        cfg.pop("parameter_space")
        cfg["phases"] = phases
    res = run(cfg, workers=workers)
    try:
        assert res.status == "completed"
        check(res, baseline)
    finally:
        res.close()


def test_windows_share_the_phase_budget(tmp_path: Path, backend_name: str) -> None:
    # a walk-forward phase of 3 windows under a 0.05 MB hybrid budget: the windows' stores
    # are views of one store, so together they hold at most the budget (plus one item)
    cfg = config(
        tmp_path / "results",
        **{"data_flow.mode": "hybrid", "data_flow.memory_limit_mb": 0.05},
        workflow="walk_forward_optimization",
        walk_forward={"train": 300, "test": 100, "step": 100},
        event_tracing=["FILL", "PORTFOLIO_UPDATE"],
    )
    res = run(cfg, workers=1)
    try:
        stats = json.loads((res.run_dir / "walk_forward" / "phase_summary.json").read_text())[
            "store_stats"
        ]
        root = stats["-/hybrid"]
        windows = [k for k in stats if k != "-/hybrid" and k.endswith("/hybrid")]
        assert len(windows) >= 3
        assert root["items"] == sum(stats[w]["items"] for w in windows)
        assert root["items_on_disk"] > 0  # one budget spilled across windows
        largest = max(stats[w]["peak_bytes_in_memory"] for w in windows)
        assert root["peak_bytes_in_memory"] <= 0.05 * 1024 * 1024 + largest
    finally:
        res.close()


def test_a_data_flow_for_an_analysis_phase_alone_is_refused(tmp_path: Path) -> None:
    cfg = config(tmp_path / "results", **MEM)
    cfg.pop("workflow")
    cfg["phases"] = [
        {"name": PHASE, "sequence": "single_pass"},
        {
            "name": "rank",
            "topology": "analysis",
            "depends_on": [PHASE],
            "data_flow": {"mode": "file"},
        },
    ]
    with pytest.raises(ConfigError, match="topology 'analysis', which stores no container"):
        run(cfg, workers=1)
    # a run-wide data flow applies to the phases that store results; the analysis is fine
    del cfg["phases"][1]["data_flow"]
    res = run(cfg, workers=1)
    res.close()


def test_a_user_topology_is_refused_not_run_as_a_backtest(tmp_path: Path) -> None:
    cfg = config(tmp_path / "results")
    cfg.pop("workflow")
    cfg["phases"] = [{"name": PHASE, "topology": "my_module:build"}]
    with pytest.raises(ConfigError, match="does not run user topologies yet"):
        run(cfg, workers=1)
