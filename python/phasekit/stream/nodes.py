"""What a node is: the three kinds, output ports, and how user objects become runnable nodes.

A node is a Python callable, a generator function, an object (or class) with
``open/process/close``, or, for sources, any iterable or async iterable. This module
turns each form into one of two runnable shapes: a ``Processor`` (transforms and sinks:
a batch of items in, outputs appended to a list) or a ``SourceReader`` (sources: items
out).

Return values: ``process(item)`` (and a plain callable) returns one output, or ``None``
for no output; a generator function (or a returned generator) yields any number.
``process_batch(items)``, ``on_tick(now_ns)`` and a transform's ``close()`` return an
iterable of outputs (or ``None``). A sink's ``close()`` result is kept in the run result.
"""

from __future__ import annotations

import asyncio
import copy
import inspect
import logging
import operator
import os
import threading
import traceback
import types
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any, Callable, NamedTuple, Optional

from phasekit.errors import ChannelClosed, InvalidArgument, StreamError
from phasekit.stream.aio import DagLoop, is_async_callable, is_awaitable_result
from phasekit.stream.partition import KeyedState

log = logging.getLogger(__name__)

KINDS = ("source", "transform", "sink")
ERROR_POLICIES = ("fail", "skip", "dead_letter")
DEFAULT_PORT = "out"
ERRORS_PORT = "errors"


class Out(NamedTuple):
    """An output sent to a named port of its node (``router``, late side outputs, ...)."""

    port: str
    value: Any


@dataclass
class DeadLetter:
    """What the ``errors`` port of a node with ``on_error="dead_letter"`` receives."""

    node: str
    instance: int
    item: Any
    error: str
    exception: BaseException
    traceback: str


class _End:
    def __repr__(self) -> str:
        return "END"


END = _End()
"""Returned by a polling source's ``process()`` to say the source is exhausted."""


@dataclass
class NodeContext:
    """Given to ``open(ctx)`` of a node: who it is, its keyed state, and a stoppable sleep."""

    dag: str
    node: str
    instance: int
    parallelism: int
    state: KeyedState = field(default_factory=KeyedState)
    feedback: Any = None
    timestamp: Optional[Callable[[Any], Any]] = None
    stop_event: threading.Event = field(default_factory=threading.Event)
    stopping_event: threading.Event = field(default_factory=threading.Event)
    logger: logging.Logger = log

    @property
    def stopping(self) -> bool:
        """True once the run is stopping (gracefully or not): sources should end."""
        return self.stopping_event.is_set() or self.stop_event.is_set()

    def sleep(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; returns False (early) when the run is cancelled.

        ``stop_event`` is set by a cancel (or a failure) only: throttles keep their pace
        while a graceful stop drains."""
        return not self.stop_event.wait(max(0.0, seconds))

    def report_pressure(self, value: float) -> None:
        """Report downstream pressure (e.g. a queue depth) to the node's ``feedback``."""
        if self.feedback is None:
            raise StreamError(f"node {self.node!r} reports pressure but has no feedback object")
        self.feedback.report(value)


# ------------------------------------------------------------------ helpers


def accepts_argument(fn: Any) -> bool:
    """True when ``fn``'s first positional parameter has no default: it wants the context."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return False
    for p in sig.parameters.values():
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            return p.default is p.empty
        return False
    return False


def extend_outputs(out: list[Any], result: Any, where: str = "") -> None:
    """Append an iterable of outputs (from process_batch, on_tick or close) to ``out``."""
    if result is None:
        return
    if type(result) is Out or not hasattr(result, "__iter__") or isinstance(result, (str, dict)):
        raise StreamError(
            f"{where or 'a node'} must return None or an iterable of outputs "
            f"(list, tuple, generator), got {type(result).__name__}"
        )
    out.extend(result)


def instantiate(impl: Any, instance: int) -> Any:
    """A class is instantiated; an object is used as is for instance 0 and deep-copied after."""
    if isinstance(impl, type):
        try:
            return impl()
        except TypeError as exc:
            raise InvalidArgument(
                f"cannot instantiate node class {impl.__name__} without arguments: {exc}; "
                "pass an instance or a factory instead"
            ) from exc
    if instance == 0 or inspect.isfunction(impl) or inspect.ismethod(impl):
        return impl
    try:
        return copy.deepcopy(impl)
    except Exception as exc:
        raise InvalidArgument(
            f"cannot copy {impl!r} for parallel instance {instance}: {exc}; "
            "pass the node's class or a factory so each instance gets its own object"
        ) from exc


_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


def format_exception(exc: BaseException) -> str:
    """The traceback of ``exc`` without the runtime's own leading frames."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        if not os.path.abspath(tb.tb_frame.f_code.co_filename).startswith(_PACKAGE_DIR):
            break
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(exc), exc, tb))


def open_object(obj: Any, ctx: NodeContext) -> Any:
    """Call ``obj.open(ctx)`` (or ``open()``) if it has one; returns what it returned."""
    opener = getattr(obj, "open", None)
    if opener is None:
        return None
    if accepts_argument(opener):
        return opener(ctx)
    return opener()


# ------------------------------------------------------------------ error policy


class ErrorPolicy:
    """Applies a node's ``on_error`` to an item whose processing raised."""

    __slots__ = ("count", "instance", "logged", "node", "policy")

    def __init__(self, policy: str, node: str, instance: int) -> None:
        self.policy = policy
        self.node = node
        self.instance = instance
        self.count = 0
        self.logged = False

    def __call__(self, item: Any, exc: BaseException, out: list[Any]) -> None:
        if self.policy == "fail":
            raise exc
        self.count += 1
        if not self.logged:
            self.logged = True
            log.warning(
                "node %r (instance %d) raised on an item and %s (later errors of this "
                "node are counted, not logged): %s",
                self.node,
                self.instance,
                "skipped it" if self.policy == "skip" else "sent it to its 'errors' port",
                format_exception(exc),
            )
        if self.policy == "dead_letter":
            letter = DeadLetter(
                self.node, self.instance, item, repr(exc), exc, format_exception(exc)
            )
            out.append(Out(ERRORS_PORT, letter))


# ------------------------------------------------------------------ processors


class Processor:
    """A transform or sink: ``process(items, out)`` appends the outputs of a batch."""

    is_sink = False
    aio: Optional[DagLoop] = None  # the run's event loop, for awaitable results

    def __init__(self, target: Any, on_error: ErrorPolicy) -> None:
        self.target = target
        self.on_error = on_error

    def awaited(self, value: Any) -> Any:
        """``value`` itself, or what it resolves to on the run's loop if it is awaitable."""
        if not is_awaitable_result(value):
            return value
        if self.aio is None:
            close = getattr(value, "close", None)
            if close is not None:
                close()  # no loop to await it on: do not leave it to warn on collection
            raise StreamError("an awaitable result needs the run's event loop (none given)")
        return self.aio.await_value(value)

    @property
    def has_tick(self) -> bool:
        target = self.target
        return hasattr(target, "on_tick") and bool(getattr(target, "wants_tick", True))

    def open(self, ctx: NodeContext) -> None:
        self.awaited(open_object(self.target, ctx))

    def process(self, items: list[Any], out: list[Any]) -> None:
        raise NotImplementedError

    def tick(self, now_ns: int, out: list[Any]) -> None:
        extend_outputs(out, self.awaited(self.target.on_tick(now_ns)), "on_tick()")

    def close(self, out: list[Any]) -> Any:
        closer = getattr(self.target, "close", None)
        if closer is None:
            return None
        result = self.awaited(closer())
        if self.is_sink:
            return result
        extend_outputs(out, result, "close() of a transform")
        return None


class MapProcessor(Processor):
    """One call per item; the return value follows the module's rule (None: no output).

    ``process`` runs ``kernel`` over an iterator of the batch; when a call raises, the
    iterator's position names the failing item, the error policy handles it, and the
    kernel resumes with the next item.
    """

    def __init__(self, target: Any, fn: Callable[[Any], Any], on_error: ErrorPolicy) -> None:
        super().__init__(target, on_error)
        self.fn = fn

    def process(self, items: list[Any], out: list[Any]) -> None:
        it = iter(items)
        n = len(items)
        while True:
            try:
                self.kernel(it, out)
                return
            except ChannelClosed:
                raise
            except Exception as exc:
                self.on_error(items[n - operator.length_hint(it) - 1], exc, out)

    def kernel(self, it: Iterator[Any], out: list[Any]) -> None:
        fn = self.fn
        append = out.append
        for x in it:
            r = fn(x)
            if r is not None:
                t = type(r)
                if t is types.GeneratorType:
                    out.extend(r)
                elif t is types.CoroutineType or t is types.AsyncGeneratorType:
                    self.extend_awaited(r, out)
                else:
                    append(r)

    def extend_awaited(self, r: Any, out: list[Any]) -> None:
        """A sync callable returned a coroutine or async generator: await it first."""
        value = self.awaited(r)
        if type(r) is types.AsyncGeneratorType:
            out.extend(value)
        elif value is not None:
            out.append(value)


class FlatMapProcessor(MapProcessor):
    """One call per item; every element of the returned iterable is an output."""

    def kernel(self, it: Iterator[Any], out: list[Any]) -> None:
        fn = self.fn
        extend = out.extend
        for x in it:
            r = fn(x)
            if r is not None:
                extend(self.awaited(r))


class FilterProcessor(MapProcessor):
    """Keeps the items for which the predicate is true."""

    def kernel(self, it: Iterator[Any], out: list[Any]) -> None:
        fn = self.fn
        append = out.append
        for x in it:
            r = fn(x)
            if r and (type(r) is not types.CoroutineType or self.awaited(r)):
                append(x)


class SinkProcessor(MapProcessor):
    """One call per item; return values are ignored."""

    is_sink = True

    def kernel(self, it: Iterator[Any], out: list[Any]) -> None:
        fn = self.fn
        for x in it:
            r = fn(x)
            if r is not None and is_awaitable_result(r):
                self.awaited(r)


class BatchProcessor(Processor):
    """Objects with ``process_batch(items)``: one call per received batch.

    When the call raises, the error policy applies to every item of the batch.
    """

    def process(self, items: list[Any], out: list[Any]) -> None:
        try:
            result = self.awaited(self.target.process_batch(items))
        except ChannelClosed:
            raise
        except Exception as exc:
            for item in items:
                self.on_error(item, exc, out)
            return
        if not self.is_sink:
            extend_outputs(out, result, "process_batch()")


class SinkBatchProcessor(BatchProcessor):
    is_sink = True


class AsyncProcessor(Processor):
    """An ``async def`` or async generator function as a transform or sink (see
    ``phasekit.stream.aio``): each batch is one coroutine on the run's event loop, its
    items awaited in order. ``mode``: map, filter, flat_map or sink, with the same rules
    for the awaited results as the synchronous processors; an async generator's items
    are outputs (map, flat_map) or drained (sink)."""

    def __init__(
        self, target: Any, fn: Callable[[Any], Any], mode: str, on_error: ErrorPolicy
    ) -> None:
        super().__init__(target, on_error)
        self.fn = fn
        self.mode = mode
        self.is_sink = mode == "sink"

    def process(self, items: list[Any], out: list[Any]) -> None:
        if self.aio is None:
            raise StreamError("an async node needs the run's event loop (none given)")
        self.aio.run(self._process(items, out))

    async def _process(self, items: list[Any], out: list[Any]) -> None:
        fn, mode = self.fn, self.mode
        for x in items:
            try:
                r = fn(x)
                if type(r) is types.AsyncGeneratorType:
                    values = [v async for v in r]
                    if mode != "sink":
                        out.extend(values)
                    continue
                r = await r
            except ChannelClosed:
                raise
            except Exception as exc:
                self.on_error(x, exc, out)
                continue
            self._collect(x, r, mode, out)

    @staticmethod
    def _collect(item: Any, r: Any, mode: str, out: list[Any]) -> None:
        if mode == "map":
            if r is not None:
                out.append(r)
        elif mode == "filter":
            if r:
                out.append(item)
        elif mode == "flat_map" and r is not None:
            out.extend(r)


def make_processor(
    impl: Any, kind: str, on_error: ErrorPolicy, aio: Optional[DagLoop] = None
) -> Processor:
    """The processor of a transform or sink instance (``impl`` already instantiated);
    ``aio`` is the run's event loop, which async functions and awaitable results use."""
    proc = _make_processor(impl, kind, on_error)
    proc.aio = aio
    return proc


def _make_processor(impl: Any, kind: str, on_error: ErrorPolicy) -> Processor:
    mode = getattr(impl, "stream_mode", None)  # operators.map / filter / flat_map
    if mode is not None and kind == "transform":
        if is_async_callable(impl.fn):
            return AsyncProcessor(impl, impl.fn, mode, on_error)
        cls = {"map": MapProcessor, "filter": FilterProcessor, "flat_map": FlatMapProcessor}
        return cls[mode](impl, impl.fn, on_error)
    if hasattr(impl, "process_batch"):
        batch_cls = SinkBatchProcessor if kind == "sink" else BatchProcessor
        return batch_cls(impl, on_error)
    method = getattr(impl, "process", None)
    if method is not None and not inspect.isfunction(impl):
        fn, target = method, impl
    elif callable(impl):
        fn, target = impl, impl
    else:
        raise InvalidArgument(
            f"a {kind} must be a callable or an object with process() or process_batch(), "
            f"got {type(impl).__name__}"
        )
    if is_async_callable(fn):
        return AsyncProcessor(target, fn, "sink" if kind == "sink" else "map", on_error)
    if kind == "sink":
        return SinkProcessor(target, fn, on_error)
    if inspect.isgeneratorfunction(fn):
        return FlatMapProcessor(target, fn, on_error)
    return MapProcessor(target, fn, on_error)


# ------------------------------------------------------------------ sources


class SourceReader:
    """A source instance: ``open``, then either ``iterator`` or ``async_iterator``, ``close``."""

    def __init__(self, impl: Any, ctx: NodeContext, poll_interval: float) -> None:
        self.impl = impl
        self.ctx = ctx
        self.poll_interval = poll_interval
        self.iterator: Optional[Iterator[Any]] = None
        self.async_iterator: Optional[AsyncIterator[Any]] = None
        self.loop: Optional[asyncio.AbstractEventLoop] = None
        self.task: Optional[asyncio.Future[Any]] = None

    def open(self) -> None:
        impl, ctx = self.impl, self.ctx
        if hasattr(impl, "__aiter__"):
            open_object(impl, ctx)
            self.async_iterator = impl.__aiter__()
        elif hasattr(impl, "process") and not isinstance(impl, (list, tuple)):
            open_object(impl, ctx)
            self.iterator = self._poll(impl)
        elif hasattr(impl, "__iter__"):
            open_object(impl, ctx)
            self.iterator = iter(impl)
        elif callable(impl):
            produced = impl(ctx) if accepts_argument(impl) else impl()
            if hasattr(produced, "__aiter__"):
                self.async_iterator = produced.__aiter__()
            elif hasattr(produced, "__iter__"):
                self.iterator = iter(produced)
            else:
                raise StreamError(
                    f"source {ctx.node!r}: its callable returned {type(produced).__name__}, "
                    "expected an iterable or an async iterable"
                )
        else:
            raise StreamError(
                f"source {ctx.node!r} must be an iterable, an async iterable, a callable "
                f"returning one, or an object with process(); got {type(impl).__name__}"
            )

    def _poll(self, obj: Any) -> Iterator[Any]:
        """Polling sources: ``process()`` returns items, None (nothing yet) or END."""
        ctx = self.ctx
        while True:
            result = obj.process()
            if result is END:
                return
            if result is None:
                if not ctx.sleep(self.poll_interval) or ctx.stopping:
                    return
                continue
            if type(result) is types.GeneratorType:
                yield from result
            else:
                yield result

    def close(self) -> None:
        impl = self.impl
        if hasattr(impl, "close") and not isinstance(impl, types.GeneratorType):
            impl.close()

    def cancel_async(self) -> None:
        """Cancel a pending ``await`` of an async source (graceful stop)."""
        loop, task = self.loop, self.task
        if loop is not None and task is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(task.cancel)
            except RuntimeError:  # the loop has just closed
                pass


def check_policy(on_error: Any, node: str) -> str:
    if on_error not in ERROR_POLICIES:
        raise InvalidArgument(
            f"node {node!r}: on_error must be one of {', '.join(ERROR_POLICIES)}, got {on_error!r}"
        )
    return str(on_error)


def declared_ports(impl: Any) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(extra output ports, of which required) declared by an operator object or class."""
    ports = tuple(getattr(impl, "output_ports", ()) or ())
    required = tuple(getattr(impl, "required_output_ports", ()) or ())
    return ports, required
