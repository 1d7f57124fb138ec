"""AES-GCM over runs of chunks of the encrypted file format, with the ``cryptography``
package (the reference; ``phasekit._core.AeadChunks`` is the same class in Rust).

Chunk ``i`` is sealed under the nonce ``nonce_prefix || i`` (4 bytes, big-endian, modulo
2**32) with the associated data ``ad_prefix || i (8 bytes, big-endian) || final flag``;
its 16-byte tag follows it. A run holds chunks ``first, first + 1, ...``; when ``last``,
its final chunk ends the file (it may be partial or empty), otherwise it is whole
chunks.
"""

from __future__ import annotations

import struct
from typing import Any

from phasekit._optional import require
from phasekit.errors import InvalidArgument

TAG_BYTES = 16
NONCE_PREFIX_BYTES = 8
MAX_CHUNK_BYTES = (1 << 36) - 32
"""The longest chunk GCM can seal under one nonce."""
MAX_INDEX = (1 << 64) - 1


def nonce(prefix: bytes, index: int) -> bytes:
    """The nonce of chunk ``index``."""
    return prefix + struct.pack(">I", index & 0xFFFFFFFF)


def associated_data(ad_prefix: bytes, index: int, final: bool) -> bytes:
    """The associated data of chunk ``index``."""
    return ad_prefix + struct.pack(">QB", index, final)


def _pieces(n: int, step: int, last: bool, tail: int) -> list[tuple[int, int]]:
    """(start, end) of each chunk in ``n`` bytes cut every ``step`` (``tail``: the
    fewest bytes a final piece has)."""
    if not last:
        if n % step:
            raise InvalidArgument(
                f"{n} bytes are not whole chunks of {step} bytes (only the last run of a "
                "file may end with a partial chunk)"
            )
        return [(s, s + step) for s in range(0, n, step)]
    count = max(1, -(-n // step))
    if n < (count - 1) * step + tail:
        raise InvalidArgument(
            f"{n} encrypted bytes are too few for a final chunk (at least {TAG_BYTES})"
        )
    return [(s, min(s + step, n)) for s in range(0, count * step, step)]


def _check_indexes(first: int, chunks: int) -> None:
    if first + max(chunks, 1) - 1 > MAX_INDEX:
        raise InvalidArgument(
            f"{chunks} chunks from index {first} pass the largest index (2**64 - 1)"
        )


def _check_out(out: memoryview, expected: int) -> None:
    if out.readonly:
        raise InvalidArgument(
            "out must be a writable buffer (bytearray, pyarrow.allocate_buffer, a writable "
            "memoryview), got a read-only one"
        )
    if out.nbytes != expected:
        raise InvalidArgument(f"the output buffer has {out.nbytes} bytes, {expected} are needed")


class AeadChunks:
    """AES-GCM over the chunks of one encrypted file under ``key`` (16 or 32 bytes)."""

    def __init__(self, key: bytes, nonce_prefix: bytes, ad_prefix: bytes, chunk_bytes: int):
        require("cryptography", feature="encryption at rest")
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        if len(key) not in (16, 32):
            raise InvalidArgument(f"an AES-GCM key has 16 or 32 bytes, got {len(key)}")
        if len(nonce_prefix) != NONCE_PREFIX_BYTES:
            raise InvalidArgument(
                f"the nonce prefix has {NONCE_PREFIX_BYTES} bytes, got {len(nonce_prefix)}"
            )
        if not 1 <= chunk_bytes <= MAX_CHUNK_BYTES:
            raise InvalidArgument(f"chunk_bytes must be in 1..{MAX_CHUNK_BYTES}, got {chunk_bytes}")
        self._aead = AESGCM(bytes(key))
        self._prefix = bytes(nonce_prefix)
        self._ad_prefix = bytes(ad_prefix)
        self._size = chunk_bytes

    def seal(self, first: int, last: bool, plain: Any, out: Any) -> int:
        """Seal ``plain`` as chunks ``first, first + 1, ...`` into ``out`` (exactly the
        sealed size); returns the number of chunks."""
        with memoryview(plain) as p, p.cast("B") as src, memoryview(out) as o, o.cast("B") as dst:
            pieces = _pieces(src.nbytes, self._size, last, 0)
            _check_indexes(first, len(pieces))
            _check_out(dst, src.nbytes + len(pieces) * TAG_BYTES)
            for i, (start, end) in enumerate(pieces):
                index = first + i
                at = start + i * TAG_BYTES
                self._aead.encrypt_into(
                    nonce(self._prefix, index),
                    src[start:end],
                    associated_data(self._ad_prefix, index, last and i + 1 == len(pieces)),
                    dst[at : at + end - start + TAG_BYTES],
                )
        return len(pieces)

    def open(self, first: int, last: bool, body: Any, out: Any) -> int | None:
        """Open the encrypted chunks ``first, first + 1, ...`` in ``body`` into ``out``
        (exactly the plaintext size). None when every chunk is authentic, else the index
        of the first that is not (``out`` is then zeroed)."""
        from cryptography.exceptions import InvalidTag

        step = self._size + TAG_BYTES
        with memoryview(body) as b, b.cast("B") as src, memoryview(out) as o, o.cast("B") as dst:
            pieces = _pieces(src.nbytes, step, last, TAG_BYTES)
            _check_indexes(first, len(pieces))
            _check_out(dst, src.nbytes - len(pieces) * TAG_BYTES)
            for i, (start, end) in enumerate(pieces):
                index = first + i
                at = start - i * TAG_BYTES
                try:
                    self._aead.decrypt_into(
                        nonce(self._prefix, index),
                        src[start:end],
                        associated_data(self._ad_prefix, index, last and i + 1 == len(pieces)),
                        dst[at : at + end - start - TAG_BYTES],
                    )
                except InvalidTag:
                    dst[:] = bytes(dst.nbytes)
                    return index
        return None


__all__ = ["AeadChunks", "associated_data", "nonce"]
