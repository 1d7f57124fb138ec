"""Every configuration printed in the design notes (seeds 000, 001, 002, 004) loads unchanged.

The YAML files under tests/data/configs/ are the seeds' YAML blocks verbatim; the dicts
below are the seeds' Python configuration dicts verbatim.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from phasekit.config import (
    DataFlowConfig,
    PhaseConfig,
    PhaseParams,
    StorageStrategy,
    load_config,
    load_section,
    resolve,
)

CONFIGS = Path(__file__).parent / "data" / "configs"
SEED_FILES = sorted(CONFIGS.glob("seed*.yaml"))

# seed 001, "Topology Builder Integration": the portfolio data flow with a parameter space ...
SEED001_PORTFOLIO_OPTIMIZATION = {
    "mode": "hybrid",
    "memory_limit_mb": 10,  # Small limit per container
    "persistence": {
        "on_completion": True,  # Save results
        "format": "parquet",
    },
}
# ... and without one
SEED001_PORTFOLIO_FEW = {"mode": "memory", "memory_limit_mb": 100}

# seed 002, TrainTestOptimizationWorkflow.get_phases: the workflow defaults of each phase
SEED002_PARAM_SEARCH = {
    "results_storage": "disk",  # Large optimization results
    "event_tracing": ["POSITION_OPEN", "POSITION_CLOSE", "FILL"],
    "retention_policy": "trade_complete",
    "data_split": 0.8,
}
SEED002_VALIDATION = {
    "results_storage": "memory",
    "event_tracing": ["POSITION_OPEN", "POSITION_CLOSE", "FILL", "PORTFOLIO_UPDATE"],
    "retention_policy": "sliding_window",
    "sliding_window_size": 1000,
}
# seed 002, StandardPhaseConfigs
SEED002_OPTIMIZATION_PHASE = {
    "results_storage": "disk",
    "event_tracing": ["POSITION_OPEN", "POSITION_CLOSE", "FILL"],
    "retention_policy": "trade_complete",
}
SEED002_VALIDATION_PHASE = {
    "results_storage": "memory",
    "event_tracing": ["POSITION_OPEN", "POSITION_CLOSE", "FILL", "PORTFOLIO_UPDATE"],
    "retention_policy": "sliding_window",
    "sliding_window_size": 1000,
}
# seed 002, the PhaseConfig objects the workflow returns (as mappings)
SEED002_PHASES = {
    "parameter_search": {
        "sequence": "train_test",
        "topology": "backtest",
        "description": "Search parameter space on training data",
        "config": SEED002_PARAM_SEARCH,
    },
    "validation": {
        "sequence": "single_pass",
        "topology": "backtest",
        "description": "Validate on test data with equity tracking",
        "config": SEED002_VALIDATION,
    },
}

# seed 004, 2.1 Storage Strategy Configuration
SEED004_STORAGE_STRATEGY = {
    "mode": "memory",  # Options: 'memory', 'persist', 'hybrid'
    "persist_intermediate_results": False,
    "stages_to_persist": [],  # Empty list means all stages
    "cleanup_policy": "keep_latest",  # Options: 'keep_all', 'keep_latest', 'keep_none'
}


def test_every_seed_yaml_block_is_a_fixture() -> None:
    assert len(SEED_FILES) == 10  # 5 blocks in seed 000, 4 in seed 001, 1 in seed 002


@pytest.mark.parametrize("path", SEED_FILES, ids=lambda p: p.stem)
def test_seed_yaml_loads_and_resolves(path: Path) -> None:
    config = load_config(path)
    resolved = resolve(config)
    assert resolved.base.data_flow.mode in ("memory", "file", "streaming", "hybrid")
    # the same text given as a string loads to the same model
    assert load_config(path.read_text()) == config


def test_seed000_workflow() -> None:
    r = resolve(CONFIGS / "seed000_workflow.yaml")
    assert r.workflow == "optimization_workflow"
    assert r.phase_names == ("optimization", "analysis")
    opt, analysis = r.phase("optimization"), r.phase("analysis")
    assert opt.data_flow.mode == "file"
    assert opt.data_flow.file.format == "parquet"
    assert opt.data_flow.file.compression == "snappy"
    assert opt.data_flow.file.partition_by == ("date", "symbol")
    assert opt.data_flow.memory_limit_mb == 1000
    assert opt.data_flow.streaming.buffer_size == 1000
    assert opt.data_flow.streaming.flush_interval == 60
    keep = opt.data_flow.persistence
    assert (keep.save_all_phases, keep.save_final_only) == (True, False)
    assert keep.format_for("metrics") == "json"
    assert keep.format_for("signals") == "parquet"
    assert keep.format_for("portfolios") == "hdf5"
    assert keep.format_for("trades") == "parquet"  # not listed: the file format
    assert opt.params.parameter_space == {"strategy.threshold": [0.01, 0.02, 0.03, 0.04, 0.05]}
    assert analysis.data_flow.mode == "memory"
    assert analysis.topology == "analysis"
    assert analysis.depends_on == ("optimization",)
    assert analysis.persist  # save_all_phases: true
    assert opt.settings.provenance("data_flow.mode").path == "phases[0].data_flow.mode"


@pytest.mark.parametrize(
    ("name", "mode", "check"),
    [
        ("seed000_small_memory", "memory", lambda f: f.memory_limit_mb == 1000),
        (
            "seed000_large_file",
            "file",
            lambda f: (f.file.format, f.file.compression) == ("parquet", "snappy"),
        ),
        (
            "seed000_realtime_streaming",
            "streaming",
            lambda f: (f.streaming.buffer_size, f.streaming.flush_interval) == (100, 10),
        ),
        ("seed000_mixed_hybrid", "hybrid", lambda f: f.memory_limit_mb == 500),
    ],
)
def test_seed000_use_cases(name: str, mode: str, check: object) -> None:
    flow = resolve(CONFIGS / f"{name}.yaml").base.data_flow
    assert flow.mode == mode
    assert check(flow)  # type: ignore[operator]


def test_seed001_per_container() -> None:
    r = resolve(CONFIGS / "seed001_per_container.yaml")
    assert (r.base.data_flow.mode, r.base.data_flow.memory_limit_mb) == ("memory", 100)
    assert r.patterns == ("data", "features", "portfolio_*", "execution")
    data = r.container(None, "data")
    assert data.data_flow.mode == "streaming"
    assert data.data_flow.streaming.buffer_size == 1000
    features = r.container(None, "features").data_flow
    assert (features.mode, features.memory_limit_mb, features.file.format) == (
        "hybrid",
        500,
        "parquet",
    )
    p = r.container(None, "portfolio_0042")
    assert p.pattern == "portfolio_*"
    assert (p.data_flow.mode, p.data_flow.memory_limit_mb) == ("memory", 50)
    assert p.data_flow.persistence.on_completion
    execution = r.container(None, "execution").data_flow
    assert (execution.mode, execution.file.format, execution.file.compression) == (
        "file",
        "parquet",
        "snappy",
    )
    other = r.container(None, "risk")
    assert other.pattern is None and other.settings == r.base


def test_seed001_use_cases() -> None:
    opt = resolve(CONFIGS / "seed001_optimization_1000.yaml").container(None, "portfolio_999")
    assert (opt.data_flow.mode, opt.data_flow.memory_limit_mb) == ("hybrid", 5)
    assert opt.data_flow.persistence.on_completion
    hf = resolve(CONFIGS / "seed001_high_frequency.yaml")
    assert hf.container(None, "data").data_flow.streaming.buffer_size == 100
    assert hf.container(None, "features").data_flow.memory_limit_mb == 2000
    mc = resolve(CONFIGS / "seed001_memory_constrained.yaml")
    assert (mc.base.data_flow.mode, mc.base.data_flow.memory_limit_mb) == ("hybrid", 50)
    assert mc.container(None, "execution").data_flow.mode == "file"
    assert mc.container(None, "portfolio_1").data_flow.mode == "hybrid"


@pytest.mark.parametrize("flow", [SEED001_PORTFOLIO_OPTIMIZATION, SEED001_PORTFOLIO_FEW])
def test_seed001_data_flow_dicts(flow: dict) -> None:
    assert isinstance(load_section("data_flow", flow), DataFlowConfig)
    resolved = resolve({"data_flow": flow}).base.data_flow
    assert resolved.mode == flow["mode"]
    assert resolved.memory_limit_mb == flow["memory_limit_mb"]


def test_seed001_persistence_format() -> None:
    flow = resolve({"data_flow": SEED001_PORTFOLIO_OPTIMIZATION}).base.data_flow
    assert flow.persistence.format == "parquet"
    assert flow.file.format == "arrow"  # the file mode format is separate


@pytest.mark.parametrize(
    "body",
    [
        SEED002_PARAM_SEARCH,
        SEED002_VALIDATION,
        SEED002_OPTIMIZATION_PHASE,
        SEED002_VALIDATION_PHASE,
    ],
)
def test_seed002_phase_config_dicts(body: dict) -> None:
    assert isinstance(load_section("phase_config", body), PhaseParams)


def test_seed002_phase_objects() -> None:
    for name, body in SEED002_PHASES.items():
        assert isinstance(load_section("phase", {"name": name, **body}), PhaseConfig)


def test_seed002_user_config_with_workflow_defaults() -> None:
    """The seed's own precedence: workflow defaults, the global override, per-phase overrides."""
    r = resolve(CONFIGS / "seed002_train_test.yaml", SEED002_PHASES)
    assert r.workflow == "train_test_optimization"
    assert r.results_dir == "my_experiment_2024_01"
    search, validation = r.phase("parameter_search"), r.phase("validation")
    # results_storage: memory overrides all phases; the phase override agrees
    assert search.data_flow.mode == "memory"
    assert search.settings.provenance("data_flow.mode").path == (
        "phase_overrides.parameter_search.results_storage"
    )
    assert search.settings.event_tracing == (
        "POSITION_OPEN",
        "POSITION_CLOSE",
        "FILL",
        "PORTFOLIO_UPDATE",
    )
    assert search.settings.retention_policy == "sliding_window"
    assert search.sequence == "train_test"
    assert search.params.data_split == 0.8
    assert search.params.data is not None
    assert search.params.data.symbols == ["SPY"]
    assert (search.params.data.start, search.params.data.end) == ("2020-01-01", "2023-12-31")
    assert validation.data_flow.mode == "memory"
    assert validation.settings.provenance("data_flow.mode").path == "results_storage"
    assert validation.settings.retention_policy == "sliding_window"
    assert validation.settings.sliding_window_size == 1000


def test_seed002_workflow_defaults_alone() -> None:
    r = resolve({"workflow": "train_test_optimization"}, SEED002_PHASES)
    search, validation = r.phase("parameter_search"), r.phase("validation")
    assert search.data_flow.mode == "file"  # results_storage: disk
    assert search.settings.provenance("data_flow.mode").path == (
        "workflow_defaults.parameter_search.config.results_storage"
    )
    assert search.settings.retention_policy == "trade_complete"
    assert validation.data_flow.mode == "memory"
    assert "PORTFOLIO_UPDATE" in validation.settings.event_tracing


def test_seed004_storage_strategy() -> None:
    assert isinstance(load_section("storage_strategy", SEED004_STORAGE_STRATEGY), StorageStrategy)
    r = resolve({"storage_strategy": SEED004_STORAGE_STRATEGY})
    assert r.base.data_flow.mode == "memory"
    assert r.cleanup_policy == "keep_latest"
    assert r.stages_to_persist == ()
    assert r.base.data_flow.persistence.save_all_phases is False


def test_seed004_persist_mode_is_file_mode() -> None:
    r = resolve({"storage_strategy": {**SEED004_STORAGE_STRATEGY, "mode": "persist"}})
    assert r.base.data_flow.mode == "file"
