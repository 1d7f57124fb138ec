"""What every file format provides: a path for an item, a durable write, a verified read."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import pyarrow as pa

from phasekit.errors import InvalidArgument
from phasekit.stores import values
from phasekit.stores.durable import atomic_file, file_checksum, path_size


@dataclass(frozen=True)
class WriteOptions:
    """Per-store options a format may use."""

    compression: Optional[str] = None
    partition_by: tuple[str, ...] = ()
    allow_pickle: bool = False


@dataclass(frozen=True)
class Written:
    """A durable file (or folder): where, how big, its checksum, what restoring it needs."""

    path: Path
    size_bytes: int
    checksum: str
    info: dict[str, Any] = field(default_factory=dict)


class Format:
    """One file format: ``encode`` writes a value to a path (nothing more); ``write`` does it
    by the atomic protocol; ``read`` decodes a file whose checksum was verified."""

    name: str = ""
    extension: str = ""
    kinds: tuple[str, ...] = ()
    #: The codecs this format writes; None is uncompressed. The one list config and the
    #: stores read (see :func:`phasekit.stores.formats.allowed_compressions`).
    compressions: tuple[Optional[str], ...] = (None,)
    #: What a store of this format writes when no compression is given.
    default_compression: Optional[str] = None
    #: Whether ``partition_by`` (hive-partitioned folders) is supported.
    partitioned: bool = False

    def path_for(self, folder: Path, key: str, kind: str, options: WriteOptions) -> Path:
        return folder / f"{key}{self.extension}"

    def check(self, kind: str, options: WriteOptions) -> None:
        """Refuse a value this format cannot hold (before anything is written)."""
        check_kind(self, kind)

    def groupable(self, kind: str, options: WriteOptions) -> bool:
        """Whether :meth:`encode` writes one plain file (so a group commit can batch it)."""
        return True

    def encode(self, value: Any, kind: str, path: Path, options: WriteOptions) -> dict[str, Any]:
        """Write ``value`` to ``path``; returns what restoring it needs (the manifest's info)."""
        raise NotImplementedError

    def write(self, value: Any, kind: str, path: Path, options: WriteOptions, what: str) -> Written:
        """Write ``value`` durably to ``path`` (temporary name, fsync, rename, folder fsync)."""
        self.check(kind, options)
        with atomic_file(path, what) as tmp:
            info = self.encode(value, kind, tmp, options)
        return Written(path, path_size(path), file_checksum(path), info)

    def read(self, path: Path, kind: str, info: dict[str, Any], options: WriteOptions) -> Any:
        raise NotImplementedError

    def to_bytes(self, value: Any, kind: str, options: WriteOptions) -> tuple[Any, dict[str, Any]]:
        """The file's bytes (a bytes-like object) in memory, and what restoring it needs:
        what an encrypted store seals, so no plaintext reaches the disk."""
        raise NotImplementedError

    def write_into(self, value: Any, kind: str, options: WriteOptions, sink: Any) -> dict[str, Any]:
        """Write the file's bytes into ``sink`` (an object with ``write``, ``tell``,
        ``flush`` and ``closed``: an encrypter); returns what restoring it needs. By
        default :meth:`to_bytes`, written at once; a format that can stream overrides it."""
        data, info = self.to_bytes(value, kind, options)
        sink.write(data)
        return info

    def from_bytes(self, data: Any, kind: str, info: dict[str, Any], options: WriteOptions) -> Any:
        """Inverse of :meth:`to_bytes` (``data``: the decrypted file's bytes)."""
        raise NotImplementedError


def check_kind(fmt: Format, kind: str) -> None:
    if kind not in fmt.kinds:
        raise InvalidArgument(
            f"format {fmt.name!r} cannot store a {kind} value; it stores: "
            f"{', '.join(fmt.kinds)} (use format 'arrow' or 'parquet' for any value type)"
        )


def encode_schema(schema: pa.Schema) -> str:
    return base64.b64encode(schema.serialize().to_pybytes()).decode("ascii")


def decode_schema(text: str) -> pa.Schema:
    return pa.ipc.read_schema(pa.py_buffer(base64.b64decode(text)))


def tabular_info(table: pa.Table, kind: str) -> dict[str, Any]:
    """What restoring a table from a format without Arrow types needs (the schema)."""
    info: dict[str, Any] = {"schema": encode_schema(table.schema)}
    if kind == values.NUMPY:
        info["numpy"] = values.numpy_info_from_schema(table.schema)
    return info


def restore(table: pa.Table, kind: str, info: dict[str, Any]) -> Any:
    """Cast ``table`` to the recorded schema and turn it back into the value's kind."""
    schema = decode_schema(info["schema"]) if "schema" in info else None
    if schema is not None:
        table = table.select(schema.names).cast(schema).replace_schema_metadata(schema.metadata)
    return values.from_arrow(table, kind, info.get("numpy"))


__all__ = [
    "Format",
    "WriteOptions",
    "Written",
    "check_kind",
    "decode_schema",
    "encode_schema",
    "restore",
    "tabular_info",
]
