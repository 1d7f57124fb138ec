"""Arrow IPC files (the default format), written through ``phasekit.IpcWriter``."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import pyarrow as pa

import phasekit
from phasekit._pure.ipc import COMPRESSIONS as IPC_COMPRESSIONS
from phasekit.errors import WriterError
from phasekit.stores import values
from phasekit.stores.durable import storage_error
from phasekit.stores.formats.base import Format, WriteOptions, Written


def _write_ipc(sink: Any, table: pa.Table, schema: pa.Schema, compression: Optional[str]) -> None:
    options = pa.ipc.IpcWriteOptions(compression=compression)
    with pa.ipc.new_file(sink, schema, options=options) as writer:
        for batch in table.to_batches():
            writer.write_batch(batch)


def ipc_file_bytes(
    table: pa.Table, compression: Optional[str] = None, schema: Optional[pa.Schema] = None
) -> pa.Buffer:
    """``table`` (its batches, under ``schema``, the table's by default) as the bytes of
    an Arrow IPC file, in memory. Uncompressed, the size is measured first (nothing is
    copied) and the file written into a buffer of that size."""
    schema = schema or table.schema
    if compression is not None:
        sink = pa.BufferOutputStream()
        _write_ipc(sink, table, schema, compression)
        return sink.getvalue()
    mock = pa.MockOutputStream()
    _write_ipc(mock, table, schema, None)
    buffer = pa.allocate_buffer(mock.size())
    _write_ipc(pa.FixedSizeBufferWriter(buffer), table, schema, None)
    return buffer


class ArrowFormat(Format):
    """Every value kind, as an Arrow IPC file (``.arrow``), optionally lz4/zstd compressed.

    A single put goes through ``phasekit.IpcWriter`` (background write, atomic finish);
    a group commit (``FileStore.put_many``) encodes with pyarrow's IPC file writer and
    commits the files together. Both write the same IPC file format.
    """

    name = "arrow"
    extension = ".arrow"
    kinds: tuple[str, ...] = values.KINDS
    # the IpcWriter primitive's codecs (both backends export the same COMPRESSIONS)
    compressions: tuple[Optional[str], ...] = IPC_COMPRESSIONS

    def encode(self, value: Any, kind: str, path: Path, options: WriteOptions) -> dict[str, Any]:
        table = values.to_arrow(value, kind)
        ipc_options = pa.ipc.IpcWriteOptions(compression=options.compression)
        with pa.OSFile(str(path), "wb") as sink:
            with pa.ipc.new_file(sink, table.schema, options=ipc_options) as writer:
                writer.write_table(table)
        return {}

    def write(self, value: Any, kind: str, path: Path, options: WriteOptions, what: str) -> Written:
        self.check(kind, options)
        table = values.to_arrow(value, kind)
        try:
            with phasekit.IpcWriter(
                str(path), schema=table.schema, compression=options.compression
            ) as w:
                w.write(table)
                result = w.close()
        except WriterError as exc:
            raise storage_error(exc, what) from exc
        return Written(path, int(result["size_bytes"]), str(result["checksum"]))

    def read(self, path: Path, kind: str, info: dict[str, Any], options: WriteOptions) -> Any:
        with pa.memory_map(str(path)) as source:
            table = pa.ipc.open_file(source).read_all()
        return values.from_arrow(table, kind, info.get("numpy"))

    def to_bytes(self, value: Any, kind: str, options: WriteOptions) -> tuple[Any, dict[str, Any]]:
        return ipc_file_bytes(values.to_arrow(value, kind), options.compression), {}

    def write_into(self, value: Any, kind: str, options: WriteOptions, sink: Any) -> dict[str, Any]:
        """The IPC file written straight into ``sink``: pyarrow hands it each column
        buffer as is (no copy of the table in memory first)."""
        table = values.to_arrow(value, kind)
        _write_ipc(pa.PythonFile(sink, mode="w"), table, table.schema, options.compression)
        return {}

    def from_bytes(self, data: Any, kind: str, info: dict[str, Any], options: WriteOptions) -> Any:
        table = pa.ipc.open_file(pa.py_buffer(data)).read_all()
        return values.from_arrow(table, kind, info.get("numpy"))
