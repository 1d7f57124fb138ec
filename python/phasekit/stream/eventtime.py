"""Event time: durations, timestamps as integer nanoseconds, and bounded-delay watermarks.

Every time value inside the stream package is an ``int`` of nanoseconds. Timestamps
may be given as ``int`` (nanoseconds), ``float`` (seconds), ``datetime`` (naive means
UTC), ``numpy.datetime64`` or anything with an integer ``.value`` in nanoseconds
(``pandas.Timestamp``). Durations may be ``int`` (nanoseconds), ``float`` (seconds),
``timedelta`` or a string such as ``"500ms"``, ``"5s"``, ``"1m"``, ``"1min"``, ``"2h"``,
``"1d"``, ``"1w"``.
"""

from __future__ import annotations

import datetime as _dt
import re
from typing import Any, Callable, Optional

from phasekit.errors import InvalidArgument

NS_PER_S = 1_000_000_000

_UNITS = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,
    "ms": 1_000_000,
    "s": NS_PER_S,
    "sec": NS_PER_S,
    "m": 60 * NS_PER_S,
    "min": 60 * NS_PER_S,
    "t": 60 * NS_PER_S,
    "h": 3600 * NS_PER_S,
    "d": 86400 * NS_PER_S,
    "w": 7 * 86400 * NS_PER_S,
}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zµ]+)\s*$", re.IGNORECASE)
_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.UTC)

MIN_TIME = -(2**63)
"""The watermark before any event was seen."""
MAX_TIME = 2**63 - 1
"""The watermark at the end of the input: every window may fire."""


def parse_duration(value: Any, name: str = "duration") -> int:
    """A duration as integer nanoseconds (see the module doc for accepted forms)."""
    if isinstance(value, bool):
        raise InvalidArgument(f"{name} must be a duration, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return round(value * NS_PER_S)
    if isinstance(value, _dt.timedelta):
        return (value.days * 86400 + value.seconds) * NS_PER_S + value.microseconds * 1000
    if isinstance(value, str):
        match = _DURATION.match(value)
        unit = match.group(2).lower() if match else ""
        if match and unit in _UNITS:
            return round(float(match.group(1)) * _UNITS[unit])
    if hasattr(value, "value") and hasattr(value, "total_seconds"):  # pandas.Timedelta
        return int(value.value)
    raise InvalidArgument(
        f"{name}: cannot read {value!r} as a duration; use int nanoseconds, float seconds, "
        f"timedelta or a string like '500ms', '5s', '1m', '1h', '1d' "
        f"(units: {', '.join(sorted(set(_UNITS)))})"
    )


def positive_duration(value: Any, name: str) -> int:
    """A duration that must be > 0 nanoseconds."""
    ns = parse_duration(value, name)
    if ns <= 0:
        raise InvalidArgument(f"{name} must be a positive duration, got {value!r}")
    return ns


def non_negative_duration(value: Any, name: str) -> int:
    """A duration that must be >= 0 nanoseconds."""
    ns = parse_duration(value, name)
    if ns < 0:
        raise InvalidArgument(f"{name} must be a duration >= 0, got {value!r}")
    return ns


def to_ns(value: Any) -> int:
    """A timestamp as integer nanoseconds since the Unix epoch."""
    kind = type(value)
    if kind is int:
        return value  # type: ignore[no-any-return]
    if kind is float:
        return round(value * NS_PER_S)
    if isinstance(value, _dt.datetime):
        aware = value if value.tzinfo is not None else value.replace(tzinfo=_dt.UTC)
        delta = aware - _EPOCH
        return (delta.days * 86400 + delta.seconds) * NS_PER_S + delta.microseconds * 1000
    if isinstance(value, _dt.date):
        return to_ns(_dt.datetime(value.year, value.month, value.day))
    inner = getattr(value, "value", None)
    if isinstance(inner, int) and not isinstance(inner, bool):  # pandas.Timestamp
        return inner
    if kind.__module__ == "numpy":
        if value.dtype.kind == "M":
            return int(value.astype("datetime64[ns]").astype("int64"))
        if value.dtype.kind in "iu":
            return int(value)
        if value.dtype.kind == "f":
            return round(float(value) * NS_PER_S)
    raise InvalidArgument(
        f"cannot read {value!r} ({kind.__name__}) as a timestamp; use int nanoseconds, "
        "float seconds, datetime, numpy.datetime64 or pandas.Timestamp"
    )


def field_getter(spec: Any, name: str) -> Optional[Callable[[Any], Any]]:
    """A callable extracting a value from an item: a callable as is, or a field name.

    A field name reads ``item[name]`` from mappings and ``getattr(item, name)`` otherwise.
    """
    if spec is None or callable(spec):
        return spec
    if isinstance(spec, str):
        field = spec

        def get(item: Any) -> Any:
            try:
                return item[field]
            except (TypeError, KeyError, IndexError):
                return getattr(item, field)

        get.__name__ = f"field_{field}"
        return get
    raise InvalidArgument(f"{name} must be a callable or a field name, got {spec!r}")


class Watermark:
    """Bounded out-of-orderness: the watermark is the largest timestamp seen minus the delay.

    The watermark ``W`` states that no event with a timestamp below ``W`` is expected any
    more; a window ``[start, end)`` fires once ``W >= end``.
    """

    __slots__ = ("delay", "max_seen", "value")

    def __init__(self, max_out_of_orderness: Any = 0) -> None:
        self.delay = non_negative_duration(max_out_of_orderness, "max_out_of_orderness")
        self.max_seen = MIN_TIME
        self.value = MIN_TIME

    def observe(self, ts: int) -> int:
        """Take an event timestamp into account; returns the (never decreasing) watermark."""
        if ts > self.max_seen:
            self.max_seen = ts
            candidate = ts - self.delay
            if candidate > self.value:
                self.value = candidate
        return self.value

    def advance_to(self, ts: int) -> int:
        """Move the watermark forward to ``ts`` (idle sources, end of input)."""
        if ts > self.value:
            self.value = ts
        return self.value
