"""The encrypted format sealed and opened by each backend: ``phasekit._core`` (Rust,
chunks spread over threads) and ``phasekit._pure`` (``cryptography``, the reference).

Both are standard AES-GCM under the same nonces and associated data, so each writes
exactly the bytes the other does and reads the other's files; a damaged chunk is the
same ``CorruptDataError`` naming the same (first) chunk.
"""

from __future__ import annotations

import os
import threading
import zlib
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any, Optional

import pyarrow as pa
import pytest

import phasekit
from phasekit.crypt import Encryption, aead, generate_key, open_encryption
from phasekit.crypt.aead import (
    HEADER_BYTES,
    TAG_BYTES,
    ChunkWriter,
    new_header,
    new_token,
    plain_chunks,
    seal,
    unseal,
)
from phasekit.errors import CorruptDataError, InvalidArgument
from phasekit.stores import FileStore, durable
from phasekit.stores import sealed as sealed_module
from phasekit.stores.durable import FileSink

CHUNK = 4096
# 40 chunks and a partial one: the Rust backend spreads them over its threads
DATA = os.urandom(40 * CHUNK + 123)
KEY = os.urandom(32)
HEADER = new_header(new_token(), chunk_bytes=CHUNK)


@pytest.fixture(autouse=True)
def _restore_backend() -> Iterator[None]:
    before = phasekit.get_backend()
    yield
    phasekit.set_backend(before)


@pytest.fixture
def enc(monkeypatch: pytest.MonkeyPatch) -> Encryption:
    monkeypatch.setenv("PK_TEST_MASTER", generate_key())
    return open_encryption("env:PK_TEST_MASTER")


def sealed_by(name: str, data: bytes = DATA) -> bytes:
    before = phasekit.set_backend(name)
    try:
        return bytes(seal(data, KEY, "item", HEADER))
    finally:
        phasekit.set_backend(before)


def opened_by(name: str, blob: bytes) -> bytes:
    before = phasekit.set_backend(name)
    try:
        return bytes(unseal(blob, "item", lambda _h: KEY, "item"))
    finally:
        phasekit.set_backend(before)


def error_of(name: str, blob: bytes) -> str:
    with pytest.raises(CorruptDataError) as caught:
        opened_by(name, blob)
    return str(caught.value)


def test_both_backends_write_the_same_bytes_and_read_each_other() -> None:
    rust, python = sealed_by("rust"), sealed_by("python")
    assert rust == python
    assert len(rust) == HEADER_BYTES + len(DATA) + 41 * TAG_BYTES
    for reader in ("rust", "python"):
        assert opened_by(reader, rust) == DATA
        assert opened_by(reader, python) == DATA


class Sink:
    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def write(self, b: bytes) -> None:
        self.parts.append(bytes(b))


@pytest.mark.parametrize("size", [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK])
def test_streamed_writes_are_the_same_bytes_on_both_backends(size: int) -> None:
    data = DATA[:size]
    streams: dict[str, bytes] = {}
    for name in ("rust", "python"):
        sink = Sink()
        phasekit.set_backend(name)
        writer = ChunkWriter(sink, KEY, "item", HEADER)
        for i in range(0, size, 1000):
            writer.write(data[i : i + 1000])
        writer.close()
        streams[name] = b"".join(sink.parts)
    assert streams["rust"] == streams["python"] == sealed_by("python", data)


class ThreadSink(Sink):
    """Records which thread wrote each part; fails on part ``fail_at`` when given."""

    def __init__(self, fail_at: int = -1) -> None:
        super().__init__()
        self.threads: list[str] = []
        self.fail_at = fail_at

    def write(self, b: bytes) -> None:
        if len(self.parts) == self.fail_at:
            raise OSError(28, "No space left on device")
        self.threads.append(threading.current_thread().name)
        super().write(b)


def _stream(writer: ChunkWriter, data: bytes, piece: int) -> None:
    for i in range(0, len(data), piece):
        writer.write(data[i : i + piece])
    writer.close()


BATCH = 4  # chunks sealed into one output buffer before it is written (patched below)


def _column_like(writer: ChunkWriter, data: bytes) -> None:
    """Writes the way an Arrow IPC file arrives: a small write, then writes of one batch
    each (so every batch starts inside a chunk), then the rest."""
    writer.write(data[:100])
    at = 100
    while at + BATCH * CHUNK <= len(data):
        writer.write(data[at : at + BATCH * CHUNK])
        at += BATCH * CHUNK
    writer.write(data[at:])
    writer.close()


@pytest.fixture(params=["rust", "python"])
def small_batches(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each backend in turn, with batches of :data:`BATCH` chunks."""
    phasekit.set_backend(request.param)
    monkeypatch.setattr(aead, "BATCH_BYTES", BATCH * CHUNK)
    return str(request.param)


@pytest.mark.usefixtures("small_batches")
def test_sealed_chunks_reach_the_sink_in_whole_batches_behind_the_sealing() -> None:
    plain, behind = ThreadSink(), ThreadSink()
    _column_like(ChunkWriter(plain, KEY, "item", HEADER), DATA)
    _column_like(ChunkWriter(behind, KEY, "item", HEADER, overlap=True), DATA)
    assert b"".join(behind.parts) == b"".join(plain.parts) == sealed_by("python")
    # each batch-sized write is sealed as one chunk from a copy (the one it starts
    # inside) and three straight from it; the four reach the sink in one write
    batch = BATCH * (CHUNK + TAG_BYTES)
    for sink in (plain, behind):
        assert [len(p) for p in sink.parts] == [HEADER_BYTES] + [batch] * 10 + [123 + TAG_BYTES]
    main = threading.current_thread().name
    assert set(plain.threads) == {main}
    # the header and the final chunk from the caller's thread, the batches between from
    # the writer's own
    assert behind.threads[0] == behind.threads[-1] == main
    assert set(behind.threads[1:-1]) == {"phasekit-seal-write"}
    assert not any(t.name == "phasekit-seal-write" for t in threading.enumerate())


@pytest.mark.usefixtures("small_batches")
def test_overlapped_writes_of_any_sizes_are_the_same_bytes() -> None:
    for piece in (1000, CHUNK, 3 * CHUNK + 7, 9 * CHUNK + 1):
        plain, behind = ThreadSink(), ThreadSink()
        _stream(ChunkWriter(plain, KEY, "item", HEADER), DATA, piece)
        _stream(ChunkWriter(behind, KEY, "item", HEADER, overlap=True), DATA, piece)
        assert b"".join(behind.parts) == b"".join(plain.parts) == sealed_by("python"), piece
        # never more than a batch in one write (a longer write is sealed a batch at a time)
        assert max(len(p) for p in behind.parts) <= BATCH * (CHUNK + TAG_BYTES), piece


@pytest.mark.usefixtures("small_batches")
@pytest.mark.parametrize("fail_at", [1, 3])
def test_an_overlapped_write_that_fails_is_raised_and_its_thread_ends(fail_at: int) -> None:
    writer = ChunkWriter(ThreadSink(fail_at), KEY, "item", HEADER, overlap=True)
    with pytest.raises(OSError, match="No space left"):
        _stream(writer, DATA, 3 * CHUNK + 7)
    writer.abandon()
    assert not any(t.name == "phasekit-seal-write" for t in threading.enumerate())


def test_a_damaged_chunk_is_the_same_error_naming_the_first_bad_chunk() -> None:
    blob = bytearray(sealed_by("rust"))
    step = CHUNK + TAG_BYTES
    for bad in (0, 17, 40):
        damaged = bytearray(blob)
        damaged[HEADER_BYTES + bad * step + 5] ^= 0x10
        damaged[HEADER_BYTES + 40 * step + 1] ^= 0x01  # the final chunk fails too
        rust, python = error_of("rust", bytes(damaged)), error_of("python", bytes(damaged))
        assert rust == python
        assert f"chunk {bad} fails authentication" in rust
    # a cut at a chunk boundary: the new last chunk was not sealed as the final one
    cut = bytes(blob[: HEADER_BYTES + 20 * step])
    assert error_of("rust", cut) == error_of("python", cut)
    assert "chunk 19 fails authentication" in error_of("rust", cut)


def test_ranges_of_either_backends_file_read_on_both() -> None:
    blob = sealed_by("rust")
    for name in ("rust", "python"):
        phasekit.set_backend(name)
        got = b"".join(
            plain_chunks(
                lambda offset, n: blob[offset : offset + n],
                len(blob),
                HEADER,
                KEY,
                "item",
                (CHUNK - 10, 3 * CHUNK + 9),
                "item",
            )
        )
        assert got == DATA[CHUNK - 10 : 3 * CHUNK + 10]


@pytest.mark.parametrize(("writer", "reader"), [("rust", "python"), ("python", "rust")])
def test_a_file_stores_file_written_by_one_backend_is_read_by_the_other(
    tmp_path: Path, enc: Encryption, writer: str, reader: str
) -> None:
    table = pa.table({"x": pa.array(range(300_000), pa.float64())})  # 2.4 MB: many chunks
    phasekit.set_backend(writer)
    ref = FileStore(tmp_path, encryption=enc).put("t", table)
    written = ref.path.read_bytes()
    phasekit.set_backend(reader)
    assert FileStore(tmp_path, encryption=enc).get("t").equals(table)
    assert ref.path.read_bytes() == written  # reading changed nothing
    # the checksum computed while writing is that of the file's (encrypted) bytes
    assert ref.checksum == f"crc32:{zlib.crc32(written):08x}"


class Trickle:
    """A raw file that takes at most 1,000 bytes per write (as an unbuffered write may)."""

    def __init__(self) -> None:
        self.data = bytearray()

    def write(self, b: memoryview) -> int:
        self.data += b[:1000]
        return min(len(b), 1000)


def test_a_file_sink_writes_everything_through_short_writes() -> None:
    raw = Trickle()
    sink = FileSink(raw)  # type: ignore[arg-type]
    assert sink.write(DATA[:2500]) == 2500
    sink.write(memoryview(DATA)[2500:])
    assert raw.data == DATA


@pytest.mark.parametrize("overlap", [False, True])
def test_a_chunk_writer_checksums_what_it_gives_its_sink(
    backend_name: str, overlap: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(aead, "BATCH_BYTES", BATCH * CHUNK)
    sink = Sink()
    writer = ChunkWriter(sink, KEY, "item", HEADER, overlap, checksum=True)
    assert writer.checksum == f"crc32:{zlib.crc32(HEADER.raw):08x}"  # the header so far
    _stream(writer, DATA, 3 * CHUNK + 7)
    assert b"".join(sink.parts) == sealed_by("python")
    assert writer.checksum == f"crc32:{zlib.crc32(b''.join(sink.parts)):08x}"
    unsummed = ChunkWriter(Sink(), KEY, "item", HEADER, overlap)
    with pytest.raises(InvalidArgument, match="computes no checksum"):
        _ = unsummed.checksum


class FileWithNo:
    """A sink's file: what was written and the descriptor it reports."""

    def __init__(self) -> None:
        self.data = bytearray()

    def write(self, b: Any) -> int:
        self.data += b
        return memoryview(b).nbytes

    def fileno(self) -> int:
        return 42


@pytest.mark.parametrize(("flush_every", "flushes"), [(None, 0), (3000, 2), (1000, 6)])
def test_a_file_sink_flushes_the_file_in_the_background_every_so_many_bytes(
    monkeypatch: pytest.MonkeyPatch, flush_every: Optional[int], flushes: int
) -> None:
    done: list[tuple[int, str]] = []
    monkeypatch.setattr(
        durable, "_fdatasync", lambda fd: done.append((fd, threading.current_thread().name))
    )
    raw = FileWithNo()
    sink = FileSink(raw, flush_every=flush_every)  # type: ignore[arg-type]
    for piece in range(0, 6000, 1000):
        sink.write(DATA[piece : piece + 1000])
        sink.finish()  # each flush ends before the next write: none is dropped
    assert raw.data == DATA[:6000]
    assert done == [(42, "phasekit-flush")] * flushes


def test_a_background_flush_that_fails_is_raised_by_finish(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def failing(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(durable, "_fdatasync", failing)
    sink = FileSink(FileWithNo(), flush_every=100)  # type: ignore[arg-type]
    sink.write(DATA[:100])
    with pytest.raises(OSError, match="Input/output error"):
        sink.finish()
    with pytest.raises(InvalidArgument, match="flush_every must be a positive byte count, got 0"):
        FileSink(FileWithNo(), flush_every=0)  # type: ignore[arg-type]


def test_an_encrypted_put_flushes_its_file_before_the_commit(
    tmp_path: Path, enc: Encryption, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sealed_module, "FLUSH_EVERY", 1 << 20)
    flushed: list[int] = []
    real = durable._fdatasync
    monkeypatch.setattr(durable, "_fdatasync", lambda fd: (flushed.append(fd), real(fd)))
    table = pa.table({"x": pa.array(range(300_000), pa.float64())})  # 2.4 MB
    store = FileStore(tmp_path / "s", encryption=enc)
    store.put("t", table)
    assert flushed  # the background flush ran on the file being written
    assert store.get("t").equals(table)


def test_aead_chunks_refuse_bad_arguments_alike(backend: ModuleType) -> None:
    ad = HEADER.raw + b"item\x00"
    chunks = backend.AeadChunks(KEY, HEADER.prefix, ad, CHUNK)
    out = bytearray(len(DATA) + 41 * TAG_BYTES)
    assert chunks.seal(0, True, DATA, out) == 41
    back = bytearray(len(DATA))
    assert chunks.open(0, True, out, back) is None
    assert back == DATA
    with pytest.raises(InvalidArgument, match="16 or 32 bytes, got 24"):
        backend.AeadChunks(KEY[:24], HEADER.prefix, ad, CHUNK)
    with pytest.raises(InvalidArgument, match="nonce prefix has 8 bytes, got 7"):
        backend.AeadChunks(KEY, HEADER.prefix[:7], ad, CHUNK)
    for size in (0, 1 << 36):
        with pytest.raises(InvalidArgument, match=rf"chunk_bytes must be in 1\.\.\d+, got {size}"):
            backend.AeadChunks(KEY, HEADER.prefix, ad, size)
    with pytest.raises(InvalidArgument, match=f"42 chunks from index {2**64 - 41} pass"):
        plain = DATA + bytes(CHUNK)
        chunks.seal(2**64 - 41, True, plain, bytearray(len(plain) + 42 * TAG_BYTES))
    last = bytearray(CHUNK + TAG_BYTES)
    assert chunks.seal(2**64 - 1, True, DATA[:CHUNK], last) == 1  # the largest index
    with pytest.raises(InvalidArgument, match="are not whole chunks of 4096 bytes"):
        chunks.seal(0, False, DATA, out)
    with pytest.raises(InvalidArgument, match=f"has {len(out) - 1} bytes, {len(out)} are needed"):
        chunks.seal(0, True, DATA, memoryview(out)[:-1])
    with pytest.raises(InvalidArgument, match="writable"):
        chunks.open(0, True, out, bytes(len(DATA)))
    with pytest.raises(InvalidArgument, match="too few for a final chunk"):
        chunks.open(0, True, out[: CHUNK + 20], bytearray(CHUNK))
    # a failing chunk is reported by index and leaves no plaintext behind
    out[5] ^= 1
    back = bytearray(b"\xff" * len(DATA))
    assert chunks.open(0, True, out, back) == 0
    assert back == bytes(len(DATA))
    # into a pyarrow buffer (what a read decrypts into)
    out[5] ^= 1
    buf = pa.allocate_buffer(len(DATA))
    assert chunks.open(0, True, out, buf) is None
    assert buf.to_pybytes() == DATA
