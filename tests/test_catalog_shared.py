"""One PostgreSQL catalog shared by concurrent runs: two clients (separate processes) write
their runs into one catalog and one results folder while this process runs ``cleanup``
(keep_latest) and ``doctor --repair`` over and over. Afterwards every row of both runs is
there exactly once, the same rows a run alone records, every file verifies, and cleanup
removed only what its policy names (the older completed run of another name)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from phasekit.catalog import Catalog, open_catalog
from phasekit.catalog.rows import ItemRow
from phasekit.workflow import run

pytest_plugins = ["conftest_pg"]
pytestmark = pytest.mark.one_pass  # the subject is the catalog, not the backend

CONFIG: dict[str, Any] = {
    "workers": 1,
    "data": {"n_bars": 3000, "seed": 31, "frequency": "1h"},
    "data_flow": {"mode": "file"},
    "phases": [
        {
            "name": "search",
            "sequence": "walk_forward",
            "walk_forward": {"train": 900, "test": 300},
            "parameter_space": {"strategy.fast": [2, 3, 4, 5], "strategy.slow": [10, 20, 30]},
            "top_k": 2,
        },
        {"name": "check", "depends_on": ["search"], "sequence": "train_test"},
    ],
}
OLD: dict[str, Any] = {**CONFIG, "run_name": "old", "parameter_space": None}


def rows_of(catalog: Catalog, run_id: str, root: Path) -> list[tuple[Any, ...]]:
    """A run's item rows as what identifies them (a file by its path in the run folder)."""
    out = []
    for row in catalog.list_items(run_id):
        path = catalog.item_path(row)
        where = str(path.relative_to(root / run_id)) if path is not None else None
        out.append(key(row, where))
    return sorted(out, key=repr)


def key(row: ItemRow, where: str | None) -> tuple[Any, ...]:
    return (
        row.stage_name,
        row.entity_name,
        row.phase,
        row.window_id,
        row.container_id,
        row.storage_type,
        row.format,
        where,
    )


def test_concurrent_runs_with_cleanup_and_doctor_running(tmp_path: Path, pg_url: str) -> None:
    solo = tmp_path / "alone"
    alone = run({**CONFIG, "run_name": "alone", "results_dir": str(solo)})
    alone.close()
    with open_catalog(str(solo), results_dir=solo) as catalog:
        expected = rows_of(catalog, alone.run_id, solo)
    assert len(expected) > 40 and len(set(expected)) == len(expected)

    results = tmp_path / "results"
    shared = {"catalog": pg_url, "results_dir": str(results)}
    old = []
    for _ in range(2):  # two completed runs of name "old": keep_latest removes the first
        result = run({**OLD, **shared})
        old.append(result.run_id)
        result.close()

    clients = []
    for name in ("a", "b"):
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump({**CONFIG, **shared, "run_name": name}))
        cmd = [sys.executable, "-m", "phasekit.cli", "run", str(path), "--json"]
        clients.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE))

    passes_while_running = 0
    with open_catalog(pg_url, results_dir=results) as catalog:
        deadline = time.monotonic() + 240
        while any(c.poll() is None for c in clients):
            assert time.monotonic() < deadline, "the runs did not finish within 240 s"
            both = all(c.poll() is None for c in clients)
            catalog.cleanup("keep_latest")
            catalog.doctor(repair=True)
            passes_while_running += both and all(c.poll() is None for c in clients)
        for client in clients:
            _, err = client.communicate(timeout=60)
            assert client.returncode == 0, err.decode()
        runs = {r.run_name: r for r in catalog.list_processes()}
        assert {runs["a"].status, runs["b"].status} == {"completed"}
        for name in ("a", "b"):
            got = rows_of(catalog, runs[name].process_id, results)
            assert got == expected, name  # each row once, none lost, none extra
            for row in catalog.list_items(runs[name].process_id):
                catalog.verify_item(row)
        assert catalog.list_items(old[0]) == []  # cleanup did its work meanwhile
        assert catalog.list_items(old[1]) != []
        report = catalog.doctor(verify=True)
        assert report.ok, report.to_dict()
    assert passes_while_running >= 1
