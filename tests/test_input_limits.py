"""Malformed configurations: each gives one clean line and exit code 1, fast and small.

Every case of the table runs in-process through ``phasekit run`` and through ``phasekit
config show`` (the same checks, the same exit code); a handful also run as subprocesses
to check the real exit code and stderr. A case is text appended to a small valid
configuration, or a builder that makes the file (FIFOs, folders, raw bytes).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Union

import pytest

from phasekit.cli import main
from phasekit.config import load_config
from phasekit.config.limits import (
    MAX_BARS,
    MAX_CONFIG_BYTES,
    MAX_DEPTH,
    MAX_GRID,
    MAX_NODES,
    MAX_QUOTED_CHARS,
)
from phasekit.errors import ConfigError

BASE = "workflow: optimization\nrun_name: limits\n"
MAX_SECONDS = 2.0
MAX_BYTES = 200 * 1024 * 1024
MAX_LINE = 2_000  # the longest clean line: a message plus a list of allowed keys


def _lol(levels: int, width: int = 10) -> str:
    """A "billion laughs" document: each level holds ``width`` aliases of the one below."""
    text = "lol0: &l0 [" + ", ".join(["lol"] * width) + "]\n"
    for i in range(1, levels + 1):
        text += f"lol{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * width) + "]\n"
    return text


def _lol_maps(levels: int) -> str:
    text = "m0: &m0 {a: 1, b: 2, c: 3, d: 4, e: 5, f: 6, g: 7, h: 8, i: 9, j: 10}\n"
    for i in range(1, levels + 1):
        keys = ", ".join(f"k{j}: *m{i - 1}" for j in range(10))
        text += f"m{i}: &m{i} {{{keys}}}\n"
    return text


def _fifo(tmp: Path) -> Path:
    path = tmp / "fifo.yaml"
    os.mkfifo(path)
    return path


def _fifo_link(tmp: Path) -> Path:
    link = tmp / "link.yaml"
    link.symlink_to(_fifo(tmp))
    return link


def _folder(tmp: Path) -> Path:
    path = tmp / "folder.yaml"
    path.mkdir()
    return path


def _device(tmp: Path) -> Path:
    return Path("/dev/zero")


def _raw(data: bytes) -> Callable[[Path], Path]:
    def build(tmp: Path) -> Path:
        path = tmp / "raw.yaml"
        path.write_bytes(data)
        return path

    return build


def _data_fifo(tmp: Path) -> Path:
    os.mkfifo(tmp / "bars.csv")
    path = tmp / "c.yaml"
    path.write_text(BASE + f"data: {{source: file, path: '{tmp / 'bars.csv'}'}}\n")
    return path


def _data_folder(tmp: Path) -> Path:
    (tmp / "bars").mkdir()
    path = tmp / "c.yaml"
    path.write_text(BASE + f"data: {{source: file, path: '{tmp / 'bars'}'}}\n")
    return path


Case = tuple[str, Union[str, Callable[[Path], Path]], str]

BIG = 10 * 1024 * 1024
E = "é"
CASES: list[Case] = [
    # --- the text itself
    ("nul_in_value", BASE + "description: a\x00b\n", "NUL"),
    ("nul_in_key", BASE + "k\x00: 1\n", "NUL"),
    ("nul_in_comment", BASE + "# \x00\n", "NUL"),
    ("nul_escaped", 'workflow: optimization\nrun_name: "a\\0b"\n', "NUL"),
    ("nul_escaped_description", BASE + 'description: "x\\0"\n', "NUL"),
    ("invalid_utf8", _raw(BASE.encode() + b"description: \xff\xfe\n"), "not UTF-8"),
    ("utf8_encoded_surrogate", _raw(BASE.encode() + b"description: \xed\xa0\x80\n"), "UTF-8"),
    ("lone_surrogate_value", BASE + 'description: "\\ud800"\n', "Unicode|lone surrogate"),
    ("lone_surrogate_key", BASE + '"\\udfff": 1\n', "Unicode|lone surrogate"),
    (
        "lone_surrogate_name",
        'workflow: optimization\nrun_name: "r\\ud83d"\n',
        "Unicode|lone surrogate",
    ),
    ("lone_surrogate_symbol", BASE + 'data: {symbols: ["\\ud83d"]}\n', "Unicode|lone surrogate"),
    ("size_10mb_scalar", BASE + "description: " + "x" * BIG + "\n", f"{MAX_CONFIG_BYTES:,}"),
    ("size_10mb_comment", BASE + "# " + "x" * BIG + "\n", f"{MAX_CONFIG_BYTES:,}"),
    ("size_2mb_key", BASE + "k" * (2 << 20) + ": 1\n", f"{MAX_CONFIG_BYTES:,}"),
    (
        "unknown_keys_200000",
        BASE + "".join(f"k{i}: 0\n" for i in range(200_000)),
        f"{MAX_CONFIG_BYTES:,}",
    ),
    ("unknown_keys_20000", BASE + "".join(f"k{i}: 0\n" for i in range(20_000)), "20,000 unknown"),
    (
        "unknown_keys_20000_nested",
        BASE + "data:\n" + "".join(f"  k{i}: 0\n" for i in range(20_000)),
        "20,000 unknown keys at data",
    ),
    ("syntax_error", BASE + "data: [1, 2\n", "not valid YAML"),
    ("two_documents", BASE + "---\nb: 2\n", "not valid YAML"),
    ("python_tag", BASE + "x: !!python/object/apply:os.system ['true']\n", "not valid YAML"),
    ("top_level_list", "- 1\n- 2\n", "expected a mapping"),
    ("top_level_scalar", "just: [text\n", "not valid YAML"),
    ("empty_file", "", "give a built-in workflow"),
    ("duplicate_key", BASE + "workers: 1\nworkers: 2\n", "duplicate key"),
    ("bad_timestamp", BASE + "data: {start: 2020-13-45}\n", "month must be"),
    ("int_of_5000_digits", BASE + "data: {n_bars: 1" + "0" * 5000 + "}\n", "not valid YAML"),
    # --- recursion, depth and aliases
    ("recursive_anchor_list", BASE + "x: &a [*a]\n", "recursive anchor"),
    ("recursive_anchor_map", BASE + "x: &a {b: *a}\n", "recursive anchor"),
    ("recursive_anchor_deep", BASE + "x: &a [1, {b: [2, *a]}]\n", "recursive anchor"),
    ("recursive_anchor_top", "&a {workflow: optimization, x: *a}\n", "recursive anchor"),
    ("recursive_merge_key", BASE + "x: &a {<<: *a}\n", "recursive anchor"),
    ("deep_flow_lists_20000", BASE + "x: " + "[" * 20_000 + "]" * 20_000 + "\n", "nest"),
    ("deep_flow_maps_20000", BASE + "x: " + "{a: " * 20_000 + "1" + "}" * 20_000 + "\n", "nest"),
    ("deep_block_lists_20000", BASE + "x:\n" + "- " * 20_000 + "1\n", "nest"),
    (
        "deep_block_maps_200",
        BASE + "".join("  " * i + f"k{i}:\n" for i in range(200)) + "  " * 200 + "1\n",
        f"{MAX_DEPTH} levels",
    ),
    ("deep_just_over", BASE + "x: " + "[" * MAX_DEPTH + "]" * MAX_DEPTH + "\n", "levels"),
    ("billion_laughs_7", BASE + _lol(7), "expand"),
    ("billion_laughs_9", BASE + _lol(9), "expand"),
    ("billion_laughs_maps", BASE + _lol_maps(7), "expand"),
    ("laughs_wide_3x20", BASE + _lol(20, 3), "expand"),
    (
        "one_big_anchor_many_uses",
        BASE
        + "big: &b ["
        + ", ".join(["1"] * 5000)
        + "]\nuses: ["
        + ", ".join(["*b"] * 100)
        + "]\n",
        "expand",
    ),
    (
        "deep_through_aliases",
        BASE + "a: &a " + "[" * 40 + "]" * 40 + "\nb: " + "[" * 40 + "*a" + "]" * 40 + "\n",
        "levels deep",
    ),
    ("aliases_2000", BASE + "one: &o 1\nmany: [" + ", ".join(["*o"] * 2000) + "]\n", "aliases"),
    ("values_60000", BASE + "x: [" + "0," * 60_000 + "]\n", f"{MAX_NODES:,} values"),
    # --- numbers the run cannot honour
    ("n_bars_1e30", BASE + "data: {n_bars: 1.0e30}\n", "expected an integer"),
    ("n_bars_int_1e30", BASE + f"data: {{n_bars: {10**30}}}\n", f"<= {MAX_BARS:,}"),
    ("n_bars_1e11_text", BASE + "data: {n_bars: 1e11}\n", "expected an integer"),
    ("n_bars_1e11", BASE + "data: {n_bars: 100000000000}\n", f"<= {MAX_BARS:,}"),
    ("n_bars_over_max", BASE + f"data: {{n_bars: {MAX_BARS + 1}}}\n", f"<= {MAX_BARS:,}"),
    ("n_bars_one", BASE + "data: {n_bars: 1}\n", ">= 2"),
    ("n_bars_negative", BASE + "data: {n_bars: -5}\n", ">= 2"),
    ("n_bars_nan", BASE + "data: {n_bars: .nan}\n", "expected an integer"),
    ("n_bars_bool", BASE + "data: {n_bars: true}\n", "expected an integer"),
    (
        "bars_spanned_1s_200y",
        BASE + "data: {start: 1900-01-01, end: 2100-01-01, frequency: 1s}\n",
        "bars",
    ),
    ("bars_past_2262", BASE + "data: {n_bars: 4000000, frequency: 1d}\n", "2262"),
    ("memory_limit_inf", BASE + "data_flow: {memory_limit_mb: .inf}\n", "finite"),
    ("memory_limit_minus_inf", BASE + "data_flow: {memory_limit_mb: -.inf}\n", "finite"),
    ("memory_limit_nan", BASE + "data_flow: {memory_limit_mb: .nan}\n", "finite"),
    ("memory_limit_1e300", BASE + "data_flow: {memory_limit_mb: 1.0e300}\n", "<="),
    ("default_memory_limit_inf", BASE + "data_flow: {default_memory_limit_mb: .inf}\n", "finite"),
    ("max_size_inf", BASE + "data_flow: {memory_settings: {max_size_mb: .inf}}\n", "finite"),
    (
        "flush_interval_inf",
        BASE + "data_flow: {streaming_settings: {flush_interval: .inf}}\n",
        "finite",
    ),
    (
        "flush_interval_1e9",
        BASE + "data_flow: {streaming_settings: {flush_interval: 1000000000}}\n",
        "<=",
    ),
    (
        "buffer_size_1e12",
        BASE + "data_flow: {streaming_settings: {buffer_size: 1000000000000}}\n",
        "<=",
    ),
    ("sliding_window_1e12", BASE + "sliding_window_size: 1000000000000\n", "<="),
    ("top_k_1e12", BASE + "top_k: 1000000000000\n", "<="),
    ("workers_1e9", BASE + "workers: 1000000000\n", "<="),
    ("workers_negative", BASE + "workers: -1\n", ">= 1"),
    ("capital_inf", BASE + "portfolio: {initial_capital: .inf}\n", "finite"),
    ("capital_zero", BASE + "portfolio: {initial_capital: 0}\n", "> 0"),
    ("capital_negative", BASE + "portfolio: {initial_capital: -100}\n", "> 0"),
    ("capital_1e300", BASE + "portfolio: {initial_capital: 1.0e300}\n", "<="),
    ("price_inf", BASE + "data: {initial_price: .inf}\n", "finite"),
    ("drift_nan", BASE + "data: {drift: .nan}\n", "finite"),
    ("drift_1e10", BASE + "data: {drift: 10000000000}\n", "<="),
    ("volatility_inf", BASE + "data: {volatility: .inf}\n", "finite"),
    ("volatility_negative", BASE + "data: {volatility: -1}\n", ">= 0"),
    ("commission_inf", BASE + "portfolio: {commission_bps: .inf}\n", "finite"),
    ("slippage_negative", BASE + "portfolio: {slippage_bps: -1}\n", ">= 0"),
    ("seed_negative", BASE + "data: {seed: -1}\n", ">= 0"),
    ("seed_2_64", BASE + f"data: {{seed: {2**64}}}\n", "<="),
    ("monte_carlo_seed_negative", BASE + "monte_carlo: {n: 10, seed: -1}\n", ">= 0"),
    ("monte_carlo_n_1e12", BASE + "monte_carlo: {n: 1000000000000}\n", "<="),
    ("monte_carlo_batch_zero", BASE + "monte_carlo: {n: 10, batch: 0}\n", ">= 1"),
    ("walk_forward_train_1e12", BASE + "walk_forward: {train: 1000000000000}\n", "<="),
    ("frequency_0min", BASE + "data: {frequency: 0min}\n", "longer than 0"),
    ("frequency_0s", BASE + "data: {frequency: 0s}\n", "longer than 0"),
    ("frequency_1000000d", BASE + "data: {frequency: 1000000d}\n", "at most"),
    ("frequency_unicode_digit", BASE + "data: {frequency: ²min}\n", "not a frequency"),
    ("symbols_empty", BASE + "data: {symbols: []}\n", "at least one symbol"),
    ("symbols_blank", BASE + "data: {symbols: ['']}\n", "must not be empty"),
    # --- parameter grids: refused before they are listed
    (
        "range_1e12_values",
        BASE + "parameter_space: {strategy.fast: {range: [0, 1000000000000]}}\n",
        f"{MAX_GRID:,}",
    ),
    (
        "range_float_1e9_values",
        BASE + "parameter_space: {strategy.fast: {range: [0.0, 1.0, 1.0e-9]}}\n",
        f"{MAX_GRID:,}",
    ),
    (
        "grid_product_1e9",
        BASE
        + "parameter_space:\n"
        + "".join(
            f"  strategy.p{j}: [{', '.join(str(i) for i in range(1000))}]\n" for j in range(3)
        ),
        "1,000,000,000 parameter sets",
    ),
    ("range_inf", BASE + "parameter_space: {strategy.fast: {range: [0, .inf]}}\n", "finite"),
    ("range_step_zero", BASE + "parameter_space: {strategy.fast: {range: [0, 10, 0]}}\n", "> 0"),
    (
        "sample_n_1e12",
        BASE + "parameter_space: {strategy.fast: [2], sample: {n: 1000000000000}}\n",
        "<=",
    ),
    (
        "sample_seed_negative",
        BASE + "parameter_space: {strategy.fast: [2], sample: {n: 1, seed: -1}}\n",
        ">= 0",
    ),
    ("param_value_nan", BASE + "parameter_space: {strategy.fast: [2, .nan]}\n", "finite"),
    ("strategy_param_inf", BASE + "strategy: {type: sma_crossover, fast: .inf}\n", "finite"),
    # --- names and paths
    ("name_250_e_acute", f"workflow: optimization\nrun_name: {E * 250}\n", "not a valid name"),
    ("name_150_e_acute", f"workflow: optimization\nrun_name: {E * 150}\n", "not a valid name"),
    (
        "name_10000_chars",
        "workflow: optimization\nrun_name: " + "n" * 10_000 + "\n",
        "not a valid name",
    ),
    ("phase_name_slash", BASE + "phase_overrides: {a/b: {top_k: 1}}\n", "separator"),
    ("run_name_dotdot", "workflow: optimization\nrun_name: '..'\n", "not a valid name"),
    ("results_dir_nul", BASE + 'results_dir: "a\\0b"\n', "NUL"),
    ("catalog_scheme", BASE + "catalog: ftp://host/x\n", "unsupported scheme"),
    ("config_fifo", _fifo, "a FIFO"),
    ("config_link_to_fifo", _fifo_link, "a FIFO"),
    ("config_folder", _folder, "a folder"),
    ("config_device", _device, "a character device"),
    ("data_path_fifo", _data_fifo, "not a regular file"),
    ("data_path_folder", _data_folder, "not a regular file"),
    (
        "data_path_missing",
        BASE + "data: {source: file, path: /nonexistent/bars.csv}\n",
        "does not exist",
    ),
]
IDS = [c[0] for c in CASES]


def make(case: Case, tmp: Path) -> Path:
    _, body, _ = case
    if callable(body):
        return body(tmp)
    path = tmp / "c.yaml"
    path.write_text(body, encoding="utf-8", errors="surrogatepass")
    return path


def test_the_table_holds_the_issues_kinds() -> None:
    assert len(CASES) >= 95
    assert len(set(IDS)) == len(IDS)


COMMANDS = {
    "run": lambda path, tmp: ["run", str(path), "--results-dir", str(tmp / "results")],
    "config_show": lambda path, tmp: ["config", "show", str(path)],
}


#: Cases ``config show`` shows (a configuration without a workflow) and ``run`` refuses.
SHOWN = ("empty_file",)


def _one_clean_line(err: str, expect: str) -> str:
    assert err.endswith("\n") and err.count("\n") == 1, err[:2000]
    assert err.startswith("phasekit: error: "), err[:2000]
    assert "Traceback" not in err
    assert len(err) <= MAX_LINE, err[:2000]
    assert any(e in err for e in expect.split("|")), err
    return err


@pytest.mark.parametrize("command", list(COMMANDS))
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_malformed_configuration(
    case: Case, command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = make(case, tmp_path)
    argv = COMMANDS[command](path, tmp_path)
    measure_memory = command == "config_show"  # time `run`, weigh `config show`: same path
    if measure_memory:
        tracemalloc.start()
    started = time.perf_counter()
    try:
        code = main(argv)
    finally:
        seconds = time.perf_counter() - started
        if measure_memory:
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
    out, err = capsys.readouterr()
    if case[0] in SHOWN and command == "config_show":
        # no workflow defined: show gives the run-wide settings and says so, run refuses
        assert code == 0 and err == "" and "no workflow is defined" in out
        return
    assert code == 1
    assert out == ""
    _one_clean_line(err, case[2])
    if measure_memory:
        assert peak < MAX_BYTES, f"{peak / 1e6:.0f} MB"
    else:
        assert seconds < MAX_SECONDS, f"{seconds:.2f} s"
    assert not (tmp_path / "results").exists()  # refused before anything is recorded


SUBPROCESS = [
    "nul_in_value",
    "recursive_anchor_list",
    "billion_laughs_9",
    "deep_flow_lists_20000",
    "config_fifo",
    "n_bars_1e11",
    "size_10mb_scalar",
]


@pytest.mark.parametrize("name", SUBPROCESS)
def test_malformed_configuration_in_a_subprocess(name: str, tmp_path: Path) -> None:
    case = CASES[IDS.index(name)]
    path = make(case, tmp_path)
    for argv in (COMMANDS["run"](path, tmp_path), COMMANDS["config_show"](path, tmp_path)):
        proc = subprocess.run(
            [sys.executable, "-m", "phasekit.cli", *argv],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 1
        assert proc.stdout == ""
        _one_clean_line(proc.stderr, case[2])


@pytest.mark.parametrize("workers", ["0", "-1", "100000"])
def test_workers_flag_out_of_range(
    workers: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(BASE)
    argv = ["run", str(path), "--workers", workers, "--results-dir", str(tmp_path / "r")]
    assert main(argv) == 1
    _one_clean_line(capsys.readouterr().err, f"got {workers}")
    assert not (tmp_path / "r").exists()


def test_a_quoted_value_is_cut_to_200_characters() -> None:
    long = "z" * 100_000
    for data in (
        {"workflow": "optimization", "data": {"frequency": long}},
        {"workflow": "optimization", long: 1},
        {"workflow": "optimization", "data": {long: 1}},
        {"workflow": "optimization", "run_name": long},
        {"workflow": "optimization", "data": {"symbols": [long + "\x00"]}},
    ):
        with pytest.raises(ConfigError) as err:
            load_config(data)
        assert "z" * (MAX_QUOTED_CHARS + 1) not in str(err.value), str(err.value)[:300]
        assert len(str(err.value)) < MAX_LINE


@pytest.mark.parametrize(
    "where",
    [(), ("data",), ("phases", 0, "data_flow"), ("containers", "x_*")],
    ids=["top", "data", "phase_data_flow", "container_pattern"],
)
def test_200000_unknown_keys_answer_fast(where: tuple) -> None:
    keys = {f"k{i}": 0 for i in range(200_000)}
    data: dict = {"workflow": "optimization"}
    if not where:
        data.update(keys)
    elif where == ("data",):
        data["data"] = keys
    elif where[0] == "phases":
        data = {"phases": [{"name": "a", "data_flow": keys}]}
    else:
        data["containers"] = {"x_*": keys}
    started = time.perf_counter()
    with pytest.raises(ConfigError) as err:
        load_config(data)
    assert time.perf_counter() - started < MAX_SECONDS
    text = str(err.value)
    assert "\n" not in text
    assert text.count("'k") == 10 and "200,000 unknown keys" in text


def test_limits_leave_ordinary_configurations_alone(tmp_path: Path) -> None:
    """Anchors, a grid at the maximum, deep-enough nesting and the largest values load."""
    path = tmp_path / "ok.yaml"
    path.write_text(
        BASE
        + "data_flow: &d {mode: file, memory_limit_mb: 64}\n"
        + "containers: {portfolio_*: {data_flow: *d}}\n"
        + f"data: {{n_bars: {MAX_BARS}, seed: {2**63 - 1}, frequency: 1s}}\n"
        + "parameter_space:\n  strategy.fast: {range: [0, 1000]}\n  strategy.slow: {range: [0, 1000]}\n"
    )
    config = load_config(path)
    assert config.data is not None and config.data.n_bars == MAX_BARS
    assert config.data_flow is not None and config.data_flow.memory_limit_mb == 64
