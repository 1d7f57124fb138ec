"""How a hybrid store writes a value into spill segments and reads it back.

numpy arrays are written as their raw bytes (dtype and shape kept in the index);
Arrow tables and batches, polars and pandas frames as one Arrow IPC stream; JSON-like
values as UTF-8 JSON text. With a keyring (encryption on) the value's bytes are
encoded in memory and sealed by :mod:`phasekit.crypt` under a data key of its own
before they are appended; ``load`` opens them again.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Optional

import pyarrow as pa

from phasekit.crypt import MemoryKeyring
from phasekit.errors import InvalidArgument
from phasekit.stores import values
from phasekit.stores.segments import Extent, SegmentLog, Writer

RAW = "raw"
ARROW_STREAM = "arrow-ipc-stream"
JSON_TEXT = "json"


@dataclass(frozen=True)
class Spilled:
    """The index entry of a spilled item."""

    extent: Extent
    kind: str
    codec: str
    numpy: Optional[dict[str, Any]] = None
    sealed: bool = False


def check_spillable(value: Any, kind: str) -> None:
    """Refuse at put time what could not be spilled later."""
    if kind == values.NUMPY and value.dtype.hasobject:
        raise InvalidArgument(
            f"a hybrid store cannot hold numpy arrays of dtype {value.dtype} (they cannot be "
            "spilled); use a typed dtype, or a MemoryStore"
        )


class _Sink:
    """A file-like object that pyarrow writes an IPC stream into (one segment write each)."""

    closed = False

    def __init__(self, write: Writer) -> None:
        self._write = write
        self._pos = 0

    def write(self, data: Any) -> int:
        n = memoryview(data).nbytes
        self._write(data)
        self._pos += n
        return n

    def tell(self) -> int:
        return self._pos

    def flush(self) -> None:
        pass


def _encode(value: Any, kind: str) -> tuple[Any, str]:
    """The bytes a value spills as, in memory, and their codec."""
    if kind == values.NUMPY:
        import numpy as np

        return np.ascontiguousarray(value).reshape(-1).view(np.uint8), RAW
    if kind == values.JSON:
        return json.dumps(value).encode(), JSON_TEXT
    table = values.to_arrow(value, kind)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue(), ARROW_STREAM


def spill(
    log: SegmentLog,
    owner: str,
    value: Any,
    kind: str,
    keyring: Optional[MemoryKeyring] = None,
) -> Spilled:
    """Append ``value`` to the log (encrypted with a ``keyring``); the caller drops its
    in-memory copy afterwards."""
    numpy = values.numpy_info(value) if kind == values.NUMPY else None
    if keyring is not None:
        data, codec = _encode(value, kind)
        extent = log.append(owner, [keyring.seal(owner, data)])
        return Spilled(extent, kind, codec, numpy, sealed=True)
    if kind == values.NUMPY:
        import numpy as np

        flat = np.ascontiguousarray(value).reshape(-1).view(np.uint8)
        extent = log.append(owner, [flat])
        return Spilled(extent, kind, RAW, values.numpy_info(value))
    if kind == values.JSON:
        extent = log.append(owner, [json.dumps(value).encode()])
        return Spilled(extent, kind, JSON_TEXT)
    table = values.to_arrow(value, kind)

    def produce(write: Writer) -> None:
        sink = pa.PythonFile(_Sink(write), mode="w")
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)

    return Spilled(log.append_with(owner, produce), kind, ARROW_STREAM)


def spill_tables(log: SegmentLog, owner: str, tables: Iterable[pa.Table], kind: str) -> Spilled:
    """Append the Arrow tables ``tables`` yields (the first one's schema; the others
    cast to it) as one item: one Arrow IPC stream written table by table, so only the
    table being written is in memory. Not for a keyring (sealing needs the bytes whole).
    """

    def produce(write: Writer) -> None:
        sink = pa.PythonFile(_Sink(write), mode="w")
        writer: Optional[pa.ipc.RecordBatchStreamWriter] = None
        schema: Optional[pa.Schema] = None
        for table in tables:
            if writer is None or schema is None:
                schema = table.schema
                writer = pa.ipc.new_stream(sink, schema)
            writer.write_table(table if table.schema == schema else table.cast(schema))
        if writer is None:
            raise InvalidArgument(f"spilled item {owner!r}: no tables to write")
        writer.close()

    return Spilled(log.append_with(owner, produce), kind, ARROW_STREAM)


def load(
    log: SegmentLog, owner: str, entry: Spilled, keyring: Optional[MemoryKeyring] = None
) -> Any:
    """Read a spilled value back (checksum verified by the log, decrypted when sealed)."""
    buf: Any = log.read(owner, entry.extent)
    if entry.sealed:
        if keyring is None:
            raise InvalidArgument(f"spilled item {owner!r} is encrypted; its store has no keys")
        buf = keyring.open(owner, buf, f"spilled item {owner!r}")
    if entry.codec == RAW:
        import numpy as np

        assert entry.numpy is not None
        dtype = values.dtype_from_info(entry.numpy)
        return np.frombuffer(buf, dtype=dtype).reshape(tuple(entry.numpy["shape"]))
    if entry.codec == JSON_TEXT:
        return json.loads(buf)
    table = pa.ipc.open_stream(pa.py_buffer(buf)).read_all()
    return values.from_arrow(table, entry.kind)


__all__ = ["Spilled", "check_spillable", "load", "spill", "spill_tables"]
