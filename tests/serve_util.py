"""Helpers for the server tests: uvicorn on 127.0.0.1 in a thread, and a filled catalog."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import uvicorn

from catalog_util import record_file, sample_table, store, write_durable
from phasekit.catalog import Catalog
from phasekit.serve.launch import server_config


class LiveServer:
    """A uvicorn server for ``app`` on ``host`` and a free port, run in a thread, set up as
    ``phasekit serve`` sets it up (:func:`server_config`); ``parser`` (``httptools``,
    ``h11``) and ``loop`` (``asyncio``, ``uvloop``) choose other than the installed ones."""

    def __init__(
        self, app: Any, host: str = "127.0.0.1", parser: str | None = None, loop: str = "auto"
    ) -> None:
        config = server_config(app, host, 0, parser)
        config.loop = loop
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.host = host
        self.port = 0

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        self.port = self.server.servers[0].sockets[0].getsockname()[1]
        return self

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def client(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=20)


@dataclass
class Filled:
    """The ids of what :func:`fill` recorded."""

    arrow: int
    parquet: int
    csv: int
    json_file: int
    inline: int
    memory: int
    folder: int
    other_run: int
    table: pa.Table


def fill(catalog: Catalog) -> Filled:
    """Two runs: ``opt-a`` (workflow wf1, completed) with one item of each kind in stage
    ``optimize``, and ``val-b`` (wf2, running) with one table in stage ``validate``."""
    catalog.start_process("wf1", process_id="opt-a", config={"fast": 10, "slow": 30})
    catalog.start_process("wf2", process_id="val-b", config={"fast": 12, "slow": 30})
    table = sample_table(1000)
    meta = {"metrics": {"sharpe": 1.25, "trades": 7}, "note": "alpha crossover"}
    arrow = store(catalog, "opt-a", "optimize", "containers", table, "arrow", metadata=meta)
    parquet = store(
        catalog, "opt-a", "optimize", "trades", table, "parquet", metadata={"kind": "trades"}
    )
    csv = store(catalog, "opt-a", "optimize", "summary", table, "csv", phase="optimize")
    json_file = store(
        catalog, "opt-a", "optimize", "params", table.slice(0, 3), "json", window_id="w001"
    )
    inline = catalog.record_item(
        "opt-a", "optimize", "best", inline_data={"fast": 10, "slow": 30}, metadata={"best": True}
    )
    memory = catalog.record_item(
        "opt-a", "optimize", "cache", data_reference="memory://opt-a/optimize/cache"
    )
    assert catalog.results_dir is not None
    folder_path = Path(catalog.results_dir) / "opt-a" / "optimize" / "parts"
    for part in (1, 2):
        target = folder_path / f"year={2020 + part}" / "part-0.parquet"

        def write(tmp: Path, part: int = part) -> None:
            import pyarrow.parquet as pq

            pq.write_table(sample_table(10, seed=part * 100), str(tmp))

        write_durable(target, write)
    folder = record_file(catalog, "opt-a", "optimize", "parts", folder_path, "parquet")
    other = store(
        catalog,
        "val-b",
        "validate",
        "containers",
        sample_table(50, seed=7),
        "arrow",
        metadata={"metrics": {"sharpe": 0.5, "trades": 3}, "note": "beta"},
    )
    catalog.finish_process("opt-a")
    return Filled(arrow, parquet, csv, json_file, inline, memory, folder, other, table)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@contextmanager
def serving(*args: str, host: str = "127.0.0.1", port: int) -> Iterator[str]:
    """``phasekit serve ARGS`` in a subprocess; yields its URL once /health answers."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "phasekit.cli", "serve", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://{host}:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"phasekit serve exited: {proc.communicate()[1]}")
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError("phasekit serve did not answer")
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.communicate(timeout=20)
