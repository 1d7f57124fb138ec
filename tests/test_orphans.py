"""Kill and resume: ``phasekit run`` killed (SIGKILL of the parent only) at random
points leaves no process behind, and ``--resume`` then gives a healthy catalog and the
results of a run that was never interrupted. SIGTERM marks the run interrupted.

Each trial runs a tiny two-phase workflow with two workers in a subprocess, waits for a
progress marker (catalog rows, the first phase's summary, or the end of the run), kills
the parent, checks that every process it started (workers, fork server, resource
tracker) is gone, resumes in this process and compares the windows' container metrics
with a reference run.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import phasekit
from phasekit.catalog import open_catalog

TRIALS = 30
SEED = 1515
GONE_WITHIN = 5.0

CONFIG = """\
run_name: kr
workers: 2
data: {n_bars: 240, seed: 3, frequency: 1h}
data_flow: {mode: file}
phases:
  - name: search
    sequence: walk_forward
    walk_forward: {train: 100, test: 60}
    parameter_space:
      strategy.fast: [2, 3]
      strategy.slow: [10, 20]
    top_k: 2
  - name: check
    depends_on: [search]
    sequence: train_test
"""


def _ppid(pid: int) -> tuple[int, str]:
    """(parent pid, state letter) of a process, from /proc."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return int(fields[1]), fields[0]


def descendants(root: int) -> list[int]:
    """Every process below ``root`` (children, their children ...)."""
    parents: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                ppid, _ = _ppid(int(name))
            except (OSError, ValueError, IndexError):
                continue
            parents.setdefault(ppid, []).append(int(name))
    found, todo = [], [root]
    while todo:
        kids = parents.get(todo.pop(), [])
        found += kids
        todo += kids
    return found


def alive(pids: list[int]) -> list[int]:
    """The pids still running (a zombie has ended; only its exit status is left)."""
    out = []
    for pid in pids:
        try:
            _, state = _ppid(pid)
        except (OSError, ValueError, IndexError):
            continue
        if state != "Z":
            out.append(pid)
    return out


def wait_gone(pids: list[int]) -> list[int]:
    deadline = time.monotonic() + GONE_WITHIN
    while alive(pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    return alive(pids)


def _query(catalog: Path, sql: str) -> Any:
    try:
        conn = sqlite3.connect(f"file:{catalog}?mode=ro", uri=True, timeout=5)
        try:
            return conn.execute(sql).fetchone()
        finally:
            conn.close()
    except sqlite3.Error:
        return None


def tables(results_dir: Path, run_id: str) -> dict[tuple[str, str], list[Any]]:
    """The ranked container metrics of every phase window of a run."""
    out: dict[tuple[str, str], list[Any]] = {}
    with open_catalog(str(results_dir), results_dir=results_dir) as cat:
        for item in cat.list_items(run_id, entity="aggregate_results"):
            path = cat.item_path(cat.verify_item(item))
            assert path is not None
            ranking = json.loads(path.read_text())["ranking"]
            out[(str(item.phase), str(item.window_id))] = [
                (r["container_id"], r.get("parameters"), r["metrics"]) for r in ranking
            ]
    return out


def start(config: Path, results: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "phasekit.cli", "run", str(config), "--results-dir", str(results)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own group: a signal to it never reaches pytest
    )


def wait_for(proc: subprocess.Popen[bytes], catalog: Path, marker: tuple[str, int]) -> None:
    kind, rows = marker
    sql = {
        "rows": "SELECT COUNT(*) FROM intermediate_data",
        "first_phase": "SELECT COUNT(*) FROM intermediate_data "
        "WHERE entity_name = 'phase_summary' AND phase = 'search'",
    }.get(kind)
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        if sql is not None:
            found = _query(catalog, sql)
            if found is not None and found[0] >= rows:
                return
        time.sleep(0.01)


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    folder = tmp_path_factory.mktemp("reference")
    config = folder / "kr.yaml"
    config.write_text(CONFIG)
    result = phasekit.run(config, results_dir=str(folder / "results"))
    assert result.status == "completed"
    result.close()
    expected = tables(folder / "results", result.run_id)
    with open_catalog(str(folder / "results"), results_dir=folder / "results") as cat:
        rows = len(cat.list_items(result.run_id))
    return {"config": config, "tables": expected, "rows": rows}


def markers(rows: int) -> list[tuple[str, int]]:
    rng = random.Random(SEED)
    fixed = [("first_phase", 1), ("first_phase", 1), ("completed", 0), ("completed", 0)]
    return fixed + [("rows", rng.randint(1, rows)) for _ in range(TRIALS - len(fixed))]


def test_kill_and_resume(reference: dict[str, Any], tmp_path: Path) -> None:
    plan = markers(reference["rows"])
    assert len(plan) >= TRIALS
    kinds = set()
    for trial, marker in enumerate(plan):
        results = tmp_path / f"t{trial:02d}"
        catalog = results / "catalog.sqlite"
        proc = start(reference["config"], results)
        wait_for(proc, catalog, marker)
        started = descendants(proc.pid)
        finished_first = proc.poll() is not None
        if not finished_first:
            os.kill(proc.pid, signal.SIGKILL)  # the parent only
        proc.wait()
        left = wait_gone(started)
        assert not left, f"trial {trial} ({marker}): processes {left} outlived their run"
        run = _query(catalog, "SELECT process_id, status FROM processes")
        assert run is not None, f"trial {trial}: no run recorded"
        kinds.add("completed" if finished_first else marker[0])
        # in this process, one worker: results do not depend on the number of workers
        resumed = phasekit.run(
            reference["config"], results_dir=str(results), resume=run[0], workers=1
        )
        assert resumed.status == "completed"
        resumed.close()
        with open_catalog(str(results), results_dir=results) as cat:
            report = cat.doctor()
            assert report.ok, f"trial {trial} ({marker}): {[f.detail for f in report.problems]}"
            assert cat.get_process(run[0]).status == "completed"
        assert tables(results, run[0]) == reference["tables"], f"trial {trial} ({marker})"
    assert {"first_phase", "completed", "rows"} <= kinds


def test_sigterm_marks_the_run_interrupted(reference: dict[str, Any], tmp_path: Path) -> None:
    results = tmp_path / "results"
    catalog = results / "catalog.sqlite"
    proc = start(reference["config"], results)
    wait_for(proc, catalog, ("rows", 3))
    assert proc.poll() is None, "the run ended before it could be stopped"
    started = descendants(proc.pid)
    os.kill(proc.pid, signal.SIGTERM)
    assert proc.wait(timeout=60) == 130
    assert not wait_gone(started)
    assert _query(catalog, "SELECT status FROM processes") == ("interrupted",)
