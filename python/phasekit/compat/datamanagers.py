"""Seed 001 (per-container data flow): the data managers and the container mixin.

Drop-in for code written against the seed's sketches::

    from phasekit.compat.datamanagers import (
        MemoryDataManager, StreamingDataManager, FileDataManager, HybridDataManager,
        DataFlowContainerMixin,
    )

    manager = HybridDataManager(memory_limit_mb=10, overflow_path=f"./overflow/{cid}")
    ref = manager.store("signals", table)      # "memory://run/phase/<cid>/signals"
    table = manager.retrieve("signals")        # reloaded from disk if it was evicted

Every manager is a thin face over a phasekit store: ``MemoryDataManager`` over
:class:`~phasekit.stores.MemoryStore`, ``StreamingDataManager`` over
:class:`~phasekit.stores.StreamStore`, ``FileDataManager`` over
:class:`~phasekit.stores.FileStore` and ``HybridDataManager`` over
:class:`~phasekit.stores.HybridStore` (least recently used items spilled to
``overflow_path`` past ``memory_limit_mb``, reloaded on ``retrieve``). Keys are names
(no ``/``, no ``..``). With ``catalog=`` every durable item gets a catalog row.

:class:`DataFlowContainerMixin` gives a container ``store_result(key, data)`` and
``get_stored_result(key)``, its manager chosen from its ``data_flow`` config exactly as
the seed's ``ContainerWithDataFlow._create_data_manager`` does, through the config layer
(so every alias and the seed's YAML work unchanged). :func:`data_manager_for` does the
same for a container of a whole configuration with ``containers.<pattern>`` sections.

Every manager opens its store through :func:`phasekit.stores.factory.open_store` (the one
place a data-flow mode becomes a store, the workflow's too), giving it the seed's layout:
files in ``base_path`` itself, spills in ``overflow_path``, stream parts in
``base_path/<key>.stream``. With ``catalog=`` given by location, the catalog's results
folder is the manager's ``base_path`` (file and streaming managers); a Catalog object
must hold ``base_path`` under its results folder.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Callable, Optional, Protocol, Union, runtime_checkable

import phasekit
from phasekit.compat._common import (
    CatalogLink,
    CatalogSource,
    FacadeFlow,
    FileSettings,
    StreamingSettings,
    catalog_link,
    log,
    mb_to_bytes,
    resolve_container_flow,
    resolve_flow,
    wait_received,
)
from phasekit.config import ResolvedDataFlow
from phasekit.errors import InvalidArgument
from phasekit.stores import Ref
from phasekit.stores.base import DEFAULT_PHASE, DEFAULT_RUN
from phasekit.stores.factory import MODES, StorePlace, open_persist_store, open_store
from phasekit.stores.formats import FORMAT_DEFAULT

PathLike = Union[str, "os.PathLike[str]"]

SEED001_DEFAULTS: Mapping[str, Any] = {
    "memory_limit_mb": 100,
    "file_settings": {"format": "parquet"},
    "streaming_settings": {"buffer_size": 1000},
}
"""The defaults of the seed's ``_create_data_manager`` (below anything the config sets)."""


@runtime_checkable
class DataManager(Protocol):
    """What a container's data manager offers (seed 001)."""

    def store(self, key: str, data: Any) -> str: ...

    def retrieve(self, key: str) -> Any: ...


class _StoreManager:
    """``store``/``retrieve`` over one phasekit store, plus delete, stats and close."""

    def __init__(
        self,
        store: Any,
        link: Optional[CatalogLink],
    ) -> None:
        self.phasekit_store = store
        """The phasekit store doing the work (for everything the seed interface lacks)."""
        self._link = link

    def _reference(self, ref: Ref) -> str:
        return ref.uri

    def store(self, key: str, data: Any) -> str:
        """Store ``data`` under ``key``; returns its reference string."""
        return self._reference(self.phasekit_store.put(key, data))

    def retrieve(self, key: str) -> Any:
        """The data stored under ``key`` (``UnknownKey`` when absent)."""
        return self.phasekit_store.get(key)

    def delete(self, key: str) -> None:
        """Release the item (memory and disk)."""
        self.phasekit_store.delete(key)

    def keys(self) -> list[str]:
        """The stored keys, oldest first."""
        return [ref.key for ref in self.phasekit_store.list()]

    def __contains__(self, key: object) -> bool:
        return key in self.phasekit_store

    def stats(self) -> dict[str, Any]:
        return dict(self.phasekit_store.stats())

    @property
    def process_id(self) -> Optional[str]:
        """The catalog run the items are recorded under (None without a catalog)."""
        return None if self._link is None else self._link.process_id

    def close(self) -> None:
        """Release everything held in memory (files stay) and finish the catalog run."""
        self.phasekit_store.close()
        if self._link is not None:
            self._link.close()
            self._link = None

    def __enter__(self) -> _StoreManager:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _place(
    run: str,
    phase: str,
    container: Optional[str],
    recorder: Any,
    *,
    folder: Optional[PathLike] = None,
    spill_folder: Optional[PathLike] = None,
    allow_pickle: bool = False,
) -> StorePlace:
    """A store place in the seed's layout: a file store in ``folder`` itself, streams in
    ``folder`` (``<key>.stream``), spills in ``spill_folder``; memory, hybrid and stream
    refs named under the container."""
    return StorePlace(
        None if folder is None else Path(folder),
        run,
        phase,
        recorder,
        allow_pickle=allow_pickle,
        namespace=(container,) if container else (),
        spill_folder=None if spill_folder is None else Path(spill_folder),
        stream_folder=None if folder is None else Path(folder),
    )


def _recorder(link: Optional[CatalogLink], phase: str, container: Optional[str]) -> Any:
    return None if link is None else link.recorder(phase, container_id=container)


class MemoryDataManager(_StoreManager):
    """Items held in memory by reference (never copied); ``limit_mb`` is watched: crossing
    it logs a warning (use :class:`HybridDataManager` to spill instead)."""

    def __init__(
        self,
        limit_mb: float = 100,
        *,
        run: str = DEFAULT_RUN,
        phase: str = DEFAULT_PHASE,
        container: Optional[str] = None,
        catalog: CatalogSource = None,
        process_id: Optional[str] = None,
    ) -> None:
        self.limit_mb = limit_mb
        self.memory_limit = mb_to_bytes(limit_mb, "limit_mb")
        link = catalog_link(catalog, process_id, run)
        place = _place(run, phase, container, _recorder(link, phase, container))
        super().__init__(open_store(FacadeFlow("memory"), place), link)
        self._ledger = phasekit.SpillLedger(self.memory_limit)
        self._warned = False

    def store(self, key: str, data: Any) -> str:
        ref = self.phasekit_store.put(key, data)
        self._ledger.track(ref.key, ref.size_bytes)
        if self._ledger.over_budget() and not self._warned:
            self._warned = True
            log.warning(
                "MemoryDataManager %s holds %d bytes, over its limit of %s MB; "
                "use HybridDataManager (mode: hybrid) to spill to disk",
                self.phasekit_store.uri(ref.key),
                self._ledger.used,
                self.limit_mb,
            )
        return ref.uri

    def delete(self, key: str) -> None:
        super().delete(key)
        self._ledger.forget(key)

    @property
    def current_memory_usage(self) -> int:
        """Bytes held (``phasekit.size_of`` of every item at store time)."""
        return int(self._ledger.used)


class _FlushNotifier:
    """A recorder that records through ``inner`` (if any) and tells ``callback`` about each
    durable part file of a stream."""

    def __init__(self, inner: Any, callback: Optional[Callable[[Ref], Any]]) -> None:
        self.inner = inner
        self.callback = callback

    def record_item(self, ref: Ref) -> None:
        if self.inner is not None:
            self.inner.record_item(ref)
        if self.callback is not None and ref.scheme == "file":
            self.callback(ref)

    def forget_item(self, ref: Ref) -> None:
        forget = getattr(self.inner, "forget_item", None)
        if forget is not None:
            forget(ref)


class StreamingDataManager(_StoreManager):
    """Each key is a stream: ``store(key, item)`` sends one item (a dict row, an Arrow
    table or batch, a polars or pandas frame) through a bounded channel of
    ``buffer_size`` (a full channel blocks the producer: backpressure); a background
    thread persists it as Arrow IPC parts every ``buffer_size`` items or
    ``flush_interval`` seconds under ``base_path``. ``retrieve(key)`` returns the stream
    so far as one value (a Table, a frame, or a list of dict rows).

    ``flush_callback(ref)`` is called (on the background thread) with the Ref of every
    part once it is durable (``ref.path`` is the file, ``ref.metadata["items"]`` its item
    count). Without ``base_path`` and without a callback nothing is written; with a
    callback but no ``base_path`` the parts go to a temporary folder removed by ``close``.
    """

    def __init__(
        self,
        buffer_size: int = 1000,
        flush_callback: Optional[Callable[[Ref], Any]] = None,
        *,
        base_path: Optional[PathLike] = None,
        flush_interval: float = 60.0,
        compression: Optional[str] = None,
        run: str = DEFAULT_RUN,
        phase: str = DEFAULT_PHASE,
        container: Optional[str] = None,
        catalog: CatalogSource = None,
        process_id: Optional[str] = None,
    ) -> None:
        if flush_callback is not None and not callable(flush_callback):
            raise InvalidArgument(f"flush_callback must be callable, got {flush_callback!r}")
        self.buffer_size = buffer_size
        self.flush_callback = flush_callback
        self._tmp: Optional[str] = None
        if base_path is None and flush_callback is not None:
            base_path = self._tmp = tempfile.mkdtemp(prefix="phasekit-stream-")
        link = catalog_link(catalog, process_id, run, base_path)
        inner = _recorder(link, phase, container)
        recorder = _FlushNotifier(inner, flush_callback) if flush_callback else inner
        flow = FacadeFlow("streaming", streaming=StreamingSettings(buffer_size, flush_interval))
        place = _place(run, phase, container, recorder, folder=base_path)
        store = open_store(flow, place, stream_compression=compression)
        super().__init__(store, link)

    def retrieve(self, key: str) -> Any:
        """Stream ``key`` so far, every item stored before this call included."""
        wait_received(self.phasekit_store, key)
        return super().retrieve(key)

    def finish(self, key: str) -> str:
        """End stream ``key`` (flush what is left); returns its reference."""
        return self._reference(self.phasekit_store.finish(key))

    def close(self) -> None:
        """Finish every stream (flushing its tail), then remove a temporary folder."""
        super().close()
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None


class FileDataManager(_StoreManager):
    """Every item a durable, checksummed file ``<base_path>/<key>.<ext>`` in ``format``
    (parquet, arrow, json, csv, hdf5; pickle only with ``allow_pickle=True``);
    ``store`` returns the file's path."""

    def __init__(
        self,
        base_path: PathLike,
        format: str = "parquet",
        *,
        compression: Optional[str] = FORMAT_DEFAULT,
        partition_by: Optional[list[str]] = None,
        allow_pickle: bool = False,
        run: str = DEFAULT_RUN,
        phase: str = DEFAULT_PHASE,
        container: Optional[str] = None,
        catalog: CatalogSource = None,
        process_id: Optional[str] = None,
    ) -> None:
        self.base_path = Path(base_path)
        self.format = format
        link = catalog_link(catalog, process_id, run, base_path)
        flow = FacadeFlow("file", file=FileSettings(format, compression, tuple(partition_by or ())))
        place = _place(
            run,
            phase,
            None,  # files are named by key in base_path (no container namespace)
            _recorder(link, phase, container),
            folder=base_path,
            allow_pickle=allow_pickle,
        )
        super().__init__(open_store(flow, place), link)

    def _reference(self, ref: Ref) -> str:
        return str(ref.path)


class HybridDataManager(_StoreManager):
    """Memory with automatic overflow: items stay in memory while the bytes held are
    within ``memory_limit_mb``; past it the least recently used are evicted to segment
    files under ``overflow_path`` and reloaded transparently by ``retrieve``. Memory held
    never exceeds the limit by more than the item being stored; a failed eviction (disk
    full) keeps the item in memory and says so. ``store`` returns ``memory://...``.

    Give ``parent=`` (another HybridDataManager) to count this manager's items under the
    parent's budget too: many containers, one global bound.
    """

    def __init__(
        self,
        memory_limit_mb: float,
        overflow_path: Optional[PathLike] = None,
        *,
        run: str = DEFAULT_RUN,
        phase: str = DEFAULT_PHASE,
        container: Optional[str] = None,
        parent: Optional[HybridDataManager] = None,
        catalog: CatalogSource = None,
        process_id: Optional[str] = None,
    ) -> None:
        self.memory_limit = mb_to_bytes(memory_limit_mb)
        self.overflow_path = None if overflow_path is None else Path(overflow_path)
        if parent is not None:
            if container is None:
                raise InvalidArgument("a HybridDataManager with a parent needs container=")
            store = parent.phasekit_store.container(container, self.memory_limit)
            super().__init__(store, None)
            return
        link = catalog_link(catalog, process_id, run)
        flow = FacadeFlow("hybrid", memory_limit_bytes=self.memory_limit)
        recorder = _recorder(link, phase, container)
        place = _place(run, phase, container, recorder, spill_folder=overflow_path)
        super().__init__(open_store(flow, place), link)

    @property
    def current_memory_usage(self) -> int:
        """Bytes held in memory now."""
        return int(self.phasekit_store.ledger.used)


# ---------------------------------------------------------------- from configuration


def data_manager_from_flow(
    flow: ResolvedDataFlow,
    container_id: str,
    *,
    flush_callback: Optional[Callable[[Ref], Any]] = None,
    results_path: PathLike = "./results",
    overflow_root: PathLike = "./overflow",
    **names: Any,
) -> _StoreManager:
    """The manager of a resolved data flow, as the seed's ``_create_data_manager``:
    memory, streaming, file (``<results_path>/<container_id>``) or hybrid
    (``<overflow_root>/<container_id>``). ``names``: run, phase, catalog, process_id.
    The class is the seed's for the mode; its store is the factory's for that mode."""
    if flow.mode == "memory":
        return MemoryDataManager(limit_mb=flow.memory_limit_mb, container=container_id, **names)
    if flow.mode == "streaming":
        return StreamingDataManager(
            buffer_size=flow.streaming.buffer_size,
            flush_callback=flush_callback,
            flush_interval=flow.streaming.flush_interval,
            container=container_id,
            **names,
        )
    if flow.mode == "file":
        return FileDataManager(
            base_path=Path(results_path) / container_id,
            format=flow.file.format,
            compression=flow.file.compression,
            partition_by=list(flow.file.partition_by) or None,
            container=container_id,
            **names,
        )
    if flow.mode == "hybrid":
        return HybridDataManager(
            memory_limit_mb=flow.memory_limit_mb,
            overflow_path=Path(overflow_root) / container_id,
            container=container_id,
            **names,
        )
    raise InvalidArgument(
        f"data_flow.mode {flow.mode!r} is not allowed; allowed: {', '.join(MODES)}"
    )


def data_manager_for(
    config: Any, container_id: str, *, phase: Optional[str] = None, **kwargs: Any
) -> _StoreManager:
    """The manager of ``container_id`` in a whole configuration (YAML path or text, or a
    mapping with ``data_flow`` and ``containers.<pattern>``), as the seed's topology
    builder would give it. ``kwargs`` go to :func:`data_manager_from_flow`."""
    flow = resolve_container_flow(config, container_id, SEED001_DEFAULTS, phase)
    return data_manager_from_flow(flow, container_id, **kwargs)


# ---------------------------------------------------------------- the container mixin


class DataFlowContainerMixin:
    """Gives a container ``store_result`` and ``get_stored_result`` (seed 001).

    The container needs ``self.config`` (an object whose ``.config`` is a dict, or a
    dict) and ``self.container_id``. Its data flow config is the seed's merge
    ``{**config["global_data_flow"]["defaults"], **config["data_flow"]}``; the manager is
    made on first use (or by calling :meth:`_create_data_manager`). Override
    :meth:`_flush_to_storage` to be told about each persisted part of a streaming
    container. :meth:`complete_data_flow` applies ``persistence.on_completion`` (copies
    every item into ``./results/<container_id>`` in the persistence format) and
    releases the manager.
    """

    config: Any
    container_id: str
    data_flow_results_path: PathLike = "./results"
    data_flow_overflow_root: PathLike = "./overflow"

    def _container_config(self) -> Mapping[str, Any]:
        inner = getattr(self.config, "config", self.config)
        if not isinstance(inner, Mapping):
            raise InvalidArgument(
                f"container {getattr(self, 'container_id', '?')}: config.config must be a "
                f"mapping, got {type(inner).__name__}"
            )
        return inner

    def _get_data_flow_config(self) -> dict[str, Any]:
        """The container's own ``data_flow`` over the global defaults (seed 001)."""
        config = self._container_config()
        container_config = config.get("data_flow", {}) or {}
        global_config = config.get("global_data_flow", {}) or {}
        return {**(global_config.get("defaults", {}) or {}), **container_config}

    @property
    def data_flow_config(self) -> dict[str, Any]:
        cached = self.__dict__.get("_compat_flow_config")
        if cached is None:
            cached = self.__dict__["_compat_flow_config"] = self._get_data_flow_config()
        return dict(cached)

    @data_flow_config.setter
    def data_flow_config(self, value: Mapping[str, Any]) -> None:
        self.__dict__["_compat_flow_config"] = dict(value)
        self.__dict__.pop("_compat_resolved_flow", None)

    def _resolved_data_flow(self) -> ResolvedDataFlow:
        cached = self.__dict__.get("_compat_resolved_flow")
        if cached is None:
            cached = resolve_flow(self.data_flow_config, SEED001_DEFAULTS)
            self.__dict__["_compat_resolved_flow"] = cached
        return cached  # type: ignore[no-any-return]

    def _create_data_manager(self) -> _StoreManager:
        """The manager of this container's data flow (memory, streaming, file, hybrid)."""
        manager = data_manager_from_flow(
            self._resolved_data_flow(),
            self.container_id,
            flush_callback=self._flush_to_storage,
            results_path=self.data_flow_results_path,
            overflow_root=self.data_flow_overflow_root,
        )
        self.__dict__["_compat_manager"] = manager
        return manager

    @property
    def data_manager(self) -> _StoreManager:
        manager = self.__dict__.get("_compat_manager")
        return manager if manager is not None else self._create_data_manager()

    @data_manager.setter
    def data_manager(self, manager: _StoreManager) -> None:
        self.__dict__["_compat_manager"] = manager

    def _flush_to_storage(self, ref: Ref) -> None:
        """Called with the Ref of each durable part of a streaming container (a hook)."""
        log.debug("container %s: persisted %s", self.container_id, ref.uri)

    def store_result(self, key: str, data: Any) -> str:
        """Store result using the configured method; returns its reference."""
        return self.data_manager.store(key, data)

    def get_stored_result(self, key: str) -> Any:
        """Retrieve a stored result."""
        return self.data_manager.retrieve(key)

    def complete_data_flow(self) -> list[str]:
        """Persist on completion when configured (``persistence.on_completion``), then
        release the manager; returns the paths written."""
        manager = self.__dict__.pop("_compat_manager", None)
        if manager is None:
            return []
        written: list[str] = []
        try:
            flow = self._resolved_data_flow()
            if flow.persistence.on_completion and not isinstance(manager, FileDataManager):
                folder = Path(self.data_flow_results_path) / self.container_id
                place = _place(DEFAULT_RUN, DEFAULT_PHASE, None, None, folder=folder)
                out = open_persist_store(flow, place)
                try:
                    for key in manager.keys():
                        ref = out.put(key, manager.retrieve(key))
                        written.append(str(ref.path))
                finally:
                    out.close()
        finally:
            manager.close()
        return written


__all__ = [
    "SEED001_DEFAULTS",
    "DataFlowContainerMixin",
    "DataManager",
    "FileDataManager",
    "HybridDataManager",
    "MemoryDataManager",
    "StreamingDataManager",
    "data_manager_for",
    "data_manager_from_flow",
]
