"""An item's bytes as a stream: tables re-encoded batch by batch, files by byte ranges.

Nothing here reads a whole file into memory: an Arrow IPC file is memory-mapped and
sliced, Parquet is read by row groups, CSV by blocks; each output chunk is one encoded
batch of about :data:`CHUNK_BYTES`.
"""

from __future__ import annotations

import asyncio
import io
import os
import re
import zlib
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from phasekit.catalog.encode import to_json
from phasekit.checksum import format_crc32, tree_files
from phasekit.errors import CatalogError, CorruptDataError, InvalidArgument, UnsafePath
from phasekit.paths import contained, open_nofollow
from phasekit.serve.maps import MappedFile, ServedMaps, StreamSpan
from phasekit.serve.verified import unreadable
from phasekit.stores.partset import is_part_set, part_set_batches

OUTPUT_FORMATS = ("arrow", "parquet", "csv", "json")
"""What ``/items/{id}/data`` returns; the first is the default."""
MEDIA_TYPES = {
    "arrow": "application/vnd.apache.arrow.stream",
    "parquet": "application/vnd.apache.parquet",
    "csv": "text/csv",
    "json": "application/json",
}
TABLE_SOURCES = ("arrow", "parquet", "csv")
"""Stored formats read as tables."""
CHUNK_BYTES = 4 << 20
FILE_CHUNK = 8 << 20
"""Bytes read from a file at a time (in a worker thread: fewer hand-offs to it)."""
SEND_BYTES = 1 << 20
"""Bytes given to the socket at a time (larger writes only grow the transport's buffer)."""
UVLOOP_PIECE = 4 << 20
"""Bytes of a memory-mapped file given to the socket at a time under uvloop, which keeps a
partly written view rather than copying its rest (asyncio copies it: SEND_BYTES there)."""
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


def choose_format(requested: str | None, accept: str | None) -> str:
    """``?format=`` first, else the first media type of ``Accept`` we serve, else arrow."""
    if requested is not None:
        if requested not in OUTPUT_FORMATS:
            raise InvalidArgument(
                f"format {requested!r} is not served; allowed: {', '.join(OUTPUT_FORMATS)}"
            )
        return requested
    by_media = {media: fmt for fmt, media in MEDIA_TYPES.items()}
    for part in (accept or "").split(","):
        media = part.split(";")[0].strip().lower()
        if media in by_media:
            return by_media[media]
    return OUTPUT_FORMATS[0]


def parse_columns(raw: str | None) -> list[str] | None:
    if raw is None:
        return None
    names = [name.strip() for name in raw.split(",")]
    if not all(names):
        raise InvalidArgument(f"columns {raw!r} is not valid; allowed: comma-separated names")
    return names


def _check_columns(schema: pa.Schema, columns: Sequence[str] | None) -> None:
    if columns is None:
        return
    unknown = [c for c in columns if c not in schema.names]
    if unknown:
        raise InvalidArgument(
            f"column {unknown[0]!r} is not in the table; allowed: {', '.join(schema.names)}"
        )


def _sliced(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """Batches of about CHUNK_BYTES (slices share the source's buffers)."""
    for batch in batches:
        if batch.num_rows == 0:
            continue
        per_row = max(1, batch.nbytes // batch.num_rows)
        step = max(1, CHUNK_BYTES // per_row)
        for start in range(0, batch.num_rows, step):
            yield batch.slice(start, step)


class TableSource:
    """The schema and batches of a stored table (a file, a part set of Arrow files, or a
    partitioned Parquet folder);
    ``plain``: a file of its bytes read instead of ``path`` (an object's bytes, or an
    encrypted file's plaintext decrypted as it is read)."""

    def __init__(
        self,
        path: Path,
        fmt: str,
        columns: Sequence[str] | None,
        plain: pa.NativeFile | None = None,
    ) -> None:
        source: str | pa.NativeFile = str(path) if plain is None else plain
        if plain is None and is_part_set(path):  # Arrow parts, each verified as it is read
            self.schema, self._batches = part_set_batches(path, f"folder {path}", columns)
        elif plain is None and path.is_dir():
            self.schema, self._batches = _dataset(path, columns)
        else:
            self.schema, self._batches = _open(source, fmt, columns)

    def batches(self, limit: int | None) -> Iterator[pa.RecordBatch]:
        left = limit
        for batch in _sliced(self._batches):
            if left is not None:
                if left <= 0:
                    return
                batch = batch.slice(0, left)
                left -= batch.num_rows
            yield batch


def folder_files(path: Path, label: str) -> list[tuple[str, Path]]:
    """``(relative path, path)`` of the files of a folder item, each checked to lie in it
    and not to be a symbolic link (CatalogError naming the item otherwise)."""
    found = []
    for rel, full in tree_files(path):
        try:
            found.append((rel, contained(full, path, f"{label}: file")))
        except UnsafePath as exc:
            raise CatalogError(str(exc)) from None
    return found


def _dataset(
    path: Path, columns: Sequence[str] | None
) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
    import pyarrow.dataset as ds

    files = [
        str(full)
        for rel, full in folder_files(path, f"folder {path}")
        if not any(part.startswith((".", "_")) for part in rel.split("/"))
    ]
    dataset = ds.dataset(files, format="parquet", partitioning="hive", partition_base_dir=str(path))
    _check_columns(dataset.schema, columns)
    schema = dataset.schema
    if columns is not None:
        schema = pa.schema([dataset.schema.field(c) for c in columns])
    return schema, iter(dataset.to_batches(columns=list(columns) if columns else None))


def _open(
    source: str | pa.NativeFile, fmt: str, columns: Sequence[str] | None
) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
    if fmt == "arrow":
        return _arrow(source, columns)
    if fmt == "parquet":
        import pyarrow.parquet as pq

        pfile = pq.ParquetFile(source)
        schema = pfile.schema_arrow
        _check_columns(schema, columns)
        if columns is not None:
            schema = pa.schema([schema.field(c) for c in columns])
        return schema, pfile.iter_batches(batch_size=65536, columns=columns)
    import pyarrow.csv as pcsv

    reader = pcsv.open_csv(source)
    _check_columns(reader.schema, columns)
    return _projected(reader.schema, iter(reader), columns)


def _projected(
    schema: pa.Schema, batches: Iterator[pa.RecordBatch], columns: Sequence[str] | None
) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
    if columns is None:
        return schema, batches
    return pa.schema([schema.field(c) for c in columns]), (b.select(columns) for b in batches)


def _arrow(
    where: str | pa.NativeFile, columns: Sequence[str] | None
) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
    source = pa.memory_map(where, "r") if isinstance(where, str) else where
    try:
        reader = pa.ipc.open_file(source)
    except pa.ArrowInvalid:
        source.seek(0)
        stream = pa.ipc.open_stream(source)
        _check_columns(stream.schema, columns)
        return _projected(stream.schema, iter(stream), columns)
    _check_columns(reader.schema, columns)
    batches = (reader.get_batch(i) for i in range(reader.num_record_batches))
    return _projected(reader.schema, batches, columns)


def open_table(
    path: Path, fmt: str, columns: Sequence[str] | None, plain: pa.NativeFile | None, label: str
) -> TableSource:
    """A :class:`TableSource`; a file that does not read as ``fmt`` is CorruptDataError."""
    try:
        return TableSource(path, fmt, columns, plain)
    except (pa.ArrowException, OSError) as exc:
        raise CorruptDataError(f"{label}: file {path} does not read as {fmt}: {exc}") from None


class _Sink(io.RawIOBase):
    """A write-only file whose written bytes are taken out after each batch."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        chunk = bytes(data)
        self.parts.append(chunk)
        return len(chunk)

    def take(self) -> bytes:
        out = self.parts[0] if len(self.parts) == 1 else b"".join(self.parts)
        self.parts.clear()
        return out


def encode(fmt: str, source: TableSource, limit: int | None) -> Iterator[bytes]:
    """The table in ``fmt``, one chunk per batch. The writer is made before anything is
    sent: a schema ``fmt`` cannot hold is an InvalidArgument (400), not a cut-short body."""
    if fmt == "json":
        return _json(source, limit)
    sink = _Sink()
    out = pa.PythonFile(sink, mode="w")
    try:
        writer = _writer(fmt, out, source.schema)
    except pa.ArrowException as exc:
        raise InvalidArgument(
            f"format {fmt} cannot hold this table ({exc}); allowed: "
            f"{', '.join(f for f in OUTPUT_FORMATS if f != fmt)}"
        ) from None
    return _written(sink, writer, source, limit)


def _written(sink: _Sink, writer: Any, source: TableSource, limit: int | None) -> Iterator[bytes]:
    for batch in source.batches(limit):
        writer.write_batch(batch)
        chunk = sink.take()
        if chunk:
            yield chunk
    writer.close()
    tail = sink.take()
    if tail:
        yield tail


def _writer(fmt: str, out: pa.NativeFile, schema: pa.Schema) -> Any:
    if fmt == "arrow":
        return pa.ipc.new_stream(out, schema)
    if fmt == "parquet":
        import pyarrow.parquet as pq

        return pq.ParquetWriter(out, schema, compression="zstd", write_page_checksum=True)
    import pyarrow.csv as pcsv

    return pcsv.CSVWriter(out, schema)


def _json(source: TableSource, limit: int | None) -> Iterator[bytes]:
    """A JSON array of row objects (non-finite floats as null)."""
    yield b"["
    first = True
    for batch in source.batches(limit):
        body = to_json(batch.to_pylist(), "row")[1:-1]
        if body:
            yield (b"" if first else b",") + body.encode()
            first = False
    yield b"]"


def inline_json(value: Any) -> bytes:
    return to_json(value, "inline_data").encode()


def parse_range(header: str, size: int) -> tuple[int, int] | None:
    """``(start, end)`` (inclusive) of a single ``bytes=`` range; ``None`` when not satisfiable.

    Raises InvalidArgument for a malformed header or several ranges.
    """
    match = _RANGE.match(header.strip())
    if match is None:
        raise InvalidArgument(
            f"Range {header[:80]!r} is not supported; allowed: one range, bytes=START-END, "
            "bytes=START- or bytes=-SUFFIX"
        )
    first, last = match.group(1), match.group(2)
    if not first and not last:
        raise InvalidArgument(f"Range {header!r} names no bytes; allowed: bytes=START-END")
    if not first:
        length = int(last)
        if length == 0 or size == 0:
            return None
        return max(0, size - length), size - 1
    start = int(first)
    end = min(int(last), size - 1) if last else size - 1
    if start >= size or end < start:
        return None
    return start, end


def file_chunks(
    path: Path, start: int, end: int, checksum: str | None, label: str
) -> Iterator[bytes]:
    """Bytes ``start..end`` (inclusive) of a file. When the whole file is sent its CRC-32 is
    checked as it goes; a mismatch raises CorruptDataError before the last chunk (the
    response is cut short)."""
    fd = open_nofollow(path)
    whole = checksum is not None and start == 0 and end == os.fstat(fd).st_size - 1
    crc = 0
    with os.fdopen(fd, "rb") as fh:
        fh.seek(start)
        left = end - start + 1
        while left > 0:
            chunk = fh.read(min(FILE_CHUNK, left))
            if not chunk:
                raise CorruptDataError(f"{label}: file {path} ended early")
            left -= len(chunk)
            if whole:
                crc = zlib.crc32(chunk, crc)
                if left == 0 and checksum is not None and format_crc32(crc) != checksum:
                    # before the last chunk: the response ends short, never looks whole
                    raise CorruptDataError(f"{label}: file {path} fails its checksum {checksum}")
            yield chunk


ARROW_FILE_MAGIC = b"ARROW1"
ARROW_EOS = b"\xff\xff\xff\xff\x00\x00\x00\x00"
"""The end-of-stream marker of the Arrow IPC stream format."""


@dataclass(frozen=True)
class StoredStream:
    """Bytes ``start..end`` (end exclusive) of a verified file followed by ``tail``: a
    stored Arrow file sent as an IPC stream. Its length is known before it is sent (the
    response has a ``Content-Length``). ``mapped`` is a memory map of the file at
    ``path``, whose ``(device, inode)`` is ``file_id``.

    Under uvloop the pieces handed to the socket are views of the map, never copies:
    uvloop gives them to the kernel as they are (a file cut short meanwhile is an error
    of the write, EFAULT). asyncio copies what the socket did not take into its own
    buffer, and a copy from a map whose file was cut short would kill the process
    (SIGBUS): there the pieces are read from the same file with ``pread`` (a cut file
    reads short, a replaced one is another inode: CorruptDataError, the response ends
    short)."""

    mapped: memoryview
    start: int
    end: int
    tail: bytes
    path: Path
    file_id: tuple[int, int]
    label: str

    @property
    def length(self) -> int:
        return self.end - self.start + len(self.tail)

    async def pieces(self) -> AsyncIterator[bytes | memoryview]:
        step = piece_bytes()
        if step == UVLOOP_PIECE:
            for start in range(self.start, self.end, step):
                yield self.mapped[start : min(start + step, self.end)]
        else:
            fd = self._reopen()
            try:
                for start in range(self.start, self.end, step):
                    yield self._read(fd, start, min(step, self.end - start))
            finally:
                os.close(fd)
        if self.tail:
            yield self.tail

    def _reopen(self) -> int:
        fd = open_nofollow(self.path)
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) != self.file_id:
            os.close(fd)
            raise CorruptDataError(f"{self.label}: file {self.path} was replaced while sent")
        return fd

    def _read(self, fd: int, start: int, n: int) -> bytes:
        piece = os.pread(fd, n, start)
        if len(piece) < n:
            raise CorruptDataError(f"{self.label}: file {self.path} was cut short while sent")
        return piece


def piece_bytes() -> int:
    """Bytes of a mapped file handed to the running event loop's transport at a time."""
    loop = type(asyncio.get_running_loop())
    return UVLOOP_PIECE if loop.__module__.partition(".")[0] == "uvloop" else SEND_BYTES


def _mapped(path: Path, end: int, label: str, maps: ServedMaps) -> MappedFile:
    """The map of ``path`` (kept in ``maps``), which must still hold at least ``end``
    bytes."""
    try:
        fd = open_nofollow(path)
        try:
            found = maps.mapped(path, fd)
        finally:
            os.close(fd)
    except OSError as exc:  # gone or replaced by something unreadable since its check
        raise unreadable(label, path, exc) from None
    if len(found.view) < end:
        raise CorruptDataError(
            f"{label}: file {path} has {len(found.view)} bytes, {end} when checked"
        )
    return found


def file_range(path: Path, start: int, end: int, label: str, maps: ServedMaps) -> StoredStream:
    """Bytes ``start..end`` (inclusive) of a file as a :class:`StoredStream` (views of a
    map of it under uvloop): a ``Range`` of ``GET /items/{id}/file``. The checksum covers
    the whole file only; the client that asked for ranges checks it over the parts."""
    found = _mapped(path, end + 1, label, maps)
    return StoredStream(found.view, start, end + 1, b"", path, found.file_id, label)


def arrow_stream_bytes(path: Path, label: str, maps: ServedMaps) -> StoredStream | None:
    """A stored Arrow file as an IPC stream, sent as stored (no decoding): a stream file
    whole; of a file-format file, the messages between its magic (and any zero padding
    after it: writers align messages to 8 or 64 bytes) and its footer, an end-of-stream
    marker added when they lack one. The span is checked to read as a stream of the
    file's schema and batch count (metadata only, through the map, once per version of
    the file); None when it does not (the caller decodes the file and reports any
    problem). The file must have been verified against its record."""
    found = _mapped(path, 0, label, maps)
    if not found.span_known:
        try:
            found.span = _stream_span(found.view)
        except pa.ArrowException:
            found.span = None
        found.span_known = True
    if found.span is None:
        return None
    start, end, has_eos = found.span
    tail = b"" if has_eos else ARROW_EOS
    return StoredStream(found.view, start, end, tail, path, found.file_id, label)


def _stream_span(mapped: memoryview) -> StreamSpan | None:
    """``(start, end, ends with EOS)`` of the IPC stream inside a stored Arrow file."""
    source = pa.BufferReader(pa.py_buffer(mapped))
    size = source.size()
    try:
        reader = pa.ipc.open_file(source)
    except pa.ArrowInvalid:
        source.seek(0)
        pa.ipc.open_stream(source).schema  # noqa: B018  it reads as a stream
        return 0, size, True
    schema, batches = reader.schema, reader.num_record_batches
    tail = source.read_at(10, size - 10)
    end = size - 10 - int.from_bytes(tail[:4], "little", signed=True)  # the footer
    if tail[4:] != ARROW_FILE_MAGIC or not 8 <= end <= size - 10:
        return None
    head = source.read_at(min(4096, end - 8), 8)
    start = 8 + (len(head) - len(head.lstrip(b"\0"))) // 8 * 8
    source.seek(start)
    body = pa.ipc.open_stream(source.read_buffer(end - start))  # zero-copy from the map
    if not body.schema.equals(schema) or sum(1 for _ in body) != batches:
        return None
    has_eos = end - start >= 8 and source.read_at(8, end - 8) == ARROW_EOS
    return start, end, has_eos


async def sent_in_pieces(chunks: Iterator[bytes]) -> AsyncIterator[bytes | memoryview]:
    """``chunks`` (made in a worker thread: they read files, decrypt, encode) as pieces of
    at most :data:`SEND_BYTES` for the socket (slices of each chunk, not copies)."""
    from starlette.concurrency import iterate_in_threadpool

    async for chunk in iterate_in_threadpool(chunks):
        if len(chunk) <= SEND_BYTES:
            yield chunk
            continue
        view = memoryview(chunk)
        for start in range(0, len(view), SEND_BYTES):
            yield view[start : start + SEND_BYTES]


__all__ = [
    "ARROW_EOS",
    "MEDIA_TYPES",
    "OUTPUT_FORMATS",
    "TABLE_SOURCES",
    "StoredStream",
    "TableSource",
    "arrow_stream_bytes",
    "choose_format",
    "encode",
    "file_chunks",
    "file_range",
    "folder_files",
    "inline_json",
    "open_table",
    "parse_columns",
    "parse_range",
    "sent_in_pieces",
]
