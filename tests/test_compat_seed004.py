"""Seed 004 (intermediate stage data) through phasekit.compat.stagedata, on both backends and
on both catalog dialects (SQLite and a real PostgreSQL server).

The container is configured with the seed's ``storage_strategy`` dict as printed and used
through the seed's four methods; what it stores is checked against phasekit's own
catalog (``list_items``, ``cleanup``), stores and checksums, and the files are read back
by pyarrow, polars and DuckDB.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import polars as pl
import pyarrow.csv as pcsv
import pytest

from phasekit.catalog import Catalog, open_catalog, reference_checksum
from phasekit.compat.stagedata import BaseDataContainer
from phasekit.config import resolve
from phasekit.errors import ConfigError, InvalidArgument, UnknownKey
from stores_util import store_backend  # noqa: F401

pytest_plugins = ["conftest_pg"]
pytestmark = pytest.mark.usefixtures("store_backend")

# seed 004, 2.1 Storage Strategy Configuration (verbatim)
SEED004_STORAGE_STRATEGY = {
    "mode": "memory",  # Options: 'memory', 'persist', 'hybrid'
    "persist_intermediate_results": False,
    "stages_to_persist": [],  # Empty list means all stages
    "cleanup_policy": "keep_latest",  # Options: 'keep_all', 'keep_latest', 'keep_none'
}


def strategy(**changes: Any) -> dict[str, Any]:
    return {**SEED004_STORAGE_STRATEGY, **changes}


def employees(n: int = 5, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "employee_id": np.arange(n),
            "hours": rng.uniform(20, 40, n).round(2),
            "team": ["a", "b"] * (n // 2) + ["a"] * (n % 2),
        }
    )


def make(results_dir: Path, catalog: Any = None, **config: Any) -> BaseDataContainer:
    base = {"storage_strategy": SEED004_STORAGE_STRATEGY, "results_dir": str(results_dir)}
    if catalog is not None:
        base["catalog"] = catalog
    return BaseDataContainer({**base, **config})


def own_rows(catalog: Catalog, **filters: Any) -> list[dict[str, Any]]:
    return [
        {
            "id": r.id,
            "stage_name": r.stage_name,
            "entity_name": r.entity_name,
            "storage_type": r.storage_type,
            "data_reference": r.data_reference,
        }
        for r in catalog.list_items(**filters)
    ]


def listed(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    keys = ("id", "stage_name", "entity_name", "storage_type", "data_reference")
    return [{k: r[k] for k in keys} for r in rows]


# ---------------------------------------------------------------- memory (the seed's default)


def test_memory_strategy_keeps_the_object_and_records_it(
    catalog_url: str, results_dir: Path
) -> None:
    container = make(results_dir, catalog_url)
    frame = employees()
    ref = container.store_stage_data("data_loading", frame, {"rows": 5, "source": "hr.csv"})
    assert ref == f"memory://{container.process_id}/data_loading/data"
    assert container.retrieve_stage_data("data_loading") is frame  # no copy in memory mode
    rows = container.list_available_data({"stage_name": "data_loading"})
    assert listed(rows) == own_rows(container.catalog, stage="data_loading")
    assert rows[0]["metadata"] == {"rows": 5, "source": "hr.csv"}
    assert rows[0]["process_id"] == container.process_id
    assert container.list_available_data({"source": "hr.csv"}) == rows
    assert container.list_available_data({"source": "other"}) == []
    assert not list(results_dir.glob(f"{container.process_id}/**/*.csv"))  # nothing written
    container.close()


def test_memory_data_of_a_finished_process_is_not_retrievable(results_dir: Path) -> None:
    first = make(results_dir)
    first.store_stage_data("raw", {"n": 1})
    pid = first.process_id
    first.close()
    second = make(results_dir)
    with pytest.raises(UnknownKey, match=r"held in memory.*mode: persist"):
        second.retrieve_stage_data("raw", process_id=pid)
    with pytest.raises(UnknownKey, match="no data for stage 'nope'"):
        second.retrieve_stage_data("nope")
    second.close()


# ---------------------------------------------------------------- CSV persistence


def test_persist_csv_writes_structured_files_read_by_other_tools(results_dir: Path) -> None:
    container = make(results_dir, storage_strategy=strategy(mode="persist"))
    frames = {"employees": employees(6), "shifts": employees(4, seed=1)}
    refs = container.store_stage_data("cleaning", frames, {"decision": "drop_nulls"})
    folder = results_dir / container.process_id / "cleaning"
    assert refs == {name: str(folder / f"{name}.csv") for name in frames}
    for name, frame in frames.items():
        path = folder / f"{name}.csv"
        assert pcsv.read_csv(path).to_pandas().equals(frame)
        assert pl.read_csv(path).to_pandas().equals(frame)
        got = duckdb.sql(f"SELECT sum(employee_id) FROM read_csv_auto('{path}')").fetchall()
        assert got == [(int(frame.employee_id.sum()),)]
        # the metadata file alongside (the store's manifest) and the catalog row agree
        manifest = json.loads((folder / ".phasekit" / f"{name}.json").read_text())
        assert manifest["ref"]["metadata"]["decision"] == "drop_nulls"
        (row,) = container.catalog.list_items(container.process_id, stage="cleaning", entity=name)
        assert row.checksum == manifest["ref"]["checksum"] == reference_checksum(path)
    pid = container.process_id
    container.close()
    later = make(results_dir, storage_strategy=strategy(mode="persist"))
    back = later.retrieve_stage_data("cleaning", process_id=pid)
    assert set(back) == set(frames)
    for name, frame in frames.items():
        pd.testing.assert_frame_equal(back[name], frame)
    later.close(cleanup=False)


def test_json_values_persist_as_json_next_to_the_csv(results_dir: Path) -> None:
    container = make(results_dir, storage_strategy=strategy(mode="persist"))
    summary = {"rows": 6, "teams": ["a", "b"], "ok": True}
    path = Path(container.store_stage_data("summary", summary, {"entity_name": "stats"}))
    assert path.name == "stats.json" and json.loads(path.read_text()) == summary
    assert container.retrieve_stage_data("summary") == summary
    container.close()


def test_selective_persistence_follows_stages_to_persist(results_dir: Path) -> None:
    config = strategy(persist_intermediate_results=True, stages_to_persist=["features"])
    container = make(results_dir, storage_strategy=config)
    resolved = resolve({"storage_strategy": config})  # phasekit's reading of the same dict
    assert container.stages_to_persist == resolved.stages_to_persist == ("features",)
    assert container.should_persist("features") and not container.should_persist("raw")
    raw_ref = container.store_stage_data("raw", employees())
    features_ref = container.store_stage_data("features", employees(seed=3))
    assert raw_ref.startswith("memory://") and Path(features_ref).exists()
    types = {r["stage_name"]: r["data_reference"][:7] for r in container.list_available_data()}
    assert types == {"raw": "memory:", "features": "file://"}
    container.close()


def test_storing_a_stage_again_replaces_it(results_dir: Path) -> None:
    container = make(results_dir, storage_strategy=strategy(mode="persist"))
    container.store_stage_data("cleaning", {"employees": employees(3), "extra": employees(2)})
    container.store_stage_data("cleaning", {"employees": employees(4)})
    rows = container.list_available_data({"process_id": container.process_id})
    assert [r["entity_name"] for r in rows] == ["employees"]
    assert not (results_dir / container.process_id / "cleaning" / "extra.csv").exists()
    assert len(container.retrieve_stage_data("cleaning")["employees"]) == 4
    container.close()


# ---------------------------------------------------------------- database persistence


def test_database_persistence_inline_and_by_reference(catalog_url: str, results_dir: Path) -> None:
    config = {"persistence": "database", "storage_strategy": strategy(mode="persist")}
    container = make(results_dir, catalog_url, **config)
    decision = {"solver": "greedy", "score": 0.93, "assigned": [1, 2, 3]}
    inline_ref = container.store_stage_data("allocation", decision, {"step": 2})
    matrix = np.arange(60_000, dtype=np.float64).reshape(300, 200)  # too big to inline
    matrix_ref = container.store_stage_data("costs", matrix)
    (inline_row,) = container.catalog.list_items(container.process_id, stage="allocation")
    assert inline_ref == f"inline:{inline_row.id}"
    assert inline_row.storage_type == "inline" and inline_row.inline_data == decision
    assert inline_row.data_reference is None
    (matrix_row,) = container.catalog.list_items(container.process_id, stage="costs")
    assert matrix_row.storage_type == "reference" and matrix_row.format == "arrow"
    assert matrix_row.path == Path(matrix_ref)
    assert container.list_available_data({"storage_type": "inline"})[0]["metadata"] == {"step": 2}
    pid = container.process_id
    container.close()
    later = make(results_dir, catalog_url, **config)
    assert later.retrieve_stage_data("allocation", process_id=pid) == decision
    assert np.array_equal(later.retrieve_stage_data("costs", process_id=pid), matrix)
    later.close(cleanup=False)


# ---------------------------------------------------------------- cleanup


def test_keep_latest_at_close_removes_older_runs(catalog_url: str, results_dir: Path) -> None:
    config = {"storage_strategy": strategy(mode="persist")}
    pids, folders = [], []
    for i in range(3):
        c = make(results_dir, catalog_url, **config)
        c.store_stage_data("cleaning", {"employees": employees(3, seed=i)})
        pids.append(c.process_id)
        folders.append(results_dir / c.process_id / "cleaning")
        if i == 2:
            with open_catalog(catalog_url, results_dir=results_dir) as own:
                # run 0 went when run 1 closed; while run 2 runs, run 1 is the latest
                # completed run, which keep_latest keeps
                assert pids[0] not in {r.process_id for r in own.list_items()}
                preview = own.cleanup("keep_latest", dry_run=True)
                assert preview.selected == [] and preview.kept_runs == [pids[1]]
        c.close()
    with open_catalog(catalog_url, results_dir=results_dir) as catalog:
        assert {r.process_id for r in catalog.list_items()} == {pids[2]}
    assert not (folders[0] / "employees.csv").exists()
    assert (folders[2] / "employees.csv").exists()


def test_keep_none_releases_this_run_but_keeps_stages_to_persist(results_dir: Path) -> None:
    config = strategy(mode="persist", stages_to_persist=["final"])
    other = make(results_dir, storage_strategy=strategy(mode="persist"), project_name="other")
    other.store_stage_data("cleaning", employees(seed=4))
    other_pid = other.process_id
    other.close(cleanup=False)
    container = make(results_dir, storage_strategy=config)
    container.store_stage_data("cleaning", employees())
    container.store_stage_data("final", employees(seed=9))
    report = container.cleanup("keep_none")
    assert report["released_stages"] == ["cleaning"] and report["freed_bytes"] > 0
    mine = container.list_available_data({"process_id": container.process_id})
    assert [r["stage_name"] for r in mine] == ["final"]
    # another project's runs are not this container's to clean up
    pd.testing.assert_frame_equal(
        container.retrieve_stage_data("cleaning", process_id=other_pid), employees(seed=4)
    )
    assert not (results_dir / container.process_id / "cleaning" / "data.csv").exists()
    with pytest.raises(UnknownKey):
        container.retrieve_stage_data("cleaning")
    assert container.cleanup("keep_all")["removed_items"] == 0
    with pytest.raises(InvalidArgument, match="keep_all, keep_latest, keep_none"):
        container.cleanup("keep_some")
    container.close()


# ---------------------------------------------------------------- hybrid and errors


def test_hybrid_strategy_spills_within_its_budget(results_dir: Path) -> None:
    container = make(results_dir, storage_strategy=strategy(mode="hybrid"), memory_limit_mb=1)
    arrays = {f"stage{i}": np.full(50_000, i, dtype=np.float64) for i in range(5)}  # 400 kB
    for stage, data in arrays.items():
        ref = container.store_stage_data(stage, data)
        assert ref == f"memory://{container.process_id}/stages/{stage}/data"
    assert container._hybrid is not None
    stats = container._hybrid.stats()
    assert stats["items_on_disk"] >= 3 and stats["bytes_in_memory"] <= 1024 * 1024
    for stage, data in arrays.items():
        assert np.array_equal(container.retrieve_stage_data(stage), data)
    assert {r["stage_name"] for r in container.list_available_data()} == set(arrays)
    container.close()


def test_bad_configuration_and_names(results_dir: Path) -> None:
    with pytest.raises(ConfigError, match=r"storage_strategy\.mode.*persist"):
        make(results_dir, storage_strategy=strategy(mode="disk"))
    with pytest.raises(ConfigError, match="cleanup_policy"):
        make(results_dir, storage_strategy=strategy(cleanup_policy="keep_some"))
    with pytest.raises(InvalidArgument, match="csv, database"):
        make(results_dir, persistence="parquet")
    container = make(results_dir)
    with pytest.raises(InvalidArgument, match="stage_name"):
        container.store_stage_data("../etc", {"a": 1})
    container.close()
