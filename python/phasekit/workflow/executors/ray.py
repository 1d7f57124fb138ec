"""Batches of containers and blocks on a Ray cluster (``executor: {ray: ADDRESS}``).

``ADDRESS`` is the cluster's GCS address ``host:port`` (what ``ray start --head`` prints
and ``ray status`` uses, port 6379 by default); the run's process joins the cluster as a
driver (``ray.init(address=ADDRESS)``), so it must run on a node of that cluster. The
client loads the bars (:func:`phasekit.workflow.executor.bars_for`) and puts them into
the object store once per data window (``ray.put``); every batch and block is a Ray task
taking that object as its argument, so the workers of a node read the one copy in their
node's object store (the arrays zero-copy) and a ``data.path`` need only exist where the
client runs. Tasks ask for one CPU each; at most ``2 x`` the cluster's CPUs (or ``2 x
workers`` when ``workers`` is set) are in flight. A task that raises, or whose worker
process dies, is run again up to ``retries`` times (Ray's ``max_retries`` with
``retry_exceptions``). The bars are owned by the client (it put them): Ray keeps them as
long as the client lives and loses them only with the client's node, which takes the
client along; a unit that still finds them lost fails the run with a WorkflowError
(``--resume`` continues it). :mod:`phasekit.workflow.executors.remote` owns the order,
the bound on units in flight and the progress per worker. A worker is named
``NODE_IP/PID`` (its process).
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping, Sequence
from types import ModuleType
from typing import TYPE_CHECKING, Any, Optional

from phasekit._optional import require
from phasekit.backtest.bars import Bars
from phasekit.config.model import split_host_port
from phasekit.errors import ConfigError, WorkflowError
from phasekit.workflow.blocks import BlockJob, Ran, run_block_bars
from phasekit.workflow.executor import DataSpec, Outcome, bars_for, run_jobs
from phasekit.workflow.executors.remote import RemoteExecutor, Unit
from phasekit.workflow.topology import PortfolioJob

if TYPE_CHECKING:
    from ray import ObjectRef

log = logging.getLogger(__name__)

CONNECT_SECONDS = 30.0
"""How long the client waits for the cluster's GCS port to answer (``ray.init`` itself
waits minutes for an address nobody listens on)."""
TASK_NAMES = {"batch": "phasekit-batch", "block": "phasekit-block"}
"""The Ray task name of each unit of work."""


def worker_name() -> str:
    """In a Ray worker: ``NODE_IP/PID``."""
    import ray

    return f"{ray.util.get_node_ip_address()}/{os.getpid()}"


def ray_batch(bars: Bars, jobs: Sequence[PortfolioJob], backend: Optional[str]) -> Unit:
    """What a Ray worker runs for a batch: its outcomes over ``bars`` (the object put
    once per window), and the worker's name (for progress)."""
    outcomes: list[Outcome] = run_jobs(bars, jobs, backend)
    return worker_name(), outcomes


def ray_block(bars: Bars, block: BlockJob, backend: Optional[str]) -> Unit:
    """What a Ray worker runs for a block: its outcome over ``bars``, and its name."""
    outcome: Ran = run_block_bars(bars, block, backend)
    return worker_name(), outcome


def gcs_address(address: str) -> tuple[str, int]:
    """``host:port`` -> (host, port); ConfigError for anything else."""
    try:
        return split_host_port(address)
    except ValueError as exc:
        raise ConfigError(f"executor: ray: {exc}") from None


class RayExecutor(RemoteExecutor["ObjectRef", "ObjectRef"]):
    """Runs batches and blocks as tasks on the Ray cluster whose GCS is at ``address``."""

    engine = "ray"
    title = "Ray"
    _connected = False
    _remote: Mapping[str, Any] = {}
    """The remote functions of a unit kind, made when the executor joins the cluster."""

    def start(self, *, containers: bool = True) -> None:
        """Join the cluster (blocks and containers both run on its workers)."""
        self._ray()

    def _ray(self) -> ModuleType:
        """The ``ray`` module, connected to the cluster."""
        ray = require("ray", feature="executor: {ray: ADDRESS}")
        if self._connected:
            return ray
        host, port = gcs_address(self.address)
        if ray.is_initialized():
            raise WorkflowError(
                "executor: this process is already connected to a Ray cluster; call "
                "ray.shutdown() first (phasekit joins the cluster of the executor setting)"
            )
        try:
            socket.create_connection((host, port), timeout=CONNECT_SECONDS).close()
        except OSError as exc:
            raise WorkflowError(
                f"executor: the Ray cluster at {self.address!r} cannot be reached: {exc}"
            ) from None
        try:
            ray.init(
                address=self.address,
                logging_level=logging.WARNING,
                log_to_driver=False,
                configure_logging=False,
            )
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise WorkflowError(
                f"executor: cannot join the Ray cluster at {self.address!r}: {exc}"
            ) from None
        self._connected = True
        self._remote = {
            kind: ray.remote(task).options(
                name=TASK_NAMES[kind],
                num_cpus=1,
                max_retries=self.retries,
                retry_exceptions=True,
            )
            for kind, task in (("batch", ray_batch), ("block", ray_block))
        }
        log.info("ray: joined the cluster at %s", self.address)
        return ray

    def threads(self) -> int:
        """The CPUs of the cluster now (at least 1): one task per CPU."""
        return max(1, int(self._ray().cluster_resources().get("CPU", 1)))

    def _put(self, spec: DataSpec) -> tuple[ObjectRef, str]:
        ref: ObjectRef = self._ray().put(bars_for(spec))
        return ref, f"{spec.source} object {ref.hex()}"

    def _drop(self, shared: ObjectRef) -> None:
        """Nothing to do: the object store frees the bars once no reference is left."""
        del shared

    def _send(self, kind: str, shared: ObjectRef, work: object) -> ObjectRef:
        self._ray()
        ref: ObjectRef = self._remote[kind].remote(shared, work, self.backend)
        return ref

    def _take(self, task: ObjectRef, shared: ObjectRef) -> Optional[Unit]:
        """A unit's worker and outcome(s) (never None: see the module's docstring on
        lost bars)."""
        ray = self._ray()
        from ray.exceptions import ObjectLostError, WorkerCrashedError

        try:
            result: Unit = ray.get(task)
        except ObjectLostError as exc:
            raise WorkflowError(
                f"executor: the data window was lost from Ray's object store ({exc}); "
                "the run can be resumed with --resume"
            ) from None
        except WorkerCrashedError as exc:
            raise WorkflowError(
                f"executor: a unit of work lost its Ray worker {self.retries + 1} times "
                f"({exc}); the run can be resumed with --resume"
            ) from None
        return result

    def _cancel(self, task: ObjectRef) -> None:
        """Cancel a unit still running; one that has ended is left alone (cancelling a
        task that has failed or finished can abort the client in Ray's task manager:
        ``Tried to complete task that was not pending``, a RAY_CHECK)."""
        try:
            ray = self._ray()
            done, _ = ray.wait([task], timeout=0, fetch_local=False)
            if not done:
                ray.cancel(task)
        except Exception as exc:  # finished, or the cluster is gone
            log.debug("ray: cannot cancel %s: %s", task, exc)

    def _disconnect(self) -> None:
        if self._connected:
            self._connected = False
            self._remote = {}
            import ray

            ray.shutdown()


__all__ = ["RayExecutor", "gcs_address", "ray_batch", "ray_block"]
