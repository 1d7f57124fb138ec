"""The one place a data-flow mode becomes a store: ``open_store(flow, place)``.

``flow`` is any object with the resolved data-flow fields (``mode``,
``memory_limit_bytes``, ``file``, ``streaming``, ``persistence``; the config layer's
``ResolvedDataFlow`` is one); ``place`` says where the store lives and whom it reports
to. The workflow and the compat facades both open their stores here, so a mode means
the same store everywhere:

* ``memory``: a :class:`MemoryStore` (no copies);
* ``file``: a :class:`FileStore` in ``place.folder`` with the flow's format,
  compression, ``partition_by`` and per-output formats;
* ``hybrid``: a :class:`HybridStore` under ``memory_limit_bytes`` spilling to
  ``place.folder/.spill`` (or ``place.spill_folder``; a temporary folder without either);
* ``streaming``: a :class:`StreamStore` in ``place.folder/.stream`` (or
  ``place.stream_folder``) persisting every ``buffer_size`` items or ``flush_interval``
  seconds; without either folder the stream is held in memory only.

A place without a ``folder`` (``None``) holds stores that need no folder: memory,
hybrid (spilling to a temporary folder) and streaming (not persisted); file mode there is
``InvalidArgument``.

:func:`open_persist_store` opens the file store that persistence options write to.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Protocol, Union

from phasekit.crypt import Encryption
from phasekit.errors import InvalidArgument
from phasekit.paths import make_private_dir
from phasekit.stores.file import FileStore
from phasekit.stores.hybrid import HybridStore
from phasekit.stores.memory import MemoryStore
from phasekit.stores.recorder import ItemRecorder
from phasekit.stores.stream import StreamStore

MODES = ("memory", "file", "streaming", "hybrid")
"""The data-flow modes (the config layer's allowed values come from here)."""

AnyStore = Union[MemoryStore, FileStore, HybridStore, StreamStore]


class FileSettings(Protocol):
    @property
    def format(self) -> str: ...
    @property
    def compression(self) -> Optional[str]: ...
    @property
    def partition_by(self) -> tuple[str, ...]: ...


class StreamingSettings(Protocol):
    @property
    def buffer_size(self) -> int: ...
    @property
    def flush_interval(self) -> float: ...


class PersistenceSettings(Protocol):
    @property
    def format(self) -> str: ...
    @property
    def formats(self) -> Mapping[str, str]: ...


class DataFlow(Protocol):
    @property
    def mode(self) -> str: ...
    @property
    def memory_limit_bytes(self) -> int: ...
    @property
    def file(self) -> FileSettings: ...
    @property
    def streaming(self) -> StreamingSettings: ...
    @property
    def persistence(self) -> PersistenceSettings: ...


@dataclass(frozen=True)
class StorePlace:
    """Where a store lives (``folder``), the run and phase its refs name (and the
    ``namespace`` below the phase, for memory, hybrid and stream stores), and the
    recorder (usually the catalog's) told of every item. ``spill_folder`` and
    ``stream_folder`` put a hybrid store's spill files and a stream store's parts in a
    folder of their own instead of ``folder/.spill`` and ``folder/.stream``."""

    folder: Optional[Path]
    run: str
    phase: str
    recorder: Optional[ItemRecorder] = None
    allow_pickle: bool = False
    namespace: tuple[str, ...] = ()
    spill_folder: Optional[Path] = None
    stream_folder: Optional[Path] = None
    encryption: Optional[Encryption] = None
    """Encrypt what the store writes (files, spill segments, stream parts); None: off."""

    def spill_dir(self) -> Optional[Path]:
        """Where a hybrid store spills (None: a temporary folder)."""
        if self.spill_folder is not None:
            return _folder(self.spill_folder)
        return None if self.folder is None else _folder(self.folder / ".spill")

    def stream_dir(self) -> Optional[Path]:
        """Where a stream store persists its parts (None: nowhere)."""
        if self.stream_folder is not None:
            return _folder(self.stream_folder)
        return None if self.folder is None else _folder(self.folder / ".stream")

    def file_dir(self) -> Path:
        """The folder of a file store (``InvalidArgument`` when the place has none)."""
        if self.folder is None:
            raise InvalidArgument(
                f"a file store of {self.run}/{self.phase} needs a folder; "
                "give the place a folder (file mode writes files)"
            )
        return _folder(self.folder)


def open_store(
    flow: DataFlow, place: StorePlace, *, stream_compression: Optional[str] = None
) -> AnyStore:
    """The store of ``flow.mode`` at ``place`` (see the module docstring);
    ``stream_compression`` compresses a stream store's Arrow parts."""
    mode = flow.mode
    if mode == "memory":
        return MemoryStore(
            recorder=place.recorder, namespace=place.namespace, run=place.run, phase=place.phase
        )
    if mode == "file":
        return open_file_store(flow.file, place, formats=flow.persistence.formats)
    if mode == "hybrid":
        return HybridStore(
            flow.memory_limit_bytes,
            place.spill_dir(),
            recorder=place.recorder,
            namespace=place.namespace,
            run=place.run,
            phase=place.phase,
            encryption=place.encryption,
        )
    if mode == "streaming":
        return StreamStore(
            place.stream_dir(),
            buffer_size=flow.streaming.buffer_size,
            flush_interval=flow.streaming.flush_interval,
            compression=stream_compression,
            recorder=place.recorder,
            namespace=place.namespace,
            run=place.run,
            phase=place.phase,
            encryption=place.encryption,
        )
    raise InvalidArgument(f"data_flow.mode {mode!r} is not allowed; allowed: {', '.join(MODES)}")


def open_file_store(
    file: FileSettings,
    place: StorePlace,
    *,
    format: Optional[str] = None,
    formats: Optional[Mapping[str, str]] = None,
) -> FileStore:
    """A file store at ``place`` writing ``format`` (the file settings' by default) with
    the settings' compression and partitioning where that format is the settings' own."""
    fmt = format or file.format
    own = fmt == file.format
    return FileStore(
        place.file_dir(),
        format=fmt,
        compression=file.compression if own else None,
        partition_by=list(file.partition_by) if own and file.partition_by else None,
        formats=dict(formats or {}),
        allow_pickle=place.allow_pickle,
        recorder=place.recorder,
        run=place.run,
        phase=place.phase,
        encryption=place.encryption,
    )


def open_persist_store(flow: DataFlow, place: StorePlace) -> FileStore:
    """The file store persistence options write to: ``persistence.format`` (which is
    the file format unless set), per-output ``persistence.formats``."""
    return open_file_store(
        flow.file, place, format=flow.persistence.format, formats=flow.persistence.formats
    )


def _folder(path: Path) -> Path:
    make_private_dir(path)
    return path
