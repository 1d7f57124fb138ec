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
"""

from __future__ import annotations

import secrets
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Callable, Protocol

from phasekit._optional import require
from phasekit.errors import CorruptDataError, InvalidArgument

MAGIC = b"PKCRYPT\x01"
CHUNK_BYTES = 1 << 20
"""Plaintext bytes per chunk (1 MiB)."""
MAX_CHUNK_BYTES = 64 << 20
TAG_BYTES = 16
TOKEN_BYTES = 8
_HEADER = struct.Struct(">8sI8s8s")
HEADER_BYTES = _HEADER.size


def aesgcm(key: bytes) -> Any:
    """An AES-GCM cipher of ``key`` (the ``cryptography`` package, extra ``crypto``)."""
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


def _nonce(header: Header, index: int) -> bytes:
    return header.prefix + struct.pack(">I", index & 0xFFFFFFFF)


def _ad(header: Header, item: bytes, index: int, final: bool) -> bytes:
    return b"".join((header.raw, item, b"\x00", struct.pack(">QB", index, final)))


class Sink(Protocol):
    def write(self, data: Any, /) -> Any: ...


class ChunkWriter:
    """Encrypts what is written to it chunk by chunk into ``sink``; :meth:`close` writes
    the final chunk. ``tell`` counts plaintext bytes (for writers that ask)."""

    closed = False

    def __init__(self, sink: Sink, key: bytes, item_id: str, header: Header) -> None:
        self._sink = sink
        self._aead = aesgcm(key)
        self._item = item_id.encode()
        self._header = header
        self._buf = bytearray()
        self._out = bytearray(header.chunk_bytes + TAG_BYTES)  # reused for every chunk
        self._index = 0
        self._plain = 0
        sink.write(header.raw)

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        self._buf += view
        self._plain += view.nbytes
        size = self._header.chunk_bytes
        if len(self._buf) > size:
            whole = (len(self._buf) - 1) // size * size  # keep a non-empty tail back
            buf = memoryview(self._buf)
            for start in range(0, whole, size):
                self.emit(buf[start : start + size], final=False)
            buf.release()
            del self._buf[:whole]
        return view.nbytes

    @property
    def chunk_bytes(self) -> int:
        return self._header.chunk_bytes

    def emit(self, chunk: Any, final: bool) -> None:
        """Encrypt and write one chunk (nothing may be buffered before it)."""
        ad = _ad(self._header, self._item, self._index, final)
        n = memoryview(chunk).nbytes + TAG_BYTES
        with memoryview(self._out) as out:
            self._aead.encrypt_into(_nonce(self._header, self._index), chunk, ad, out[:n])
            self._sink.write(out[:n])
        self._index += 1

    def tell(self) -> int:
        return self._plain

    def flush(self) -> None:
        pass

    def close(self) -> None:
        if self.closed:
            return
        self.emit(self._buf, final=True)
        self._buf = bytearray()
        self.closed = True


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
    view = memoryview(data).cast("B")
    size = writer.chunk_bytes
    n_whole = max(0, (view.nbytes - 1) // size)
    for i in range(n_whole):
        writer.emit(view[i * size : (i + 1) * size], final=False)
    writer.write(view[n_whole * size :])
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
        aead = aesgcm(key_of(header))
        step = header.chunk_bytes + TAG_BYTES
        total = view.nbytes - HEADER_BYTES
        if total < TAG_BYTES:
            raise CorruptDataError(f"{what} is truncated (no final chunk)")
        chunks = -(-total // step)
        if total - (chunks - 1) * step < TAG_BYTES:
            raise CorruptDataError(f"{what} is truncated inside chunk {chunks - 1}")
        plain = alloc(total - chunks * TAG_BYTES)
        with (
            memoryview(plain) as plain_view,
            plain_view.cast("B") as out,
            view[HEADER_BYTES:] as body,
        ):
            _open_chunks(aead, body, out, header, item_id.encode(), what)
    return plain


def _open_chunks(
    aead: Any, body: memoryview, out: memoryview, header: Header, item: bytes, what: str
) -> None:
    bad = invalid_tag()
    step = header.chunk_bytes + TAG_BYTES
    total = body.nbytes
    start, pos, index = 0, 0, 0
    while True:
        end = min(start + step, total)
        final = end == total
        n = end - start - TAG_BYTES
        try:
            aead.decrypt_into(
                _nonce(header, index),
                body[start:end],
                _ad(header, item, index, final),
                out[pos : pos + n],
            )
        except bad:
            raise CorruptDataError(
                f"{what}: chunk {index} fails authentication (the file was changed, "
                f"truncated, reordered or belongs to another item)"
            ) from None
        if final:
            return
        start, pos, index = end, pos + n, index + 1


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
    aead = aesgcm(key)
    bad = invalid_tag()
    size = header.chunk_bytes
    step = size + TAG_BYTES
    total = sealed_bytes - HEADER_BYTES
    last_index = -(-total // step) - 1
    start, end = span
    item = item_id.encode()
    for index in range(start // size, max(end, start) // size + 1):  # empty: auth chunk 0
        offset = index * step
        blob = read_at(HEADER_BYTES + offset, min(step, total - offset))
        final = index == last_index
        try:
            plain = aead.decrypt(_nonce(header, index), blob, _ad(header, item, index, final))
        except bad:
            raise CorruptDataError(
                f"{what}: chunk {index} fails authentication (the file was changed, "
                f"truncated, reordered or belongs to another item)"
            ) from None
        first = index * size
        lo, hi = max(start - first, 0), min(end - first + 1, len(plain))
        yield plain if (lo, hi) == (0, len(plain)) else plain[lo:hi]


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
