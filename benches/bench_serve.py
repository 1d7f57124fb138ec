"""``phasekit serve`` against the same work in Python, the server in its own process
(``phasekit serve`` on 127.0.0.1, SQLite catalog).

Groups:

- ``serve:list_10000_items``: the 10,000 items of one run, ``python`` by one
  ``Catalog.list_items`` call, ``server`` by paging through ``/runs/{id}/items`` (10 pages
  of 1,000, httpx, one connection). extra_info holds each side's p50 and p99 (seconds)
  over the rounds; the rate is items/s.
- ``serve:stream_256mb``: a 256 MiB Arrow IPC table (4 float64 columns) read into a
  table in this process, side by side:

  - ``direct``: pyarrow reads the file (``pa.ipc.open_file(pa.OSFile(path)).read_all()``,
    from the page cache): the bytes copied into memory once. The baseline.
  - ``direct_mmap``: the same through ``pa.memory_map``: nothing is read (the table's
    buffers point into the map until touched), so it is no throughput to compare with;
    reported to show what it costs.
  - ``server_python``: ``phasekit.serve.client.read_table`` as it is called by default
    (one connection): ``/items/{id}/data`` (Arrow IPC stream) read with http.client
    straight into a pyarrow buffer of the response's Content-Length (one copy out of the
    socket), then decoded without a copy. The comparison the goal is judged on: the same table in memory, through the
    server.
  - ``server_python_ranges``: the same with ``connections=min(4, os.cpu_count())``: the
    stored file's bytes from ``/items/{id}/file`` in byte ranges, the first 16 MiB on one
    connection, the rest in that many parts over as many connections at once, each read
    into its slice of one buffer, the CRC-32 of each part computed as it arrives and the
    whole file's checked, then opened without a copy.
  - ``server_httpx``: the same stream with httpx (``iter_raw`` chunks joined: the client
    copies the bytes twice more).
  - ``server_curl``: curl writing the stream to /dev/null (the server without a Python
    client; the time includes starting curl).
  - ``socket_raw``: no server, the ceiling of loopback TCP here: a bare Python socket
    server in its own process sends the same stream bytes (a copy in a file) from a memory
    map, 4 MiB per ``sendall``, its connections tuned as the server tunes them
    (:func:`phasekit.serve.tcp.tune`), read by the same ``read_table``.

  The rate is bytes/s of the table. Each round of a server or socket row comes right after
  a timed direct read (untimed by the benchmark), so both see the same load on the shared
  cores; its extra_info holds ``throughput_vs_direct``, the median over the rounds of
  (direct's seconds / its own), with ``ratio_min``, ``ratio_max`` and
  ``direct_median_s``. The goal is server_python >= 0.5x direct.

Each benchmark checks its result (the ids listed, the table's rows and values).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pyarrow as pa
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from catalog_util import record_file, write_table
from phasekit.catalog import (
    Catalog,
    NewItem,
    open_catalog,
)
from phasekit.serve.client import read_table

ITEMS = 10_000
PAGE = 1000
LIST_ROUNDS = 30
TABLE_ROWS = 8 * 1024 * 1024  # x 4 float64 columns = 256 MiB
STREAM_ROUNDS = 21
STREAM_IMPLS = (
    "direct",
    "direct_mmap",
    "socket_raw",
    "server_python",
    "server_python_ranges",
    "server_httpx",
    "server_curl",
)
RAW_SENDER = """
import mmap, os, socket, sys
from phasekit.serve.tcp import tune
fd = os.open(sys.argv[1], os.O_RDONLY)
size = os.fstat(fd).st_size
view = memoryview(mmap.mmap(fd, 0, prot=mmap.PROT_READ))
head = b"HTTP/1.1 200 OK\\r\\nContent-Length: %d\\r\\nConnection: close\\r\\n\\r\\n" % size
listener = socket.create_server(("127.0.0.1", 0))
print(listener.getsockname()[1], flush=True)
while True:
    conn, _ = listener.accept()
    with conn:
        tune(conn)
        request = b""
        while b"\\r\\n\\r\\n" not in request:
            request += conn.recv(65536)
        conn.sendall(head)
        for start in range(0, size, 4 << 20):
            conn.sendall(view[start : start + (4 << 20)])
"""
"""A bare HTTP answer of one file's bytes to every request (the ``socket_raw`` ceiling)."""


@dataclass
class Setup:
    url: str
    catalog: Catalog
    list_run: str
    table_item: int
    table_path: Path
    table: pa.Table
    raw_url: str


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _fill(catalog: Catalog, results: Path) -> tuple[int, Path, pa.Table]:
    catalog.start_process("bench", process_id="many")
    catalog.record_items(
        [
            NewItem(
                "many",
                "optimize",
                f"e{i}",
                data_reference=f"memory://many/optimize/e{i}",
                metadata={"fast": i % 10, "metrics": {"sharpe": (i % 97) / 50}},
                container_id=f"portfolio_{i}",
            )
            for i in range(ITEMS)
        ]
    )
    catalog.start_process("bench", process_id="big")
    rng = np.random.default_rng(0)
    table = pa.table({f"c{i}": rng.random(TABLE_ROWS) for i in range(4)})
    path = results / "big" / "table.arrow"
    write_table(path, table, "arrow")
    item = record_file(catalog, "big", "data", "table", path, "arrow")
    return item, path, table


@pytest.fixture(scope="module")
def setup() -> Iterator[Setup]:
    results = Path(tempfile.mkdtemp(prefix="phasekit-bench-serve-"))
    catalog = open_catalog(results, results_dir=results)
    item, path, table = _fill(catalog, results)
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "phasekit.cli", "serve", str(results), "--port", str(port)],
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(f"{url}/health", timeout=1)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("phasekit serve did not start") from None
                time.sleep(0.1)
        stream = results / "big" / "table.arrows"
        with httpx.stream("GET", f"{url}/items/{item}/data", timeout=300) as response:
            response.raise_for_status()
            with stream.open("wb") as out:
                for chunk in response.iter_raw(4 << 20):
                    out.write(chunk)
        raw = subprocess.Popen(
            [sys.executable, "-c", RAW_SENDER, str(stream)], stdout=subprocess.PIPE, text=True
        )
        assert raw.stdout is not None
        raw_url = f"http://127.0.0.1:{int(raw.stdout.readline())}"
        try:
            yield Setup(url, catalog, "many", item, path, table, raw_url)
        finally:
            raw.kill()
            raw.wait(timeout=30)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        catalog.close()
        shutil.rmtree(results, ignore_errors=True)


def _percentiles(benchmark: Any) -> dict[str, float]:
    data = sorted(benchmark.stats.stats.data)
    return {
        "p50_s": float(np.percentile(data, 50)),
        "p99_s": float(np.percentile(data, 99)),
        "rounds": len(data),
    }


# ------------------------------------------------------------------ listing
def _list_python(setup: Setup) -> list[int]:
    return [row.id for row in setup.catalog.list_items(setup.list_run)]


def _list_server(client: httpx.Client, setup: Setup) -> list[int]:
    ids: list[int] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": PAGE}
        if cursor:
            params["cursor"] = cursor
        page = client.get(f"/runs/{setup.list_run}/items", params=params).json()
        ids += [row["id"] for row in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            return ids


@pytest.mark.parametrize("impl", ["python", "server"])
def test_list_10000_items(benchmark: Any, setup: Setup, impl: str) -> None:
    benchmark.group = "serve:list_10000_items"
    expected = _list_python(setup)
    assert len(expected) == ITEMS
    if impl == "python":
        found = benchmark.pedantic(_list_python, args=(setup,), rounds=LIST_ROUNDS, iterations=1)
    else:
        with httpx.Client(base_url=setup.url, timeout=60) as client:
            found = benchmark.pedantic(
                _list_server, args=(client, setup), rounds=LIST_ROUNDS, iterations=1
            )
    assert found == expected
    benchmark.extra_info.update(items=ITEMS, unit="items", impl=impl, **_percentiles(benchmark))


# ------------------------------------------------------------------ streaming
def _read_direct(setup: Setup) -> pa.Table:
    with pa.OSFile(str(setup.table_path), "rb") as source:
        return pa.ipc.open_file(source).read_all()


def _read_mapped(setup: Setup) -> pa.Table:
    with pa.memory_map(str(setup.table_path), "r") as source:
        return pa.ipc.open_file(source).read_all()


def _read_python(setup: Setup) -> pa.Table:
    return read_table(setup.url, setup.table_item)


def _read_python_ranges(setup: Setup) -> pa.Table:
    connections = min(4, os.cpu_count() or 1)
    return read_table(setup.url, setup.table_item, connections=connections)


def _read_raw(setup: Setup) -> pa.Table:
    return read_table(setup.raw_url, setup.table_item)  # the bare server ignores the path


def _read_httpx(setup: Setup) -> pa.Table:
    url = f"{setup.url}/items/{setup.table_item}/data"
    with httpx.Client(timeout=300) as client, client.stream("GET", url) as response:
        response.raise_for_status()
        body = b"".join(response.iter_raw(4 << 20))
    return pa.ipc.open_stream(body).read_all()


def _read_curl(setup: Setup) -> int:
    url = f"{setup.url}/items/{setup.table_item}/data"
    out = subprocess.run(
        ["curl", "-sS", "-f", "-o", "/dev/null", "-w", "%{size_download}", url],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(out.stdout)


READERS = {
    "direct": _read_direct,
    "direct_mmap": _read_mapped,
    "socket_raw": _read_raw,
    "server_python": _read_python,
    "server_python_ranges": _read_python_ranges,
    "server_httpx": _read_httpx,
    "server_curl": _read_curl,
}


def _timed_direct(setup: Setup, times: list[float]) -> tuple[tuple[Setup], dict[str, Any]]:
    """A direct read, timed, before a round of another reader (pedantic's untimed setup)."""
    start = time.perf_counter()
    table = _read_direct(setup)
    times.append(time.perf_counter() - start)
    assert table.num_rows == TABLE_ROWS
    return (setup,), {}


@pytest.mark.parametrize("impl", STREAM_IMPLS)
def test_stream_256mb(benchmark: Any, setup: Setup, impl: str) -> None:
    benchmark.group = "serve:stream_256mb"
    if impl == "server_curl" and shutil.which("curl") is None:
        pytest.fail("curl is not installed (apt-get install curl)")
    paired = impl.startswith(("server", "socket"))
    direct_times: list[float] = []
    # one round first, untimed: each reader's memory pool and the page cache are warm
    if paired:  # each round right after a timed direct read: the pair sees the same load
        result = benchmark.pedantic(
            READERS[impl],
            setup=lambda: _timed_direct(setup, direct_times),
            rounds=STREAM_ROUNDS,
            iterations=1,
            warmup_rounds=1,
        )
    else:
        result = benchmark.pedantic(
            READERS[impl], args=(setup,), rounds=STREAM_ROUNDS, iterations=1, warmup_rounds=1
        )
    if impl == "server_curl":
        # the stream holds the table's buffers plus the IPC framing
        assert result >= setup.table.nbytes
    else:
        assert result.num_rows == TABLE_ROWS
        assert result.equals(setup.table)
    data = list(benchmark.stats.stats.data)
    extra: dict[str, Any] = {"median_s": float(np.median(data)), "min_s": float(min(data))}
    if paired:
        ratios = [d / t for d, t in zip(direct_times[-len(data) :], data, strict=True)]
        extra.update(
            throughput_vs_direct=float(np.median(ratios)),
            ratio_min=float(min(ratios)),
            ratio_max=float(max(ratios)),
            direct_median_s=float(np.median(direct_times[-len(data) :])),
        )
    benchmark.extra_info.update(items=setup.table.nbytes, unit="bytes", impl=impl, **extra)
