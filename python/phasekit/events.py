"""Event kinds shared by both backends.

``EventType`` holds the built-in kinds; their integer codes are what the event
rings store (as uint16). Users may register more kinds by name; registered
codes start at ``FIRST_USER_KIND`` and are stable within a process.
"""

from __future__ import annotations

import threading
from enum import IntEnum

from phasekit.errors import InvalidArgument

FIRST_USER_KIND = 64
MAX_KIND = 65535

#: The retention policies of an event ring (``EventRing(policy=...)``, config's
#: ``retention_policy``); the Rust ring keeps a copy, checked by tests/test_owners.py.
RETENTION_POLICIES = ("sliding_window", "trade_complete", "minimal", "keep_all")


class EventType(IntEnum):
    BAR = 1
    SIGNAL = 2
    ORDER = 3
    FILL = 4
    POSITION_OPEN = 5
    POSITION_CLOSE = 6
    PORTFOLIO_UPDATE = 7


_lock = threading.Lock()
_by_name: dict[str, int] = {e.name: int(e) for e in EventType}
_by_code: dict[int, str] = {int(e): e.name for e in EventType}


def register_event_kind(name: str) -> int:
    """Register a user event kind by name and return its code (idempotent per name)."""
    if not isinstance(name, str) or not name or not name.replace("_", "").isalnum():
        raise InvalidArgument(
            f"event kind name {name!r} is invalid: use letters, digits and underscores"
        )
    key = name.upper()
    with _lock:
        if key in _by_name:
            return _by_name[key]
        code = max([FIRST_USER_KIND - 1, *(c for c in _by_code if c >= FIRST_USER_KIND)]) + 1
        if code > MAX_KIND:
            raise InvalidArgument(f"too many event kinds registered (at most {MAX_KIND})")
        _by_name[key] = code
        _by_code[code] = key
        return code


def event_kind(value: int | str | EventType) -> int:
    """Return the integer code of an event kind given by code, name or ``EventType``."""
    if isinstance(value, str):
        code = _by_name.get(value.upper())
        if code is None:
            allowed = ", ".join(sorted(_by_name))
            raise InvalidArgument(f"unknown event kind {value!r}; known kinds: {allowed}")
        return code
    code = int(value)
    if not 0 <= code <= MAX_KIND:
        raise InvalidArgument(f"event kind {code} is out of range 0..{MAX_KIND}")
    return code


def event_kind_name(code: int) -> str:
    """Return the name of an event kind code (``KIND_<code>`` when unregistered)."""
    return _by_code.get(int(code), f"KIND_{int(code)}")


__all__ = [
    "FIRST_USER_KIND",
    "MAX_KIND",
    "RETENTION_POLICIES",
    "EventType",
    "event_kind",
    "event_kind_name",
    "register_event_kind",
]
