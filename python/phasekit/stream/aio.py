"""Async transforms and sinks: coroutines awaited on one event loop per run of a Dag.

A node whose function is ``async def`` (or an async generator function, or an object
whose ``process`` / ``process_batch`` / ``__call__`` is one) keeps its thread like any
node, but the thread hands each received batch to the run's event loop as one
coroutine and waits for it: items of a batch are awaited one after the other, so the
order of a node instance's outputs is the order of its inputs. Instances of a node with
``parallelism > 1`` (and different async nodes) interleave on the same loop, which
is how several awaits are in flight at once.

The loop lives in its own thread, is started the first time an async node needs it,
and is closed when the run ends. A plain callable that returns a coroutine (a lambda
around an async function) is awaited the same way: no coroutine object is ever sent
downstream un-awaited.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import logging
import threading
import types
from collections.abc import Coroutine
from typing import Any, Optional

from phasekit.errors import ChannelClosed

log = logging.getLogger(__name__)

_WAIT_SLICE = 0.05  # seconds between checks for a cancelled run while a batch is awaited


def is_async_callable(fn: Any) -> bool:
    """True for ``async def`` functions, async generator functions, partials and bound
    methods of them, and objects whose ``__call__`` is one."""
    if inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn):
        return True
    if not callable(fn) or inspect.isfunction(fn) or inspect.ismethod(fn):
        return False
    call = type(fn).__call__  # type: ignore[operator]
    return inspect.iscoroutinefunction(call) or inspect.isasyncgenfunction(call)


def is_awaitable_result(value: Any) -> bool:
    """A value a synchronous call returned that must be awaited (or drained) first."""
    t = type(value)
    return t is types.CoroutineType or t is types.AsyncGeneratorType or inspect.isawaitable(value)


async def resolve(value: Any) -> Any:
    """Await a coroutine or awaitable; an async generator becomes the list it yields."""
    if type(value) is types.AsyncGeneratorType:
        return [x async for x in value]
    return await value


class DagLoop:
    """The event loop of one run; started on first use, closed by ``close()``."""

    def __init__(self, name: str, cancelled: threading.Event) -> None:
        self.name = name
        self.cancelled = cancelled
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._thread: Optional[threading.Thread] = None
        self._lock = threading.Lock()
        self._closed = False

    def _ensure(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._closed:
                raise ChannelClosed(f"stream {self.name!r}: the run's event loop is closed")
            if self._loop is None:
                loop = asyncio.new_event_loop()
                ready = threading.Event()

                def main() -> None:
                    asyncio.set_event_loop(loop)
                    loop.call_soon(ready.set)
                    loop.run_forever()

                self._thread = threading.Thread(
                    target=main, name=f"phasekit-stream:{self.name}:loop", daemon=True
                )
                self._thread.start()
                ready.wait()
                self._loop = loop
                log.debug("stream %r: event loop for async nodes started", self.name)
            return self._loop

    def run(self, coro: Coroutine[Any, Any, Any]) -> Any:
        """Run ``coro`` on the loop and return its result; a cancelled run cancels it."""
        fut = asyncio.run_coroutine_threadsafe(coro, self._ensure())
        while True:
            try:
                return fut.result(_WAIT_SLICE)
            except concurrent.futures.TimeoutError:
                if self.cancelled.is_set():
                    fut.cancel()
                    raise ChannelClosed(f"stream {self.name!r}: run cancelled") from None
            except concurrent.futures.CancelledError:
                raise ChannelClosed(f"stream {self.name!r}: run cancelled") from None

    def await_value(self, value: Any) -> Any:
        """What a sync call's awaitable result resolves to (see ``resolve``)."""
        return self.run(resolve(value))

    def close(self) -> None:
        """Cancel what is still pending, stop the loop and join its thread."""
        with self._lock:
            self._closed = True
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is None or thread is None:
            return

        async def shutdown() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await loop.shutdown_asyncgens()

        try:
            asyncio.run_coroutine_threadsafe(shutdown(), loop).result(5)
        except Exception as exc:  # closing must not hide the run's own outcome
            log.warning("stream %r: shutting the event loop down raised %r", self.name, exc)
        loop.call_soon_threadsafe(loop.stop)
        if thread is not threading.current_thread():
            thread.join(5)
        if not loop.is_running():
            loop.close()
