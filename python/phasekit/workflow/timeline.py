"""A phase's memory and spill timeline, written to ``phase_summary.json`` under
``memory_timeline``.

:class:`TimelineObserver` stands between a phase and the run's observer: it passes every
call on and samples the phase's stores (``PhaseResults.stats``) as containers finish (at
most one sample every :data:`MIN_INTERVAL` seconds) and as windows end, never so often
that sampling takes more than a tenth of the time (:data:`COST_SHARE`), and once more
when the phase ends. A sample holds the wall-clock time, the last window ended, the
bytes the phase's memory and hybrid stores hold in memory, their budget, what they
spilled and reloaded so far, and the resident memory of the process storing the
results. Once :data:`MAX_SAMPLES` are kept, every other one is dropped, so a long phase
keeps a bounded timeline of its whole length.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Optional

if TYPE_CHECKING:
    from phasekit.workflow.phase import Observer, PhaseOutcome

MIN_INTERVAL = 0.05
"""Seconds between two samples taken as containers finish."""
MAX_SAMPLES = 1000
"""The most samples a phase keeps; past it every other sample is dropped."""
COST_SHARE = 10
"""A sample is skipped unless this many times the last one's cost has passed since it."""
COUNTERS = ("spills", "spilled_bytes", "reloads", "reloaded_bytes")
"""The hybrid stores' cumulative counters a sample sums."""

StoreStats = Callable[[], Mapping[str, Mapping[str, Any]]]
"""``PhaseResults.stats``: ``"<window or ->/<mode>"`` -> that store's ``stats()``."""


def resident_bytes() -> Optional[int]:
    """The process's resident memory (Linux ``/proc/self/statm``); None elsewhere."""
    try:
        with open("/proc/self/statm", encoding="ascii") as fh:
            pages = int(fh.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE")


def in_memory(stats: Mapping[str, Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The stats of the memory stores and of the hybrid stores' roots (a window's hybrid
    store is a view of the phase's root, ``-/hybrid``, and counted in it)."""
    return [st for key, st in stats.items() if key.endswith("/memory") or key == "-/hybrid"]


def sample_of(stats: Iterable[Mapping[str, Any]], window: Optional[str]) -> dict[str, Any]:
    """One timeline sample from the stats of the stores that hold data in memory."""
    sample: dict[str, Any] = {
        "t": round(time.time(), 4),
        "window": window,
        "bytes_in_memory": 0,
        "budget_bytes": None,
        **dict.fromkeys(COUNTERS, 0),
    }
    for st in stats:
        sample["bytes_in_memory"] += int(st.get("bytes_in_memory") or 0)
        budget = st.get("budget_bytes")
        if budget is not None:
            sample["budget_bytes"] = int(budget) + (sample["budget_bytes"] or 0)
        for name in COUNTERS:
            sample[name] += int(st.get(name) or 0)
    sample["rss_bytes"] = resident_bytes()
    return sample


class Timeline:
    """The samples of one phase (see the module docstring)."""

    def __init__(self) -> None:
        self.samples: list[dict[str, Any]] = []
        self._last = float("-inf")
        self._cost = 0.0

    def due(self, interval: float = MIN_INTERVAL) -> bool:
        """Whether ``interval`` and :data:`COST_SHARE` times the last sample's cost passed."""
        return time.monotonic() - self._last >= max(interval, COST_SHARE * self._cost)

    def add(self, stats: Iterable[Mapping[str, Any]], window: Optional[str]) -> None:
        started = time.monotonic()
        self.samples.append(sample_of(stats, window))
        if len(self.samples) > MAX_SAMPLES:
            self.samples = self.samples[::2]
        self._last = time.monotonic()
        self._cost = self._last - started


class TimelineObserver:
    """An :class:`~phasekit.workflow.phase.Observer` that passes every call on to
    ``inner`` and keeps the phase's timeline of ``stats`` (see the module docstring)."""

    def __init__(self, inner: Observer, stats: StoreStats) -> None:
        self.inner = inner
        self.stats = stats
        self.timeline = Timeline()
        self.window: Optional[str] = None

    def _sample(self) -> None:
        self.timeline.add(in_memory(self.stats()), self.window)

    def phase_started(self, phase: str, windows: int, containers: int) -> None:
        self.inner.phase_started(phase, windows, containers)

    def containers_done(self, phase: str, count: int) -> None:
        self.inner.containers_done(phase, count)
        if self.timeline.due():
            self._sample()

    def window_done(self, phase: str, window_id: str, resumed: bool) -> None:
        self.inner.window_done(phase, window_id, resumed)
        self.window = window_id
        if self.timeline.due(0.0):
            self._sample()

    def phase_done(self, phase: str, outcome: PhaseOutcome) -> None:
        self.inner.phase_done(phase, outcome)

    def finish(self) -> list[dict[str, Any]]:
        """The phase's timeline, with a last sample taken now."""
        self._sample()
        return list(self.timeline.samples)


__all__ = [
    "MAX_SAMPLES",
    "MIN_INTERVAL",
    "Timeline",
    "TimelineObserver",
    "in_memory",
    "resident_bytes",
    "sample_of",
]
