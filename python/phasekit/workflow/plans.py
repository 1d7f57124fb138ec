"""How a phase keeps its containers' results: the phase's effective data flow and one
:class:`~phasekit.workflow.results.ContainerPlan` per container or role container.

Rules (design note 001):

* a phase that runs more than one parameter set and whose data-flow mode is still the
  package default keeps its portfolios ``hybrid``, each under a child budget of
  :data:`HYBRID_CONTAINER_MB` inside the phase's budget;
* a ``containers:`` pattern that sets ``data_flow.mode`` gives its containers that
  store; one that sets ``memory_limit_mb`` gives each of them a child budget of that
  size inside the phase's hybrid budget (the phase's store stays one store);
* results kept in memory are also written to files when the phase persists
  (``ResolvedPhase.persist``) or the container's ``persistence.on_completion`` is set.
"""

from __future__ import annotations

import fnmatch
import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import numpy as np

from phasekit.config.provenance import Level
from phasekit.errors import ConfigError
from phasekit.workflow.results import ROLE_CONTAINERS, ContainerPlan

if TYPE_CHECKING:
    from phasekit.config.resolved import ResolvedDataFlow, ResolvedPhase, ResolvedSettings

log = logging.getLogger(__name__)

HYBRID_CONTAINER_MB = 10
MB = 1024 * 1024


def _from_pattern(settings: ResolvedSettings, key: str) -> bool:
    """The value of ``key`` was set by a container pattern (YAML or ``--set``)."""
    return settings.pattern_of(key) is not None


def phase_flow(phase: ResolvedPhase, n_sets: int) -> tuple[ResolvedDataFlow, bool]:
    """The phase's data flow, and whether its mode is the hybrid default for sweeps
    (the mode is still the package default: neither the workflow nor the user set it)."""
    flow = phase.data_flow
    if n_sets > 1 and phase.settings.level_of("data_flow.mode") is Level.PACKAGE_DEFAULT:
        return replace(flow, mode="hybrid"), True
    return flow, False


class Planner:
    """The plans of one phase's containers."""

    def __init__(self, phase: ResolvedPhase, n_sets: int) -> None:
        self.phase = phase
        self.flow, self.sweep_default = phase_flow(phase, n_sets)
        self._unmatched = set(unmatched_patterns(phase, ()))

    @property
    def unmatched(self) -> list[str]:
        """The patterns that selected no container so far."""
        return sorted(self._unmatched)

    def container(self, container_id: str) -> ContainerPlan:
        if self._unmatched:
            self._unmatched -= {p for p in self._unmatched if fnmatch.fnmatchcase(container_id, p)}
        settings = self.phase.container(container_id).settings
        own = settings.data_flow
        mode = own.mode if _from_pattern(settings, "data_flow.mode") else self.flow.mode
        flow = replace(own, mode=mode, memory_limit_mb=self.flow.memory_limit_mb)
        budget: Optional[int] = None
        if _from_pattern(settings, "data_flow.memory_limit_mb"):
            budget = own.memory_limit_bytes
        elif self.sweep_default and mode == "hybrid":
            budget = HYBRID_CONTAINER_MB * MB
        persist = self.phase.persist or own.persistence.on_completion
        return ContainerPlan(flow, budget, persist, settings.snapshot_interval)

    def containers(self, container_ids: Sequence[str]) -> list[ContainerPlan]:
        """:meth:`container` of each container, resolved once per group of containers
        the same patterns match (:func:`pattern_groups`)."""
        first, group = pattern_groups(self.phase, container_ids)
        plans = [self.container(container_ids[i]) for i in first]
        return list(map(plans.__getitem__, group.tolist()))

    def role(self, role: str) -> Optional[ContainerPlan]:
        """The plan of a role container (``data``, ``features``, ``execution``) when a
        pattern selects it; None otherwise."""
        if self.phase.container(role).pattern is None:
            return None
        return self.container(role)


def pattern_groups(
    phase: ResolvedPhase, container_ids: Sequence[str]
) -> tuple[list[int], np.ndarray]:
    """Containers alike: those the same of the phase's ``containers:`` patterns match
    resolve to the same settings (a container's settings follow from which patterns
    match its id). Returns the position of the first container of each group and each
    container's group."""
    n = len(container_ids)
    patterns = list(phase.pattern_settings)
    if not patterns or not n:
        return ([0] if n else []), np.zeros(n, dtype=np.int64)
    keys = np.zeros((n, len(patterns)), dtype=bool)
    for j, pattern in enumerate(patterns):
        match = re.compile(fnmatch.translate(pattern)).match  # as fnmatchcase matches
        hits = map(bool, map(match, container_ids))  # a match is truthy, None is not
        keys[:, j] = np.fromiter(hits, dtype=bool, count=n)
    _, first, group = np.unique(keys, axis=0, return_index=True, return_inverse=True)
    return [int(i) for i in first], group.reshape(-1)


def check_base_path(phase: ResolvedPhase, results_dir: str) -> None:
    """A phase's ``file_settings.base_path`` lies under ``results_dir``: the catalog reads
    and deletes only under its results folder (ConfigError otherwise)."""
    base = Path(phase.data_flow.file.base_path).resolve()
    root = Path(results_dir).resolve()
    if not base.is_relative_to(root):
        raise ConfigError(
            f"phases.{phase.name}.data_flow.file_settings.base_path: {str(base)[:200]!r} "
            f"is outside results_dir {str(root)[:200]!r}; the catalog reads and deletes "
            "only under its results folder, so give a folder inside it"
        )


def check_topology(phase: ResolvedPhase) -> None:
    """``phasekit run`` runs the ``backtest``, ``analysis`` and ``stream`` topologies; a
    ``module:function`` topology is accepted by the configuration (for the design notes'
    own sequencer, see phasekit.compat) but not run: ConfigError rather than a backtest."""
    if ":" in phase.topology:
        raise ConfigError(
            f"phases.{phase.name}.topology: {phase.topology[:200]!r}: phasekit run does not "
            "run user topologies yet; use backtest, analysis or stream (a user strategy "
            "goes in strategy.type as module:Class)"
        )


PHASE_LEVELS = (Level.PHASE, Level.PHASE_OVERRIDE)
DATA_FLOW_KEYS = ("data_flow.mode", "data_flow.memory_limit_mb", "data_flow.file.format")


def check_analysis_flow(phase: ResolvedPhase) -> None:
    """An ``analysis`` phase keeps its inputs in memory and stores no container results
    (it writes its ranking files): ``mode: memory`` (design note 000 writes it) says
    what happens; another mode, budget or file format set for it alone would be
    ignored, so it is a ConfigError."""
    if phase.topology != "analysis":
        return
    for key in DATA_FLOW_KEYS:
        if key == "data_flow.mode" and phase.data_flow.mode == "memory":
            continue
        if phase.settings.level_of(key) in PHASE_LEVELS:
            where = phase.settings.provenance(key).path
            raise ConfigError(
                f"{where}: phase {phase.name!r} has topology 'analysis', which stores no "
                "container results (only its ranking files), so a data flow set for it "
                "has no effect; remove it"
            )


def unmatched_patterns(phase: ResolvedPhase, container_ids: Iterable[str]) -> list[str]:
    """The phase's ``containers:`` patterns that selected no container (role containers
    count as selected)."""
    ids = [*ROLE_CONTAINERS, *container_ids]
    return [
        pattern
        for pattern in phase.pattern_settings
        if not any(fnmatch.fnmatchcase(cid, pattern) for cid in ids)
    ]
