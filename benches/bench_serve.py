"""``phasekit serve`` against the same work in Python, the server in its own process
(``phasekit serve`` on 127.0.0.1, SQLite catalog).

Groups:

- ``serve:list_10000_items``: the 10,000 items of one run, ``python`` by one
  ``Catalog.list_items`` call, ``server`` by paging through ``/runs/{id}/items`` (10 pages
  of 1,000, httpx, one connection). extra_info holds each side's p50 and p99 (seconds)
  over the rounds; the rate is items/s.
- ``serve:stream_256mb``: a 256 MiB Arrow IPC table (4 float64 columns), ``direct`` by
  pyarrow reading the file, ``server_httpx`` by streaming ``/items/{id}/data`` (Arrow IPC
  stream) with httpx and decoding it into a table, ``server_curl`` by curl writing the
  same stream to /dev/null (the server's throughput without a Python client). The rate
  is bytes/s of the table; the goal is server >= 0.5x direct.

Each benchmark checks its result (the ids listed, the table's rows and values).
"""

from __future__ import annotations

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

ITEMS = 10_000
PAGE = 1000
LIST_ROUNDS = 30
TABLE_ROWS = 8 * 1024 * 1024  # x 4 float64 columns = 256 MiB
STREAM_ROUNDS = 5


@dataclass
class Setup:
    url: str
    catalog: Catalog
    list_run: str
    table_item: int
    table_path: Path
    table: pa.Table


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
        yield Setup(url, catalog, "many", item, path, table)
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


@pytest.mark.parametrize("impl", ["direct", "server_httpx", "server_curl"])
def test_stream_256mb(benchmark: Any, setup: Setup, impl: str) -> None:
    benchmark.group = "serve:stream_256mb"
    if impl == "server_curl" and shutil.which("curl") is None:
        pytest.fail("curl is not installed (apt-get install curl)")
    run = {"direct": _read_direct, "server_httpx": _read_httpx, "server_curl": _read_curl}[impl]
    result = benchmark.pedantic(run, args=(setup,), rounds=STREAM_ROUNDS, iterations=1)
    if impl == "server_curl":
        # the stream holds the table's buffers plus the IPC framing
        assert result >= setup.table.nbytes
    else:
        assert result.num_rows == TABLE_ROWS
        assert result.equals(setup.table)
    benchmark.extra_info.update(items=setup.table.nbytes, unit="bytes", impl=impl)
