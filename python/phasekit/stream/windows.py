"""Event-time windows: tumbling, sliding and session windows with watermarks and lateness.

A window operator reads each item's timestamp and keeps a watermark; ``max_delay`` and
``allowed_lateness`` mean what ``phasekit.stream.eventtime`` says (the same as in
``ohlc_resample``): a window ``[start, end)`` fires once the watermark ``W >= end``;
it stays open while ``W < end + allowed_lateness``, and an item for it arriving
meanwhile is added and the window fires again with the update (``firing`` counts the
emissions). An item all of whose windows are past their lateness goes to the ``late``
port and is counted (``counters["late"]``); it is never silently dropped. At the end
of the input every open window fires. Items are taken one at a time in input order, so
the results do not depend on batch sizes, channel capacities or partitioning.

Tumbling and sliding windows take calendar sizes too (``"1d"`` with ``time_zone``,
``"1w"``, ``"1mo"``; see ``phasekit.stream.intervals``).

Results are ``WindowResult(key, start, end, value, n_items, firing)``, ordered by end,
then start, then the order in which windows were opened; ``value`` is
``aggregate(items)`` (items in arrival order; default: the list itself).
"""

from __future__ import annotations

import heapq
import time
from typing import Any, Callable, NamedTuple, Optional

from phasekit.errors import InvalidArgument
from phasekit.stream.eventtime import (
    MAX_TIME,
    MIN_TIME,
    CarriedWatermark,
    EventTimePolicy,
    Mark,
    field_getter,
    positive_duration,
    to_ns,
)
from phasekit.stream.intervals import CALENDAR_UNITS, is_calendar, parse_interval
from phasekit.stream.nodes import Out

LATE_PORT = "late"


class WindowResult(NamedTuple):
    key: Any
    start: int
    end: int
    value: Any
    n_items: int
    firing: int


class TumblingWindows:
    """Non-overlapping windows of ``size``: a duration aligned to ``offset`` (epoch by
    default), or a calendar interval (``"1d"`` with ``time_zone``, ``"1w"``, ``"1mo"``)."""

    def __init__(self, size: Any, offset: Any = 0, time_zone: Any = None) -> None:
        self.bins = parse_interval(
            size, time_zone=time_zone, offset=offset, name="tumbling window size"
        )

    def assign(self, ts: int) -> list[tuple[int, int]]:
        start = self.bins.floor1(ts)
        return [(start, self.bins.end1(start))]


class SlidingWindows:
    """Windows of ``size`` starting every ``slide``; an item belongs to ``size/slide`` of
    them. With ``time_zone`` both are calendar intervals (``"1d"``, ``"1w"``, ``"1mo"``;
    ``"1w"``/``"1mo"`` are calendar without it too): windows start on the slide's calendar
    grid and last ``size`` of local wall-clock time, as polars
    ``group_by_dynamic(every=slide, period=size)``."""

    def __init__(self, size: Any, slide: Any, offset: Any = 0, time_zone: Any = None) -> None:
        self.starts = parse_interval(
            slide,
            time_zone=time_zone if is_calendar(slide, time_zone) else None,
            offset=offset,
            name="sliding window slide",
        )
        self.length = parse_interval(
            size,
            time_zone=time_zone if is_calendar(size, time_zone) else None,
            name="sliding window size",
        )
        if time_zone is not None and not (self.starts.calendar and self.length.calendar):
            raise InvalidArgument(
                f"sliding windows in time_zone {time_zone!r} need calendar intervals for both "
                f"size and slide (units: {', '.join(CALENDAR_UNITS)}, e.g. '1d', '1w', '1mo'), "
                f"got size {size!r} and slide {slide!r}; fixed durations slide from the "
                "epoch in UTC without time_zone"
            )
        longest_slide, shortest_size = self.starts.bounds()[1], self.length.bounds()[0]
        if longest_slide > shortest_size:
            raise InvalidArgument(
                f"sliding window slide ({slide!r}, up to {longest_slide} ns) must not exceed "
                f"its size ({size!r}, at least {shortest_size} ns): items between windows "
                "would belong to none"
            )

    def assign(self, ts: int) -> list[tuple[int, int]]:
        windows = []
        start = self.starts.floor1(ts)
        while (end := self.length.add1(start)) > ts:
            windows.append((start, end))
            start = self.starts.floor1(start - 1)
        return windows[::-1]


class SessionWindows:
    """Per-key sessions: items closer than ``gap`` to each other share a window
    ``[first ts, last ts + gap)``; an item ``gap`` or more after the last starts a new one."""

    def __init__(self, gap: Any) -> None:
        self.gap = positive_duration(gap, "gap")


class _Win:
    __slots__ = ("end", "firings", "items", "key", "seq", "start")

    def __init__(self, key: Any, start: int, end: int, seq: int) -> None:
        self.key = key
        self.start = start
        self.end = end
        self.seq = seq
        self.items: list[tuple[int, Any]] = []
        self.firings = 0


class WindowOperator:
    """A transform that groups items into event-time windows (see the module doc)."""

    output_ports = (LATE_PORT,)
    stream_mode = "flat_map"

    def __init__(
        self,
        assigner: Any,
        *,
        timestamp: Any,
        key: Any = None,
        aggregate: Optional[Callable[[list[Any]], Any]] = None,
        max_delay: Any = None,
        allowed_lateness: Any = None,
        idle_timeout: Any = None,
        clock: Callable[[], int] = time.monotonic_ns,
        max_out_of_orderness: Any = None,
    ) -> None:
        if not isinstance(assigner, (TumblingWindows, SlidingWindows, SessionWindows)):
            raise InvalidArgument(
                f"assigner must be TumblingWindows, SlidingWindows or SessionWindows, got {assigner!r}"
            )
        if timestamp is None:
            raise InvalidArgument("window operators need timestamp= (a callable or field name)")
        self.assigner = assigner
        self.timestamp = field_getter(timestamp, "timestamp")
        self.key = field_getter(key, "key")
        self.aggregate = aggregate
        if max_out_of_orderness is not None:  # the former name of max_delay
            if max_delay is not None:
                raise InvalidArgument(
                    "window: give max_delay or its former name max_out_of_orderness, not both"
                )
            max_delay = max_out_of_orderness
        self.policy = EventTimePolicy.of(max_delay, allowed_lateness)
        self.wm = self.policy.watermark()
        self.lateness = self.policy.allowed_lateness
        self._carried: Optional[CarriedWatermark] = None
        self.idle_timeout = (
            None if idle_timeout is None else positive_duration(idle_timeout, "idle_timeout")
        )
        self.clock = clock
        self.wants_tick = self.idle_timeout is not None
        self.counters = {"late": 0, "fired": 0, "updates": 0}
        self._windows: dict[Any, _Win] = {}
        self._sessions: dict[Any, list[_Win]] = {}
        self._fire: list[tuple[int, int, int, Any]] = []
        self._purge: list[tuple[int, int, Any]] = []
        self._seq = 0
        self._last_event_clock = 0

    @property
    def watermark(self) -> int:
        return self.wm.value

    def event_time(self, item: Any) -> int:
        """An item's timestamp (the runtime generates marks with it)."""
        return to_ns(self.timestamp(item))  # type: ignore[misc]

    def expect_watermarks(self, senders: Any) -> None:
        """Take the watermark from the marks of these inputs (the runtime calls this when
        the node is partitioned or has several inputs)."""
        self._carried = CarriedWatermark(senders)

    @property
    def fn(self) -> Callable[[Any], Optional[list[Any]]]:
        return self.process

    # -------------------------------------------------------------- per item

    def process(self, item: Any) -> Optional[list[Any]]:
        if type(item) is Mark:
            return self._on_mark(item)
        ts = to_ns(self.timestamp(item))  # type: ignore[misc]
        key = self.key(item) if self.key is not None else None
        if self.idle_timeout is not None:
            self._last_event_clock = self.clock()
        self._seq += 1
        out: list[Any] = []
        if isinstance(self.assigner, SessionWindows):
            accepted = self._add_session(key, ts, item, out)
        else:
            accepted = self._add_fixed(key, ts, item, out)
        if not accepted:
            self.counters["late"] += 1
            out.append(Out(LATE_PORT, item))
        if self._carried is None:
            before = self.wm.value
            if self.wm.observe(ts) != before:
                self._advance(out)
        elif ts > self.wm.max_seen:  # the inputs' marks set the watermark; idle_timeout
            self.wm.max_seen = ts  # still measures from the largest timestamp seen
        return out or None

    def _on_mark(self, mark: Mark) -> Optional[list[Any]]:
        if self._carried is None:
            raise InvalidArgument(
                "window operator received a watermark mark but expects none (marks come "
                "from the runtime)"
            )
        if not self._carried.update(mark):
            return None
        self.wm.advance_to(self._carried.value)
        out: list[Any] = []
        self._advance(out)
        return out or None

    def _add_fixed(self, key: Any, ts: int, item: Any, out: list[Any]) -> bool:
        assert not isinstance(self.assigner, SessionWindows)
        w = self.wm.value
        accepted = False
        for start, end in self.assigner.assign(ts):
            if end + self.lateness <= w:
                continue
            wid = (key, start)
            win = self._windows.get(wid)
            if win is None:
                win = self._windows[wid] = _Win(key, start, end, self._seq)
                if end > w:
                    heapq.heappush(self._fire, (end, start, win.seq, wid))
                else:
                    heapq.heappush(self._purge, (end + self.lateness, win.seq, wid))
            win.items.append((self._seq, item))
            accepted = True
            if end <= w:
                out.append(self._emit(win))
        return accepted

    def _add_session(self, key: Any, ts: int, item: Any, out: list[Any]) -> bool:
        assert isinstance(self.assigner, SessionWindows)
        gap = self.assigner.gap
        w = self.wm.value
        start, end = ts, ts + gap
        sessions = self._sessions.setdefault(key, [])
        overlapping = [s for s in sessions if s.start < end and start < s.end]
        if not overlapping and end + self.lateness <= w:
            return False
        win = _Win(key, start, end, self._seq)
        for s in overlapping:
            sessions.remove(s)
            del self._windows[s.seq]
            win.start = min(win.start, s.start)
            win.end = max(win.end, s.end)
            win.items.extend(s.items)
            win.firings = max(win.firings, s.firings)
        win.items.append((self._seq, item))
        win.items.sort(key=lambda pair: pair[0])
        sessions.append(win)
        self._windows[win.seq] = win
        if win.end <= w:
            out.append(self._emit(win))
            heapq.heappush(self._purge, (win.end + self.lateness, win.seq, win.seq))
        else:
            heapq.heappush(self._fire, (win.end, win.start, win.seq, win.seq))
        return True

    # -------------------------------------------------------------- firing

    def _emit(self, win: _Win) -> WindowResult:
        items = [it for _, it in win.items]
        value = self.aggregate(items) if self.aggregate is not None else items
        firing = win.firings
        win.firings += 1
        self.counters["fired" if firing == 0 else "updates"] += 1
        return WindowResult(win.key, win.start, win.end, value, len(items), firing)

    def _advance(self, out: list[Any]) -> None:
        w = self.wm.value
        fire, purge, windows = self._fire, self._purge, self._windows
        while fire and fire[0][0] <= w:
            end, _, _, wid = heapq.heappop(fire)
            win = windows.get(wid)
            if win is None or win.end != end:
                continue  # merged into another session since
            out.append(self._emit(win))
            heapq.heappush(purge, (end + self.lateness, win.seq, wid))
        while purge and purge[0][0] <= w:
            _, _, wid = heapq.heappop(purge)
            win = windows.get(wid)
            if win is None or win.end + self.lateness > w:
                continue
            del windows[wid]
            if isinstance(self.assigner, SessionWindows):
                sessions = self._sessions.get(win.key)
                if sessions is not None and win in sessions:
                    sessions.remove(win)
                    if not sessions:
                        del self._sessions[win.key]

    def next_due(self) -> Optional[float]:
        """With ``idle_timeout``: when (``time.monotonic()`` seconds) the feed counts as
        idle, so that the runtime wakes the node then rather than at its next tick."""
        if self.idle_timeout is None or self.wm.max_seen == MIN_TIME:
            return None
        left = self.idle_timeout - (self.clock() - self._last_event_clock)
        return time.monotonic() + left / 1e9

    def on_tick(self, now_ns: int) -> Optional[list[Any]]:
        """With ``idle_timeout``: when no item came for that long (processing time), move
        the watermark on by the time elapsed so that open windows fire without new input."""
        if self.idle_timeout is None or self.wm.max_seen == MIN_TIME:
            return None
        idle = self.clock() - self._last_event_clock
        if idle < self.idle_timeout:
            return None
        before = self.wm.value
        if self.wm.advance_to(self.wm.max_seen + idle - self.wm.delay) == before:
            return None
        out: list[Any] = []
        self._advance(out)
        return out

    def pending(self) -> list[WindowResult]:
        """The windows that have not fired yet, as they stand (firing 0), ordered by end,
        start and opening; nothing fires and nothing changes."""
        wins = sorted(
            (w for w in self._windows.values() if w.firings == 0),
            key=lambda w: (w.end, w.start, w.seq),
        )
        results = []
        for w in wins:
            items = [it for _, it in w.items]
            value = self.aggregate(items) if self.aggregate is not None else items
            results.append(WindowResult(w.key, w.start, w.end, value, len(items), 0))
        return results

    def close(self) -> list[Any]:
        """End of input: every open window fires."""
        self.wm.advance_to(MAX_TIME)
        out: list[Any] = []
        self._advance(out)
        return out


def window(assigner: Any, *, timestamp: Any, **options: Any) -> WindowOperator:
    """A window operator for any assigner (see WindowOperator for the options)."""
    return WindowOperator(assigner, timestamp=timestamp, **options)


def tumbling(
    size: Any, *, timestamp: Any, offset: Any = 0, time_zone: Any = None, **options: Any
) -> WindowOperator:
    """Tumbling windows of ``size`` (a duration or a calendar interval in ``time_zone``);
    options: key, aggregate, max_delay, allowed_lateness, idle_timeout."""
    return WindowOperator(TumblingWindows(size, offset, time_zone), timestamp=timestamp, **options)


def sliding(
    size: Any,
    slide: Any,
    *,
    timestamp: Any,
    offset: Any = 0,
    time_zone: Any = None,
    **options: Any,
) -> WindowOperator:
    """Sliding windows of ``size`` every ``slide`` (durations, or calendar intervals in
    ``time_zone``); options as ``tumbling``."""
    return WindowOperator(
        SlidingWindows(size, slide, offset, time_zone), timestamp=timestamp, **options
    )


def session(gap: Any, *, timestamp: Any, **options: Any) -> WindowOperator:
    """Session windows closed by a ``gap`` of inactivity (per key); options as ``tumbling``."""
    return WindowOperator(SessionWindows(gap), timestamp=timestamp, **options)
