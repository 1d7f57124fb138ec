"""The Dask executor on a loopback cluster (a scheduler and two single-threaded workers on
127.0.0.1, started here as in the tests: ``tests/dask_util.py``).

Groups (``items`` = containers):

* ``dask:grid``: ``phasekit run examples/optimization_1000_containers.yaml`` (1,000 SMA
  sets over 100,000 minute bars) in a subprocess, ``--workers 2`` (``local``) against
  ``--executor dask=ADDRESS`` (``dask``, the two workers) and ``--executor ray=ADDRESS``
  (``ray``, a head node with 2 CPUs started as in the tests: ``tests/ray_util.py``);
  rust backend; the goal is a dask median at most 1.3x the local one.
* ``dask:grid-paired``: the same runs, local and dask alternately (:data:`PAIRED_ROUNDS`
  pairs, the first on workers no run has used yet), so a shared machine's load weighs
  on both alike: the medians of each and their ratio, and the first dask run apart
  (``extra_info``).
* ``dask:batch-costs``: the same run (``engine: container``) in this process on the
  cluster, with the scheduler's task stream: per batch, the worker's compute seconds,
  the pickled bytes of its results and the catalog rows the client commits, and the
  client's CPU seconds per container (``extra_info``; docs/scaling.md projects from
  them).
* ``dask:memory-per-worker``: :data:`MANY_SETS` (100,000) SMA sets over
  :data:`MANY_BARS` hourly bars on a loopback cluster whose two workers each have a
  ``--memory-limit`` of :data:`WORKER_BUDGET`; a thread samples the RSS of each worker
  process every :data:`SAMPLE_SECONDS` (psutil) and the peak of each is reported against
  the budget (``extra_info``), with the wall time and the batches (or blocks) each
  worker ran, once with each ``engine`` (``block``, ``container``). The
  budget must hold and no worker may be restarted. Slow (minutes): select it with
  ``-k memory_per_worker``.
"""

from __future__ import annotations

import logging
import os
import pickle
import re
import resource
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bench_workflow import GRID_EXAMPLE, ROOT, _rounds, cli_run

sys.path.insert(0, str(ROOT / "tests"))
from dask_util import DaskCluster, start_cluster
from phasekit.catalog import open_catalog
from phasekit.workflow import run
from phasekit.workflow.executor import DataSpec, run_batch
from ray_util import RayCluster, running_cluster

SETS = 1000


@pytest.fixture(scope="module")
def cluster() -> Iterator[DaskCluster]:
    folder = Path(tempfile.mkdtemp(prefix="phasekit-bench-dask-"))
    started = start_cluster(folder)
    try:
        yield started
    finally:
        started.stop()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def ray_head() -> Iterator[RayCluster]:
    """A Ray head node with 2 CPUs (the Ray row of ``dask:grid``)."""
    with running_cluster("pkray-bench-") as started:
        yield started


@pytest.mark.parametrize("executor", ["local", "dask", "ray"])
def test_grid_on_the_cluster(
    benchmark: Any, executor: str, cluster: DaskCluster, request: Any, tmp_path: Path
) -> None:
    benchmark.group = "dask:grid"
    args = ["--backend", "rust", "--workers", "2"]
    if executor == "dask":
        args = ["--backend", "rust", "--executor", f"dask={cluster.address}"]
    if executor == "ray":
        head: RayCluster = request.getfixturevalue("ray_head")
        args = ["--backend", "rust", "--executor", f"ray={head.address}"]

    def once() -> dict[str, Any]:
        summary, _ = cli_run(GRID_EXAMPLE, Path(tempfile.mkdtemp(dir=tmp_path)), *args)
        return summary

    summary = _rounds(benchmark, once, 3)
    phase = summary["phases"]["parameter_search"]
    assert summary["status"] == "completed" and phase["containers"] == SETS
    benchmark.extra_info.update(items=SETS, unit="containers", bars=100_000, workers=2)


PAIRED_ROUNDS = 5


def test_grid_paired(benchmark: Any, tmp_path: Path) -> None:
    benchmark.group = "dask:grid-paired"
    folder = Path(tempfile.mkdtemp(prefix="phasekit-bench-dask-paired-"))
    started = start_cluster(folder)  # its own: the first dask run meets fresh workers
    walls: dict[str, list[float]] = {"local": [], "dask": []}
    args = {
        "local": ["--backend", "rust", "--workers", "2"],
        "dask": ["--backend", "rust", "--executor", f"dask={started.address}"],
    }
    try:
        started.wait_for_workers()
        for _ in range(PAIRED_ROUNDS):
            for executor, walls_of in walls.items():
                start = time.perf_counter()
                summary, _ = cli_run(
                    GRID_EXAMPLE, Path(tempfile.mkdtemp(dir=tmp_path)), *args[executor]
                )
                walls_of.append(time.perf_counter() - start)
                assert summary["status"] == "completed"
    finally:
        started.stop()
        shutil.rmtree(folder, ignore_errors=True)
    medians = {name: statistics.median(values) for name, values in walls.items()}
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)
    benchmark.extra_info.update(
        items=SETS,
        unit="containers",
        headline=(
            f"dask/local {medians['dask'] / medians['local']:.2f}x: medians of "
            f"{PAIRED_ROUNDS} paired rounds, local {medians['local']:.2f} s, "
            f"dask {medians['dask']:.2f} s"
        ),
        rounds=PAIRED_ROUNDS,
        local_s=[round(w, 2) for w in walls["local"]],
        dask_s=[round(w, 2) for w in walls["dask"]],
        median_local_s=round(medians["local"], 2),
        median_dask_s=round(medians["dask"], 2),
        dask_over_local=round(medians["dask"] / medians["local"], 2),
        first_dask_over_local=round(walls["dask"][0] / walls["local"][0], 2),
    )


def test_batch_costs(benchmark: Any, cluster: DaskCluster, tmp_path: Path) -> None:
    benchmark.group = "dask:batch-costs"
    import yaml
    from distributed import Client, get_task_stream

    config = yaml.safe_load(GRID_EXAMPLE.read_text())
    config["results_dir"] = str(tmp_path / "results")
    config["engine"] = "container"  # batches of containers (blocks are measured apart)
    with Client(cluster.address, set_as_default=False) as client:
        with get_task_stream(client=client) as stream:
            cpu = resource.getrusage(resource.RUSAGE_SELF)
            start = time.perf_counter()
            result = run(config, backend="rust", executor={"dask": cluster.address})
            wall = time.perf_counter() - start
            after = resource.getrusage(resource.RUSAGE_SELF)
        tasks = [t for t in stream.data if str(t["key"]).startswith("phasekit-batch")]
    try:
        with open_catalog(str(tmp_path / "results"), results_dir=tmp_path / "results") as cat:
            rows = len(cat.list_items(result.run_id))
    finally:
        result.close()
    compute = [
        sum(s["stop"] - s["start"] for s in t["startstops"] if s["action"] == "compute")
        for t in tasks
    ]
    batches = len(tasks)
    # the pickled results of one average batch (what travels from a worker to the client)
    spec = DataSpec.from_config(config["data"])
    jobs = _sample_jobs(spec, max(1, round(SETS / batches)))
    batch_bytes = len(pickle.dumps(run_batch(spec, jobs, "rust")))
    client_cpu = (after.ru_utime + after.ru_stime) - (cpu.ru_utime + cpu.ru_stime)
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)
    benchmark.extra_info.update(
        items=SETS,
        unit="containers",
        headline=(
            f"per batch of {SETS / batches:.0f} containers: {sum(compute) / batches:.3f} s "
            f"compute, {batch_bytes} result bytes, {rows / batches:.0f} catalog rows"
        ),
        batches=batches,
        containers_per_batch=round(SETS / batches, 1),
        compute_s_per_batch=round(sum(compute) / batches, 4),
        compute_s_per_container=round(sum(compute) / SETS, 5),
        result_bytes_per_batch=batch_bytes,
        catalog_rows_per_batch=round(rows / batches, 1),
        catalog_rows=rows,
        client_cpu_s_per_container=round(client_cpu / SETS, 5),
        wall_s=round(wall, 2),
    )


def _sample_jobs(spec: DataSpec, count: int) -> list[Any]:
    from phasekit.backtest.portfolio import PortfolioSettings
    from phasekit.tracing import TracerSettings
    from phasekit.workflow.executor import bars_for
    from phasekit.workflow.sequences import Span
    from phasekit.workflow.topology import PortfolioJob

    bars = bars_for(spec)
    tracer = TracerSettings(periods_per_year=bars.periods_per_year)
    return [
        PortfolioJob(
            f"portfolio_{i:05d}",
            "full",
            Span(0, len(bars)),
            "sma_crossover",
            {"fast": 5 + 5 * (i % 20), "slow": 110 + 10 * (i % 50)},
            {"strategy.fast": 5 + 5 * (i % 20), "strategy.slow": 110 + 10 * (i % 50)},
            PortfolioSettings(commission_bps=1, slippage_bps=1),
            tracer,
            bars.symbol,
        )
        for i in range(count)
    ]


MANY_SETS = 100_000
MANY_BARS = 1_000
WORKER_BUDGET = "512MiB"
"""Each worker's ``--memory-limit`` in ``dask:memory-per-worker`` (the nanny restarts a
worker past 95% of it)."""
SAMPLE_SECONDS = 0.1


class RssSampler(threading.Thread):
    """Samples the resident memory of processes (by name) until stopped; keeps the peak
    of each."""

    def __init__(self, pids: dict[str, int]) -> None:
        super().__init__(daemon=True)
        import psutil

        self.processes = {name: psutil.Process(pid) for name, pid in pids.items()}
        self.peak: dict[str, int] = dict.fromkeys(pids, 0)
        self.samples = 0
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            for name, process in self.processes.items():
                try:
                    self.peak[name] = max(self.peak[name], process.memory_info().rss)
                except Exception:  # the process is gone (a restart shows in the pids)
                    continue
            self.samples += 1
            self.halt.wait(SAMPLE_SECONDS)


def many_sets_config(results: Path, engine: str = "auto") -> dict[str, Any]:
    """:data:`MANY_SETS` sets: 100 fast x 1,000 slow windows (every fast below every slow).
    Containers in memory (``data_flow.mode: memory``): the workers' memory is measured
    here, not the client's file per container (its cost is in ``dask:batch-costs``)."""
    return {
        "workflow": "optimization",
        "run_name": "many_sets",
        "results_dir": str(results),
        "data_flow": {"mode": "memory"},
        "engine": engine,
        "data": {"n_bars": MANY_BARS, "seed": 3, "frequency": "1h", "volatility": 0.01},
        "strategy": {"type": "sma_crossover", "mode": "long_only"},
        "parameter_space": {
            "strategy.fast": {"range": [2, 102, 1]},
            "strategy.slow": {"range": [110, 110 + MANY_SETS // 100, 1]},
        },
        "objective_function": {"name": "sharpe_ratio", "direction": "maximize"},
        "top_k": 25,
    }


@pytest.fixture
def limited_cluster() -> Iterator[DaskCluster]:
    """A fresh cluster per measurement: one run's leftovers are not the next one's peak."""
    folder = Path(tempfile.mkdtemp(prefix="phasekit-bench-dask-mem-"))
    started = start_cluster(folder, memory_limit=WORKER_BUDGET)
    try:
        yield started
    finally:
        started.stop()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.timeout(3600)  # 100,000 sets take minutes
@pytest.mark.parametrize("engine", ["block", "container"])
def test_memory_per_worker(
    engine: str,
    benchmark: Any,
    limited_cluster: DaskCluster,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    benchmark.group = "dask:memory-per-worker"
    from distributed import Client

    with Client(limited_cluster.address, set_as_default=False) as client:
        info = client.scheduler_info()["workers"]
        budget = {addr: int(w["memory_limit"]) for addr, w in info.items()}
    pids = limited_cluster.worker_pids()
    sampler = RssSampler({**pids, "client": os.getpid()})
    sampler.start()
    start = time.perf_counter()
    try:
        with caplog.at_level(logging.INFO, logger="phasekit.workflow.executors.dask"):
            result = run(
                many_sets_config(tmp_path / "results", engine),
                backend="rust",
                executor={"dask": limited_cluster.address},
            )
        wall = time.perf_counter() - start
    finally:
        sampler.halt.set()
        sampler.join(timeout=10)
    try:
        containers = sum(p.containers for p in result.phases.values())
    finally:
        result.close()
    batches: Counter[str] = Counter()
    for record in caplog.records:
        found = re.match(
            r"dask: (?:batch|block) of \d+ containers done on (\S+) ", record.getMessage()
        )
        if found:
            batches[found.group(1)] += 1
    restarted = limited_cluster.worker_pids() != pids
    mib = 1 << 20
    peaks = {addr: round(sampler.peak[addr] / mib, 1) for addr in pids}
    client_peak = round(sampler.peak["client"] / mib, 1)
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)
    benchmark.extra_info.update(
        items=containers,
        unit="containers",
        headline="peak RSS per worker "
        + ", ".join(f"{peaks[a]:.0f} of {budget[a] / mib:.0f} MiB" for a in pids),
        sets=MANY_SETS,
        bars=MANY_BARS,
        engine=engine,
        budget_mib={a: round(b / mib) for a, b in budget.items()},
        peak_rss_mib=peaks,
        client_peak_rss_mib=client_peak,
        samples=sampler.samples,
        batches_per_worker=dict(batches),
        wall_s=round(wall, 1),
        restarted=restarted,
    )
    assert containers >= MANY_SETS
    assert not restarted, "a worker was restarted (its nanny saw it past the budget)"
    for addr in pids:
        peak = sampler.peak[addr]
        assert 0 < peak <= budget[addr], f"{addr}: peak RSS {peak / mib:.0f} MiB"
