"""Encryption at rest: AES-256-GCM in chunks, a data key per item wrapped by a master key.

One purpose: turn bytes into an encrypted file body and back, and keep the data keys.
The stores call it when a workflow's ``encryption`` is enabled; nothing here knows about
stores, formats or the catalog. See docs/security.md.

* :mod:`~phasekit.crypt.master`: master keys (``env:NAME`` / ``file:PATH``) and key ids;
* :mod:`~phasekit.crypt.aead`: the chunked file format;
* :mod:`~phasekit.crypt.keyring`: data keys, wrapped on disk next to the files (or held
  in memory for spill segments); destroying them; re-wrapping for a new master key.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from phasekit.crypt.aead import (
    CHUNK_BYTES,
    HEADER_BYTES,
    Alloc,
    Header,
    is_sealed,
    plain_chunks,
    plain_size,
    read_header,
)
from phasekit.crypt.keyring import (
    Keyring,
    MemoryKeyring,
    RotateReport,
    destroy_keys,
    key_files,
    key_id_of_file,
    key_place,
    keys_dir,
    rewrap_tree,
)
from phasekit.crypt.master import (
    KEY_SOURCES,
    MasterKey,
    generate_key,
    key_id_of,
    load_master_key,
    parse_key_spec,
)
from phasekit.errors import CorruptDataError, InvalidArgument, KeyUnavailable
from phasekit.paths import open_nofollow


@dataclass(frozen=True)
class Encryption:
    """Encryption switched on, under ``master``: what the stores are handed."""

    master: MasterKey

    @property
    def key_id(self) -> str:
        return self.master.key_id

    def keyring(self, folder: Path) -> Keyring:
        """The data keys of the files in ``folder``."""
        return Keyring(folder, self.master)


def no_key(what: str, path: Path) -> KeyUnavailable:
    """The error of reading the encrypted file ``path`` without a key (names its key id)."""
    return KeyUnavailable(
        f"{what} is encrypted under master key {key_id_of_file(path)}; no key is "
        "configured (set encryption: {enabled: true, key: env:NAME | file:PATH})"
    )


@dataclass(frozen=True)
class SealedFile:
    """An encrypted file opened for streamed reads: its data key found, nothing decrypted
    yet. ``size``: its plaintext bytes."""

    path: Path
    name: str
    header: Header
    key: bytes = field(repr=False)
    sealed_bytes: int
    size: int
    what: str

    def chunks(self, start: int = 0, end: Optional[int] = None) -> Iterator[bytes]:
        """Plaintext bytes ``start..end`` (inclusive; default to the end), decrypted and
        authenticated one 1 MiB chunk at a time (CorruptDataError on a bad chunk)."""
        last = self.size - 1 if end is None else end
        fd = open_nofollow(self.path)
        try:
            if os.fstat(fd).st_size != self.sealed_bytes:
                raise CorruptDataError(f"{self.what}: file {self.path} changed while read")

            def read_at(offset: int, n: int) -> bytes:
                data = os.pread(fd, n, offset)
                if len(data) != n:
                    raise CorruptDataError(f"{self.what}: file {self.path} ended early")
                return data

            yield from plain_chunks(
                read_at,
                self.sealed_bytes,
                self.header,
                self.key,
                self.name,
                (start, last),
                self.what,
            )
        finally:
            os.close(fd)


class SealedReader(io.RawIOBase):
    """A read-only, seekable file of a :class:`SealedFile`'s plaintext: reads decrypt
    (and authenticate) the 1 MiB chunk they fall in, keeping the last one; nothing else
    is held in memory."""

    def __init__(self, sealed: SealedFile) -> None:
        super().__init__()
        self._sealed = sealed
        self._pos = 0
        self._chunk_index = -1
        self._chunk = b""

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._sealed.size}[whence]
        if base + offset < 0:
            raise ValueError(f"negative seek position {base + offset}")
        self._pos = base + offset
        return self._pos

    def readinto(self, buffer: Any) -> int:
        with memoryview(buffer) as raw, raw.cast("B") as out:
            done = 0
            chunk_bytes = self._sealed.header.chunk_bytes
            while done < out.nbytes and self._pos < self._sealed.size:
                index, lo = divmod(self._pos, chunk_bytes)
                if index != self._chunk_index:
                    first = index * chunk_bytes
                    last = min(first + chunk_bytes, self._sealed.size) - 1
                    self._chunk = b"".join(self._sealed.chunks(first, last))
                    self._chunk_index = index
                n = min(out.nbytes - done, len(self._chunk) - lo)
                out[done : done + n] = self._chunk[lo : lo + n]
                done += n
                self._pos += n
        return done


def open_sealed(path: Path, encryption: Optional[Encryption], what: str) -> Optional[SealedFile]:
    """``path`` opened for streamed decryption when it is an encrypted file, None when it
    is not; KeyUnavailable (naming the key id) when it is and ``encryption`` is None or
    does not hold its data key."""
    fd = open_nofollow(path)
    with os.fdopen(fd, "rb") as fh:
        head = fh.read(HEADER_BYTES)
        sealed_bytes = os.fstat(fh.fileno()).st_size
    if not is_sealed(head):
        return None
    if encryption is None:
        raise no_key(what, path)
    header = read_header(head, what)
    folder, name = key_place(path, header)
    key = encryption.keyring(folder).key_for(name, header, what)
    size = plain_size(sealed_bytes, header.chunk_bytes, what)
    return SealedFile(path, name, header, key, sealed_bytes, size, what)


def decrypt_file(
    path: Path, encryption: Optional[Encryption], what: str, alloc: Alloc = bytearray
) -> Optional[Any]:
    """The decrypted bytes of ``path`` (in a buffer from ``alloc``) when it is an
    encrypted file, None when it is not (the caller reads it as usual); KeyUnavailable
    when it is and ``encryption`` is None. Its data key is found where
    :func:`~phasekit.crypt.keyring.key_place` says."""
    fd = open_nofollow(path)
    with os.fdopen(fd, "rb") as fh:
        head = fh.read(HEADER_BYTES)
    if not is_sealed(head):
        return None
    if encryption is None:
        raise no_key(what, path)
    folder, name = key_place(path, read_header(head, what))
    return encryption.keyring(folder).read(path, what, name, alloc)


def recorded_encryption(config: Any, key_id: Optional[str] = None) -> Optional[Encryption]:
    """The encryption a run recorded in its configuration (``{"enabled", "key", ...}``,
    what ``ResolvedConfig.to_dict()`` holds under ``encryption``), its key loaded from
    the recorded source; None when the run did not encrypt. ``key_id``: the key the
    data needs, named when the key cannot be loaded."""
    block = config.get("encryption") if isinstance(config, dict) else None
    if not isinstance(block, dict) or not block.get("enabled"):
        return None
    try:
        return open_encryption(block.get("key"))
    except KeyUnavailable as exc:
        if key_id is None:
            raise
        raise KeyUnavailable(f"the data is encrypted under master key {key_id}: {exc}") from None


def open_encryption(key_spec: Optional[str], what: str = "encryption.key") -> Encryption:
    """The encryption of master key ``key_spec`` (loaded now: a missing key fails early)."""
    if key_spec is None:
        raise InvalidArgument(
            f"{what} is required when encryption is enabled (env:NAME or file:PATH)"
        )
    return Encryption(load_master_key(key_spec, what))


__all__ = [
    "CHUNK_BYTES",
    "HEADER_BYTES",
    "KEY_SOURCES",
    "Encryption",
    "Keyring",
    "MasterKey",
    "MemoryKeyring",
    "RotateReport",
    "SealedFile",
    "SealedReader",
    "decrypt_file",
    "destroy_keys",
    "generate_key",
    "is_sealed",
    "key_files",
    "key_id_of",
    "key_id_of_file",
    "keys_dir",
    "load_master_key",
    "no_key",
    "open_encryption",
    "open_sealed",
    "parse_key_spec",
    "recorded_encryption",
    "rewrap_tree",
]
