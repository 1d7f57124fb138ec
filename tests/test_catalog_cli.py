"""The catalog commands through ``python -m phasekit.cli``, as tables and as JSON."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from catalog_util import sample_table, store
from phasekit.catalog import Catalog
from phasekit.cli.catalog import human_bytes

pytest_plugins = ["conftest_pg"]


def cli(
    *args: str, expect: int = 0, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    inherited = {
        k: v for k, v in os.environ.items() if k not in ("PHASEKIT_CATALOG", "PHASEKIT_RESULTS_DIR")
    }
    full_env = {**inherited, "COLUMNS": "200", **(env or {})}
    proc = subprocess.run(
        [sys.executable, "-m", "phasekit.cli", *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=120,
    )
    assert proc.returncode == expect, (proc.stdout, proc.stderr)
    return proc


def cli_json(*args: str, expect: int = 0) -> Any:
    return json.loads(cli(*args, "--json", expect=expect).stdout)


@pytest.fixture
def filled(catalog: Catalog) -> Catalog:
    """Runs ``old`` (completed, wf) and ``new`` (completed, wf), two items each plus metrics."""
    for run, sharpe, fast in (("old", 1.0, 5), ("new", 1.5, 10)):
        catalog.start_process("wf", process_id=run, config={"fast": fast})
        store(catalog, run, "optimize", "AAPL", sample_table(30), fmt="arrow", container_id="c1",
              metadata={"metrics": {"sharpe": sharpe}, "fast": fast})  # fmt: skip
        store(catalog, run, "validate", "AAPL", sample_table(30), fmt="csv", metadata={"tag": "v"})
        catalog.finish_process(run)
    return catalog


def where(catalog: Catalog, results_dir: Path) -> list[str]:
    return ["--catalog", catalog.location.target, "--results-dir", str(results_dir)]


def test_runs_ls_show(filled: Catalog, results_dir: Path) -> None:
    loc = where(filled, results_dir)
    runs = cli_json("runs", *loc)
    assert [r["process_id"] for r in runs] == ["new", "old"]
    assert runs[0]["items"] == 2 and runs[0]["size_bytes"] > 0 and runs[0]["status"] == "completed"
    table = cli("runs", *loc).stdout
    assert "new" in table and "old" in table and "completed" in table and "2 runs" in table
    items = cli_json("ls", "old", *loc)
    assert [(i["stage_name"], i["format"]) for i in items] == [
        ("optimize", "arrow"),
        ("validate", "csv"),
    ]
    assert [i["stage_name"] for i in cli_json("ls", "old", "--stage", "validate", *loc)] == [
        "validate"
    ]
    assert [i["stage_name"] for i in cli_json("ls", "old", "--meta", "fast=5", *loc)] == [
        "optimize"
    ]
    assert cli_json("ls", "old", "--meta", "fast=6", *loc) == []
    assert len(cli_json("ls", "latest", "--since", "1h", "--entity", "AAPL", *loc)) == 2
    assert (
        cli_json("ls", "old", "--meta", "metrics.sharpe=1.0", "--container", "c1", *loc)[0][
            "container_id"
        ]
        == "c1"
    )
    listing = cli("ls", "new", *loc).stdout
    assert "optimize" in listing and "validate" in listing and "present" in listing
    item_id = items[0]["id"]
    shown = cli_json("show", str(item_id), "--verify", *loc)
    assert shown["id"] == item_id and shown["verified"] == "ok" and shown["metadata"]["fast"] == 5
    by_ref = cli_json("show", items[1]["data_reference"], *loc)
    assert by_ref["id"] == items[1]["id"]
    assert "metrics" in cli("show", str(item_id), *loc).stdout


def test_compare_du_export(filled: Catalog, results_dir: Path, tmp_path: Path) -> None:
    loc = where(filled, results_dir)
    comparison = cli_json("compare", "old", "new", *loc)
    [metric] = comparison["metrics"]
    assert (metric["metric"], metric["a"], metric["b"], metric["diff"]) == ("sharpe", 1.0, 1.5, 0.5)
    assert comparison["config"] == [{"path": "fast", "a": 5, "b": 10}]
    text = cli("compare", "old", "new", *loc).stdout
    assert "sharpe" in text and "+50.00%" in text and "config differences" in text
    du = cli_json("du", *loc)
    assert {(u["process_id"], u["stage_name"]) for u in du["usage"]} == {
        (r, s) for r in ("old", "new") for s in ("optimize", "validate")
    }
    assert du["total_bytes"] == sum(u["size_bytes"] for u in du["usage"])
    assert "(total)" in cli("du", "old", *loc).stdout
    out = tmp_path / "export"
    report = cli_json("export", "new", "--to", str(out), "--format", "parquet", *loc)
    assert [e["converted"] for e in report["exported"]] == [True, True]
    for entry in report["exported"]:
        assert pq.read_table(out / entry["target"]).num_rows == 30
    assert (out / "manifest.json").exists()
    assert "exported to" in cli("export", "old", "--to", str(tmp_path / "plain"), *loc).stdout


def test_cleanup_counts_the_bytes_it_frees(catalog: Catalog, results_dir: Path) -> None:
    """The size ``cleanup`` shows is what deleting frees, as ``du`` counts it: an
    in-memory item of an ended run (released) holds no bytes whatever its size was."""
    for run in ("old", "new"):
        catalog.start_process("wf", process_id=run)
        store(catalog, run, "optimize", "AAPL", sample_table(30), fmt="csv")
        catalog.record_item(
            run, "optimize", "curves", data_reference=f"memory://{run}/optimize/curves",
            size_bytes=50 << 20,
        )  # fmt: skip
        catalog.finish_process(run)
    loc = where(catalog, results_dir)
    [usage] = cli_json("du", "old", *loc)["usage"]
    assert 0 < usage["size_bytes"] < 1 << 20
    dry = cli("cleanup", "--policy", "keep_latest", "--dry-run", *loc).stdout
    [row] = [line for line in dry.splitlines() if "old" in line and "optimize" in line]
    assert row.split("│")[-2].strip() == human_bytes(usage["size_bytes"]), row


def test_cleanup_and_doctor(filled: Catalog, results_dir: Path) -> None:
    loc = where(filled, results_dir)
    dry = cli_json("cleanup", "--policy", "keep_latest", "--dry-run", *loc)
    assert (
        dry["dry_run"]
        and {i["process_id"] for i in dry["selected"]} == {"old"}
        and dry["removal"] is None
    )
    assert "would delete" in cli("cleanup", "--policy", "keep_latest", "--dry-run", *loc).stdout
    done = cli_json("cleanup", "--policy", "keep_latest", "--stages", "validate", *loc)
    assert len(done["removal"]["removed"]) == 1 and done["kept_runs"] == ["new"]
    assert [i["stage_name"] for i in cli_json("ls", "old", *loc)] == ["validate"]
    healthy = cli_json("doctor", *loc)
    assert healthy["ok"] and healthy["findings"] == []
    victim = filled.list_items("new", stage="optimize")[0].path
    assert victim is not None
    victim.write_bytes(victim.read_bytes()[:-3])
    (results_dir / "new" / ".leftover.phasekit-tmp").write_bytes(b"x")
    sick = cli_json("doctor", *loc, expect=1)
    assert sorted(f["kind"] for f in sick["findings"]) == ["corrupt_file", "temp_file"]
    assert "problems remain" in cli("doctor", *loc, expect=1).stdout
    fixed = cli_json("doctor", "--repair", *loc)
    assert fixed["ok"] and all(f["repaired"] for f in fixed["findings"])
    assert cli_json("ls", "new", "--state", "corrupt", *loc)[0]["state"] == "corrupt"
    assert "healthy" in cli("doctor", *loc).stdout


def test_catalog_found_through_results_dir_and_env(results_dir: Path) -> None:
    from phasekit.catalog import open_catalog

    with open_catalog(results_dir) as cat:
        cat.start_process("wf", process_id="only")
    assert [r["process_id"] for r in cli_json("runs", "--results-dir", str(results_dir))] == [
        "only"
    ]
    env_runs = cli("runs", "--json", env={"PHASEKIT_RESULTS_DIR": str(results_dir)}).stdout
    assert json.loads(env_runs)[0]["process_id"] == "only"
    env_cat = cli(
        "runs", "--json", env={"PHASEKIT_CATALOG": str(results_dir / "catalog.sqlite")}
    ).stdout
    assert json.loads(env_cat)[0]["process_id"] == "only"


def test_errors_are_one_clear_line(results_dir: Path, tmp_path: Path) -> None:
    missing = cli("runs", "--results-dir", str(tmp_path / "nowhere"), expect=1)
    assert (
        missing.stderr.startswith("phasekit: error: no catalog at")
        and "Traceback" not in missing.stderr
    )
    assert not (tmp_path / "nowhere").exists()
    bad = cli("runs", "--catalog", "mysql://u:pw@h/db", expect=1)
    assert (
        "unsupported scheme" in bad.stderr
        and "postgresql://" in bad.stderr
        and "pw" not in bad.stderr
    )
    from phasekit.catalog import open_catalog

    with open_catalog(results_dir) as cat:
        cat.start_process("wf", process_id="r")
    loc = ["--results-dir", str(results_dir)]
    assert "run 'nope' is not in catalog" in cli("ls", "nope", *loc, expect=1).stderr
    assert "item 77 is not in catalog" in cli("show", "77", *loc, expect=1).stderr
    assert "--meta 'x' is not KEY=VALUE" in cli("ls", "r", "--meta", "x", *loc, expect=1).stderr
    assert "since 'soon'" in cli("ls", "r", "--since", "soon", *loc, expect=1).stderr
    usage = cli("cleanup", "--policy", "keep_most", *loc, expect=2)
    assert "invalid choice: 'keep_most'" in usage.stderr
