"""``phasekit config show``: tables, JSON, narrowing, runtime arguments, errors."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from phasekit.cli import main

CONFIGS = Path(__file__).parent / "data" / "configs"


@pytest.fixture
def per_container(tmp_path: Path) -> str:
    """seed001 (settings and container patterns only) made runnable: ``config show``
    checks what ``run`` checks, and a run needs a workflow or phases."""
    path = tmp_path / "per_container.yaml"
    text = (CONFIGS / "seed001_per_container.yaml").read_text()
    path.write_text(text + "\nworkflow: optimization\n")
    return str(path)


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "phasekit.cli", "config", "show", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def test_show_json_in_a_subprocess() -> None:
    proc = run_cli(str(CONFIGS / "seed000_workflow.yaml"), "--json")
    assert proc.returncode == 0, proc.stderr
    view = json.loads(proc.stdout)
    assert list(view["phases"]) == ["optimization", "analysis"]
    opt = view["phases"]["optimization"]
    assert opt["settings"]["data_flow"]["mode"] == "file"
    assert opt["settings"]["data_flow"]["file"]["partition_by"] == ["date", "symbol"]
    assert opt["settings"]["sources"]["data_flow.mode"] == {
        "level": "phase",
        "path": "phases[0].data_flow.mode",
    }
    assert view["phases"]["analysis"]["settings"]["data_flow"]["mode"] == "memory"
    assert view["phases"]["analysis"]["depends_on"] == ["optimization"]


def test_show_table_in_a_subprocess(per_container: str) -> None:
    proc = run_cli(per_container)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "phase parameter_search" in out and "containers (settings that differ)" in out
    for pattern in ("data", "features", "portfolio_*", "execution"):
        assert pattern in out
    assert "containers.portfolio_*.data_flow.memory_limit_mb" in out
    assert "streaming" in out and "hybrid" in out
    # unset workers are one per core; a default's source is said once
    assert re.search(r"workers\s+│ auto \(one per core\)", out), out
    assert re.search(r"executor\s+│ local \(package default\)", out), out
    assert "default: default" not in out


def test_show_errors_exit_1_with_the_message(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("data_flow:\n  mode: fiel\n")
    proc = run_cli(str(bad))
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert proc.stderr == (
        f"phasekit: error: {bad}: data_flow.mode: 'fiel' is not allowed; allowed: memory, "
        "file, streaming, hybrid; did you mean 'file'? (line 2)\n"
    )
    assert "Traceback" not in proc.stderr


def show_json(capsys: pytest.CaptureFixture[str], *args: str) -> dict:
    assert main(["config", "show", *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)  # type: ignore[no-any-return]


def test_narrow_to_a_phase(capsys: pytest.CaptureFixture[str]) -> None:
    view = show_json(capsys, str(CONFIGS / "seed000_workflow.yaml"), "--phase", "analysis")
    assert list(view["phases"]) == ["analysis"]


def test_unknown_phase(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["config", "show", str(CONFIGS / "seed000_workflow.yaml"), "--phase", "analysys"])
    assert code == 1
    assert capsys.readouterr().err == (
        "phasekit: error: unknown phase 'analysys'; did you mean 'analysis'? "
        "(phases: optimization, analysis)\n"
    )


def test_narrow_to_a_pattern_or_a_container_id(
    capsys: pytest.CaptureFixture[str], per_container: str
) -> None:
    path = per_container
    view = show_json(capsys, path, "--container", "portfolio_*")
    assert list(view["base_containers"]) == ["portfolio_*"]
    view = show_json(capsys, path, "--container", "portfolio_0042")
    body = view["base_containers"]["portfolio_0042"]
    assert body["pattern"] == "portfolio_*"
    assert body["data_flow"]["memory_limit_mb"] == 50
    code = main(["config", "show", path, "--container", "risk_*"])
    assert code == 1
    assert "no container pattern 'risk_*'" in capsys.readouterr().err


def test_runtime_arguments(capsys: pytest.CaptureFixture[str], per_container: str) -> None:
    path = per_container
    view = show_json(capsys, path, "--set", "data_flow.mode=file", "--set", "workers=2")
    assert view["workers"] == 2
    assert view["base"]["data_flow"]["mode"] == "file"
    assert view["base_containers"]["data"]["data_flow"]["mode"] == "file"
    source = view["base_containers"]["data"]["sources"]["data_flow.mode"]
    assert source == {"level": "runtime", "path": "--set data_flow.mode"}


def test_table_with_phases_and_markup_characters(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(
        "phases:\n  - name: search\n"
        "containers:\n  'portfolio_[0-9]*':\n    data_flow:\n      mode: hybrid\n"
    )
    assert main(["config", "show", str(config)]) == 0
    out = capsys.readouterr().out
    assert "phase search: sequence single_pass, topology backtest" in out
    assert "portfolio_[0-9]*" in out


def test_builtin_workflow_defaults_apply(capsys: pytest.CaptureFixture[str]) -> None:
    view = show_json(capsys, str(CONFIGS / "seed002_train_test.yaml"))
    assert list(view["phases"]) == ["parameter_search", "validation"]
    search = view["phases"]["parameter_search"]
    assert search["sequence"] == "train_test"
    assert search["settings"]["data_flow"]["mode"] == "memory"  # the user's overrides win
    assert search["settings"]["retention_policy"] == "sliding_window"
    validation = view["phases"]["validation"]
    assert validation["depends_on"] == ["parameter_search"]
    assert "PORTFOLIO_UPDATE" in validation["settings"]["event_tracing"]
