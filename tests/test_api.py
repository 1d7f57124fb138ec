"""The README's Python API as users run it: ``phasekit.run`` from a script without a
``__main__`` guard and with worker processes, from a notebook-like ``__main__`` without
a file, and a run that fails before it starts records nothing."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import phasekit
from phasekit.catalog import open_catalog
from phasekit.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def readme_snippet() -> str:
    """The first Python block of the README's "Using it" section, verbatim."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Using it") :]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match is not None
    return match.group(1)


def _workspace(tmp_path: Path) -> Path:
    (tmp_path / "examples").mkdir()
    shutil.copy(ROOT / "examples" / "quickstart.yaml", tmp_path / "examples")
    return tmp_path


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT / "python")
    return env


def _runs(results: Path) -> list[str]:
    catalog = open_catalog(results, create=False)
    try:
        return [p.process_id for p in catalog.list_processes()]
    finally:
        catalog.close()


def test_import_is_light_and_run_is_exported() -> None:
    code = "import sys, phasekit; print(any(m.startswith('pyarrow') for m in sys.modules))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=_env(), check=True
    )
    assert out.stdout.strip() == "False"
    from phasekit.workflow.run import run

    assert phasekit.run is run
    assert "run" in phasekit.__all__


def _run_snippet(ws: Path, args: list[str], stdin: str | None = None) -> None:
    out = subprocess.run(
        [sys.executable, *args],
        input=stdin,
        cwd=ws,
        capture_output=True,
        text=True,
        env=_env(),
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    # the user's code ran once: one table printed, one run in the catalog
    assert out.stdout.count("ROWS 10") == 1, out.stdout
    assert len(_runs(ws / "results")) == 1


def test_readme_snippet_as_a_script_without_guard(tmp_path: Path) -> None:
    snippet = readme_snippet()
    assert "workers=2" in snippet and "__main__" not in snippet
    ws = _workspace(tmp_path)
    (ws / "script.py").write_text(snippet + "print('ROWS', table.num_rows)\n")
    _run_snippet(ws, ["script.py"])


def test_readme_snippet_as_a_notebook(tmp_path: Path) -> None:
    """``python -`` has a ``__main__`` without a file, as a notebook kernel does."""
    ws = _workspace(tmp_path)
    _run_snippet(ws, ["-"], readme_snippet() + "print('ROWS', table.num_rows)\n")


def test_a_run_that_fails_to_start_records_nothing(tmp_path: Path) -> None:
    bad = tmp_path / "bars.csv"
    bad.write_text("when,price\n2024-01-01,1\n2024-01-02,2\n")
    cfg = {
        "workflow": "optimization",
        "run_name": "bad",
        "results_dir": str(tmp_path / "results"),
        "data": {"path": [str(bad)]},
        "parameter_space": {"strategy.fast": [2, 3], "strategy.slow": [5]},
    }
    with pytest.raises(ConfigError, match="price"):
        phasekit.run(cfg, workers=2)
    results = tmp_path / "results"
    assert not results.exists() or _runs(results) == []


class _Stopper:
    """An observer that presses Ctrl-C after the first batch of containers, or records
    the run's status in the catalog while it runs."""

    def __init__(self, results: Path, stop: bool) -> None:
        self.results, self.stop = results, stop
        self.statuses: list[str] = []

    def phase_started(self, phase: str, windows: int, containers: int) -> None:
        with open_catalog(self.results) as catalog:
            self.statuses += [p.status for p in catalog.list_processes()]

    def containers_done(self, phase: str, count: int) -> None:
        if self.stop:
            raise KeyboardInterrupt

    def window_done(self, phase: str, window_id: str, resumed: bool) -> None:
        pass

    def phase_done(self, phase: str, outcome: object) -> None:
        pass


def test_an_interrupted_run_is_recorded_and_resumes_as_running(tmp_path: Path) -> None:
    from phasekit.workflow.run import RunInterrupted

    cfg = {
        "workflow": "train_test_optimization",
        "run_name": "stop",
        "results_dir": str(tmp_path / "results"),
        "data": {"n_bars": 1500, "frequency": "1h", "seed": 2},
        "parameter_space": {"strategy.fast": [3, 5], "strategy.slow": [20, 40]},
    }
    with pytest.raises(RunInterrupted) as stopped:
        phasekit.run(cfg, workers=1, observer=_Stopper(tmp_path / "results", stop=True))
    run_id = stopped.value.run_id
    catalog = open_catalog(tmp_path / "results")
    try:
        assert catalog.get_process(run_id).status == "interrupted"
    finally:
        catalog.close()
    watcher = _Stopper(tmp_path / "results", stop=False)
    result = phasekit.run(cfg, workers=1, resume=run_id, observer=watcher)
    result.close()
    # while it resumed, the run was 'running' (cleanups and doctor leave it alone)
    assert watcher.statuses and set(watcher.statuses) == {"running"}
    assert result.status == "completed" and result.run_id == run_id


def test_windows_that_do_not_fit_the_data_fail_before_the_run_is_recorded(
    tmp_path: Path,
) -> None:
    cfg = {
        "workflow": "walk_forward_optimization",
        "run_name": "too_long",
        "results_dir": str(tmp_path / "results"),
        "data": {"n_bars": 500, "frequency": "1h"},
        "walk_forward": {"train": 400, "test": 200},
        "parameter_space": {"strategy.fast": [2, 3], "strategy.slow": [5]},
    }
    with pytest.raises(ConfigError, match=r"train \(400\) \+ test \(200\) bars exceed"):
        phasekit.run(cfg, workers=1)
    results = tmp_path / "results"
    assert not results.exists() or _runs(results) == []


def test_run_result_names_the_phases_and_windows_it_has(tmp_path: Path) -> None:
    """``metrics`` and ``best`` of a phase or window the run does not have raise errors
    naming what it has; ``metrics`` without a window picks none of several."""
    from phasekit.errors import InvalidArgument, UnknownKey

    cfg = (ROOT / "examples" / "quickstart.yaml").read_text()
    config = tmp_path / "q.yaml"
    config.write_text(cfg.replace("results_dir: results", f"results_dir: {tmp_path / 'r'}"))
    result = phasekit.run(config, workers=1)
    try:
        with pytest.raises(
            UnknownKey, match=r"no phase 'nope'; its phases: parameter_search, validation"
        ):
            result.best("nope")
        with pytest.raises(UnknownKey, match=r"no phase 'nope'"):
            result.metrics("nope")
        with pytest.raises(UnknownKey, match=r"no window 'train'; its windows with results: test"):
            result.metrics("validation", window="train")
        with pytest.raises(InvalidArgument, match=r"has windows train, test: give window="):
            result.metrics("parameter_search")
        train = result.metrics("parameter_search", window="train")
        assert train.num_rows == result.phases["parameter_search"].containers - 10
        assert result.metrics("validation").equals(result.metrics("validation", window="test"))
        assert result.best("validation") is None  # it ranks no sets of its own
        assert result.phases["validation"].best_out_of_sample is not None
    finally:
        result.close()
