"""``phasekit config show`` on files of the design notes' source project: what phasekit maps
is shown with its provenance, what it does not support is listed (text and --json), and
``phasekit run`` refuses the same file in one line. The configurations are written here in
the source project's vocabulary and structure (a results block with phase overrides, a
signal-generation topology file, a backtest-mode file)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from phasekit.cli import main

DATA = Path(__file__).parent / "data" / "configs"

ENSEMBLE = """
workflow: regime_ensemble
results:
  retention_policy: trade_complete
  max_events: 800
  collection:
    streaming_metrics: true
    store_trades: false
    store_equity_curve: false
    snapshot_interval: 500
  storage:
    format: parquet
    location: ./out/{workflow_id}/
    compress: true
    partition_by: [phase]
  memory:
    global_limit_mb: 1500
    storage_mode: auto
    memory_threshold_mb: 20
data:
  symbols: [AAA, BBB]
  start_date: '2021-01-01'
  frequency: 1d
  source: csv
portfolio:
  initial_capital: 50000
strategies:
  - type: breakout
    parameters: {window: [10, 20]}
classifiers:
  - type: trend_regime
risk:
  position_sizers: [{name: small, type: percentage, percentage: 0.01}]
phases:
  - name: sweep
    topology: signal_generation
    results_override: {retention_policy: minimal}
  - name: review
    topology: analysis
    depends_on: [sweep]
    results_override:
      collection: {store_trades: true, trade_summary_only: true}
  - name: check
    topology: backtest
    depends_on: [review]
    results_override:
      retention_policy: sliding_window
      max_events: 4000
      collection: {store_equity_curve: true, snapshot_interval: 1, store_order_book: false}
      memory: {storage_mode: disk}
execution:
  enable_event_tracing: false
  trace_settings:
    trace_dir: ./traces
"""

ENSEMBLE_UNSUPPORTED = [
    ("strategies", 26),
    ("classifiers", 29),
    ("risk", 31),
    ("data.start_date", 21),
    ("phases[0]", 34),
    ("data.source", 23),
    ("results.storage.location", 12),
    ("results.storage.compress", 13),
    ("results.memory.memory_threshold_mb", 18),
    ("execution.trace_settings.trace_dir", 53),
    ("phases[1].results_override.collection.trade_summary_only", 41),
    ("phases[2].results_override.collection.store_order_book", 48),
]

TOPOLOGY = """
name: layered_signals
description: signals of two strategies under a regime filter
symbols: [AAA]
timeframes: [5m]
data_source: file
data_dir: ./bars
topology: signal_generation
classifiers:
  - type: volatility_regime
strategies:
  - type: crossover
    params: {fast: 5, slow: 30}
execution:
  enable_event_tracing: true
  trace_settings:
    events_to_trace: [SIGNAL, CLASSIFICATION]
    storage_backend: hierarchical
    use_sparse_storage: true
    max_events: 2500
results:
  retention_policy: sliding_window
  max_events: 2500
"""

BACKTEST_MODE = """
type: backtest
mode: backtest
symbols: [AAA]
start_date: '2022-03-01'
backtest:
  strategies: [{type: trend, period: 20}]
results_storage: disk
retention_policy: trade_complete
max_bars: 500
"""


def show(capsys: pytest.CaptureFixture[str], path: Path) -> dict[str, Any]:
    assert main(["config", "show", str(path), "--json"]) == 0
    view: dict[str, Any] = json.loads(capsys.readouterr().out)
    return view


def refused_by_run(capsys: pytest.CaptureFixture[str], path: Path, section: str) -> None:
    assert main(["run", str(path), "--results-dir", str(path.parent / "runs")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert f"section {section!r}" in err and "not supported by phasekit" in err
    assert not (path.parent / "runs").exists()


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "original.yaml"
    path.write_text(text.lstrip("\n"))
    return path


def test_an_ensemble_file_with_results_is_shown_and_refused_by_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, ENSEMBLE)
    view = show(capsys, path)
    assert sorted((u["path"], u["line"]) for u in view["unsupported"]) == sorted(
        ENSEMBLE_UNSUPPORTED
    )
    assert all(u["reason"] for u in view["unsupported"])
    assert view["no_workflow"] is None
    # the phases with the source project's topologies are set aside, the others shown
    assert list(view["phases"]) == ["review", "check"]
    assert view["phases"]["review"]["depends_on"] == []
    assert view["phases"]["check"]["depends_on"] == ["review"]
    base = view["base"]
    assert base["retention_policy"] == "trade_complete"
    assert base["sources"]["retention_policy"]["path"] == "results.retention_policy"
    assert base["data_flow"]["memory_limit_mb"] == 1500
    assert base["data_flow"]["file"]["partition_by"] == ["phase"]
    check = view["phases"]["check"]["settings"]
    assert (check["retention_policy"], check["sliding_window_size"]) == ("sliding_window", 4000)
    assert check["data_flow"]["mode"] == "file"
    assert check["sources"]["data_flow.mode"]["path"] == (
        "phases[2].results_override.memory.storage_mode"
    )
    assert check["snapshot_interval"] == 1
    refused_by_run(capsys, path, "strategies")


def test_the_text_view_lists_the_unsupported_sections_in_their_own_block(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "250")
    path = write(tmp_path, ENSEMBLE)
    assert main(["config", "show", str(path)]) == 0
    out = capsys.readouterr().out
    head, block = out.split("not supported by phasekit (12; phasekit run refuses this file)")
    assert "phase check: sequence" in head and "results.retention_policy" in head
    for where, _line in ENSEMBLE_UNSUPPORTED:
        assert where in block
    assert "phasekit has no regime classifiers" in block
    assert "'csv' is not allowed; allowed: synthetic, file" in block


def test_a_topology_file_is_shown_with_its_run_wide_settings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, TOPOLOGY)
    view = show(capsys, path)
    paths = sorted(u["path"] for u in view["unsupported"])
    assert paths == sorted(
        [
            "topology",
            "classifiers",
            "strategies",
            "name",
            "symbols",
            "timeframes",
            "data_source",
            "data_dir",
            "execution.trace_settings.events_to_trace",
            "execution.trace_settings.storage_backend",
            "execution.trace_settings.use_sparse_storage",
        ]
    )
    kinds = next(u for u in view["unsupported"] if u["path"].endswith("events_to_trace"))
    assert "'CLASSIFICATION' is not allowed" in kinds["reason"]
    assert view["no_workflow"] and "give a built-in workflow" in view["no_workflow"]
    assert view["phases"] == {}
    base = view["base"]
    assert (base["retention_policy"], base["sliding_window_size"]) == ("sliding_window", 2500)
    assert base["sources"]["sliding_window_size"]["path"] == "results.max_events"
    refused_by_run(capsys, path, "topology")


def test_a_backtest_mode_file_is_shown_and_refused_by_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, BACKTEST_MODE)
    view = show(capsys, path)
    assert sorted(u["path"] for u in view["unsupported"]) == sorted(
        ["mode", "backtest", "symbols", "start_date", "max_bars", "type"]
    )
    base = view["base"]
    assert base["data_flow"]["mode"] == "file"
    assert base["sources"]["data_flow.mode"]["path"] == "results_storage"
    assert base["retention_policy"] == "trade_complete"
    refused_by_run(capsys, path, "mode")


def test_a_phasekit_file_with_a_mistake_is_still_refused_by_show(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # no section of the source project's: an unknown key is an error, not a listed section
    path = write(tmp_path, "workflow: optimization\nretention_polcy: minimal\n")
    assert main(["config", "show", str(path)]) == 1
    assert "retention_polcy" in capsys.readouterr().err


def test_a_mistake_in_a_mapped_key_of_a_source_project_file_is_listed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, "classifiers: []\nresults: {max_events: 0, retention_policy: full}\n")
    view = show(capsys, path)
    assert sorted(u["path"] for u in view["unsupported"]) == [
        "classifiers",
        "results.max_events",
        "results.retention_policy",
    ]
    assert view["base"]["sources"]["retention_policy"]["path"] == "default"


SEEDS = sorted(DATA.glob("seed*.yaml"))


@pytest.mark.parametrize("seed", SEEDS, ids=[p.stem for p in SEEDS])
def test_the_design_notes_fragments_are_shown(
    seed: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    view = show(capsys, seed)
    assert view["unsupported"] == []
    fragment = "workflow:" not in seed.read_text() and "phases:" not in seed.read_text()
    assert bool(view["no_workflow"]) == fragment
    if fragment:
        assert view["phases"] == {}
        assert main(["config", "show", str(seed)]) == 0
        assert "no workflow is defined" in capsys.readouterr().out
        assert main(["run", str(seed), "--results-dir", str(tmp_path)]) == 1
        assert "give a built-in workflow" in capsys.readouterr().err
    else:
        assert view["phases"]


def test_the_fragments_include_ones_without_a_workflow() -> None:
    assert sum("workflow:" not in p.read_text() for p in SEEDS) >= 5


def test_an_override_of_a_phase_set_aside_is_listed_with_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(
        tmp_path,
        "phases:\n  - {name: scan, topology: signal_generation}\n  - {name: test}\n"
        "phase_overrides:\n  scan: {retention_policy: minimal}\n"
        "  test: {retention_policy: sliding_window}\n",
    )
    view = show(capsys, path)
    assert [u["path"] for u in view["unsupported"]] == ["phases[0]", "phase_overrides.scan"]
    test = view["phases"]["test"]["settings"]
    assert test["retention_policy"] == "sliding_window"
    assert test["sources"]["retention_policy"]["path"] == "phase_overrides.test.retention_policy"
    assert main(["run", str(path)]) == 1
    assert "signal_generation" in capsys.readouterr().err
