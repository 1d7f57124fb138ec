"""The encrypted file format: AES-256-GCM in chunks, each bound to its item and place.

Layout: a 28-byte header, then the chunks.

* header: ``PKCRYPT`` and version byte 1, chunk size (4 bytes, big-endian), the token
  naming the item's data key (8 bytes), a random nonce prefix (8 bytes);
* chunk ``i``: ``chunk size`` bytes of plaintext (the last chunk: the rest, possibly
  none) encrypted with the item's data key under nonce ``prefix || i`` (4 bytes), with
  associated data ``header || item id || NUL || i (8 bytes) || final flag (1 byte)``,
  followed by its 16-byte tag.

So a flipped bit fails the tag of its chunk; a cut at a chunk boundary leaves a last
chunk that was not written as the final one; moving chunks changes their index; a file
moved to another item's name has the wrong item id (and another data key).

The chunks are sealed and opened by the ``AeadChunks`` of the backend in use
(:func:`phasekit.backend.backend_module`): ``phasekit._core``'s (Rust, the GIL released,
the chunks of a run spread over threads) or ``phasekit._pure``'s (the ``cryptography``
package, the reference). Both are standard AES-GCM: each reads the other's files.
"""

from __future__ import annotations

import queue
import secrets
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Callable, Optional, Protocol

import pyarrow as pa

from phasekit._optional import require
from phasekit.backend import backend_module
from phasekit.checksum import format_crc32
from phasekit.errors import CorruptDataError, InvalidArgument

MAGIC = b"PKCRYPT\x01"
CHUNK_BYTES = 1 << 20
"""Plaintext bytes per chunk (1 MiB)."""
MAX_CHUNK_BYTES = 64 << 20
BATCH_BYTES = 8 << 20
"""Plaintext bytes sealed in one backend call when writing (whole chunks, at least one)."""
TAG_BYTES = 16
TOKEN_BYTES = 8
_HEADER = struct.Struct(">8sI8s8s")
HEADER_BYTES = _HEADER.size


def aesgcm(key: bytes) -> Any:
    """An AES-GCM cipher of ``key`` (the ``cryptography`` package, extra ``crypto``): the
    key wrapping's."""
    require("cryptography", feature="encryption at rest")
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    return AESGCM(key)


def invalid_tag() -> type[Exception]:
    from cryptography.exceptions import InvalidTag

    return InvalidTag


@dataclass(frozen=True)
class Header:
    chunk_bytes: int
    token: bytes
    prefix: bytes
    raw: bytes

    @property
    def token_hex(self) -> str:
        return self.token.hex()


def new_header(token: bytes, chunk_bytes: int = CHUNK_BYTES) -> Header:
    if not 0 < chunk_bytes <= MAX_CHUNK_BYTES:
        raise InvalidArgument(f"chunk_bytes {chunk_bytes} must be in 1..{MAX_CHUNK_BYTES}")
    prefix = secrets.token_bytes(8)
    return Header(chunk_bytes, token, prefix, _HEADER.pack(MAGIC, chunk_bytes, token, prefix))


def is_sealed(head: bytes | memoryview) -> bool:
    """Whether bytes start like an encrypted phasekit file."""
    return bytes(head[: len(MAGIC)]) == MAGIC


def read_header(blob: bytes | memoryview, what: str) -> Header:
    """The header of an encrypted file; CorruptDataError when there is none."""
    if len(blob) < HEADER_BYTES or not is_sealed(blob):
        raise CorruptDataError(f"{what} is not an encrypted phasekit file (no header)")
    _magic, chunk_bytes, token, prefix = _HEADER.unpack_from(blob)
    if not 0 < chunk_bytes <= MAX_CHUNK_BYTES:
        raise CorruptDataError(f"{what}: its header is damaged (chunk size {chunk_bytes})")
    return Header(chunk_bytes, token, prefix, bytes(blob[:HEADER_BYTES]))


def _chunks(key: bytes, header: Header, item_id: str) -> Any:
    """The backend's ``AeadChunks`` of a file: its data key, its header's nonce prefix,
    and the associated data of every chunk before its index and final flag."""
    require("cryptography", feature="encryption at rest")
    ad_prefix = b"".join((header.raw, item_id.encode(), b"\x00"))
    return backend_module().AeadChunks(key, header.prefix, ad_prefix, header.chunk_bytes)


def _chunk_failed(what: str, index: int) -> CorruptDataError:
    return CorruptDataError(
        f"{what}: chunk {index} fails authentication (the file was changed, "
        f"truncated, reordered or belongs to another item)"
    )


def _batch_chunks(chunk_bytes: int) -> int:
    return max(1, BATCH_BYTES // chunk_bytes)


class Sink(Protocol):
    def write(self, data: Any, /) -> Any: ...


class _Behind:
    """Writes runs to a sink in one thread of its own, one run at a time, while the
    caller seals the next: :meth:`put` hands a run over once the previous one is written
    (so at most one is in flight); :meth:`wait` returns once it is, raising its error."""

    def __init__(self, sink: Sink) -> None:
        self._sink = sink
        self._jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._done = threading.Semaphore(0)
        self._busy = False
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="phasekit-seal-write", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (data := self._jobs.get()) is not None:
            try:
                if self._error is None:
                    self._sink.write(data)
            except BaseException as exc:  # raised again by wait(), in the caller's thread
                self._error = exc
            finally:
                self._done.release()

    def put(self, data: Any) -> None:
        self.wait()
        self._busy = True
        self._jobs.put(data)

    def wait(self) -> None:
        if self._busy:
            self._done.acquire()
            self._busy = False
        if self._error is not None:
            raise self._error

    def stop(self) -> None:
        """Wait for the run in flight (its error is dropped: the caller is failing or
        has already called :meth:`wait`) and end the thread."""
        if self._busy:
            self._done.acquire()
            self._busy = False
        self._jobs.put(None)
        self._thread.join()


class ChunkWriter:
    """Encrypts what is written to it chunk by chunk into ``sink``; :meth:`close` writes
    the final chunk. ``tell`` counts plaintext bytes (for writers that ask).

    Sealed chunks gather in an output buffer until it holds a batch
    (:data:`BATCH_BYTES` of plaintext), which is then written to ``sink`` in one call;
    so a format's writes of any sizes (a column buffer starting inside a chunk: one
    chunk sealed from a copy, the rest straight from the buffer) reach the sink as
    runs of one batch each.

    ``overlap``: each batch is written to ``sink`` by a thread of the writer's own while
    the next is sealed (into a second buffer), so the sink's work (a file's write) and
    the sealing overlap; :meth:`close` (or, after a failure, :meth:`abandon`) waits for
    it. Off, every batch is written before the next is sealed. The bytes written are the
    same either way.

    ``checksum``: the CRC-32 of the bytes for ``sink`` (:attr:`checksum`), computed in
    the caller's thread as each run is sealed (the backend's ``crc32``: Rust releases
    the GIL), so the writer's thread only writes."""

    closed = False

    def __init__(
        self,
        sink: Sink,
        key: bytes,
        item_id: str,
        header: Header,
        overlap: bool = False,
        checksum: bool = False,
    ) -> None:
        self._sink = sink
        self._crc32: Optional[Callable[[Any, int], int]] = (
            backend_module().crc32 if checksum else None
        )
        self._crc = self._crc32(header.raw, 0) if self._crc32 is not None else 0
        self._chunks = _chunks(key, header, item_id)
        self._header = header
        # the part of a chunk written so far (``_held`` bytes), filled in place: one chunk,
        # from Arrow's pool, made at the first part held
        self._part: Optional[pa.Buffer] = None
        self._held = 0
        # grown to a batch (or the largest run sealed), then reused; from Arrow's pool,
        # whose large blocks are reused rather than faulted in page by page for every
        # file. With overlap, two: one sealed into while the other is written.
        self._outs = [pa.allocate_buffer(0)] * (2 if overlap else 1)
        self._slot = 0
        self._filled = 0  # sealed bytes in the current output buffer, not yet written
        self._pending = 0  # chunks among them
        self._overlap = overlap
        self._behind: _Behind | None = None
        self._index = 0
        self._plain = 0
        sink.write(header.raw)

    def write(self, data: Any) -> int:
        """Buffer ``data``; whole chunks are sealed once more bytes follow them (the last
        chunk is sealed by :meth:`close`, as the final one). Whole chunks of a large write
        are sealed straight from it; only a chunk's part is copied into the buffer."""
        with memoryview(data) as raw, raw.cast("B") as view:
            n = view.nbytes
            if n == 0:
                return 0
            self._plain += n
            size = self._header.chunk_bytes
            start = 0
            if self._held:
                start = min(n, size - self._held)
                self._hold(view[:start])
                if start == n:  # nothing follows the held chunk yet
                    return n
                with self._held_view() as chunk:  # one whole chunk, more bytes follow
                    self.emit(chunk, final=False)
                self._held = 0
            whole = (n - start - 1) // size * size  # keep a non-empty tail back
            if whole > 0:
                self.emit_whole(view[start : start + whole])
            self._hold(view[start + whole :])
        return n

    def _hold(self, piece: memoryview) -> None:
        """Copy ``piece`` after the part of a chunk held (it fits in the chunk)."""
        if self._part is None:
            self._part = pa.allocate_buffer(self.chunk_bytes)
        end = self._held + piece.nbytes
        with memoryview(self._part) as raw, raw.cast("B") as part:
            part[self._held : end] = piece
        self._held = end

    def _held_view(self) -> memoryview:
        if self._part is None:
            return memoryview(b"")
        return memoryview(self._part)[: self._held]

    @property
    def chunk_bytes(self) -> int:
        return self._header.chunk_bytes

    def emit_whole(self, data: memoryview) -> None:
        """Encrypt whole chunks (nothing may be buffered before them), a batch of them
        (:data:`BATCH_BYTES`) per backend call."""
        step = _batch_chunks(self.chunk_bytes) * self.chunk_bytes
        for start in range(0, data.nbytes, step):
            self.emit(data[start : start + step], final=False)

    def emit(self, chunks: Any, final: bool) -> None:
        """Encrypt a run of chunks (nothing may be buffered before it): whole chunks, or
        when ``final`` the rest of the file. They join the sealed chunks not yet written;
        a full batch of them is written (``overlap``: handed to the writer's thread), the
        final run with everything before it."""
        size = self.chunk_bytes
        with memoryview(chunks) as raw, raw.cast("B") as plain:
            count = max(1, -(-plain.nbytes // size)) if final else plain.nbytes // size
            if self._pending and self._pending + count > _batch_chunks(size):
                self._hand_over()  # the run would overfill the batch: write it first
            self._seal_run(plain, count, final)
        if final:
            if self._behind is not None:
                self._behind.wait()
            self._write_filled()
        elif self._pending >= _batch_chunks(size):
            self._hand_over()

    def _seal_run(self, plain: memoryview, count: int, final: bool) -> None:
        """Seal ``count`` chunks after the sealed bytes of the current output buffer
        (grown when too small: to a batch, or just the final run of a file with nothing
        before it; with overlap the other buffer may still be being written)."""
        n = plain.nbytes + count * TAG_BYTES
        end = self._filled + n
        out = self._outs[self._slot]
        if out.size < end:
            batch = _batch_chunks(self.chunk_bytes) * (self.chunk_bytes + TAG_BYTES)
            grown = pa.allocate_buffer(end if final and not self._filled else max(end, batch))
            if self._filled:
                memoryview(grown)[: self._filled] = memoryview(out)[: self._filled]
            self._outs[self._slot] = out = grown
        with memoryview(out) as whole, whole[self._filled : end] as into:
            self._chunks.seal(self._index, final, plain, into)
            if self._crc32 is not None:
                self._crc = self._crc32(into, self._crc)
        self._index += count
        self._filled = end
        self._pending += count

    def _hand_over(self) -> None:
        """Write the sealed bytes of the current output buffer: with overlap, in the
        writer's thread (once the buffer before is written), then seal into the other."""
        if not self._overlap:
            self._write_filled()
            return
        if self._behind is None:
            self._behind = _Behind(self._sink)
        self._behind.put(memoryview(self._outs[self._slot])[: self._filled])
        self._slot = 1 - self._slot
        self._filled = self._pending = 0

    def _write_filled(self) -> None:
        if self._filled:
            with memoryview(self._outs[self._slot]) as out, out[: self._filled] as sealed:
                self._sink.write(sealed)
        self._filled = self._pending = 0

    def tell(self) -> int:
        return self._plain

    @property
    def checksum(self) -> str:
        """``crc32:xxxxxxxx`` of the bytes sealed so far, header included (once closed:
        of every byte given to the sink); for a writer made with ``checksum=True``."""
        if self._crc32 is None:
            raise InvalidArgument(
                "this ChunkWriter computes no checksum (made without checksum=True)"
            )
        return format_crc32(self._crc)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        """Seal and write the final chunk; returns once everything is written to the
        sink (the error of any write otherwise)."""
        if self.closed:
            return
        try:
            with self._held_view() as last:
                self.emit(last, final=True)
        finally:
            self.abandon()
        self._held = 0
        self.closed = True

    def abandon(self) -> None:
        """Wait for a run still being written (overlap) and end its thread; nothing more
        is written. For a caller that fails before :meth:`close`."""
        if self._behind is not None:
            self._behind.stop()
            self._behind = None


def sealed_size(plain_bytes: int, chunk_bytes: int = CHUNK_BYTES) -> int:
    """The size of the encrypted file of ``plain_bytes`` bytes."""
    chunks = max(1, -(-plain_bytes // chunk_bytes))
    return HEADER_BYTES + plain_bytes + chunks * TAG_BYTES


class _Into:
    """A sink filling a preallocated buffer."""

    def __init__(self, size: int) -> None:
        self.buf = bytearray(size)
        self.pos = 0

    def write(self, data: Any) -> None:
        n = memoryview(data).nbytes
        self.buf[self.pos : self.pos + n] = data
        self.pos += n


def seal_into(data: Any, writer: ChunkWriter) -> None:
    """Encrypt all of ``data`` (bytes-like) through ``writer`` and close it: whole chunks
    straight from ``data`` (no staging copy), the rest through :meth:`ChunkWriter.close`."""
    with memoryview(data) as raw, raw.cast("B") as view:
        size = writer.chunk_bytes
        whole = max(0, (view.nbytes - 1) // size) * size
        writer.emit_whole(view[:whole])
        writer.write(view[whole:])
    writer.close()


def seal(data: Any, key: bytes, item_id: str, header: Header) -> bytearray:
    """``data`` (bytes-like) encrypted as one file body, header included."""
    out = _Into(sealed_size(memoryview(data).nbytes, header.chunk_bytes))
    seal_into(data, ChunkWriter(out, key, item_id, header))
    return out.buf


Alloc = Callable[[int], Any]
"""Makes a writable buffer of n bytes for a plaintext (``bytearray`` by default)."""


def unseal(
    blob: Any,
    item_id: str,
    key_of: Callable[[Header], bytes],
    what: str,
    alloc: Alloc = bytearray,
) -> Any:
    """The plaintext of an encrypted file body (bytes-like, e.g. a memory map) in a
    buffer from ``alloc``; ``key_of`` gives the data key its header names.
    CorruptDataError when any chunk fails (tampered, truncated, reordered, swapped)."""
    with memoryview(blob) as raw, raw.cast("B") as view:
        header = read_header(view, what)
        key = key_of(header)
        plain = alloc(plain_size(view.nbytes, header.chunk_bytes, what))
        with (
            memoryview(plain) as plain_view,
            plain_view.cast("B") as out,
            view[HEADER_BYTES:] as body,
        ):
            _open_run(_chunks(key, header, item_id), 0, True, body, out, what)
    return plain


def _open_run(chunks: Any, first: int, last: bool, body: Any, out: Any, what: str) -> None:
    """Open encrypted chunks ``first, ...`` into ``out`` (``chunks``: see :func:`_chunks`);
    CorruptDataError naming the first chunk that fails."""
    failed = chunks.open(first, last, body, out)
    if failed is not None:
        raise _chunk_failed(what, failed)


def plain_size(sealed_bytes: int, chunk_bytes: int, what: str) -> int:
    """The plaintext size of an encrypted file of ``sealed_bytes`` bytes (header included);
    CorruptDataError when no final chunk can fit."""
    step = chunk_bytes + TAG_BYTES
    total = sealed_bytes - HEADER_BYTES
    if total < TAG_BYTES:
        raise CorruptDataError(f"{what} is truncated (no final chunk)")
    chunks = -(-total // step)
    if total - (chunks - 1) * step < TAG_BYTES:
        raise CorruptDataError(f"{what} is truncated inside chunk {chunks - 1}")
    return total - chunks * TAG_BYTES


def plain_chunks(
    read_at: Callable[[int, int], bytes],
    sealed_bytes: int,
    header: Header,
    key: bytes,
    item_id: str,
    span: tuple[int, int],
    what: str,
) -> Iterator[bytes]:
    """Plaintext bytes ``span`` (inclusive, within :func:`plain_size`) of an encrypted file,
    one decrypted chunk at a time; ``read_at(offset, n)`` reads the file's bytes. Only the
    chunks holding the span are read; each is authenticated (CorruptDataError otherwise)."""
    size = header.chunk_bytes
    step = size + TAG_BYTES
    total = sealed_bytes - HEADER_BYTES
    last_index = -(-total // step) - 1
    start, end = span
    chunks = _chunks(key, header, item_id)
    for index in range(start // size, max(end, start) // size + 1):  # empty: auth chunk 0
        offset = index * step
        blob = read_at(HEADER_BYTES + offset, min(step, total - offset))
        if len(blob) < TAG_BYTES:
            raise _chunk_failed(what, index)
        plain = bytearray(len(blob) - TAG_BYTES)
        _open_run(chunks, index, index == last_index, blob, plain, what)
        first = index * size
        lo, hi = max(start - first, 0), min(end - first + 1, len(plain))
        with memoryview(plain) as view:
            yield bytes(view[lo:hi])


def new_token() -> bytes:
    return secrets.token_bytes(TOKEN_BYTES)


__all__ = [
    "CHUNK_BYTES",
    "HEADER_BYTES",
    "MAGIC",
    "ChunkWriter",
    "Header",
    "aesgcm",
    "is_sealed",
    "new_header",
    "new_token",
    "plain_chunks",
    "plain_size",
    "read_header",
    "seal",
    "unseal",
]
