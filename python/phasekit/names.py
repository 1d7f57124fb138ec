"""Validation of names that become parts of paths, URIs or catalog keys (run, phase,
stage, container, key): one rule for every layer."""

from __future__ import annotations

import functools
import re
import unicodedata
from typing import Any

from phasekit.errors import InvalidArgument

TMP_SUFFIX = ".phasekit-tmp"
"""Suffix of files being written (IpcWriter and the stores' atomic writes)."""

MANIFEST_DIR = ".phasekit"
"""The folder of a file store's manifests, ``<folder>/.phasekit/<key>.json``."""

KEYS_DIR = "keys"
"""Below :data:`MANIFEST_DIR`: the wrapped data keys of encrypted files,
``<folder>/.phasekit/keys/<file name>.<16 hex>.key`` (see :mod:`phasekit.crypt`)."""

KEY_SUFFIX = ".key"
"""The suffix of a wrapped data key file."""

NAME_MAX_BYTES = 255
"""The filesystems' limit on one path component, in bytes (``NAME_MAX`` on Linux, macOS)."""

SUFFIX_RESERVE_BYTES = 55
"""Bytes a name must leave for what phasekit adds to it in one path component: the
longest is a temporary twin ``.<name>_results.json.<16 hex>.phasekit-tmp`` (44 bytes)."""

MAX_NAME_BYTES = NAME_MAX_BYTES - SUFFIX_RESERVE_BYTES
"""Longest accepted name, in bytes of UTF-8 (200: 200 ASCII characters, 100 'é')."""

MAX_NAME_LENGTH = MAX_NAME_BYTES
"""The same limit under its former name (in bytes of UTF-8)."""

_SHOWN = 80
"""Characters of a rejected name quoted in an error message."""

_FORBIDDEN = ("/", "\\")
_PLAIN = re.compile(r"[A-Za-z0-9_\-][A-Za-z0-9_.\-=+,@ ]*[A-Za-z0-9_\-=+,@.]|[A-Za-z0-9_\-]")
"""Names made only of these characters need no further check (beyond '..' and length)."""


@functools.lru_cache(maxsize=4096)
def _reason(value: str) -> str | None:
    """Why ``value`` cannot be a name, or None when it can."""
    plain = len(value) <= MAX_NAME_BYTES and _PLAIN.fullmatch(value) and ".." not in value
    if plain and not value.endswith(TMP_SUFFIX):
        return None
    if value == "":
        return "it is empty"
    if value in (".", ".."):
        return "'.' and '..' are path navigation, not names"
    if ".." in value:
        return "it contains '..'"
    for sep in _FORBIDDEN:
        if sep in value:
            return f"it contains the path separator {sep!r}"
    for ch in value:
        if 0xD800 <= ord(ch) <= 0xDFFF:
            return f"it is not valid UTF-8 (it contains the lone surrogate U+{ord(ch):04X})"
    if value.startswith("."):
        return "names starting with '.' are reserved for hidden and temporary files"
    if len(value) > 1 and value[1] == ":" and value[0].isalpha():
        return "it looks like an absolute Windows path"
    for ch in value:
        if ch == "\x00":
            return "it contains a NUL character"
        if unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp"):
            return f"it contains the control character U+{ord(ch):04X}"
    if value != value.strip():
        return "it has leading or trailing whitespace"
    if value.endswith(TMP_SUFFIX):
        return f"it ends like a temporary file ({TMP_SUFFIX!r})"
    size = len(value.encode("utf-8"))
    if size > MAX_NAME_BYTES:
        return f"it is {size} bytes long in UTF-8 (at most {MAX_NAME_BYTES})"
    return None


def check_name(field: str, value: Any) -> str:
    """Return ``value`` when it is a safe name, else raise ``InvalidArgument`` naming ``field``.

    A name is a non-empty string of valid UTF-8 (no lone surrogates) without ``..``,
    path separators (``/``, ``\\``), a leading ``.``, NUL or other control characters,
    surrounding whitespace or a drive prefix, and at most :data:`MAX_NAME_BYTES` bytes in
    UTF-8 (the filesystem's 255 bytes less what phasekit appends).
    """
    if not isinstance(value, str):
        raise InvalidArgument(
            f"{field} must be a string name, got {type(value).__name__} {value!r}"
        )
    reason = _reason(value)
    if reason is not None:
        raise InvalidArgument(
            f"{field} {_show(value)} is not a valid name: {reason}; allowed: letters, digits "
            "and punctuation other than path separators, without '..', a leading '.', "
            f"control characters or the ending {TMP_SUFFIX!r}, valid UTF-8 of at most "
            f"{MAX_NAME_BYTES} bytes"
        )
    return value


def _show(value: str) -> str:
    """``value`` quoted for a message: at most :data:`_SHOWN` characters, surrogates escaped."""
    text = value if len(value) <= _SHOWN else value[:_SHOWN] + "..."
    return ascii(text) if any(0xD800 <= ord(c) <= 0xDFFF for c in text) else repr(text)


def is_valid_name(value: Any) -> bool:
    """True when :func:`check_name` accepts ``value``."""
    return isinstance(value, str) and _reason(value) is None


__all__ = ["MAX_NAME_BYTES", "MAX_NAME_LENGTH", "NAME_MAX_BYTES", "check_name", "is_valid_name"]


def check_optional_name(field: str, value: Any) -> str | None:
    """:func:`check_name` for a name that may be ``None``."""
    return None if value is None else check_name(field, value)
