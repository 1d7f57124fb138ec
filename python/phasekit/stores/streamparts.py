"""The on-disk form of a stream: Arrow IPC part files and a manifest, in one folder.

``<base>/<key>.stream/part-000001.arrow, part-000002.arrow, ..., manifest.json``. Each
flush writes one part through ``phasekit.IpcWriter`` (atomic and fsynced), then
rewrites the manifest atomically; the manifest is the commit point, so a reader sees
exactly the parts it lists, each verified against its checksum. Item boundaries are
kept: for frames and tables the number of record batches of each item, for rows
(dicts) one row per item.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional

import pyarrow as pa

import phasekit
from phasekit.errors import CorruptDataError, InvalidArgument, StorageError, WriterError
from phasekit.stores import values
from phasekit.stores.durable import fsync_dir, storage_error, verify, write_json
from phasekit.stores.formats.base import decode_schema, encode_schema

ROW = "row"
"""Stream item kind of dicts (one row each); their Ref kind is ``json``."""
STREAM_KINDS = (*values.TABULAR, ROW)
MANIFEST = "manifest.json"
SUFFIX = ".stream"


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


class StreamFolder:
    """The parts and manifest of one stream (not thread-safe: its stream serialises calls)."""

    def __init__(self, folder: Optional[Path], key: str, compression: Optional[str]) -> None:
        self.folder = folder
        self.key = key
        self.compression = compression
        self.kind: Optional[str] = None
        self.schema: Optional[pa.Schema] = None
        self.parts: list[Part] = []
        self.finished = False

    def _path(self, name: str) -> Path:
        if self.folder is None:
            raise StorageError(f"stream {self.key!r} is not persisted (no base_path)")
        return self.folder / name

    @classmethod
    def load(cls, folder: Path, key: str) -> Optional[StreamFolder]:
        """The stream persisted in ``folder``, or None when it has no manifest."""
        path = folder / MANIFEST
        try:
            raw = json.loads(path.read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise CorruptDataError(
                f"stream {key!r}: its manifest {path} is unreadable: {exc}"
            ) from exc
        stream = cls(folder, key, raw.get("compression"))
        stream.kind = raw.get("kind")
        stream.schema = decode_schema(raw["schema"]) if raw.get("schema") else None
        stream.parts = [Part(**p) for p in raw.get("parts", [])]
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
        write_json(self._path(MANIFEST), manifest, f"writing the manifest of stream {self.key!r}")

    def write_part(self, items: list[Any], kind: str) -> Part:
        """Persist ``items`` as the next part (durable before the manifest lists it)."""
        table, counts = to_batches(items, kind, self.schema if kind == ROW else None)
        if self.schema is None:
            self.schema, self.kind = table.schema, kind
        name = f"part-{len(self.parts) + 1:06d}.arrow"
        path = self._path(name)
        if not path.parent.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            fsync_dir(path.parent.parent)
        what = f"writing part {name} of stream {self.key!r}"
        try:
            with phasekit.IpcWriter(
                str(path), schema=self.schema, compression=self.compression
            ) as w:
                for batch in table.to_batches():
                    w.write(batch)
                result = w.close()
        except WriterError as exc:
            raise storage_error(exc, what) from exc
        except InvalidArgument as exc:
            raise StorageError(f"{what} failed: {exc}") from exc
        part = Part(
            name, str(result["checksum"]), int(result["size_bytes"]), table.num_rows, counts
        )
        self._write_manifest([*self.parts, part])
        self.parts.append(part)
        return part

    def finish(self) -> None:
        self.finished = True
        if self.schema is not None or self.parts:
            self._write_manifest(self.parts)

    def read_part(self, part: Part) -> pa.Table:
        """One part's table, verified against its checksum."""
        path = self._path(part.file)
        verify(path, part.checksum, f"{self.key}/{part.file}")
        try:
            with pa.memory_map(str(path)) as source:
                return pa.ipc.open_file(source).read_all()
        except (OSError, pa.ArrowException) as exc:
            raise CorruptDataError(f"stream {self.key!r}: cannot read {path}: {exc}") from exc

    def size_bytes(self) -> int:
        return sum(p.size_bytes for p in self.parts)


__all__ = [
    "ROW",
    "STREAM_KINDS",
    "Part",
    "StreamFolder",
    "combine",
    "item_kind",
    "split_items",
    "to_batches",
]
