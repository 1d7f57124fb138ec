"""Executors: where a run's batches of portfolio containers execute.

Every executor takes the same units of work, a batch of containers over one data window
(:func:`phasekit.workflow.executor.run_batch`) or a block of containers evaluated in one
kernel call (:func:`phasekit.workflow.blocks.run_block_job`), and hands their outcomes
back in order; the run writes them and commits their catalog rows as they arrive (a
block sent with a part sink comes back as the parts its worker wrote,
:mod:`phasekit.workflow.blockwrite`, and the run commits its row). ``local``
runs batches in worker processes of this machine
(:class:`phasekit.workflow.executor.Executor`); ``dask`` on the workers of a
``distributed`` scheduler (:class:`phasekit.workflow.executors.dask.DaskExecutor`);
``ray`` as tasks on a Ray cluster (:class:`phasekit.workflow.executors.ray.RayExecutor`).
The cluster executors share their loop (:mod:`phasekit.workflow.executors.remote`).
The allowed names are :data:`phasekit.registry.EXECUTORS`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Optional, Protocol, Union

from phasekit.config.resolved import ExecutorTarget
from phasekit.errors import ConfigError
from phasekit.registry import EXECUTORS
from phasekit.workflow.blocks import BlockJob, Ran
from phasekit.workflow.executor import DataSpec, Executor, Outcome
from phasekit.workflow.topology import PortfolioJob

ExecutorSpec = Union[str, dict[str, str]]
"""An ``executor`` setting as written: ``"local"``, ``{"dask": ADDRESS}`` or
``{"ray": ADDRESS}``."""


WorkerProgress = Callable[[str, int], None]
"""Called after each batch with the worker that ran it and its number of containers
(the Dask and Ray executors' workers; the local executor reports none)."""


class BatchExecutor(Protocol):
    """What the run asks of an executor."""

    def start(self, *, containers: bool = True) -> None:
        """Make sure the workers can be reached before anything is recorded
        (``containers``: the run may run containers one at a time, not only blocks)."""

    def map(
        self,
        spec: DataSpec,
        jobs: Sequence[PortfolioJob],
        on_batch: Optional[Callable[[int], None]] = None,
    ) -> Iterator[Outcome]:
        """Outcomes of ``jobs`` in job order; ``on_batch(n)`` after each batch of ``n``."""
        ...

    def map_blocks(
        self,
        spec: DataSpec,
        blocks: Sequence[BlockJob],
        on_block: Optional[Callable[[Ran], None]] = None,
    ) -> Iterator[Ran]:
        """Outcomes of ``blocks`` (:mod:`phasekit.workflow.blocks`) in block order;
        ``on_block`` after each."""
        ...

    def close(self, *, abort: bool = False) -> None:
        """Release the workers (``abort``: the batches in flight are not wanted)."""


def make_executor(
    target: ExecutorTarget,
    workers: Optional[int],
    backend: Optional[str],
    on_worker: Optional[WorkerProgress] = None,
) -> BatchExecutor:
    """The executor ``target`` names. ``workers``: local worker processes, or on a
    cluster the units in flight (2 x ``workers``; default 2 x the cluster's Dask threads
    or Ray CPUs).
    ``on_worker``: see :data:`WorkerProgress`."""
    if target.kind == "local":
        return Executor(workers, backend)
    if target.kind == "dask" and target.address is not None:
        from phasekit.workflow.executors.dask import DaskExecutor

        return DaskExecutor(target.address, backend, workers, on_worker=on_worker)
    if target.kind == "ray" and target.address is not None:
        from phasekit.workflow.executors.ray import RayExecutor

        return RayExecutor(target.address, backend, workers, on_worker=on_worker)
    raise ConfigError(
        f"executor: {target.display()!r} is not an executor; allowed: {', '.join(EXECUTORS)}"
    )


__all__ = ["BatchExecutor", "ExecutorSpec", "WorkerProgress", "make_executor"]
