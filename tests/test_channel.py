"""Channel: the behaviour of docs/primitives.md, identical in both backends."""

from __future__ import annotations

import collections
import functools
import math
import os
import signal
import subprocess
import sys
import threading
from types import ModuleType
from typing import Any, Callable

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from phasekit.backend import backend_module
from phasekit.errors import ChannelClosed, ChannelEmpty, ChannelFull, InvalidArgument, Timeout

LIVENESS = 120.0
"""Seconds after which a thread that should have finished counts as deadlocked."""

STAT_KEYS = [
    "depth",
    "capacity",
    "high_water",
    "sent",
    "received",
    "blocked_send_seconds",
    "closed",
]


def start(target: Callable[[], Any]) -> tuple[threading.Thread, dict[str, Any]]:
    """Run ``target`` in a daemon thread; the dict gets its ``result`` or ``error``."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["result"] = target()
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


def finish(thread: threading.Thread) -> None:
    thread.join(LIVENESS)
    assert not thread.is_alive(), "thread did not finish: deadlock"


def wait_until(predicate: Callable[[], bool]) -> None:
    """Poll until ``predicate()`` holds (a liveness bound, not a timing assertion)."""
    event = threading.Event()
    for _ in range(int(LIVENESS / 0.005)):
        if predicate():
            return
        event.wait(0.005)
    raise AssertionError("condition never became true")


# ---------------------------------------------------------------- basics


def test_fifo_and_len(backend: ModuleType) -> None:
    ch = backend.Channel(8)
    assert ch.capacity == 8 and len(ch) == 0 and not ch.closed
    for i in range(8):
        ch.send(i)
    assert len(ch) == 8
    assert [ch.recv() for _ in range(8)] == list(range(8))
    assert len(ch) == 0


def test_default_capacity(backend: ModuleType) -> None:
    assert backend.Channel().capacity == 1024


def test_carries_any_object_by_reference(backend: ModuleType) -> None:
    ch = backend.Channel(4)
    items = [None, object(), {"a": [1, 2]}, b"bytes"]
    for item in items:
        ch.send(item)
    for item in items:
        assert ch.recv() is item


def test_item_references_are_released(backend: ModuleType) -> None:
    ch = backend.Channel(4)
    item = object()
    before = sys.getrefcount(item)
    ch.send(item)
    assert sys.getrefcount(item) == before + 1
    ch.recv()
    assert sys.getrefcount(item) == before
    ch.send(item)
    del ch
    assert sys.getrefcount(item) == before


def test_try_send_and_try_recv(backend: ModuleType) -> None:
    ch = backend.Channel(2)
    with pytest.raises(ChannelEmpty):
        ch.try_recv()
    ch.try_send("a")
    ch.try_send("b")
    with pytest.raises(ChannelFull):
        ch.try_send("c")
    assert ch.try_recv() == "a"
    ch.close()
    with pytest.raises(ChannelClosed):
        ch.try_send("d")
    assert ch.try_recv() == "b"
    with pytest.raises(ChannelClosed):
        ch.try_recv()


def test_try_send_on_full_closed_channel_says_closed(backend: ModuleType) -> None:
    ch = backend.Channel(1)
    ch.send(1)
    ch.close()
    with pytest.raises(ChannelClosed):
        ch.try_send(2)


def test_send_many_and_recv_many(backend: ModuleType) -> None:
    ch = backend.Channel(10)
    assert ch.send_many(range(5)) == 5
    assert ch.send_many(x for x in "abc") == 3
    assert ch.send_many([]) == 0
    assert ch.recv_many(3) == [0, 1, 2]
    assert ch.recv_many(100) == [3, 4, "a", "b", "c"]
    with pytest.raises(Timeout):
        ch.recv_many(5, timeout=0)
    ch.send(9)
    ch.close()
    assert ch.recv_many(5) == [9]
    with pytest.raises(ChannelClosed):
        ch.recv_many(5)
    with pytest.raises(ChannelClosed):
        ch.send_many([1])


def test_send_many_blocks_for_room(backend: ModuleType) -> None:
    ch = backend.Channel(3)
    thread, outcome = start(lambda: ch.send_many(range(100)))
    got: list[int] = []
    while len(got) < 100:
        got.extend(ch.recv_many(7))
        assert len(ch) <= 3
    finish(thread)
    assert outcome == {"result": 100}
    assert got == list(range(100))


def test_send_many_timeout_keeps_sent_prefix(backend: ModuleType) -> None:
    ch = backend.Channel(2)
    with pytest.raises(Timeout):
        ch.send_many([1, 2, 3], timeout=0.01)
    assert ch.stats()["sent"] == 2
    assert [ch.recv(), ch.recv()] == [1, 2]


def test_send_many_propagates_iterator_errors(backend: ModuleType) -> None:
    def items() -> Any:
        yield 1
        raise RuntimeError("boom")

    ch = backend.Channel(4)
    with pytest.raises(RuntimeError, match="boom"):
        ch.send_many(items())
    assert ch.recv() == 1


# ---------------------------------------------------------------- timeouts


def test_timeouts_raise_timeout(backend: ModuleType) -> None:
    ch = backend.Channel(1)
    with pytest.raises(Timeout):
        ch.recv(timeout=0)
    with pytest.raises(TimeoutError):
        ch.recv(timeout=0.02)
    ch.send(1, timeout=0)
    with pytest.raises(Timeout):
        ch.send(2, timeout=0)
    with pytest.raises(TimeoutError):
        ch.send(2, timeout=0.02)
    assert ch.recv(timeout=5) == 1
    assert len(ch) == 0


def test_huge_and_infinite_timeouts_wait_without_limit(backend: ModuleType) -> None:
    ch = backend.Channel(1)
    ch.send(1, timeout=math.inf)
    ch.send_many([], timeout=1e300)
    assert ch.recv(timeout=1e300) == 1


# ---------------------------------------------------------------- close


def test_close_then_drain_and_iteration(backend: ModuleType) -> None:
    ch = backend.Channel(5)
    for i in range(3):
        ch.send(i)
    ch.close()
    ch.close()  # idempotent
    assert ch.closed
    with pytest.raises(ChannelClosed):
        ch.send(99)
    assert list(ch) == [0, 1, 2]
    with pytest.raises(ChannelClosed):
        ch.recv()
    with pytest.raises(ChannelClosed):
        ch.recv(timeout=0)
    assert list(ch) == []


def test_iteration_ends_when_a_producer_closes(backend: ModuleType) -> None:
    ch = backend.Channel(2)

    def produce() -> None:
        for i in range(50):
            ch.send(i)
        ch.close()

    thread, _ = start(produce)
    assert list(ch) == list(range(50))
    finish(thread)
    assert iter(ch) is ch


def test_close_wakes_blocked_receivers(backend: ModuleType) -> None:
    ch = backend.Channel(1)
    waiters = [start(ch.recv) for _ in range(3)]
    wait_until(lambda: all(t.is_alive() for t, _ in waiters))
    ch.close()
    for thread, outcome in waiters:
        finish(thread)
        assert isinstance(outcome["error"], ChannelClosed)


def test_close_wakes_blocked_senders(backend: ModuleType) -> None:
    ch = backend.Channel(1)
    ch.send("kept")
    waiters = [start(functools.partial(ch.send, i)) for i in range(3)]
    wait_until(lambda: all(t.is_alive() for t, _ in waiters))
    ch.close()
    for thread, outcome in waiters:
        finish(thread)
        assert isinstance(outcome["error"], ChannelClosed)
    assert ch.recv() == "kept"
    with pytest.raises(ChannelClosed):
        ch.recv()


# ---------------------------------------------------------------- backpressure and stats


def test_backpressure_blocks_sender_until_room(backend: ModuleType) -> None:
    ch = backend.Channel(2)
    ch.send(0)
    ch.send(1)
    thread, outcome = start(lambda: ch.send(2))
    thread.join(0.1)
    assert thread.is_alive()  # the channel is full: the sender cannot finish
    assert len(ch) == 2 and ch.stats()["sent"] == 2
    assert ch.recv() == 0
    finish(thread)
    assert outcome == {"result": None}
    assert [ch.recv(), ch.recv()] == [1, 2]
    stats = ch.stats()
    assert stats["blocked_send_seconds"] > 0
    assert stats["high_water"] == 2


def test_stats(backend: ModuleType) -> None:
    ch = backend.Channel(4)
    stats = ch.stats()
    assert list(stats) == STAT_KEYS
    assert stats == {
        "depth": 0,
        "capacity": 4,
        "high_water": 0,
        "sent": 0,
        "received": 0,
        "blocked_send_seconds": 0.0,
        "closed": False,
    }
    ch.send_many([1, 2, 3])
    ch.recv()
    ch.try_send(4)
    ch.try_send(5)
    with pytest.raises(ChannelFull):
        ch.try_send(6)
    ch.recv_many(2)
    ch.close()
    stats = ch.stats()
    assert isinstance(stats["blocked_send_seconds"], float)
    assert stats == {
        "depth": 2,
        "capacity": 4,
        "high_water": 4,
        "sent": 5,
        "received": 3,
        "blocked_send_seconds": 0.0,
        "closed": True,
    }


# ---------------------------------------------------------------- bad arguments


@pytest.mark.parametrize("capacity", [0, -1, 2**24 + 1, 2**63, 1.5, "8", None])
def test_bad_capacity(backend: ModuleType, capacity: Any) -> None:
    with pytest.raises(InvalidArgument, match="capacity"):
        backend.Channel(capacity)


@pytest.mark.parametrize("timeout", [-0.001, -1, math.nan, "1", [1]])
@pytest.mark.parametrize("call", ["send", "recv", "send_many", "recv_many"])
def test_bad_timeout(backend: ModuleType, timeout: Any, call: str) -> None:
    ch = backend.Channel(2)
    ch.send(1)
    calls: dict[str, Callable[[], Any]] = {
        "send": lambda: ch.send(2, timeout=timeout),
        "recv": lambda: ch.recv(timeout=timeout),
        "send_many": lambda: ch.send_many([2], timeout=timeout),
        "recv_many": lambda: ch.recv_many(1, timeout=timeout),
    }
    with pytest.raises(InvalidArgument, match="timeout"):
        calls[call]()
    assert ch.stats()["sent"] == 1 and len(ch) == 1


@pytest.mark.parametrize("max_items", [0, -3, 2**64, 2.0, "3"])
def test_bad_max_items(backend: ModuleType, max_items: Any) -> None:
    ch = backend.Channel(2)
    ch.send(1)
    with pytest.raises(InvalidArgument, match="max_items"):
        ch.recv_many(max_items)
    assert len(ch) == 1


def test_send_many_needs_an_iterable(backend: ModuleType) -> None:
    with pytest.raises(InvalidArgument, match="items"):
        backend.Channel(2).send_many(5)


def test_numeric_timeouts_of_other_types(backend: ModuleType) -> None:
    np = pytest.importorskip("numpy")
    ch = backend.Channel(1)
    ch.send(1, timeout=np.float32(0.5))
    assert ch.recv(timeout=1) == 1
    with pytest.raises(Timeout):
        ch.recv(timeout=np.int64(0))


# ---------------------------------------------------------------- concurrency


def test_four_producers_four_consumers_pass_a_million_items_once(backend: ModuleType) -> None:
    n_items, n_producers, n_consumers, capacity = 1_000_000, 4, 4, 64
    ch = backend.Channel(capacity)
    per_producer = n_items // n_producers
    received: list[list[int]] = [[] for _ in range(n_consumers)]
    max_depth = [0]
    sampling = threading.Event()

    def produce(p: int) -> None:
        send = ch.send
        for i in range(p * per_producer, (p + 1) * per_producer):
            send(i)

    def consume(c: int) -> None:
        out = received[c]
        for item in ch:
            out.append(item)

    def sample() -> None:
        while not sampling.is_set():
            depth = max(len(ch), ch.stats()["depth"])
            max_depth[0] = max(max_depth[0], depth)

    consumers = [start(functools.partial(consume, c)) for c in range(n_consumers)]
    sampler, _ = start(sample)
    producers = [start(functools.partial(produce, p)) for p in range(n_producers)]
    for thread, outcome in producers:
        finish(thread)
        assert "error" not in outcome
    ch.close()
    for thread, outcome in consumers:
        finish(thread)
        assert "error" not in outcome
    sampling.set()
    finish(sampler)

    everything = [item for part in received for item in part]
    assert len(everything) == n_items
    assert sorted(everything) == list(range(n_items))
    assert 0 < max_depth[0] <= capacity
    stats = ch.stats()
    assert stats["sent"] == stats["received"] == n_items
    assert stats["depth"] == 0 and 1 <= stats["high_water"] <= capacity


def test_close_under_load_loses_nothing(backend: ModuleType) -> None:
    """Senders racing with close: every item whose send returned is received once."""
    ch = backend.Channel(8)
    accepted: list[list[int]] = [[] for _ in range(4)]
    received: list[int] = []

    def produce(p: int) -> None:
        i = 0
        while True:
            try:
                ch.send((p, i))
            except ChannelClosed:
                return
            accepted[p].append(i)
            i += 1

    def consume() -> None:
        for item in ch:
            received.append(item)

    consumers = [start(consume) for _ in range(2)]
    producers = [start(functools.partial(produce, p)) for p in range(4)]
    wait_until(lambda: sum(map(len, accepted)) > 20_000)
    ch.close()
    for thread, outcome in producers + consumers:
        finish(thread)
        assert "error" not in outcome
    sent = collections.Counter((p, i) for p in range(4) for i in accepted[p])
    assert collections.Counter(received) == sent
    assert ch.stats()["sent"] == ch.stats()["received"] == len(received)


# ---------------------------------------------------------------- Ctrl-C

CTRL_C_SCRIPT = """
import sys
from phasekit.backend import backend_module
ch = backend_module(sys.argv[1]).Channel(1)
if sys.argv[2] == "send":
    ch.send(0)
print("ready", flush=True)
try:
    ch.recv() if sys.argv[2] == "recv" else ch.send(1)
except KeyboardInterrupt:
    print("interrupted", flush=True)
    raise
"""


@pytest.mark.parametrize("call", ["recv", "send"])
def test_ctrl_c_interrupts_a_blocked_call(backend: ModuleType, call: str) -> None:
    name = "rust" if backend is backend_module("rust") else "python"
    proc = subprocess.Popen(
        [sys.executable, "-c", CTRL_C_SCRIPT, name, call],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PHASEKIT_BACKEND": name},
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    threading.Event().wait(0.2)  # let it block
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode != 0
    assert "interrupted" in stdout
    assert "KeyboardInterrupt" in stderr


# ---------------------------------------------------------------- rust and python agree


def outcome_of(call: Callable[[], Any]) -> tuple[str, Any]:
    try:
        return "ok", call()
    except Exception as exc:
        return "error", type(exc).__name__


def comparable_stats(ch: Any) -> dict[str, Any]:
    stats = dict(ch.stats())
    del stats["blocked_send_seconds"]
    return stats


class SameBehaviour(RuleBasedStateMachine):
    """The rust and python channels give the same result for every operation."""

    @initialize(capacity=st.integers(1, 5))
    def make(self, capacity: int) -> None:
        self.pair = [
            backend_module("rust").Channel(capacity),
            backend_module("python").Channel(capacity),
        ]
        self.next_item = 0

    def both(self, call: Callable[[Any], Any]) -> Any:
        rust, python = (outcome_of(functools.partial(call, ch)) for ch in self.pair)
        assert rust == python
        return rust

    def item(self) -> int:
        self.next_item += 1
        return self.next_item

    @rule()
    def send(self) -> None:
        item = self.item()
        self.both(lambda ch: ch.send(item, timeout=0))

    @rule()
    def try_send(self) -> None:
        item = self.item()
        self.both(lambda ch: ch.try_send(item))

    @rule(count=st.integers(0, 4))
    def send_many(self, count: int) -> None:
        items = [self.item() for _ in range(count)]
        self.both(lambda ch: ch.send_many(items, timeout=0))

    @rule()
    def recv(self) -> None:
        self.both(lambda ch: ch.recv(timeout=0))

    @rule()
    def try_recv(self) -> None:
        self.both(lambda ch: ch.try_recv())

    @rule(max_items=st.integers(1, 4))
    def recv_many(self, max_items: int) -> None:
        self.both(lambda ch: ch.recv_many(max_items, timeout=0))

    @rule()
    def next(self) -> None:
        if len(self.pair[1]) or self.pair[1].closed:  # else next() would block forever
            self.both(lambda ch: next(ch))

    @rule()
    def close(self) -> None:
        self.both(lambda ch: ch.close())

    @invariant()
    def observables_agree(self) -> None:
        if not hasattr(self, "pair"):
            return
        self.both(len)
        self.both(comparable_stats)
        self.both(lambda ch: (ch.capacity, ch.closed))


SameBehaviour.TestCase.settings = settings(max_examples=200, stateful_step_count=40, deadline=None)
test_rust_and_python_channels_agree = SameBehaviour.TestCase
