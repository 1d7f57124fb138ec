"""Resume leaves a consistent catalog: a rewritten file replaces its row, one process at a
time runs a run (a lock), runs record their pid and host, a run whose process is gone
shows ``interrupted``, and the temporary files of dead processes are removed.

On both catalog dialects (SQLite: a lock file with the pid; PostgreSQL: an advisory lock).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import phasekit
from phasekit.catalog import Catalog, open_catalog
from phasekit.catalog.integrity import reference_checksum
from phasekit.catalog.liveness import LOCK_NAME
from phasekit.errors import CatalogError

pytest_plugins = ["conftest_pg"]

CONFIG = """\
run_name: locked
workers: 1
data: {n_bars: 300, seed: 5, frequency: 1h}
data_flow: {mode: file}
phases:
  - name: search
    parameter_space: {strategy.fast: [2, 3], strategy.slow: [10, 20]}
    top_k: 2
  - name: check
    depends_on: [search]
    sequence: train_test
"""


def config(tmp_path: Path, catalog_url: str) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(CONFIG + f"catalog: '{catalog_url}'\n")
    return path


def test_runs_record_pid_and_host(catalog: Catalog) -> None:
    run = catalog.get_process(catalog.start_process("optimization"))
    assert run.pid == os.getpid()
    assert run.host == socket.gethostname()
    assert run.status == "running"


def test_a_second_lock_of_a_run_is_refused(
    catalog: Catalog, catalog_url: str, results_dir: Path
) -> None:
    run = catalog.start_process("optimization")
    folder = results_dir / run
    lock = catalog.lock_run(run, folder)
    other = open_catalog(catalog_url, results_dir=results_dir)
    try:
        with pytest.raises(CatalogError, match="already running"):
            other.lock_run(run, folder)
        lock.release()
        other.lock_run(run, folder).release()  # free again once released
    finally:
        other.close()


def test_the_sqlite_lock_file_names_its_holder(results_dir: Path) -> None:
    with open_catalog(str(results_dir), results_dir=results_dir) as catalog:
        run = catalog.start_process("optimization")
        lock = catalog.lock_run(run, results_dir / run)
        try:
            text = (results_dir / run / LOCK_NAME).read_text()
            assert text == f"{os.getpid()} {socket.gethostname()}\n"
            with pytest.raises(CatalogError, match=f"process {os.getpid()} on "):
                catalog.lock_run(run, results_dir / run)
        finally:
            lock.release()


def _die_while_running(catalog_url: str, results_dir: Path) -> str:
    """A run started (with an in-memory item) by a process that then dies."""
    script = textwrap.dedent(
        f"""
        import os
        from phasekit.catalog import open_catalog
        cat = open_catalog({catalog_url!r}, results_dir={str(results_dir)!r})
        run = cat.start_process("optimization")
        cat.record_item(run, "search", "held", data_reference=f"memory://{{run}}/search/held")
        print(run, flush=True)
        os._exit(0)
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    return proc.stdout.strip()


def test_a_run_whose_process_is_gone_shows_interrupted(catalog_url: str, results_dir: Path) -> None:
    run = _die_while_running(catalog_url, results_dir)
    with open_catalog(catalog_url, results_dir=results_dir) as cat:
        row = cat.get_process(run)
        assert row.status == "interrupted" and row.finished_at is not None
        assert cat.interrupted_on_open == [run]
        assert [i.state for i in cat.list_items(run, states=("released",))] == ["released"]
    with open_catalog(catalog_url, results_dir=results_dir) as cat:
        assert cat.interrupted_on_open == []  # marked once


def test_a_live_run_stays_running(catalog: Catalog, catalog_url: str, results_dir: Path) -> None:
    run = catalog.start_process("optimization")  # this process: alive
    with open_catalog(catalog_url, results_dir=results_dir) as other:
        assert other.get_process(run).status == "running"


def test_rewriting_a_file_replaces_its_row(catalog: Catalog, results_dir: Path) -> None:
    run = catalog.start_process("optimization")
    path = results_dir / run / "phase_summary.json"
    path.parent.mkdir(parents=True)
    for text in ('{"a": 1}', '{"a": 22}'):
        path.write_text(text)
        catalog.record_item(
            run,
            "search",
            "phase_summary",
            data_reference=path.as_uri(),
            size_bytes=path.stat().st_size,
            checksum=reference_checksum(path),
            format="json",
            replace=True,
        )
    rows = catalog.list_items(run)
    assert len(rows) == 1 and rows[0].size_bytes == len('{"a": 22}')
    assert catalog.doctor().ok


def test_a_second_resume_of_a_run_is_refused(
    tmp_path: Path, catalog_url: str, results_dir: Path
) -> None:
    path = config(tmp_path, catalog_url)
    first = phasekit.run(path, results_dir=str(results_dir))
    run = first.run_id
    first.close()
    with open_catalog(catalog_url, results_dir=results_dir) as holder:
        lock = holder.lock_run(run, results_dir / run)  # as a resume in progress would
        try:
            with pytest.raises(CatalogError, match=f"run '{run}' is already running"):
                phasekit.run(path, results_dir=str(results_dir), resume=run)
        finally:
            lock.release()
    again = phasekit.run(path, results_dir=str(results_dir), resume=run)
    assert again.status == "completed"
    again.close()
    with open_catalog(catalog_url, results_dir=results_dir) as cat:
        report = cat.doctor()
        assert report.ok, [f.detail for f in report.problems]
        row = cat.get_process(run)
        assert (row.status, row.pid) == ("completed", os.getpid())
        # each phase file has one row: the rewritten phase_summary replaced its own
        summaries = cat.list_items(run, entity="phase_summary")
        assert len(summaries) == len({s.data_reference for s in summaries}) == 2


def test_a_resume_removes_the_temporary_files_of_the_dead_attempt(
    tmp_path: Path, results_dir: Path
) -> None:
    path = config(tmp_path, str(results_dir))
    first = phasekit.run(path, results_dir=str(results_dir))
    run, folder = first.run_id, first.run_dir
    first.close()
    left = [
        folder / "search" / ".aggregate_results.json.0123456789abcdef.phasekit-tmp",
        folder / "search" / "containers" / ".spill" / "phasekit-spill-0a1b2c",
    ]
    left[0].write_text("half")
    left[1].mkdir(parents=True)
    (left[1] / "segment-000001.bin").write_bytes(b"x" * 10)
    keep = folder / "search" / "notes.txt"
    keep.write_text("mine")
    again = phasekit.run(path, results_dir=str(results_dir), resume=run)
    again.close()
    assert not any(p.exists() for p in left)
    assert keep.read_text() == "mine"


def test_the_next_run_removes_the_temporary_files_of_a_dead_run(
    tmp_path: Path, results_dir: Path
) -> None:
    dead = _die_while_running(str(results_dir), results_dir)
    leftover = results_dir / dead / "search" / ".x.json.00aa.phasekit-tmp"
    leftover.parent.mkdir(parents=True)
    leftover.write_text("half")
    result = phasekit.run(config(tmp_path, str(results_dir)), results_dir=str(results_dir))
    result.close()
    assert not leftover.exists()
    with open_catalog(str(results_dir), results_dir=results_dir) as cat:
        assert cat.get_process(dead).status == "interrupted"
