"""Seed 001 (per-container data flow) through phasekit.compat.datamanagers, on both backends.

``ContainerWithDataFlow`` below is the seed's sketch as written, with the managers
imported from phasekit; every result is checked against the same operations done with
phasekit's own stores and config resolution.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from phasekit.catalog import open_catalog
from phasekit.compat.datamanagers import (
    DataFlowContainerMixin,
    DataManager,
    FileDataManager,
    HybridDataManager,
    MemoryDataManager,
    StreamingDataManager,
    data_manager_for,
)
from phasekit.config import resolve
from phasekit.errors import InvalidArgument, UnknownKey
from phasekit.stores import FileStore, HybridStore
from stores_util import store_backend  # noqa: F401

pytestmark = pytest.mark.usefixtures("store_backend")

CONFIGS = Path(__file__).parent / "data" / "configs"

PER_CONTAINER = CONFIGS / "seed001_per_container.yaml"


class ContainerConfig:
    def __init__(self, name: str, config: dict[str, Any]) -> None:
        self.name = name
        self.config = config


class Container:
    """The seed's base container, as far as the sketch uses it."""

    def __init__(self, config: ContainerConfig) -> None:
        self.config = config
        self.container_id = config.name


class ContainerWithDataFlow(Container):
    """Container that manages its own data flow (the seed's sketch)."""

    def __init__(self, config: ContainerConfig):
        super().__init__(config)

        # Get container-specific data flow config
        self.data_flow_config = self._get_data_flow_config()
        self.data_manager = self._create_data_manager()

        # Track data based on configuration
        self._setup_data_tracking()

    def _get_data_flow_config(self) -> dict[str, Any]:
        """Get data flow config for this container."""
        # Check for container-specific config
        container_config = self.config.config.get("data_flow", {})

        # Fall back to defaults
        global_config = self.config.config.get("global_data_flow", {})

        return {**global_config.get("defaults", {}), **container_config}

    def _create_data_manager(self) -> DataManager:
        """Create appropriate data manager."""
        mode = self.data_flow_config.get("mode", "memory")

        if mode == "memory":
            return MemoryDataManager(limit_mb=self.data_flow_config.get("memory_limit_mb", 100))
        elif mode == "streaming":
            return StreamingDataManager(
                buffer_size=self.data_flow_config.get("streaming_settings", {}).get(
                    "buffer_size", 1000
                ),
                flush_callback=self._flush_to_storage,
            )
        elif mode == "file":
            return FileDataManager(
                base_path=f"./results/{self.container_id}",
                format=self.data_flow_config.get("file_settings", {}).get("format", "parquet"),
            )
        elif mode == "hybrid":
            return HybridDataManager(
                memory_limit_mb=self.data_flow_config.get("memory_limit_mb", 100),
                overflow_path=f"./overflow/{self.container_id}",
            )
        raise AssertionError(mode)

    def _setup_data_tracking(self) -> None:
        self.flushed: list[Any] = []

    def _flush_to_storage(self, ref: Any) -> None:
        self.flushed.append(ref)

    def store_result(self, key: str, data: Any) -> str:
        """Store result using configured method."""
        return self.data_manager.store(key, data)

    def get_stored_result(self, key: str) -> Any:
        """Retrieve stored result."""
        return self.data_manager.retrieve(key)


class MixinContainer(DataFlowContainerMixin, Container):
    """A seed container that takes store_result/get_stored_result from the mixin."""


@pytest.fixture(autouse=True)
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)  # the seed's ./results/<id> and ./overflow/<id>
    return tmp_path


def per_container_config(container_id: str) -> ContainerConfig:
    """The container's config as the seed's topology builder hands it over."""
    doc = yaml.safe_load(PER_CONTAINER.read_text())
    pattern = "portfolio_*" if container_id.startswith("portfolio_") else container_id
    return ContainerConfig(
        container_id,
        {
            "data_flow": doc["containers"][pattern]["data_flow"],
            "global_data_flow": {"defaults": {"mode": "memory", "memory_limit_mb": 100}},
        },
    )


def table(n: int = 300, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    return pa.table({"bar": np.arange(n), "signal": rng.normal(size=n)})


# ---------------------------------------------------------------- per-container choice


@pytest.mark.parametrize(
    ("container_id", "cls"),
    [
        ("data", StreamingDataManager),
        ("features", HybridDataManager),
        ("portfolio_0042", MemoryDataManager),
        ("execution", FileDataManager),
    ],
)
def test_seed_container_gets_the_manager_of_its_pattern(container_id: str, cls: type) -> None:
    seed = ContainerWithDataFlow(per_container_config(container_id))
    mixin = MixinContainer(per_container_config(container_id))
    by_config = data_manager_for(PER_CONTAINER, container_id)
    assert type(seed.data_manager) is type(mixin.data_manager) is type(by_config) is cls
    flow = resolve(PER_CONTAINER).container(None, container_id).data_flow  # phasekit's reading
    if cls is HybridDataManager:
        assert mixin.data_manager.memory_limit == flow.memory_limit_bytes == 500 * 1024 * 1024
        assert seed.data_manager.memory_limit == flow.memory_limit_bytes
    if cls is MemoryDataManager:
        assert seed.data_manager.memory_limit == mixin.data_manager.memory_limit == 50 * 1024**2
    if cls is FileDataManager:
        assert by_config.format == flow.file.format == "parquet"
        assert by_config.phasekit_store.compression == flow.file.compression == "snappy"
    if cls is StreamingDataManager:
        assert seed.data_manager.buffer_size == flow.streaming.buffer_size == 1000
    data = table() if cls is not StreamingDataManager else {"bar": 1, "close": 101.5}
    for container in (seed, mixin):
        ref = container.store_result("signals", data)
        back = container.get_stored_result("signals")
        if cls is StreamingDataManager:
            assert ref.startswith("stream://") and back == [data]
        elif cls is FileDataManager:
            assert Path(ref) == Path(f"results/{container_id}/signals.parquet").absolute()
            assert back.equals(data) and pq.read_table(ref).equals(data)
        else:
            assert ref.startswith("memory://") and back is data
    for manager in (seed.data_manager, mixin.data_manager, by_config):
        manager.close()


@pytest.mark.parametrize(
    ("name", "container_id", "mode", "limit_mb"),
    [
        ("seed001_optimization_1000", "portfolio_999", "hybrid", 5),
        ("seed001_high_frequency", "data", "streaming", 100),
        ("seed001_high_frequency", "features", "memory", 2000),
        ("seed001_memory_constrained", "execution", "file", 50),
        ("seed001_memory_constrained", "portfolio_1", "hybrid", 50),
    ],
)
def test_seed_use_case_yaml_configures_managers(
    name: str, container_id: str, mode: str, limit_mb: int
) -> None:
    path = CONFIGS / f"{name}.yaml"
    flow = resolve(path).container(None, container_id).data_flow
    manager = data_manager_for(path, container_id)
    expected = {
        "hybrid": HybridDataManager,
        "streaming": StreamingDataManager,
        "memory": MemoryDataManager,
        "file": FileDataManager,
    }[mode]
    assert flow.mode == mode and type(manager) is expected
    if mode == "streaming":
        assert manager.buffer_size == flow.streaming.buffer_size == limit_mb
    elif mode != "file":
        assert manager.memory_limit == flow.memory_limit_bytes == limit_mb * 1024 * 1024
    manager.close()


# ---------------------------------------------------------------- smart memory management


def run_lru_script(store: Any, put: Any, get: Any) -> None:
    for i in range(10):
        put(f"k{i}", np.full(25_000, i, dtype=np.float64))  # 200 kB each
    get("k0")
    get("k1")
    put("k10", np.zeros(25_000))


def test_hybrid_manager_evicts_least_recently_used_like_the_store() -> None:
    manager = HybridDataManager(memory_limit_mb=1, overflow_path="./overflow/portfolio_1")
    limit = manager.memory_limit
    peaks: list[int] = []

    def put(key: str, data: Any) -> None:
        assert manager.store(key, data) == f"memory://run/phase/{key}"
        peaks.append(manager.current_memory_usage)

    run_lru_script(manager, put, manager.retrieve)
    assert max(peaks) <= limit
    in_memory = [k.rsplit("/", 1)[1] for k in manager.phasekit_store.ledger.keys()]
    assert in_memory[-3:] == ["k0", "k1", "k10"]  # the reloaded ones are the most recent
    stats = manager.stats()
    assert stats["items"] == 11 and stats["items_on_disk"] == 11 - len(in_memory)
    assert any(Path("overflow/portfolio_1").iterdir())
    for i in range(10):
        assert np.array_equal(manager.retrieve(f"k{i}"), np.full(25_000, i, dtype=np.float64))
    # the same script on phasekit's HybridStore leaves the same keys in memory
    with HybridStore(limit) as store:
        run_lru_script(store, store.put, store.get)
        assert [k.rsplit("/", 1)[1] for k in store.ledger.keys()] == in_memory
    manager.close()


def test_many_hybrid_containers_share_one_global_budget() -> None:
    total = HybridDataManager(memory_limit_mb=2, overflow_path="./overflow")
    portfolios = [
        HybridDataManager(memory_limit_mb=1, container=f"portfolio_{i}", parent=total)
        for i in range(4)
    ]
    for round_ in range(3):
        for i, p in enumerate(portfolios):
            p.store(f"equity_{round_}", np.full(25_000, i + round_, dtype=np.float64))
            assert total.current_memory_usage <= total.memory_limit
            assert p.current_memory_usage <= p.memory_limit
    assert np.array_equal(portfolios[2].retrieve("equity_0"), np.full(25_000, 2.0))
    assert sorted(portfolios[0].keys()) == ["equity_0", "equity_1", "equity_2"]
    with pytest.raises(InvalidArgument, match="container"):
        HybridDataManager(memory_limit_mb=1, parent=total)
    total.close()


def test_memory_manager_warns_past_its_limit(caplog: pytest.LogCaptureFixture) -> None:
    manager = MemoryDataManager(limit_mb=0.1)
    data = np.zeros(20_000)
    with caplog.at_level(logging.WARNING, logger="phasekit.compat"):
        manager.store("a", data)
        manager.store("b", data)
    assert manager.retrieve("b") is data
    assert manager.current_memory_usage == 2 * data.nbytes
    assert "over its limit" in caplog.text and "HybridDataManager" in caplog.text
    manager.delete("a")
    assert manager.current_memory_usage == data.nbytes
    with pytest.raises(UnknownKey):
        manager.retrieve("a")


# ---------------------------------------------------------------- streaming and files


def test_streaming_manager_persists_parts_and_calls_back(tmp_path: Path) -> None:
    refs: list[Any] = []
    manager = StreamingDataManager(
        buffer_size=100, flush_callback=refs.append, base_path=tmp_path / "data"
    )
    rows = [{"bar": i, "close": 100.0 + i} for i in range(250)]
    for row in rows:
        assert manager.store("bars", row) == "stream://run/phase/bars"
    assert manager.retrieve("bars") == rows
    manager.finish("bars")
    assert len(refs) >= 3  # parts of at most 100 items
    assert sum(ref.metadata["items"] for ref in refs) == 250
    parts = [pa.ipc.open_file(ref.path).read_all() for ref in refs]
    assert pa.concat_tables(parts).to_pylist() == rows
    assert pl.concat([pl.read_ipc(ref.path) for ref in refs])["bar"].to_list() == list(range(250))
    manager.close()


def test_streaming_manager_with_callback_only_uses_a_temporary_folder() -> None:
    refs: list[Any] = []
    manager = StreamingDataManager(buffer_size=10, flush_callback=refs.append)
    for i in range(25):
        manager.store("ticks", {"i": i})
    manager.finish("ticks")
    folder = refs[0].path.parent
    assert folder.exists() and sum(r.metadata["items"] for r in refs) == 25
    manager.close()
    assert not folder.exists()


@pytest.mark.parametrize("fmt", ["parquet", "arrow", "csv"])
def test_file_manager_files_are_read_by_other_tools(fmt: str) -> None:
    data = table(400)
    manager = FileDataManager(base_path="./results/execution", format=fmt)
    path = Path(manager.store("fills", data))
    assert path.parent == Path("results/execution").absolute()
    assert manager.retrieve("fills").equals(data)
    with FileStore(path.parent) as store:
        assert store.get("fills").equals(data)  # type: ignore[attr-defined]
    reader = {"parquet": "read_parquet", "arrow": None, "csv": "read_csv_auto"}[fmt]
    if reader:
        assert duckdb.sql(f"SELECT count(*) FROM {reader}('{path}')").fetchall() == [(400,)]
    else:
        assert pl.read_ipc(path)["bar"].to_list() == list(range(400))


def test_managers_record_items_in_the_catalog(tmp_path: Path) -> None:
    # files are recorded only under the catalog's results folder (here ./results)
    with open_catalog(tmp_path / "cat", results_dir=tmp_path / "results") as catalog:
        manager = HybridDataManager(
            memory_limit_mb=1, container="portfolio_3", phase="optimize", catalog=catalog
        )
        manager.store("equity", np.zeros(10))
        file_manager = FileDataManager("./results/x", catalog=catalog, phase="optimize")
        file_manager.store("trades", table(5))
        rows = catalog.list_items(phase="optimize")
        assert {(r.entity_name, r.container_id) for r in rows} == {
            ("equity", "portfolio_3"),
            ("trades", None),
        }
        manager.delete("equity")
        assert [r.entity_name for r in catalog.list_items(manager.process_id)] == []
        manager.close()
        file_manager.close()
        # a folder outside the catalog's results folder is refused before anything is written
        with pytest.raises(InvalidArgument, match="outside the results folder"):
            StreamingDataManager(base_path=tmp_path / "elsewhere", catalog=catalog)
        assert not (tmp_path / "elsewhere").exists()


def test_file_manager_given_a_catalog_location_records_under_its_base_path(
    tmp_path: Path,
) -> None:
    location = tmp_path / "catalogs" / "catalog.sqlite"
    manager = FileDataManager(tmp_path / "data" / "c1", catalog=location)
    path = manager.store("trades", table(5))
    pid = manager.process_id
    manager.close()
    with open_catalog(location, results_dir=tmp_path / "data") as catalog:
        (row,) = catalog.list_items(pid)
        assert str(row.path) == path
        catalog.verify_item(row)


# ---------------------------------------------------------------- topology builder integration


@pytest.mark.parametrize("has_parameter_space", [True, False])
def test_topology_builder_portfolio_flow(has_parameter_space: bool) -> None:
    # the seed's create_backtest_topology choice of portfolio data flow
    if has_parameter_space:
        portfolio_data_flow = {
            "mode": "hybrid",
            "memory_limit_mb": 10,  # Small limit per container
            "persistence": {
                "on_completion": True,  # Save results
                "format": "parquet",
            },
        }
    else:
        portfolio_data_flow = {"mode": "memory", "memory_limit_mb": 100}
    containers = [
        MixinContainer(
            ContainerConfig(
                f"portfolio_{i}", {"type": "portfolio", "data_flow": portfolio_data_flow}
            )
        )
        for i in range(3)
    ]
    for i, c in enumerate(containers):
        c.store_result("equity", table(50, seed=i))
        expected = HybridDataManager if has_parameter_space else MemoryDataManager
        assert type(c.data_manager) is expected
        assert c.data_manager.memory_limit == portfolio_data_flow["memory_limit_mb"] * 1024 * 1024
    written = [c.complete_data_flow() for c in containers]
    if has_parameter_space:
        for i, paths in enumerate(written):
            assert [Path(p).name for p in paths] == ["equity.parquet"]
            assert pq.read_table(paths[0]).equals(table(50, seed=i))
    else:
        assert written == [[], [], []]
