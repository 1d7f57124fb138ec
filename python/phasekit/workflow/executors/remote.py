"""What the cluster executors (Dask, Ray) share: units of work in flight, in order.

A cluster executor ships the run's data window to its cluster once (``_put``), sends
batches of containers and blocks as tasks naming that copy (``_send``), at most
``2 x`` the slots at a time (``workers`` when set, else the cluster's worker threads or
CPUs), takes their results back in submission order (``_take``) and, should every copy
of the window be lost (on Dask; Ray keeps the client's objects as long as it lives), ships
it again and sends the units still pending again (at most :data:`RESHIPS` times). Each unit done is counted per worker, logged (``<engine>: batch
of N containers done on WORKER (K batches there)``, on the engine module's logger) and
reported to ``on_worker``.
:class:`RemoteExecutor` owns that loop; each engine's module owns the hooks.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Generic, Optional, TypeVar

from phasekit.errors import WorkflowError
from phasekit.workflow.blocks import BlockJob, Ran
from phasekit.workflow.executor import (
    IN_FLIGHT_PER_SLOT,
    MAX_BATCH,
    DataSpec,
    Outcome,
    batch_size,
)
from phasekit.workflow.topology import PortfolioJob

RETRIES = 3
"""Times a unit of work that raised (or lost its worker) is run again before the run
fails."""
RESHIPS = 3
"""Times the client ships a data window again after every copy was lost."""

Task = TypeVar("Task")
"""An engine's handle on a unit of work in flight (a Dask future, a Ray object ref)."""
Shared = TypeVar("Shared")
"""An engine's handle on the cluster's copy of a data window."""

Unit = tuple[str, Any]
"""What a worker hands back: its name (for progress) and the unit's outcome(s)."""


class RemoteExecutor(ABC, Generic[Task, Shared]):
    """Batches and blocks on the workers of the cluster at ``address``; subclasses
    connect and move data. ``workers``: the slots (default: the cluster's);
    ``retries``: see :data:`RETRIES`; ``on_worker(worker, containers)`` after each unit."""

    engine = "cluster"
    """The engine's name in logs (``dask``, ``ray``)."""
    title = "cluster"
    """The engine's name in messages (``Dask``, ``Ray``)."""

    def __init__(
        self,
        address: str,
        backend: Optional[str] = None,
        workers: Optional[int] = None,
        retries: int = RETRIES,
        on_worker: Optional[Callable[[str, int], None]] = None,
    ) -> None:
        self.address = address
        """The cluster's address (each engine's form)."""
        self.backend = backend
        self.workers = workers
        self.retries = retries
        self.on_worker = on_worker
        self.batches: Counter[str] = Counter()
        """Batches (and blocks) done per worker."""
        self.max_in_flight = 0
        """The most units that were submitted and not yet taken back."""
        self.shipped = 0
        """Times a data window was shipped to the cluster."""
        self._bars: Optional[tuple[DataSpec, Shared]] = None
        self.log = logging.getLogger(type(self).__module__)
        """The engine module's logger (units done, windows shipped)."""

    # ------------------------------------------------------------------ engine hooks

    @abstractmethod
    def threads(self) -> int:
        """The units the cluster runs at once now (at least 1)."""

    @abstractmethod
    def _put(self, spec: DataSpec) -> tuple[Shared, str]:
        """Ship the bars of ``spec`` to the cluster: the copy's handle and its name."""

    @abstractmethod
    def _drop(self, shared: Shared) -> None:
        """Release the cluster's copy of a data window (the run no longer needs it)."""

    @abstractmethod
    def _send(self, kind: str, shared: Shared, work: object) -> Task:
        """Submit one unit (``kind``: ``batch`` or ``block``) over the copy ``shared``."""

    @abstractmethod
    def _take(self, task: Task, shared: Shared) -> Optional[Unit]:
        """A unit's worker and outcome(s); None when it failed because every copy of
        its data window was lost."""

    @abstractmethod
    def _cancel(self, task: Task) -> None:
        """Give up a unit in flight (its outcome is not wanted); never called for a unit
        that :meth:`_take` took (it has ended, whether it raised or returned)."""

    @abstractmethod
    def _disconnect(self) -> None:
        """Leave the cluster."""

    # ------------------------------------------------------------------ the interface

    def map(
        self,
        spec: DataSpec,
        jobs: Sequence[PortfolioJob],
        on_batch: Optional[Callable[[int], None]] = None,
    ) -> Iterator[Outcome]:
        """Outcomes of ``jobs`` in job order, in batches of about
        :data:`~phasekit.workflow.executor.BATCH_BYTES` of results."""
        if not jobs:
            return
        size = max(1, min(MAX_BATCH, -(-len(jobs) // (self._slots() * 4))))
        start = 0

        def next_chunk() -> Optional[list[PortfolioJob]]:
            nonlocal start
            if start >= len(jobs):
                return None
            chunk = list(jobs[start : start + size])
            start += len(chunk)
            return chunk

        def measured(done: list[Outcome]) -> None:
            nonlocal size
            size = batch_size(done, size)

        for worker, done in self._in_order(spec, "batch", next_chunk, measured):
            self._count(worker, "batch", len(done))
            if on_batch:
                on_batch(len(done))
            yield from done

    def map_blocks(
        self,
        spec: DataSpec,
        blocks: Sequence[BlockJob],
        on_block: Optional[Callable[[Ran], None]] = None,
    ) -> Iterator[Ran]:
        """Outcomes of ``blocks`` in order, over the shipped bars as batches are."""
        if not blocks:
            return
        todo = iter(blocks)
        for worker, outcome in self._in_order(spec, "block", lambda: next(todo, None), None):
            self._count(worker, "block", len(outcome.job))
            if on_block:
                on_block(outcome)
            yield outcome

    def close(self, *, abort: bool = False) -> None:
        """Release the data window and leave the cluster."""
        self._release_bars()
        self._disconnect()

    # ------------------------------------------------------------------ the loop

    def _slots(self) -> int:
        return self.workers or self.threads()

    def _in_order(
        self,
        spec: DataSpec,
        kind: str,
        next_work: Callable[[], Optional[Any]],
        measured: Optional[Callable[[Any], None]],
    ) -> Iterator[Unit]:
        """Each unit's (worker, outcome) in submission order, at most 2 x the slots in
        flight; ``measured(outcome)`` is told of each before the next unit is made."""
        slots = self._slots()
        shared = self._shared(spec)
        pending: deque[tuple[Task, Any]] = deque()
        reships = 0

        def submit() -> None:
            work = next_work()
            if work is not None:
                pending.append((self._send(kind, shared, work), work))
                self.max_in_flight = max(self.max_in_flight, len(pending))

        for _ in range(IN_FLIGHT_PER_SLOT * slots):
            submit()
        try:
            while pending:
                try:
                    taken = self._take(pending[0][0], shared)
                except Exception:
                    pending.popleft()  # it failed for good: it has ended, not to be cancelled
                    raise
                _, work = pending.popleft()  # it has ended (None: failed, its bars lost)
                if taken is None:  # the bars were lost with every worker that held them
                    self.log.warning(
                        "%s: the data window was lost with its workers; shipping it again",
                        self.engine,
                    )
                    reships += 1
                    shared = self._reship(spec, reships)
                    again = [work, *(w for _, w in pending)]
                    while pending:
                        self._cancel(pending.popleft()[0])
                    pending.extend((self._send(kind, shared, w), w) for w in again)
                    continue
                if measured:
                    measured(taken[1])
                submit()
                yield taken
        finally:
            for task, _ in pending:
                self._cancel(task)

    def _count(self, worker: str, kind: str, containers: int) -> None:
        self.batches[worker] += 1
        self.log.info(
            "%s: %s of %d containers done on %s (%d batches there)",
            self.engine,
            kind,
            containers,
            worker,
            self.batches[worker],
        )
        if self.on_worker:
            self.on_worker(worker, containers)

    # ------------------------------------------------------------------ the data window

    def _shared(self, spec: DataSpec, *, again: bool = False) -> Shared:
        """The cluster's copy of the bars of ``spec``: shipped the first time (or
        ``again``, after every copy was lost), kept for later phases over the same data
        and released when another window is shipped or the executor closes."""
        if self._bars is not None and self._bars[0] == spec and not again:
            return self._bars[1]
        self._release_bars()
        shared, name = self._put(spec)
        self.shipped += 1
        self.log.info("%s: data window %s shipped to the cluster", self.engine, name)
        self._bars = (spec, shared)
        return shared

    def _reship(self, spec: DataSpec, reships: int) -> Shared:
        """Ship the bars again after every copy was lost (the ``reships``-th time);
        WorkflowError past :data:`RESHIPS`."""
        if reships > RESHIPS:
            raise WorkflowError(
                f"executor: the data window was lost with every {self.title} worker "
                f"{reships} times; the run can be resumed with --resume"
            )
        return self._shared(spec, again=True)

    def _release_bars(self) -> None:
        found, self._bars = self._bars, None
        if found is not None:
            self._drop(found[1])


__all__ = ["RESHIPS", "RETRIES", "RemoteExecutor", "Unit"]
