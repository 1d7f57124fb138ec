"""Arrow IPC files written on a background thread and finished atomically (pure Python).

``write`` queues batches on a bounded queue; a background thread encodes them with
``pyarrow.ipc`` into ``.<name>.<random hex>.phasekit-tmp`` next to the final path.
``close`` waits for the thread, fsyncs, renames to the final path, fsyncs the folder
and reports the size and CRC-32 of the file.
"""

from __future__ import annotations

import logging
import os
import queue
import secrets
import threading
import weakref
from dataclasses import dataclass, field
from typing import Any, Optional

import pyarrow as pa
import pyarrow.ipc

from phasekit._pure.checksum import file_checksum
from phasekit.errors import InvalidArgument, WriterError
from phasekit.fsync import fsync_dir, fsync_file

log = logging.getLogger(__name__)

COMPRESSIONS: tuple[Optional[str], ...] = (None, "lz4", "zstd")
FORMATS: tuple[str, ...] = ("file", "stream")
TMP_SUFFIX = ".phasekit-tmp"


class _Finish:
    """Queue item: write the footer and stop."""


class _Stop:
    """Queue item: stop without finishing (abort)."""


_FINISH = _Finish()
_STOP = _Stop()


@dataclass
class _State:
    """What the background thread and the finalizer share (never the writer itself)."""

    tmp_path: str
    compression: Optional[str]
    format: str
    queue: queue.Queue[Any]
    schema: Optional[pa.Schema] = None
    error: Optional[BaseException] = None
    aborted: threading.Event = field(default_factory=threading.Event)
    thread: Optional[threading.Thread] = None


def _open_writer(state: _State, sink: pa.NativeFile) -> Any:
    options = pa.ipc.IpcWriteOptions(compression=state.compression)
    if state.format == "file":
        return pa.ipc.new_file(sink, state.schema, options=options)
    return pa.ipc.new_stream(sink, state.schema, options=options)


def _run(state: _State) -> None:
    """Background thread: write queued batches until _FINISH or _STOP."""
    sink: Optional[pa.NativeFile] = None
    writer: Any = None
    item: Any = None
    try:
        sink = pa.OSFile(state.tmp_path, "wb")
        while True:
            item = state.queue.get()
            if item is _STOP or state.aborted.is_set():
                return
            if writer is None:
                writer = _open_writer(state, sink)
            if item is _FINISH:
                writer.close()
                sink.close()
                fsync_file(state.tmp_path)
                return
            writer.write_batch(item)
    except BaseException as exc:  # surfaced at the next write() or at close()
        state.error = exc
        if item is not _FINISH:
            _drain(state)
    finally:
        if sink is not None and not sink.closed:
            sink.close()


def _drain(state: _State) -> None:
    """After a failure, discard queued batches so that writers never block."""
    while True:
        item = state.queue.get()
        if item is _FINISH or item is _STOP:
            return


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.warning("cannot remove temporary file %s: %s", path, exc)


def _abort(state: _State) -> None:
    """Stop the thread without finishing and delete the temporary file (also the finalizer)."""
    state.aborted.set()
    while True:
        try:
            state.queue.put_nowait(_STOP)
            break
        except queue.Full:
            try:
                state.queue.get_nowait()
            except queue.Empty:
                pass
    if state.thread is not None and state.thread is not threading.current_thread():
        state.thread.join()
    _remove(state.tmp_path)


def _to_batches(batch: Any) -> tuple[pa.Schema, list[pa.RecordBatch]]:
    """Any record batch or table (PyCapsule producer) as a schema and its batches."""
    if isinstance(batch, pa.RecordBatch):
        return batch.schema, [batch]
    if isinstance(batch, pa.Table):
        return batch.schema, batch.to_batches()
    try:
        if hasattr(batch, "__arrow_c_stream__"):
            reader = pa.RecordBatchReader.from_stream(batch)
            return reader.schema, list(reader)
        if hasattr(batch, "__arrow_c_array__"):
            rb = pa.record_batch(batch)
            return rb.schema, [rb]
    except (pa.ArrowException, TypeError, ValueError) as exc:
        raise InvalidArgument(f"batch: cannot import the Arrow data: {exc}") from exc
    raise InvalidArgument(
        "batch must be an Arrow record batch or table (an object with __arrow_c_stream__ "
        f"or __arrow_c_array__, e.g. pyarrow or polars), got {type(batch).__name__}"
    )


def _import_schema(schema: Any) -> pa.Schema:
    if isinstance(schema, pa.Schema):
        return schema
    if not hasattr(schema, "__arrow_c_schema__"):
        raise InvalidArgument(
            "schema must be an Arrow schema (an object with __arrow_c_schema__), "
            f"got {type(schema).__name__}"
        )
    try:
        return pa.schema(schema)
    except (pa.ArrowException, TypeError, ValueError) as exc:
        raise InvalidArgument(f"schema: cannot import the Arrow schema: {exc}") from exc


def _check_args(
    path: str, compression: Optional[str], format: str, queue_size: int, overwrite: bool
) -> None:
    if compression not in COMPRESSIONS:
        raise InvalidArgument(
            f"compression must be one of None, 'lz4', 'zstd', got {compression!r}"
        )
    if format not in FORMATS:
        raise InvalidArgument(f"format must be 'file' or 'stream', got {format!r}")
    if isinstance(queue_size, bool) or not isinstance(queue_size, int) or queue_size < 1:
        raise InvalidArgument(f"queue_size must be an integer >= 1, got {queue_size!r}")
    folder = os.path.dirname(path) or "."
    if not os.path.isdir(folder):
        raise InvalidArgument(f"path: the parent folder {folder!r} of {path!r} does not exist")
    if os.path.isdir(path):
        raise InvalidArgument(f"path: {path!r} is a folder, expected a file path")
    if not overwrite and os.path.lexists(path):
        raise InvalidArgument(f"path: {path!r} exists and overwrite=False")


def _create_tmp(path: str) -> str:
    folder, name = os.path.split(path)
    tmp = os.path.join(folder, f".{name}.{secrets.token_hex(8)}{TMP_SUFFIX}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except OSError as exc:
        raise WriterError(f"cannot create the temporary file {tmp!r}: {exc}") from exc
    os.close(fd)
    return tmp


class IpcWriter:
    """Writes Arrow record batches to an Arrow IPC file (or stream) on a background thread."""

    def __init__(
        self,
        path: Any,
        schema: Optional[Any] = None,
        compression: Optional[str] = None,
        format: str = "file",
        queue_size: int = 8,
        overwrite: bool = True,
    ) -> None:
        try:
            final = os.fsdecode(os.fspath(path))
        except TypeError as exc:
            raise InvalidArgument(f"path must be a str or os.PathLike, got {path!r}") from exc
        _check_args(final, compression, format, queue_size, overwrite)
        fixed = None if schema is None else _import_schema(schema)
        self._path = final
        self._overwrite = overwrite
        self._rows = 0
        self._batches = 0
        self._result: Optional[dict[str, Any]] = None
        self._closed = False
        self._state = _State(
            tmp_path=_create_tmp(final),
            compression=compression,
            format=format,
            queue=queue.Queue(maxsize=queue_size),
            schema=fixed,
        )
        thread = threading.Thread(
            target=_run, args=(self._state,), name="phasekit-ipc-writer", daemon=True
        )
        self._state.thread = thread
        self._finalizer = weakref.finalize(self, _abort, self._state)
        thread.start()

    @property
    def path(self) -> str:
        return self._path

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def rows_written(self) -> int:
        return self._rows

    def _raise_if_failed(self) -> None:
        err = self._state.error
        if err is not None:
            raise WriterError(f"writing {self._path!r} failed: {err}") from err

    def write(self, batch: Any) -> None:
        """Queues a record batch or table; blocks only while the queue is full."""
        if self._closed:
            raise WriterError(f"write on a closed writer ({self._path!r})")
        self._raise_if_failed()
        schema, batches = _to_batches(batch)
        state = self._state
        if state.schema is None:
            state.schema = schema
        elif not schema.equals(state.schema, check_metadata=False):
            raise InvalidArgument(
                f"batch schema does not match the writer's schema:\n{schema}\n"
                f"expected:\n{state.schema}"
            )
        for rb in batches:
            if rb.num_rows == 0:
                continue  # some producers never export empty batches: skip them everywhere
            state.queue.put(rb)
            self._rows += rb.num_rows
            self._batches += 1

    def close(self) -> dict[str, Any]:
        """Finishes the file, renames it to ``path`` and returns its description."""
        if self._result is not None:
            return dict(self._result)
        if self._closed:
            raise WriterError(f"close on an aborted or failed writer ({self._path!r})")
        state = self._state
        if state.schema is None:
            self.abort()
            raise InvalidArgument(
                f"nothing to write to {self._path!r}: no batch was written and no schema given"
            )
        state.queue.put(_FINISH)
        assert state.thread is not None
        state.thread.join()
        try:
            self._raise_if_failed()
            self._publish()
        except BaseException:
            self.abort()
            raise
        self._finalizer.detach()
        self._closed = True
        self._result = {
            "path": self._path,
            "size_bytes": os.stat(self._path).st_size,
            "checksum": file_checksum(self._path),
            "rows": self._rows,
            "batches": self._batches,
        }
        return dict(self._result)

    def _publish(self) -> None:
        """Renames the finished temporary file to the final path and fsyncs the folder."""
        if not self._overwrite and os.path.lexists(self._path):
            raise WriterError(f"{self._path!r} appeared while writing and overwrite=False")
        try:
            os.replace(self._state.tmp_path, self._path)
        except OSError as exc:
            raise WriterError(f"cannot rename the temporary file to {self._path!r}: {exc}") from exc
        fsync_dir(os.path.dirname(self._path) or ".", best_effort=True)

    def abort(self) -> None:
        """Stops writing and deletes the temporary file; no file appears at ``path``."""
        if self._result is not None:
            return
        self._closed = True
        self._finalizer()

    def __enter__(self) -> IpcWriter:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"IpcWriter({self._path!r}, {state}, rows_written={self._rows})"
