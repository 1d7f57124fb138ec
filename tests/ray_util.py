"""A real Ray cluster on 127.0.0.1: one head node (``ray start --head --block``) with 2
CPUs (two worker processes run tasks at once), a 200 MB object store,
``--include-dashboard=false``, free ports for everything that has a fixed default, its
files in a temporary folder.
Its workers import the phasekit under test (its folder first on their ``PYTHONPATH``,
then this folder, for :mod:`dask_support`'s strategies). Stopped by signalling the
``ray start`` process (which stops the node's processes), then killing its process group;
the ``ray start`` process also gets SIGTERM when the test process dies.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

import phasekit
from dask_util import free_port

CPUS = 2
OBJECT_STORE_BYTES = 200_000_000
START_SECONDS = 60.0


def _ray() -> str:
    found = shutil.which("ray", path=os.path.dirname(sys.executable)) or shutil.which("ray")
    if found is None:
        pytest.fail("the ray command is not installed (pip install 'phasekit[ray]')")
    return found


@dataclass
class RayCluster:
    """The head's GCS address, its folder and the ``ray start`` process."""

    address: str
    folder: Path
    process: subprocess.Popen[bytes]
    started_in: float = 0.0
    """Seconds from ``ray start`` until the GCS port answered and a driver could join."""

    def processes(self) -> dict[int, str]:
        """The cluster's processes now (descendants of ``ray start``), pid -> title."""
        children: dict[int, list[int]] = {}
        titles: dict[int, str] = {}
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry))
            titles[int(entry)] = cmdline.replace(b"\0", b" ").decode(errors="replace").strip()
        found: dict[int, str] = {}
        todo = [self.process.pid]
        while todo:
            pid = todo.pop()
            for child in children.get(pid, []):
                found[child] = titles.get(child, "")
                todo.append(child)
        return found

    def busy_workers(self, prefix: str = "ray::phasekit-") -> list[int]:
        """The worker processes running a phasekit task now."""
        return [pid for pid, title in self.processes().items() if title.startswith(prefix)]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        try:  # the node's processes left behind (they share the group ray start leads)
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


PR_SET_PDEATHSIG = 1


def _stop_with_parent() -> None:
    """In the ``ray start`` process before it runs: SIGTERM when the test process dies
    (Linux), so a killed test session leaves no cluster behind."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def start_cluster(folder: Path) -> RayCluster:
    """Start the head node and wait until its GCS port answers."""
    port = free_port()
    env = dict(os.environ)
    here = str(Path(phasekit.__file__).resolve().parent.parent)
    tests = str(Path(__file__).resolve().parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (here, tests, env.get("PYTHONPATH")) if p)
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    ports = {
        "--port": port,
        "--dashboard-port": free_port(),
        "--dashboard-agent-listen-port": free_port(),
        "--dashboard-agent-grpc-port": free_port(),
        "--metrics-export-port": free_port(),
        "--runtime-env-agent-port": free_port(),
        "--node-manager-port": free_port(),
        "--object-manager-port": free_port(),
    }
    cmd = [_ray(), "start", "--head", "--block", "--node-ip-address", "127.0.0.1"]
    cmd += [f"{flag}={value}" for flag, value in ports.items()]
    cmd += [f"--num-cpus={CPUS}", f"--object-store-memory={OBJECT_STORE_BYTES}"]
    cmd += ["--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={folder}"]
    began = time.monotonic()
    with open(folder / "cluster.log", "ab") as log:
        process = subprocess.Popen(
            cmd,
            cwd=folder,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_stop_with_parent,
        )
    cluster = RayCluster(f"127.0.0.1:{port}", folder, process)
    try:
        deadline = began + START_SECONDS
        while True:
            if process.poll() is not None:
                raise RuntimeError(
                    f"ray start ended ({process.returncode}): "
                    + (folder / "cluster.log").read_text()[-2000:]
                )
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("the Ray head did not answer in time") from None
                time.sleep(0.1)
        cluster.started_in = time.monotonic() - began
    except BaseException:
        cluster.stop()
        raise
    return cluster


@contextmanager
def running_cluster(prefix: str = "pkray-") -> Iterator[RayCluster]:
    """A head node in a fresh folder under /tmp (short: Ray's socket paths under it must
    stay within 107 bytes), stopped and removed afterwards."""
    folder = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    try:
        cluster = start_cluster(folder)
        try:
            yield cluster
        finally:
            cluster.stop()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
