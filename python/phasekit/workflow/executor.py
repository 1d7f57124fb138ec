"""Runs portfolio jobs locally: containers in this process (``workers=1``) or batched
across worker processes; blocks of parameter sets in this process, on ``workers``
threads (the block kernel releases the GIL). Results come back in job order whatever the
number of workers, so a run's output does not depend on it; at most ``2 x workers``
batches or blocks are in flight, which bounds the memory held for results not yet
written.

Worker processes start from a fork server on Linux (``spawn`` elsewhere) and never
import the caller's ``__main__``: a script that calls ``phasekit.run`` without an
``if __name__ == "__main__":`` guard is not run again in each worker."""

from __future__ import annotations

import ctypes
import inspect
import logging
import os
import signal
import stat
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from multiprocessing import context as mp_context
from multiprocessing import popen_forkserver, popen_spawn_posix, spawn
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from phasekit.backtest.bars import (
    SESSION_CLOSE_NS,
    SESSION_OPEN_NS,
    Bars,
    load_bars,
    parse_frequency,
    synthetic_bars,
    to_ns,
)
from phasekit.catalog.liveness import pid_alive
from phasekit.config.limits import MAX_BARS, clip
from phasekit.errors import ConfigError
from phasekit.workflow.topology import PortfolioJob, run_portfolio

if TYPE_CHECKING:
    from phasekit.workflow.blocks import BlockJob, Ran

log = logging.getLogger(__name__)


DEFAULT_BARS = 2000
"""Bars of synthetic data given neither ``end`` nor ``n_bars``."""


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

    def _file(self) -> str:
        paths = dict(self.settings).get("path") or ()
        paths = [paths] if isinstance(paths, str) else list(paths)
        if len(paths) != 1:
            raise ConfigError(f"data.path: give exactly one file, got {clip(repr(paths))}")
        return str(paths[0])

    def _synthetic(self) -> dict[str, Any]:
        """The keyword arguments of ``synthetic_bars`` (symbols apart)."""
        settings = dict(self.settings)
        for key in ("symbols", "path", "periods_per_year"):
            settings.pop(key, None)
        if "end" not in settings and "n_bars" not in settings:
            settings["n_bars"] = DEFAULT_BARS
        return settings

    def check(self) -> None:
        """Refuse data the run cannot load before anything runs: a file source needs one
        regular file; synthetic bars must number at most MAX_BARS and end by 2262 (the
        last nanosecond timestamp)."""
        if self.source == "file":
            check_data_file(self._file())
            return
        settings = self._synthetic()
        defaults = {
            name: p.default for name, p in inspect.signature(synthetic_bars).parameters.items()
        }
        frequency = settings.get("frequency", defaults["frequency"])
        step = parse_frequency(frequency)
        start = to_ns(settings.get("start", defaults["start"]))
        if "n_bars" not in settings:
            count = (to_ns(settings["end"]) - start) // step + 1  # an upper bound
            if count > MAX_BARS:
                raise ConfigError(
                    f"data: {count:,} bars from start to end every {frequency}; a series "
                    f"may hold at most {MAX_BARS:,}"
                )
            return
        count = int(settings["n_bars"])
        span = _span_ns(step, count, settings.get("calendar", defaults["calendar"]))
        if start + span > np.iinfo(np.int64).max:
            raise ConfigError(
                f"data: {count:,} bars every {frequency} end after 2262-04-11, the last time a "
                "bar can have; use fewer bars, a shorter frequency or an earlier start"
            )

    def load(self) -> Bars:
        return self._bars().with_periods_per_year(dict(self.settings).get("periods_per_year"))

    def _bars(self) -> Bars:
        if self.source == "file":
            symbols = dict(self.settings).get("symbols") or ()
            return load_bars(self._file(), symbols[0] if symbols else None)
        symbols = list(dict(self.settings).get("symbols") or ("SYN",))
        return synthetic_bars(symbols[:1], **self._synthetic())[symbols[0]]


_DAY_NS = 86_400 * 10**9


def _span_ns(step: int, count: int, calendar: str) -> int:
    """At least the time from the first to the last of ``count`` synthetic bars (as
    :func:`~phasekit.backtest.bars.calendar_ts` lays them out), computed in Python ints."""
    if calendar == "24/7":
        return step * (count - 1)
    per_day = 1 if step >= _DAY_NS // 2 else -(-(SESSION_CLOSE_NS - SESSION_OPEN_NS) // step)
    return ((count // per_day + 2) * 7 // 5 + 8) * _DAY_NS


def check_data_file(path: str) -> None:
    """A data file must be a regular file (a FIFO or a device would block the run)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise ConfigError(f"data.path: file {clip(repr(path))} does not exist") from None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"data.path: {clip(repr(path))} cannot be read: {exc}") from None
    if not stat.S_ISREG(st.st_mode):
        raise ConfigError(f"data.path: {clip(repr(path))} is not a regular file")


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
    """Run jobs over the bars of ``spec``, loaded once per process (what local worker
    processes execute)."""
    return run_jobs(bars_for(spec), jobs, backend)


def run_jobs(bars: Bars, jobs: Sequence[PortfolioJob], backend: str | None = None) -> list[Outcome]:
    """Run jobs one container at a time over ``bars`` (the data window they slice)."""
    if backend is not None:
        import phasekit

        if phasekit.get_backend() != backend:
            phasekit.set_backend(backend)
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


_MAIN_KEYS = ("init_main_from_name", "init_main_from_path")
_PREP_LOCK = threading.Lock()


def _preparation_without_main(name: str) -> dict[str, Any]:
    """What a new worker is told about its parent, minus the parent's ``__main__``."""
    data: dict[str, Any] = _ORIGINAL_PREPARATION(name)
    for key in _MAIN_KEYS:
        data.pop(key, None)
    return data


_ORIGINAL_PREPARATION = spawn.get_preparation_data


def _launch_without_main(launch: Callable[[Any, Any], None], popen: Any, process_obj: Any) -> None:
    with _PREP_LOCK:
        spawn.get_preparation_data = _preparation_without_main
        try:
            launch(popen, process_obj)
        finally:
            spawn.get_preparation_data = _ORIGINAL_PREPARATION


_PRELOAD = ["phasekit.workflow.executor"]


class _ForkServerPopen(popen_forkserver.Popen):
    def _launch(self, process_obj: Any) -> None:
        _launch_without_main(popen_forkserver.Popen._launch, self, process_obj)  # type: ignore[attr-defined]


class _SpawnPopen(popen_spawn_posix.Popen):
    def _launch(self, process_obj: Any) -> None:
        _launch_without_main(popen_spawn_posix.Popen._launch, self, process_obj)  # type: ignore[attr-defined]


class _ForkServerProcess(mp_context.ForkServerProcess):
    @staticmethod
    def _Popen(process_obj: Any) -> Any:
        return _ForkServerPopen(process_obj)


class _SpawnProcess(mp_context.SpawnProcess):
    @staticmethod
    def _Popen(process_obj: Any) -> Any:
        return _SpawnPopen(process_obj)


class _ForkServerContext(mp_context.ForkServerContext):
    Process = _ForkServerProcess  # type: ignore[assignment]


class _SpawnContext(mp_context.SpawnContext):
    Process = _SpawnProcess  # type: ignore[assignment]


def worker_context() -> mp_context.BaseContext:
    """The start method of worker processes: a fork server preloading phasekit (not
    ``__main__``) on Linux, ``spawn`` (without ``__main__``) on other POSIX systems."""
    if sys.platform.startswith("linux"):
        ctx = _ForkServerContext()
        ctx.set_forkserver_preload(_PRELOAD)
        return ctx
    return _SpawnContext()


PR_SET_PDEATHSIG = 1
"""prctl(2) option: the signal a process gets when its parent exits (Linux)."""
WATCH_SECONDS = 0.5


def _watch(run_pid: int) -> None:
    while True:
        time.sleep(WATCH_SECONDS)
        if not pid_alive(run_pid):
            os._exit(1)


def die_with_parent(run_pid: int) -> None:
    """The worker dies with the run's process. On Linux the kernel kills it when its
    parent (the fork server, which ends with the run) exits (``PR_SET_PDEATHSIG``);
    everywhere a watchdog thread polls the run's pid and exits when it is gone, so no
    worker (nor the resource tracker they keep open) outlives a killed run."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError) as exc:  # pragma: no cover - exotic libc
            log.debug("prctl(PR_SET_PDEATHSIG) unavailable: %s", exc)
    if not pid_alive(run_pid):
        os._exit(1)
    threading.Thread(target=_watch, args=(run_pid,), name="phasekit-watchdog", daemon=True).start()


def _worker_init(run_pid: int) -> None:
    """Workers leave Ctrl-C to the parent (which stops them): no traceback per worker;
    and they die with the run's process."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    die_with_parent(run_pid)


def _ready() -> bool:
    return True


MAX_BATCH = 64
"""The most containers a worker runs in one batch."""
IN_FLIGHT_PER_SLOT = 2
"""Batches (or blocks) an executor keeps submitted and not yet taken back, per slot
(worker process, thread or cluster worker thread)."""
BATCH_BYTES = 1 << 20
"""About how many bytes of results one batch hands back (see :func:`batch_size`)."""


def outcome_bytes(outcome: Outcome) -> int:
    """The bytes a destroyed container hands back (its tables and results)."""
    from phasekit.backend import primitive

    size_of = primitive("size_of")
    total = int(size_of(outcome.trades)) + int(size_of(outcome.results))
    if outcome.equity is not None:
        total += int(size_of(outcome.equity))
    return total


def batch_size(done: Sequence[Outcome], current: int) -> int:
    """The size of the next batches: as many containers as hand back about
    :data:`BATCH_BYTES` (measured on the batch ``done``), between 1 and
    :data:`MAX_BATCH`; ``current`` when nothing was measured."""
    if not done:
        return current
    per_job = max(1, sum(outcome_bytes(o) for o in done) // len(done))
    return max(1, min(MAX_BATCH, BATCH_BYTES // per_job))


class Executor:
    """Local execution: containers in ``workers`` processes (1: in this process), blocks
    in this process on ``workers`` threads."""

    def __init__(self, workers: int | None = None, backend: str | None = None) -> None:
        self.workers = max(1, int(workers or os.cpu_count() or 1))
        self.backend = backend
        self._pool: ProcessPoolExecutor | None = None
        self._threads: ThreadPoolExecutor | None = None

    def start(self, *, containers: bool = True) -> None:
        """Start the worker processes now (a no-op with one worker, or when the run
        has no ``containers`` to run one at a time: blocks run in this process) so that
        a pool that cannot start fails before anything is recorded."""
        if containers and self.workers > 1:
            self._get_pool().submit(_ready).result()

    def _get_pool(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                max_workers=self.workers,
                mp_context=worker_context(),
                initializer=_worker_init,
                initargs=(os.getpid(),),
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
        size = max(1, min(MAX_BATCH, -(-len(jobs) // (self.workers * 4))))
        pool = self._get_pool()
        pending: deque[Future[list[Outcome]]] = deque()
        start = 0

        def submit() -> bool:
            nonlocal start
            if start >= len(jobs):
                return False
            chunk = jobs[start : start + size]
            start += len(chunk)
            pending.append(pool.submit(run_batch, spec, chunk, self.backend))
            return True

        while len(pending) < IN_FLIGHT_PER_SLOT * self.workers and submit():
            pass
        while pending:
            done = pending.popleft().result()
            # the next batches hold about BATCH_BYTES of results: results in flight stay
            # bounded whatever a container returns (equity curves make them large)
            size = batch_size(done, size)
            submit()
            if on_batch:
                on_batch(len(done))
            yield from done

    def map_blocks(
        self,
        spec: DataSpec,
        blocks: Sequence[BlockJob],
        on_block: Callable[[Ran], None] | None = None,
    ) -> Iterator[Ran]:
        """Outcomes of ``blocks`` in order, computed in this process: one block kernel
        call each, which releases the GIL, on ``workers`` threads (at most 2 x
        ``workers`` blocks in flight). No worker process is started or sent the bars."""
        from phasekit.workflow.blocks import run_block_bars

        bars = bars_for(spec)
        if self.workers == 1:
            for block in blocks:
                outcome = run_block_bars(bars, block)
                if on_block:
                    on_block(outcome)
                yield outcome
            return
        threads = self._get_threads()
        pending: deque[Future[Ran]] = deque()
        todo = iter(blocks)

        def submit() -> None:
            block = next(todo, None)
            if block is not None:
                pending.append(threads.submit(run_block_bars, bars, block))

        for _ in range(IN_FLIGHT_PER_SLOT * self.workers):
            submit()
        try:
            while pending:
                outcome = pending.popleft().result()
                submit()
                if on_block:
                    on_block(outcome)
                yield outcome
        finally:
            for future in pending:
                future.cancel()

    def _get_threads(self) -> ThreadPoolExecutor:
        if self._threads is None:
            self._threads = ThreadPoolExecutor(
                max_workers=self.workers, thread_name_prefix="phasekit-block"
            )
        return self._threads

    def close(self, *, abort: bool = False) -> None:
        """Stop the workers: after the batches in flight, or at once with ``abort`` (an
        interrupted run: what they computed is not wanted)."""
        threads, self._threads = self._threads, None
        if threads is not None:
            threads.shutdown(wait=True, cancel_futures=True)
        pool, self._pool = self._pool, None
        if pool is None:
            return
        if not abort:
            pool.shutdown(wait=True, cancel_futures=True)
            return
        processes = list((getattr(pool, "_processes", None) or {}).values())
        pool.shutdown(wait=False, cancel_futures=True)
        for process in processes:
            process.terminate()
        for process in processes:
            process.join(timeout=5)
