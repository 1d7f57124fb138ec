"""What the cluster executor tests (Dask, Ray) share: a small two-phase run, the run the
worker-kill trials repeat, what a run computed, and checks of an executor's own
interface (``map``) that hold on every cluster."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional, Protocol

import pytest

from phasekit.backtest.portfolio import PortfolioSettings
from phasekit.tracing import TracerSettings
from phasekit.workflow.executor import DataSpec
from phasekit.workflow.executors.remote import RemoteExecutor
from phasekit.workflow.phase import QuietObserver
from phasekit.workflow.sequences import Span
from phasekit.workflow.topology import PortfolioJob

CONFIG: dict[str, Any] = {
    "run_name": "dk",
    "workers": 2,
    "data": {"n_bars": 400, "seed": 11, "frequency": "1h"},
    "data_flow": {"mode": "file"},
    "phases": [
        {
            "name": "search",
            "sequence": "walk_forward",
            "walk_forward": {"train": 120, "test": 60},
            "parameter_space": {"strategy.fast": [2, 3, 4], "strategy.slow": [10, 20, 30]},
            "top_k": 2,
        },
        {"name": "check", "depends_on": ["search"], "sequence": "train_test"},
    ],
}

KILL_CONFIG: dict[str, Any] = {
    "run_name": "kills",
    "data": {"n_bars": 3000, "seed": 21, "frequency": "1h"},
    "data_flow": {"mode": "file"},
    "phases": [
        {
            "name": "search",
            "sequence": "walk_forward",
            "walk_forward": {"train": 1200, "test": 600},
            "parameter_space": {"strategy.fast": [2, 3, 4, 5], "strategy.slow": [10, 20, 30]},
            "top_k": 2,
        },
        {"name": "check", "depends_on": ["search"], "sequence": "train_test"},
    ],
}
"""The run the worker-kill trials repeat (long enough for a kill to land mid-unit)."""


def config(seed: int, **extra: Any) -> dict[str, Any]:
    """:data:`CONFIG` over the bars of ``seed``, with ``extra`` settings."""
    return {**CONFIG, "data": {**CONFIG["data"], "seed": seed}, **extra}


def outputs(result: Any) -> dict[str, Any]:
    """What a run computed: every phase's per-container metrics, window by window, and
    its selection."""
    out: dict[str, Any] = {}
    for name, phase in result.phases.items():
        refs = result.outputs(name)
        windows = sorted({r.window_id for r in refs if r.entity == "aggregate_results"}, key=str)
        out[name] = ({w: result.metrics(name, w).to_pylist() for w in windows}, phase.selected)
    return out


class WorkerCounts(QuietObserver):
    """An observer counting the containers each cluster worker ran."""

    def __init__(self) -> None:
        self.containers: Counter[str] = Counter()

    def worker_batch_done(self, worker: str, containers: int) -> None:
        self.containers[worker] += containers


def job(i: int, strategy: str = "sma_crossover", **params: Any) -> PortfolioJob:
    """Container ``i`` over bars 0-300 (an SMA crossover, fast 2-6, by default)."""
    params = params or {"fast": 2 + i % 5, "slow": 20}
    chosen = {f"strategy.{k}": v for k, v in params.items() if k == "fast"}
    return PortfolioJob(
        f"portfolio_{i:05d}",
        "full",
        Span(0, 300),
        strategy,
        params,
        chosen if strategy == "sma_crossover" else {},
        PortfolioSettings(),
        TracerSettings(),
        "SYN",
    )


def jobs(count: int) -> list[PortfolioJob]:
    return [job(i) for i in range(count)]


def check_bounded(executor: RemoteExecutor[Any, Any], bound: int) -> None:
    """40 jobs come back in order, in more batches than ``bound``, with at most
    ``bound`` in flight."""
    spec = DataSpec.from_config({"n_bars": 300, "seed": 15, "frequency": "1h"})
    try:
        batches: list[int] = []
        got = [o.job.container_id for o in executor.map(spec, jobs(40), batches.append)]
    finally:
        executor.close()
    assert got == [j.container_id for j in jobs(40)]  # in job order
    assert sum(batches) == 40 and len(batches) > bound
    assert executor.max_in_flight == bound  # 2 x workers, or 2 x the cluster's slots
    assert sum(executor.batches.values()) == len(batches)


def check_retried(executor: RemoteExecutor[Any, Any], marker: Path) -> None:
    """A batch whose strategy raises the first time it runs (``marker`` records that it
    did) fails with ``retries=0`` (and is not cancelled: it has ended) and succeeds when
    retried."""
    failing = job(0, "dask_support:FailsOnce", marker=str(marker), fast=2, slow=20)
    spec = DataSpec.from_config({"n_bars": 300, "seed": 19, "frequency": "1h"})
    cancelled: list[object] = []
    cancel = executor._cancel

    def counted(task: object) -> None:
        cancelled.append(task)
        cancel(task)

    executor._cancel = counted  # type: ignore[method-assign]
    try:
        if executor.retries == 0:
            with pytest.raises(RuntimeError, match="the first run fails"):
                list(executor.map(spec, [failing]))
            assert cancelled == []  # the unit that failed has ended: it is not cancelled
        else:
            (outcome,) = executor.map(spec, [failing])
            assert outcome.job.container_id == "portfolio_00000"
            assert "sharpe_ratio" in outcome.results["metrics"]
    finally:
        executor.close()
    assert marker.exists()


class Killer(Protocol):
    """A thread that kills a worker mid-unit: ``killed`` names it, ``stop`` ends the hunt."""

    killed: Optional[object]
    stop: threading.Event

    def start(self) -> None: ...

    def join(self, timeout: Optional[float] = None) -> None: ...


def kill_trials(
    kills: int,
    new_killer: Callable[[], Killer],
    run_once: Callable[[int], Any],
    expected: dict[str, Any],
) -> None:
    """Run ``run_once(trial)`` with a killer hunting a busy worker until ``kills`` runs
    had one killed (a run can end before its killer strikes: at most three times as many
    trials); every run's outputs must equal ``expected`` (an uninterrupted run's)."""
    killed = trial = 0
    while killed < kills and trial < 3 * kills:
        trial += 1
        killer = new_killer()
        killer.start()
        try:
            result = run_once(trial)
        finally:
            killer.stop.set()
            killer.join(timeout=30)
        try:
            assert outputs(result) == expected, f"trial {trial}"
        finally:
            result.close()
        killed += killer.killed is not None
    assert killed == kills
