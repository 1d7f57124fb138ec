"""The command line in a terminal: tables that fit 80 and 200 columns without splitting
an identifier, --json on every verb, no progress before a config error, and
Ctrl-C that stops a run in one line, recorded ``interrupted`` and resumable."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from rich.cells import cell_len

from phasekit.catalog import open_catalog
from phasekit.catalog.blockrows import container_rows
from phasekit.cli import main

ROOT = Path(__file__).resolve().parents[1]
WIDTHS = (80, 200)


SMALL_SPACE = {"strategy.fast": [3, 5, 8], "strategy.slow": [20, 40]}


def config(
    tmp_path: Path, n_bars: int = 1500, space: dict[str, Any] | None = None, **data: Any
) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(
        json.dumps(
            {
                "workflow": "train_test_optimization",
                "run_name": "terminal_width_check",
                "results_dir": str(tmp_path / "results"),
                "data": {"n_bars": n_bars, "frequency": "1h", "seed": 3, **data},
                "parameter_space": space or SMALL_SPACE,
                "top_k": 2,
            }
        )
    )
    return path


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    tmp = tmp_path_factory.mktemp("cli")
    cfg = config(tmp)
    for _ in range(2):
        assert main(["run", str(cfg), "--workers", "1", "--json"]) == 0
    with open_catalog(tmp / "results") as catalog:
        runs = [p.process_id for p in catalog.list_processes()]
    return tmp / "results", runs


def output(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, width: int, *argv: str
) -> str:
    monkeypatch.setenv("COLUMNS", str(width))
    capsys.readouterr()
    code = main(list(argv))
    assert code in (0, 1), code
    return capsys.readouterr().out


def assert_fits(text: str, width: int, ids: list[str]) -> None:
    lines = text.splitlines()
    assert lines, "nothing printed"
    too_wide = [line for line in lines if cell_len(line) > width]
    assert not too_wide, too_wide[:3]
    for ident in ids:
        assert any(ident in line for line in lines), f"{ident!r} is split or missing:\n{text}"


def assert_compare_whole(text: str, items: int) -> None:
    """compare's table is not cut at the terminal's edge (every line of it ends in its
    right border), and names each of its ``items`` once, on its first metric's row."""
    table = [line.rstrip() for line in text.splitlines() if line[:1] in "┏┃┡│└"]
    assert table and all(line[-1] in "┓┃┩│┘" for line in table), "\n".join(table[:4])
    header = next(line for line in table if "metric" in line)
    assert [c.strip() for c in header.split("┃")[1:5]] == ["item", "metric", "a", "b"]
    cells = [line.split("│")[1].strip() for line in table if line.startswith("│")]
    assert sum(c.startswith(("parameter_search/", "validation/")) for c in cells) == items


def assert_du_rows_distinct(text: str, width: int, runs: list[str]) -> None:
    """Where the stage column does not fit, ``du`` shows a row per run (its total), not
    stage rows that would read as copies of each other."""
    lines = text.splitlines()
    for run in runs:
        mine = [line for line in lines if run in line]
        if width == 80:
            assert len(mine) == 1, mine
        else:  # each stage, then the total
            assert len(mine) >= 2 and "(total)" in mine[-1], mine
            assert any("parameter_search" in line for line in mine), mine
    assert ("a row per run" in text) == (width == 80)


@pytest.mark.parametrize("width", WIDTHS)
def test_catalog_tables_fit_and_keep_ids_whole(
    two_runs: tuple[Path, list[str]],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    width: int,
) -> None:
    results, runs = two_runs
    where = ("--results-dir", str(results))
    with open_catalog(results) as catalog:
        items = catalog.list_items(runs[0])
    entities = sorted({i.entity_name for i in items})
    # a block's containers are in its row (as their own rows would be)
    containers = sorted({r.container_id for i in items for r in container_rows(i)})
    assert containers, "block rows carry their containers' ids"
    text = output(capsys, monkeypatch, width, "runs", *where)
    assert_fits(text, width, runs)
    assert ("not shown at this width" in text) == (width == 80)
    assert_fits(output(capsys, monkeypatch, width, "ls", runs[0], *where), width, entities)
    text = output(capsys, monkeypatch, width, "ls", runs[0], "--container", containers[0], *where)
    assert_fits(text, width, [containers[0], f"{containers[0]}_results"])
    text = output(capsys, monkeypatch, width, "du", *where)
    assert_fits(text, width, runs)
    assert_du_rows_distinct(text, width, runs)
    text = output(capsys, monkeypatch, width, "compare", runs[1], runs[0], "--all", *where)
    assert_fits(text, width, runs)
    with open_catalog(results) as catalog:
        compared = catalog.compare(runs[1], runs[0])
    assert_compare_whole(text, len({m.item for m in compared.metrics}))
    assert_fits(output(capsys, monkeypatch, width, "show", str(items[0].id), *where), width, [])
    assert_fits(output(capsys, monkeypatch, width, "doctor", *where), width, [])
    text = output(capsys, monkeypatch, width, "cleanup", "--policy", "keep_none", "--dry-run",
                  *where)  # fmt: skip
    assert_fits(text, width, runs)


@pytest.mark.parametrize("width", WIDTHS)
def test_run_summary_fits(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, width: int
) -> None:
    text = output(capsys, monkeypatch, width, "run", str(config(tmp_path)), "--workers", "1")
    with open_catalog(tmp_path / "results") as catalog:
        (run,) = [p.process_id for p in catalog.list_processes()]
    assert_fits(text, width, ["parameter_search", "validation"])
    assert run in text


def test_run_summary_keeps_the_sample_by_wrapping_parameters(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """At 80 columns, long parameter sets wrap over lines rather than the ``sample``
    column going: a phase's in- and out-of-sample rows stay told apart."""
    config = tmp_path / "mixed.yaml"
    text = (ROOT / "examples" / "mixed_workflow_hybrid.yaml").read_text()
    config.write_text(text.replace("results_dir:", f"results_dir: {tmp_path / 'results'} #"))
    out = output(capsys, monkeypatch, 80, "run", str(config), "--workers", "1")
    assert_fits(out, 80, ["walk_forward_check"])
    header = next(line for line in out.splitlines() if "phase" in line and "sharpe" in line)
    assert "sample" in header
    rows = [line for line in out.splitlines() if line.startswith("│ walk_forward_check")]
    samples = [line.split("│")[2].strip() for line in rows]
    assert samples == ["in", "out"]


VERBS = (
    ("runs",),
    ("ls", "latest"),
    ("show", "1"),
    ("compare", "RUN_A", "RUN_B"),
    ("du",),
    ("doctor",),
    ("cleanup", "--policy", "keep_all"),
)


def test_every_catalog_verb_and_run_speak_json(
    two_runs: tuple[Path, list[str]], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    results, runs = two_runs
    for verb in VERBS:
        argv = [runs[0] if a == "RUN_A" else runs[1] if a == "RUN_B" else a for a in verb]
        capsys.readouterr()
        assert main([*argv, "--results-dir", str(results), "--json"]) in (0, 1)
        json.loads(capsys.readouterr().out)
    export = ["export", runs[0], "--to", str(tmp_path / "out"), "--results-dir", str(results)]
    assert main([*export, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["run"] == runs[0]


def test_no_progress_before_a_config_error(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    for bad in (["--set", "data.n_bars=1"], ["--set", "data.path=/nonexistent/x.csv"]):
        done = subprocess.run(
            [sys.executable, "-m", "phasekit.cli", "run", str(cfg), *bad],
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT / "python"), "COLUMNS": "80"},
            timeout=120,
        )
        assert done.returncode == 1
        assert done.stdout == ""
        assert done.stderr.startswith("phasekit: error: ") and done.stderr.count("\n") == 1
    assert not (tmp_path / "results").exists() or not list((tmp_path / "results").iterdir())


def test_ctrl_c_stops_in_one_line_and_the_run_resumes(tmp_path: Path) -> None:
    # 10,000 sets over 60,000 bars: blocks of up to 2,000 sets, a run of many seconds, so
    # the interrupt lands mid-run (after the first block's rows, before the last block)
    space = {
        "strategy.fast": {"range": [2, 202, 2]},
        "strategy.slow": {"range": [210, 1210, 10]},
    }
    cfg = config(tmp_path, n_bars=60_000, space=space)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "python"), "COLUMNS": "80"}
    cmd = [sys.executable, "-m", "phasekit.cli", "run", str(cfg), "--workers", "2"]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        start_new_session=True,
    )  # fmt: skip
    catalog_file = tmp_path / "results" / "catalog.sqlite"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if catalog_file.exists():
            with open_catalog(tmp_path / "results", create=False) as catalog:
                if catalog.list_items():
                    break
        time.sleep(0.2)
    assert proc.poll() is None, "the run ended before it could be interrupted"
    os.killpg(proc.pid, signal.SIGINT)  # as a terminal does: to every process of the group
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "Traceback" not in out
    assert err.count("\n") == 1 and err.startswith("phasekit: interrupted; run "), err
    with open_catalog(tmp_path / "results") as catalog:
        (row,) = catalog.list_processes()
    assert row.status == "interrupted" and row.process_id in err
    resumed = subprocess.run(
        [*cmd, "--resume", row.process_id, "--json"],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert json.loads(resumed.stdout)["status"] == "completed"
    with open_catalog(tmp_path / "results") as catalog:
        assert catalog.get_process(row.process_id).status == "completed"


@pytest.mark.parametrize("width", WIDTHS)
def test_config_show_fits(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, width: int
) -> None:
    example = str(ROOT / "examples" / "mixed_workflow_hybrid.yaml")
    text = output(capsys, monkeypatch, width, "config", "show", example)
    keys = ["persistence.save_all_phases", "streaming.flush_interval", "sliding_window_size"]
    assert_fits(text, width, keys)
    if width == 200:  # where each value came from, whole
        assert_fits(text, width, ["data_flow.memory_settings.max_size_mb (user global)"])
