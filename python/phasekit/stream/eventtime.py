"""Event time: durations, timestamps as integer nanoseconds, and bounded-delay watermarks.

Every time value inside the stream package is an ``int`` of nanoseconds. Timestamps
may be given as ``int`` (nanoseconds), ``float`` (seconds), ``datetime`` (naive means
UTC), ``numpy.datetime64`` or anything with an integer ``.value`` in nanoseconds
(``pandas.Timestamp``). Durations may be ``int`` (nanoseconds), ``float`` (seconds),
``timedelta`` or a string such as ``"500ms"``, ``"5s"``, ``"1m"``, ``"1min"``, ``"2h"``,
``"1d"``, ``"1w"``.

Watermarks and lateness (the same in every event-time operator: the windows and
``ohlc_resample``; ``EventTimePolicy`` owns the two settings and their defaults):

* ``max_delay``: how far behind the largest timestamp seen an item may still arrive.
  The watermark after an item is ``W = largest timestamp so far - max_delay``; it
  never goes back. Items are taken in the order the operator reads them, one at a time:
  an item is judged against the watermark *before* it, whatever the batch it came in,
  so the output for a given input order does not depend on batch sizes or channel
  capacities.
* A window or bar ``[start, end)`` is emitted once ``W >= end`` (and at the end of the
  input).
* ``allowed_lateness``: after that it stays open while ``W < end + allowed_lateness``;
  an item for it arriving meanwhile is added and the window or bar is emitted again
  with the update (``firing`` 1, 2, ...). An item whose windows are all past
  ``end + allowed_lateness`` is late: it goes to the ``late`` port and is counted.
* A node with ``parallelism > 1`` (keyed) or fed by several inputs does not generate
  its watermark from what each instance happens to read: the watermark is generated on
  each input edge, before partitioning, from all items of that edge in order, and
  carried to the instances with the items; a node's watermark is the minimum over its
  inputs (an input that has ended no longer holds it back).
"""

from __future__ import annotations

import datetime as _dt
import re
from dataclasses import dataclass
from typing import Any, Callable, NamedTuple, Optional

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


DEFAULT_MAX_DELAY = 0
"""Default ``max_delay``: items are expected in timestamp order."""
DEFAULT_ALLOWED_LATENESS = 0
"""Default ``allowed_lateness``: a window or bar is final once emitted."""


@dataclass(frozen=True)
class EventTimePolicy:
    """``max_delay`` and ``allowed_lateness`` in nanoseconds (see the module doc)."""

    max_delay: int = DEFAULT_MAX_DELAY
    allowed_lateness: int = DEFAULT_ALLOWED_LATENESS

    @classmethod
    def of(cls, max_delay: Any = None, allowed_lateness: Any = None) -> EventTimePolicy:
        """A policy from user values (durations; None: the default)."""
        return cls(
            DEFAULT_MAX_DELAY
            if max_delay is None
            else non_negative_duration(max_delay, "max_delay"),
            DEFAULT_ALLOWED_LATENESS
            if allowed_lateness is None
            else non_negative_duration(allowed_lateness, "allowed_lateness"),
        )

    def watermark(self) -> Watermark:
        return Watermark(self.max_delay)


class Mark(NamedTuple):
    """A watermark carried in a channel: input ``sender`` promises no item below ``value``
    (beyond the operator's lateness rules). Only event-time operators receive them."""

    sender: int
    value: int


class CarriedWatermark:
    """The watermark of an operator whose inputs carry marks: the minimum over its inputs."""

    __slots__ = ("inputs", "value")

    def __init__(self, senders: Any) -> None:
        self.inputs: dict[int, int] = dict.fromkeys(senders, MIN_TIME)
        self.value = MIN_TIME

    def update(self, mark: Mark) -> bool:
        """Take a mark into account; True when the node's watermark advanced."""
        inputs = self.inputs
        if mark.value <= inputs.get(mark.sender, MAX_TIME):
            return False
        inputs[mark.sender] = mark.value
        low = min(inputs.values())
        if low > self.value:
            self.value = low
            return True
        return False
