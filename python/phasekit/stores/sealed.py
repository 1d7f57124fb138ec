"""Encrypted files of a file store: a format's bytes sealed by :mod:`phasekit.crypt`.

With encryption on, a format encodes the value in memory (``Format.to_bytes``), the
bytes are encrypted under a new data key and written by the atomic protocol: no
plaintext reaches the disk. The manifest's ``info`` records ``encryption`` (the master
key id and the data key's token); a read decrypts and decodes (``Format.from_bytes``).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional

import pyarrow as pa

from phasekit.crypt import Encryption, Keyring, decrypt_file
from phasekit.crypt.aead import Alloc, ChunkWriter, seal_into
from phasekit.crypt.keyring import PendingKey
from phasekit.errors import KeyUnavailable
from phasekit.paths import open_nofollow
from phasekit.stores.durable import FLUSH_EVERY, FileSink, atomic_file, path_size
from phasekit.stores.formats import Format, WriteOptions, Written

INFO_KEY = "encryption"
"""The manifest ``info`` entry of an encrypted item: ``{"key_id": ..., "token": ...}``."""


def _seal_file(
    path: Path,
    fill: Callable[[ChunkWriter], None],
    keyring: Keyring,
    name: str,
    what: str,
    pending: Optional[PendingKey] = None,
) -> tuple[str, str]:
    """A new file at ``path`` (the atomic protocol, mode 0600) of what ``fill`` writes
    into the encrypter it is given, under a new data key (``pending``: one already
    started); returns the key's token and the file's checksum (of the encrypted bytes,
    computed as they are written). The key file is written in a thread meanwhile,
    durable before the file is renamed; the file's writes overlap the sealing (and
    checksum) of the next batch (:class:`ChunkWriter`'s ``overlap``), and its pages are
    flushed to disk in the background every :data:`FLUSH_EVERY` bytes (as the plain
    path's ``IpcWriter`` does), so the commit's fsync has little left to wait for."""
    key = pending if pending is not None else keyring.start_key(name)
    try:
        with atomic_file(path, what, ready=key.wait) as tmp:
            fd = open_nofollow(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb", buffering=0) as fh:
                sink = FileSink(fh, flush_every=FLUSH_EVERY)
                writer = key.writer(name, sink, overlap=True, checksum=True)
                try:
                    fill(writer)
                    writer.close()
                finally:
                    writer.abandon()  # no write in flight once the file is closed
                    sink.finish()  # nor a flush
    except BaseException:
        key.discard()
        raise
    return key.token, str(writer.checksum)


def write_sealed(
    fmt: Format,
    value: Any,
    kind: str,
    path: Path,
    options: WriteOptions,
    what: str,
    keyring: Keyring,
) -> tuple[Written, str]:
    """Encode, encrypt and durably write ``value`` to ``path``; returns what was written
    and the token of its data key (to :meth:`Keyring.settle` once committed). The format
    writes into the encrypter (:meth:`Format.write_into`): chunks are sealed as the
    value is encoded, large buffers straight from the value's memory."""
    fmt.check(kind, options)
    info: dict[str, Any] = {}

    def fill(writer: ChunkWriter) -> None:
        info.update(fmt.write_into(value, kind, options, writer))

    token, checksum = _seal_file(path, fill, keyring, path.name, what)
    info = {**info, INFO_KEY: {"key_id": keyring.master.key_id, "token": token}}
    return Written(path, path_size(path), checksum, info), token


def sealed_key_id(info: dict[str, Any]) -> Optional[str]:
    """The master key id of an encrypted item's manifest info (None: not encrypted)."""
    entry = info.get(INFO_KEY)
    return str(entry.get("key_id")) if isinstance(entry, dict) else None


def read_sealed(
    fmt: Format,
    path: Path,
    kind: str,
    info: dict[str, Any],
    options: WriteOptions,
    keyring: Optional[Keyring],
    what: str,
) -> Any:
    """Decrypt and decode an encrypted item; KeyUnavailable without the right key."""
    if keyring is None:
        raise KeyUnavailable(
            f"{what} is encrypted under master key {sealed_key_id(info)}; no key is configured "
            "(set encryption: {enabled: true, key: env:NAME | file:PATH})"
        )
    return fmt.from_bytes(keyring.read(path, what, alloc=arrow_buffer), kind, info, options)


def arrow_buffer(size: int) -> pa.Buffer:
    """A writable Arrow buffer for a plaintext (from Arrow's pool: a large one is reused
    rather than faulted in page by page); Arrow readers use it without a copy."""
    return pa.allocate_buffer(size)


def read_plain(
    path: Path, encryption: Optional[Encryption], what: str, alloc: Alloc = bytearray
) -> Optional[Any]:
    """:func:`phasekit.crypt.decrypt_file`: the decrypted bytes of an encrypted file, None
    for a plain one."""
    return decrypt_file(path, encryption, what, alloc)


def write_sealed_bytes(
    path: Path,
    data: Any,
    encryption: Encryption,
    what: str,
    place: Optional[tuple[Path, str]] = None,
    pending: Optional[PendingKey] = None,
    settle: bool = True,
) -> tuple[int, str]:
    """Encrypt ``data`` (a file's bytes) and write it durably to ``path``; returns its size
    and checksum (of the encrypted bytes, what is on disk). ``place``: see
    :func:`phasekit.crypt.keyring.key_place` (default: beside the file); ``pending``: its
    new data key, started earlier by :func:`start_sealed_key` with the same place;
    ``settle``: destroy the file's older keys once it is written (False: the caller
    does, with :meth:`Keyring.settle`)."""
    folder, name = place or (path.parent, path.name)
    keyring = encryption.keyring(folder)
    token, checksum = _seal_file(
        path, lambda writer: seal_into(data, writer), keyring, name, what, pending
    )
    if settle:
        keyring.settle(name, token)
    return path_size(path), checksum


def start_sealed_key(
    path: Path, encryption: Encryption, place: Optional[tuple[Path, str]] = None
) -> PendingKey:
    """The new data key :func:`write_sealed_bytes` of ``path`` will use, its key file
    written from now on (in a thread): started before the bytes exist, its fsyncs overlap
    the work that makes them."""
    folder, name = place or (path.parent, path.name)
    return encryption.keyring(folder).start_key(name)


__all__ = [
    "INFO_KEY",
    "read_plain",
    "read_sealed",
    "sealed_key_id",
    "start_sealed_key",
    "write_sealed",
    "write_sealed_bytes",
]
