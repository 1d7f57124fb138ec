"""Encrypted files of a file store: a format's bytes sealed by :mod:`phasekit.crypt`.

With encryption on, a format encodes the value in memory (``Format.to_bytes``), the
bytes are encrypted under a new data key and written by the atomic protocol: no
plaintext reaches the disk. The manifest's ``info`` records ``encryption`` (the master
key id and the data key's token); a read decrypts and decodes (``Format.from_bytes``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional

from phasekit.checksum import bytes_checksum
from phasekit.crypt import HEADER_BYTES, Encryption, Keyring, is_sealed, key_id_of_file
from phasekit.crypt.aead import read_header
from phasekit.crypt.keyring import key_place
from phasekit.errors import KeyUnavailable
from phasekit.paths import open_nofollow, read_bytes_nofollow
from phasekit.stores.durable import atomic_file
from phasekit.stores.formats import Format, WriteOptions, Written

INFO_KEY = "encryption"
"""The manifest ``info`` entry of an encrypted item: ``{"key_id": ..., "token": ...}``."""


def write_private(tmp: Path, data: Any) -> None:
    """Write ``data`` to a new file ``tmp`` of mode 0600."""
    fd = open_nofollow(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


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
    and the token of its data key (to :meth:`Keyring.settle` once committed)."""
    fmt.check(kind, options)
    data, info = fmt.to_bytes(value, kind, options)
    blob, token = keyring.seal(path.name, data)
    with atomic_file(path, what) as tmp:
        write_private(tmp, blob)
    info = {**info, INFO_KEY: {"key_id": keyring.master.key_id, "token": token}}
    return Written(path, len(blob), bytes_checksum(blob), info), token


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
    return fmt.from_bytes(keyring.read(path, what), kind, info, options)


def read_plain(path: Path, encryption: Optional[Encryption], what: str) -> Optional[bytes]:
    """The decrypted bytes of ``path`` when it is an encrypted file, None when it is not
    (the caller reads it as usual); KeyUnavailable when it is and no key is given. Its
    data key is found where :func:`phasekit.crypt.keyring.key_place` says."""
    fd = open_nofollow(path)
    with os.fdopen(fd, "rb") as fh:
        head = fh.read(HEADER_BYTES)
    if not is_sealed(head):
        return None
    if encryption is None:
        raise KeyUnavailable(
            f"{what} is encrypted under master key {key_id_of_file(path)}; no key is "
            "configured (set encryption: {enabled: true, key: env:NAME | file:PATH})"
        )
    folder, name = key_place(path, read_header(head, what))
    return encryption.keyring(folder).open(name, read_bytes_nofollow(path), what)


def write_sealed_bytes(
    path: Path,
    data: Any,
    encryption: Encryption,
    what: str,
    place: Optional[tuple[Path, str]] = None,
) -> tuple[int, str]:
    """Encrypt ``data`` (a file's bytes) and write it durably to ``path``; returns its size
    and checksum (of the encrypted bytes, what is on disk). ``place``: see
    :func:`phasekit.crypt.keyring.key_place` (default: beside the file)."""
    folder, name = place or (path.parent, path.name)
    keyring = encryption.keyring(folder)
    blob, token = keyring.seal(name, data)
    with atomic_file(path, what) as tmp:
        write_private(tmp, blob)
    keyring.settle(name, token)
    return len(blob), bytes_checksum(blob)


__all__ = [
    "INFO_KEY",
    "read_plain",
    "read_sealed",
    "sealed_key_id",
    "write_private",
    "write_sealed",
    "write_sealed_bytes",
]
