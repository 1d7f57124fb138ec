"""Seed 000 (configurable inter-phase data flow): the data flow managers and the factory.

Drop-in for code written against the seed's sketches::

    from phasekit.compat.dataflow import (
        DataFlowManager, MemoryDataFlow, FileDataFlow, StreamingDataFlow, HybridDataFlow,
        create_data_flow_manager, Sequencer,
    )

    flow = create_data_flow_manager(config["data_flow"])   # the seed's YAML, unchanged
    ref = flow.save_output("optimization", result["output"])
    data = flow.load_input("optimization")

Each manager is a thin face over phasekit stores, one store per phase:

* ``MemoryDataFlow``: a :class:`~phasekit.stores.MemoryStore`; ``save_output`` returns
  ``memory://<run>/<phase>/output``; ``load_input`` returns the very object saved.
* ``FileDataFlow(base_path, format)``: a :class:`~phasekit.stores.FileStore` in
  ``<base_path>/<phase>``; ``save_output`` returns the path of
  ``<base_path>/<phase>/output.<ext>`` (``.parquet``, ``.arrow``, ``.json``, ``.csv``,
  ``.h5``; ``.pkl`` only with ``allow_pickle=True``), written atomically with a
  checksum that ``load_input`` verifies. A later process loads it by phase name.
* ``StreamingDataFlow(buffer_size)``: a :class:`~phasekit.stores.StreamStore`; each
  ``save_output`` appends one item (a dict row, a table or a frame) to the phase's
  stream, through a bounded channel; ``load_input`` returns the stream so far (a list of
  rows, a Table or a frame). With ``base_path`` the stream is persisted as Arrow IPC
  parts every ``buffer_size`` items or ``flush_interval`` seconds.
* ``HybridDataFlow(memory_limit_mb)``: one :class:`~phasekit.stores.HybridStore` for all
  phases: outputs stay in memory while the bytes held are within the limit, and the least
  recently used spill to ``overflow_path`` (``./overflow``) and come back on
  ``load_input``. ``save_output`` returns ``memory://<run>/data_flow/<phase>/output``.

With ``catalog=`` (a Catalog, a results folder or a URL) every durable output gets an
``intermediate_data`` row under a run (``process_id``, started when not given). A
catalog given by location is opened with the manager's ``base_path`` as its results
folder; a Catalog object must hold ``base_path`` under its results folder (checked
before anything is written).

Every manager opens its stores through :func:`phasekit.stores.factory.open_store`, the
one place a data-flow mode becomes a store (the workflow's too); the managers only say
where (their ``base_path``/``overflow_path`` layout) and with which settings.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Optional, Protocol, Union, runtime_checkable

from phasekit.compat._common import (
    CatalogLink,
    CatalogSource,
    FacadeFlow,
    FileSettings,
    StreamingSettings,
    ViewRecorder,
    catalog_link,
    mb_to_bytes,
    resolve_flow,
    wait_received,
)
from phasekit.config import ResolvedDataFlow
from phasekit.errors import InvalidArgument, UnknownKey
from phasekit.stores import HybridStore, Ref
from phasekit.stores.base import DEFAULT_RUN
from phasekit.stores.factory import MODES, StorePlace, open_store
from phasekit.stores.formats import FORMAT_DEFAULT, check_compression, get_format
from phasekit.stores.names import check_name

PathLike = Union[str, "os.PathLike[str]"]
OUTPUT = "output"
"""The key of a phase's output in its store (the seed's ``output.<format>``)."""

SEED000_DEFAULTS: Mapping[str, Any] = {
    "file_settings": {"format": "parquet"},
    "memory_settings": {"max_size_mb": 1000},
    "streaming_settings": {"buffer_size": 1000},
}
"""The defaults of the seed's ``_create_data_flow_manager`` (below anything the config sets)."""


@runtime_checkable
class DataFlowManager(Protocol):
    """Interface for different data flow strategies (seed 000)."""

    def save_output(self, phase_name: str, data: Any) -> str:
        """Save phase output and return reference."""
        ...

    def load_input(self, phase_name: str) -> Any:
        """Load phase output."""
        ...


class _PhaseStores:
    """One phasekit store per phase (made on first use), the catalog link, close."""

    allow_pickle: bool = False

    def __init__(
        self,
        run: str,
        catalog: CatalogSource,
        process_id: Optional[str],
        files: Optional[Path] = None,
    ) -> None:
        self.run = check_name("run", run)
        self._link: Optional[CatalogLink] = catalog_link(catalog, process_id, run, files)
        self._stores: dict[str, Any] = {}
        self.refs: dict[str, str] = {}
        """phase name -> the reference returned by its last ``save_output``."""

    def _flow(self) -> FacadeFlow:
        raise NotImplementedError

    def _folder(self, phase_name: str) -> Optional[Path]:
        """The folder of a phase's store (None: the store needs none)."""
        return None

    def _open(self, phase_name: str) -> Any:
        """The store of a phase, from the factory (the mode is the factory's to decide)."""
        place = StorePlace(
            self._folder(phase_name),
            self.run,
            phase_name,
            self._recorder(phase_name),
            allow_pickle=self.allow_pickle,
            stream_folder=self._folder(phase_name),
        )
        return open_store(self._flow(), place, stream_compression=self._stream_compression())

    def _stream_compression(self) -> Optional[str]:
        return None

    def _recorder(self, phase_name: str) -> Any:
        return None if self._link is None else self._link.recorder(phase_name)

    def phase_store(self, phase_name: str) -> Any:
        """The phasekit store of ``phase_name`` (created on first use)."""
        store = self._stores.get(phase_name)
        if store is None:
            check_name("phase_name", phase_name)
            store = self._stores[phase_name] = self._open(phase_name)
        return store

    def _reference(self, ref: Ref) -> str:
        return ref.uri

    def save_output(self, phase_name: str, data: Any) -> str:
        """Save the output of ``phase_name``; returns its reference."""
        reference = self._reference(self.phase_store(phase_name).put(OUTPUT, data))
        self.refs[phase_name] = reference
        return reference

    def load_input(self, phase_name: str) -> Any:
        """The output saved by ``phase_name`` (``UnknownKey`` when it saved none)."""
        try:
            return self.phase_store(phase_name).get(OUTPUT)
        except UnknownKey:
            raise UnknownKey(
                f"phase {phase_name!r} has no saved output in this {type(self).__name__}"
            ) from None

    @property
    def process_id(self) -> Optional[str]:
        return None if self._link is None else self._link.process_id

    def stats(self) -> dict[str, Any]:
        return {name: store.stats() for name, store in self._stores.items()}

    def close(self) -> None:
        """Release what is held in memory, finish streams, finish the catalog run."""
        for store in self._stores.values():
            store.close()
        self._stores.clear()
        if self._link is not None:
            self._link.close()
            self._link = None

    def __enter__(self) -> _PhaseStores:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class MemoryDataFlow(_PhaseStores, DataFlowManager):
    """In-memory data passing: the object saved is the object loaded (no copy)."""

    def __init__(
        self,
        *,
        run: str = DEFAULT_RUN,
        catalog: CatalogSource = None,
        process_id: Optional[str] = None,
    ) -> None:
        super().__init__(run, catalog, process_id)

    def _flow(self) -> FacadeFlow:
        return FacadeFlow("memory")


class FileDataFlow(_PhaseStores, DataFlowManager):
    """File-based data passing: ``<base_path>/<phase>/output.<ext>``, durable and
    checksummed; returns the path. ``compression`` and ``partition_by`` (parquet) as in
    :class:`~phasekit.stores.FileStore`."""

    def __init__(
        self,
        base_path: PathLike,
        format: str = "parquet",
        *,
        compression: Optional[str] = FORMAT_DEFAULT,
        partition_by: Optional[list[str]] = None,
        allow_pickle: bool = False,
        run: str = DEFAULT_RUN,
        catalog: CatalogSource = None,
        process_id: Optional[str] = None,
    ) -> None:
        self.base_path = Path(base_path)
        self.format = format
        self.compression = compression
        self.partition_by = list(partition_by or [])
        self.allow_pickle = allow_pickle
        check_compression(get_format(format), compression)
        super().__init__(run, catalog, process_id, self.base_path)

    def _flow(self) -> FacadeFlow:
        return FacadeFlow(
            "file", file=FileSettings(self.format, self.compression, tuple(self.partition_by))
        )

    def _folder(self, phase_name: str) -> Optional[Path]:
        return self.base_path / phase_name

    def _reference(self, ref: Ref) -> str:
        return str(ref.path)


class StreamingDataFlow(_PhaseStores, DataFlowManager):
    """Streaming data between phases: each save appends one item to the phase's stream
    (``stream://<run>/<phase>/output``); a consumer may :meth:`subscribe` while the
    producer runs. ``base_path`` (optional) is where streams persist."""

    def __init__(
        self,
        buffer_size: int = 1000,
        *,
        base_path: Optional[PathLike] = None,
        flush_interval: float = 60.0,
        compression: Optional[str] = None,
        run: str = DEFAULT_RUN,
        catalog: CatalogSource = None,
        process_id: Optional[str] = None,
    ) -> None:
        self.buffer_size = buffer_size
        self.base_path = None if base_path is None else Path(base_path)
        self.flush_interval = flush_interval
        self.compression = compression
        super().__init__(run, catalog, process_id, self.base_path)

    def _flow(self) -> FacadeFlow:
        return FacadeFlow(
            "streaming", streaming=StreamingSettings(self.buffer_size, self.flush_interval)
        )

    def _folder(self, phase_name: str) -> Optional[Path]:
        return None if self.base_path is None else self.base_path / phase_name

    def _stream_compression(self) -> Optional[str]:
        return self.compression

    def load_input(self, phase_name: str) -> Any:
        """The phase's stream so far, every item saved before this call included."""
        wait_received(self.phase_store(phase_name), OUTPUT)
        return super().load_input(phase_name)

    def subscribe(self, phase_name: str, replay: bool = True) -> Any:
        """Iterate the phase's stream while it is produced (ends at :meth:`finish`)."""
        return self.phase_store(phase_name).subscribe(OUTPUT, replay=replay)

    def finish(self, phase_name: str) -> str:
        """End the phase's stream (flush what is left); returns its reference."""
        return self.phase_store(phase_name).finish(OUTPUT).uri  # type: ignore[no-any-return]


class HybridDataFlow(_PhaseStores, DataFlowManager):
    """Memory with file overflow: one byte budget (``memory_limit_mb``) for every phase's
    output; the least recently used outputs spill to ``overflow_path`` and are reloaded
    by ``load_input``."""

    def __init__(
        self,
        memory_limit_mb: float = 1000,
        *,
        overflow_path: PathLike = "./overflow",
        run: str = DEFAULT_RUN,
        catalog: CatalogSource = None,
        process_id: Optional[str] = None,
    ) -> None:
        self.memory_limit = mb_to_bytes(memory_limit_mb)
        self.overflow_path = Path(overflow_path)
        super().__init__(run, catalog, process_id)
        recorder = None if self._link is None else ViewRecorder(self._link)
        place = StorePlace(None, self.run, "data_flow", recorder, spill_folder=self.overflow_path)
        root = open_store(self._flow(), place)
        assert isinstance(root, HybridStore)
        self._root = root

    def _flow(self) -> FacadeFlow:
        return FacadeFlow("hybrid", memory_limit_bytes=self.memory_limit)

    def _open(self, phase_name: str) -> HybridStore:
        """A view of the one hybrid store, under the same budget (seed 000: one budget
        for every phase's output)."""
        return self._root.container(phase_name, self.memory_limit)

    @property
    def current_memory_usage(self) -> int:
        """Bytes of phase outputs held in memory now."""
        return int(self._root.ledger.used)

    def stats(self) -> dict[str, Any]:
        return {"all": self._root.stats(), **super().stats()}

    def close(self) -> None:
        super().close()
        self._root.close()


# ---------------------------------------------------------------- the factory


def data_flow_from_settings(
    flow: ResolvedDataFlow,
    *,
    run: str = DEFAULT_RUN,
    catalog: CatalogSource = None,
    process_id: Optional[str] = None,
    allow_pickle: bool = False,
) -> _PhaseStores:
    """The manager of a resolved data flow (``phasekit.config``'s ``ResolvedDataFlow``):
    the seed's class of its mode, whose stores the factory opens for that mode."""
    names: dict[str, Any] = {"run": run, "catalog": catalog, "process_id": process_id}
    if flow.mode == "memory":
        return MemoryDataFlow(**names)
    if flow.mode == "file":
        return FileDataFlow(
            base_path=flow.file.base_path,
            format=flow.file.format,
            compression=flow.file.compression,
            partition_by=list(flow.file.partition_by) or None,
            allow_pickle=allow_pickle,
            **names,
        )
    if flow.mode == "streaming":
        return StreamingDataFlow(
            buffer_size=flow.streaming.buffer_size,
            base_path=flow.file.base_path,
            flush_interval=flow.streaming.flush_interval,
            **names,
        )
    if flow.mode == "hybrid":
        return HybridDataFlow(memory_limit_mb=flow.memory_limit_mb, **names)
    raise InvalidArgument(
        f"data_flow.mode {flow.mode!r} is not allowed; allowed: {', '.join(MODES)}"
    )


def create_data_flow_manager(
    config: Optional[Mapping[str, Any]] = None, **kwargs: Any
) -> _PhaseStores:
    """The seed's ``Sequencer._create_data_flow_manager(config)``: a ``data_flow`` dict (as
    printed in the seed, every alias accepted and validated by the config layer) to a
    manager; no config means memory. File mode reads ``file_settings`` (base_path,
    format (parquet by default, as in the seed), compression, partition_by); streaming
    ``streaming_settings``; hybrid ``memory_settings.max_size_mb`` (or
    ``memory_limit_mb``). ``kwargs``: run, catalog, process_id, allow_pickle."""
    if not config:
        return MemoryDataFlow(**{k: v for k, v in kwargs.items() if k != "allow_pickle"})
    return data_flow_from_settings(resolve_flow(config, SEED000_DEFAULTS), **kwargs)


class Sequencer:
    """The data-flow part of the seed's Sequencer: ``data_flow`` from
    ``data_flow_config``, ``phase_outputs``, ``_execute_phase`` (runs
    ``_execute_topology``, which a subclass provides, and saves ``result['output']``)
    and ``_resolve_dependencies``. For complete runs use :func:`phasekit.workflow.run`."""

    def __init__(self, data_flow_config: Optional[Mapping[str, Any]] = None) -> None:
        self.data_flow = self._create_data_flow_manager(data_flow_config)
        self.phase_outputs: dict[str, str] = {}

    def _create_data_flow_manager(self, config: Optional[Mapping[str, Any]]) -> Any:
        return create_data_flow_manager(config)

    def _execute_topology(self, phase_config: Mapping[str, Any], **context: Any) -> Any:
        raise NotImplementedError(
            "Sequencer._execute_topology: subclass the compat Sequencer and run the phase "
            "there (return a dict with an 'output' entry)"
        )

    def _execute_phase(self, phase_config: Mapping[str, Any], **context: Any) -> Any:
        """Execute one phase, save its output through the data flow, track the reference."""
        phase_name = phase_config["name"]
        dependencies = self._resolve_dependencies(phase_config)
        result = self._execute_topology(phase_config, dependencies=dependencies, **context)
        output_ref = self.data_flow.save_output(phase_name, result["output"])
        self.phase_outputs[phase_name] = output_ref
        return result

    def _resolve_dependencies(self, phase_config: Mapping[str, Any]) -> dict[str, Any]:
        """``{'<dep>_output': data}`` for every ``depends_on`` phase already executed."""
        dependencies = {}
        for dep_phase in phase_config.get("depends_on", []) or []:
            if dep_phase in self.phase_outputs:
                dependencies[f"{dep_phase}_output"] = self.data_flow.load_input(dep_phase)
        return dependencies

    def close(self) -> None:
        self.data_flow.close()


__all__ = [
    "OUTPUT",
    "SEED000_DEFAULTS",
    "DataFlowManager",
    "FileDataFlow",
    "HybridDataFlow",
    "MemoryDataFlow",
    "Sequencer",
    "StreamingDataFlow",
    "create_data_flow_manager",
    "data_flow_from_settings",
]
