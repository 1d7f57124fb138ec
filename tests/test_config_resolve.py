"""Precedence, aliases, container patterns, runtime arguments and run parameters."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest

from phasekit import register_event_kind
from phasekit.config import (
    PACKAGE_DEFAULTS,
    Level,
    Provenance,
    best_match,
    load_config,
    parse_set_args,
    resolve,
    specificity,
)
from phasekit.errors import ConfigError

# --- defaults ------------------------------------------------------------------------------


def test_package_defaults() -> None:
    r = resolve({})
    flow = r.base.data_flow
    assert flow.mode == "memory"
    assert flow.memory_limit_mb == 1000 and flow.memory_limit_bytes == 1000 * 1024 * 1024
    assert (flow.file.base_path, flow.file.format, flow.file.compression) == (
        "./results",
        "arrow",
        None,
    )
    assert flow.file.partition_by == ()
    assert (flow.streaming.buffer_size, flow.streaming.flush_interval) == (1000, 60.0)
    keep = flow.persistence
    assert not (keep.save_all_phases or keep.save_final_only or keep.on_completion)
    assert keep.format == "arrow" and dict(keep.formats) == {}
    assert r.base.event_tracing == ("POSITION_OPEN", "POSITION_CLOSE", "FILL")
    assert r.base.retention_policy == "trade_complete"
    assert r.base.sliding_window_size == 1000
    assert (r.cleanup_policy, r.stages_to_persist, r.allow_pickle) == ("keep_all", (), False)
    assert (r.catalog.backend, r.catalog.location) == ("sqlite", "./results/catalog.sqlite")
    assert r.workers is None and r.phases == {}
    assert r.base.provenance("data_flow.mode") == Provenance(Level.PACKAGE_DEFAULT, "default")
    assert not r.base.chosen_by_user("data_flow.mode")
    assert PACKAGE_DEFAULTS["data_flow.mode"] == "memory"


def test_parquet_default_compression_and_base_path_follow_results_dir() -> None:
    r = resolve({"results_dir": "/data/out", "data_flow": {"file_settings": {"format": "parquet"}}})
    assert r.base.data_flow.file.compression == "snappy"
    assert r.base.data_flow.file.base_path == "/data/out"
    assert r.catalog.location == "/data/out/catalog.sqlite"


# --- precedence: each level beats the ones below ----------------------------------------------

WF = Level.WORKFLOW_DEFAULT

LEVELS = [
    # (level, the memory_limit_mb it sets, the source the resolved value names, its Level)
    ("workflow default", 10, "workflow_defaults.p.config.data_flow.memory_limit_mb", WF),
    ("workflow phase", 11, "workflow_defaults.p.data_flow.memory_limit_mb", WF),
    (
        "workflow container",
        12,
        "workflow_defaults.p.containers.portfolio_*.data_flow.memory_limit_mb",
        WF,
    ),
    ("user global", 20, "data_flow.memory_limit_mb", Level.USER_GLOBAL),
    ("phase config", 30, "phases[0].config.data_flow.memory_limit_mb", Level.PHASE),
    ("phase", 40, "phases[0].data_flow.memory_limit_mb", Level.PHASE),
    ("phase override", 50, "phase_overrides.p.data_flow.memory_limit_mb", Level.PHASE_OVERRIDE),
    (
        "container pattern",
        60,
        "containers.portfolio_*.data_flow.memory_limit_mb",
        Level.CONTAINER_PATTERN,
    ),
    ("runtime global", 70, "--set data_flow.memory_limit_mb", Level.RUNTIME),
    ("runtime phase", 80, "--set phase_overrides.p.data_flow.memory_limit_mb", Level.RUNTIME),
    (
        "runtime container",
        90,
        "--set containers.portfolio_*.data_flow.memory_limit_mb",
        Level.RUNTIME,
    ),
]


def _stack(top: int) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Config, workflow defaults and runtime with every level up to ``top`` set."""
    flow = lambda mb: {"data_flow": {"memory_limit_mb": mb}}  # noqa: E731
    wf: dict[str, Any] = {}
    phase: dict[str, Any] = {"name": "p"}
    config: dict[str, Any] = {"phases": [phase]}
    runtime: dict[str, Any] = {}
    setters = [
        lambda mb: wf.update({"config": flow(mb)}),
        lambda mb: wf.update(flow(mb)),
        lambda mb: wf.update({"containers": {"portfolio_*": flow(mb)}}),
        lambda mb: config.update(flow(mb)),
        lambda mb: phase.update({"config": flow(mb)}),
        lambda mb: phase.update(flow(mb)),
        lambda mb: config.update({"phase_overrides": {"p": flow(mb)}}),
        lambda mb: config.update({"containers": {"portfolio_*": flow(mb)}}),
        lambda mb: runtime.update({"data_flow.memory_limit_mb": mb}),
        lambda mb: runtime.update({"phase_overrides.p.data_flow.memory_limit_mb": mb}),
        lambda mb: runtime.update({"containers.portfolio_*.data_flow.memory_limit_mb": mb}),
    ]
    for setter, (_, mb, _, _) in zip(setters[: top + 1], LEVELS[: top + 1]):
        setter(mb)
    return config, {"p": wf}, runtime


@pytest.mark.parametrize("top", range(len(LEVELS)), ids=[lv[0] for lv in LEVELS])
def test_each_level_beats_those_below(top: int) -> None:
    config, defaults, runtime = _stack(top)
    r = resolve(config, defaults, runtime)
    container = r.container("p", "portfolio_7")
    name, expected, source, level = LEVELS[top]
    assert container.data_flow.memory_limit_mb == expected
    origin = container.settings.provenance("data_flow.memory_limit_mb")
    assert (origin.path, origin.level) == (source, level)
    assert origin.chosen_by_user == (level >= Level.USER_GLOBAL)
    # a container pattern's entry names its pattern, whichever level it is at
    assert origin.pattern == ("portfolio_*" if "container" in name else None)
    # the phase itself never sees container levels
    phase_levels = [lv for lv in LEVELS[: top + 1] if "container" not in lv[0]]
    assert r.phase("p").data_flow.memory_limit_mb == phase_levels[-1][1]
    # a container no pattern matches gets the phase's settings
    assert r.container("p", "data").settings == r.phase("p").settings


def test_global_results_storage_overrides_workflow_default_and_phase_override_beats_it() -> None:
    defaults = {"a": {"results_storage": "disk"}, "b": {"results_storage": "disk"}}
    config = {"results_storage": "memory", "phase_overrides": {"b": {"results_storage": "disk"}}}
    r = resolve(config, defaults)
    assert r.phase("a").data_flow.mode == "memory"
    assert r.phase("b").data_flow.mode == "file"


def test_phase_override_beats_the_phase_definition() -> None:
    config = {
        "phases": [{"name": "a", "data_flow": {"mode": "file"}}],
        "phase_overrides": {"a": {"data_flow": {"mode": "streaming"}}},
    }
    assert resolve(config).phase("a").data_flow.mode == "streaming"


def test_settings_merge_leaf_by_leaf() -> None:
    config = {
        "data_flow": {
            "mode": "file",
            "file_settings": {"format": "parquet", "compression": "zstd"},
        },
        "phases": [{"name": "a", "data_flow": {"file_settings": {"partition_by": ["symbol"]}}}],
    }
    file = resolve(config).phase("a").data_flow.file
    assert (file.format, file.compression, file.partition_by) == ("parquet", "zstd", ("symbol",))


def test_persistence_formats_merge_per_output_type() -> None:
    config = {
        "data_flow": {"persistence": {"formats": {"metrics": "json", "signals": "parquet"}}},
        "containers": {"x": {"data_flow": {"persistence": {"formats": {"signals": "csv"}}}}},
    }
    formats = resolve(config).container(None, "x").data_flow.persistence.formats
    assert dict(formats) == {"metrics": "json", "signals": "csv"}


# --- aliases -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "mode"),
    [
        ({"results_storage": "disk"}, "file"),
        ({"results_storage": "memory"}, "memory"),
        ({"storage_strategy": {"mode": "persist"}}, "file"),
        ({"storage_strategy": {"mode": "hybrid"}}, "hybrid"),
        ({"storage_strategy": {"mode": "memory"}}, "memory"),
        ({"data_flow": {"default_mode": "streaming"}}, "streaming"),
        ({"results_storage": "disk", "data_flow": {"mode": "file"}}, "file"),  # agree: fine
    ],
)
def test_mode_aliases(settings: dict[str, Any], mode: str) -> None:
    r = resolve(settings)
    assert r.base.data_flow.mode == mode
    assert "results_storage" not in json.dumps(r.base.to_dict()["data_flow"])


@pytest.mark.parametrize(
    "flow",
    [
        {"memory_limit_mb": 64},
        {"default_memory_limit_mb": 64},
        {"memory_settings": {"max_size_mb": 64}},
        {"memory_limit_mb": 64, "memory_settings": {"max_size_mb": 64}},
    ],
)
def test_memory_limit_aliases(flow: dict[str, Any]) -> None:
    assert resolve({"data_flow": flow}).base.data_flow.memory_limit_mb == 64


def test_alias_at_container_level_and_phase_override() -> None:
    config = {
        "phases": [{"name": "a"}],
        "phase_overrides": {"a": {"storage_strategy": {"mode": "persist"}}},
        "containers": {"portfolio_*": {"results_storage": "memory"}},
    }
    r = resolve(config)
    assert r.phase("a").data_flow.mode == "file"
    c = r.container("a", "portfolio_1")
    assert c.data_flow.mode == "memory"
    assert str(c.settings.provenance("data_flow.mode")) == "containers.portfolio_*.results_storage"


def test_persist_intermediate_results_is_save_all_phases() -> None:
    r = resolve({"storage_strategy": {"persist_intermediate_results": True}})
    assert r.base.data_flow.persistence.save_all_phases is True
    assert r.base.provenance("data_flow.persistence.save_all_phases").path == (
        "storage_strategy.persist_intermediate_results"
    )


def test_compression_none_spellings() -> None:
    for value in (None, "none"):
        flow = {"file_settings": {"format": "parquet", "compression": value}}
        assert resolve({"data_flow": flow}).base.data_flow.file.compression is None


def test_event_kinds_normalised_and_registered_kinds_accepted() -> None:
    register_event_kind("REBALANCE")
    r = resolve({"event_tracing": ["fill", "Position_Open", "rebalance"]})
    assert r.base.event_tracing == ("FILL", "POSITION_OPEN", "REBALANCE")


# --- format-dependent settings across levels ---------------------------------------------------


def test_inherited_compression_falls_back_when_a_higher_level_changes_the_format() -> None:
    config = {
        "data_flow": {
            "file_settings": {"format": "parquet", "compression": "snappy", "partition_by": ["d"]}
        },
        "containers": {"x": {"data_flow": {"file_settings": {"format": "arrow"}}}},
    }
    c = resolve(config).container(None, "x")
    assert (c.data_flow.file.format, c.data_flow.file.compression) == ("arrow", None)
    assert c.data_flow.file.partition_by == ()
    assert c.settings.provenance("data_flow.file.compression") == Provenance(
        Level.PACKAGE_DEFAULT, "default for format arrow"
    )


def test_compression_set_above_the_format_must_fit_it() -> None:
    config = {
        "data_flow": {"file_settings": {"format": "arrow"}},
        "containers": {"x": {"data_flow": {"file_settings": {"compression": "zstd"}}}},
    }
    assert resolve(config).container(None, "x").data_flow.file.compression == "zstd"
    config["containers"]["x"]["data_flow"]["file_settings"]["compression"] = "snappy"
    with pytest.raises(ConfigError) as err:
        resolve(config)
    assert str(err.value) == (
        "containers.x.data_flow.file_settings.compression: 'snappy' is not available with "
        "format 'arrow' (set by data_flow.file_settings.format); allowed with arrow: none, "
        "lz4, zstd"
    )


def test_pickle_allowed_with_allow_pickle() -> None:
    r = resolve({"allow_pickle": True, "data_flow": {"file_settings": {"format": "pickle"}}})
    assert r.base.data_flow.file.format == "pickle" and r.allow_pickle


# --- container patterns ------------------------------------------------------------------------


def test_specificity() -> None:
    assert specificity("portfolio_1") == (11, 0, 0)
    assert specificity("portfolio_*") == (10, 0, -1)
    assert specificity("portfolio_[0-9]*") == (10, 1, -1)
    assert specificity("portfolio_?") == (10, 1, 0)
    assert specificity("a[b") == (3, 0, 0)  # an unclosed bracket is a literal


@pytest.mark.parametrize(
    ("container_id", "expected"),
    [
        ("portfolio_1", "portfolio_1"),  # exact name beats every pattern
        ("portfolio_5", "portfolio_?"),  # ? beats [0-9]* and *
        ("portfolio_23", "portfolio_2*"),  # more literal characters
        ("portfolio_99", "portfolio_[0-9]*"),  # a class beats a bare *
        ("portfolio_x9", "portfolio_*"),
        ("data", None),
    ],
)
def test_most_specific_pattern_wins(container_id: str, expected: str | None) -> None:
    patterns = ["portfolio_*", "portfolio_?", "portfolio_2*", "portfolio_[0-9]*", "portfolio_1"]
    assert best_match(container_id, patterns, "containers") == expected
    body = {p: {"data_flow": {"memory_limit_mb": i + 1}} for i, p in enumerate(patterns)}
    c = resolve({"phases": [{"name": "a"}], "containers": body}).container("a", container_id)
    assert c.pattern == expected


def test_equally_specific_patterns_are_an_error_naming_both() -> None:
    config = {
        "phases": [{"name": "opt"}],
        "containers": {"p_*": {"results_storage": "disk"}, "*_1": {"results_storage": "memory"}},
    }
    r = resolve(config)
    assert r.container("opt", "p_2").pattern == "p_*"  # only one matches: fine
    with pytest.raises(ConfigError) as err:
        r.container("opt", "p_1")
    assert str(err.value) == (
        "containers (phase 'opt'): container 'p_1' matches both '*_1' and 'p_*', which are "
        "equally specific; make one of them more specific (more literal characters) or "
        "remove one"
    )


def test_matching_is_case_sensitive() -> None:
    assert best_match("Portfolio_1", ["portfolio_*"], "containers") is None


def test_pattern_settings_are_resolved_up_front() -> None:
    config = {"containers": {"portfolio_*": {"data_flow": {"mode": "hybrid"}}}}
    r = resolve({**config, "phases": [{"name": "a"}, {"name": "b", "results_storage": "disk"}]})
    assert r.phase("a").pattern_settings["portfolio_*"].data_flow.mode == "hybrid"
    assert r.base_patterns["portfolio_*"].data_flow.mode == "hybrid"
    assert r.patterns == ("portfolio_*",)


@pytest.mark.parametrize("bad", ["../x", "a/b", "", "x\ty", ".hidden", " padded"])
def test_container_ids_are_checked(bad: str) -> None:
    r = resolve({"phases": [{"name": "a"}]})
    with pytest.raises(ConfigError, match=r"container id .* is not a valid name"):
        r.container("a", bad)


def test_container_lookups_share_settings_objects() -> None:
    config = {"phases": [{"name": "a"}], "containers": {"portfolio_*": {"results_storage": "disk"}}}
    phase = resolve(config).phase("a")
    first, second = phase.container("portfolio_1"), phase.container("portfolio_2")
    assert first.settings is second.settings
    assert (first.container_id, second.container_id) == ("portfolio_1", "portfolio_2")


# --- runtime arguments ---------------------------------------------------------------------------


def test_parse_set_args() -> None:
    assert parse_set_args(
        [
            "data_flow.mode=file",
            "workers=4",
            "event_tracing=[FILL, POSITION_OPEN]",
            "allow_pickle=true",
            "results_dir=/tmp/a=b",
        ]
    ) == {
        "data_flow.mode": "file",
        "workers": 4,
        "event_tracing": ["FILL", "POSITION_OPEN"],
        "allow_pickle": True,
        "results_dir": "/tmp/a=b",
    }
    with pytest.raises(ConfigError, match=r"--set 'workers': expected path=value"):
        parse_set_args(["workers"])


def test_runtime_global_beats_containers_and_phases() -> None:
    config = {
        "phases": [{"name": "a", "data_flow": {"mode": "memory"}}],
        "containers": {"portfolio_*": {"data_flow": {"mode": "hybrid"}}},
    }
    r = resolve(config, runtime={"data_flow.mode": "file"})
    assert r.phase("a").data_flow.mode == "file"
    assert r.container("a", "portfolio_1").data_flow.mode == "file"
    assert r.base.data_flow.mode == "file"


def test_runtime_structural_paths_patch_the_configuration() -> None:
    config = {"phases": [{"name": "a"}, {"name": "b", "depends_on": ["a"]}]}
    runtime = {
        "workers": 3,
        "results_dir": "/tmp/elsewhere",
        "phases[1].sequence": "train_test",
        "run_name": "nightly",
    }
    r = resolve(config, runtime=runtime)
    assert (r.workers, r.results_dir, r.run_name) == (3, "/tmp/elsewhere", "nightly")
    assert r.phase("b").sequence == "train_test" and r.phase("b").params.data_split == 0.8
    assert r.config.workers == 3


def test_runtime_run_parameters_apply_to_every_phase() -> None:
    config = {
        "strategy": {"type": "sma_crossover", "fast": 10, "slow": 30},
        "phases": [{"name": "a", "strategy": {"fast": 5}}],
    }
    r = resolve(config, runtime={"strategy.slow": 50, "phases.a.strategy.fast": 7})
    assert r.phase("a").params.strategy is not None
    assert r.phase("a").params.strategy.params == {"fast": 7, "slow": 50}


def test_runtime_errors_name_the_argument() -> None:
    with pytest.raises(ConfigError) as err:
        resolve({}, runtime={"data_flow.mode": "fiel"})
    assert str(err.value) == (
        "--set: data_flow.mode: 'fiel' is not allowed; allowed: memory, file, streaming, "
        "hybrid; did you mean 'file'?"
    )
    with pytest.raises(ConfigError, match=r"--set 'data_flwo.mode': unknown key 'data_flwo'"):
        resolve({}, runtime={"data_flwo.mode": "file"})
    with pytest.raises(ConfigError, match="unknown phase 'serch'; did you mean 'search'"):
        resolve({"phases": [{"name": "search"}]}, runtime={"phases.serch.results_storage": "disk"})
    with pytest.raises(ConfigError, match=r"phases has no item 4 \(1 items\)"):
        resolve({"phases": [{"name": "search"}]}, runtime={"phases[4].sequence": "train_test"})


def test_runtime_phase_names_with_dots() -> None:
    config = {"phases": [{"name": "stage.1"}]}
    r = resolve(config, runtime={"phase_overrides.stage.1.results_storage": "disk"})
    assert r.phase("stage.1").data_flow.mode == "file"


# --- run parameters --------------------------------------------------------------------------


def test_run_parameters_merge_mappings_and_replace_the_rest() -> None:
    config = {
        "data": {"symbols": ["SPY"], "start": "2020-01-01", "end": "2023-12-31"},
        "strategy": {"type": "sma_crossover", "fast": 10, "slow": 30},
        "portfolio": {"initial_capital": 50_000, "commission_bps": 1},
        "objective_function": "sharpe_ratio",
        "parameter_space": {"strategy.fast": [5, 10]},
        "phases": [
            {"name": "search", "config": {"parameter_space": {"strategy.slow": [20, 40]}}},
            {"name": "validate", "depends_on": ["search"], "top_k": 3},
        ],
        "phase_overrides": {
            "validate": {
                "data": {"start": "2022-01-01"},
                "strategy": {"type": "momentum", "lookback": 20},
                "objective_function": {"name": "max_drawdown", "direction": "maximize"},
            }
        },
    }
    r = resolve(config)
    search, validate = r.phase("search").params, r.phase("validate").params
    assert search.parameter_space == {"strategy.slow": [20, 40]}  # replaced, not merged
    assert search.objective_function is not None
    assert search.objective_function.name == "sharpe_ratio"
    assert search.objective_function.direction == "maximize"
    assert validate.data is not None
    assert (validate.data.symbols, validate.data.start, validate.data.end) == (
        ["SPY"],
        "2022-01-01",
        "2023-12-31",
    )
    assert validate.strategy is not None
    assert (validate.strategy.type, validate.strategy.params) == ("momentum", {"lookback": 20})
    assert validate.portfolio is not None and validate.portfolio.initial_capital == 50_000
    assert validate.top_k == 3 and search.top_k is None


def test_merged_run_parameters_are_validated() -> None:
    config = {
        "data": {"start": "2020-01-01", "end": "2021-01-01"},
        "phases": [{"name": "a"}],
        "phase_overrides": {"a": {"data": {"start": "2022-01-01"}}},
    }
    with pytest.raises(ConfigError) as err:
        resolve(config)
    assert str(err.value) == (
        "phase 'a' (merged levels): data.end: start 2022-01-01 is not before end 2021-01-01"
    )


def test_sequence_settings() -> None:
    config = {
        "phases": [
            {"name": "wf", "sequence": "walk_forward", "walk_forward": {"train": 250, "test": 50}},
            {"name": "mc", "sequence": "monte_carlo", "monte_carlo": {"n": 1000, "seed": 7}},
            {"name": "tt", "sequence": "train_test", "data_split": "2022-06-30"},
        ]
    }
    r = resolve(config)
    wf = r.phase("wf").params.walk_forward
    assert wf is not None and (wf.train, wf.test, wf.step, wf.mode) == (250, 50, None, "rolling")
    mc = r.phase("mc").params.monte_carlo
    assert mc is not None and (mc.n, mc.batch, mc.seed, mc.method) == (1000, 25, 7, "returns")
    assert r.phase("tt").params.data_split == "2022-06-30"


def test_parameter_space_forms() -> None:
    space = {
        "strategy.fast": {"range": [5, 30, 5]},
        "strategy.slow": [40, 60],
        "strategy.mode": "long_only",
        "constraints": ["strategy.fast < strategy.slow", "strategy.fast >= 5"],
        "sample": {"n": 4, "seed": 1},
    }
    assert resolve({"parameter_space": space}).config.parameter_space == space


def test_yaml_dates_become_iso_text() -> None:
    config = load_config("data:\n  start: 2020-01-01\n  end: 2020-06-30T16:00:00\n")
    assert config.data is not None
    assert (config.data.start, config.data.end) == ("2020-01-01", "2020-06-30T16:00:00")


# --- phases ----------------------------------------------------------------------------------


def test_persist_flags() -> None:
    phases = [{"name": "a"}, {"name": "b", "depends_on": ["a"]}, {"name": "c"}]
    r = resolve(
        {
            "phases": phases,
            "storage_strategy": {"persist_intermediate_results": True, "stages_to_persist": ["b"]},
        }
    )
    assert [r.phase(n).persist for n in "abc"] == [False, True, False]
    r = resolve({"phases": phases, "data_flow": {"persistence": {"save_final_only": True}}})
    assert [r.phase(n).persist for n in "abc"] == [False, True, True]
    r = resolve({"phases": phases, "phase_overrides": {"a": {"results_storage": "disk"}}})
    assert [r.phase(n).persist for n in "abc"] == [True, False, False]


def test_output_forms() -> None:
    r = resolve(
        {
            "phases": [
                {"name": "a", "output": ["trades"]},
                {"name": "b", "output": {"trades": False}},
            ]
        }
    )
    assert r.phase("a").output == ("trades",)
    # a mapping turns kinds off; the kinds it does not name stay on
    assert r.phase("b").output == (
        "container_results",
        "aggregate_metrics",
        "equity_curves",
        "selected_parameters",
    )
    assert len(resolve({"phases": [{"name": "c"}]}).phase("c").output) == 5


def test_unknown_phase_lookup() -> None:
    r = resolve({"phases": [{"name": "optimization"}]})
    with pytest.raises(ConfigError) as err:
        r.phase("optimisation")
    assert str(err.value) == (
        "unknown phase 'optimisation'; did you mean 'optimization'? (phases: optimization)"
    )


def test_phases_named_only_in_overrides() -> None:
    config = {"phase_overrides": {"search": {"results_storage": "disk"}}}
    assert resolve(config).phase("search").data_flow.mode == "file"
    with pytest.raises(ConfigError, match=r"phase_overrides\.search: unknown phase 'search'"):
        resolve(config, workflow_defaults={})


def test_workflow_default_dependencies_are_checked() -> None:
    with pytest.raises(ConfigError) as err:
        resolve({}, {"a": {"depends_on": ["b"]}, "b": {"depends_on": ["a"]}})
    assert str(err.value) == (
        "phases: dependency cycle a -> b -> a; remove one of these depends_on entries"
    )
    with pytest.raises(ConfigError, match=r"workflow_defaults.a.depends_on\[0\]: unknown phase"):
        resolve({}, {"a": {"depends_on": ["nope"]}})


def test_workflow_defaults_are_validated() -> None:
    with pytest.raises(ConfigError) as err:
        resolve({}, {"search": {"results_storage": "disc"}})
    assert str(err.value) == (
        "workflow defaults: workflow_defaults.search.results_storage: 'disc' is not allowed; "
        "allowed: memory, disk; did you mean 'disk'?"
    )


# --- the resolved objects ------------------------------------------------------------------------


def test_resolved_objects_are_frozen_and_serialisable() -> None:
    config = {
        "phases": [{"name": "a", "parameter_space": {"strategy.fast": [1, 2]}}],
        "containers": {"portfolio_*": {"results_storage": "disk"}},
        "catalog": "postgresql://user:secret@db.example:5432/phasekit",
    }
    r = resolve(config)
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.results_dir = "x"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.phase("a").data_flow.mode = "file"  # type: ignore[misc]
    with pytest.raises(TypeError):
        r.phase("a").settings.sources["x"] = Provenance(Level.RUNTIME, "y")  # type: ignore[index]
    data = json.loads(json.dumps(r.to_dict()))
    assert data["catalog"] == {
        "backend": "postgresql",
        "location": "postgresql://user:***@db.example:5432/phasekit",
    }
    assert r.catalog.location.endswith("user:secret@db.example:5432/phasekit")
    assert data["phases"]["a"]["containers"]["portfolio_*"]["data_flow"]["mode"] == "file"
    assert data["phases"]["a"]["params"]["parameter_space"] == {"strategy.fast": [1, 2]}


@pytest.mark.parametrize(
    ("spec", "backend", "location"),
    [
        ("runs/catalog.db", "sqlite", "runs/catalog.db"),
        ("sqlite:///runs/catalog.db", "sqlite", "runs/catalog.db"),
        ("sqlite:////var/lib/catalog.db", "sqlite", "/var/lib/catalog.db"),
        ("postgres://u@h/db", "postgresql", "postgresql://u@h/db"),
    ],
)
def test_catalog_targets(spec: str, backend: str, location: str) -> None:
    catalog = resolve({"catalog": spec}).catalog
    assert (catalog.backend, catalog.location) == (backend, location)
