"""Phases that consume a streaming producer while it runs.

A phase is a *stream consumer* of its one dependency (the *producer*) when the producer
is a ``backtest`` phase whose data flow is ``streaming`` (no ``containers:`` pattern
changes its containers' mode, and its ``output`` keeps ``container_results``) and the
phase is either

* an ``analysis`` phase: it keeps a running ranking of the streamed container results
  (its best ``top_k``, so its memory does not grow with the stream) and stores it as
  ``running_ranking`` (window ``items_<n>``) every ``streaming_settings.buffer_size``
  items and at the end of each producer window; once the producer has finished, it ranks
  the producer's window rankings as a sequential run does, so its results equal a
  sequential run's; or
* a ``stream`` phase whose Dag has a ``type: phase_input`` source: that source yields the
  producer's container results (each a mapping with ``source``: ``<producer>/<window>``).

The consumer starts with its producer and reads each window's stream through a
:class:`~phasekit.stores.stream.Subscription`, a bounded channel of ``buffer_size``
items: when the consumer falls behind, the stream store's forwarding thread blocks and
then the producer's ``put`` does (backpressure). A failure on either side fails the run:
a failed consumer stops the producer at its next result, a failed producer ends the
consumer's input and the consumer stores nothing more. Backtest phases that depend on a
producer need its selected parameters, so they start once it has finished; so does every
phase in a resumed run (a resumed producer does not stream the windows it skips).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Optional

from phasekit.errors import ConfigError, WorkflowError
from phasekit.stores.stream import StreamStore, Subscription
from phasekit.workflow import streamphase
from phasekit.workflow.phase import Observer, PhaseOutcome
from phasekit.workflow.results import STREAM_KEY, PhaseResults
from phasekit.workflow.topology import Objective, rank
from phasekit.workflow.windowagg import public

if TYPE_CHECKING:
    from phasekit.config.resolved import ResolvedConfig, ResolvedPhase
    from phasekit.workflow.sequencer import Sequencer

log = logging.getLogger(__name__)

PHASE_INPUT = "phase_input"
"""The Dag node type that reads the dependency's streamed container results."""
RUNNING = "running_ranking"
"""Entity of the running rankings an analysis consumer stores."""
POLL = 0.05
"""Seconds a consumer waits for input before checking whether it must stop."""


# ---------------------------------------------------------------- who consumes whom


def streams_results(phase: ResolvedPhase) -> bool:
    """``phase`` sends every container result through a stream store."""
    if phase.topology != "backtest" or phase.data_flow.mode != "streaming":
        return False
    if "container_results" not in phase.output:
        return False
    return not any(
        settings.pattern_of("data_flow.mode") is not None
        for settings in phase.pattern_settings.values()
    )


def uses_phase_input(phase: ResolvedPhase) -> bool:
    """A ``stream`` phase whose Dag has a ``phase_input`` node."""
    nodes = (phase.params.dag or {}).get("nodes") if phase.topology == "stream" else None
    if isinstance(nodes, Mapping):
        nodes = list(nodes.values())
    return any(isinstance(n, Mapping) and n.get("type") == PHASE_INPUT for n in nodes or ())


def producer_of(resolved: ResolvedConfig, name: str) -> Optional[str]:
    """The phase ``name`` consumes while it runs, or None (see the module docstring)."""
    phase = resolved.phase(name)
    if len(phase.depends_on) != 1:
        return None
    if phase.topology != "analysis" and not uses_phase_input(phase):
        return None
    dep = phase.depends_on[0]
    return dep if streams_results(resolved.phase(dep)) else None


def schedule(resolved: ResolvedConfig, order: list[str], resume: bool) -> list[list[str]]:
    """Steps in order: each a phase followed by the consumers that run alongside it."""
    producers = {} if resume else {n: producer_of(resolved, n) for n in order}
    return [
        [name, *(c for c in order if producers.get(c) == name)]
        for name in order
        if producers.get(name) is None
    ]


# ---------------------------------------------------------------- the channel between them


@dataclass
class Feed:
    """A consumer's input: the producer's window streams in order, each read to its end."""

    producer: str
    consumer: str
    _subs: queue.Queue[Optional[tuple[Optional[str], Subscription]]] = field(
        default_factory=queue.Queue
    )
    cancelled: threading.Event = field(default_factory=threading.Event)
    producer_ok: bool = False
    channels: list[dict[str, Any]] = field(default_factory=list)
    items: int = 0
    peak: dict[str, int] = field(default_factory=dict)
    """The producer's stream store at its fullest (unflushed items, channel depth)."""
    _current: Optional[Subscription] = None

    def add(self, window_id: Optional[str], sub: Subscription) -> None:
        if self.cancelled.is_set():
            sub.close()
            return
        self._subs.put((window_id, sub))

    def end(self, ok: bool) -> None:
        self.producer_ok = ok
        self._subs.put(None)

    def windows(
        self, stop: Optional[threading.Event] = None
    ) -> Iterator[tuple[str, Iterator[Any]]]:
        """``(source, items)`` per producer window; raises WorkflowError when the
        producer failed (after what it streamed)."""
        while not self.cancelled.is_set() and not (stop is not None and stop.is_set()):
            try:
                entry = self._subs.get(timeout=POLL)
            except queue.Empty:
                continue
            if entry is None:
                if not self.producer_ok:
                    raise WorkflowError(
                        f"phase {self.consumer!r}: its producer {self.producer!r} failed"
                    )
                return
            window_id, sub = entry
            yield f"{self.producer}/{window_id or 'full'}", self._read(sub, stop)

    def _read(self, sub: Subscription, stop: Optional[threading.Event]) -> Iterator[Any]:
        def stopping() -> bool:
            return self.cancelled.is_set() or (stop is not None and stop.is_set())

        self._current = sub
        try:
            for item in sub.poll(stopping, interval=POLL):
                self.items += 1
                yield item
        finally:
            self.channels.append(sub.stats())
            sub.close()

    def close(self) -> None:
        """Stop reading: close every subscription so the producer never waits for us."""
        self.cancelled.set()
        if self._current is not None:
            self._current.close()
        while True:
            try:
                entry = self._subs.get_nowait()
            except queue.Empty:
                return
            if entry is not None:
                entry[1].close()

    def stats(self) -> dict[str, Any]:
        """Items read and, per window stream, the bounded channel's statistics."""
        return {
            "producer": self.producer,
            "items": self.items,
            "capacity": max((c["capacity"] for c in self.channels), default=0),
            "high_water": max((c["high_water"] for c in self.channels), default=0),
            "blocked_send_seconds": sum(c["blocked_send_seconds"] for c in self.channels),
            "windows": len(self.channels),
            "producer_peak": dict(self.peak),
        }


class Tap:
    """Handed to the producer's results writer: subscribes every consumer to each window
    stream before its first item, and stops the producer once a consumer failed."""

    def __init__(self, producer: str, consumers: list[str]) -> None:
        self.producer = producer
        self.peak: dict[str, int] = {"pending": 0, "channel_depth": 0}
        self.feeds = {c: Feed(producer, c, peak=self.peak) for c in consumers}
        self.failed: Optional[str] = None
        self.stopped_producer = False
        self._seen: set[tuple[Optional[str], int]] = set()

    def __call__(self, window_id: Optional[str], store: StreamStore) -> None:
        if self.failed is not None:
            self.stopped_producer = True
            raise WorkflowError(
                f"phase {self.producer!r} stopped: its consumer {self.failed!r} failed"
            )
        key = (window_id, id(store))
        if key not in self._seen:
            self._seen.add(key)
            for feed in self.feeds.values():
                feed.add(window_id, store.subscribe(STREAM_KEY))
        self._sample(store)

    def _sample(self, store: StreamStore) -> None:
        """The stream store's unflushed items and channel depth, largest seen."""
        for stream in store.stats()["per_stream"].values():
            self.peak["pending"] = max(self.peak["pending"], stream["pending"])
            depth = stream["channel"]["depth"]
            self.peak["channel_depth"] = max(self.peak["channel_depth"], depth)

    def end(self, ok: bool) -> None:
        for feed in self.feeds.values():
            feed.end(ok)


class LockedObserver:
    """An observer called from the producer's and the consumers' threads, one at a time."""

    def __init__(self, inner: Observer) -> None:
        self.inner = inner
        self._lock = threading.Lock()

    def phase_started(self, phase: str, windows: int, containers: int) -> None:
        with self._lock:
            self.inner.phase_started(phase, windows, containers)

    def containers_done(self, phase: str, count: int) -> None:
        with self._lock:
            self.inner.containers_done(phase, count)

    def window_done(self, phase: str, window_id: str, resumed: bool) -> None:
        with self._lock:
            self.inner.window_done(phase, window_id, resumed)

    def phase_done(self, phase: str, outcome: PhaseOutcome) -> None:
        with self._lock:
            self.inner.phase_done(phase, outcome)


# ---------------------------------------------------------------- running the steps


def run_phases(seq: Sequencer, order: list[str]) -> None:
    """Run the phases of ``order``: alone, or a producer with its consumers."""
    for step in schedule(seq.resolved, order, seq.resume):
        if len(step) == 1:
            seq.outcomes[step[0]] = seq.run_phase(step[0])
        else:
            run_group(seq, step[0], step[1:])


def run_group(seq: Sequencer, producer: str, consumers: list[str]) -> None:
    """Run ``producer`` in this thread and each consumer in its own, concurrently."""
    tap = Tap(producer, consumers)
    outer = seq.observer
    seq.observer = LockedObserver(outer)
    seq.taps[producer] = tap
    errors: dict[str, BaseException] = {}
    outcomes: dict[str, PhaseOutcome] = {}

    def consume(name: str) -> None:
        feed = tap.feeds[name]
        try:
            outcomes[name] = run_consumer(seq, name, feed)
        except BaseException as exc:
            errors[name] = exc
            tap.failed = tap.failed or name
        finally:
            feed.close()

    threads = [
        threading.Thread(target=consume, args=(c,), name=f"phasekit-consumer-{c}", daemon=True)
        for c in consumers
    ]
    for thread in threads:
        thread.start()
    producer_error: Optional[BaseException] = None
    try:
        outcomes[producer] = seq.run_phase(producer)
    except BaseException as exc:
        producer_error = exc
    finally:
        tap.end(producer_error is None)
        for thread in threads:
            thread.join()
        seq.taps.pop(producer, None)
        seq.observer = outer
    # the first failure is the one reported: the producer's, unless the tap stopped it
    # because a consumer had failed
    if producer_error is not None and not tap.stopped_producer:
        raise producer_error
    if tap.failed is not None:
        raise errors[tap.failed]
    if producer_error is not None:
        raise producer_error
    for name in [producer, *consumers]:
        seq.outcomes[name] = outcomes[name]


def run_consumer(seq: Sequencer, name: str, feed: Feed) -> PhaseOutcome:
    phase = seq.resolved.phase(name)
    started = time.perf_counter()
    if phase.topology == "analysis":
        outcome = consume_analysis(seq, phase, feed)
    else:
        outcome = consume_stream(seq, phase, feed)
    outcome.seconds = time.perf_counter() - started
    seq.observer.phase_done(name, outcome)
    return outcome


@dataclass
class RunningRanking:
    """The best ``top_k`` container results seen so far."""

    objective: Objective
    top_k: int
    top: list[dict[str, Any]] = field(default_factory=list)
    count: int = 0

    def add(self, source: str, item: Mapping[str, Any]) -> None:
        entry = {
            "source": source,
            "container_id": item.get("container_id"),
            "parameters": item.get("parameters", {}),
            "metrics": item.get("metrics", {}),
        }
        self.top = rank([*self.top, entry], self.objective)[: self.top_k]
        self.count += 1

    def snapshot(self) -> dict[str, Any]:
        return {"consumed": self.count, "ranking": [public(r) for r in self.top]}


def consume_analysis(seq: Sequencer, phase: ResolvedPhase, feed: Feed) -> PhaseOutcome:
    """Keep and store the running ranking while the producer runs; then rank its
    windows as a sequential run does."""
    from phasekit.workflow.sequencer import DEFAULT_TOP_K, objective_of

    producer = seq.resolved.phase(feed.producer)
    every = producer.data_flow.streaming.buffer_size
    running = RunningRanking(objective_of(phase), phase.params.top_k or DEFAULT_TOP_K)
    out = seq._results(phase)
    stored, stores = 0, 0
    try:
        for source, items in feed.windows():
            for item in items:
                running.add(source, item)
                if running.count % every == 0:
                    stored, stores = _store_running(out, running), stores + 1
            if running.count != stored:
                stored, stores = _store_running(out, running), stores + 1
    finally:
        out.close()
    streamed = {**feed.stats(), "running_rankings": stores}
    return seq._analysis(phase, {"streamed": streamed, "running": running.snapshot()})


def _store_running(out: PhaseResults, running: RunningRanking) -> int:
    out.write_json(f"items_{running.count:08d}", RUNNING, running.snapshot())
    return running.count


class PhaseInput:
    """The ``phase_input`` source of a stream consumer: the producer's container results
    (each with ``source``) while the producer runs."""

    def __init__(self, feed: Feed) -> None:
        self.feed = feed
        self._stop: Optional[threading.Event] = None

    def open(self, ctx: Any) -> None:
        self._stop = ctx.stopping_event

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for source, items in self.feed.windows(self._stop):
            for item in items:
                yield {**item, "source": source}


def consume_stream(seq: Sequencer, phase: ResolvedPhase, feed: Feed) -> PhaseOutcome:
    dag = streamphase.build_dag(phase, {PHASE_INPUT: PhaseInput(feed)})
    out = seq._results(phase)
    try:
        outcome = streamphase.run(phase, dag, out, seq.observer, lambda: {"streamed": feed.stats()})
    finally:
        out.close()
    return outcome


def persisted_input(seq: Sequencer, phase: ResolvedPhase) -> dict[str, Any]:
    """The ``phase_input`` binding of a stream phase run after its producer (a resumed
    run): the producer's persisted streams, read in the order they were recorded."""
    if not uses_phase_input(phase):
        return {}
    deps = phase.depends_on
    if len(deps) != 1 or not streams_results(seq.resolved.phase(deps[0])):
        raise ConfigError(
            f"phases.{phase.name}.dag: a `{PHASE_INPUT}` node reads the container results "
            "its one dependency streams; give the phase exactly one `depends_on`, a backtest "
            f"phase with data_flow.mode streaming (depends_on: {list(deps)})"
        )
    return {PHASE_INPUT: list(_persisted(seq, deps[0]))}


def _persisted(seq: Sequencer, producer: str) -> Iterator[dict[str, Any]]:
    from pathlib import Path

    from phasekit.paths import contained

    root = Path(seq.resolved.results_dir).resolve()
    for item in seq.catalog.list_items(seq.run_id, stage=producer, entity=STREAM_KEY):
        path = item.metadata.get("path")
        if item.format != "stream" or not isinstance(path, str):
            continue
        folder = contained(path, root, f"the container stream of phase {producer!r}")
        store = StreamStore(folder.parent, encryption=seq.encryption)
        try:
            source = f"{producer}/{item.window_id or 'full'}"
            for row in store.items(STREAM_KEY):
                yield {**row, "source": source}
        finally:
            store.close()
