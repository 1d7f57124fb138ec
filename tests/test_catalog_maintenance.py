"""Cleanup policies, doctor and export, on SQLite and PostgreSQL, with real files."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from datetime import UTC
from pathlib import Path

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from catalog_util import sample_table, store, write_durable
from phasekit.catalog import Catalog, path_to_uri, reference_checksum, reference_size
from phasekit.errors import CorruptDataError, InvalidArgument

pytest_plugins = ["conftest_pg"]


def _runs(catalog: Catalog) -> dict[str, dict[str, int]]:
    """wf1: r1 (old), r2 (old, running), r3 (latest); wf2: s1 (old), s2 (latest).

    Each run stores an ``optimize`` and a ``validate`` item.
    """
    ids: dict[str, dict[str, int]] = {}
    t0 = 1_700_000_000
    from datetime import datetime

    for n, (wf, run, status) in enumerate(
        [
            ("wf1", "r1", "completed"),
            ("wf1", "r2", "running"),
            ("wf2", "s1", "failed"),
            ("wf1", "r3", "completed"),
            ("wf2", "s2", "completed"),
        ]
    ):
        started = datetime.fromtimestamp(t0 + 60 * n, UTC)
        catalog.start_process(wf, process_id=run, started_at=started)
        ids[run] = {
            stage: store(catalog, run, stage, "AAPL", sample_table(20, n))
            for stage in ("optimize", "validate")
        }
        if status != "running":
            catalog.finish_process(run, status)
    return ids


def _alive(catalog: Catalog) -> set[str]:
    return {f"{i.process_id}/{i.stage_name}" for i in catalog.list_items()}


def _assert_consistent(catalog: Catalog) -> None:
    """Every row is present and its file verifies; no temp file is left."""
    for item in catalog.list_items(states=("present", "deleting", "missing", "corrupt")):
        assert item.state == "present", item
        if item.path is not None:
            catalog.verify_item(item)
    assert catalog.results_dir is not None
    assert not list(Path(catalog.results_dir).rglob("*.phasekit-tmp"))


# ------------------------------------------------------------------ cleanup
def test_keep_all_deletes_nothing(catalog: Catalog) -> None:
    _runs(catalog)
    before = _alive(catalog)
    report = catalog.cleanup("keep_all")
    assert report.selected == [] and report.removal is None
    assert _alive(catalog) == before


def test_keep_latest(catalog: Catalog) -> None:
    ids = _runs(catalog)
    paths = {
        run: {s: catalog.get_item(i).path for s, i in stages.items()} for run, stages in ids.items()
    }
    dry = catalog.cleanup("keep_latest", dry_run=True)
    assert sorted(dry.kept_runs) == ["r3", "s2"] and dry.running_runs == ["r2"]
    assert {i.process_id for i in dry.selected} == {"r1", "s1"}
    assert len(_alive(catalog)) == 10  # a dry run changes nothing
    report = catalog.cleanup("keep_latest")
    assert report.removal is not None and sorted(report.removal.removed) == sorted(
        [ids["r1"]["optimize"], ids["r1"]["validate"], ids["s1"]["optimize"], ids["s1"]["validate"]]
    )
    assert report.removal.freed_bytes == dry.selected_bytes > 0
    assert _alive(catalog) == {
        f"{r}/{s}" for r in ("r2", "r3", "s2") for s in ("optimize", "validate")
    }
    for run in ("r1", "s1"):
        assert not any(p.exists() for p in paths[run].values() if p)
        assert catalog.results_dir is not None and not (Path(catalog.results_dir) / run).exists()
    for run in ("r2", "r3", "s2"):
        assert all(p.exists() for p in paths[run].values() if p)
    assert {p.process_id for p in catalog.list_processes()} == {"r1", "r2", "r3", "s1", "s2"}
    _assert_consistent(catalog)


def test_keep_none_with_stages_to_persist(catalog: Catalog) -> None:
    ids = _runs(catalog)
    report = catalog.cleanup("keep_none", stages_to_persist=["validate"])
    assert report.removal is not None and not report.removal.failed
    expected = {f"{r}/validate" for r in ("r1", "r3", "s1", "s2")} | {"r2/optimize", "r2/validate"}
    assert _alive(catalog) == expected
    kept = catalog.get_item(ids["r1"]["validate"]).path
    assert kept is not None and kept.exists()
    assert not (kept.parent.parent / "optimize").exists()  # emptied folders are pruned
    wf2_items = catalog.list_items("s1") + catalog.list_items("s2")
    assert catalog.cleanup("keep_none", workflow="wf2").selected == wf2_items
    assert {i.process_id for i in catalog.list_items()} == {"r1", "r2", "r3"}
    _assert_consistent(catalog)


def test_bad_policy(catalog: Catalog) -> None:
    with pytest.raises(InvalidArgument, match="allowed: keep_all, keep_latest, keep_none"):
        catalog.cleanup("keep_some")


def test_a_file_shared_by_two_rows_lives_while_one_row_does(catalog: Catalog) -> None:
    catalog.start_process("wf", process_id="old")
    first = store(catalog, "old", "p", "e")
    item = catalog.get_item(first)
    catalog.finish_process("old")
    catalog.start_process("wf", process_id="new")
    catalog.record_item("new", "p", "e", data_reference=item.data_reference, size_bytes=item.size_bytes,
                        checksum=item.checksum)  # fmt: skip
    catalog.finish_process("new")
    catalog.cleanup("keep_latest")
    assert item.path is not None and item.path.exists()
    assert [i.process_id for i in catalog.list_items()] == ["new"]
    catalog.cleanup("keep_none")
    assert not item.path.exists() and catalog.list_items() == []


def test_an_item_whose_file_cannot_be_deleted_is_kept(
    catalog: Catalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    from phasekit.catalog import cleanup

    catalog.start_process("wf", process_id="run")
    stuck, gone = store(catalog, "run", "p", "stuck"), store(catalog, "run", "p", "gone")
    catalog.finish_process("run")
    stuck_path = catalog.get_item(stuck).path
    real_delete = cleanup._delete_path

    def refuse(path: Path) -> None:
        if path == stuck_path:
            raise PermissionError(13, "Permission denied")
        real_delete(path)

    monkeypatch.setattr(cleanup, "_delete_path", refuse)
    report = catalog.remove_items([stuck, gone])
    assert report.removed == [gone]
    assert [(i, "Permission denied" in r) for i, r in report.failed] == [(stuck, True)]
    assert [i.id for i in catalog.list_items("run")] == [stuck]  # kept, present
    assert catalog.get_item(stuck).state == "present" and stuck_path.exists()
    assert catalog.doctor().ok


def test_cleanup_prunes_emptied_folders_but_not_the_results_folder(
    catalog: Catalog, results_dir: Path
) -> None:
    catalog.start_process("wf", process_id="run")
    ids = [store(catalog, "run", "stage", f"e{k}") for k in range(3)]
    folders = {p.parent for p in (catalog.get_item(i).path for i in ids) if p is not None}
    catalog.finish_process("run")
    catalog.cleanup("keep_none")
    assert not any(f.exists() for f in folders)  # emptied folders are removed ...
    assert results_dir.is_dir()  # ... up to the results folder, which stays
    assert catalog.results_dir is not None and Path(catalog.results_dir).is_dir()


def test_folder_items_are_removed_whole(catalog: Catalog, results_dir: Path) -> None:
    catalog.start_process("wf", process_id="run")
    folder = results_dir / "run" / "p" / "dataset"
    table = pa.table({"year": [2020, 2020, 2021], "v": [1.0, 2.0, 3.0]})
    pq.write_to_dataset(table, str(folder), partition_cols=["year"])
    item_id = catalog.record_item("run", "p", "dataset", data_reference=path_to_uri(folder), format="parquet",
                                  size_bytes=reference_size(folder), checksum=reference_checksum(folder))  # fmt: skip
    catalog.verify_item(item_id)
    catalog.finish_process("run")
    report = catalog.remove_items([item_id])
    assert report.removed == [item_id] and report.files_deleted == [str(folder)]
    assert not folder.exists() and not list(results_dir.rglob("*.phasekit-tmp"))


_CLEANER = """
import sys
from phasekit.catalog import open_catalog
with open_catalog(sys.argv[1], results_dir=sys.argv[2]) as cat:
    cat.cleanup("keep_none")
"""

N_FILES = 40


def _crash_fixture(catalog: Catalog, results_dir: Path) -> list[Path]:
    """A finished run with 40 files and a partitioned dataset folder (recorded last)."""
    catalog.start_process("wf", process_id="t")
    for k in range(N_FILES):
        store(catalog, "t", f"stage{k % 3}", f"e{k}", sample_table(5, k), fmt="json")
    folder = results_dir / "t" / "ds"
    pq.write_to_dataset(pa.table({"k": [1, 2], "v": [1, 2]}), str(folder), partition_cols=["k"])
    catalog.record_item("t", "ds", "ds", data_reference=path_to_uri(folder), format="parquet",
                        size_bytes=reference_size(folder), checksum=reference_checksum(folder))  # fmt: skip
    catalog.finish_process("t")
    paths = [item.path for item in catalog.list_items("t")]
    assert len(paths) == N_FILES + 1 and all(p is not None and p.exists() for p in paths)
    return [p for p in paths if p is not None]


# (failpoint, rows still marked deleting after the crash, files of the 40 deleted,
#  whether the folder is left under its temporary name)
CRASH_POINTS = [
    ("cleanup.after_mark", N_FILES + 1, 0, False),
    ("cleanup.mid_delete@1", N_FILES + 1, 1, False),
    ("cleanup.mid_delete@23", N_FILES + 1, 23, False),
    ("cleanup.after_rename", N_FILES + 1, N_FILES, True),
    ("cleanup.before_commit", N_FILES + 1, N_FILES, False),
    ("cleanup.after_commit", 0, N_FILES, False),
]


@pytest.mark.parametrize(("failpoint", "deleting", "deleted", "renamed"), CRASH_POINTS)
def test_cleanup_killed_at_each_step_is_repaired_by_doctor(
    catalog: Catalog,
    catalog_url: str,
    results_dir: Path,
    failpoint: str,
    deleting: int,
    deleted: int,
    renamed: bool,
) -> None:
    paths = _crash_fixture(catalog, results_dir)
    proc = subprocess.run(
        [sys.executable, "-c", _CLEANER, catalog_url, str(results_dir)],
        env={**os.environ, "PHASEKIT_FAILPOINT": failpoint},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr  # killed at the failpoint
    # the state the crash left is the one of that step
    assert catalog.list_items("t") == []  # rows being deleted are not listed
    assert len(catalog.list_items("t", states=("deleting",))) == deleting
    assert sum(not p.exists() for p in paths[:N_FILES]) == deleted
    temp = list(results_dir.rglob("*.phasekit-tmp"))
    assert (len(temp) == 1 and not paths[-1].exists()) if renamed else temp == []
    catalog.doctor(repair=True, grace_seconds=0)
    _assert_consistent(catalog)
    assert catalog.doctor().ok
    # the removal is finished: no row of the run in any state and none of its files
    assert catalog.list_items("t", states=("present", "deleting", "missing", "corrupt")) == []
    assert not any(p.exists() for p in paths)
    left = [p for p in results_dir.rglob("*") if p.is_file()]
    assert all(p.name.startswith("catalog.sqlite") for p in left), left


def test_cleanup_without_a_failpoint_finishes(
    catalog: Catalog, catalog_url: str, results_dir: Path
) -> None:
    paths = _crash_fixture(catalog, results_dir)
    env = {k: v for k, v in os.environ.items() if k != "PHASEKIT_FAILPOINT"}
    proc = subprocess.run(
        [sys.executable, "-c", _CLEANER, catalog_url, str(results_dir)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert catalog.list_items("t", states=("present", "deleting")) == []
    assert not any(p.exists() for p in paths) and catalog.doctor().ok


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("cleanup.after_mrak", "unknown failpoint 'cleanup.after_mrak'; allowed: "),
        ("cleanup.mid_delete@0", "must be an integer >= 1"),
        ("cleanup.mid_delete@x", "must be an integer >= 1"),
    ],
)
def test_bad_failpoint_settings_are_named(
    monkeypatch: pytest.MonkeyPatch, spec: str, message: str
) -> None:
    from phasekit import failpoints

    monkeypatch.setenv("PHASEKIT_FAILPOINT", spec)
    with pytest.raises(InvalidArgument, match=re.escape(message)) as info:
        failpoints.reach("cleanup.after_mark")
    assert "PHASEKIT_FAILPOINT" in str(info.value)


# ------------------------------------------------------------------ doctor
def _finding(report: object, kind: str) -> list[object]:
    return [f for f in report.findings if f.kind == kind]  # type: ignore[attr-defined]


def test_doctor_on_a_healthy_catalog(catalog: Catalog) -> None:
    _runs(catalog)
    report = catalog.doctor()
    assert report.ok and report.findings == [] and report.items_checked == 10
    assert report.files_scanned == 10


def test_doctor_temp_files(catalog: Catalog, results_dir: Path) -> None:
    catalog.start_process("wf", process_id="done")
    catalog.finish_process("done")
    catalog.start_process("wf", process_id="busy")
    stale = results_dir / "done" / "p" / ".x.arrow.abcd.phasekit-tmp"
    fresh = results_dir / "busy" / "p" / ".y.arrow.abcd.phasekit-tmp"
    tmpdir = results_dir / "done" / ".ds.1234.phasekit-tmp"
    for path in (stale, fresh):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"partial")
    (tmpdir / "sub").mkdir(parents=True)
    (tmpdir / "sub" / "part.parquet").write_bytes(b"x")
    found = catalog.doctor()
    assert sorted(f.path for f in _finding(found, "temp_file")) == sorted(
        map(str, (stale, fresh, tmpdir))
    )
    assert not found.ok and stale.exists()
    fixed = catalog.doctor(repair=True)
    assert not stale.exists() and not tmpdir.exists()
    assert fresh.exists()  # its run is still running and it is recent
    assert [f.path for f in fixed.problems] == [str(fresh)]
    catalog.doctor(repair=True, grace_seconds=0)
    assert not fresh.exists() and catalog.doctor().ok


def test_doctor_missing_file(catalog: Catalog) -> None:
    ids = _runs(catalog)
    item = catalog.get_item(ids["r1"]["optimize"])
    assert item.path is not None
    saved = item.path.read_bytes()
    item.path.unlink()
    report = catalog.doctor()
    [missing] = _finding(report, "missing_file")
    assert (
        missing.item_id == item.id
        and "is missing" in missing.detail
        and missing.severity == "error"
    )
    with pytest.raises(CorruptDataError, match=f"item {item.id} .*is missing"):
        catalog.verify_item(item.id)
    catalog.doctor(repair=True)
    assert catalog.get_item(item.id).state == "missing"
    assert [i.state for i in catalog.list_items("r1", stage="optimize")] == ["missing"]
    again = catalog.doctor()
    assert again.ok and [f.kind for f in again.findings] == ["marked_item"]
    item.path.write_bytes(saved)  # the file comes back (e.g. a remounted disk)
    back = catalog.doctor(repair=True)
    assert [f.kind for f in back.findings] == ["recovered_file"]
    assert catalog.get_item(item.id).state == "present"


@pytest.mark.parametrize("damage", ["bit_flip", "truncate", "append"])
def test_doctor_corrupt_file(catalog: Catalog, damage: str) -> None:
    ids = _runs(catalog)
    item = catalog.get_item(ids["s2"]["validate"])
    path = item.path
    assert path is not None
    data = bytearray(path.read_bytes())
    if damage == "bit_flip":
        data[len(data) // 2] ^= 0x04
    elif damage == "truncate":
        data = data[: len(data) - 7]
    else:
        data += b"junk"
    path.write_bytes(bytes(data))
    expected = {
        "bit_flip": "fails its checksum",
        "truncate": "is truncated",
        "append": "longer than recorded",
    }
    report = catalog.doctor()
    [bad] = _finding(report, "corrupt_file")
    assert bad.item_id == item.id and expected[damage] in bad.detail and str(path) in bad.detail
    with pytest.raises(CorruptDataError, match=expected[damage]):
        catalog.verify_item(item.id)
    quick = catalog.doctor(verify=False)
    assert bool(_finding(quick, "corrupt_file")) == (damage != "bit_flip")
    catalog.doctor(repair=True)
    assert catalog.get_item(item.id).state == "corrupt"
    assert path.exists() and path.read_bytes() == bytes(data)  # kept for inspection
    assert catalog.doctor().ok


def test_doctor_reports_but_keeps_unreferenced_files(catalog: Catalog, results_dir: Path) -> None:
    _runs(catalog)
    stray = results_dir / "r1" / "optimize" / "phase_summary.json"
    stray.write_text("{}")
    report = catalog.doctor(repair=True)
    [found] = _finding(report, "unreferenced_file")
    assert found.path == str(stray) and found.severity == "info" and not found.repaired
    assert stray.exists() and report.ok
    hidden = results_dir / "r1" / "optimize" / ".phasekit"
    hidden.mkdir()
    (hidden / "AAPL.json").write_text("{}")  # a store's own manifest: not an item
    (hidden / ".AAPL.json.ab12.phasekit-tmp").write_text("{")
    again = catalog.doctor()
    assert [f.path for f in _finding(again, "unreferenced_file")] == [str(stray)]
    assert [f.path for f in _finding(again, "temp_file")] == [
        str(hidden / ".AAPL.json.ab12.phasekit-tmp")
    ]


def test_doctor_finishes_an_interrupted_cleanup(catalog: Catalog) -> None:
    ids = _runs(catalog)
    gone = catalog.get_item(ids["r1"]["optimize"])
    still = catalog.get_item(ids["r1"]["validate"])
    catalog.mark_items([gone.id, still.id], "deleting")  # a cleanup crashed after step 1 ...
    assert gone.path is not None and still.path is not None
    gone.path.unlink()  # ... and after deleting one file
    assert {i.id for i in catalog.list_items("r1")} == set()
    report = catalog.doctor()
    assert [f.kind for f in report.problems] == ["interrupted_delete"]
    catalog.doctor(repair=True)
    assert catalog.get_items([gone.id, still.id]) == [] and not still.path.exists()
    assert catalog.doctor().ok


# ------------------------------------------------------------------ export
def _export_fixture(catalog: Catalog) -> tuple[str, dict[str, int], pa.Table]:
    table = sample_table(50, 7)
    run = catalog.start_process("wf", process_id="exp")
    ids = {
        "arrow": store(catalog, run, "optimize", "a", table, fmt="arrow", container_id="c1"),
        "parquet": store(catalog, run, "optimize", "b", table, fmt="parquet"),
        "csv": store(catalog, run, "validate", "c", table, fmt="csv"),
        "json": store(catalog, run, "validate", "d", table, fmt="json"),
        "inline": catalog.record_item(run, "summary", "totals", inline_data={"trades": 12}),
        "memory": catalog.record_item(run, "live", "k", data_reference=f"memory://{run}/live/k"),
    }
    return run, ids, table


def test_export_copies_files_as_they_are(catalog: Catalog, tmp_path: Path) -> None:
    run, ids, table = _export_fixture(catalog)
    out = tmp_path / "out"
    report = catalog.export(run, out)
    by_id = {e.item_id: e for e in report.exported}
    assert set(by_id) == {ids[k] for k in ("arrow", "parquet", "csv", "json", "inline")}
    assert report.skipped == [(ids["memory"], f"memory://{run}/live/k has no bytes on disk")]
    assert by_id[ids["arrow"]].target == "optimize/containers/c1.arrow"
    assert not any(e.converted for e in report.exported)
    for kind in ("arrow", "parquet", "csv", "json"):
        assert by_id[ids[kind]].checksum == catalog.get_item(ids[kind]).checksum
    with pa.ipc.open_file(out / by_id[ids["arrow"]].target) as reader:
        assert reader.read_all().equals(table)
    assert json.loads((out / by_id[ids["inline"]].target).read_text()) == {"trades": 12}
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["run"]["process_id"] == run and len(manifest["items"]) == 5
    for entry in manifest["items"]:
        assert reference_checksum(out / entry["target"]) == entry["checksum"]


@pytest.mark.parametrize("fmt", ["parquet", "csv", "arrow"])
def test_export_converts_tables(catalog: Catalog, tmp_path: Path, fmt: str) -> None:
    run, ids, table = _export_fixture(catalog)
    out = tmp_path / fmt
    report = catalog.export(run, out, fmt)
    by_id = {e.item_id: e for e in report.exported}
    for kind in ("arrow", "parquet", "csv"):
        entry = by_id[ids[kind]]
        assert entry.target.endswith(f".{fmt}") and entry.format == fmt
        assert entry.converted == (kind != fmt)
    assert by_id[ids["json"]].target.endswith(".json") and not by_id[ids["json"]].converted
    con = duckdb.connect()
    for kind in ("arrow", "parquet", "csv"):
        path = out / by_id[ids[kind]].target
        if fmt == "parquet":
            got = pq.read_table(path)
            rows = con.execute(
                f"SELECT count(*), sum(i), max(s) FROM read_parquet('{path}')"
            ).fetchall()[0]
        elif fmt == "csv":
            got = pa.csv.read_csv(path)
            rows = con.execute(
                f"SELECT count(*), sum(i), max(s) FROM read_csv('{path}')"
            ).fetchall()[0]
        else:
            got = pl.read_ipc(path).to_arrow()
            con.register("exported", pa.ipc.open_file(path).read_all())
            rows = con.execute("SELECT count(*), sum(i), max(s) FROM exported").fetchall()[0]
        assert (
            got.select(["i", "x"])
            .cast(table.select(["i", "x"]).schema)
            .equals(table.select(["i", "x"]))
        )
        assert rows == (50, sum(range(7, 57)), "r9")
    assert not list(out.rglob("*.phasekit-tmp"))


def test_export_partitioned_dataset(catalog: Catalog, results_dir: Path, tmp_path: Path) -> None:
    run = catalog.start_process("wf", process_id="ds")
    folder = results_dir / run / "p" / "trades"
    table = pa.table({"year": [2020, 2020, 2021], "v": [1.0, 2.0, 3.0]})
    pq.write_to_dataset(table, str(folder), partition_cols=["year"])
    catalog.record_item(run, "p", "trades", data_reference=path_to_uri(folder), format="parquet",
                        size_bytes=reference_size(folder), checksum=reference_checksum(folder))  # fmt: skip
    copied = catalog.export(run, tmp_path / "copy")
    assert (
        ds.dataset(tmp_path / "copy" / "p" / "trades", partitioning="hive").to_table().num_rows == 3
    )
    assert copied.exported[0].checksum == reference_checksum(folder)
    converted = catalog.export(run, tmp_path / "conv", "arrow")
    got = pa.ipc.open_file(tmp_path / "conv" / converted.exported[0].target).read_all()
    assert sorted(got.column("v").to_pylist()) == [1.0, 2.0, 3.0] and got.num_rows == 3


def test_export_refuses_corrupt_files(catalog: Catalog, tmp_path: Path) -> None:
    run, ids, _ = _export_fixture(catalog)
    item = catalog.get_item(ids["parquet"])
    assert item.path is not None
    data = bytearray(item.path.read_bytes())
    data[10] ^= 0xFF
    item.path.write_bytes(bytes(data))
    out = tmp_path / "out"
    with pytest.raises(
        CorruptDataError, match=f"item {item.id} .*{item.path.name} fails its checksum"
    ):
        catalog.export(run, out, "csv")
    assert not (out / "optimize" / "b.csv").exists() and not list(out.rglob("*.phasekit-tmp"))
    with pytest.raises(InvalidArgument, match="allowed: arrow, parquet, csv"):
        catalog.export(run, out, "xlsx")


def test_export_skips_rows_marked_by_doctor(catalog: Catalog, tmp_path: Path) -> None:
    run, ids, _ = _export_fixture(catalog)
    path = catalog.get_item(ids["csv"]).path
    assert path is not None
    os.remove(path)
    catalog.doctor(repair=True)
    report = catalog.export(run, tmp_path / "out")
    assert (ids["csv"], "marked missing by doctor") in report.skipped


def test_export_says_why_a_released_item_is_not_exported(catalog: Catalog, tmp_path: Path) -> None:
    """A ``memory://`` item of a finished run is ``released`` by the run's end, not by
    doctor; every state but ``present`` has its own reason."""
    from phasekit.catalog.export import NOT_EXPORTED
    from phasekit.catalog.rows import ITEM_STATES

    assert set(NOT_EXPORTED) == set(ITEM_STATES) - {"present"}
    run, ids, _ = _export_fixture(catalog)
    catalog.finish_process(run)
    assert catalog.get_item(ids["memory"]).state == "released"
    report = catalog.export(run, tmp_path / "out")
    assert (ids["memory"], NOT_EXPORTED["released"]) in report.skipped
    assert "doctor" not in NOT_EXPORTED["released"]


def test_durable_write_helper_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b.txt"
    write_durable(target, lambda tmp: tmp.write_text("x"))
    assert target.read_text() == "x" and [p.name for p in target.parent.iterdir()] == ["b.txt"]
