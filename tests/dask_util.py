"""A real Dask cluster on 127.0.0.1: a ``dask scheduler`` and two ``dask worker``
processes (one thread each, each under a nanny that restarts it, no dashboard, random
free ports). The workers import the phasekit under test (its folder is put first on
their ``PYTHONPATH``, then this folder, for :mod:`dask_support`) and keep their files in the cluster's temporary folder.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import phasekit

WORKERS = 2
START_SECONDS = 90.0
QUIET = ("--no-dashboard",)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _dask() -> str:
    found = shutil.which("dask", path=os.path.dirname(sys.executable)) or shutil.which("dask")
    if found is None:
        pytest.fail("the dask command is not installed (pip install 'phasekit[dask]')")
    return found


@dataclass
class DaskCluster:
    """The scheduler's address and the processes (scheduler first)."""

    address: str
    folder: Path
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def worker_pids(self) -> dict[str, int]:
        """The pid of each worker's process (the nanny restarts a killed one)."""
        from distributed import Client

        with Client(self.address, timeout=30, set_as_default=False) as client:
            return {k: int(v) for k, v in client.run(os.getpid).items()}

    def wait_for_workers(self, count: int = WORKERS) -> None:
        from distributed import Client

        with Client(self.address, timeout=30, set_as_default=False) as client:
            client.wait_for_workers(count, timeout=START_SECONDS)

    def stop(self) -> None:
        for process in reversed(self.processes):  # workers first
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 20
        for process in reversed(self.processes):
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


def start_cluster(folder: Path, memory_limit: str | None = None) -> DaskCluster:
    """Start the cluster; ``memory_limit`` (e.g. ``"768MiB"``) is each worker's
    ``--memory-limit`` (by default Dask's: the machine's memory shared by the workers)."""

    def where(i: int) -> list[str]:
        limit = ["--memory-limit", memory_limit] if memory_limit else []
        return [*QUIET, "--host", "127.0.0.1", "--local-directory", str(folder / f"w{i}"), *limit]

    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    env = dict(os.environ)
    here = str(Path(phasekit.__file__).resolve().parent.parent)
    tests = str(Path(__file__).resolve().parent)  # dask_support's strategies
    env["PYTHONPATH"] = os.pathsep.join(p for p in (here, tests, env.get("PYTHONPATH")) if p)
    cluster = DaskCluster(address, folder)
    common = {"cwd": folder, "env": env, "stdout": subprocess.DEVNULL}
    log = open(folder / "cluster.log", "ab")
    try:
        cluster.processes.append(
            subprocess.Popen(
                [_dask(), "scheduler", "--host", "127.0.0.1", "--port", str(port), *QUIET],
                stderr=log,
                **common,  # type: ignore[arg-type]
            )
        )
        for i in range(WORKERS):
            cluster.processes.append(
                subprocess.Popen(
                    [_dask(), "worker", address, "--nthreads", "1", "--name", f"w{i}", *where(i)],
                    stderr=log,
                    **common,  # type: ignore[arg-type]
                )
            )
        cluster.wait_for_workers()
    except BaseException:
        cluster.stop()
        raise
    finally:
        log.close()
    return cluster
