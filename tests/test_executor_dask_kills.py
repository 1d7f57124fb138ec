"""Resume anywhere on a Dask cluster: a worker killed in the middle of a batch (its batch
runs again on a worker that is alive) and the client killed at a random moment
(``phasekit run --resume`` continues from the catalog) leave results equal to an
uninterrupted run's. Real processes, SIGKILL, random moments: 12 worker kills (trials go on
until 12 runs had a worker killed) and 10 client kills (at random moments spread over
how long an uninterrupted run takes)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from cluster_support import KILL_CONFIG, kill_trials, outputs
from dask_util import DaskCluster
from phasekit.catalog import open_catalog
from phasekit.workflow import run

pytest_plugins = ["conftest_dask"]
pytestmark = [pytest.mark.one_pass, pytest.mark.slow]

WORKER_KILLS = 12
CLIENT_KILLS = 10
SEED = 1414


@pytest.fixture(scope="module")
def expected(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The uninterrupted run's outputs (local executor)."""
    result = run(
        {**KILL_CONFIG, "results_dir": str(tmp_path_factory.mktemp("baseline"))}, workers=1
    )
    try:
        return outputs(result)
    finally:
        result.close()


UNITS = ("phasekit-batch", "phasekit-block")
"""The keys of the units of work a worker runs: batches and blocks of containers."""


class WorkerKiller(threading.Thread):
    """After ``delay`` seconds, SIGKILLs the first worker seen running a batch or a
    block."""

    def __init__(self, cluster: DaskCluster, delay: float) -> None:
        super().__init__(daemon=True)
        self.cluster, self.delay = cluster, delay
        self.pids = cluster.worker_pids()
        self.killed: str | None = None
        self.stop = threading.Event()

    def run(self) -> None:
        from distributed import Client

        with Client(self.cluster.address, timeout=30, set_as_default=False) as client:
            self.stop.wait(self.delay)
            while not self.stop.is_set():
                busy = [
                    worker
                    for worker, keys in client.processing().items()
                    if any(str(key).startswith(UNITS) for key in keys)
                ]
                if busy:
                    os.kill(self.pids[busy[0]], signal.SIGKILL)
                    self.killed = busy[0]
                    return
                time.sleep(0.005)


def test_a_worker_killed_mid_batch_loses_nothing(
    dask_cluster: DaskCluster, tmp_path: Path, expected: dict[str, Any]
) -> None:
    rng = random.Random(SEED)

    def new_killer() -> WorkerKiller:
        dask_cluster.wait_for_workers()
        return WorkerKiller(dask_cluster, rng.uniform(0.0, 0.6))

    def run_once(trial: int) -> Any:
        return run(
            {**KILL_CONFIG, "results_dir": str(tmp_path / f"t{trial}")},
            executor={"dask": dask_cluster.address},
        )

    kill_trials(WORKER_KILLS, new_killer, run_once, expected)


def test_a_killed_client_resumes_from_the_catalog(
    dask_cluster: DaskCluster, tmp_path: Path, expected: dict[str, Any]
) -> None:
    rng = random.Random(SEED + 1)
    span = min(recorded_to_completed(dask_cluster, tmp_path / f"whole{k}") for k in range(2))
    interrupted = 0
    for trial in range(CLIENT_KILLS):
        path, client = start_client(dask_cluster, tmp_path / f"t{trial}")
        folder = path.parent
        try:
            run_id = wait_for_run(folder / "results", client)
            # a random moment in the trial's tenth of the run (kills spread over all of it)
            time.sleep((trial + rng.random()) / CLIENT_KILLS * 0.9 * span)
        finally:
            client.kill()
            client.wait(timeout=30)
        if status_of(folder / "results", run_id) == "completed":
            continue  # finished before the kill: nothing to resume
        interrupted += 1
        result = run(path, resume=run_id, executor={"dask": dask_cluster.address})
        try:
            assert result.run_id == run_id
            assert outputs(result) == expected, f"trial {trial}"
        finally:
            result.close()
    assert interrupted >= CLIENT_KILLS // 2


def recorded_to_completed(cluster: DaskCluster, folder: Path) -> float:
    """Seconds an uninterrupted client's run takes from being recorded to being
    completed, here and now (the second of two runs meets warm workers)."""
    path, client = start_client(cluster, folder)
    results = path.parent / "results"
    run_id = wait_for_run(results, client)
    started = time.monotonic()
    while status_of(results, run_id) != "completed":
        assert client.poll() in (None, 0), "the uninterrupted client failed"
        time.sleep(0.005)
    span = time.monotonic() - started
    assert client.wait(timeout=300) == 0
    return span


def start_client(cluster: DaskCluster, folder: Path) -> tuple[Path, subprocess.Popen[bytes]]:
    """``phasekit run`` of :data:`KILL_CONFIG` into ``folder`` on the cluster, started;
    the config's path and the client's process."""
    cluster.wait_for_workers()
    folder.mkdir()
    path = folder / "run.yaml"
    path.write_text(yaml.safe_dump({**KILL_CONFIG, "results_dir": str(folder / "results")}))
    cmd = [sys.executable, "-m", "phasekit.cli", "run", str(path), "--json"]
    cmd += ["--executor", f"dask={cluster.address}"]
    return path, subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def status_of(results: Path, run_id: str) -> str:
    with open_catalog(str(results), results_dir=results) as catalog:
        return str(catalog.get_process(run_id).status)


def wait_for_run(results: Path, client: subprocess.Popen[bytes]) -> str:
    """The id of the run the client recorded (it is running then)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert client.poll() is None, "the client ended before it recorded its run"
        if (results / "catalog.sqlite").exists():
            with open_catalog(str(results), results_dir=results) as catalog:
                runs = catalog.list_processes()
            if runs:
                return str(runs[0].process_id)
        time.sleep(0.02)
    raise AssertionError("the client recorded no run within 60 s")
