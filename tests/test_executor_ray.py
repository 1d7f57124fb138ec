"""``executor: {ray: ADDRESS}``: blocks and batches of containers as tasks on a real Ray
cluster (a head node with 2 CPUs on 127.0.0.1, :mod:`conftest_ray`; about 1 s until its
GCS answers and 3-5 s until the first run has joined it).

A run on the cluster equals the local run (block and container engines); the setting and
``--executor`` take effect; units in flight stay bounded by ``workers``; a task that
raises is retried; a worker process
killed in the middle of a block has the block run again and the results equal an
uninterrupted run's; bad addresses, an unreachable cluster and a missing extra are
errors. The cluster tests run once, not per backend.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from cluster_support import (
    KILL_CONFIG,
    WorkerCounts,
    check_bounded,
    check_retried,
    config,
    job,
    kill_trials,
    outputs,
)
from phasekit.catalog import open_catalog
from phasekit.errors import ConfigError, MissingDependency, WorkflowError
from phasekit.workflow import run
from phasekit.workflow.executor import DataSpec
from phasekit.workflow.executors.ray import RayExecutor
from ray_util import RayCluster, free_port

pytest_plugins = ["conftest_ray"]
pytestmark = pytest.mark.one_pass

FAILS = "dask_support:FailsOnce"
SLEEPS = "dask_support:Sleeps"
DONE = re.compile(r"ray: (batch|block) of (\d+) containers done on (\S+) ")


def units_done(caplog: pytest.LogCaptureFixture) -> list[tuple[str, int, str]]:
    """(kind, containers, worker) of each unit the Ray executor logged as done."""
    found = [DONE.match(r.getMessage()) for r in caplog.records]
    return [(m.group(1), int(m.group(2)), m.group(3)) for m in found if m]


@pytest.mark.parametrize(("engine", "kind"), [("block", "block"), ("container", "batch")])
def test_a_ray_run_equals_the_local_run(
    ray_cluster: RayCluster,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    engine: str,
    kind: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from phasekit.workflow import blocktables

    local = run({**config(11, engine=engine), "results_dir": str(tmp_path / "local")})
    client_wrote: list[int] = []
    write = blocktables.write_block_parts

    def counted(window_dir: Path, job: Any, tables: Any, compression: Any) -> Any:
        client_wrote.append(job.index)
        return write(window_dir, job, tables, compression)

    monkeypatch.setattr(blocktables, "write_block_parts", counted)
    with caplog.at_level(logging.INFO, logger="phasekit.workflow.executors.ray"):
        remote = run(
            {**config(11, engine=engine), "results_dir": str(tmp_path / "ray")},
            executor={"ray": ray_cluster.address},
        )
    try:
        assert outputs(remote) == outputs(local)
        done = units_done(caplog)
        assert {k for k, _, _ in done} == {kind}
        assert sum(n for _, n, _ in done) == sum(p.containers for p in remote.phases.values())
        # workers are named NODE_IP/PID: processes of this cluster's node
        for _, _, worker in done:
            assert re.fullmatch(r"[0-9.]+/\d+", worker), worker
        # blocks: each window's tables are part sets, its training block's part (block
        # 0) written by a Ray worker (phasekit.workflow.blockwrite), never by the client;
        # batches: one file per table
        parts = sorted(remote.run_dir.glob("search/*/containers.parts/part-000001.arrow"))
        assert len(parts) == (4 if kind == "block" else 0)
        assert 0 not in client_wrote
    finally:
        local.close()
        remote.close()


def test_the_config_setting_runs_on_the_cluster(
    ray_cluster: RayCluster, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    observer = WorkerCounts()
    with caplog.at_level(logging.INFO, logger="phasekit.workflow.executors"):
        result = run(
            {**config(12, executor={"ray": ray_cluster.address}), "results_dir": str(tmp_path)},
            observer=observer,
        )
        result.close()
        done = units_done(caplog)
        # the observer (the progress display's bar per worker) hears of every unit
        assert sum(observer.containers.values()) == sum(n for _, n, _ in done)
        assert sum(observer.containers.values()) == sum(
            p.containers for p in result.phases.values()
        )
        assert set(observer.containers) == {w for _, _, w in done}
        assert any("ray: joined the cluster at" in r.getMessage() for r in caplog.records)
        caplog.clear()
        # the local executor (the default) does not touch the cluster
        run({**config(13), "results_dir": str(tmp_path / "l"), "workers": 1}).close()
        assert not units_done(caplog)


def test_the_cli_flag_runs_on_the_cluster(ray_cluster: RayCluster, tmp_path: Path) -> None:
    import yaml

    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config(14)))

    def cli(address: str, results: str) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "phasekit.cli", "run", str(path), "--json"]
        cmd += ["--results-dir", str(tmp_path / results), "--executor", f"ray={address}"]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=180)

    proc = cli(ray_cluster.address, "r")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["status"] == "completed"
    # the flag reaches the Ray executor: an address nobody listens on fails there
    gone = f"127.0.0.1:{free_port()}"
    proc = cli(gone, "gone")
    assert proc.returncode != 0
    assert f"the Ray cluster at '{gone}' cannot be reached" in proc.stderr


@pytest.mark.parametrize(("workers", "bound"), [(1, 2), (None, 4)])
def test_units_in_flight_are_bounded(
    ray_cluster: RayCluster, workers: int | None, bound: int
) -> None:
    executor = RayExecutor(ray_cluster.address, workers=workers)
    check_bounded(executor, bound)  # None: 2 x the cluster's 2 CPUs
    assert executor.shipped == 1


@pytest.mark.parametrize("retries", [0, 1])
def test_a_batch_that_raises_is_retried(
    ray_cluster: RayCluster, tmp_path: Path, retries: int
) -> None:
    check_retried(RayExecutor(ray_cluster.address, retries=retries), tmp_path / "failed-once")


def test_only_a_unit_still_running_is_cancelled(
    ray_cluster: RayCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The executor cancels a task still running and leaves one that has ended (finished
    or failed) alone: cancelling a task that had failed aborted the client in Ray's task
    manager (a RAY_CHECK, ``Tried to complete task that was not pending``)."""
    import ray
    from ray.exceptions import TaskCancelledError

    executor = RayExecutor(ray_cluster.address, retries=0)
    spec = DataSpec.from_config({"n_bars": 300, "seed": 35, "frequency": "1h"})
    marker = str(tmp_path / "failed-once")
    try:
        shared = executor._shared(spec)
        finished = executor._send("batch", shared, [job(0)])
        failed = executor._send("batch", shared, [job(1, FAILS, marker=marker, fast=2, slow=20)])
        running = executor._send("batch", shared, [job(2, SLEEPS, seconds=120, fast=2, slow=20)])
        ended, _ = ray.wait([finished, failed], num_returns=2, timeout=120)
        assert len(ended) == 2
        cancelled: list[object] = []
        cancel = ray.cancel

        def counted(ref: Any, **options: Any) -> None:
            cancelled.append(ref)
            cancel(ref, **options)

        monkeypatch.setattr(ray, "cancel", counted)
        for task in (finished, failed, running):
            executor._cancel(task)
        assert cancelled == [running]
        with pytest.raises(TaskCancelledError):
            ray.get(running, timeout=60)
        (outcome,) = ray.get(finished)[1]  # the ended ones are intact
        assert outcome.job.container_id == "portfolio_00000"
        with pytest.raises(RuntimeError, match="the first run fails"):
            ray.get(failed)
    finally:
        executor.close()


KILLS = 3


class WorkerKiller(threading.Thread):
    """SIGKILLs the first worker process of the cluster seen running a phasekit task
    (its process title is ``ray::phasekit-block`` or ``ray::phasekit-batch``)."""

    def __init__(self, cluster: RayCluster) -> None:
        super().__init__(daemon=True)
        self.cluster = cluster
        self.killed: int | None = None
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            busy = self.cluster.busy_workers()
            if busy:
                os.kill(busy[0], signal.SIGKILL)
                self.killed = busy[0]
                return
            time.sleep(0.005)


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["block", "container"])
def test_a_worker_killed_mid_block_loses_nothing(
    ray_cluster: RayCluster, tmp_path: Path, engine: str
) -> None:
    settings = {**KILL_CONFIG, "engine": engine}
    baseline = run({**settings, "results_dir": str(tmp_path / "local")}, workers=1)
    try:
        expected = outputs(baseline)
    finally:
        baseline.close()

    def run_once(trial: int) -> Any:
        return run(
            {**settings, "results_dir": str(tmp_path / f"t{trial}")},
            executor={"ray": ray_cluster.address},
        )

    kill_trials(KILLS, lambda: WorkerKiller(ray_cluster), run_once, expected)


def test_an_unreachable_cluster_fails_before_anything_is_recorded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from phasekit.workflow.executors import ray as ray_executor

    monkeypatch.setattr(ray_executor, "CONNECT_SECONDS", 1.0)
    address = f"127.0.0.1:{free_port()}"
    with pytest.raises(WorkflowError, match=re.escape(f"Ray cluster at '{address}'")):
        run({**config(16), "results_dir": str(tmp_path)}, executor={"ray": address})
    with open_catalog(str(tmp_path), results_dir=tmp_path) as catalog:
        assert catalog.list_processes() == []


def test_a_missing_extra_names_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    real_import = builtins.__import__

    def no_ray(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "ray" or name.startswith("ray."):
            raise ImportError("No module named 'ray'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    with pytest.raises(MissingDependency, match=re.escape("pip install 'phasekit[ray]'")):
        run({**config(17), "results_dir": str(tmp_path)}, executor={"ray": "127.0.0.1:6379"})
    with open_catalog(str(tmp_path), results_dir=tmp_path) as catalog:
        assert catalog.list_processes() == []


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("ray", "ray needs the cluster's address, e.g. executor: {ray: host:6379}"),
        ({"ray": "ray://h:10001"}, "is a URL; give the cluster's GCS address host:port"),
        ({"ray": "h"}, "'h' is not a GCS address host:port"),
        ({"ray": "h:port"}, "'h:port' is not a GCS address host:port"),
        ({"ray": "h:70000"}, "'h:70000' is not a GCS address host:port"),
        ({"ray": "h :1"}, "is not a cluster address (e.g. host:6379)"),
        ("rya", "did you mean 'ray'"),
        ({"ray": "h:1", "dask": "tcp://a:1"}, "mapping of one engine"),
    ],
)
def test_bad_ray_addresses_are_refused(tmp_path: Path, value: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        run({**config(18), "results_dir": str(tmp_path)}, executor=value)


def test_config_show_names_the_ray_executor(tmp_path: Path) -> None:
    import yaml

    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config(18, executor={"ray": "10.0.0.5:6379"})))
    cmd = [sys.executable, "-m", "phasekit.cli", "config", "show", str(path), "--json"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["executor"] == {
        "kind": "ray",
        "address": "10.0.0.5:6379",
        "source": {"level": "user global", "path": "executor"},
    }
