"""Batches of containers on a Dask cluster (``executor: {dask: ADDRESS}``).

The client (the run's process) submits batches to the scheduler at ``ADDRESS``, at most
``2 x`` the cluster's worker threads at a time (or ``2 x workers`` when ``workers`` is
set), so a worker holds a bounded number of results. Each worker loads a phase's data
window once and keeps it (:func:`phasekit.workflow.executor.bars_for`: synthetic bars are
generated, a data file is read, by the worker itself). A batch lost with its worker is
run again on another one by the scheduler; a batch that raises is retried ``retries``
times. Outcomes come back in job order and the client writes them and commits their
catalog rows as today, batch by batch; batches done per worker are logged and reported
to ``on_worker`` (the progress display's bar per worker).
"""

from __future__ import annotations

import logging
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Optional

from phasekit._optional import require
from phasekit.errors import WorkflowError
from phasekit.workflow.executor import MAX_BATCH, DataSpec, Outcome, batch_size, run_batch
from phasekit.workflow.topology import PortfolioJob

if TYPE_CHECKING:
    from distributed import Client, Future

log = logging.getLogger(__name__)

RETRIES = 3
"""Times a batch that raised is submitted again before the run fails."""
CONNECT_SECONDS = 30.0
"""How long the client waits for the scheduler."""


def dask_batch(
    spec: DataSpec, jobs: Sequence[PortfolioJob], backend: Optional[str]
) -> tuple[str, list[Outcome]]:
    """What a Dask worker runs: the batch, and the worker's address (for progress)."""
    from distributed import get_worker

    return get_worker().address, run_batch(spec, jobs, backend)


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
        self._client: Optional[Client] = None

    def start(self) -> None:
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
        pending: deque[Future] = deque()
        start = 0

        def submit() -> bool:
            nonlocal start
            if start >= len(jobs):
                return False
            chunk = list(jobs[start : start + size])
            start += len(chunk)
            key = f"phasekit-batch-{uuid.uuid4().hex}"
            future = client.submit(
                dask_batch, spec, chunk, self.backend, key=key, retries=self.retries, pure=False
            )
            pending.append(future)
            self.max_in_flight = max(self.max_in_flight, len(pending))
            return True

        while len(pending) < 2 * slots and submit():
            pass
        try:
            while pending:
                worker, done = self._take(pending.popleft())
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
            for future in pending:
                future.cancel()

    def _take(self, future: Future) -> tuple[str, list[Outcome]]:
        from distributed import KilledWorker

        try:
            result: tuple[str, list[Outcome]] = future.result()
        except KilledWorker as exc:
            raise WorkflowError(
                f"executor: a batch was lost with every Dask worker that took it ({exc}); "
                "the run can be resumed with --resume"
            ) from None
        finally:
            future.release()
        return result

    def close(self, *, abort: bool = False) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close()
