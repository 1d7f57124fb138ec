"""``executor: {dask: ADDRESS}``: batches of containers on a real Dask cluster (a
scheduler and two workers on 127.0.0.1, :mod:`conftest_dask`).

A run on the cluster equals the local run; the setting and ``--executor`` take effect and
show their origin; batches in flight stay bounded; an unreachable scheduler and names
that are no executor are errors. The cluster tests run once, not per backend.
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from cluster_support import WorkerCounts, check_bounded, check_retried, config, jobs, outputs
from dask_util import DaskCluster, free_port
from phasekit.catalog import open_catalog
from phasekit.errors import ConfigError, WorkflowError
from phasekit.workflow import run
from phasekit.workflow.executor import DataSpec
from phasekit.workflow.executors import dask as dask_executor
from phasekit.workflow.executors.dask import DaskExecutor

pytest_plugins = ["conftest_dask"]


def arrivals(cluster: DaskCluster) -> dict[str, dict[str, tuple[dict[str, Any], int]]]:
    """Per worker: each data window it received (by scatter key), with its data settings
    and how often it arrived there."""
    from distributed import Client

    def received() -> dict[str, tuple[dict[str, Any], int]]:
        from phasekit.workflow.executors.dask import RECEIVED

        return {key: (dict(spec.settings), count) for (key, spec), count in RECEIVED.items()}

    with Client(cluster.address, timeout=30, set_as_default=False) as client:
        return dict(client.run(received))


def seeds_on_workers(cluster: DaskCluster) -> set[int]:
    """The data seeds of the windows the cluster's workers received."""
    return {
        int(settings.get("seed", -1))
        for found in arrivals(cluster).values()
        for settings, _ in found.values()
    }


pytestmark = pytest.mark.one_pass


def test_a_dask_run_equals_the_local_run(
    dask_cluster: DaskCluster, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    local = run({**config(11), "results_dir": str(tmp_path / "local")})
    with caplog.at_level(logging.INFO, logger="phasekit.workflow.executors.dask"):
        remote = run(
            {**config(11), "results_dir": str(tmp_path / "dask")},
            executor={"dask": dask_cluster.address},
        )
    try:
        assert outputs(remote) == outputs(local)
        assert 11 in seeds_on_workers(dask_cluster)
        # blocks (the engine's default for a built-in strategy) and batches alike
        done = [
            re.match(r"dask: (?:batch|block) of (\d+) containers done on (\S+) ", r.getMessage())
            for r in caplog.records
        ]
        assert any(r.getMessage().startswith("dask: block of ") for r in caplog.records)
        sizes = [int(m.group(1)) for m in done if m]
        workers = {m.group(2) for m in done if m}
        assert sum(sizes) == sum(p.containers for p in remote.phases.values())
        assert workers <= set(dask_cluster.worker_pids())
    finally:
        local.close()
        remote.close()


def test_a_data_file_only_the_client_sees_is_shipped_once_per_worker(
    dask_cluster: DaskCluster,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    import pyarrow.parquet as pq
    from distributed import Client

    from phasekit.backtest.bars import synthetic_bars

    here = tmp_path / "client"
    here.mkdir()
    monkeypatch.chdir(here)
    name = f"only-here-{tmp_path.name}.parquet"
    bars = synthetic_bars(["SYN"], n_bars=400, seed=31, frequency="1h")["SYN"]
    pq.write_table(bars.to_arrow(), name)
    dask_cluster.wait_for_workers()
    with Client(dask_cluster.address, timeout=30, set_as_default=False) as client:
        seen = client.run(os.path.exists, name)
    assert len(seen) == 2 and not any(seen.values())  # their folder is not the client's
    settings = {**config(0), "data": {"source": "file", "path": name}}
    local = run({**settings, "results_dir": str(tmp_path / "local"), "workers": 1})
    with caplog.at_level(logging.INFO, logger="phasekit.workflow.executors.dask"):
        remote = run(
            {**settings, "results_dir": str(tmp_path / "dask")},
            executor={"dask": dask_cluster.address},
        )
    try:
        assert outputs(remote) == outputs(local)
    finally:
        local.close()
        remote.close()
    done = [
        re.match(r"dask: (?:batch|block) of \d+ containers done on (\S+) ", r.getMessage())
        for r in caplog.records
    ]
    ran = Counter(m.group(1) for m in done if m)
    shipped = [r for r in caplog.records if "shipped to the cluster" in r.getMessage()]
    assert sum(ran.values()) > 4 and len(shipped) == 1  # two phases, many blocks, one window
    windows = {
        worker: {k: n for k, (found, n) in got.items() if found.get("path") == (name,)}
        for worker, got in arrivals(dask_cluster).items()
    }
    assert len(windows) == 2 and set(ran) <= set(windows)
    for worker, found in windows.items():
        # the bars arrived once at each worker that ran a block, at most once elsewhere
        assert list(found.values()) == [1] if worker in ran else len(found) <= 1, windows
    keys = {k for found in windows.values() for k in found}
    assert keys
    deadline = time.monotonic() + 30  # the run is over: the workers were told to drop them
    while keys & kept_windows(dask_cluster) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not keys & kept_windows(dask_cluster)


def kept_windows(cluster: DaskCluster) -> set[str]:
    """The keys of the data windows the cluster's workers keep."""
    from distributed import Client

    def kept() -> list[str]:
        from phasekit.workflow.executors.dask import _WINDOWS

        return list(_WINDOWS)

    with Client(cluster.address, timeout=30, set_as_default=False) as client:
        return {key for found in client.run(kept).values() for key in found}


def test_bars_lost_before_a_worker_fetched_them_are_shipped_again(
    dask_cluster: DaskCluster,
) -> None:
    def holds(key: str, dask_worker: Any) -> bool:  # on a worker: whether it has ``key``
        return key in dask_worker.data

    dask_cluster.wait_for_workers()
    spec = DataSpec.from_config({"n_bars": 300, "seed": 32, "frequency": "1h"})
    executor = DaskExecutor(dask_cluster.address, workers=1)
    try:
        lost = executor._shared(spec)
        lost.cancel()  # as if every worker holding them died: the scheduler forgets them
        client = executor._get_client()
        deadline = time.monotonic() + 30
        while any(client.run(holds, lost.key).values()) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(client.run(holds, lost.key).values())  # no worker has them now
        got = [o.job.container_id for o in executor.map(spec, jobs(40))]
    finally:
        executor.close()
    assert got == [j.container_id for j in jobs(40)]
    assert executor.shipped == 2


def test_a_window_is_forgotten_while_a_worker_fetches_it(
    dask_cluster: DaskCluster, tmp_path: Path
) -> None:
    """Telling a worker to drop a window (``forget_window``, run in its event loop) does
    not wait for a fetch of that window under way in a task thread: a fetch needs that
    event loop (a fetch holding the window lock deadlocked the worker, and the next
    scatter waited for it forever). A window forgotten while being fetched is not kept."""
    from phasekit.workflow.executors.dask import forget_window

    dask_cluster.wait_for_workers()
    marker = tmp_path / "fetching"

    def slow_fetches(marker: str, seconds: float) -> None:
        import time as clock
        from pathlib import Path as Where

        from phasekit.workflow.executors import dask as module

        fetch = module._fetch

        def slow(key: str) -> Any:
            Where(marker).touch()
            clock.sleep(seconds)
            return fetch(key)

        slow.original = fetch  # type: ignore[attr-defined]
        module._fetch = slow

    def fast_fetches() -> None:
        from phasekit.workflow.executors import dask as module

        module._fetch = getattr(module._fetch, "original", module._fetch)

    def fetched(key: str) -> int:
        from phasekit.workflow.executors.dask import window

        return len(window(key))

    spec = DataSpec.from_config({"n_bars": 300, "seed": 34, "frequency": "1h"})
    executor = DaskExecutor(dask_cluster.address)
    client = executor._get_client()
    shared = executor._shared(spec)
    key = str(shared.key)
    # the worker the scatter put the bars on: its fetch reads its own memory, so that
    # without the fix this test fails instead of leaving the worker deadlocked
    worker = client.who_has([shared])[key][0]
    client.run(slow_fetches, str(marker), 4.0, workers=[worker])
    try:
        task = client.submit(fetched, key, workers=[worker], pure=False)
        deadline = time.monotonic() + 30
        while not marker.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert marker.exists()  # the worker is fetching the window
        started = time.monotonic()
        client.run(forget_window, key, workers=[worker])
        took = time.monotonic() - started
        assert task.status == "pending"  # still fetching
        assert took < 1.0, took  # not the rest of the 4 s fetch
        assert task.result(timeout=60) == 300
        assert key not in kept_windows(dask_cluster)  # forgotten while it was fetched
    finally:
        client.run(fast_fetches, workers=[worker])
        executor.close()


def test_an_observer_hears_of_each_batch_and_its_worker(
    dask_cluster: DaskCluster, tmp_path: Path
) -> None:
    observer = WorkerCounts()
    result = run(
        {**config(20), "results_dir": str(tmp_path)},
        executor={"dask": dask_cluster.address},
        observer=observer,
    )
    result.close()
    assert sum(observer.containers.values()) == sum(p.containers for p in result.phases.values())
    assert set(observer.containers) <= set(dask_cluster.worker_pids())
    local = WorkerCounts()
    run({**config(20), "results_dir": str(tmp_path / "l"), "workers": 1}, observer=local).close()
    assert not local.containers  # local batches name no worker


def test_the_progress_display_has_a_bar_per_worker() -> None:
    from rich.progress import Progress

    from phasekit.cli.run import ProgressObserver

    progress = Progress(disable=True)
    observer = ProgressObserver(progress, 1)
    for worker, containers in [("tcp://a:1", 40), ("tcp://b:2", 30), ("tcp://a:1", 25)]:
        observer.worker_batch_done(worker, containers)
    bars = {t.description: t.completed for t in progress.tasks}
    assert bars == {"worker tcp://a:1 (65 containers)": 2, "worker tcp://b:2 (30 containers)": 1}


def test_the_config_setting_runs_on_the_cluster(dask_cluster: DaskCluster, tmp_path: Path) -> None:
    result = run(
        {**config(12, executor={"dask": dask_cluster.address}), "results_dir": str(tmp_path)}
    )
    result.close()
    assert 12 in seeds_on_workers(dask_cluster)
    # the local executor (the default) does not touch the cluster
    run({**config(13), "results_dir": str(tmp_path / "l"), "workers": 1}).close()
    assert 13 not in seeds_on_workers(dask_cluster)


def test_the_cli_flag_runs_on_the_cluster(dask_cluster: DaskCluster, tmp_path: Path) -> None:
    import yaml

    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config(14)))
    cmd = [sys.executable, "-m", "phasekit.cli", "run", str(path), "--json"]
    cmd += ["--results-dir", str(tmp_path / "r"), "--executor", f"dask={dask_cluster.address}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["status"] == "completed"
    assert 14 in seeds_on_workers(dask_cluster)


@pytest.mark.parametrize(("workers", "bound"), [(1, 2), (None, 4)])
def test_batches_in_flight_are_bounded(
    dask_cluster: DaskCluster, workers: int | None, bound: int
) -> None:
    dask_cluster.wait_for_workers()  # both: the default bound counts their threads
    check_bounded(DaskExecutor(dask_cluster.address, workers=workers), bound)


@pytest.mark.parametrize("retries", [0, 1])
def test_a_batch_that_raises_is_retried(
    dask_cluster: DaskCluster, tmp_path: Path, retries: int
) -> None:
    check_retried(DaskExecutor(dask_cluster.address, retries=retries), tmp_path / "failed-once")


def test_results_come_from_the_workers_when_the_client_reaches_them(
    dask_cluster: DaskCluster,
) -> None:
    executor = DaskExecutor(dask_cluster.address)
    try:
        executor.start()
        client = executor._get_client()
        assert client.direct_to_workers is True  # the loopback workers answer
        workers = list(client.scheduler_info()["workers"])
        assert len(workers) == 2
        assert all(client.sync(dask_executor.answers, client, w) for w in workers)
        nobody = f"tcp://127.0.0.1:{free_port()}"
        assert client.sync(dask_executor.answers, client, nobody, 1.0) is False
    finally:
        executor.close()


def test_a_worker_the_client_does_not_reach_sends_results_through_the_scheduler(
    dask_cluster: DaskCluster,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    local = run({**config(17), "results_dir": str(tmp_path / "local")})
    first = sorted(dask_cluster.worker_pids())[0]
    answers = dask_executor.answers

    async def one_unreachable(client: Any, address: str, timeout: float = 2.0) -> bool:
        return address != first and await answers(client, address, timeout)

    monkeypatch.setattr(dask_executor, "answers", one_unreachable)
    with caplog.at_level(logging.INFO, logger="phasekit.workflow.executors.dask"):
        remote = run(
            {**config(17), "results_dir": str(tmp_path / "dask")},
            executor={"dask": dask_cluster.address},
        )
    try:
        messages = [r.getMessage() for r in caplog.records]
        assert "dask: results are fetched through the scheduler" in " ".join(messages)
        assert outputs(remote) == outputs(local)
    finally:
        local.close()
        remote.close()


def test_a_dry_run_names_the_executor_and_who_writes_the_tables(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from phasekit.cli import main as cli_main

    monkeypatch.setenv("COLUMNS", "240")  # the plan's every column shown
    path = tmp_path / "run.yaml"
    path.write_text(json.dumps({**config(18), "data_flow": {"mode": "file"}}))

    def plan(*args: str) -> str:
        capsys.readouterr()
        base = [str(path), "--dry-run", "--results-dir", str(tmp_path / "r"), *args]
        assert cli_main(["run", *base]) == 0
        return capsys.readouterr().out

    address = f"tcp://127.0.0.1:{free_port()}"  # a dry run connects to nothing
    shown = json.loads(plan("--json", "--executor", f"dask={address}"))
    assert (shown["executor"]["kind"], shown["executor"]["address"]) == ("dask", address)
    tables = [t for p in shown["phases"] for t in p["tables"].values()]
    assert tables and all(t["parts"] == "workers" for t in tables)
    local = json.loads(plan("--json"))
    assert local["executor"]["kind"] == "local"
    assert not any("parts" in t for p in local["phases"] for t in p["tables"].values())
    text = plan("--executor", f"dask={address}")
    assert f"executor: dask {address}" in " ".join(text.split())
    assert "part sets" in text


def test_an_unreachable_scheduler_fails_before_anything_is_recorded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dask_executor, "CONNECT_SECONDS", 1.0)
    address = f"tcp://127.0.0.1:{free_port()}"
    with pytest.raises(WorkflowError, match=re.escape(f"Dask scheduler at '{address}'")):
        run({**config(16), "results_dir": str(tmp_path)}, executor={"dask": address})
    with open_catalog(str(tmp_path), results_dir=tmp_path) as catalog:
        assert catalog.list_processes() == []


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("dask", "dask needs the cluster's address, e.g. executor: {dask: tcp://host:8786}"),
        ("dsak", "did you mean 'dask'"),
        ({"dask": "tcp://a:1", "ray": "x"}, "mapping of one engine"),
        ({"local": "x"}, "local takes no address"),
        ({"dask": "tcp://a :1"}, "is not a cluster address (e.g. tcp://host:8786)"),
        (7, "expected local or"),
    ],
)
def test_bad_executors_are_refused(tmp_path: Path, value: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        run({**config(17), "results_dir": str(tmp_path)}, executor=value)


def test_config_show_names_the_executor_and_its_origin(tmp_path: Path) -> None:
    import yaml

    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config(18, executor={"dask": "tcp://h:8786"})))

    def show(*extra: str) -> dict[str, Any]:
        cmd = [sys.executable, "-m", "phasekit.cli", "config", "show", str(path), "--json", *extra]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        return dict(json.loads(proc.stdout)["executor"])

    assert show() == {
        "kind": "dask",
        "address": "tcp://h:8786",
        "source": {"level": "user global", "path": "executor"},
    }
    assert show("--set", "executor=local") == {
        "kind": "local",
        "address": None,
        "source": {"level": "runtime", "path": "--set executor"},
    }
    path.write_text(yaml.safe_dump(config(18)))
    assert show()["source"] == {"level": "package default", "path": "default"}


WORKER_BAR = re.compile(r"worker (tcp://[\d.]+:\d+) \(([\d,]+) containers\)\S*\s+\S*\s*(\d+)/\?")


def test_the_cli_shows_blocks_done_per_worker(dask_cluster: DaskCluster, tmp_path: Path) -> None:
    """The progress display of ``phasekit run`` (its final frame, printed when the output
    is no terminal) has a bar per worker: the blocks (or batches) it finished, ``K/?``, and
    their containers, which add up to the run's."""
    import yaml

    dask_cluster.wait_for_workers()
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config(15)))
    cmd = [sys.executable, "-m", "phasekit.cli", "run", str(path), "--results-dir"]
    cmd += [str(tmp_path / "r"), "--executor", f"dask={dask_cluster.address}"]
    env = {**os.environ, "COLUMNS": "200"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    bars = {m[1]: (int(m[2].replace(",", "")), int(m[3])) for m in WORKER_BAR.finditer(proc.stdout)}
    assert bars, proc.stdout
    assert set(bars) <= set(dask_cluster.worker_pids())
    local = run({**config(15), "results_dir": str(tmp_path / "l"), "workers": 1})
    try:
        containers = sum(p.containers for p in local.phases.values())
    finally:
        local.close()
    assert sum(c for c, _ in bars.values()) == containers  # every container, on some worker
    blocks = sum(b for _, b in bars.values())
    assert all(b >= 1 for _, b in bars.values()) and blocks < containers  # blocks, not sets


def test_a_stuck_worker_holds_the_release_of_a_window_at_most_release_seconds(
    dask_cluster: DaskCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Telling the workers to drop a released data window waits at most RELEASE_SECONDS:
    a worker whose window lock is held (its event loop blocked in ``forget_window``) keeps
    the client no longer than that."""
    dask_cluster.wait_for_workers()
    held = 10.0

    def hold_windows(seconds: float) -> None:
        import time as clock

        from phasekit.workflow.executors.dask import _WINDOWS_LOCK

        with _WINDOWS_LOCK:
            clock.sleep(seconds)

    monkeypatch.setattr(dask_executor, "RELEASE_SECONDS", 1.0)
    spec = DataSpec.from_config({"n_bars": 300, "seed": 33, "frequency": "1h"})
    executor = DaskExecutor(dask_cluster.address)
    client = executor._get_client()
    stuck = None
    try:
        executor._shared(spec)
        worker = sorted(dask_cluster.worker_pids())[0]
        stuck = client.submit(hold_windows, held, workers=[worker], pure=False)
        deadline = time.monotonic() + 30
        while not client.processing().get(worker) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)  # the task has the lock
        started = time.monotonic()
        executor._release_bars()
        took = time.monotonic() - started
        assert stuck.status == "pending"  # the worker is still stuck
        assert 0.9 <= took < 6.0, took  # the bound (1 s), not the 10 s the worker is held
    finally:
        if stuck is not None:
            stuck.result(timeout=60)  # let the worker go before the next test
        executor.close()
