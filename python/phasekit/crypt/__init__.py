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

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from phasekit.crypt.aead import CHUNK_BYTES, HEADER_BYTES, Alloc, is_sealed, read_header
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
from phasekit.errors import InvalidArgument, KeyUnavailable
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
        raise KeyUnavailable(
            f"{what} is encrypted under master key {key_id_of_file(path)}; no key is "
            "configured (set encryption: {enabled: true, key: env:NAME | file:PATH})"
        )
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
    "decrypt_file",
    "destroy_keys",
    "generate_key",
    "is_sealed",
    "key_files",
    "key_id_of",
    "key_id_of_file",
    "keys_dir",
    "load_master_key",
    "open_encryption",
    "parse_key_spec",
    "recorded_encryption",
    "rewrap_tree",
]
