"""StreamStore: a producer and its consumers connected through a Channel while both run.

``put(key, item)`` sends the item into the stream ``key`` (a ``phasekit.Channel`` of
``buffer_size``: a full channel blocks the producer, which is the backpressure). A
background thread per stream forwards every item to the live subscribers (in order)
and persists the stream as Arrow IPC part files every ``buffer_size`` items or
``flush_interval`` seconds, whichever comes first (see :mod:`streamparts`). A reader
that comes late (even in another process) reads everything from the files.

Acknowledged means stored: ``put`` returns only once the stream holds the disk space
to write the item (a preallocated reserve file, see :class:`streamparts.Reserve`); on a
full disk ``put`` raises instead, and a flush writes with the reserve's space, so every
item ``put`` acknowledged reaches a part.

Crash semantics: a part is durable (fsynced, renamed, listed by the fsynced manifest)
before it counts; a crash loses at most the items not yet flushed: those received
since the last flush (fewer than ``buffer_size``, at most ``flush_interval`` seconds'
worth) and those still queued in the channel (at most ``buffer_size``).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Optional

import phasekit
from phasekit.crypt import Encryption
from phasekit.crypt.keyring import destroy_keys_for
from phasekit.errors import ChannelClosed, InvalidArgument, StorageError, Timeout, UnknownKey
from phasekit.paths import contained, make_private_dir
from phasekit.stores import values
from phasekit.stores.base import DEFAULT_PHASE, DEFAULT_RUN, StoreBase, check_metadata
from phasekit.stores.durable import (
    is_disk_full,
    remove_path,
    storage_error,
    tmp_name,
    tree_checksum,
)
from phasekit.stores.formats import check_compression, get_format
from phasekit.stores.recorder import ItemRecorder
from phasekit.stores.ref import Ref, file_uri
from phasekit.stores.streamparts import (
    RESERVE,
    RESERVE_BASE,
    ROW,
    SUFFIX,
    Reserve,
    StreamFolder,
    combine,
    item_kind,
    reserve_for,
    split_items,
    to_batches,
)

log = logging.getLogger(__name__)


class Subscription:
    """A consumer's view of a stream: replayed items first, then live ones, in order.

    Iterate it (it ends when the stream finishes); ``close()`` (or leaving a ``with``
    block) unsubscribes so that an abandoned consumer never blocks the producer.
    """

    def __init__(
        self, folder: StreamFolder, replay: list[Any], parts: list[Any], channel: Any
    ) -> None:
        self._folder = folder
        self._replay = replay
        self._parts = parts
        self.channel = channel

    def _replayed(self) -> Iterator[Any]:
        """The persisted parts and the unflushed tail taken at subscription (once)."""
        folder = self._folder
        for part in self._parts:
            yield from split_items(folder.read_part(part), folder.kind or ROW, part.items)
        self._parts = []
        replay, self._replay = self._replay, []
        yield from replay

    def __iter__(self) -> Iterator[Any]:
        yield from self._replayed()
        yield from self.channel

    def poll(
        self, stop: Callable[[], bool], max_items: int = 256, interval: float = 0.05
    ) -> Iterator[Any]:
        """Iterate like ``iter(self)``, but wait for live items ``interval`` seconds at a
        time and end early once ``stop()`` is true (a consumer that must not block)."""
        yield from self._replayed()
        while not stop():
            try:
                items = self.channel.recv_many(max_items, interval)
            except Timeout:
                continue
            except ChannelClosed:
                return
            yield from items

    def stats(self) -> dict[str, Any]:
        """The subscription channel's statistics (depth, capacity, high_water, ...)."""
        return dict(self.channel.stats())

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Stream:
    """One stream: its channel, background thread, unflushed tail, parts and subscribers."""

    def __init__(self, store: StreamStore, key: str, folder: StreamFolder) -> None:
        self.store = store
        self.key = key
        self.folder = folder
        self.kind: Optional[str] = folder.kind
        self.channel = phasekit.Channel(store.buffer_size)
        self.lock = threading.Lock()
        self.pending: list[Any] = []
        self.subscribers: list[Any] = []
        self.error: Optional[BaseException] = None
        self.items_sent = 0
        self.items_seen = 0
        self.flushes = 0
        self.final_ref: Optional[Ref] = None
        self.reserve = Reserve(folder._path(RESERVE)) if folder.folder is not None else None
        self.reserve_lock = threading.Lock()
        self.unflushed_bytes = 0
        self.unflushed_items = 0
        self.thread = threading.Thread(target=self._run, name=f"phasekit-stream-{key}", daemon=True)
        self.thread.start()

    # ---------------------------------------------------------------- background thread

    def _run(self) -> None:
        interval = self.store.flush_interval
        deadline = time.monotonic() + interval
        while True:
            # at most what fills the buffer: a part holds at most buffer_size items
            room = max(1, self.store.buffer_size - len(self.pending))
            try:
                batch = self.channel.recv_many(room, timeout=max(0.0, deadline - time.monotonic()))
            except Timeout:
                batch = []
            except ChannelClosed:
                break
            for item in batch:
                self._take(item)
            if len(self.pending) >= self.store.buffer_size or time.monotonic() >= deadline:
                self._flush()
                deadline = time.monotonic() + interval
        self._flush()
        self._finish()

    def _take(self, item: Any) -> None:
        with self.lock:
            self.pending.append(item)
            self.items_seen += 1
            subscribers = list(self.subscribers)
        for sub in subscribers:
            try:
                sub.send(item)
            except ChannelClosed:
                with self.lock:
                    if sub in self.subscribers:
                        self.subscribers.remove(sub)

    def _flush(self) -> None:
        with self.lock:
            pending = list(self.pending)
        if not pending or self.folder.folder is None or self.error is not None:
            return
        size = self.store.buffer_size
        for start in range(0, len(pending), size):  # a part holds at most buffer_size items
            items = pending[start : start + size]
            try:
                part = self._write_reserved(items)
            except (StorageError, InvalidArgument, OSError) as exc:
                self.error = exc
                log.error("stream %r: persisting %d items failed: %s", self.key, len(items), exc)
                return
            with self.lock:
                del self.pending[: len(items)]
            self.flushes += 1
            self.store._record_part(self, part)

    def _write_reserved(self, items: list[Any]) -> Any:
        """Write ``items`` as a part; when the disk is full, with the space the reserve held
        for them (then for everything), so that acknowledged items are written."""
        reserve = self.reserve
        if reserve is None:
            return self.folder.write_part(items, self.kind or ROW)
        nbytes = sum(int(phasekit.size_of(i)) for i in items)
        try:
            part = self.folder.write_part(items, self.kind or ROW)
        except StorageError as exc:
            if not is_disk_full(exc):
                raise
            part = self._write_from_reserve(items, nbytes)
        with self.reserve_lock:
            self.unflushed_bytes = max(0, self.unflushed_bytes - nbytes)
            self.unflushed_items = max(0, self.unflushed_items - len(items))
            need = reserve_for(
                self.unflushed_bytes, self.unflushed_items, self.folder.manifest_bytes
            )
            try:
                if need > reserve.size:
                    reserve.resize(need)
            except OSError as exc:  # puts refuse items until the space is back
                log.warning("stream %r: cannot hold its reserve again: %s", self.key, exc)
        return part

    def _write_from_reserve(self, items: list[Any], nbytes: int) -> Any:
        """The disk is full: give back this part's share of the reserve (all of it if that
        is short) and write; puts that must grow the reserve wait meanwhile."""
        reserve = self.reserve
        assert reserve is not None
        with self.reserve_lock:
            rest = reserve_for(
                max(0, self.unflushed_bytes - nbytes),
                max(0, self.unflushed_items - len(items)),
                self.folder.manifest_bytes,
            )
            keep = rest - self.folder.manifest_bytes - RESERVE_BASE // 2
            reserve.resize(min(reserve.size, max(0, keep)))
            try:
                return self.folder.write_part(items, self.kind or ROW)
            except StorageError as exc:
                if not is_disk_full(exc):
                    raise
                log.warning("stream %r: the reserve was short; writing with all of it", self.key)
                reserve.resize(0)
                return self.folder.write_part(items, self.kind or ROW)

    def _hold(self, nbytes: int) -> None:
        """Reserve the space to persist one more item, or raise (the item is not accepted)."""
        reserve = self.reserve
        if reserve is None:
            return
        with self.reserve_lock:
            items = self.unflushed_items + 1
            need = reserve_for(self.unflushed_bytes + nbytes, items, self.folder.manifest_bytes)
            if need > reserve.size:
                try:
                    try:
                        reserve.resize(need + need // 2)  # grow ahead: few resizes
                    except OSError:
                        reserve.resize(need)
                except OSError as exc:
                    raise storage_error(
                        exc,
                        f"stream {self.key!r}: holding disk space for one more item "
                        f"({nbytes} bytes; {self.unflushed_items} accepted items not yet "
                        "written keep theirs)",
                    ) from exc
            self.unflushed_bytes += nbytes
            self.unflushed_items = items

    def _unhold(self, nbytes: int) -> None:
        if self.reserve is not None:
            with self.reserve_lock:
                self.unflushed_bytes = max(0, self.unflushed_bytes - nbytes)
                self.unflushed_items = max(0, self.unflushed_items - 1)

    def _finish(self) -> None:
        with self.lock:
            subscribers, self.subscribers = list(self.subscribers), []
        for sub in subscribers:
            sub.close()
        if self.folder.folder is not None and self.error is None:
            try:
                with self.reserve_lock:
                    if self.reserve is not None:
                        self.reserve.resize(0)  # the manifest's last rewrite may need it
                    self.folder.finish()
            except StorageError as exc:
                self.error = exc
        if self.reserve is not None:
            self.reserve.close()

    # ---------------------------------------------------------------- producer and readers

    def send(self, item: Any, timeout: Optional[float]) -> int:
        kind = item_kind(item)
        with self.lock:
            if self.kind is None:
                self.kind = kind
            elif kind != self.kind:
                raise InvalidArgument(
                    f"stream {self.key!r} carries {self.kind} items, got a {kind}; a stream "
                    "holds one item type"
                )
        nbytes = int(phasekit.size_of(item)) if self.reserve is not None else 0
        self._hold(nbytes)
        try:
            self.channel.send(item, timeout=timeout)
        except ChannelClosed:
            self._unhold(nbytes)
            raise StorageError(
                f"stream {self.key!r} is finished; it accepts no more items"
            ) from None
        except BaseException:
            self._unhold(nbytes)
            raise
        with self.lock:
            self.items_sent += 1
            return self.items_sent

    def subscribe(self, replay: bool) -> Subscription:
        channel = phasekit.Channel(self.store.buffer_size)
        with self.lock:
            parts = list(self.folder.parts) if replay else []
            tail = list(self.pending) if replay else []
            if self.thread.is_alive() and not self.channel.closed:
                self.subscribers.append(channel)
            else:
                channel.close()
        return Subscription(self.folder, tail, parts, channel)

    def snapshot(self) -> tuple[list[Any], list[Any]]:
        """(persisted parts, unflushed items) at this moment."""
        with self.lock:
            return list(self.folder.parts), list(self.pending)

    def close(self) -> None:
        self.channel.close()
        self.thread.join()


class StreamStore(StoreBase):
    """Streams by key: live hand-off through a Channel, persisted in the background.

    ``base_path`` holds one ``<key>.stream`` folder per stream (None: no persistence;
    late readers then see only what is still in memory). ``compression``: the part
    files' codec, one of the arrow format's (None, lz4, zstd).
    """

    scheme = "stream"
    format_name = "stream"

    def __init__(
        self,
        base_path: Optional[str | os.PathLike[str]] = None,
        *,
        buffer_size: int = 1000,
        flush_interval: float = 60.0,
        compression: Optional[str] = None,
        run: str = DEFAULT_RUN,
        phase: str = DEFAULT_PHASE,
        namespace: tuple[str, ...] = (),
        recorder: Optional[ItemRecorder] = None,
        encryption: Optional[Encryption] = None,
    ) -> None:
        super().__init__(run=run, phase=phase, namespace=namespace, recorder=recorder)
        self.encryption = encryption
        if isinstance(buffer_size, bool) or not isinstance(buffer_size, int) or buffer_size < 1:
            raise InvalidArgument(f"buffer_size must be an int >= 1, got {buffer_size!r}")
        if (
            isinstance(flush_interval, bool)
            or not isinstance(flush_interval, (int, float))
            or not flush_interval > 0
        ):
            raise InvalidArgument(
                f"flush_interval must be a number of seconds > 0, got {flush_interval!r}"
            )
        # the part files are Arrow IPC: the arrow format owns their compressions
        compression = check_compression(get_format("arrow"), compression, "stream compression")
        self.buffer_size = buffer_size
        self.flush_interval = float(flush_interval)
        self.compression = compression
        self.base_path = None if base_path is None else Path(os.path.abspath(os.fspath(base_path)))
        if self.base_path is not None:
            try:
                make_private_dir(self.base_path)
            except OSError as exc:
                raise storage_error(exc, f"creating the stream folder {self.base_path}") from exc
        self._streams: dict[str, _Stream] = {}
        self._metadata: dict[str, dict[str, Any]] = {}

    # ---------------------------------------------------------------- streams

    def _folder_of(self, key: str) -> Path:
        """``<base_path>/<key>.stream``, checked to lie under ``base_path`` (no link leaves it)."""
        if self.base_path is None:
            raise StorageError(f"stream {key!r} is not persisted (no base_path)")
        return contained(f"{key}{SUFFIX}", self.base_path, f"the folder of stream {key!r}")

    def _load(self, key: str) -> Optional[StreamFolder]:
        if self.base_path is None:
            return None
        return StreamFolder.load(self._folder_of(key), key, self.encryption)

    def _stream(self, key: str, create: bool) -> Optional[_Stream]:
        with self._lock:
            stream = self._streams.get(key)
            if stream is not None or not create:
                return stream
            self._check_open()
            folder = self._load(key) if self.base_path is not None else None
            if folder is not None and folder.finished:
                raise StorageError(
                    f"stream {key!r} is finished (in {folder.folder}); use another key"
                )
            if folder is None:
                path = self._folder_of(key) if self.base_path is not None else None
                folder = StreamFolder(path, key, self.compression, self.encryption)
            stream = self._streams[key] = _Stream(self, key, folder)
            return stream

    def put(
        self,
        key: str,
        data: Any,
        metadata: Optional[Mapping[str, Any]] = None,
        *,
        timeout: Optional[float] = None,
    ) -> Ref:
        """Send one item into stream ``key`` (blocking while the channel is full)."""
        self._check_open()
        key = self._key(key)
        meta = check_metadata(metadata)
        stream = self._stream(key, create=True)
        assert stream is not None
        if stream.error is not None:
            raise StorageError(f"stream {key!r} failed: {stream.error}") from stream.error
        seq = stream.send(data, timeout)
        if meta:
            self._metadata.setdefault(key, {}).update(meta)
        kind = values.JSON if stream.kind == ROW else str(stream.kind)
        return Ref(
            uri=self.uri(key),
            key=key,
            kind=kind,
            format=self.format_name,
            size_bytes=0,
            metadata={**meta, "seq": seq},
        )

    def subscribe(self, key: str, replay: bool = True) -> Subscription:
        """Iterate stream ``key``: with ``replay``, everything since its start, then live items
        until it finishes. Subscribing before the first put creates the stream."""
        self._check_open()
        key = self._key(key)
        stream = self._stream(key, create=False)
        if stream is None:
            folder = self._load(key)
            if folder is not None and folder.finished:
                return Subscription(folder, [], list(folder.parts), _closed_channel())
            stream = self._stream(key, create=True)
            assert stream is not None
        return stream.subscribe(replay)

    def finish(self, key: str) -> Ref:
        """End stream ``key``: flush what is left, close subscribers, record and return its Ref."""
        key = self._key(key)
        stream = self._stream(key, create=False)
        if stream is None:
            return self.ref(key)
        stream.close()
        if stream.error is not None:
            raise StorageError(f"stream {key!r} failed: {stream.error}") from stream.error
        with self._lock:
            self._streams.pop(key, None)
        ref = self._final_ref(key, stream)
        self._record(ref)
        return ref

    def _final_ref(self, key: str, stream: _Stream) -> Ref:
        folder = stream.folder
        meta: dict[str, Any] = dict(self._metadata.get(key, {}))
        meta.update(items=stream.items_seen, parts=len(folder.parts))
        checksum = None
        size = 0
        if folder.folder is not None and folder.folder.exists():
            meta["path"] = str(folder.folder)
            checksum = tree_checksum(folder.folder)
            size = folder.size_bytes()
        kind = values.JSON if stream.kind in (None, ROW) else str(stream.kind)
        key_id = self.encryption.key_id if self.encryption is not None and folder.parts else None
        return Ref(self.uri(key), key, kind, self.format_name, size, checksum, meta, key_id=key_id)

    def _record_part(self, stream: _Stream, part: Any) -> None:
        if self.recorder is None or stream.folder.folder is None:
            return
        path = stream.folder.folder / part.file
        kind = values.JSON if stream.kind == ROW else str(stream.kind)
        ref = Ref(
            uri=file_uri(path),
            key=f"{stream.key}.{Path(part.file).stem}",
            kind=kind,
            format="arrow",
            size_bytes=part.size_bytes,
            checksum=part.checksum,
            metadata={"stream": self.uri(stream.key), "rows": part.rows, "items": part.item_count},
            key_id=self.encryption.key_id if self.encryption is not None else None,
        )
        try:
            self._record(ref)
        except Exception as exc:  # the part is durable; a recorder failure must not stop the stream
            log.error("stream %r: recording part %s failed: %s", stream.key, part.file, exc)

    # ---------------------------------------------------------------- readers

    def _sources(self, key: str) -> tuple[Optional[StreamFolder], list[Any], list[Any]]:
        stream = self._stream(key, create=False)
        if stream is not None:
            parts, tail = stream.snapshot()
            return stream.folder, parts, tail
        folder = self._load(key)
        if folder is None:
            raise self._missing(key)
        return folder, list(folder.parts), []

    def items(self, ref: Ref | str) -> Iterator[Any]:
        """Every item received so far (persisted parts, then the unflushed tail), in order."""
        key = self._key(ref)
        folder, parts, tail = self._sources(key)
        assert folder is not None
        for part in parts:
            yield from split_items(folder.read_part(part), folder.kind or ROW, part.items)
        yield from tail

    def get(self, ref: Ref | str) -> Any:
        """The whole stream so far as one value: a pyarrow Table (for tables and batches), a
        polars or pandas DataFrame, or a list of dict rows."""
        self._check_open()
        key = self._key(ref)
        folder, parts, tail = self._sources(key)
        assert folder is not None
        stream = self._stream(key, create=False)
        kind = folder.kind or (stream.kind if stream is not None else None) or ROW
        tables = [folder.read_part(p) for p in parts]
        schema = folder.schema
        if tail:
            table, _ = to_batches(tail, kind, schema if kind == ROW else None)
            schema = schema or table.schema
            tables.append(table)
        return combine(tables, kind, schema)

    def ref(self, key: str) -> Ref:
        """The Ref of a finished (or persisted) stream."""
        key = self._key(key)
        stream = self._stream(key, create=False)
        if stream is not None:
            return self._final_ref(key, stream)
        folder = self._load(key)
        if folder is None:
            raise self._missing(key)
        fake = _Finished(folder)
        return self._final_ref(key, fake)  # type: ignore[arg-type]

    def list(self) -> list[Ref]:
        """Refs of the live streams and of the streams persisted under ``base_path``."""
        keys = set(self._streams)
        if self.base_path is not None:
            for name in os.listdir(self.base_path):
                if name.endswith(SUFFIX) and not name.startswith("."):
                    keys.add(name[: -len(SUFFIX)])
        refs = []
        for key in sorted(keys):
            try:
                refs.append(self.ref(key))
            except UnknownKey as exc:  # a stream folder without a manifest yet
                log.debug("stream %r not listed: %s", key, exc)
        return refs

    def delete(self, ref: Ref | str) -> None:
        """Finish the stream if it runs, then remove its folder."""
        self._check_open()
        key = self._key(ref)
        stream = self._stream(key, create=False)
        if stream is not None:
            stream.close()
            with self._lock:
                self._streams.pop(key, None)
        elif self._load(key) is None:
            raise self._missing(key)
        old = self.ref(key) if stream is None else self._final_ref(key, stream)
        if self.base_path is not None and self._folder_of(key).exists():
            folder = self._folder_of(key)
            doomed = tmp_name(folder, ".phasekit-old")
            try:
                os.replace(folder, doomed)
            except OSError as exc:
                raise storage_error(exc, f"deleting stream {key!r}") from exc
            remove_path(doomed)
            destroy_keys_for(folder, was_folder=True)  # crypto-shredding of its parts
        self._forget(old)

    def stats(self) -> dict[str, Any]:
        with self._lock:
            streams = dict(self._streams)
        per = {}
        for key, s in streams.items():
            per[key] = {
                "items": s.items_seen,
                "sent": s.items_sent,
                "pending": len(s.pending),
                "flushes": s.flushes,
                "parts": len(s.folder.parts),
                "bytes_on_disk": s.folder.size_bytes(),
                "subscribers": len(s.subscribers),
                "channel": s.channel.stats(),
                "error": None if s.error is None else str(s.error),
            }
        return {
            "store": "stream",
            "streams": len(streams),
            "items": sum(p["items"] for p in per.values()),
            "bytes_in_memory": 0,
            "bytes_on_disk": sum(p["bytes_on_disk"] for p in per.values()),
            "per_stream": per,
        }

    def close(self) -> None:
        """Finish every live stream (flushing its tail)."""
        for key in list(self._streams):
            try:
                self.finish(key)
            except StorageError as exc:
                log.error("closing stream %r: %s", key, exc)
        super().close()


class _Finished:
    """A persisted stream with no live thread (what readers of another process see)."""

    def __init__(self, folder: StreamFolder) -> None:
        self.folder = folder
        self.kind = folder.kind
        self.items_seen = sum(p.item_count for p in folder.parts)


def _closed_channel() -> Any:
    channel = phasekit.Channel(1)
    channel.close()
    return channel


__all__ = ["StreamStore", "Subscription"]
