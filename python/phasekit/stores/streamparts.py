"""The on-disk form of a stream: Arrow IPC part files and a manifest, in one folder.

``<base>/<key>.stream/part-000001.arrow, part-000002.arrow, ..., manifest.json``. Each
flush writes one part through ``phasekit.IpcWriter`` (atomic and fsynced), then
rewrites the manifest atomically; the manifest is the commit point, so a reader sees
exactly the parts it lists, each verified against its checksum. Item boundaries are
kept: for frames and tables the number of record batches of each item, for rows
(dicts) one row per item.
"""

from __future__ import annotations

import binascii
import errno
import json
import os
import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional

import pyarrow as pa

import phasekit
from phasekit.checksum import seal, seal_problem
from phasekit.crypt import Encryption, is_sealed
from phasekit.crypt.keyring import NESTED_MANIFEST, nested_name
from phasekit.errors import (
    CorruptDataError,
    InvalidArgument,
    StorageError,
    UnsafePath,
    WriterError,
)
from phasekit.paths import (
    contained,
    make_private,
    make_private_dir,
    open_nofollow,
    read_bytes_nofollow,
)
from phasekit.stores import values
from phasekit.stores.durable import fsync_dir, storage_error, verify, write_json
from phasekit.stores.formats.arrow import ArrowFormat, ipc_file_bytes
from phasekit.stores.formats.base import decode_schema, encode_schema
from phasekit.stores.sealed import arrow_buffer, read_plain, write_sealed_bytes

ROW = "row"
"""Stream item kind of dicts (one row each); their Ref kind is ``json``."""
STREAM_KINDS = (*values.TABULAR, ROW)
MANIFEST = NESTED_MANIFEST
"""A stream folder's manifest (its name owned by the keyring, which keeps its key)."""
SUFFIX = ".stream"
PART_NAME = re.compile(r"part-[0-9]{6}\.arrow")
"""The only file names a stream manifest may list as parts."""


@dataclass(frozen=True)
class Part:
    """One durable part file of a stream."""

    file: str
    checksum: str
    size_bytes: int
    rows: int
    items: Optional[list[int]]
    """Record batches per item (tables and frames), or None when each row is an item."""

    @property
    def item_count(self) -> int:
        return self.rows if self.items is None else len(self.items)


def part_of(raw: Any) -> Part:
    """One manifest entry as a :class:`Part`; ``ValueError`` for anything else."""
    if not isinstance(raw, dict):
        raise ValueError(f"part {raw!r} is not an object")
    part = Part(**raw)
    if not isinstance(part.file, str) or not PART_NAME.fullmatch(part.file):
        raise UnsafePath(
            f"part file {part.file!r} is not a part name (part-NNNNNN.arrow in the stream folder)"
        )
    ints = (part.size_bytes, part.rows)
    if not all(type(n) is int and n >= 0 for n in ints) or not isinstance(part.checksum, str):
        raise ValueError(f"part {part.file}: size_bytes, rows or checksum of the wrong type")
    if part.items is not None and not (
        isinstance(part.items, list) and all(type(n) is int and n >= 0 for n in part.items)
    ):
        raise ValueError(f"part {part.file}: items is not a list of counts")
    return part


def item_kind(value: Any) -> str:
    """The stream kind of an item; ``InvalidArgument`` for values a stream cannot carry."""
    if isinstance(value, dict):
        problem = values.json_problem(value)
        if problem is not None:
            raise InvalidArgument(f"a stream row must be JSON-like: {problem}")
        return ROW
    kind = values.kind_of(value, allow_object=True)
    if kind not in values.TABULAR:
        raise InvalidArgument(
            f"a stream carries tables, record batches, polars or pandas frames or dict rows, "
            f"got a {kind}"
        )
    return kind


def _item_table(item: Any, kind: str) -> pa.Table:
    if kind == values.PANDAS:
        import pandas as pd

        # a RangeIndex lives in the schema metadata, which a part shares across items
        keep = not isinstance(item.index, pd.RangeIndex)
        return pa.Table.from_pandas(item, preserve_index=keep)
    return values.to_arrow(item, kind)


def to_batches(
    items: list[Any], kind: str, schema: Optional[pa.Schema]
) -> tuple[pa.Table, Optional[list[int]]]:
    """Items as one table (no copy for Arrow data) and the batches per item."""
    if kind == ROW:
        try:
            table = pa.Table.from_pylist(items, schema=schema)
        except (pa.ArrowException, TypeError, ValueError) as exc:
            raise InvalidArgument(
                f"stream rows do not fit the stream's schema {schema}: {exc}"
            ) from exc
        return table.combine_chunks(), None
    tables = [_item_table(item, kind) for item in items]
    counts = [len(t.to_batches()) for t in tables]
    table = pa.concat_tables(tables) if tables else schema.empty_table()  # type: ignore[union-attr]
    return table, counts


def split_items(table: pa.Table, kind: str, items: Optional[list[int]]) -> Iterator[Any]:
    """Inverse of :func:`to_batches` for one part."""
    if kind == ROW or items is None:
        yield from table.to_pylist()
        return
    batches = table.to_batches()
    start = 0
    for n in items:
        group = pa.Table.from_batches(batches[start : start + n], schema=table.schema)
        start += n
        yield values.from_arrow(group, kind)


def combine(tables: list[pa.Table], kind: str, schema: Optional[pa.Schema]) -> Any:
    """Everything as one value: Table (for tables and batches), the frame type, or rows."""
    if schema is None:
        return [] if kind == ROW else pa.table({})
    table = pa.concat_tables(tables) if tables else schema.empty_table()
    if kind == ROW:
        return table.to_pylist()
    return values.from_arrow(table, values.TABLE if kind == values.BATCH else kind)


RESERVE = ".reserve"
"""The stream folder's reserve file: disk space held for acknowledged, unflushed items."""
RESERVE_BASE = 64 * 1024
"""Bytes a reserve always holds beyond its items (IPC framing, the manifest's copy)."""
RESERVE_PER_ITEM = 512
"""Bytes held per unflushed item beyond twice its size (a record batch's own metadata)."""


def reserve_for(item_bytes: int, items: int, manifest_bytes: int) -> int:
    """Bytes the reserve holds so that ``items`` unflushed items of ``item_bytes`` (by
    ``phasekit.size_of``) can be written as a part and listed by the manifest."""
    return RESERVE_BASE + 2 * manifest_bytes + 2 * item_bytes + RESERVE_PER_ITEM * items


class Reserve:
    """A preallocated hidden file in the stream folder whose blocks are given back to the
    filesystem just before a part is written: space for acknowledged items is held from
    the moment ``put`` returns, so a full disk refuses new items instead of losing
    accepted ones."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.size = 0
        self._fd: Optional[int] = None

    def _open(self) -> int:
        if self._fd is None:
            make_private_dir(self.path.parent)
            self._fd = open_nofollow(self.path, os.O_RDWR | os.O_CREAT)
            os.ftruncate(self._fd, 0)
        return self._fd

    def resize(self, size: int) -> None:
        """Hold exactly ``size`` bytes; ``OSError`` (ENOSPC) when they cannot be had (the
        reserve then keeps what it held)."""
        fd = self._open()
        if size < self.size:
            os.ftruncate(fd, size)
        elif size > self.size:
            try:
                _allocate(fd, self.size, size)
            except OSError:
                os.ftruncate(fd, self.size)
                raise
        self.size = size

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self.size = 0
        self.path.unlink(missing_ok=True)


def _allocate(fd: int, start: int, end: int) -> None:
    """Allocate the blocks of ``[start, end)`` (``posix_fallocate``, else zeros)."""
    fallocate = getattr(os, "posix_fallocate", None)
    if fallocate is not None:
        try:
            fallocate(fd, start, end - start)
            return
        except OSError as exc:
            if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                raise
    chunk = bytes(1 << 20)
    pos = start
    while pos < end:
        pos += os.pwrite(fd, chunk[: min(len(chunk), end - pos)], pos)
    os.fsync(fd)


def write_arrow_part(
    path: Path, table: pa.Table, schema: pa.Schema, compression: Optional[str], what: str
) -> dict[str, Any]:
    """Write ``table`` as the Arrow IPC file ``path`` through ``phasekit.IpcWriter``
    (atomic, fsynced, private); returns the writer's report (``checksum``,
    ``size_bytes``, ``rows``, ``batches``). StorageError saying ``what`` failed."""
    try:
        with phasekit.IpcWriter(str(path), schema=schema, compression=compression) as w:
            for batch in table.to_batches():
                w.write(batch)
            result: dict[str, Any] = w.close()
        make_private(path)
    except WriterError as exc:
        raise storage_error(exc, what) from exc
    except InvalidArgument as exc:
        raise StorageError(f"{what} failed: {exc}") from exc
    except OSError as exc:  # the mode of the finished part
        raise storage_error(exc, what) from exc
    return result


class StreamFolder:
    """The parts and manifest of one stream (not thread-safe: its stream serialises calls)."""

    def __init__(
        self,
        folder: Optional[Path],
        key: str,
        compression: Optional[str],
        encryption: Optional[Encryption] = None,
    ) -> None:
        self.folder = folder
        self.key = key
        self.compression = compression
        self.encryption = encryption
        self.kind: Optional[str] = None
        self.schema: Optional[pa.Schema] = None
        self.parts: list[Part] = []
        self.finished = False
        self.manifest_bytes = 0

    def _path(self, name: str) -> Path:
        """A file of this stream's folder, checked to lie in it (no link, no '..')."""
        if self.folder is None:
            raise StorageError(f"stream {self.key!r} is not persisted (no base_path)")
        return contained(name, self.folder, f"file {name!r} of stream {self.key!r}")

    @classmethod
    def load(
        cls, folder: Path, key: str, encryption: Optional[Encryption] = None
    ) -> Optional[StreamFolder]:
        """The stream persisted in ``folder``, or None when it has no manifest.

        A manifest that is not what this module writes (a part outside the folder, a
        field of the wrong type, a schema that does not decode) raises
        :class:`CorruptDataError` naming the stream and the file.
        """
        path = contained(MANIFEST, folder, f"the manifest of stream {key!r}")
        try:
            body = read_bytes_nofollow(path)
            if is_sealed(body):  # encrypted (KeyUnavailable without the key)
                plain = read_plain(path, encryption, f"the manifest of stream {key!r}")
                body = body if plain is None else bytes(plain)
            raw = json.loads(body)
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise CorruptDataError(
                f"stream {key!r}: its manifest {path} is unreadable: {exc}"
            ) from exc
        try:
            stream = cls._from_manifest(raw, folder, key)
            stream.encryption = encryption
            return stream
        except (
            KeyError,
            TypeError,
            ValueError,
            binascii.Error,
            pa.ArrowException,
        ) as exc:
            if isinstance(exc, UnsafePath):
                raise
            raise CorruptDataError(
                f"stream {key!r}: its manifest {path} is not a valid stream manifest: {exc}"
            ) from exc

    @classmethod
    def _from_manifest(cls, raw: Any, folder: Path, key: str) -> StreamFolder:
        problem = seal_problem(raw)
        if problem is not None:
            raise ValueError(problem)
        compression = raw.get("compression")
        if compression not in ArrowFormat.compressions:
            raise ValueError(f"compression {compression!r}")
        stream = cls(folder, key, compression)
        kind = raw.get("kind")
        if kind is not None and kind not in STREAM_KINDS:
            raise ValueError(f"kind {kind!r}")
        stream.kind = kind
        schema = raw.get("schema")
        if schema is not None and not isinstance(schema, str):
            raise ValueError("schema is not a string")
        stream.schema = decode_schema(schema) if schema else None
        parts = raw.get("parts", [])
        if not isinstance(parts, list):
            raise ValueError("parts is not a list")
        stream.parts = [part_of(p) for p in parts]
        for part in stream.parts:
            stream._path(part.file)
        stream.finished = bool(raw.get("finished"))
        return stream

    def _write_manifest(self, parts: list[Part]) -> None:
        manifest = {
            "version": 1,
            "key": self.key,
            "kind": self.kind,
            "compression": self.compression,
            "schema": encode_schema(self.schema) if self.schema is not None else None,
            "finished": self.finished,
            "parts": [asdict(p) for p in parts],
        }
        manifest = seal(manifest)
        text = json.dumps(manifest, indent=1, sort_keys=True)
        self.manifest_bytes = len(text)
        what = f"writing the manifest of stream {self.key!r}"
        if self.encryption is None:
            write_json(self._path(MANIFEST), manifest, what)
            return
        # encrypted like the parts: its schema names the stream's columns
        place = self.key_place(MANIFEST)
        write_sealed_bytes(self._path(MANIFEST), text.encode(), self.encryption, what, place)

    def write_part(self, items: list[Any], kind: str) -> Part:
        """Persist ``items`` as the next part (durable before the manifest lists it)."""
        table, counts = to_batches(items, kind, self.schema if kind == ROW else None)
        if self.schema is None:
            self.schema, self.kind = table.schema, kind
        name = f"part-{len(self.parts) + 1:06d}.arrow"
        path = self._path(name)
        if not path.parent.exists():
            make_private_dir(path.parent)
            fsync_dir(path.parent.parent)
        what = f"writing part {name} of stream {self.key!r}"
        if self.encryption is not None:
            part = self._write_sealed(table, name, path, counts, what)
            self._write_manifest([*self.parts, part])
            self.parts.append(part)
            return part
        result = write_arrow_part(path, table, self.schema, self.compression, what)
        part = Part(
            name, str(result["checksum"]), int(result["size_bytes"]), table.num_rows, counts
        )
        self._write_manifest([*self.parts, part])
        self.parts.append(part)
        return part

    def _write_sealed(
        self, table: pa.Table, name: str, path: Path, counts: Optional[list[int]], what: str
    ) -> Part:
        """The part as an encrypted Arrow IPC file (encoded in memory, then sealed)."""
        assert self.encryption is not None and self.schema is not None
        data = ipc_file_bytes(table, self.compression, self.schema)
        size, checksum = write_sealed_bytes(path, data, self.encryption, what, self.key_place(name))
        return Part(name, checksum, size, table.num_rows, counts)

    def key_place(self, part: str) -> tuple[Path, str]:
        """Where the data key of ``part`` (or of the manifest) lives: next to the
        stream's folder (so the folder's checksum does not change when keys are
        re-wrapped), named ``<folder name>.<part>``."""
        assert self.folder is not None
        return self.folder.parent, nested_name(self.folder, part)

    def finish(self) -> None:
        self.finished = True
        if self.schema is not None or self.parts:
            self._write_manifest(self.parts)

    def read_part(self, part: Part) -> pa.Table:
        """One part's table, verified against its checksum."""
        path = self._path(part.file)
        verify(path, part.checksum, f"{self.key}/{part.file}")
        what = f"part {part.file} of stream {self.key!r}"
        try:
            plain = read_plain(path, self.encryption, what, arrow_buffer)
            if plain is not None:
                return pa.ipc.open_file(pa.py_buffer(plain)).read_all()
            with pa.memory_map(str(path)) as source:
                return pa.ipc.open_file(source).read_all()
        except (OSError, pa.ArrowException) as exc:
            raise CorruptDataError(f"stream {self.key!r}: cannot read {path}: {exc}") from exc

    def size_bytes(self) -> int:
        return sum(p.size_bytes for p in self.parts)


__all__ = [
    "RESERVE",
    "ROW",
    "STREAM_KINDS",
    "Part",
    "Reserve",
    "StreamFolder",
    "combine",
    "item_kind",
    "part_of",
    "reserve_for",
    "split_items",
    "to_batches",
    "write_arrow_part",
]
