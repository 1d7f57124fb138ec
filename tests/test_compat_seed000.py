"""Seed 000 (inter-phase data flow) through phasekit.compat.dataflow, on both backends.

The seed's own code is used as its sketches write it (the Sequencer's factory and
phase execution below are the seed's, with the managers imported from phasekit), and
every result is checked against the same operation done with phasekit's stores.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Optional

import duckdb
import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from phasekit.catalog import open_catalog, reference_checksum
from phasekit.compat.dataflow import (
    DataFlowManager,
    FileDataFlow,
    HybridDataFlow,
    MemoryDataFlow,
    Sequencer,
    StreamingDataFlow,
    create_data_flow_manager,
)
from phasekit.config import resolve
from phasekit.errors import ConfigError, CorruptDataError, InvalidArgument, UnknownKey
from phasekit.stores import FileStore, HybridStore, MemoryStore, StreamStore
from stores_util import store_backend  # noqa: F401

pytestmark = pytest.mark.usefixtures("store_backend")

CONFIGS = Path(__file__).parent / "data" / "configs"


class SeedSequencer:
    """The seed's Sequencer sketch, verbatim but for the topology it runs."""

    def __init__(self, data_flow_config: Optional[dict[str, Any]] = None):
        self.data_flow = self._create_data_flow_manager(data_flow_config)
        self.phase_outputs: dict[str, str] = {}

    def _create_data_flow_manager(self, config: Optional[dict[str, Any]]) -> DataFlowManager:
        if not config:
            return MemoryDataFlow()  # Default

        mode = config.get("mode", "memory")

        if mode == "memory":
            return MemoryDataFlow()
        elif mode == "file":
            settings = config.get("file_settings", {})
            return FileDataFlow(
                base_path=settings.get("base_path", "./results"),
                format=settings.get("format", "parquet"),
            )
        elif mode == "streaming":
            settings = config.get("streaming_settings", {})
            return StreamingDataFlow(buffer_size=settings.get("buffer_size", 1000))
        elif mode == "hybrid":
            settings = config.get("memory_settings", {})
            return HybridDataFlow(memory_limit_mb=settings.get("max_size_mb", 1000))
        raise AssertionError(mode)

    def _execute_topology(self, phase_config: dict[str, Any], deps: dict[str, Any]) -> Any:
        return run_topology(phase_config, deps)

    def _execute_phase(self, phase_config: dict[str, Any]) -> Any:
        phase_name = phase_config["name"]
        result = self._execute_topology(phase_config, self._resolve_dependencies(phase_config))
        output_ref = self.data_flow.save_output(phase_name, result["output"])
        self.phase_outputs[phase_name] = output_ref
        return result

    def _resolve_dependencies(self, phase_config: dict[str, Any]) -> dict[str, Any]:
        dependencies = {}
        for dep_phase in phase_config.get("depends_on", []):
            if dep_phase in self.phase_outputs:
                data = self.data_flow.load_input(dep_phase)
                dependencies[f"{dep_phase}_output"] = data
        return dependencies


def run_topology(phase_config: Any, deps: dict[str, Any]) -> dict[str, Any]:
    table = pa.table({"phase": [phase_config["name"]] * 3, "x": [1.0, 2.0, 3.0]})
    return {"output": table, "deps": deps}


class TopologySequencer(Sequencer):
    """phasekit's compat Sequencer with the same topology."""

    def _execute_topology(self, phase_config: Any, **context: Any) -> Any:
        return run_topology(phase_config, context["dependencies"])


def seed_yaml(name: str) -> dict[str, Any]:
    return yaml.safe_load((CONFIGS / f"{name}.yaml").read_text())


@pytest.fixture(autouse=True)
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)  # the seed's relative ./results and ./overflow
    return tmp_path


def sample(n: int = 1000, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    return pa.table({"i": np.arange(n), "x": rng.normal(size=n)})


# ---------------------------------------------------------------- the factory


@pytest.mark.parametrize(
    ("name", "cls"),
    [
        ("seed000_small_memory", MemoryDataFlow),
        ("seed000_large_file", FileDataFlow),
        ("seed000_realtime_streaming", StreamingDataFlow),
        ("seed000_mixed_hybrid", HybridDataFlow),
        ("seed000_workflow", FileDataFlow),
    ],
)
def test_seed_yaml_gives_the_seeds_manager_with_the_resolved_settings(name: str, cls: type) -> None:
    config = seed_yaml(name)["data_flow"]
    seed_choice = SeedSequencer(config).data_flow
    ours = create_data_flow_manager(config)
    assert type(seed_choice) is cls and type(ours) is cls
    assert isinstance(ours, DataFlowManager)
    flow = resolve(CONFIGS / f"{name}.yaml").base.data_flow  # phasekit's own reading
    if cls is FileDataFlow:
        assert ours.format == seed_choice.format == flow.file.format == "parquet"
        assert ours.compression == flow.file.compression == "snappy"
        assert ours.base_path == seed_choice.base_path == Path(flow.file.base_path)
        assert ours.partition_by == list(flow.file.partition_by)
    if cls is StreamingDataFlow:
        assert ours.buffer_size == seed_choice.buffer_size == flow.streaming.buffer_size == 100
        assert ours.flush_interval == flow.streaming.flush_interval == 10
    if cls is HybridDataFlow:
        assert ours.memory_limit == seed_choice.memory_limit == flow.memory_limit_bytes
        assert ours.memory_limit == 500 * 1024 * 1024
    ours.close()
    seed_choice.close()  # type: ignore[attr-defined]


def test_factory_defaults_are_the_seeds() -> None:
    assert isinstance(create_data_flow_manager(None), MemoryDataFlow)
    assert isinstance(create_data_flow_manager({}), MemoryDataFlow)
    file_flow = create_data_flow_manager({"mode": "file"})
    assert isinstance(file_flow, FileDataFlow)
    assert (file_flow.format, file_flow.base_path) == ("parquet", Path("./results"))
    stream = create_data_flow_manager({"mode": "streaming"})
    assert isinstance(stream, StreamingDataFlow) and stream.buffer_size == 1000
    hybrid = create_data_flow_manager({"mode": "hybrid"})
    assert isinstance(hybrid, HybridDataFlow) and hybrid.memory_limit == 1000 * 1024 * 1024
    # phasekit's aliases work as well: memory_limit_mb is memory_settings.max_size_mb
    assert create_data_flow_manager({"mode": "hybrid", "memory_limit_mb": 5}).memory_limit == (
        5 * 1024 * 1024
    )
    for flow in (stream, hybrid):
        flow.close()


def test_factory_reports_bad_config_with_path_and_allowed_values() -> None:
    with pytest.raises(ConfigError, match=r"data_flow\.mode.*memory.*file.*streaming.*hybrid"):
        create_data_flow_manager({"mode": "disk_cache"})
    with pytest.raises(ConfigError, match="allow_pickle"):
        create_data_flow_manager({"mode": "file", "file_settings": {"format": "pickle"}})


# ---------------------------------------------------------------- memory


def test_memory_flow_passes_the_object_itself() -> None:
    flow = MemoryDataFlow()
    output = {"best": {"threshold": 0.02}, "table": sample(10)}
    ref = flow.save_output("optimization", output)
    assert flow.load_input("optimization") is output
    with MemoryStore(phase="optimization") as store:  # the same through phasekit's store
        assert store.put("output", output).uri == ref == "memory://run/optimization/output"
    with pytest.raises(UnknownKey, match="analysis"):
        flow.load_input("analysis")
    with pytest.raises(InvalidArgument, match="phase_name"):
        flow.save_output("../escape", output)


# ---------------------------------------------------------------- file


@pytest.mark.parametrize("fmt", ["parquet", "arrow", "json", "csv"])
def test_file_flow_writes_the_seeds_path_readable_by_other_tools(fmt: str) -> None:
    table = sample(500)
    flow = FileDataFlow(base_path="./results", format=fmt)
    ref = flow.save_output("optimization", table)
    suffix = {"parquet": ".parquet", "arrow": ".arrow", "json": ".jsonl", "csv": ".csv"}[fmt]
    path = Path(ref)
    assert path == Path("results/optimization").absolute() / f"output{suffix}"
    assert flow.load_input("optimization").equals(table)
    # a later process finds it by phase name
    assert FileDataFlow(base_path="./results", format=fmt).load_input("optimization").equals(table)
    # phasekit's own store reads the same item
    with FileStore(path.parent) as store:
        assert store.get("output").equals(table)  # type: ignore[attr-defined]
    if fmt == "parquet":
        assert pq.read_table(path).equals(table)
        assert pl.read_parquet(path).equals(pl.from_arrow(table))
        assert duckdb.sql(f"SELECT sum(i) FROM '{path}'").fetchall() == [(sum(range(500)),)]
    if fmt == "arrow":
        assert pl.read_ipc(path).equals(pl.from_arrow(table))
    if fmt == "csv":
        assert duckdb.sql(f"SELECT count(*) FROM read_csv_auto('{path}')").fetchall() == [(500,)]


def test_file_flow_detects_a_corrupt_output() -> None:
    flow = FileDataFlow("./results")
    path = Path(flow.save_output("optimization", sample(200)))
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0x40
    path.write_bytes(bytes(raw))
    with pytest.raises(CorruptDataError, match="output"):
        FileDataFlow("./results").load_input("optimization")


def test_seed_workflow_file_settings_partition_and_compress() -> None:
    config = seed_yaml("seed000_workflow")["data_flow"]
    flow = create_data_flow_manager(config)
    table = pa.table(
        {
            "date": ["2024-01-02", "2024-01-02", "2024-01-03"],
            "symbol": ["SPY", "QQQ", "SPY"],
            "pnl": [1.0, -2.0, 3.0],
        }
    )
    folder = Path(flow.save_output("optimization", table))
    assert folder.is_dir() and (folder / "date=2024-01-02" / "symbol=QQQ").is_dir()
    back = flow.load_input("optimization")
    assert back.sort_by("pnl").select(["date", "symbol", "pnl"]).equals(table.sort_by("pnl"))
    got = duckdb.sql(
        f"SELECT sum(pnl) FROM read_parquet('{folder}/**/*.parquet', hive_partitioning=true)"
    ).fetchall()
    assert got == [(2.0,)]


def test_file_flow_records_each_output_in_the_catalog(tmp_path: Path) -> None:
    # the catalog file lives apart from the results; its results folder holds them
    catalog_file = tmp_path / "catalog" / "catalog.sqlite"
    with open_catalog(catalog_file, results_dir=tmp_path / "results") as catalog:
        flow = FileDataFlow("./results", catalog=catalog)
        ref = flow.save_output("optimization", sample(100))
        flow.save_output("analysis", {"best": 0.02})
        rows = catalog.list_items(flow.process_id)
        assert [(r.stage_name, r.entity_name) for r in rows] == [
            ("optimization", "output"),
            ("analysis", "output"),
        ]
        assert rows[0].path == Path(ref)
        assert rows[0].checksum == reference_checksum(Path(ref))
        flow.close()
        assert catalog.get_process(rows[0].process_id).status == "completed"


def test_file_flow_refuses_a_catalog_whose_results_folder_does_not_hold_it(
    tmp_path: Path,
) -> None:
    with open_catalog(tmp_path / "catalog") as catalog:  # results folder: tmp/catalog
        with pytest.raises(InvalidArgument, match="outside the results folder") as err:
            FileDataFlow("./results", catalog=catalog)
        assert str(tmp_path / "results") in str(err.value)
        assert not (tmp_path / "results").exists()  # refused before anything is written
        assert catalog.list_processes() == []
        # a folder under the catalog's results folder is recorded
        flow = FileDataFlow(tmp_path / "catalog" / "flows", catalog=catalog)
        ref = flow.save_output("optimization", sample(10))
        (row,) = catalog.list_items(flow.process_id)
        assert row.path == Path(ref)
        flow.close()


def test_flows_given_a_catalog_location_record_under_their_base_path(tmp_path: Path) -> None:
    location = tmp_path / "elsewhere" / "catalog.sqlite"
    flow = FileDataFlow("./results", catalog=location)
    ref = flow.save_output("optimization", sample(10))
    stream = StreamingDataFlow(
        buffer_size=4, base_path=tmp_path / "streams", flush_interval=0.05, catalog=location
    )
    for i in range(8):
        stream.save_output("bars", {"i": i})
    stream.finish("bars")
    pids = (flow.process_id, stream.process_id)
    flow.close()
    stream.close()
    with open_catalog(location, results_dir=tmp_path) as catalog:
        (row,) = catalog.list_items(pids[0])
        assert row.path == Path(ref) and row.checksum == reference_checksum(Path(ref))
        parts = [r for r in catalog.list_items(pids[1]) if r.data_reference.startswith("file:")]
        assert parts and all(tmp_path / "streams" / "bars" in r.path.parents for r in parts)


# ---------------------------------------------------------------- streaming


def test_streaming_flow_appends_every_save_in_order(tmp_path: Path) -> None:
    flow = StreamingDataFlow(buffer_size=100)
    refs = {flow.save_output("signals", {"bar": i, "signal": i % 3 - 1}) for i in range(250)}
    assert refs == {"stream://run/signals/output"}
    rows = flow.load_input("signals")
    assert rows == [{"bar": i, "signal": i % 3 - 1} for i in range(250)]
    flow.close()
    # the same items through phasekit's StreamStore
    with StreamStore(tmp_path / "own", buffer_size=100, phase="signals") as store:
        for i in range(250):
            store.put("output", {"bar": i, "signal": i % 3 - 1})
        store.finish("output")
        assert list(store.items("output")) == rows


def test_streaming_flow_feeds_a_consumer_while_the_producer_runs(tmp_path: Path) -> None:
    flow = StreamingDataFlow(buffer_size=8, base_path=tmp_path / "streams", flush_interval=0.05)
    received: list[Any] = []
    subscription = flow.subscribe("bars")

    def consume() -> None:
        received.extend(subscription)

    consumer = threading.Thread(target=consume)
    consumer.start()
    for i in range(100):
        flow.save_output("bars", {"i": i})
    flow.finish("bars")
    consumer.join(timeout=30)
    assert received == [{"i": i} for i in range(100)]
    parts = sorted((tmp_path / "streams" / "bars" / "output.stream").glob("part-*.arrow"))
    assert parts and sum(pa.ipc.open_file(p).read_all().num_rows for p in parts) == 100
    flow.close()


# ---------------------------------------------------------------- hybrid


def test_hybrid_flow_spills_least_recently_used_outputs_within_the_budget() -> None:
    outputs = {f"phase{i}": np.full(40_000, i, dtype=np.float64) for i in range(6)}  # 320 kB
    flow = HybridDataFlow(memory_limit_mb=1)
    for name, data in outputs.items():
        assert flow.save_output(name, data) == f"memory://run/data_flow/{name}/output"
        assert flow.current_memory_usage <= flow.memory_limit
    stats = flow.stats()["all"]
    assert stats["items_on_disk"] == 3 and stats["items_in_memory"] == 3
    assert any(Path("overflow").iterdir())  # the seed's ./overflow
    for name, data in outputs.items():
        assert np.array_equal(flow.load_input(name), data)
    # the same puts through phasekit's HybridStore spill the same count
    with HybridStore(1024 * 1024) as store:
        for name, data in outputs.items():
            store.put(name, data)
        assert store.stats()["items_on_disk"] == 3
    flow.close()


# ---------------------------------------------------------------- sequencer


@pytest.mark.parametrize("mode", ["memory", "file", "hybrid"])
def test_seed_sequencer_resolves_dependencies_through_the_flow(mode: str) -> None:
    phases = [
        {"name": "optimization"},
        {"name": "analysis", "depends_on": ["optimization"]},
    ]
    for cls in (SeedSequencer, TopologySequencer):
        seq: Any = cls({"mode": mode})
        seq._execute_phase(phases[0])
        result = seq._execute_phase(phases[1])
        deps = result["deps"]
        assert list(deps) == ["optimization_output"]
        assert deps["optimization_output"].column("phase").to_pylist() == ["optimization"] * 3
        assert set(seq.phase_outputs) == {"optimization", "analysis"}
        seq.data_flow.close()


def test_compat_sequencer_needs_a_topology() -> None:
    seq = Sequencer()
    with pytest.raises(NotImplementedError, match="_execute_topology"):
        seq._execute_phase({"name": "optimization"})
    seq.close()
