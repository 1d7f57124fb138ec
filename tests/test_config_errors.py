"""A table of bad configurations and the exact error each gets: the path, the bad value,
what is allowed and a did-you-mean where one is close. Never a raw pydantic traceback."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from phasekit.config import load_config, resolve
from phasekit.errors import ConfigError

TOP_KEYS = (
    " (allowed keys: allow_pickle, catalog, containers, dag, data, data_flow, data_split, "
    "description, encryption, engine, event_tracing, execution, executor, monte_carlo, "
    "objective_function, parameter_space, phase_overrides, phases, portfolio, results, "
    "results_dir, results_storage, "
    "retention_policy, run_name, sliding_window_size, storage_strategy, strategy, top_k, "
    "trace_level, walk_forward, workers, workflow)"
)
NAME_RULES = (
    "; allowed: letters, digits and punctuation other than path separators, without '..', "
    "a leading '.', control characters or the ending '.phasekit-tmp', valid UTF-8 of at most "
    "200 bytes"
)
PHASES = [{"name": "search"}, {"name": "validate", "depends_on": ["search"]}]

BAD_CONFIGS: list[tuple[str, Any, str]] = [
    (
        "mode_typo",
        {"data_flow": {"mode": "fiel"}},
        "data_flow.mode: 'fiel' is not allowed; allowed: memory, file, streaming, hybrid; did you mean 'file'?",
    ),
    (
        "phase_mode",
        {"phases": [{"name": "a"}, {"name": "b", "data_flow": {"mode": "disk"}}]},
        "phases[1].data_flow.mode: 'disk' is not allowed; allowed: memory, file, streaming, hybrid; did you mean 'file'? ('disk' is the results_storage spelling of file)",
    ),
    (
        "unknown_top",
        {"data_flwo": {"mode": "file"}},
        "data_flwo: unknown key 'data_flwo'; did you mean 'data_flow'?" + TOP_KEYS,
    ),
    (
        "wrong_level",
        {"buffer_size": 100},
        "buffer_size: unknown key 'buffer_size'; it belongs under data_flow.streaming_settings"
        + TOP_KEYS,
    ),
    (
        "wrong_level2",
        {"data_flow": {"max_size_mb": 100}},
        "data_flow.max_size_mb: unknown key 'max_size_mb'; it belongs under data_flow.memory_settings (allowed keys: default_memory_limit_mb, default_mode, file_settings, memory_limit_mb, memory_settings, mode, persistence, streaming_settings)",
    ),
    (
        "format_typo",
        {"data_flow": {"file_settings": {"format": "parqet"}}},
        "data_flow.file_settings.format: 'parqet' is not allowed; allowed: arrow, parquet, json, csv, pickle, hdf5; did you mean 'parquet'?",
    ),
    (
        "compression_typo",
        {"data_flow": {"file_settings": {"format": "parquet", "compression": "snapy"}}},
        "data_flow.file_settings.compression: 'snapy' is not allowed; allowed: none, lz4, zstd, snappy, gzip, brotli, lzf; did you mean 'snappy'?",
    ),
    (
        "compression_format",
        {"data_flow": {"file_settings": {"format": "arrow", "compression": "snappy"}}},
        "data_flow.file_settings.compression: 'snappy' is not available with format 'arrow' (set by data_flow.file_settings.format); allowed with arrow: none, lz4, zstd",
    ),
    (
        "partition_csv",
        {"data_flow": {"file_settings": {"format": "csv", "partition_by": ["date"]}}},
        "data_flow.file_settings.partition_by: partition_by needs format parquet, but the format is 'csv' (set by data_flow.file_settings.format)",
    ),
    (
        "max_size_zero",
        {"data_flow": {"memory_settings": {"max_size_mb": 0}}},
        "data_flow.memory_settings.max_size_mb: must be > 0 and <= 1,073,741,824, got 0",
    ),
    (
        "limit_string",
        {"data_flow": {"memory_limit_mb": "500"}},
        "data_flow.memory_limit_mb: expected a number > 0 and <= 1,073,741,824, got '500' (str)",
    ),
    (
        "buffer_float",
        {"data_flow": {"streaming_settings": {"buffer_size": 10.5}}},
        "data_flow.streaming_settings.buffer_size: expected an integer >= 1 and <= 10,000,000, got 10.5 (float)",
    ),
    (
        "buffer_zero",
        {"data_flow": {"streaming_settings": {"buffer_size": 0}}},
        "data_flow.streaming_settings.buffer_size: must be >= 1, got 0",
    ),
    (
        "flush_negative",
        {"data_flow": {"streaming_settings": {"flush_interval": -1}}},
        "data_flow.streaming_settings.flush_interval: must be > 0 and <= 86,400, got -1",
    ),
    (
        "bool_string",
        {"data_flow": {"persistence": {"save_all_phases": "yes"}}},
        "data_flow.persistence.save_all_phases: expected true or false, got 'yes' (str)",
    ),
    (
        "formats_value",
        {"data_flow": {"persistence": {"formats": {"metrics": "xml"}}}},
        "data_flow.persistence.formats.metrics: 'xml' is not allowed; allowed: arrow, parquet, json, csv, pickle, hdf5",
    ),
    (
        "formats_key",
        {"data_flow": {"persistence": {"formats": {"../metrics": "json"}}}},
        "data_flow.persistence.formats['../metrics']: output type '../metrics' is not a valid name: it contains '..'"
        + NAME_RULES,
    ),
    (
        "results_storage_typo",
        {"results_storage": "disc"},
        "results_storage: 'disc' is not allowed; allowed: memory, disk; did you mean 'disk'?",
    ),
    (
        "alias_conflict",
        {"results_storage": "disk", "data_flow": {"mode": "memory"}},
        "results_storage: 'disk' (= data_flow.mode 'file') conflicts with data_flow.mode: 'memory' at the same level; both set the same thing, keep one",
    ),
    (
        "limit_conflict",
        {"data_flow": {"memory_limit_mb": 100, "memory_settings": {"max_size_mb": 200}}},
        "data_flow.memory_settings.max_size_mb: 200 conflicts with data_flow.memory_limit_mb: 100 at the same level; both set the same thing, keep one",
    ),
    (
        "storage_mode_typo",
        {"storage_strategy": {"mode": "persistent"}},
        "storage_strategy.mode: 'persistent' is not allowed; allowed: memory, persist, hybrid; did you mean 'persist'?",
    ),
    (
        "cleanup_typo",
        {"storage_strategy": {"cleanup_policy": "keep_last"}},
        "storage_strategy.cleanup_policy: 'keep_last' is not allowed; allowed: keep_all, keep_latest, keep_none; did you mean 'keep_latest'?",
    ),
    (
        "cleanup_in_phase",
        {
            "phases": PHASES,
            "phase_overrides": {"search": {"storage_strategy": {"cleanup_policy": "keep_none"}}},
        },
        "phase_overrides.search.storage_strategy.cleanup_policy: cleanup_policy is a run-wide setting; set it in the top-level storage_strategy",
    ),
    (
        "retention_typo",
        {"retention_policy": "sliding"},
        "retention_policy: 'sliding' is not allowed; allowed: sliding_window, trade_complete, minimal, keep_all; did you mean 'sliding_window'?",
    ),
    (
        "event_typo",
        {"event_tracing": ["FILL", "POSITION_OPN"]},
        "event_tracing[1]: 'POSITION_OPN' is not allowed; allowed: BAR, SIGNAL, ORDER, FILL, POSITION_OPEN, POSITION_CLOSE, PORTFOLIO_UPDATE or a kind registered with register_event_kind; did you mean 'POSITION_OPEN'?",
    ),
    (
        "event_string",
        {"event_tracing": "FILL"},
        "event_tracing: expected a list, got 'FILL' (str)",
    ),
    (
        "window_zero",
        {"sliding_window_size": 0},
        "sliding_window_size: must be >= 1, got 0",
    ),
    (
        "phase_dotdot",
        {"phases": [{"name": "../evil"}]},
        "phases[0].name: phase name '../evil' is not a valid name: it contains '..'" + NAME_RULES,
    ),
    (
        "phase_sep",
        {"phases": [{"name": "a/b"}]},
        "phases[0].name: phase name 'a/b' is not a valid name: it contains the path separator '/'"
        + NAME_RULES,
    ),
    (
        "phase_nul",
        {"phases": [{"name": "a\x00b"}]},
        "phases[0].name: phase name 'a\\x00b' is not a valid name: it contains a NUL character"
        + NAME_RULES,
    ),
    (
        "phase_dup",
        {"phases": [{"name": "a"}, {"name": "a"}]},
        "phases[1].name: phase name 'a' is used twice",
    ),
    (
        "depends_unknown",
        {"phases": [{"name": "search"}, {"name": "validate", "depends_on": ["serch"]}]},
        "phases[1].depends_on[0]: unknown phase 'serch'; did you mean 'search'? (phases: search, validate)",
    ),
    (
        "cycle",
        {"phases": [{"name": "a", "depends_on": ["b"]}, {"name": "b", "depends_on": ["a"]}]},
        "phases: dependency cycle a -> b -> a; remove one of these depends_on entries",
    ),
    (
        "override_unknown",
        {"phases": PHASES, "phase_overrides": {"validation": {"results_storage": "disk"}}},
        "phase_overrides.validation: unknown phase 'validation'; did you mean 'validate'? (phases: search, validate)",
    ),
    (
        "pattern_abs",
        {"containers": {"/abs/*": {"data_flow": {"mode": "file"}}}},
        "containers['/abs/*']: container pattern '/abs/*' is not a valid name: it contains the path separator '/'"
        + NAME_RULES,
    ),
    (
        "pattern_bracket",
        {"containers": {"port[folio": {"data_flow": {"mode": "file"}}}},
        "containers.port[folio: container pattern 'port[folio' has an unclosed '['",
    ),
    (
        "container_mode",
        {"containers": {"portfolio_*": {"data_flow": {"mode": "hybird"}}}},
        "containers.portfolio_*.data_flow.mode: 'hybird' is not allowed; allowed: memory, file, streaming, hybrid; did you mean 'hybrid'?",
    ),
    (
        "pickle",
        {"data_flow": {"file_settings": {"format": "pickle"}}},
        "data_flow.file_settings.format: format 'pickle' needs allow_pickle: true at the top level (loading a pickle can run arbitrary code)",
    ),
    (
        "save_both",
        {"data_flow": {"persistence": {"save_all_phases": True, "save_final_only": True}}},
        "data_flow.persistence.save_final_only: true contradicts data_flow.persistence.save_all_phases: true; set only one of them",
    ),
    (
        "sequence_typo",
        {"phases": [{"name": "wf", "sequence": "walkforward"}]},
        "phases[0].sequence: 'walkforward' is not allowed; allowed: single_pass, train_test, walk_forward, monte_carlo; did you mean 'walk_forward'?",
    ),
    (
        "space_empty",
        {"parameter_space": {"strategy.fast": []}},
        "parameter_space['strategy.fast']: is an empty list; give at least one value",
    ),
    (
        "space_constraint",
        {
            "parameter_space": {
                "strategy.fast": [5, 10],
                "strategy.slow": [20, 30],
                "constraints": ["fast < strategy.slow"],
            }
        },
        "parameter_space.constraints[0]: 'fast' is neither a parameter of this space nor a number; did you mean 'strategy.fast'? (parameters: strategy.fast, strategy.slow)",
    ),
    (
        "objective_typo",
        {"objective_function": {"name": "sharpe"}},
        "objective_function.name: 'sharpe' is not allowed; allowed: total_return, sharpe_ratio, sortino_ratio, max_drawdown, win_rate, trade_count, profit_factor, exposure, final_equity, or a function as module:attribute; did you mean 'sharpe_ratio'?",
    ),
    (
        "direction_typo",
        {"objective_function": {"name": "sharpe_ratio", "direction": "max"}},
        "objective_function.direction: 'max' is not allowed; allowed: maximize, minimize",
    ),
    (
        "data_dates",
        {"data": {"symbols": ["SPY"], "start": "2023-12-31", "end": "2020-01-01"}},
        "data.end: start 2023-12-31 is not before end 2020-01-01",
    ),
    (
        "catalog_scheme",
        {"catalog": "mysql://u@h/db"},
        "catalog: 'mysql://u@h/db' has the unsupported scheme 'mysql'; use a file path, sqlite:///path or postgresql://user@host/db",
    ),
    (
        "workers_zero",
        {"workers": 0},
        "workers: must be >= 1 or 'auto', got 0",
    ),
    (
        "results_dir_empty",
        {"results_dir": ""},
        "results_dir: must not be empty",
    ),
    (
        "split_range",
        {"data_split": 1.5},
        "data_split: a fraction must be strictly between 0 and 1, got 1.5",
    ),
    (
        "strategy_typo",
        {"strategy": {"type": "sma_cross", "fast": 10}},
        "strategy.type: 'sma_cross' is not allowed; allowed: sma_crossover, momentum, mean_reversion, or a class as module:attribute; did you mean 'sma_crossover'?",
    ),
    (
        "run_name_abs",
        {"run_name": "C:evil"},
        "run_name: run name 'C:evil' is not a valid name: it looks like an absolute Windows path"
        + NAME_RULES,
    ),
    (
        "phase_missing_name",
        {"phases": [{"sequence": "single_pass"}]},
        "phases[0].name: required key is missing",
    ),
    (
        "phases_string",
        {"phases": "search"},
        "phases: expected a list, got 'search' (str)",
    ),
    (
        "output_typo",
        {"phases": [{"name": "a", "output": ["trade"]}]},
        "phases[0].output[0]: 'trade' is not allowed; allowed: container_results, aggregate_metrics, trades, equity_curves, selected_parameters, container_items; did you mean 'trades'?",
    ),
    (
        "topology_typo",
        {"phases": [{"name": "a", "topology": "backtst"}]},
        "phases[0].topology: 'backtst' is not allowed; allowed: backtest, analysis, stream, or a topology as module:attribute; did you mean 'backtest'?",
    ),
    (
        "not_mapping",
        ["data_flow"],
        "a configuration is a path, YAML text or a mapping, got list",
    ),
    (
        "range_bad",
        {"parameter_space": {"strategy.fast": {"range": [10, 5]}}},
        "parameter_space['strategy.fast'].range: [10, 5] holds no value: start 10 is not below stop 5",
    ),
    (
        "sample_missing_n",
        {"parameter_space": {"strategy.fast": [1, 2], "sample": {"seed": 3}}},
        "parameter_space.sample: needs n, the number of parameter sets to draw",
    ),
    (
        "frequency_bad",
        {"data": {"frequency": "1 fortnight"}},
        "data.frequency: '1 fortnight' is not a frequency; use a number and one of s, min (or m), h, d, e.g. 1min, 15min, 1h, 1d",
    ),
    (
        "portfolio_fraction",
        {"portfolio": {"fraction": 1.5}},
        "portfolio.fraction: must be > 0 and <= 1, got 1.5",
    ),
    (
        "multi",
        {"data_flow": {"mode": "fiel", "streaming_settings": {"buffer_size": 0}}},
        "2 problems:\n  - data_flow.mode: 'fiel' is not allowed; allowed: memory, file, streaming, hybrid; did you mean 'file'?\n  - data_flow.streaming_settings.buffer_size: must be >= 1, got 0",
    ),
]


def test_the_table_is_large_enough() -> None:
    assert len(BAD_CONFIGS) >= 30
    assert len({name for name, _, _ in BAD_CONFIGS}) == len(BAD_CONFIGS)


@pytest.mark.parametrize(
    ("data", "message"), [c[1:] for c in BAD_CONFIGS], ids=[c[0] for c in BAD_CONFIGS]
)
def test_bad_configuration(data: Any, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        resolve(load_config(data))
    assert str(err.value) == message
    assert not isinstance(err.value.__cause__, ValidationError)
    assert err.value.__suppress_context__ or err.value.__context__ is None


# --- YAML sources ------------------------------------------------------------------------------


def test_yaml_errors_carry_the_line() -> None:
    text = "phases:\n  - name: a\n  - name: b\n    data_flow:\n      mode: fiel\n"
    with pytest.raises(ConfigError) as err:
        load_config(text)
    assert str(err.value) == (
        "phases[1].data_flow.mode: 'fiel' is not allowed; allowed: memory, file, streaming, "
        "hybrid; did you mean 'file'? (line 5)"
    )


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text(
        "data_flow:\n  streaming_settings:\n    buffer_size: 0\n  file_settings:\n    formt: csv\n"
    )
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value) == (
        f"2 problems in {path}:\n"
        "  - data_flow.file_settings.formt: unknown key 'formt'; did you mean 'format'? "
        "(allowed keys: base_path, compression, format, partition_by) (line 5)\n"
        "  - data_flow.streaming_settings.buffer_size: must be >= 1, got 0 (line 3)"
    )


def test_one_problem_in_a_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "run.yml"
    path.write_text("results_storage: disc\n")
    with pytest.raises(ConfigError) as err:
        load_config(str(path))
    assert str(err.value) == (
        f"{path}: results_storage: 'disc' is not allowed; allowed: memory, disk; "
        "did you mean 'disk'? (line 1)"
    )


def test_duplicate_yaml_keys_are_an_error() -> None:
    with pytest.raises(ConfigError) as err:
        load_config("data_flow:\n  mode: memory\n  mode: file\n")
    assert str(err.value) == (
        "config line 3: duplicate key 'mode' (first set at line 2); a key may appear once in "
        "a mapping"
    )


def test_yaml_syntax_error() -> None:
    with pytest.raises(ConfigError) as err:
        load_config("data_flow:\n  mode: [file\n")
    assert str(err.value) == (
        "config line 3, column 1: not valid YAML: did not find expected ',' or ']'"
    )


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.yaml"
    with pytest.raises(ConfigError) as err:
        load_config(str(path))
    assert str(err.value) == f"config file {str(path)!r} does not exist"


def test_yaml_top_level_must_be_a_mapping() -> None:
    with pytest.raises(ConfigError) as err:
        load_config("- a\n- b\n")
    assert str(err.value) == "expected a mapping of configuration keys, got ['a', 'b'] (list)"


def test_empty_yaml_is_all_defaults() -> None:
    assert resolve(load_config("# nothing\n")).base.data_flow.mode == "memory"


def test_quoted_numbers_are_not_numbers() -> None:
    with pytest.raises(ConfigError) as err:
        load_config('data_flow:\n  streaming_settings:\n    buffer_size: "100"\n')
    assert str(err.value) == (
        "data_flow.streaming_settings.buffer_size: expected an integer >= 1 and <= 10,000,000, got '100' (str) "
        "(line 3)"
    )


def test_a_path_without_a_suffix_that_does_not_exist() -> None:
    with pytest.raises(ConfigError) as err:
        load_config("configs/nightly")
    assert str(err.value) == "config file 'configs/nightly' does not exist"
