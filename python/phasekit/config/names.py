"""Checks for names that become parts of paths (runs, phases, stages, containers, patterns)."""

from __future__ import annotations

import re
from typing import Any, Optional

from phasekit.config.vocab import show

MAX_NAME_BYTES = 255
_DRIVE = re.compile(r"^[A-Za-z]:")


def name_problem(value: Any, what: str = "name") -> Optional[str]:
    """Why ``value`` cannot be used as a path component, or None when it can.

    Rejected: non-strings, the empty string, ``.`` and ``..``, anything containing
    ``..``, ``/`` or ``\\``, NUL and other control characters, Windows drive
    prefixes (``C:``) and names longer than 255 bytes in UTF-8.
    """
    if not isinstance(value, str):
        return f"{what} must be a string, got {show(value)}"
    reason = None
    if not value:
        reason = "it is empty"
    elif value == ".":
        reason = "'.' is not a name"
    elif ".." in value:
        reason = "it contains '..'"
    elif "/" in value or "\\" in value:
        reason = "it contains a path separator"
    elif any(ord(c) < 32 or ord(c) == 127 for c in value):
        bad = next(c for c in value if ord(c) < 32 or ord(c) == 127)
        reason = f"it contains the control character {bad!r}"
    elif _DRIVE.match(value):
        reason = "it is an absolute path"
    elif len(value.encode("utf-8")) > MAX_NAME_BYTES:
        reason = f"it is longer than {MAX_NAME_BYTES} bytes"
    if reason is None:
        return None
    return (
        f"{show(value)} is not a valid {what}: {reason} "
        "(names become folder and file names: no '..', '/', '\\', NUL, control characters "
        "or absolute paths)"
    )


def pattern_problem(value: Any) -> Optional[str]:
    """Why ``value`` cannot be a container pattern (fnmatch syntax), or None when it can."""
    problem = name_problem(value, "container pattern")
    if problem is not None:
        return problem
    depth = 0
    for char in value:
        if char == "[":
            depth += 1
        elif char == "]" and depth:
            depth -= 1
    if depth:
        return f"{show(value)} is not a valid container pattern: it has an unclosed '['"
    return None
