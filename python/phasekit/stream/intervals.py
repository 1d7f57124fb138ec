"""Bar and window intervals: fixed durations, and calendar days, weeks, months in a time zone.

``parse_interval(value, time_zone=None, offset=0)`` gives the interval of
``ohlc_resample`` and tumbling windows. Bins are left-closed and labelled by their
start, as polars ``group_by_dynamic(every=...)`` cuts them:

* a duration (``"500ms"``, ``"5s"``, ``"1m"``, ``"1h"``, int nanoseconds, timedelta,
  ...; see ``phasekit.stream.eventtime``): fixed bins aligned to the Unix epoch plus
  ``offset``;
* ``"Nd"``: N days; without a time zone fixed 24-hour bins from the epoch (UTC days),
  with ``time_zone`` calendar days from local midnight to local midnight (23 or 25 hours
  across a daylight-saving change), N-day bins counted from 1970-01-01;
* ``"Nw"``: N weeks starting on Monday at local midnight (counted from Monday
  1970-01-05);
* ``"Nmo"``, ``"Nq"`` (3 months), ``"Ny"`` (12 months): N months starting on the first
  of a month at local midnight (counted from January 1970).

``time_zone`` is an IANA name (``"Europe/London"``; default UTC) and applies to the
calendar units only; ``offset`` applies to fixed bins only. Timestamps stay UTC
nanoseconds; only the bin edges follow the local calendar.
"""

from __future__ import annotations

import datetime as _dt
import re
from typing import Any, Optional, Union
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np

from phasekit.errors import InvalidArgument
from phasekit.stream.eventtime import (
    NS_PER_S,
    non_negative_duration,
    positive_duration,
)

CALENDAR_UNITS = {"d": "day", "w": "week", "mo": "month", "q": "quarter", "y": "year"}
"""Calendar units of an interval string: ``"1d"``, ``"2w"``, ``"1mo"``, ``"1q"``, ``"1y"``."""

_CALENDAR = re.compile(r"^\s*(\d+)\s*(mo|q|y|d|w)\s*$", re.IGNORECASE)
_MONTHS = {"mo": 1, "q": 3, "y": 12}
_EPOCH_DATE = _dt.date(1970, 1, 1)
_FIRST_MONDAY = 4  # 1970-01-05, in days since the epoch


def time_zone_of(value: Any, where: str) -> Optional[ZoneInfo]:
    """An IANA time zone (None stays None), or InvalidArgument naming ``where``."""
    if value is None:
        return None
    if isinstance(value, ZoneInfo):
        return value
    if isinstance(value, str) and value:
        try:
            return ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            pass
    raise InvalidArgument(
        f"{where}: unknown time_zone {value!r}; use an IANA time zone name such as "
        "'UTC', 'Europe/London' or 'America/New_York'"
    )


class FixedInterval:
    """Bins of ``size`` nanoseconds aligned to the epoch plus ``offset``."""

    calendar = False

    def __init__(self, size: int, offset: int = 0) -> None:
        self.size = size
        self.offset = offset % size

    def floor(self, ts: np.ndarray) -> np.ndarray:
        result: np.ndarray = ts - (ts - self.offset) % self.size
        return result

    def end(self, starts: np.ndarray) -> np.ndarray:
        result: np.ndarray = starts + self.size
        return result

    def floor1(self, ts: int) -> int:
        return ts - (ts - self.offset) % self.size

    def end1(self, start: int) -> int:
        return start + self.size

    def add1(self, start: int) -> int:
        """``start`` plus one interval."""
        return start + self.size

    def bounds(self) -> tuple[int, int]:
        """The shortest and longest an interval can last (ns)."""
        return self.size, self.size

    def starts_between(self, first: int, last: int) -> np.ndarray:
        """The bin starts from the bin of ``first`` to the bin of ``last``."""
        b0 = self.floor1(first)
        return np.arange(b0, last + 1, self.size, dtype=np.int64)

    def __repr__(self) -> str:
        return f"FixedInterval({self.size} ns, offset={self.offset})"


class CalendarInterval:
    """``n`` days, weeks or months in a time zone (see the module doc)."""

    calendar = True

    def __init__(self, n: int, unit: str, zone: ZoneInfo) -> None:
        self.n = n
        self.unit = unit
        self.zone = zone
        self._ends: dict[int, int] = {}

    # ---------------------------------------------------------- period arithmetic

    def _index(self, day: _dt.date) -> int:
        days = (day - _EPOCH_DATE).days
        if self.unit == "d":
            return days // self.n
        if self.unit == "w":
            return (days - _FIRST_MONDAY) // 7 // self.n
        months = (day.year - 1970) * 12 + day.month - 1
        return months // (self.n * _MONTHS[self.unit])

    def _start_of(self, index: int) -> int:
        if self.unit == "d":
            day = _EPOCH_DATE + _dt.timedelta(days=index * self.n)
        elif self.unit == "w":
            day = _EPOCH_DATE + _dt.timedelta(days=_FIRST_MONDAY + index * self.n * 7)
        else:
            months = index * self.n * _MONTHS[self.unit]
            day = _dt.date(1970 + months // 12, months % 12 + 1, 1)
        local = _dt.datetime(day.year, day.month, day.day, tzinfo=self.zone)
        return int(local.timestamp()) * NS_PER_S

    def _local_date(self, ts: int) -> _dt.date:
        return _dt.datetime.fromtimestamp(ts // NS_PER_S, self.zone).date()

    # ---------------------------------------------------------- the interface

    def floor1(self, ts: int) -> int:
        index = self._index(self._local_date(ts))
        start = self._start_of(index)
        if start > ts:  # a midnight that does not exist locally lands after ts
            start = self._start_of(index - 1)
        return start

    def end1(self, start: int) -> int:
        end = self._ends.get(start)
        if end is None:
            index = self._index(self._local_date(start))
            end = self._start_of(index + 1)
            while end <= start:
                index += 1
                end = self._start_of(index + 1)
            self._ends[start] = end
        return end

    def add1(self, start: int) -> int:
        """``start`` plus ``n`` units of local wall-clock time (a window of this length
        from any start, as polars' ``period``); a local time that does not exist (a
        daylight-saving gap) moves forward by the gap."""
        local = _dt.datetime.fromtimestamp(start // NS_PER_S, self.zone)
        if self.unit in ("d", "w"):
            days = self.n * (7 if self.unit == "w" else 1)
            wall = local.replace(tzinfo=None) + _dt.timedelta(days=days)
        else:
            months = local.month - 1 + self.n * _MONTHS[self.unit]
            year, month = local.year + months // 12, months % 12 + 1
            day = min(local.day, _days_in_month(year, month))
            wall = local.replace(tzinfo=None, year=year, month=month, day=day)
        ts = int(wall.replace(tzinfo=self.zone).timestamp())
        return ts * NS_PER_S + start % NS_PER_S

    def bounds(self) -> tuple[int, int]:
        """The shortest and longest an interval can last (ns): a daylight-saving change
        takes or gives an hour; months have 28 to 31 days."""
        day, hour = 86_400 * NS_PER_S, 3_600 * NS_PER_S
        if self.unit in ("d", "w"):
            days = self.n * (7 if self.unit == "w" else 1)
            return days * day - hour, days * day + hour
        months = self.n * _MONTHS[self.unit]
        low = months * 28 if months < 12 else months // 12 * 365
        high = months * 31 if months < 12 else months // 12 * 366
        return low * day - hour, high * day + hour

    def starts_between(self, first: int, last: int) -> np.ndarray:
        starts = [self.floor1(first)]
        while True:
            nxt = self.end1(starts[-1])
            if nxt > last:
                return np.array(starts, dtype=np.int64)
            starts.append(nxt)

    def floor(self, ts: np.ndarray) -> np.ndarray:
        if len(ts) == 0:
            return ts.copy()
        starts = self.starts_between(int(ts.min()), int(ts.max()))
        result: np.ndarray = starts[np.searchsorted(starts, ts, "right") - 1]
        return result

    def end(self, starts: np.ndarray) -> np.ndarray:
        if len(starts) == 0:
            return starts.copy()
        uniq, inverse = np.unique(starts, return_inverse=True)
        ends = np.array([self.end1(int(s)) for s in uniq.tolist()], dtype=np.int64)
        result: np.ndarray = ends[inverse]
        return result

    def __repr__(self) -> str:
        return f"CalendarInterval({self.n}{self.unit}, {self.zone.key})"


Interval = Union[FixedInterval, CalendarInterval]


def _days_in_month(year: int, month: int) -> int:
    following = _dt.date(year + month // 12, month % 12 + 1, 1)
    return (following - _dt.timedelta(days=1)).day


def is_calendar(value: Any, time_zone: Any = None) -> bool:
    """Whether ``value`` is a calendar interval string (days count only with a time zone)."""
    match = _CALENDAR.match(value) if isinstance(value, str) else None
    return match is not None and (match.group(2).lower() != "d" or time_zone is not None)


def parse_interval(
    value: Any, *, time_zone: Any = None, offset: Any = 0, name: str = "interval"
) -> Interval:
    """An interval from a duration or a calendar string (see the module doc)."""
    zone = time_zone_of(time_zone, name)
    match = _CALENDAR.match(value) if isinstance(value, str) else None
    unit = match.group(2).lower() if match else None
    if match is None or (unit == "d" and zone is None):
        if zone is not None:
            raise InvalidArgument(
                f"{name}: time_zone applies to calendar intervals only (units: "
                f"{', '.join(CALENDAR_UNITS)}, e.g. '1d', '1w', '1mo'); {value!r} is a fixed "
                "duration, binned from the epoch in UTC"
            )
        try:
            size = positive_duration(value, name)
        except InvalidArgument as exc:
            raise InvalidArgument(
                f"{exc}; or a calendar interval 'N' + one of {', '.join(CALENDAR_UNITS)} "
                "(e.g. '1d', '1w', '1mo', '1q', '1y'; days in a time zone with time_zone=)"
            ) from None
        return FixedInterval(size, non_negative_duration(offset, "offset"))
    assert unit is not None
    n = int(match.group(1))
    if n < 1:
        raise InvalidArgument(f"{name} must be a positive interval, got {value!r}")
    if non_negative_duration(offset, "offset") != 0:
        raise InvalidArgument(
            f"{name}: offset applies to fixed intervals only, not to the calendar interval "
            f"{value!r}"
        )
    return CalendarInterval(n, unit, zone if zone is not None else ZoneInfo("UTC"))
