"""Backpressure feedback: sinks report downstream pressure, sources slow down or pause.

Channels already push back on a source whose consumers are slower than it. Feedback
covers pressure the runtime cannot see, such as the write queue of a database or a
remote service behind a sink: any node given the ``Feedback`` (a sink or a transform)
reports a number with ``ctx.report_pressure(value)``, and every source given the same
``Feedback`` object slows down while it is at or above ``high`` and resumes full speed
once it falls to ``low`` or below (hysteresis, so sources do not flap around one
threshold).

A node reports while it processes items, and a paused source sends it none: so that a
pause can end, the pressure is also polled, every ``interval`` seconds while a source
waits and every ``latency_interval`` during a run, from the ``probe`` callable and from
the ``pressure()`` method of every node object given the Feedback that has one (called
from the runtime's threads, not the node's). The polled value is the largest of them.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable, Optional

from phasekit.errors import InvalidArgument

log = logging.getLogger(__name__)

MODES = ("pause", "slow")


class Feedback:
    """Hysteresis between a high and a low watermark of a reported pressure value.

    ``mode="pause"``: sources stop emitting above ``high`` until the value is ``<= low``.
    ``mode="slow"``: sources sleep ``slow_delay`` seconds per item while above ``high``.
    ``probe``: an optional callable returning the current pressure, polled by the runtime
    during a run and every ``interval`` seconds while a source waits (as are the
    ``pressure()`` methods of the nodes given this Feedback; see the module doc).
    """

    def __init__(
        self,
        high: float,
        low: Optional[float] = None,
        *,
        probe: Optional[Callable[[], float]] = None,
        mode: str = "pause",
        slow_delay: float = 0.01,
        interval: float = 0.05,
        name: str = "feedback",
    ) -> None:
        low = high / 2 if low is None else low
        if not low <= high:
            raise InvalidArgument(f"feedback {name!r}: low ({low}) must be <= high ({high})")
        if mode not in MODES:
            raise InvalidArgument(
                f"feedback {name!r}: mode must be 'pause' or 'slow', got {mode!r}"
            )
        if slow_delay < 0 or interval <= 0:
            raise InvalidArgument(
                f"feedback {name!r}: slow_delay must be >= 0 and interval > 0 seconds"
            )
        self.high = float(high)
        self.low = float(low)
        self.probe = probe
        self.mode = mode
        self.slow_delay = float(slow_delay)
        self.interval = float(interval)
        self.name = name
        self.pressure = 0.0
        self.throttled = False
        self.episodes = 0
        self.throttled_seconds = 0.0
        self._since = 0.0
        self._lock = threading.Lock()
        self._released = threading.Condition(self._lock)
        self._reporters: list[Callable[[], float]] = []

    @property
    def polled(self) -> bool:
        """True when there is something to poll: a probe or a node's ``pressure()``."""
        return self.probe is not None or bool(self._reporters)

    def attach(self, pressure: Callable[[], float]) -> None:
        """Poll ``pressure()`` of a node during a run (the runtime attaches and detaches)."""
        with self._lock:
            self._reporters.append(pressure)

    def detach(self, pressure: Callable[[], float]) -> None:
        with self._lock:
            if pressure in self._reporters:
                self._reporters.remove(pressure)

    def report(self, value: float) -> None:
        """Report the current pressure; crossing ``high`` throttles, falling to ``low`` releases."""
        with self._lock:
            self.pressure = float(value)
            if not self.throttled and self.pressure >= self.high:
                self.throttled = True
                self.episodes += 1
                self._since = time.monotonic()
                log.debug("feedback %r: pressure %s >= high %s", self.name, value, self.high)
            elif self.throttled and self.pressure <= self.low:
                self.throttled = False
                self.throttled_seconds += time.monotonic() - self._since
                self._released.notify_all()
                log.debug("feedback %r: pressure %s <= low %s", self.name, value, self.low)

    def poll(self) -> None:
        """Read the probe and the nodes' ``pressure()``, if any, and report the largest."""
        with self._lock:
            sources = list(self._reporters)
        if self.probe is not None:
            sources.append(self.probe)
        if not sources:
            return
        values = []
        for source in sources:
            try:
                values.append(float(source()))
            except Exception as exc:  # a failing probe must not stop the stream
                log.warning("feedback %r: %r raised %r; pressure unchanged", self.name, source,
                            exc)  # fmt: skip
                return
        self.report(max(values))

    def throttle(self, stop: threading.Event) -> None:
        """Called by a source before an item while ``throttled``: pause or slow down."""
        if self.mode == "slow":
            stop.wait(self.slow_delay)
            return
        with self._lock:
            while self.throttled and not stop.is_set():
                self._released.wait(self.interval)
                if self.probe is not None or self._reporters:
                    self._lock.release()
                    try:
                        self.poll()
                    finally:
                        self._lock.acquire()

    def current_throttled_seconds(self) -> float:
        """Seconds spent throttled so far, including a throttle still in progress."""
        with self._lock:
            extra = time.monotonic() - self._since if self.throttled else 0.0
            return self.throttled_seconds + extra

    def __repr__(self) -> str:
        return (
            f"Feedback({self.name!r}, high={self.high}, low={self.low}, mode={self.mode!r}, "
            f"pressure={self.pressure}, throttled={self.throttled})"
        )


def as_feedback_list(value: Any, node: str) -> tuple[Feedback, ...]:
    """None, one Feedback or a sequence of them, as a tuple."""
    if value is None:
        return ()
    items = (value,) if isinstance(value, Feedback) else tuple(value)
    for fb in items:
        if not isinstance(fb, Feedback):
            raise InvalidArgument(
                f"node {node!r}: feedback must be a phasekit.stream.Feedback, got {fb!r}"
            )
    return items
