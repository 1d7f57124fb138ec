"""Building a streaming graph: sources, transforms and sinks, their connections, validation.

A ``Dag`` holds node specifications and edges; ``validate()`` checks the graph as a
whole (cycles, unconnected inputs and outputs, sources nobody consumes, required ports)
and names the nodes involved. ``run()`` and ``start()`` hand the validated graph to
the runtime.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Optional

from phasekit.errors import InvalidArgument, StreamError
from phasekit.stream.eventtime import field_getter
from phasekit.stream.feedback import Feedback, as_feedback_list
from phasekit.stream.metrics import DagMetrics, MetricsServer, serve_metrics
from phasekit.stream.nodes import (
    DEFAULT_PORT,
    ERRORS_PORT,
    check_policy,
    declared_ports,
)
from phasekit.stream.partition import check_partitions

_ID = re.compile(r"^[A-Za-z0-9_.\-]+$")


@dataclass(frozen=True)
class StreamSettings:
    """Runtime settings of a Dag.

    ``capacity``: default capacity of an edge (items). ``batch_size``: most items a node
    takes from its input per call (``recv_many``). ``latency_interval``: seconds between
    latency samples (and feedback probe polls). ``tick_interval``: seconds between
    ``on_tick`` calls of nodes that have one. ``poll_interval``: sleep of a polling
    source whose ``process()`` returned None.
    """

    capacity: int = 1024
    batch_size: int = 256
    latency_interval: float = 0.1
    tick_interval: float = 0.05
    poll_interval: float = 0.01

    def __post_init__(self) -> None:
        for name in ("capacity", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidArgument(f"{name} must be an integer >= 1, got {value!r}")
        for name in ("latency_interval", "tick_interval", "poll_interval"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or value <= 0:
                raise InvalidArgument(f"{name} must be a number of seconds > 0, got {value!r}")


@dataclass
class NodeSpec:
    """One node of a Dag as the runtime needs it."""

    id: str
    kind: str
    impl: Any
    parallelism: int = 1
    key: Optional[Callable[[Any], Any]] = None
    seed: int = 0
    on_error: str = "fail"
    capacity: Optional[int] = None
    ports: frozenset[str] = frozenset()
    required_ports: frozenset[str] = frozenset()
    uses_default_port: bool = True
    feedback: tuple[Feedback, ...] = ()
    timestamp: Optional[Callable[[Any], Any]] = None
    chunk: Optional[int] = None


@dataclass(frozen=True)
class EdgeSpec:
    """An edge from a port of ``src`` to ``dst`` with an optional own capacity."""

    src: str
    dst: str
    port: str = DEFAULT_PORT
    capacity: Optional[int] = None

    def __str__(self) -> str:
        port = "" if self.port == DEFAULT_PORT else f":{self.port}"
        return f"{self.src}{port} -> {self.dst}"


def _check_capacity(value: Any, where: str) -> Optional[int]:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidArgument(f"{where}: capacity must be an integer >= 1, got {value!r}")
    return value


@dataclass
class _Problems:
    items: list[str] = field(default_factory=list)

    def add(self, text: str) -> None:
        self.items.append(text)


class Dag:
    """A streaming graph of sources, transforms and sinks connected by bounded channels.

    >>> dag = Dag("example")
    >>> dag.add_source("numbers", range(5))
    >>> dag.add_node("double", lambda x: 2 * x)
    >>> dag.add_sink("print", print)
    >>> dag.chain("numbers", "double", "print")
    >>> result = dag.run()
    """

    def __init__(
        self,
        name: str = "dag",
        *,
        capacity: Optional[int] = None,
        batch_size: Optional[int] = None,
        settings: Optional[StreamSettings] = None,
    ) -> None:
        if not isinstance(name, str) or not _ID.match(name):
            raise InvalidArgument(
                f"Dag name must be letters, digits, '_', '.' or '-', got {name!r}"
            )
        base = settings or StreamSettings()
        overrides: dict[str, Any] = {}
        if capacity is not None:
            overrides["capacity"] = capacity
        if batch_size is not None:
            overrides["batch_size"] = batch_size
        self.name = name
        self.settings = replace(base, **overrides) if overrides else base
        self.nodes: dict[str, NodeSpec] = {}
        self.edges: list[EdgeSpec] = []
        self.metrics = DagMetrics(name)

    # -------------------------------------------------------------- building

    def _add(self, spec: NodeSpec) -> str:
        if not isinstance(spec.id, str) or not _ID.match(spec.id):
            raise InvalidArgument(
                f"node id must be a non-empty string of letters, digits, '_', '.' or '-', "
                f"got {spec.id!r}"
            )
        if spec.id in self.nodes:
            raise StreamError(
                f"dag {self.name!r}: duplicate node id {spec.id!r} "
                f"(already a {self.nodes[spec.id].kind})"
            )
        self.nodes[spec.id] = spec
        return spec.id

    def _spec(
        self,
        id: str,
        kind: str,
        impl: Any,
        *,
        parallelism: int,
        key: Any,
        seed: int,
        on_error: str,
        capacity: Any,
        outputs: Any,
        feedback: Any,
        timestamp: Any,
    ) -> NodeSpec:
        check_partitions(parallelism, f"node {id!r}: parallelism")
        policy = check_policy(on_error, id)
        extra, required = declared_ports(impl)
        extra = extra + tuple(outputs or ())
        ports = set(extra)
        uses_default = bool(getattr(impl, "uses_default_port", True)) and kind != "sink"
        if uses_default:
            ports.add(DEFAULT_PORT)
        needed = set(required)
        if policy == "dead_letter":
            ports.add(ERRORS_PORT)
            needed.add(ERRORS_PORT)
        if key is not None and kind == "source":
            raise InvalidArgument(
                f"source {id!r}: key= partitions a node's input; sources have none"
            )
        return NodeSpec(
            id=id,
            kind=kind,
            impl=impl,
            parallelism=parallelism,
            key=field_getter(key, f"node {id!r}: key"),
            seed=int(seed),
            on_error=policy,
            capacity=_check_capacity(capacity, f"node {id!r}"),
            ports=frozenset(ports),
            required_ports=frozenset(needed),
            uses_default_port=uses_default,
            feedback=as_feedback_list(feedback, id),
            timestamp=field_getter(timestamp, f"node {id!r}: timestamp"),
        )

    def add_source(
        self,
        id: str,
        source: Any,
        *,
        parallelism: int = 1,
        on_error: str = "fail",
        feedback: Any = None,
        timestamp: Any = None,
        outputs: Any = None,
        chunk: Optional[int] = None,
    ) -> str:
        """Add a source: an iterable, async iterable, (async) generator function, a callable
        returning one (called with the NodeContext if it takes an argument), or an object
        with ``open/process/close`` whose ``process()`` returns the next item, None when
        nothing is ready, or ``phasekit.stream.END``. ``feedback``: Feedback object(s) that
        slow this source down. With ``parallelism > 1`` give a callable or class so each
        instance reads its own part.

        ``chunk``: items sent downstream per channel call. Chunks are faster but an item
        waits until its chunk is full, so keep 1 (the default for iterators, generators
        and async sources) for sources that block between items (live feeds). In-memory
        sequences (list, tuple, range) default to ``batch_size``; pass ``chunk=`` for
        other sources that never block (files, generators over in-memory data)."""
        spec = self._spec(
            id, "source", source, parallelism=parallelism, key=None, seed=0,
            on_error=on_error, capacity=None, outputs=outputs, feedback=feedback,
            timestamp=timestamp,
        )  # fmt: skip
        spec.chunk = _check_capacity(chunk, f"source {id!r}: chunk")
        if parallelism > 1 and not callable(source):
            raise InvalidArgument(
                f"source {id!r}: parallelism {parallelism} needs a callable or class that "
                "produces one iterable per instance, not a shared iterable"
            )
        return self._add(spec)

    def add_node(
        self,
        id: str,
        fn: Any,
        *,
        parallelism: int = 1,
        key: Any = None,
        seed: int = 0,
        on_error: str = "fail",
        capacity: Optional[int] = None,
        outputs: Any = None,
        timestamp: Any = None,
        feedback: Any = None,
    ) -> str:
        """Add a transform: a callable (None means no output), a generator function, an
        object or class with ``open/process/close`` (or ``process_batch``), or an operator
        from ``phasekit.stream.operators``.

        ``parallelism`` runs n instances; with ``key`` (callable or field name) each item
        goes to instance ``partition(key(item), n, seed)`` so a key's items stay in order
        on one instance; without a key the instances share one input channel.
        ``on_error``: ``fail`` (the run fails with this node's traceback), ``skip`` (count
        and go on) or ``dead_letter`` (send a DeadLetter to the node's ``errors`` port).
        ``capacity``: this node's input channel capacity (default: the sum of its
        incoming edges' capacities). ``outputs``: extra named ports for ``Out(port, x)``.
        ``feedback``: the Feedback this node reports to (``ctx.report_pressure(value)``,
        and its ``pressure()`` method, if any, is polled; see ``phasekit.stream.feedback``).
        """
        spec = self._spec(
            id, "transform", fn, parallelism=parallelism, key=key, seed=seed,
            on_error=on_error, capacity=capacity, outputs=outputs, feedback=feedback,
            timestamp=timestamp,
        )  # fmt: skip
        return self._add(spec)

    def add_sink(
        self,
        id: str,
        fn: Any,
        *,
        parallelism: int = 1,
        key: Any = None,
        seed: int = 0,
        on_error: str = "fail",
        capacity: Optional[int] = None,
        feedback: Any = None,
        timestamp: Any = None,
    ) -> str:
        """Add a sink: a callable or an object with ``open/process/close`` (or
        ``process_batch``). The return value of its ``close()`` is kept in
        ``RunResult.results[id]``. ``feedback``: the Feedback this sink reports to
        (``ctx.report_pressure(value)``; its ``pressure()`` method, if any, is polled).
        Other arguments as in ``add_node``."""
        spec = self._spec(
            id, "sink", fn, parallelism=parallelism, key=key, seed=seed, on_error=on_error,
            capacity=capacity, outputs=None, feedback=feedback, timestamp=timestamp,
        )  # fmt: skip
        return self._add(spec)

    def connect(
        self, src: str, dst: str, *, port: str = DEFAULT_PORT, capacity: Optional[int] = None
    ) -> EdgeSpec:
        """Connect port ``port`` of ``src`` to ``dst``. Fan-out (one port to several nodes)
        sends every item to each; fan-in merges the inputs of a node into one channel."""
        where = f"dag {self.name!r}: edge {src!r} -> {dst!r}"
        for name in (src, dst):
            if name not in self.nodes:
                known = ", ".join(self.nodes) or "none"
                raise StreamError(f"{where}: unknown node {name!r} (nodes: {known})")
        s, d = self.nodes[src], self.nodes[dst]
        if s.kind == "sink" and port != ERRORS_PORT:
            raise StreamError(f"{where}: {src!r} is a sink and has no output")
        if d.kind == "source":
            raise StreamError(f"{where}: {dst!r} is a source and takes no input")
        if port not in s.ports:
            ports = ", ".join(sorted(s.ports)) or "none"
            raise StreamError(f"{where}: node {src!r} has no port {port!r} (ports: {ports})")
        edge = EdgeSpec(src, dst, port, _check_capacity(capacity, where))
        if any((e.src, e.dst, e.port) == (src, dst, port) for e in self.edges):
            raise StreamError(f"{where}: already connected (port {port!r})")
        self.edges.append(edge)
        return edge

    def chain(self, *ids: str, capacity: Optional[int] = None) -> None:
        """Connect ``ids[0] -> ids[1] -> ...`` on their default ports."""
        for src, dst in itertools.pairwise(ids):
            self.connect(src, dst, capacity=capacity)

    # -------------------------------------------------------------- validation

    def validate(self) -> None:
        """Check the whole graph; raises ``StreamError`` listing every problem found."""
        problems = _Problems()
        if not self.nodes:
            problems.add("the graph has no nodes")
        if self.nodes and not any(n.kind == "source" for n in self.nodes.values()):
            problems.add("the graph has no source")
        self._check_connections(problems)
        cycle = self._find_cycle()
        if cycle:
            problems.add("cycle: " + " -> ".join(cycle))
        if problems.items:
            listing = "\n  - ".join(problems.items)
            raise StreamError(f"dag {self.name!r} is invalid:\n  - {listing}")

    def _check_connections(self, problems: _Problems) -> None:
        inputs = {e.dst for e in self.edges}
        connected = {(e.src, e.port) for e in self.edges}
        for n in self.nodes.values():
            if n.kind != "source" and n.id not in inputs:
                problems.add(f"{n.kind} {n.id!r} has no input")
            if n.kind == "source" and not any(src == n.id for src, _ in connected):
                problems.add(f"source {n.id!r} has no consumer")
            if n.kind == "transform" and n.uses_default_port:
                if (n.id, DEFAULT_PORT) not in connected:
                    problems.add(f"transform {n.id!r}: its output is not connected")
            if n.kind == "transform" and not n.uses_default_port:
                if not any(src == n.id for src, _ in connected):
                    problems.add(f"transform {n.id!r}: none of its outputs is connected")
            for port in sorted(n.required_ports):
                if (n.id, port) not in connected:
                    problems.add(f"{n.kind} {n.id!r}: port {port!r} must be connected")

    def _find_cycle(self) -> list[str]:
        succ: dict[str, list[str]] = {n: [] for n in self.nodes}
        for e in self.edges:
            if e.dst not in succ[e.src]:
                succ[e.src].append(e.dst)
        state: dict[str, int] = {}  # 1: on the path, 2: done
        path: list[str] = []

        def visit(node: str) -> list[str]:
            state[node] = 1
            path.append(node)
            for nxt in succ[node]:
                if state.get(nxt) == 1:
                    return [*path[path.index(nxt) :], nxt]
                if nxt not in state:
                    found = visit(nxt)
                    if found:
                        return found
            path.pop()
            state[node] = 2
            return []

        for node in self.nodes:
            if node not in state:
                found = visit(node)
                if found:
                    return found
        return []

    # -------------------------------------------------------------- running

    def start(self) -> Any:
        """Validate, start every node's threads and return a ``DagHandle``."""
        from phasekit.stream.runtime import Runtime

        self.validate()
        return Runtime(self).start()

    def run(self, timeout: Optional[float] = None) -> Any:
        """Run until finite sources are exhausted and everything in flight is processed.

        Returns a ``RunResult``; a failed node raises ``StreamError`` with its traceback.
        With ``timeout`` seconds, the run is cancelled and ``Timeout`` raised when it
        takes longer.
        """
        handle = self.start()
        try:
            return handle.wait(timeout)
        except BaseException:
            if handle.running:
                handle.cancel()
            raise

    async def run_async(self, timeout: Optional[float] = None) -> Any:
        """``run()`` for asyncio code: the run's threads work while the caller's event loop
        stays free; cancelling the awaiting task cancels the run. Returns a ``RunResult``."""
        handle = self.start()
        try:
            return await handle.wait_async(timeout)
        except BaseException:
            if handle.running:
                handle.cancel()
            raise

    @property
    def registry(self) -> Any:
        """This Dag's ``prometheus_client.CollectorRegistry``."""
        return self.metrics.registry

    def serve_metrics(self, port: int = 0, addr: str = "127.0.0.1") -> MetricsServer:
        """Serve this Dag's metrics in the Prometheus text format (loopback by default)."""
        return serve_metrics(port, addr, self.metrics.registry)

    # -------------------------------------------------------------- descriptions

    @classmethod
    def from_spec(
        cls, spec: Mapping[str, Any], bindings: Optional[Mapping[str, Any]] = None
    ) -> Dag:
        """Build a Dag from a dict (see ``phasekit.stream.spec``); bad specs raise
        ConfigError. ``bindings`` maps extra node type names to nodes used as they are."""
        from phasekit.stream.spec import build_dag

        return build_dag(spec, cls, bindings)

    @classmethod
    def from_yaml(cls, source: Any) -> Dag:
        """Build a Dag from YAML text or a path to a YAML file (see ``from_spec``)."""
        from phasekit.stream.spec import load_yaml

        return cls.from_spec(load_yaml(source))

    def __repr__(self) -> str:
        return f"Dag({self.name!r}, nodes={len(self.nodes)}, edges={len(self.edges)})"
