"""The store factory (phasekit.stores.factory) is where a data-flow mode becomes a store,
for the workflow and the compat facades alike; a place's folders, namespace and stream
compression take effect. On both backends."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.ipc as ipc
import pytest

import phasekit
from phasekit.compat._common import FacadeFlow, FileSettings, StreamingSettings
from phasekit.compat.dataflow import create_data_flow_manager
from phasekit.compat.datamanagers import data_manager_for
from phasekit.compat.stagedata import BaseDataContainer
from phasekit.config import resolve
from phasekit.errors import ConfigError, InvalidArgument
from phasekit.stores import FileStore, HybridStore, MemoryStore, StreamStore
from phasekit.stores.factory import MODES, StorePlace, open_store
from stores_util import store_backend  # noqa: F401

pytestmark = pytest.mark.usefixtures("store_backend")

PACKAGE = Path(phasekit.__file__).resolve().parent
STORE_CLASSES = {"MemoryStore", "FileStore", "HybridStore", "StreamStore"}
STORE_OF_MODE = {
    "memory": MemoryStore,
    "file": FileStore,
    "hybrid": HybridStore,
    "streaming": StreamStore,
}
READERS = {("compat/stagedata.py", "_load"), ("workflow/concurrent.py", "_persisted")}
"""Functions that open a store only to read what a run persisted (no mode involved)."""


def _store_constructions(path: Path) -> list[tuple[str, str]]:
    """(function, class) of every call constructing a store class in a module."""
    found = []
    for fn in ast.walk(ast.parse(path.read_text())):
        if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for node in ast.walk(fn):
            if isinstance(node, ast.Call):
                name = getattr(node.func, "id", getattr(node.func, "attr", None))
                if name in STORE_CLASSES:
                    found.append((fn.name, str(name)))
    return found


def test_compat_and_workflow_construct_stores_only_through_the_factory() -> None:
    modules = sorted((PACKAGE / "compat").glob("*.py")) + sorted(
        (PACKAGE / "workflow").glob("*.py")
    )
    assert modules
    bad = []
    for module in modules:
        rel = module.relative_to(PACKAGE).as_posix()
        for function, cls in _store_constructions(module):
            if (rel, function) not in READERS:
                bad.append(f"{rel}:{function} constructs {cls}")
    assert bad == []
    # the check sees a construction where there is one
    assert ("open_store", "HybridStore") in _store_constructions(PACKAGE / "stores/factory.py")


def _place(tmp_path: Path, **kw: Any) -> StorePlace:
    return StorePlace(tmp_path / "store", "run", "phase", **kw)


@pytest.mark.parametrize("mode", MODES)
def test_each_mode_opens_its_store(mode: str, tmp_path: Path) -> None:
    store = open_store(FacadeFlow(mode, memory_limit_bytes=1 << 20), _place(tmp_path))
    try:
        assert type(store) is STORE_OF_MODE[mode]
    finally:
        store.close()
    with pytest.raises(InvalidArgument, match="allowed: memory, file, streaming, hybrid"):
        open_store(FacadeFlow("disk"), _place(tmp_path))


@pytest.mark.parametrize("mode", MODES)
def test_the_compat_facades_get_the_factorys_store_of_each_mode(mode: str, tmp_path: Path) -> None:
    """Seed 000, 001 and 004 facades configured with a mode hold the factory's store of
    that mode (seed 004 names ``file`` ``persist``; its stages held in memory use the
    memory store then)."""
    config = {"mode": mode, "file_settings": {"base_path": str(tmp_path / "flows")}}
    flow = create_data_flow_manager(config)
    try:
        assert type(flow.phase_store("p")) is STORE_OF_MODE[mode]
    finally:
        flow.close()
    manager = data_manager_for({"data_flow": {"mode": mode}}, "c1", results_path=tmp_path / "r")
    try:
        assert type(manager.phasekit_store) is STORE_OF_MODE[mode]
    finally:
        manager.close()
    seed004 = {"memory": "memory", "file": "persist", "hybrid": "hybrid"}.get(mode)
    if seed004 is None:  # seed 004 has no streaming stage storage
        with pytest.raises(
            ConfigError, match="'streaming' is not allowed; allowed: memory, persist"
        ):
            BaseDataContainer({"mode": mode, "results_dir": str(tmp_path / "s")})
        return
    with BaseDataContainer({"mode": seed004, "results_dir": str(tmp_path / "s")}) as box:
        box.store_stage_data("clean", pa.table({"x": [1, 2]}))
        held = box._files.get("clean") or box._memory.get("clean")
        want = FileStore if mode == "file" else STORE_OF_MODE[mode]
        assert type(held) is want


def test_a_place_without_folder_needs_none_and_refuses_file_mode(tmp_path: Path) -> None:
    place = StorePlace(None, "run", "phase")
    stream = open_store(FacadeFlow("streaming"), place)
    assert isinstance(stream, StreamStore) and stream.base_path is None  # not persisted
    stream.close()
    hybrid = open_store(FacadeFlow("hybrid", memory_limit_bytes=100), place)
    hybrid.put("a", "x" * 1000)
    hybrid.put("b", "y" * 1000)  # spills to a temporary folder
    assert hybrid.stats()["items_on_disk"] >= 1 and hybrid.get("a") == "x" * 1000
    hybrid.close()
    with pytest.raises(InvalidArgument, match="needs a folder"):
        open_store(FacadeFlow("file"), place)


def test_spill_and_stream_folders_replace_the_default_subfolders(tmp_path: Path) -> None:
    default = open_store(FacadeFlow("hybrid", memory_limit_bytes=100), _place(tmp_path))
    own = open_store(
        FacadeFlow("hybrid", memory_limit_bytes=100),
        _place(tmp_path, spill_folder=tmp_path / "overflow"),
    )
    for store in (default, own):
        store.put("a", "x" * 1000)
        store.put("b", "y" * 1000)
    assert any((tmp_path / "store" / ".spill").rglob("*"))
    assert any((tmp_path / "overflow").rglob("*"))
    for store in (default, own):
        store.close()
    flow = FacadeFlow("streaming", streaming=StreamingSettings(buffer_size=2))
    for place in (_place(tmp_path), _place(tmp_path, stream_folder=tmp_path / "parts")):
        stream = open_store(flow, place)
        for i in range(4):
            stream.put("s", {"i": i})
        stream.finish("s")
        stream.close()
    assert list((tmp_path / "store" / ".stream" / "s.stream").glob("part-*.arrow"))
    assert list((tmp_path / "parts" / "s.stream").glob("part-*.arrow"))


def test_namespace_names_the_refs_and_stream_compression_compresses_parts(
    tmp_path: Path,
) -> None:
    memory = open_store(FacadeFlow("memory"), _place(tmp_path, namespace=("c7",)))
    assert memory.put("k", 1).uri == "memory://run/phase/c7/k"
    memory.close()
    flow = FacadeFlow("streaming", streaming=StreamingSettings(buffer_size=2))
    for codec in ("zstd", None):
        place = StorePlace(None, "run", "phase", stream_folder=tmp_path / f"s-{codec}")
        stream = open_store(flow, place, stream_compression=codec)
        for i in range(4):
            stream.put("s", {"i": i, "text": "abc" * 50})
        stream.finish("s")
        stream.close()
        (part, *_) = sorted((tmp_path / f"s-{codec}" / "s.stream").glob("part-*.arrow"))
        with ipc.open_file(part) as reader:  # the parts read back
            assert reader.read_all().num_rows == 2
    zstd = sum(p.stat().st_size for p in (tmp_path / "s-zstd").rglob("part-*.arrow"))
    plain = sum(p.stat().st_size for p in (tmp_path / "s-None").rglob("part-*.arrow"))
    assert zstd < plain


def test_file_settings_of_a_facade_flow_take_effect(tmp_path: Path) -> None:
    flow = FacadeFlow("file", file=FileSettings("parquet", "zstd", ("g",)))
    store = open_store(flow, _place(tmp_path))
    assert isinstance(store, FileStore)
    assert (store.format.name, store.compression, store.partition_by) == ("parquet", "zstd", ("g",))
    store.close()
    resolved = resolve({"data_flow": {"mode": "file"}}).base.data_flow  # config's flow too
    store = open_store(resolved, _place(tmp_path / "cfg"))
    assert isinstance(store, FileStore) and store.format.name == resolved.file.format
    store.close()
