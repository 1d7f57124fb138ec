"""Validation of names that become folder names or lookup keys (run, phase, stage, ...)."""

from __future__ import annotations

import unicodedata
from typing import Any

from phasekit.errors import InvalidArgument

TMP_SUFFIX = ".phasekit-tmp"
MAX_NAME_LENGTH = 200
_SEPARATORS = ("/", "\\")
_CONTROL = ("Cc", "Cf", "Zl", "Zp")
_ALLOWED = (
    f"a non-empty string of at most {MAX_NAME_LENGTH} characters without path separators "
    "('/', '\\'), '..', a leading '.', a drive prefix, NUL or control characters, surrounding "
    f"whitespace or the ending {TMP_SUFFIX!r}"
)


def _problem(value: str) -> str | None:
    if not value:
        return "is empty"
    if len(value) > MAX_NAME_LENGTH:
        return f"is {len(value)} characters long"
    if ".." in value:
        return "contains '..'"
    if any(sep in value for sep in _SEPARATORS):
        return "contains a path separator"
    if value.startswith("."):
        return "starts with '.' (reserved for hidden and temporary files)"
    if len(value) >= 2 and value[1] == ":" and value[0].isalpha():
        return "looks like an absolute Windows path"
    for ch in value:
        if ch == "\x00":
            return "contains a NUL character"
        if unicodedata.category(ch) in _CONTROL:
            return f"contains the control character U+{ord(ch):04X}"
    if value != value.strip():
        return "has leading or trailing whitespace"
    if value.endswith(TMP_SUFFIX):
        return "ends like a temporary file"
    return None


def check_name(field: str, value: Any) -> str:
    """Return ``value`` if it is a safe name, else raise :class:`InvalidArgument` naming ``field``."""
    if not isinstance(value, str):
        raise InvalidArgument(
            f"{field} must be a string, got {type(value).__name__} {value!r}; allowed: {_ALLOWED}"
        )
    problem = _problem(value)
    if problem is not None:
        raise InvalidArgument(f"{field} {value!r} {problem}; allowed: {_ALLOWED}")
    return value


def check_optional_name(field: str, value: Any) -> str | None:
    """:func:`check_name` for a name that may be ``None``."""
    return None if value is None else check_name(field, value)
