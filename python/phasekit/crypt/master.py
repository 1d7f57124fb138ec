"""Master keys: where one comes from (``env:NAME`` or ``file:PATH``), and its key id.

A master key is 32 bytes (AES-256). It is given as 64 hexadecimal digits or as the
base64 text of 32 bytes, in an environment variable or a file (a file may also hold
the 32 raw bytes). Its key id, ``pk-`` and 16 hex digits of a SHA-256 of the key, names
it in files, the catalog and error messages without revealing it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import secrets
from dataclasses import dataclass, field

from phasekit.errors import InvalidArgument, KeyUnavailable

KEY_SOURCES = ("env", "file")
"""Where a master key may come from: ``env:NAME`` or ``file:PATH`` (config validates
against this list)."""

KEY_BYTES = 32
_ID_DOMAIN = b"phasekit master key id\x00"


@dataclass(frozen=True)
class MasterKey:
    """A loaded master key; ``repr`` shows its id only."""

    key_id: str
    secret: bytes = field(repr=False)
    source: str = ""


def key_id_of(secret: bytes) -> str:
    """The public name of a master key."""
    return "pk-" + hashlib.sha256(_ID_DOMAIN + secret).hexdigest()[:16]


def parse_key_spec(spec: object, what: str = "encryption.key") -> tuple[str, str]:
    """``(source, name)`` of ``env:NAME`` or ``file:PATH``; InvalidArgument otherwise."""
    allowed = " or ".join(f"{s}:..." for s in KEY_SOURCES)
    if not isinstance(spec, str) or ":" not in spec:
        raise InvalidArgument(f"{what} {spec!r} is not a key source; allowed: {allowed}")
    source, name = spec.split(":", 1)
    if source not in KEY_SOURCES or not name.strip() or "\x00" in name:
        raise InvalidArgument(f"{what} {spec!r} is not a key source; allowed: {allowed}")
    return source, name


def decode_key(raw: bytes, where: str) -> bytes:
    """32 key bytes from 64 hex digits, base64 text, or (from a file) 32 raw bytes."""
    text = raw.strip()
    try:
        if len(text) == 2 * KEY_BYTES:
            return binascii.unhexlify(text)
    except binascii.Error:
        pass
    try:
        decoded = base64.b64decode(text, validate=True)
        if len(decoded) == KEY_BYTES:
            return decoded
    except (binascii.Error, ValueError):
        pass
    if len(raw) == KEY_BYTES:
        return raw
    raise InvalidArgument(
        f"the master key in {where} is not a 32-byte key; give 64 hex digits or base64 of "
        "32 bytes (phasekit keys generate prints one)"
    )


def load_master_key(spec: str, what: str = "encryption.key") -> MasterKey:
    """The master key ``spec`` names; KeyUnavailable when the variable or file is absent."""
    source, name = parse_key_spec(spec, what)
    if source == "env":
        value = os.environ.get(name)
        if not value:
            raise KeyUnavailable(
                f"{what} {spec!r}: the environment variable {name} is not set; "
                "set it to the master key (64 hex digits or base64 of 32 bytes)"
            )
        secret = decode_key(value.encode(), f"the environment variable {name}")
    else:
        try:
            with open(name, "rb") as fh:
                raw = fh.read(4096)
        except OSError as exc:
            raise KeyUnavailable(
                f"{what} {spec!r}: cannot read the key file {name}: {exc.strerror or exc}"
            ) from None
        secret = decode_key(raw, f"the file {name}")
    return MasterKey(key_id_of(secret), secret, spec)


def generate_key() -> str:
    """A new random master key as base64 text."""
    return base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode("ascii")


__all__ = [
    "KEY_BYTES",
    "KEY_SOURCES",
    "MasterKey",
    "decode_key",
    "generate_key",
    "key_id_of",
    "load_master_key",
    "parse_key_spec",
]
