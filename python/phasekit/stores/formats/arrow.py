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
        table = values.to_arrow(value, kind)
        sink = pa.BufferOutputStream()
        ipc_options = pa.ipc.IpcWriteOptions(compression=options.compression)
        with pa.ipc.new_file(sink, table.schema, options=ipc_options) as writer:
            writer.write_table(table)
        return sink.getvalue(), {}

    def from_bytes(self, data: Any, kind: str, info: dict[str, Any], options: WriteOptions) -> Any:
        table = pa.ipc.open_file(pa.py_buffer(data)).read_all()
        return values.from_arrow(table, kind, info.get("numpy"))
