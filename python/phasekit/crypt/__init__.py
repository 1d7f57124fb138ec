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

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from phasekit.crypt.aead import CHUNK_BYTES, HEADER_BYTES, is_sealed
from phasekit.crypt.keyring import (
    Keyring,
    MemoryKeyring,
    RotateReport,
    destroy_keys,
    key_files,
    key_id_of_file,
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


def open_encryption(key_spec: Optional[str], what: str = "encryption.key") -> Encryption:
    """The encryption of master key ``key_spec`` (loaded now: a missing key fails early)."""
    if key_spec is None:
        from phasekit.errors import InvalidArgument

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
    "rewrap_tree",
]
