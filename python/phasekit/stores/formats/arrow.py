"""Arrow IPC files (the default format), written through ``phasekit.IpcWriter``."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import pyarrow as pa

import phasekit
from phasekit.errors import WriterError
from phasekit.stores import values
from phasekit.stores.durable import storage_error
from phasekit.stores.formats.base import WriteOptions, Written, check_kind


class ArrowFormat:
    """Every value kind, as an Arrow IPC file (``.arrow``), optionally lz4/zstd compressed."""

    name = "arrow"
    kinds: tuple[str, ...] = values.KINDS
    compressions: tuple[Optional[str], ...] = (None, "lz4", "zstd")

    def path_for(self, folder: Path, key: str, kind: str, options: WriteOptions) -> Path:
        return folder / f"{key}.arrow"

    def write(self, value: Any, kind: str, path: Path, options: WriteOptions, what: str) -> Written:
        check_kind(self, kind)
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
