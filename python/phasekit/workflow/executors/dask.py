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
``retries`` times. Outcomes come back in job order, fetched from the workers directly
when the client reaches every worker at connection time (:func:`reaches_workers`), else
through the scheduler; the client writes them and commits their catalog rows, batch by
batch (a block sent with a part sink is written by its worker, which hands back only
its parts' metadata, :mod:`phasekit.workflow.blockwrite`); batches done per worker are
logged and reported to ``on_worker`` (the progress display's bar per worker).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import threading
import uuid
from collections import Counter, OrderedDict
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Optional

from phasekit._optional import require
from phasekit.backtest.bars import Bars
from phasekit.errors import WorkflowError
from phasekit.workflow.blocks import BlockJob, Ran, run_block_bars
from phasekit.workflow.executor import DataSpec, Outcome, bars_for, run_jobs
from phasekit.workflow.executors.remote import RemoteExecutor, Unit
from phasekit.workflow.topology import PortfolioJob

if TYPE_CHECKING:
    from distributed import Client, Future

log = logging.getLogger(__name__)

CONNECT_SECONDS = 30.0
"""How long the client waits for the scheduler."""
PROBE_SECONDS = 2.0
"""How long the client waits for a worker's answer when it checks whether it reaches
the workers (:func:`reaches_workers`)."""
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
"""Guards :data:`_WINDOWS` and :data:`_FETCHES`; held only to read or change them, never
across a fetch: :func:`forget_window` takes it in the worker's event loop, which a fetch
needs (a fetch under it deadlocked the worker)."""
_FETCHES: dict[str, threading.Lock] = {}
"""In a worker process: a lock per window being fetched, so its threads fetch it once."""


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
        bars = _kept(key)
        if bars is not None:
            return bars
        fetching = _FETCHES.setdefault(key, threading.Lock())
    with fetching:  # another thread of this worker may be fetching it
        with _WINDOWS_LOCK:
            bars = _kept(key)
        if bars is not None:
            return bars
        bars = _fetch(key)
        with _WINDOWS_LOCK:
            if _FETCHES.get(key) is fetching:  # else forgotten meanwhile: not kept
                del _FETCHES[key]
                _WINDOWS[key] = bars
                while len(_WINDOWS) > WINDOWS_KEPT:
                    _WINDOWS.popitem(last=False)
        return bars


def _kept(key: str) -> Optional[Bars]:
    """The bars of ``key`` this process keeps (the most recently used now), if any; the
    caller holds :data:`_WINDOWS_LOCK`."""
    bars = _WINDOWS.get(key)
    if bars is not None:
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
        _FETCHES.pop(key, None)


def dask_batch(
    key: str, jobs: Sequence[PortfolioJob], backend: Optional[str]
) -> tuple[str, list[Outcome]]:
    """What a Dask worker runs: the batch over the bars scattered under ``key``, and the
    worker's address (for progress)."""
    from distributed import get_worker

    return get_worker().address, run_jobs(window(key), jobs, backend)


def dask_block(key: str, block: BlockJob, backend: Optional[str]) -> tuple[str, Ran]:
    """What a Dask worker runs for a block: its outcome over the bars scattered under
    ``key``, and the worker's address."""
    from distributed import get_worker

    return get_worker().address, run_block_bars(window(key), block, backend)


async def reaches_workers(client: Client, timeout: float = PROBE_SECONDS) -> bool:
    """Whether ``client`` reaches each of its cluster's workers now (:func:`answers`;
    False without workers): the client then fetches results from the workers directly,
    one hop instead of two through the scheduler (how it fetches them otherwise: a
    client behind a gateway reaches the scheduler only)."""
    info = await client.scheduler.identity(n_workers=-1)
    workers = list(info.get("workers", {}))
    found = await asyncio.gather(*(answers(client, address, timeout) for address in workers))
    return bool(found) and all(found)


async def answers(client: Client, address: str, timeout: float = PROBE_SECONDS) -> bool:
    """Whether the worker at ``address`` answers ``client`` (its ``identity``, over the
    client's connection pool, where the connection stays for later fetches) within
    ``timeout``."""
    try:
        await asyncio.wait_for(client.rpc(address).identity(), timeout)
    except Exception as exc:  # unreachable, refused, timed out, gone
        log.debug("dask: worker %s not reached: %s", address, exc)
        return False
    return True


class DaskExecutor(RemoteExecutor["Future", "Future"]):
    """Runs batches on the workers of the ``distributed`` scheduler at ``address``."""

    engine = "dask"
    title = "Dask"
    _client: Optional[Client] = None

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
            client = self._client
            client.direct_to_workers = client.sync(reaches_workers, client)
            log.info(
                "dask: results are fetched %s",
                "from the workers directly"
                if client.direct_to_workers
                else "through the scheduler (the client does not reach every worker)",
            )
        return self._client

    def threads(self) -> int:
        """The worker threads of the cluster now (at least 1)."""
        info = self._get_client().scheduler_info()
        workers = info.get("workers", {}).values()
        return max(1, sum(int(w.get("nthreads", 1)) for w in workers))

    def _send(self, kind: str, shared: Future, work: object) -> Future:
        """Submit ``task(window key, work, backend)`` under a fresh ``phasekit-<kind>-`` key,
        retried ``retries`` times."""
        task = dask_block if kind == "block" else dask_batch
        key = f"phasekit-{kind}-{uuid.uuid4().hex}"
        return self._get_client().submit(
            task, shared.key, work, self.backend, key=key, retries=self.retries, pure=False
        )

    def _put(self, spec: DataSpec) -> tuple[Future, str]:
        """Scatter the bars of ``spec`` under a fresh key (:func:`bars_key`)."""
        key = bars_key(spec)
        shared = SharedBars(key, spec, bars_for(spec))
        future: Future = self._get_client().scatter({key: shared}, hash=False)[key]
        return future, key

    def _drop(self, shared: Future) -> None:
        """Release the scattered bars and tell the workers to drop their copies."""
        key = str(shared.key)
        shared.release()
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

    def _take(self, task: Future, shared: Future) -> Optional[Unit]:
        """A batch's (or block's) worker and outcomes; None when it was cancelled because
        its bars were lost."""
        from distributed import KilledWorker
        from distributed.client import FutureCancelledError

        try:
            result: Unit = task.result()
        except KilledWorker as exc:
            raise WorkflowError(
                f"executor: a batch was lost with every Dask worker that took it ({exc}); "
                "the run can be resumed with --resume"
            ) from None
        except WindowLost:
            return None
        except FutureCancelledError:
            if shared.status == "finished":
                raise
            return None
        finally:
            task.release()
        return result

    def _cancel(self, task: Future) -> None:
        task.cancel()

    def _disconnect(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close()
