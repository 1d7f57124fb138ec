"""Reusable operators: map, filter, flat_map, batch, dedupe, throttle, router, stateful_map,
plus the window operators (``tumbling``, ``sliding``, ``session``) and ``ohlc_resample``.

Each call returns a node object for ``Dag.add_node`` (the lowercase names of the
stateful operators are their classes). Objects keep their state, so a
node with ``parallelism > 1`` gets one deep copy per instance; counters that the
metrics export (``dropped``, ``duplicates``, ``late``, ...) live in ``.counters``.
"""

from __future__ import annotations

import builtins
import time
from collections import OrderedDict, deque
from collections.abc import Mapping, Sequence
from typing import Any, Callable, Optional

from phasekit.errors import InvalidArgument
from phasekit.stream.aio import is_async_callable
from phasekit.stream.eventtime import field_getter, positive_duration, to_ns
from phasekit.stream.nodes import NodeContext, Out
from phasekit.stream.ohlc import OhlcResample, ohlc_resample
from phasekit.stream.windows import (
    SessionWindows,
    SlidingWindows,
    TumblingWindows,
    WindowOperator,
    WindowResult,
    session,
    sliding,
    tumbling,
    window,
)


def _callable(fn: Any, name: str) -> Callable[..., Any]:
    if not callable(fn):
        raise InvalidArgument(f"{name} must be callable, got {fn!r}")
    return fn  # type: ignore[no-any-return]


class FnOperator:
    """``map``/``filter``/``flat_map``: the runtime calls ``fn`` per item with no wrapper."""

    def __init__(self, mode: str, fn: Callable[[Any], Any]) -> None:
        self.stream_mode = mode
        self.fn = _callable(fn, f"{mode}: fn")

    def __repr__(self) -> str:
        return f"{self.stream_mode}({getattr(self.fn, '__name__', self.fn)!r})"


def map(fn: Callable[[Any], Any]) -> FnOperator:
    """One output per item: ``fn(item)`` (``None`` means no output)."""
    return FnOperator("map", fn)


def filter(fn: Callable[[Any], Any]) -> FnOperator:
    """The items for which ``fn(item)`` is true."""
    return FnOperator("filter", fn)


def flat_map(fn: Callable[[Any], Any]) -> FnOperator:
    """Every element of the iterable ``fn(item)`` (``None`` means none)."""
    return FnOperator("flat_map", fn)


class Batch:
    """Groups items into lists of ``size``; with ``timeout`` a partial list is emitted once
    its first item has waited that long (processing time). The rest is emitted at the end."""

    def __init__(
        self, size: int, timeout: Any = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise InvalidArgument(f"batch: size must be an integer >= 1, got {size!r}")
        self.size = size
        self.timeout = None if timeout is None else positive_duration(timeout, "timeout") / 1e9
        self.clock = clock
        self.wants_tick = self.timeout is not None
        self._items: list[Any] = []
        self._since = 0.0
        self.counters = {"batches": 0}

    def process(self, item: Any) -> Optional[list[Any]]:
        items = self._items
        if not items and self.timeout is not None:
            self._since = self.clock()
        items.append(item)
        if len(items) >= self.size:
            return self._flush()
        return None

    def _flush(self) -> list[Any]:
        items, self._items = self._items, []
        self.counters["batches"] += 1
        return items

    def next_due(self) -> Optional[float]:
        """When (``time.monotonic()`` seconds) the partial list is due, if there is one: the
        runtime wakes the node then rather than at its next tick."""
        if not self._items or self.timeout is None:
            return None
        return time.monotonic() + self._since + self.timeout - self.clock()

    def on_tick(self, now_ns: int) -> Optional[list[list[Any]]]:
        if self._items and self.timeout is not None:
            if self.clock() - self._since >= self.timeout:
                return [self._flush()]
        return None

    def close(self) -> list[list[Any]]:
        return [self._flush()] if self._items else []


batch = Batch


class Dedupe:
    """Drops an item whose key was already emitted recently.

    ``last_n``: the key is among the keys of the last ``last_n`` emitted items.
    ``within``: the key was emitted less than ``within`` before or after (event time read
    by ``timestamp`` when given, else processing time from ``clock`` in nanoseconds). A
    key is remembered until the newest timestamp seen is ``within`` past it, which
    bounds the memory; an item older than that is not compared with it.
    Dropped items are counted in ``counters["duplicates"]``.
    """

    stream_mode = "filter"

    def __init__(
        self,
        key: Any = None,
        *,
        last_n: Optional[int] = None,
        within: Any = None,
        timestamp: Any = None,
        clock: Callable[[], int] = time.monotonic_ns,
    ) -> None:
        if (last_n is None) == (within is None):
            raise InvalidArgument("dedupe needs exactly one of last_n= or within=")
        if last_n is not None and (
            isinstance(last_n, bool) or not isinstance(last_n, int) or last_n < 1
        ):
            raise InvalidArgument(f"dedupe: last_n must be an integer >= 1, got {last_n!r}")
        self.key = field_getter(key, "key")
        self.last_n = last_n
        self.within = None if within is None else positive_duration(within, "within")
        self.timestamp = field_getter(timestamp, "timestamp")
        self.clock = clock
        self.counters = {"duplicates": 0}
        self._recent: OrderedDict[Any, None] = OrderedDict()
        self._last: dict[Any, int] = {}
        self._expiry: deque[tuple[int, Any]] = deque()
        self._now = -(2**63)

    @property
    def fn(self) -> Callable[[Any], bool]:
        return self._by_count if self.last_n is not None else self._by_time

    def _by_count(self, item: Any) -> bool:
        k = self.key(item) if self.key is not None else item
        recent = self._recent
        if k in recent:
            self.counters["duplicates"] += 1
            return False
        recent[k] = None
        if len(recent) > self.last_n:  # type: ignore[operator]
            recent.popitem(last=False)
        return True

    def _by_time(self, item: Any) -> bool:
        k = self.key(item) if self.key is not None else item
        ts = to_ns(self.timestamp(item)) if self.timestamp is not None else self.clock()
        within = self.within
        assert within is not None
        if ts > self._now:
            self._now = ts
            expiry, last = self._expiry, self._last
            horizon = ts - within
            while expiry and expiry[0][0] <= horizon:
                old_ts, old_key = expiry.popleft()
                if last.get(old_key) == old_ts:
                    del last[old_key]
        prev = self._last.get(k)
        if prev is not None and builtins.abs(ts - prev) < within:
            self.counters["duplicates"] += 1
            return False
        self._last[k] = ts
        self._expiry.append((ts, k))
        return True


dedupe = Dedupe


class Throttle:
    """Token bucket of ``rate`` tokens per second and ``burst`` tokens; an item costs
    ``cost(item)`` tokens (default 1; e.g. ``len`` for batches).

    ``mode="delay"`` waits for the tokens (upstream feels backpressure); ``mode="drop"``
    drops an item when the bucket lacks its tokens (``counters["dropped"]``). With ``key``
    every key has its own bucket.

    A bucket starts with ``initial`` tokens (default ``burst``: the first ``burst`` items
    pass at once); ``initial=0`` makes the first item wait ``cost/rate`` too, so n items
    take n/rate seconds. Each item that passes is sent downstream when it is due, not
    with the rest of its input batch (``emits_when_due``).
    """

    emits_when_due = True

    def __init__(
        self,
        rate: float,
        *,
        burst: Optional[float] = None,
        mode: str = "delay",
        key: Any = None,
        cost: Optional[Callable[[Any], float]] = None,
        initial: Optional[float] = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Optional[Callable[[float], Any]] = None,
    ) -> None:
        if not isinstance(rate, (int, float)) or isinstance(rate, bool) or rate <= 0:
            raise InvalidArgument(f"throttle: rate must be a number > 0 per second, got {rate!r}")
        if mode not in ("delay", "drop"):
            raise InvalidArgument(f"throttle: mode must be 'delay' or 'drop', got {mode!r}")
        burst = 1.0 if burst is None else burst
        if not isinstance(burst, (int, float)) or burst <= 0:
            raise InvalidArgument(f"throttle: burst must be a number > 0, got {burst!r}")
        initial = burst if initial is None else initial
        if (
            not isinstance(initial, (int, float))
            or isinstance(initial, bool)
            or not 0 <= initial <= burst
        ):
            raise InvalidArgument(
                f"throttle: initial must be a number of tokens from 0 to burst ({burst}), "
                f"got {initial!r}"
            )
        self.initial = float(initial)
        self.rate = float(rate)
        self.burst = float(burst)
        self.mode = mode
        self.key = field_getter(key, "key")
        self.cost = cost
        self.clock = clock
        self._sleep = sleep
        self._buckets: dict[Any, list[float]] = {}
        self.counters = {"passed": 0, "dropped": 0, "delayed": 0}
        self.delayed_seconds = 0.0
        self.stream_mode = "filter"

    def open(self, ctx: NodeContext) -> None:
        if self._sleep is None:
            self._sleep = ctx.sleep

    @property
    def fn(self) -> Callable[[Any], bool]:
        return self.admit

    def admit(self, item: Any) -> bool:
        """True when the item passes (after waiting, in delay mode)."""
        k = self.key(item) if self.key is not None else None
        need = float(self.cost(item)) if self.cost is not None else 1.0
        now = self.clock()
        bucket = self._buckets.get(k)
        if bucket is None:
            bucket = self._buckets[k] = [self.initial, now]
        tokens = min(self.burst, bucket[0] + (now - bucket[1]) * self.rate)
        bucket[1] = now
        if tokens >= need:
            bucket[0] = tokens - need
            self.counters["passed"] += 1
            return True
        if self.mode == "drop":
            bucket[0] = tokens
            self.counters["dropped"] += 1
            return False
        wait = (need - tokens) / self.rate
        bucket[0] = tokens - need  # in debt until the wait is over
        self.counters["delayed"] += 1
        self.delayed_seconds += wait
        (self._sleep or time.sleep)(wait)
        self.counters["passed"] += 1
        return True


throttle = Throttle


class Router:
    """Sends each item to named ports: by predicates (``routes``: port -> predicate, the
    first true one wins, or all true ones with ``all_matches``) or by ``key`` (the key's
    value, or ``ports[key]`` when ``ports`` is a mapping, names the port). Items matching
    no port go to ``default`` if given, else are counted in ``counters["unrouted"]``.
    Every port must be connected."""

    uses_default_port = False
    stream_mode = "flat_map"

    def __init__(
        self,
        routes: Optional[Mapping[str, Callable[[Any], Any]]] = None,
        *,
        key: Any = None,
        ports: Optional[Any] = None,
        default: Optional[str] = None,
        all_matches: bool = False,
    ) -> None:
        if (routes is None) == (key is None):
            raise InvalidArgument("router needs exactly one of routes= or key=")
        self.routes = dict(routes or {})
        for port, pred in self.routes.items():
            _callable(pred, f"router: route {port!r}")
        self.key = field_getter(key, "key")
        if key is not None and ports is None:
            raise InvalidArgument("router: key= needs ports= (the port names, or key -> port)")
        if isinstance(ports, Mapping):
            self.port_of: dict[Any, str] = {k: str(v) for k, v in ports.items()}
        elif isinstance(ports, Sequence) and not isinstance(ports, str):
            self.port_of = {p: str(p) for p in ports}
        elif ports is None:
            self.port_of = {}
        else:
            raise InvalidArgument(f"router: ports must be a list or mapping, got {ports!r}")
        self.default = default
        self.all_matches = all_matches
        names = list(self.routes) + list(self.port_of.values())
        if default is not None:
            names.append(default)
        self.output_ports = tuple(dict.fromkeys(names))
        self.required_output_ports = self.output_ports
        self.counters = {"unrouted": 0}

    @property
    def fn(self) -> Callable[[Any], list[Out]]:
        return self.route

    def route(self, item: Any) -> list[Out]:
        out: list[Out] = []
        if self.key is not None:
            port = self.port_of.get(self.key(item))
            if port is not None:
                out.append(Out(port, item))
        else:
            for port, pred in self.routes.items():
                if pred(item):
                    out.append(Out(port, item))
                    if not self.all_matches:
                        break
        if not out:
            if self.default is not None:
                out.append(Out(self.default, item))
            else:
                self.counters["unrouted"] += 1
        return out


router = Router


class StatefulMap:
    """Per-key state: ``fn(state, item) -> (new_state, output)``; ``state`` starts as
    ``init()`` (or ``init`` itself when not callable) for each new key; output None means
    no output."""

    stream_mode = "map"

    def __init__(self, key: Any, fn: Callable[[Any, Any], tuple[Any, Any]], init: Any = None):
        self.key = field_getter(key, "key")
        self.step = _callable(fn, "stateful_map: fn")
        self.init = init
        self.states: dict[Any, Any] = {}

    @property
    def fn(self) -> Callable[[Any], Any]:
        return self.apply_async if is_async_callable(self.step) else self.apply

    def _state(self, item: Any) -> tuple[Any, Any]:
        k = self.key(item) if self.key is not None else None
        if k in self.states:
            return k, self.states[k]
        return k, self.init() if callable(self.init) else self.init

    def apply(self, item: Any) -> Any:
        k, state = self._state(item)
        self.states[k], out = self.step(state, item)
        return out

    async def apply_async(self, item: Any) -> Any:
        """``apply`` for an ``async def`` step (awaited on the run's event loop)."""
        k, state = self._state(item)
        self.states[k], out = await self.step(state, item)
        return out


stateful_map = StatefulMap


__all__ = [
    "Batch",
    "Dedupe",
    "FnOperator",
    "OhlcResample",
    "Router",
    "SessionWindows",
    "SlidingWindows",
    "StatefulMap",
    "Throttle",
    "TumblingWindows",
    "WindowOperator",
    "WindowResult",
    "batch",
    "dedupe",
    "filter",
    "flat_map",
    "map",
    "ohlc_resample",
    "router",
    "session",
    "sliding",
    "stateful_map",
    "throttle",
    "tumbling",
    "window",
]
