"""Running a Dag: one thread per node instance, a Channel per input, close-then-drain shutdown.

Every transform and sink instance reads batches from its input Channel
(``recv_many``), processes them and sends the outputs on with ``send_many``; a full
channel blocks the sender, so backpressure travels up to the sources. A channel is
closed when the last instance sending into it has finished, and its reader drains it
before finishing in turn: a finite run ends when everything in flight is processed,
and a graceful stop (sources stop reading) drains the same way. Cancelling closes
every channel at once and drops what is in flight.

End-to-end latency is sampled without touching items: a source notes, a few times a
second, the position of its latest item in each output channel; the reader of that
channel forwards the note once it has received that position, and a sink observes
the time since the note was taken.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Optional

import phasekit
from phasekit.errors import ChannelClosed, ChannelFull, StreamError, Timeout
from phasekit.stream.aio import DagLoop
from phasekit.stream.eventtime import MAX_TIME, MIN_TIME, Mark, to_ns
from phasekit.stream.feedback import Feedback
from phasekit.stream.metrics import (
    FeedbackSnapshot,
    NodeSnapshot,
    QueueSnapshot,
    Snapshot,
)
from phasekit.stream.nodes import (
    DEFAULT_PORT,
    ERRORS_PORT,
    ErrorPolicy,
    NodeContext,
    Out,
    Processor,
    SourceReader,
    format_exception,
    instantiate,
    make_processor,
)
from phasekit.stream.partition import KeyedState, Partitioner, columnar_rows

if TYPE_CHECKING:
    from phasekit.stream.dag import Dag, NodeSpec

log = logging.getLogger(__name__)


# ------------------------------------------------------------------ channels and routes


class _Queue:
    """One Channel feeding one node instance (or all instances of an unkeyed parallel node)."""

    __slots__ = ("ch", "label", "lock", "mark_senders", "markers", "node", "senders")

    def __init__(self, ch: Any, node: str, label: str) -> None:
        self.ch = ch
        self.node = node
        self.label = label
        self.senders = 0
        self.mark_senders: list[int] = []  # inputs whose watermark marks this queue carries
        self.lock = threading.Lock()
        self.markers: deque[tuple[int, float]] = deque()

    def sender_done(self) -> None:
        with self.lock:
            self.senders -= 1
            last = self.senders <= 0
        if last:
            self.ch.close()

    def add_marker(self, t0: float) -> None:
        self.markers.append((self.ch.stats()["sent"], t0))

    def take_markers(self) -> list[float]:
        received = self.ch.stats()["received"]
        taken: list[float] = []
        with self.lock:
            markers = self.markers
            while markers and markers[0][0] <= received:
                taken.append(markers.popleft()[1])
        return taken


class _Marks:
    """The watermark of one input edge of an event-time node, generated from the edge's
    items in order with the node's ``max_delay`` (see ``phasekit.stream.eventtime``)."""

    __slots__ = ("event_time", "last", "sender", "wm")

    def __init__(self, sender: int, event_time: Callable[[Any], int], wm: Any, n: int) -> None:
        self.sender = sender
        self.event_time = event_time
        self.wm = wm
        self.last = [MIN_TIME] * n  # the last mark sent to each queue


class _Route:
    """The queues of one destination node, chosen by key partition when it has several.

    With ``marks`` (an event-time destination that is partitioned or has several
    inputs) the route carries the edge's watermark: a mark goes before an item whose
    queue has not yet seen the watermark before that item, and to every queue at the end
    of each batch; ``finish`` sends the end-of-input watermark."""

    __slots__ = ("marks", "part", "queues")

    def __init__(
        self, queues: list[_Queue], part: Optional[Partitioner], marks: Optional[_Marks] = None
    ) -> None:
        self.queues = queues
        self.part = part
        self.marks = marks

    def send(self, values: list[Any]) -> None:
        if self.marks is not None:
            self._send_marked(values, self.marks)
            return
        part = self.part
        if part is None:
            self.queues[0].ch.send_many(values)
            return
        buckets: list[list[Any]] = [[] for _ in self.queues]
        split = part.split
        for v in values:
            pieces = None if type(v) is dict else split(v)
            if pieces is None:
                buckets[part(v)].append(v)
                continue
            for j, rows in pieces:
                buckets[j].append(rows)
        for q, bucket in zip(self.queues, buckets):
            if bucket:
                q.ch.send_many(bucket)

    def _send_marked(self, values: list[Any], marks: _Marks) -> None:
        part, sender, last, wm = self.part, marks.sender, marks.last, marks.wm
        event_time = marks.event_time
        buckets: list[list[Any]] = [[] for _ in self.queues]
        for v in values:
            if part is not None and columnar_rows(v) is not None:
                raise StreamError(
                    f"a keyed parallel event-time node got a columnar batch "
                    f"({type(v).__name__}); its rows would be judged against other "
                    "watermarks than in one instance. Give the node parallelism=1 (batches "
                    "are processed vectorised) or send it one item per row"
                )
            j = part(v) if part is not None else 0
            w = wm.value
            if w > last[j]:
                buckets[j].append(Mark(sender, w))
                last[j] = w
            buckets[j].append(v)
            wm.observe(event_time(v))
        w = wm.value
        for j, (q, bucket) in enumerate(zip(self.queues, buckets)):
            if w > last[j]:
                bucket.append(Mark(sender, w))
                last[j] = w
            if bucket:
                q.ch.send_many(bucket)

    def finish(self) -> None:
        """The sender has ended: it no longer holds the destination's watermark back."""
        if self.marks is None:
            return
        for q in self.queues:
            try:
                q.ch.send(Mark(self.marks.sender, MAX_TIME))
            except ChannelClosed:
                return


class _Emitter:
    """Sends a node instance's outputs to the routes of their ports."""

    def __init__(self, node: str, routes: dict[str, list[_Route]], ports: frozenset[str]) -> None:
        self.node = node
        self.routes = routes
        self.ports = ports
        self.multi = bool(ports - {DEFAULT_PORT})
        self.queues: list[_Queue] = []
        for port_routes in routes.values():
            for r in port_routes:
                for q in r.queues:
                    if q not in self.queues:
                        self.queues.append(q)
        self.unconnected: dict[str, int] = {}
        default = routes.get(DEFAULT_PORT, [])
        single = (
            not self.multi
            and len(default) == 1
            and default[0].part is None
            and default[0].marks is None
        )
        self.fast = default[0].queues[0].ch if single else None

    def send(self, outputs: list[Any]) -> None:
        if self.fast is not None:
            self.fast.send_many(outputs)
            return
        if not self.multi:
            for route in self.routes.get(DEFAULT_PORT, ()):
                route.send(outputs)
            return
        groups: dict[str, list[Any]] = {}
        for o in outputs:
            if type(o) is Out:
                port, value = o
            else:
                port, value = DEFAULT_PORT, o
            bucket = groups.get(port)
            if bucket is None:
                bucket = groups[port] = []
            bucket.append(value)
        for port, values in groups.items():
            routes = self.routes.get(port)
            if routes is None:
                self._unconnected(port, len(values))
                continue
            for route in routes:
                route.send(values)

    def send_one(self, item: Any) -> None:
        if self.fast is not None:
            self.fast.send(item)
        else:
            self.send([item])

    def _unconnected(self, port: str, count: int) -> None:
        if port not in self.ports:
            raise StreamError(
                f"node {self.node!r} emitted to port {port!r}, which it does not declare; "
                f"declared ports: {', '.join(sorted(self.ports))}"
            )
        if port not in self.unconnected:
            log.warning(
                "node %r: port %r is not connected; its outputs are counted and dropped",
                self.node,
                port,
            )
        self.unconnected[port] = self.unconnected.get(port, 0) + count

    def forward_marker(self, t0: float) -> None:
        for q in self.queues:
            q.add_marker(t0)

    def done(self) -> None:
        for port_routes in self.routes.values():
            for route in port_routes:
                route.finish()
        for q in self.queues:
            q.sender_done()


# ------------------------------------------------------------------ node instances


class _Instance:
    """One thread running one instance of a node."""

    kind = ""

    def __init__(self, rt: Runtime, spec: NodeSpec, index: int, emitter: _Emitter) -> None:
        self.rt = rt
        self.spec = spec
        self.index = index
        self.emitter = emitter
        self.items_in = 0
        self.items_out = 0
        self.last_event_ns: Optional[int] = None
        self.impl = instantiate(spec.impl, index)
        self.policy = ErrorPolicy(spec.on_error, spec.id, index)
        self.ctx = NodeContext(
            dag=rt.dag.name,
            node=spec.id,
            instance=index,
            parallelism=spec.parallelism,
            state=KeyedState(),
            feedback=spec.feedback[0] if len(spec.feedback) == 1 else None,
            timestamp=spec.timestamp,
            stop_event=rt.cancel_event,
            stopping_event=rt.stop_event,
        )
        self.thread = threading.Thread(
            target=self._main,
            name=f"phasekit-stream:{rt.dag.name}:{spec.id}[{index}]",
            daemon=True,
        )

    def _main(self) -> None:
        try:
            self.run()
        except ChannelClosed as exc:
            if not self.rt.cancelled:
                self.rt.fail(self, exc)
        except BaseException as exc:
            self.rt.fail(self, exc)
        finally:
            try:
                self.emitter.done()
            except BaseException as exc:
                self.rt.fail(self, exc)
            self.rt.instance_done()

    def run(self) -> None:
        raise NotImplementedError

    def note_event_time(self, item: Any) -> None:
        ts = self.spec.timestamp
        if ts is not None:
            try:
                self.last_event_ns = to_ns(ts(item))
            except Exception:  # a metric only: never fail the node for it
                pass

    @property
    def watermark_ns(self) -> Optional[int]:
        wm = getattr(self.impl, "watermark", None)
        return wm if isinstance(wm, int) else self.last_event_ns

    @property
    def counters(self) -> dict[str, int]:
        own = getattr(self.impl, "counters", None)
        merged = dict(own) if isinstance(own, dict) else {}
        for port, count in self.emitter.unconnected.items():
            merged[f"unconnected_{port}"] = count
        return merged


class _SourceInstance(_Instance):
    kind = "source"

    def __init__(self, rt: Runtime, spec: NodeSpec, index: int, emitter: _Emitter) -> None:
        super().__init__(rt, spec, index, emitter)
        self.marker_due = False
        self.reader = SourceReader(self.impl, self.ctx, rt.settings.poll_interval)

    @property
    def throttled(self) -> bool:
        return any(fb.throttled for fb in self.spec.feedback)

    def run(self) -> None:
        reader = self.reader
        reader.open()
        try:
            if reader.async_iterator is not None:
                self._run_async()
            else:
                self._run_sync()
        except (ChannelClosed, asyncio.CancelledError):
            raise
        except Exception as exc:
            out: list[Any] = []
            self.policy(None, exc, out)  # raises under on_error="fail"
            if out:
                self.emitter.send(out)
            log.warning("source %r ended early after an error (on_error=%s)", self.spec.id,
                        self.spec.on_error)  # fmt: skip
        finally:
            if not self.rt.cancelled:
                reader.close()

    def _chunk_size(self) -> int:
        if self.spec.chunk is not None:
            return self.spec.chunk
        if isinstance(self.impl, (list, tuple, range)):
            return self.rt.settings.batch_size
        return 1

    def _run_sync(self) -> None:
        chunk = self._chunk_size()
        if chunk > 1:
            self._run_chunked(chunk)
            return
        rt = self.rt
        send = self.emitter.send_one
        feedbacks = self.spec.feedback
        assert self.reader.iterator is not None
        for item in self.reader.iterator:
            if feedbacks:
                for fb in feedbacks:
                    if fb.throttled:
                        fb.throttle(rt.cancel_event)
            send(item)
            self.items_out += 1
            if self.marker_due:
                self._marker(item)
            if rt.stopping:
                break

    def _run_chunked(self, size: int) -> None:
        rt = self.rt
        send = self.emitter.send
        feedbacks = self.spec.feedback
        iterator = self.reader.iterator
        assert iterator is not None
        while True:
            items = list(itertools.islice(iterator, size))
            if not items:
                return
            for fb in feedbacks:
                if fb.throttled:
                    fb.throttle(rt.cancel_event)
            send(items)
            self.items_out += len(items)
            if self.marker_due:
                self._marker(items[-1])
            if rt.stopping:
                return

    def _marker(self, item: Any) -> None:
        self.marker_due = False
        self.emitter.forward_marker(time.perf_counter())
        self.note_event_time(item)

    def _run_async(self) -> None:
        loop = asyncio.new_event_loop()
        self.reader.loop = loop
        try:
            loop.run_until_complete(self._drain_async())
        except asyncio.CancelledError:
            if not self.rt.stopping:
                raise
        finally:
            try:
                loop.run_until_complete(loop.shutdown_asyncgens())
            finally:
                loop.close()

    async def _drain_async(self) -> None:
        rt = self.rt
        self.reader.task = asyncio.current_task()
        iterator = self.reader.async_iterator
        assert iterator is not None
        fast = self.emitter.fast
        loop = asyncio.get_running_loop()
        while not rt.stopping:
            try:
                item = await iterator.__anext__()
            except StopAsyncIteration:
                return
            for fb in self.spec.feedback:
                while fb.throttled and not rt.cancelled:
                    await loop.run_in_executor(None, fb.throttle, rt.cancel_event)
            if fast is None:
                self.emitter.send_one(item)
            else:
                try:
                    fast.try_send(item)
                except ChannelFull:
                    await loop.run_in_executor(None, fast.send, item)
            self.items_out += 1
            if self.marker_due:
                self._marker(item)


class _WorkerInstance(_Instance):
    """A transform or sink instance."""

    def __init__(
        self, rt: Runtime, spec: NodeSpec, index: int, emitter: _Emitter, queue: _Queue
    ) -> None:
        super().__init__(rt, spec, index, emitter)
        self.kind = spec.kind
        self.queue = queue
        self.proc: Processor = make_processor(self.impl, spec.kind, self.policy, rt.aio)
        self.result: Any = None

    def pressure_reporters(self) -> list[tuple[Feedback, Callable[[], float]]]:
        """(feedback, the node object's ``pressure`` method) for each Feedback of the node."""
        pressure = getattr(self.impl, "pressure", None)
        if not callable(pressure):
            return []
        return [(fb, pressure) for fb in self.spec.feedback]

    def run(self) -> None:
        rt = self.rt
        proc = self.proc
        opened = closed = False
        try:
            proc.open(self.ctx)
            opened = True
            self._loop()
            if not rt.cancelled:
                out: list[Any] = []
                closed = True
                self.result = proc.close(out)
                self._emit(out)
        finally:
            if opened and not closed:
                self._release()

    def _loop(self) -> None:
        rt = self.rt
        proc = self.proc
        q = self.queue
        ch = q.ch
        batch = rt.settings.batch_size
        tick = rt.settings.tick_interval if proc.has_tick else None
        last_tick = time.monotonic()
        track_time = self.spec.timestamp is not None
        when_due = bool(getattr(self.impl, "emits_when_due", False))
        marked = bool(q.mark_senders)
        next_due = getattr(self.impl, "next_due", None) if tick is not None else None
        out: list[Any] = []
        while True:
            wait = tick
            if next_due is not None:  # wake up when the operator's next output is due
                due = next_due()
                if due is not None:
                    wait = min(tick, max(0.0005, due - time.monotonic()))
            try:
                items = ch.recv_many(batch) if wait is None else ch.recv_many(batch, wait)
            except Timeout:
                items = None
            except ChannelClosed:
                return
            if rt.cancelled:
                return
            if items:
                self.items_in += len(items) if not marked else _count_items(items)
                if when_due:
                    for item in items:  # each output leaves when its operator released it
                        proc.process([item], out)
                        if out:
                            self._emit(out)
                            out = []
                else:
                    proc.process(items, out)
                    if out:
                        self._emit(out)
                        out = []
                if track_time:
                    self.note_event_time(items[-1])
                if q.markers:
                    self._markers()
            if tick is not None:
                now = time.monotonic()
                due = next_due() if next_due is not None else None
                if items is None or now - last_tick >= tick or (due is not None and now >= due):
                    last_tick = now
                    proc.tick(time.time_ns(), out)
                    if out:
                        self._emit(out)
                        out = []

    def _emit(self, out: list[Any]) -> None:
        if out:
            self.items_out += len(out)
            self.emitter.send(out)

    def _markers(self) -> None:
        taken = self.queue.take_markers()
        if not taken:
            return
        if self.kind == "sink":
            now = time.perf_counter()
            for t0 in taken:
                self.rt.metrics_latency(self.spec.id, now - t0)
        else:
            for t0 in taken:
                self.emitter.forward_marker(t0)

    def _release(self) -> None:
        """After a failure or cancel: abort() if the object has one, else close() quietly."""
        target = self.proc.target
        release = getattr(target, "abort", None) or getattr(target, "close", None)
        if release is None or not callable(release):
            return
        try:
            self.proc.awaited(release())
        except Exception as exc:
            log.warning("node %r: releasing after a failure raised %r", self.spec.id, exc)


def _count_items(items: list[Any]) -> int:
    """The items of a batch, not counting watermark marks."""
    return sum(1 for x in items if type(x) is not Mark)


class _PauseWatch:
    """Warns once per pause when a Feedback with nothing to poll keeps its sources paused
    while every node reporting to it has an empty input: only ``report()`` can end it."""

    AFTER = 1.0  # seconds of such a stall before the warning

    def __init__(self, rt: Runtime, feedbacks: list[Feedback]) -> None:
        self.queues = {
            fb: [
                inst.queue
                for inst in rt.instances
                if isinstance(inst, _WorkerInstance) and fb in inst.spec.feedback
            ]
            for fb in feedbacks
        }
        self.since: dict[Feedback, float] = {}
        self.warned: dict[Feedback, int] = {}

    def check(self) -> None:
        now = time.monotonic()
        for fb, queues in self.queues.items():
            idle = fb.throttled and all(q.ch.stats()["depth"] == 0 for q in queues)
            if not idle:
                self.since.pop(fb, None)
                continue
            since = self.since.setdefault(fb, now)
            if now - since >= self.AFTER and self.warned.get(fb) != fb.episodes:
                self.warned[fb] = fb.episodes
                log.warning(
                    "feedback %r keeps its sources paused (pressure %s >= low %s) while the "
                    "nodes reporting to it have no items left; give those nodes a pressure() "
                    "method or the Feedback a probe, or call report(), so that it can end",
                    fb.name,
                    fb.pressure,
                    fb.low,
                )


# ------------------------------------------------------------------ results and handle


@dataclass
class RunResult:
    """What a finished run reports: per-node counts, channel statistics, sink results."""

    dag: str
    elapsed: float
    cancelled: bool
    stopped: bool
    nodes: dict[str, dict[str, Any]] = field(default_factory=dict)
    queues: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    results: dict[str, Any] = field(default_factory=dict)

    def items_out(self, node: str) -> int:
        return int(self.nodes[node]["items_out"])

    def items_in(self, node: str) -> int:
        return int(self.nodes[node]["items_in"])


class DagHandle:
    """A started run: ``wait()``, ``stop(drain=True)``, ``cancel()``, metrics."""

    def __init__(self, runtime: Runtime) -> None:
        self._rt = runtime

    @property
    def dag(self) -> Dag:
        return self._rt.dag

    @property
    def running(self) -> bool:
        return not self._rt.finished.is_set()

    @property
    def registry(self) -> Any:
        return self._rt.dag.registry

    def wait(self, timeout: Optional[float] = None) -> RunResult:
        """Block until the run ends; raises ``StreamError`` (the node's error) if a node failed
        and ``phasekit.errors.Timeout`` if ``timeout`` seconds pass first."""
        return self._rt.wait(timeout)

    def stop(self, drain: bool = True, timeout: Optional[float] = None) -> RunResult:
        """Stop the sources; with ``drain`` everything in flight is processed first,
        without it the run is cancelled. Returns the run's result."""
        if drain:
            self._rt.request_stop()
        else:
            self._rt.cancel()
        return self._rt.wait(timeout)

    def cancel(self) -> None:
        """Close every channel now; items in flight are dropped. Does not wait."""
        self._rt.cancel()

    async def wait_async(self, timeout: Optional[float] = None) -> RunResult:
        """``wait()`` for asyncio code: awaits the end of the run without blocking the
        event loop. Cancelling the awaiting task cancels the run."""
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(None, self._rt.wait, timeout)
        except asyncio.CancelledError:
            self._rt.cancel()
            raise

    async def stop_async(self, drain: bool = True, timeout: Optional[float] = None) -> RunResult:
        """``stop()`` for asyncio code."""
        if drain:
            self._rt.request_stop()
        else:
            self._rt.cancel()
        return await self.wait_async(timeout)

    async def __aenter__(self) -> DagHandle:
        return self

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if self.running:
            self._rt.cancel()
            try:
                await self.wait_async()
            except StreamError:
                if exc_type is None:
                    raise

    def stats(self) -> Snapshot:
        return self._rt.snapshot()

    def serve_metrics(self, port: int = 0, addr: str = "127.0.0.1") -> Any:
        return self._rt.dag.serve_metrics(port, addr)

    def __enter__(self) -> DagHandle:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if self.running:
            self._rt.cancel()
            try:
                self._rt.wait()
            except StreamError:
                if exc_type is None:
                    raise


# ------------------------------------------------------------------ the runtime


class Runtime:
    """Builds the channels and threads of one run of a validated Dag and supervises them."""

    def __init__(self, dag: Dag) -> None:
        self.dag = dag
        self.settings = dag.settings
        self.stop_event = threading.Event()
        self.cancel_event = threading.Event()
        self.finished = threading.Event()
        self.aio = DagLoop(dag.name, self.cancel_event)
        self.stopping = False
        self.cancelled = False
        self.failure: Optional[tuple[_Instance, BaseException]] = None
        self._fail_lock = threading.Lock()
        self._channel_cls = phasekit.Channel
        self.queues: dict[str, list[_Queue]] = {}
        self.instances: list[_Instance] = []
        self.sources: list[_SourceInstance] = []
        self.feedbacks: list[Feedback] = []
        self._started = 0.0
        self._elapsed: Optional[float] = None
        self._ticker: Optional[threading.Thread] = None
        self._reporters: list[tuple[Feedback, Callable[[], float]]] = []
        self._senders = itertools.count()
        self._build()
        self._alive = len(self.instances)
        self._alive_lock = threading.Lock()

    # -------------------------------------------------------------- building

    def _build(self) -> None:
        dag = self.dag
        for spec in dag.nodes.values():
            if spec.kind != "source":
                self.queues[spec.id] = self._make_queues(spec)
            for fb in spec.feedback:
                if fb not in self.feedbacks:
                    self.feedbacks.append(fb)
        marked = self._marked_nodes()
        for spec in dag.nodes.values():
            for i in range(spec.parallelism):
                emitter = _Emitter(spec.id, self._make_routes(spec.id, marked), spec.ports)
                for q in emitter.queues:
                    q.senders += 1
                inst: _Instance
                if spec.kind == "source":
                    inst = _SourceInstance(self, spec, i, emitter)
                    self.sources.append(inst)
                else:
                    qs = self.queues[spec.id]
                    inst = _WorkerInstance(self, spec, i, emitter, qs[i % len(qs)])
                    self._reporters.extend(inst.pressure_reporters())
                self.instances.append(inst)
        for inst in self.instances:
            if isinstance(inst, _WorkerInstance) and inst.queue.mark_senders:
                inst.impl.expect_watermarks(list(inst.queue.mark_senders))

    def _make_queues(self, spec: NodeSpec) -> list[_Queue]:
        default = self.settings.capacity
        if spec.capacity is not None:
            capacity = spec.capacity
        else:
            capacity = sum(
                e.capacity if e.capacity is not None else default
                for e in self.dag.edges
                if e.dst == spec.id
            )
        if spec.parallelism > 1 and spec.key is None:
            return [_Queue(self._channel_cls(capacity), spec.id, "shared")]
        return [
            _Queue(self._channel_cls(capacity), spec.id, str(i)) for i in range(spec.parallelism)
        ]

    def _marked_nodes(self) -> set[str]:
        """Event-time nodes whose inputs carry watermark marks: keyed parallel ones and
        those with several inputs (see ``phasekit.stream.eventtime``)."""
        marked = set()
        for spec in self.dag.nodes.values():
            impl = spec.impl
            if isinstance(impl, type) or not callable(getattr(impl, "expect_watermarks", None)):
                continue
            if spec.parallelism > 1 and spec.key is None:
                continue  # one shared channel: no input order to derive event time from
            inputs = sum(
                self.dag.nodes[e.src].parallelism for e in self.dag.edges if e.dst == spec.id
            )
            if spec.parallelism > 1 or inputs > 1:
                marked.add(spec.id)
        return marked

    def _make_routes(self, src: str, marked: set[str]) -> dict[str, list[_Route]]:
        """The routes of one instance of ``src`` (their own objects: a route carrying
        marks keeps the watermark of its sender's items)."""
        routes: dict[str, list[_Route]] = {}
        for e in self.dag.edges:
            if e.src != src:
                continue
            dst = self.dag.nodes[e.dst]
            qs = self.queues[e.dst]
            part = None
            if len(qs) > 1:
                assert dst.key is not None
                part = Partitioner(dst.key, len(qs), dst.seed)
            marks = None
            if e.dst in marked:
                sender = next(self._senders)
                marks = _Marks(sender, dst.impl.event_time, dst.impl.policy.watermark(), len(qs))
                for q in qs:
                    q.mark_senders.append(sender)
            routes.setdefault(e.port, []).append(_Route(qs, part, marks))
        return routes

    # -------------------------------------------------------------- lifecycle

    def start(self) -> DagHandle:
        self.dag.metrics.attach(self.snapshot)
        self._started = time.perf_counter()
        for fb, pressure in self._reporters:
            fb.attach(pressure)
        for inst in self.instances:
            inst.thread.start()
        self._ticker = threading.Thread(
            target=self._tick, name=f"phasekit-stream:{self.dag.name}:ticker", daemon=True
        )
        self._ticker.start()
        log.debug("stream %r started: %d threads", self.dag.name, len(self.instances))
        return DagHandle(self)

    def _tick(self) -> None:
        interval = self.settings.latency_interval
        probes = [fb for fb in self.feedbacks if fb.polled]
        stalls = _PauseWatch(self, [fb for fb in self.feedbacks if not fb.polled])
        while not self.finished.wait(interval):
            for src in self.sources:
                src.marker_due = True
            for fb in probes:
                fb.poll()
            stalls.check()

    def instance_done(self) -> None:
        with self._alive_lock:
            self._alive -= 1
            last = self._alive == 0
        if last:
            self._elapsed = time.perf_counter() - self._started
            for fb, pressure in self._reporters:
                fb.detach(pressure)
            self.aio.close()
            self.finished.set()
            log.debug("stream %r finished in %.3f s", self.dag.name, self._elapsed)

    def request_stop(self) -> None:
        if not self.stopping:
            log.info("stream %r: stopping the sources and draining", self.dag.name)
        self.stopping = True
        self.stop_event.set()
        for src in self.sources:
            src.reader.cancel_async()

    def cancel(self) -> None:
        self.cancelled = True
        self.cancel_event.set()
        self.request_stop()
        for qs in self.queues.values():
            for q in qs:
                q.ch.close()

    def fail(self, inst: _Instance, exc: BaseException) -> None:
        with self._fail_lock:
            first = self.failure is None
            if first:
                self.failure = (inst, exc)
        if first:
            log.debug(
                "stream %r: node %r (instance %d) failed: %s",
                self.dag.name,
                inst.spec.id,
                inst.index,
                format_exception(exc),
            )
            self.cancel()
        elif not isinstance(exc, ChannelClosed):
            log.warning("stream %r: node %r also failed: %r", self.dag.name, inst.spec.id, exc)

    def wait(self, timeout: Optional[float] = None) -> RunResult:
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            for inst in self.instances:
                while inst.thread.is_alive():
                    left = 0.1 if deadline is None else min(0.1, deadline - time.monotonic())
                    if left <= 0:
                        raise Timeout(
                            f"stream {self.dag.name!r} still running after {timeout} s "
                            f"(waiting for node {inst.spec.id!r})"
                        )
                    inst.thread.join(left)
        except KeyboardInterrupt:
            self.cancel()
            raise
        self.finished.wait()
        if self.failure is not None:
            raise self._error()
        return self._result()

    def _error(self) -> StreamError:
        assert self.failure is not None
        inst, exc = self.failure
        tb = format_exception(exc)
        err = StreamError(
            f"stream {self.dag.name!r}: {inst.spec.kind} {inst.spec.id!r} (instance "
            f"{inst.index}) failed with {type(exc).__name__}: {exc}\n"
            f"--- traceback of node {inst.spec.id!r} ---\n{tb}"
        )
        err.node = inst.spec.id  # type: ignore[attr-defined]
        err.instance = inst.index  # type: ignore[attr-defined]
        err.node_traceback = tb  # type: ignore[attr-defined]
        err.__cause__ = exc
        return err

    def metrics_latency(self, node: str, seconds: float) -> None:
        self.dag.metrics.observe_latency(node, seconds)

    # -------------------------------------------------------------- reporting

    def _node_snapshots(self) -> list[NodeSnapshot]:
        by_node: dict[str, NodeSnapshot] = {}
        for inst in self.instances:
            spec = inst.spec
            snap = by_node.get(spec.id)
            if snap is None:
                snap = by_node[spec.id] = NodeSnapshot(spec.id, spec.kind, 0, 0, 0, spec.on_error)
            snap.items_in += inst.items_in
            snap.items_out += inst.items_out
            snap.errors += inst.policy.count
            for name, value in inst.counters.items():
                snap.counters[name] = snap.counters.get(name, 0) + value
            wm = inst.watermark_ns
            if wm is not None:
                snap.watermark_ns = wm if snap.watermark_ns is None else min(snap.watermark_ns, wm)
            if isinstance(inst, _SourceInstance) and inst.throttled:
                snap.throttled_sources += 1
        for snap in by_node.values():
            snap.late = snap.counters.get("late", 0)
        return list(by_node.values())

    def snapshot(self) -> Snapshot:
        queues = []
        for node, qs in self.queues.items():
            for q in qs:
                s = q.ch.stats()
                queues.append(
                    QueueSnapshot(
                        node,
                        q.label,
                        s["depth"],
                        s["capacity"],
                        s["high_water"],
                        s["sent"],
                        s["received"],
                        float(s["blocked_send_seconds"]),
                    )
                )
        feedbacks = [
            FeedbackSnapshot(
                fb.name,
                fb.pressure,
                fb.high,
                fb.low,
                fb.throttled,
                fb.episodes,
                fb.current_throttled_seconds(),
            )
            for fb in self.feedbacks
        ]
        running = not self.finished.is_set()
        return Snapshot(running, self._node_snapshots(), queues, feedbacks)

    def _result(self) -> RunResult:
        snap = self.snapshot()
        result = RunResult(
            dag=self.dag.name,
            elapsed=self._elapsed or 0.0,
            cancelled=self.cancelled,
            stopped=self.stopping and not self.cancelled,
        )
        for n in snap.nodes:
            result.nodes[n.node] = {
                "kind": n.kind,
                "items_in": n.items_in,
                "items_out": n.items_out,
                "errors": n.errors,
                "late": n.late,
                "counters": dict(n.counters),
            }
        for q in snap.queues:
            result.queues.setdefault(q.node, []).append(
                {
                    "instance": q.instance,
                    "depth": q.depth,
                    "capacity": q.capacity,
                    "high_water": q.high_water,
                    "sent": q.sent,
                    "received": q.received,
                    "blocked_send_seconds": q.blocked_send_seconds,
                }
            )
        for spec in self.dag.nodes.values():
            if spec.kind != "sink":
                continue
            values = [
                i.result
                for i in self.instances
                if i.spec is spec and isinstance(i, _WorkerInstance)
            ]
            result.results[spec.id] = values[0] if spec.parallelism == 1 else values
        return result


__all__ = ["ERRORS_PORT", "DagHandle", "RunResult", "Runtime"]
