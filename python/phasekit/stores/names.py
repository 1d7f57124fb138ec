"""Validation of names that become parts of paths or URIs (run, phase, container, key)."""

from __future__ import annotations

import unicodedata
from typing import Any

from phasekit.errors import InvalidArgument

MAX_NAME_LENGTH = 200
"""Longest accepted name, in characters (file names must stay under the 255-byte limit)."""

_FORBIDDEN = ("/", "\\")


def _reason(value: str) -> str | None:
    """Why ``value`` cannot be a name, or None when it can."""
    if value == "":
        return "it is empty"
    if value in (".", ".."):
        return "'.' and '..' are path navigation, not names"
    if ".." in value:
        return "it contains '..'"
    for sep in _FORBIDDEN:
        if sep in value:
            return f"it contains the path separator {sep!r}"
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
    if len(value) > MAX_NAME_LENGTH:
        return f"it is {len(value)} characters long (at most {MAX_NAME_LENGTH})"
    return None


def check_name(field: str, value: Any) -> str:
    """Return ``value`` when it is a safe name, else raise ``InvalidArgument`` naming ``field``.

    A name is a non-empty string without ``..``, path separators (``/``, ``\\``), a
    leading ``.``, NUL or other control characters, surrounding whitespace or a drive
    prefix, and at most :data:`MAX_NAME_LENGTH` characters.
    """
    if not isinstance(value, str):
        raise InvalidArgument(
            f"{field} must be a string name, got {type(value).__name__} {value!r}"
        )
    reason = _reason(value)
    if reason is not None:
        raise InvalidArgument(
            f"{field} {value!r} is not a valid name: {reason}; allowed: letters, digits and "
            "punctuation other than path separators, without '..', a leading '.' or "
            f"control characters, at most {MAX_NAME_LENGTH} characters"
        )
    return value


def is_valid_name(value: Any) -> bool:
    """True when :func:`check_name` accepts ``value``."""
    return isinstance(value, str) and _reason(value) is None


__all__ = ["MAX_NAME_LENGTH", "check_name", "is_valid_name"]
