"""Runs portfolio jobs locally: in this process (``workers=1``) or batched across worker
processes. Results come back in job order whatever the number of workers, so a run's
output does not depend on it; at most ``2 x workers`` batches are in flight, which
bounds the memory held for results not yet written."""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from phasekit.backtest.bars import Bars, load_bars, synthetic_bars
from phasekit.errors import ConfigError
from phasekit.workflow.topology import PortfolioJob, run_portfolio

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DataSpec:
    """How to get the bars (picklable): synthetic settings or a file path."""

    source: str
    settings: tuple[tuple[str, Any], ...]

    @classmethod
    def from_config(cls, data: Mapping[str, Any] | None) -> DataSpec:
        data = {k: v for k, v in dict(data or {}).items() if v is not None}
        source = data.pop("source", None) or ("file" if data.get("path") else "synthetic")
        return cls(str(source), tuple(sorted((k, _freeze(v)) for k, v in data.items())))

    def load(self) -> Bars:
        settings = dict(self.settings)
        if self.source == "file":
            paths = settings.get("path") or ()
            paths = [paths] if isinstance(paths, str) else list(paths)
            if len(paths) != 1:
                raise ConfigError(f"data.path: give exactly one file, got {paths}")
            symbols = settings.get("symbols") or ()
            return load_bars(paths[0], symbols[0] if symbols else None)
        symbols = list(settings.pop("symbols", None) or ("SYN",))
        settings.pop("path", None)
        if "end" not in settings and "n_bars" not in settings:
            settings["n_bars"] = 2000
        return synthetic_bars(symbols[:1], **settings)[symbols[0]]


def _freeze(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


_CACHE: dict[DataSpec, Bars] = {}


def bars_for(spec: DataSpec) -> Bars:
    """The bars of ``spec``, loaded once per process."""
    bars = _CACHE.get(spec)
    if bars is None:
        _CACHE.clear()
        bars = _CACHE[spec] = spec.load()
    return bars


@dataclass
class Outcome:
    """What a destroyed portfolio container hands back: its results and outputs."""

    job: PortfolioJob
    results: dict[str, Any]
    trades: pa.Table
    equity: pa.Table | None


def run_batch(
    spec: DataSpec, jobs: Sequence[PortfolioJob], backend: str | None = None
) -> list[Outcome]:
    """Run jobs one container at a time (the function worker processes execute)."""
    if backend is not None:
        import phasekit

        if phasekit.get_backend() != backend:
            phasekit.set_backend(backend)
    bars = bars_for(spec)
    out: list[Outcome] = []
    for job in jobs:

        def sink(container: Any, results: dict[str, Any], job: PortfolioJob = job) -> None:
            outputs = container.outputs
            out.append(Outcome(job, results, outputs["trades"], outputs.get("equity_curve")))

        run_portfolio(bars, job, sink)
    for outcome in out:
        outcome.results.pop("trades", None)
        outcome.results.pop("equity_curve", None)
    return out


class Executor:
    """Local execution with ``workers`` processes (1: in this process)."""

    def __init__(self, workers: int | None = None, backend: str | None = None) -> None:
        self.workers = max(1, int(workers or os.cpu_count() or 1))
        self.backend = backend
        self._pool: ProcessPoolExecutor | None = None

    def _get_pool(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                max_workers=self.workers, mp_context=mp.get_context("spawn")
            )
        return self._pool

    def map(
        self,
        spec: DataSpec,
        jobs: Sequence[PortfolioJob],
        on_batch: Callable[[int], None] | None = None,
    ) -> Iterator[Outcome]:
        """Outcomes of ``jobs`` in job order."""
        if not jobs:
            return
        if self.workers == 1:
            size = max(1, min(64, len(jobs)))
            for i in range(0, len(jobs), size):
                batch = run_batch(spec, jobs[i : i + size])
                if on_batch:
                    on_batch(len(batch))
                yield from batch
            return
        size = max(1, min(64, -(-len(jobs) // (self.workers * 4))))
        batches = [jobs[i : i + size] for i in range(0, len(jobs), size)]
        pool = self._get_pool()
        pending: deque[Future[list[Outcome]]] = deque()
        it = iter(batches)
        for batch in it:
            pending.append(pool.submit(run_batch, spec, batch, self.backend))
            if len(pending) >= 2 * self.workers:
                break
        while pending:
            done = pending.popleft().result()
            nxt = next(it, None)
            if nxt is not None:
                pending.append(pool.submit(run_batch, spec, nxt, self.backend))
            if on_batch:
                on_batch(len(done))
            yield from done

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
