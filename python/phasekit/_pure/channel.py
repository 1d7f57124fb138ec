"""Bounded multi-producer multi-consumer channel of Python objects (pure-Python reference).

One lock guards a deque; senders wait on ``_not_full``, receivers on ``_not_empty``.
Blocking waits sleep in slices of at most ``WAIT_SLICE`` seconds so that Ctrl-C
(``KeyboardInterrupt``) reaches a thread blocked in ``send`` or ``recv`` promptly.
"""

from __future__ import annotations

import math
import operator
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator
from typing import Any, Optional

from phasekit.errors import ChannelClosed, ChannelEmpty, ChannelFull, InvalidArgument, Timeout

WAIT_SLICE = 0.05
"""Longest single wait (seconds) before a blocked call checks for signals again."""

MAX_CAPACITY = 1 << 24
"""Largest ``capacity`` accepted (the Rust backend allocates its slots up front)."""

MAX_ITEMS = 2**63 - 1
"""Largest ``max_items`` accepted (the range of a signed 64-bit integer)."""

FOREVER = 1e9
"""Timeouts above this many seconds (about 31 years, or ``inf``) mean: wait without limit."""


def _count_arg(name: str, value: Any, maximum: int) -> int:
    """An integer argument in ``1..=maximum``, or ``InvalidArgument`` naming it."""
    try:
        number = operator.index(value)
    except TypeError:
        raise InvalidArgument(
            f"{name} must be an integer >= 1, got {type(value).__name__} {value!r}"
        ) from None
    if not 1 <= number <= maximum:
        raise InvalidArgument(f"{name} must be an integer in 1..{maximum}, got {number}")
    return number


def _deadline(timeout: Any) -> Optional[float]:
    """The monotonic deadline of ``timeout`` seconds from now, ``None`` for no limit."""
    if timeout is None:
        return None
    seconds = _seconds(timeout)
    if seconds > FOREVER:
        return None
    return time.monotonic() + seconds


def _seconds(timeout: Any) -> float:
    # Mirrors the Rust backend: anything with __float__ or __index__, but not str/bytes.
    kind = type(timeout)
    if not (hasattr(kind, "__float__") or hasattr(kind, "__index__")):
        raise InvalidArgument(
            f"timeout must be None or a number of seconds >= 0, got {kind.__name__} {timeout!r}"
        )
    seconds = float(timeout)
    if math.isnan(seconds) or seconds < 0:
        raise InvalidArgument(f"timeout must be None or a number of seconds >= 0, got {seconds}")
    return seconds


class Channel:
    """Bounded MPMC channel; see ``phasekit._core.Channel`` for the contract."""

    def __init__(self, capacity: int = 1024) -> None:
        self._capacity = _count_arg("capacity", capacity, MAX_CAPACITY)
        self._items: deque[Any] = deque()
        self._lock = threading.Lock()
        self._not_full = threading.Condition(self._lock)
        self._not_empty = threading.Condition(self._lock)
        self._waiting_senders = 0
        self._waiting_receivers = 0
        self._closed = False
        self._high_water = 0
        self._sent = 0
        self._received = 0
        self._blocked_send_seconds = 0.0

    # ------------------------------------------------------------ properties

    @property
    def capacity(self) -> int:
        return self._capacity

    @property
    def closed(self) -> bool:
        return self._closed

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return (
            f"Channel(capacity={self._capacity}, depth={len(self._items)}, closed={self._closed})"
        )

    # ------------------------------------------------------------ sending

    def send(self, item: Any, timeout: Optional[float] = None) -> None:
        deadline = _deadline(timeout)
        with self._lock:
            self._wait_for_room(deadline)
            self._push(item)

    def try_send(self, item: Any) -> None:
        with self._lock:
            if self._closed:
                raise ChannelClosed("send on a closed channel")
            if len(self._items) >= self._capacity:
                raise ChannelFull(f"channel is full (capacity {self._capacity})")
            self._push(item)

    def send_many(self, items: Iterable[Any], timeout: Optional[float] = None) -> int:
        """Send every item in order; ``timeout`` bounds the whole call.

        On ``Timeout`` or ``ChannelClosed`` the items before the failing one were sent.
        """
        deadline = _deadline(timeout)
        try:
            iterator = iter(items)
        except TypeError:
            raise InvalidArgument(
                f"items must be an iterable, got {type(items).__name__}"
            ) from None
        count = 0
        for item in iterator:
            with self._lock:
                self._wait_for_room(deadline)
                self._push(item)
            count += 1
        return count

    def _wait_for_room(self, deadline: Optional[float]) -> None:
        """With the lock held: return once an item fits, else raise."""
        if self._closed:
            raise ChannelClosed("send on a closed channel")
        if len(self._items) < self._capacity:
            return
        started = time.perf_counter()
        self._waiting_senders += 1
        try:
            while True:
                if not self._wait(self._not_full, deadline):
                    raise Timeout(
                        f"send timed out: the channel stayed full (capacity {self._capacity})"
                    )
                if self._closed:
                    raise ChannelClosed("channel closed while a send was blocked")
                if len(self._items) < self._capacity:
                    return
        except BaseException:
            # Pass a wake-up this sender may have consumed on to another waiting sender.
            if self._waiting_senders > 1 and len(self._items) < self._capacity:
                self._not_full.notify()
            raise
        finally:
            self._waiting_senders -= 1
            self._blocked_send_seconds += time.perf_counter() - started

    def _push(self, item: Any) -> None:
        items = self._items
        items.append(item)
        self._sent += 1
        if len(items) > self._high_water:
            self._high_water = len(items)
        if self._waiting_receivers:
            self._not_empty.notify()

    # ------------------------------------------------------------ receiving

    def recv(self, timeout: Optional[float] = None) -> Any:
        deadline = _deadline(timeout)
        with self._lock:
            self._wait_for_item(deadline)
            return self._pop()

    def try_recv(self) -> Any:
        with self._lock:
            if not self._items:
                if self._closed:
                    raise ChannelClosed("channel is closed and drained")
                raise ChannelEmpty("channel is empty")
            return self._pop()

    def recv_many(self, max_items: int, timeout: Optional[float] = None) -> list[Any]:
        limit = _count_arg("max_items", max_items, MAX_ITEMS)
        deadline = _deadline(timeout)
        with self._lock:
            self._wait_for_item(deadline)
            items = self._items
            out = [items.popleft() for _ in range(min(limit, len(items)))]
            self._received += len(out)
            if self._waiting_senders:
                self._not_full.notify(len(out))
            return out

    def _wait_for_item(self, deadline: Optional[float]) -> None:
        """With the lock held: return once an item is there, else raise."""
        if self._items:
            return
        if self._closed:
            raise ChannelClosed("channel is closed and drained")
        self._waiting_receivers += 1
        try:
            while True:
                if not self._wait(self._not_empty, deadline):
                    raise Timeout("recv timed out: the channel stayed empty")
                if self._items:
                    return
                if self._closed:
                    raise ChannelClosed("channel is closed and drained")
        except BaseException:
            # Pass a wake-up this receiver may have consumed on to another waiting receiver.
            if self._waiting_receivers > 1 and self._items:
                self._not_empty.notify()
            raise
        finally:
            self._waiting_receivers -= 1

    def _pop(self) -> Any:
        item = self._items.popleft()
        self._received += 1
        if self._waiting_senders:
            self._not_full.notify()
        return item

    # ------------------------------------------------------------ waiting

    @staticmethod
    def _wait(condition: threading.Condition, deadline: Optional[float]) -> bool:
        """Wait one slice; ``False`` once the deadline has passed (the caller re-checks)."""
        if deadline is None:
            condition.wait(WAIT_SLICE)
            return True
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        condition.wait(min(remaining, WAIT_SLICE))
        return True

    # ------------------------------------------------------------ closing, iteration, stats

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._not_full.notify_all()
            self._not_empty.notify_all()

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        try:
            return self.recv()
        except ChannelClosed:
            raise StopIteration from None

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                "depth": len(self._items),
                "capacity": self._capacity,
                "high_water": self._high_water,
                "sent": self._sent,
                "received": self._received,
                "blocked_send_seconds": self._blocked_send_seconds,
                "closed": self._closed,
            }
