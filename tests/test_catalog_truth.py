"""A truthful catalog, on SQLite and PostgreSQL: the workflow type and the run name in
their own columns (and the migration of older catalogs), ``du`` in bytes on disk,
in-memory items released when their process ends (doctor after a crash), keep_latest
keeping the latest completed run, cleanup taking manifests and inline data along, and
doctor leaving nested results folders to their own catalogs."""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from catalog_util import store
from phasekit.catalog import Catalog, open_catalog
from phasekit.catalog.blockrows import container_rows
from phasekit.catalog.recorder import CatalogRecorder
from phasekit.catalog.schema import POSTGRES_DDL, SQLITE_DDL
from phasekit.cli import main
from phasekit.stores.file import FileStore
from phasekit.stores.memory import MemoryStore
from phasekit.workflow import run

pytest_plugins = ["conftest_pg"]

ROOT = Path(__file__).resolve().parents[1]


def small_run(catalog_url: str, results_dir: Path, **extra: Any) -> Any:
    cfg: dict[str, Any] = {
        "workflow": "train_test_optimization",
        "run_name": "quickstart",
        "results_dir": str(results_dir),
        "catalog": catalog_url,
        "data": {"n_bars": 1500, "frequency": "1h", "seed": 5},
        "parameter_space": {"strategy.fast": [3, 5], "strategy.slow": [20]},
        "top_k": 1,
    }
    cfg.update(extra)
    return run(cfg, workers=1)


def cli_json(capsys: pytest.CaptureFixture[str], *args: str) -> Any:
    assert main([*args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_workflow_type_and_run_name(
    catalog_url: str, results_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    res = small_run(catalog_url, results_dir)
    res.close()
    where = ["--catalog", catalog_url, "--results-dir", str(results_dir)]
    found = cli_json(capsys, "runs", "--workflow", "train_test_optimization", *where)
    assert [r["process_id"] for r in found] == [res.run_id]
    assert found[0]["workflow"] == "train_test_optimization"
    assert found[0]["run_name"] == "quickstart"
    assert res.run_id.startswith("quickstart-")
    assert cli_json(capsys, "runs", "--workflow", "quickstart", *where) == []
    assert [r["process_id"] for r in cli_json(capsys, "runs", "--name", "quickstart", *where)] == [
        res.run_id
    ]


@pytest.mark.parametrize("items", [True, False])
def test_container_items_carry_container_and_window_ids(
    catalog_url: str, results_dir: Path, items: bool
) -> None:
    # each container's own items: memory results (validation) and file results (the
    # search) alike; without them, each container within its block's row
    extra = {"results": {"collection": {"store_container_items": items}}}
    res = small_run(catalog_url, results_dir, **extra)
    try:
        catalog = open_catalog(catalog_url, results_dir=str(results_dir))
        try:
            listed = catalog.list_items(res.run_id)
            # a block row's containers as their own rows would be
            listed += [r for i in listed for r in container_rows(i)]
            rows = [
                i
                for i in listed
                if re.fullmatch(r"portfolio_\d{5}_(results|equity)", i.entity_name)
            ]
        finally:
            catalog.close()
        kinds = {(r.data_reference or r.storage_type).split(":")[0] for r in rows}
        assert rows and kinds == ({"file", "memory"} if items else {"inline"})
        for row in rows:
            assert row.container_id == row.entity_name.rsplit("_", 1)[0], row.entity_name
            assert row.window_id in ("train", "test"), row.entity_name
            assert "sharpe_ratio" in row.metadata["metrics"]
        found = {(r.stage_name, r.window_id) for r in rows}
        assert found == {
            ("parameter_search", "train"),
            ("parameter_search", "test"),
            ("validation", "test"),
        }
    finally:
        res.close()


def _v1_ddl(ddl: tuple[str, ...]) -> list[str]:
    """The schema of version 1: no run_name, no 'released' state, no row_check, pid, host."""
    return [
        re.sub(r",\s*(row_check|pid|host)\s+(TEXT|INTEGER)", "", s)
        .replace(",\n            run_name     TEXT", "")
        .replace(", 'released'", "")
        for s in ddl
    ]


def test_a_version_1_catalog_is_migrated(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    for dialect in ("sqlite", "postgresql"):
        results = tmp_path / dialect
        results.mkdir()
        config = json.dumps({"workflow": "walk_forward_optimization", "run_name": "wf"})
        rows = [
            "INSERT INTO phasekit_schema (version) VALUES (1)",
            "INSERT INTO processes (process_id, workflow, config, status, started_at) VALUES "
            f"('wf-1', 'wf', '{config}', 'completed', '2024-01-01T00:00:00.000000+00:00')",
        ]
        if dialect == "sqlite":
            url = str(results / "catalog.sqlite")
            with sqlite3.connect(url) as conn:
                for statement in [*_v1_ddl(SQLITE_DDL), *rows]:
                    conn.execute(statement)
        else:
            import psycopg

            url = str(request.getfixturevalue("pg_url"))
            with psycopg.connect(url, autocommit=True) as conn:
                for statement in [*_v1_ddl(POSTGRES_DDL), *rows]:
                    conn.execute(statement)
        with open_catalog(url, results_dir=results) as catalog:
            row = catalog.get_process("wf-1")
            assert (row.workflow, row.run_name) == ("walk_forward_optimization", "wf")
            catalog.start_process("custom", run_name="x", process_id="x-1")
            catalog.record_item("x-1", "p", "e", data_reference="memory://x-1/p/e")
            catalog.finish_process("x-1")
            assert [i.state for i in catalog.list_items("x-1")] == ["released"]
        with open_catalog(url, results_dir=results) as again:
            assert again.get_process("wf-1").run_name == "wf"


def test_du_counts_bytes_on_disk_only(catalog: Catalog) -> None:
    catalog.start_process("wf", process_id="r")
    on_disk = catalog.get_item(store(catalog, "r", "p", "table"))
    catalog.record_item("r", "p", "mem", data_reference="memory://r/p/mem", size_bytes=10**9)
    catalog.record_item("r", "p", "small", inline_data={"a": list(range(100))})
    catalog.record_item("r", "p", "s", data_reference="stream://r/p/s", size_bytes=10**6)
    (usage,) = catalog.usage("r")
    assert usage.items == 4 and usage.files == 1
    assert usage.size_bytes == on_disk.size_bytes == on_disk.path.stat().st_size  # type: ignore[union-attr]


def test_memory_items_are_released_when_their_run_ends(catalog: Catalog) -> None:
    catalog.start_process("wf", process_id="r")
    recorder = CatalogRecorder(catalog, "r", "p")
    mem = MemoryStore(run="r", phase="p", recorder=recorder)
    mem.put("k", pa.table({"a": [1, 2]}))
    (item,) = catalog.list_items("r")
    assert item.state == "present" and item.data_reference.startswith("memory://")
    catalog.finish_process("r", "interrupted")
    assert [i.state for i in catalog.list_items("r")] == ["released"]
    assert catalog.doctor().ok


CRASH = textwrap.dedent(
    """
    import os, sys
    from phasekit.catalog import open_catalog
    catalog = open_catalog(sys.argv[1], results_dir=sys.argv[2])
    catalog.start_process("wf", process_id="crashed")
    catalog.record_item("crashed", "p", "k", data_reference="memory://crashed/p/k")
    os._exit(9)  # no finish_process: the run stays 'running' in the catalog
    """
)


def test_doctor_releases_memory_items_after_a_crash(
    catalog: Catalog, catalog_url: str, results_dir: Path
) -> None:
    env = {"PYTHONPATH": f"{ROOT / 'python'}"}
    done = subprocess.run(
        [sys.executable, "-c", CRASH, catalog_url, str(results_dir)], env=env, timeout=60
    )
    assert done.returncode == 9
    assert catalog.get_process("crashed").status == "running"
    (item,) = catalog.list_items("crashed")
    assert item.state == "present"
    report = catalog.doctor()
    assert [f.kind for f in report.problems] == ["ended_memory"]
    repaired = catalog.doctor(repair=True)
    assert [(f.kind, f.repaired) for f in repaired.findings] == [("ended_memory", True)]
    assert [i.state for i in catalog.list_items("crashed")] == ["released"]
    # a live process's items are left alone
    catalog.start_process("wf", process_id="alive")
    catalog.record_item("alive", "p", "k", data_reference="memory://alive/p/k")
    assert catalog.doctor(repair=True).findings == []
    assert [i.state for i in catalog.list_items("alive")] == ["present"]


def test_keep_latest_keeps_the_latest_completed_run(catalog: Catalog) -> None:
    for run_id, status in (("good", "completed"), ("bad", "failed"), ("stopped", "interrupted")):
        catalog.start_process("wf", run_name="same", process_id=run_id)
        store(catalog, run_id, "p", "e")
        catalog.finish_process(run_id, status)
    report = catalog.cleanup("keep_latest")
    assert report.kept_runs == ["good"]
    assert {i.process_id for i in catalog.list_items()} == {"good"}


def test_cleanup_removes_manifests_and_inline_data(catalog: Catalog, results_dir: Path) -> None:
    catalog.start_process("wf", process_id="old")
    folder = results_dir / "old" / "p"
    files = FileStore(folder, run="old", phase="p", recorder=CatalogRecorder(catalog, "old", "p"))
    files.put("metrics", {"sharpe": 1.5}, {"metrics": {"sharpe": 1.5}})
    manifest = folder / ".phasekit" / "metrics.json"
    assert manifest.exists() and "sharpe" in manifest.read_text()
    catalog.record_item("old", "p", "note", inline_data={"sharpe": 1.5})
    catalog.finish_process("old")
    report = catalog.cleanup("keep_none")
    assert report.removal is not None and str(manifest) in report.removal.files_deleted
    assert not manifest.exists() and not (folder / ".phasekit").exists()
    assert catalog.list_items("old", states=("present", "deleting", "released")) == []
    assert not list(results_dir.rglob("*.json"))


def test_doctor_respects_nested_results_folders(catalog: Catalog, results_dir: Path) -> None:
    catalog.start_process("wf", process_id="outer")
    store(catalog, "outer", "p", "e")
    nested = results_dir / "experiments"
    with open_catalog(nested) as inner:
        inner.start_process("wf", process_id="inner")
        store(inner, "inner", "p", "e")
        assert inner.doctor().findings == []
    stray = results_dir / "stray.txt"
    stray.write_text("nobody records me")
    findings = catalog.doctor().findings
    assert [(f.kind, f.path) for f in findings] == [("unreferenced_file", str(stray))]
