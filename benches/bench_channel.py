"""Channel throughput: Python thread to Python thread, batched, and Rust thread to Rust thread.

``channel:threads``: a producer thread sends ``N_ITEMS`` ints one by one (``send``), the
benchmarking thread receives them one by one (``recv``), capacity 1000; the peer is
``queue.Queue(1000)`` with ``put``/``get``. ``channel:batched``: the same with
``send_many``/``recv_many`` in chunks of ``CHUNK``. ``channel:rust_threads_cap<C>``: one
Rust thread sends ``N_RUST`` integers to another through the Rust channel of capacity C
(``phasekit._core._bench_rust_channel``; the GIL is released); ``_batch64``: the same
moved in runs of 64 (``send_batch_deadline`` / ``recv_into``, one CAS per run).
``items`` = messages moved per call. Every call checks what it received: the sum of
the items (each item arrives once) in the Python benchmarks; the Rust benchmark
compares the consumer's sum itself and raises on a mismatch.
"""

from __future__ import annotations

import queue
import threading
from typing import Any, Callable

import pytest

from phasekit.backend import backend_module

CAPACITY = 1000
N_ITEMS = 200_000
CHUNK = 100
N_RUST = 5_000_000
EXPECTED_SUM = N_ITEMS * (N_ITEMS - 1) // 2  # items are 0 .. N_ITEMS - 1


def _pass_items(impl: str) -> Callable[[], int]:
    """One call: a producer thread sends N_ITEMS items, this thread receives them and
    returns their sum."""
    items = list(range(N_ITEMS))

    if impl == "queue.Queue":

        def run_queue() -> int:
            q: queue.Queue[int] = queue.Queue(CAPACITY)

            def produce() -> None:
                put = q.put
                for item in items:
                    put(item)

            thread = threading.Thread(target=produce)
            thread.start()
            get = q.get
            total = 0
            for _ in range(N_ITEMS):
                total += get()
            thread.join()
            return total

        return run_queue

    channel_type = backend_module(impl).Channel

    def run() -> int:
        ch = channel_type(CAPACITY)

        def produce() -> None:
            send = ch.send
            for item in items:
                send(item)

        thread = threading.Thread(target=produce)
        thread.start()
        recv = ch.recv
        total = 0
        for _ in range(N_ITEMS):
            total += recv()
        thread.join()
        return total

    return run


def _pass_chunks(impl: str) -> Callable[[], int]:
    """One call: a producer thread sends N_ITEMS in chunks, this thread receives chunks
    and returns the sum of their items."""
    chunks = [list(range(i, i + CHUNK)) for i in range(0, N_ITEMS, CHUNK)]
    channel_type = backend_module(impl).Channel

    def run() -> int:
        ch = channel_type(CAPACITY)

        def produce() -> None:
            send_many = ch.send_many
            for chunk in chunks:
                send_many(chunk)

        thread = threading.Thread(target=produce)
        thread.start()
        recv_many = ch.recv_many
        got = total = 0
        while got < N_ITEMS:
            chunk = recv_many(CHUNK)
            got += len(chunk)
            total += sum(chunk)
        thread.join()
        return total if got == N_ITEMS else -1

    return run


ROUNDS = {"rust": 7, "python": 3, "queue.Queue": 3}


@pytest.mark.parametrize("impl", ["rust", "python", "queue.Queue"])
def test_channel_threads(benchmark: Any, impl: str) -> None:
    benchmark.group = "channel:threads"
    benchmark.extra_info.update(items=N_ITEMS, unit="messages")
    total = benchmark.pedantic(_pass_items(impl), rounds=ROUNDS[impl], warmup_rounds=1)
    assert total == EXPECTED_SUM


@pytest.mark.parametrize("impl", ["rust", "python"])
def test_channel_batched(benchmark: Any, impl: str) -> None:
    benchmark.group = "channel:batched"
    benchmark.extra_info.update(items=N_ITEMS, unit="messages")
    total = benchmark.pedantic(_pass_chunks(impl), rounds=ROUNDS[impl], warmup_rounds=1)
    assert total == EXPECTED_SUM


def _rust_threads(benchmark: Any, capacity: int, batch: int = 1) -> None:
    bench = backend_module("rust")._bench_rust_channel
    runs = f"_batch{batch}" if batch > 1 else ""
    benchmark.group = f"channel:rust_threads_cap{capacity}{runs}"
    benchmark.extra_info.update(items=N_RUST, unit="messages")
    took = benchmark.pedantic(bench, args=(N_RUST, capacity, batch), rounds=7, warmup_rounds=1)
    assert took > 0  # it raises when the consumer's sum differs from the one sent


@pytest.mark.parametrize("impl", ["rust"])
def test_channel_rust_threads_cap256(benchmark: Any, impl: str) -> None:
    _rust_threads(benchmark, 256)


@pytest.mark.parametrize("impl", ["rust"])
def test_channel_rust_threads_cap1024(benchmark: Any, impl: str) -> None:
    _rust_threads(benchmark, 1024)


@pytest.mark.parametrize("impl", ["rust"])
def test_channel_rust_threads_cap256_batch64(benchmark: Any, impl: str) -> None:
    _rust_threads(benchmark, 256, batch=64)
