"""Batches of containers on a Dask cluster (``executor: {dask: ADDRESS}``).

The client (the run's process) submits batches to the scheduler at ``ADDRESS``, at most
``2 x`` the cluster's worker threads at a time (or ``2 x workers`` when ``workers`` is
set), so a worker holds a bounded number of results. The data window is the client's:
it loads the bars (:func:`phasekit.workflow.executor.bars_for`) and scatters them to the
cluster once (under a key named after the data spec, :func:`bars_key`); each batch names
that key, and a worker fetches the bars the first time it needs them and keeps them in
its process (:func:`window`, the last :data:`WINDOWS_KEPT` windows), so the bars travel
once to each worker that runs batches, whatever the scheduler later does with its copies,
and a worker never reads ``data.path`` itself (the file need exist only where the client
runs). Should every copy be lost with its workers before a worker fetched it, the client
ships the bars again and submits the batches that needed them again. A batch lost with its worker
is run again on another one by the scheduler; a batch that raises is retried
``retries`` times. Outcomes come back in job order and the client writes them and
commits their catalog rows as today, batch by batch; batches done per worker are logged
and reported to ``on_worker`` (the progress display's bar per worker).
"""

from __future__ import annotations

import hashlib
import logging
import threading
import uuid
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Optional

from phasekit._optional import require
from phasekit.backtest.bars import Bars
from phasekit.errors import WorkflowError
from phasekit.workflow.blocks import BlockJob, BlockOutcome, run_block_bars
from phasekit.workflow.executor import MAX_BATCH, DataSpec, Outcome, bars_for, batch_size, run_jobs
from phasekit.workflow.topology import PortfolioJob

if TYPE_CHECKING:
    from distributed import Client, Future

log = logging.getLogger(__name__)

RETRIES = 3
"""Times a batch that raised is submitted again before the run fails."""
CONNECT_SECONDS = 30.0
"""How long the client waits for the scheduler."""


RESHIPS = 3
"""Times the client ships a data window again after every worker copy was lost."""
RELEASE_SECONDS = 10.0
"""How long the client waits for the workers to drop a released data window (they
keep it, harmlessly, when they do not answer in time)."""

FETCH_SECONDS = 300.0
"""How long a worker waits for the bars it fetches from a peer."""
WINDOWS_KEPT = 4
"""Data windows a worker process keeps (the most recently used); concurrent runs on one
cluster each have theirs."""

RECEIVED: Counter[tuple[str, DataSpec]] = Counter()
"""In a worker process: the arrivals of each data window it received, by (key, spec)."""
_WINDOWS: OrderedDict[str, Bars] = OrderedDict()
_WINDOWS_LOCK = threading.Lock()


class WindowLost(WorkflowError):
    """Raised on a worker: the bars a batch names are held by no worker any more."""


class SharedBars:
    """A data window as it travels to the workers: the bars of ``spec`` under the scatter
    ``key``. Each unpickling (a worker receiving it from the client or a peer) counts one
    arrival in that process's :data:`RECEIVED`."""

    def __init__(self, key: str, spec: DataSpec, bars: Bars) -> None:
        self.key = key
        self.spec = spec
        self.bars = bars

    def __reduce__(
        self,
    ) -> tuple[Callable[[str, DataSpec, Bars], SharedBars], tuple[str, DataSpec, Bars]]:
        return _arrived, (self.key, self.spec, self.bars)


def _arrived(key: str, spec: DataSpec, bars: Bars) -> SharedBars:
    RECEIVED[key, spec] += 1
    return SharedBars(key, spec, bars)


def bars_key(spec: DataSpec) -> str:
    """The scatter key of a data window: named after its spec, unique to one executor
    (two runs on one cluster never share a copy, whatever their files hold)."""
    digest = hashlib.sha256(repr(spec).encode()).hexdigest()[:16]
    return f"phasekit-bars-{digest}-{uuid.uuid4().hex[:8]}"


def window(key: str) -> Bars:
    """On a worker: the bars scattered under ``key``, fetched once (from this worker's
    memory when the scatter put them here, else from a peer) and kept in the process."""
    with _WINDOWS_LOCK:
        bars = _WINDOWS.get(key)
        if bars is None:
            bars = _WINDOWS[key] = _fetch(key)
            while len(_WINDOWS) > WINDOWS_KEPT:
                _WINDOWS.popitem(last=False)
        else:
            _WINDOWS.move_to_end(key)
        return bars


def _fetch(key: str) -> Bars:
    from distributed import Future, get_client, get_worker

    worker = get_worker()
    if key in worker.data:
        return _bars_of(worker.data[key], key)
    client = get_client()
    # a future bound in state "memory" (the client's handler name) is gathered from a peer
    future: Future = Future(key, client, state="memory")  # type: ignore[arg-type]
    try:
        if not client.who_has([future]).get(key):
            raise WindowLost(f"executor: the data window {key} is held by no Dask worker")
        return _bars_of(future.result(timeout=FETCH_SECONDS), key)
    finally:
        future.release()


def _bars_of(found: object, key: str) -> Bars:
    if not isinstance(found, SharedBars):
        raise WorkflowError(f"executor: {key} holds {type(found).__name__}, not a data window")
    return found.bars


def forget_window(key: str) -> None:
    """On a worker: drop the bars of ``key`` (their run is over)."""
    with _WINDOWS_LOCK:
        _WINDOWS.pop(key, None)


def dask_batch(
    key: str, jobs: Sequence[PortfolioJob], backend: Optional[str]
) -> tuple[str, list[Outcome]]:
    """What a Dask worker runs: the batch over the bars scattered under ``key``, and the
    worker's address (for progress)."""
    from distributed import get_worker

    return get_worker().address, run_jobs(window(key), jobs, backend)


def dask_block(key: str, block: BlockJob, backend: Optional[str]) -> tuple[str, BlockOutcome]:
    """What a Dask worker runs for a block: its outcome over the bars scattered under
    ``key``, and the worker's address."""
    from distributed import get_worker

    return get_worker().address, run_block_bars(window(key), block, backend)


class DaskExecutor:
    """Runs batches on the workers of the ``distributed`` scheduler at ``address``."""

    def __init__(
        self,
        address: str,
        backend: Optional[str] = None,
        workers: Optional[int] = None,
        retries: int = RETRIES,
        on_worker: Optional[Callable[[str, int], None]] = None,
    ) -> None:
        self.address = address
        self.backend = backend
        self.workers = workers
        self.retries = retries
        self.on_worker = on_worker
        self.batches: Counter[str] = Counter()
        """Batches done per worker address."""
        self.max_in_flight = 0
        """The most batches that were submitted and not yet taken back."""
        self.shipped = 0
        """Times a data window was shipped to the workers."""
        self._client: Optional[Client] = None
        self._bars: Optional[tuple[DataSpec, Future]] = None

    def start(self, *, containers: bool = True) -> None:
        """Connect to the scheduler (blocks and containers both run on its workers)."""
        self._get_client()

    def _get_client(self) -> Client:
        if self._client is None:
            distributed = require("distributed", feature="executor: {dask: ADDRESS}")
            try:
                self._client = distributed.Client(
                    self.address, timeout=CONNECT_SECONDS, set_as_default=False
                )
            except (OSError, TimeoutError) as exc:
                raise WorkflowError(
                    f"executor: the Dask scheduler at {self.address!r} cannot be reached: {exc}"
                ) from None
        return self._client

    def threads(self) -> int:
        """The worker threads of the cluster now (at least 1)."""
        info = self._get_client().scheduler_info()
        workers = info.get("workers", {}).values()
        return max(1, sum(int(w.get("nthreads", 1)) for w in workers))

    def map(
        self,
        spec: DataSpec,
        jobs: Sequence[PortfolioJob],
        on_batch: Optional[Callable[[int], None]] = None,
    ) -> Iterator[Outcome]:
        """Outcomes of ``jobs`` in job order."""
        if not jobs:
            return
        client = self._get_client()
        slots = self.workers or self.threads()
        size = max(1, min(MAX_BATCH, -(-len(jobs) // (slots * 4))))
        shared = self._shared(spec)
        pending: deque[tuple[Future, list[PortfolioJob]]] = deque()
        start = 0
        reships = 0

        def send(chunk: list[PortfolioJob]) -> Future:
            return self._submit(client, "batch", dask_batch, shared, chunk)

        def submit() -> bool:
            nonlocal start
            if start >= len(jobs):
                return False
            chunk = list(jobs[start : start + size])
            start += len(chunk)
            pending.append((send(chunk), chunk))
            self.max_in_flight = max(self.max_in_flight, len(pending))
            return True

        while len(pending) < 2 * slots and submit():
            pass
        try:
            while pending:
                taken = self._take(pending[0][0], shared)
                if taken is None:  # the bars were lost with every worker that held them
                    reships += 1
                    shared = self._reship(spec, reships)
                    for i, (_, chunk) in enumerate(pending):
                        pending[i] = (send(chunk), chunk)
                    continue
                pending.popleft()
                worker, done = taken
                size = batch_size(done, size)
                submit()
                self.batches[worker] += 1
                log.info(
                    "dask: batch of %d containers done on %s (%d batches there)",
                    len(done),
                    worker,
                    self.batches[worker],
                )
                if self.on_worker:
                    self.on_worker(worker, len(done))
                if on_batch:
                    on_batch(len(done))
                yield from done
        finally:
            for future, _ in pending:
                future.cancel()

    def _reship(self, spec: DataSpec, reships: int) -> Future:
        """Ship the bars again after every copy was lost (the ``reships``-th time);
        WorkflowError past :data:`RESHIPS`."""
        if reships > RESHIPS:
            raise WorkflowError(
                f"executor: the data window was lost with every Dask worker "
                f"{reships} times; the run can be resumed with --resume"
            )
        return self._shared(spec, again=True)

    def map_blocks(
        self,
        spec: DataSpec,
        blocks: Sequence[BlockJob],
        on_block: Optional[Callable[[BlockOutcome], None]] = None,
    ) -> Iterator[BlockOutcome]:
        """Outcomes of ``blocks`` in order, over the shipped bars as batches are (at most
        2 x the slots in flight, each retried ``retries`` times; shipped again when every
        copy of the bars was lost)."""
        if not blocks:
            return
        client = self._get_client()
        slots = self.workers or self.threads()
        shared = self._shared(spec)
        pending: deque[tuple[Future, BlockJob]] = deque()
        todo = iter(blocks)
        reships = 0

        def send(block: BlockJob) -> Future:
            return self._submit(client, "block", dask_block, shared, block)

        def submit() -> None:
            block = next(todo, None)
            if block is not None:
                pending.append((send(block), block))
                self.max_in_flight = max(self.max_in_flight, len(pending))

        for _ in range(2 * slots):
            submit()
        try:
            while pending:
                taken = self._take(pending[0][0], shared)
                if taken is None:
                    reships += 1
                    shared = self._reship(spec, reships)
                    for i, (_, block) in enumerate(pending):
                        pending[i] = (send(block), block)
                    continue
                pending.popleft()
                worker, outcome = taken
                submit()
                self.batches[worker] += 1
                log.info(
                    "dask: block of %d containers done on %s (%d batches there)",
                    len(outcome.job),
                    worker,
                    self.batches[worker],
                )
                if self.on_worker:
                    self.on_worker(worker, len(outcome.job))
                if on_block:
                    on_block(outcome)
                yield outcome
        finally:
            for future, _ in pending:
                future.cancel()

    def _submit(
        self, client: Client, kind: str, task: Callable[..., Any], shared: Future, work: object
    ) -> Future:
        """Submit ``task(window key, work, backend)`` under a fresh ``phasekit-<kind>-`` key,
        retried ``retries`` times."""
        key = f"phasekit-{kind}-{uuid.uuid4().hex}"
        return client.submit(
            task, shared.key, work, self.backend, key=key, retries=self.retries, pure=False
        )

    def _shared(self, spec: DataSpec, *, again: bool = False) -> Future:
        """The cluster's copy of the bars of ``spec``: scattered the first time (or
        ``again``, after every copy was lost), kept for later phases over the same data
        and released (and dropped by the workers) when another window is shipped."""
        if self._bars is not None and self._bars[0] == spec and not again:
            return self._bars[1]
        self._release_bars()
        key = bars_key(spec)
        client = self._get_client()
        shared = SharedBars(key, spec, bars_for(spec))
        future: Future = client.scatter({key: shared}, hash=False)[key]
        self.shipped += 1
        log.info("dask: data window %s shipped to the cluster", key)
        self._bars = (spec, future)
        return future

    def _release_bars(self) -> None:
        found, self._bars = self._bars, None
        if found is None:
            return
        key = str(found[1].key)
        found[1].release()
        client = self._client
        try:
            if client is not None:  # at most RELEASE_SECONDS: a stuck worker holds no run up
                client.sync(
                    client._run,
                    forget_window,
                    key,
                    on_error="ignore",
                    callback_timeout=RELEASE_SECONDS,
                )
        except Exception as exc:  # workers gone: their processes took the bars along
            log.debug("dask: cannot tell the workers to drop %s: %s", key, exc)

    def _take(self, future: Future, shared: Future) -> Optional[tuple[str, Any]]:
        """A batch's (or block's) worker and outcomes; None when it was cancelled because
        its bars were lost."""
        from distributed import KilledWorker
        from distributed.client import FutureCancelledError

        try:
            result: tuple[str, Any] = future.result()
        except KilledWorker as exc:
            raise WorkflowError(
                f"executor: a batch was lost with every Dask worker that took it ({exc}); "
                "the run can be resumed with --resume"
            ) from None
        except WindowLost:
            log.warning("dask: the data window was lost with its workers; shipping it again")
            return None
        except FutureCancelledError:
            if shared.status == "finished":
                raise
            log.warning("dask: the data window was lost with its workers; shipping it again")
            return None
        finally:
            future.release()
        return result

    def close(self, *, abort: bool = False) -> None:
        self._release_bars()
        client, self._client = self._client, None
        if client is not None:
            client.close()
