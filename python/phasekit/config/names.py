"""Checks for names that become parts of paths (runs, phases, stages, containers, patterns).

The rules are those of the stores (:func:`phasekit.stores.names.check_name`), so a name
the configuration accepts is one every later layer accepts.
"""

from __future__ import annotations

from typing import Any, Optional

from phasekit.config.limits import MAX_QUOTED_CHARS, clip
from phasekit.config.vocab import show
from phasekit.errors import InvalidArgument
from phasekit.stores.names import check_name


def name_problem(value: Any, what: str = "name") -> Optional[str]:
    """Why ``value`` cannot be used as a path component, or None when it can.

    Rejected: non-strings, the empty string, ``.`` and ``..``, anything containing
    ``..``, ``/`` or ``\\``, a leading ``.``, NUL and other control characters,
    surrounding whitespace, drive prefixes (``C:``), over-long names.
    """
    try:
        check_name(what, value)
    except InvalidArgument as exc:
        text = str(exc)
        if isinstance(value, str) and len(value) > MAX_QUOTED_CHARS:
            text = text.replace(repr(value), clip(repr(value)), 1)
        return text
    return None


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
        return f"container pattern {show(value)} has an unclosed '['"
    return None
