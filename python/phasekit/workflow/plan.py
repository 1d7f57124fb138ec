"""What a run will do, without running it (``phasekit run --dry-run``): per phase its
windows, the containers each window runs, the engine that runs them and the store and
format of its results.

``engine`` is :func:`~phasekit.workflow.blocks.phase_engine`, the decision the run
takes. ``rows`` says how the containers' catalog rows are kept: ``table`` (a block
window: a catalog row per block whose containers point at the window's ``containers``
table,
``store`` and ``format`` being that table's), ``table+items`` (so, but for the
containers ``items`` names per window: a ``containers:`` pattern makes their own flow
``streaming``, so when they run in that window they get their own items instead),
``items`` (each container's own items in ``store``, as ``engine: container``, output
``container_items``, ``results.layout: admf`` or a ``streaming`` flow store them) or
``none`` (no ``container_results`` output). ``tables`` gives, for a block phase, the store and format of each window table its
outputs ask for (:func:`~phasekit.workflow.blocktables.window_table_store`; ``equity`` is
written only where a container traces its equity; a Monte Carlo window has only
``containers``, its simulations' rows).

The plan uses what the sequencer and its runners use: the bars (``bars_for``), the
parameter sets (``ParameterSpace``), the windows (``windows_for``, ``default_lengths``),
the defaults of :mod:`phasekit.registry` and the container store plans
(:class:`~phasekit.workflow.plans.Planner`). Sets a phase takes from the phase it
depends on are counted as that phase selects them (its ``top_k`` best, or the one best
set of a walk-forward or Monte Carlo phase). ``tests/test_plan.py`` checks a plan
against the catalog of a real run. ``phasekit.run`` plans a run before recording it, so
windows that do not fit the data fail the run before anything is recorded.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from phasekit.backtest.bars import Bars
from phasekit.registry import (
    DEFAULT_BATCH,
    DEFAULT_DATA_SPLIT,
    DEFAULT_ENGINE,
    DEFAULT_SIMULATIONS,
)
from phasekit.workflow.blocks import phase_engine, strategy_type_of
from phasekit.workflow.blocktables import (
    WINDOW_TABLES,
    block_tables,
    items_wanted,
    streams_table,
    window_table_store,
    writes_part_sets,
)
from phasekit.workflow.executor import DataSpec, bars_for
from phasekit.workflow.params import ParameterSpace
from phasekit.workflow.plans import Planner, pattern_groups
from phasekit.workflow.runners.monte_carlo import PREFIX as SIMULATION_PREFIX
from phasekit.workflow.sequencer import DEFAULT_TOP_K, phase_order
from phasekit.workflow.sequences import default_lengths, windows_for


@dataclass(frozen=True)
class WindowPlan:
    window_id: str
    containers: int
    candidates: tuple[str, ...] = ()
    """The ids the window's containers are among (all of them where the window runs
    every set; a selection's are known only once the run ranks)."""


@dataclass
class PhasePlan:
    """One phase: its windows and containers, and where its container results go."""

    name: str
    sequence: str
    topology: str
    depends_on: tuple[str, ...]
    sets: int
    top_k: int = DEFAULT_TOP_K
    windows: list[WindowPlan] = field(default_factory=list)
    store: str = "memory"
    format: Optional[str] = None
    memory_limit_mb: float = 0.0
    tracing: str = ""
    engine: str = "container"
    rows: str = "items"
    tables: dict[str, dict[str, Optional[str]]] = field(default_factory=dict)
    """Per window table of a block phase: its ``store`` and ``format``, and ``parts``:
    ``workers`` where the cluster's workers write it as a part set (a part per block)."""
    items: dict[str, list[str]] = field(default_factory=dict)
    """Per window of a block phase whose rows are a table: the containers that, when
    they run in it, get their own items instead (their own flow is ``streaming``)."""

    @property
    def containers(self) -> int:
        return sum(w.containers for w in self.windows)

    @property
    def selects(self) -> int:
        """How many parameter sets this phase hands to the phases that depend on it."""
        if self.sequence in ("walk_forward", "monte_carlo"):
            return 1
        return min(self.top_k, self.sets)

    def to_dict(self) -> dict[str, Any]:
        return {
            "phase": self.name,
            "sequence": self.sequence,
            "topology": self.topology,
            "depends_on": list(self.depends_on),
            "parameter_sets": self.sets,
            "windows": [{"window": w.window_id, "containers": w.containers} for w in self.windows],
            "containers": self.containers,
            "engine": self.engine,
            "rows": self.rows,
            "tables": {k: dict(v) for k, v in self.tables.items()},
            "items": {k: list(v) for k, v in self.items.items()},
            "store": self.store,
            "format": self.format,
            "memory_limit_mb": self.memory_limit_mb,
            "tracing": self.tracing,
        }


def _top_k(params: Any) -> int:
    return int(params.top_k or DEFAULT_TOP_K)


def _sets(phase: Any, upstream: dict[str, PhasePlan]) -> tuple[int, bool]:
    """(parameter sets of the phase, whether they come from a phase it depends on)."""
    for dep in phase.depends_on:
        if dep in upstream and upstream[dep].topology == "backtest":
            return upstream[dep].selects, True
    if phase.params.parameter_space:
        return len(ParameterSpace.from_config(phase.params.parameter_space).sets()), False
    return 1, False


def _ids(prefix: str, indices: Iterable[int]) -> tuple[str, ...]:
    """Container ids as the phase names them (``<prefix>_<index:05d>``)."""
    numbers = np.asarray(list(indices), dtype=np.int64).astype(str)
    if not numbers.shape[0]:
        return ()
    return tuple(np.strings.add(f"{prefix}_", np.strings.zfill(numbers, 5)).tolist())


def _windows(phase: Any, bars: Bars, n_sets: int, selected: bool) -> list[WindowPlan]:
    params, sequence, n_bars = phase.params, phase.sequence, len(bars)
    every = _ids("portfolio", range(n_sets))
    if sequence == "single_pass":
        window = windows_for("single_pass", n_bars, {})[0]
        return [WindowPlan(window.window_id, n_sets, every)]
    if sequence == "train_test":
        split = params.data_split if params.data_split is not None else DEFAULT_DATA_SPLIT
        train, test = windows_for("train_test", n_bars, {"data_split": split}, bars.index_of)
        k = min(_top_k(params), n_sets)
        if selected:
            return [WindowPlan(test.window_id, k, every[:k])]
        return [WindowPlan(train.window_id, n_sets, every), WindowPlan(test.window_id, k, every)]
    if sequence == "walk_forward":
        wf = params.walk_forward
        settings = {**default_lengths(n_bars), **(wf.model_dump(exclude_none=True) if wf else {})}
        ids = _ids("train", range(n_sets)) + _ids("test", range(n_sets))
        return [
            WindowPlan(w.window_id, n_sets + 1, ids)
            for w in windows_for("walk_forward", n_bars, {"walk_forward": settings})
        ]
    mc = params.monte_carlo.model_dump(exclude_none=True) if params.monte_carlo else {}
    settings = {
        "n": int(mc.get("n") or DEFAULT_SIMULATIONS),
        "batch": mc.get("batch", DEFAULT_BATCH),
    }
    return [
        WindowPlan(
            w.window_id,
            len(w.simulations),
            _ids("base", [0]) + _ids(SIMULATION_PREFIX, w.simulations),
        )
        for w in windows_for("monte_carlo", n_bars, {"monte_carlo": settings})
    ]


def _own_items(planner: Planner, windows: list[WindowPlan]) -> dict[str, list[str]]:
    """Per window: its candidates whose own flow is ``streaming`` (they get their own
    items, :func:`~phasekit.workflow.blocktables.items_wanted`)."""
    out: dict[str, list[str]] = {}
    for w in windows:
        ids = list(w.candidates)
        first, group = pattern_groups(planner.phase, ids)
        modes = np.array([planner.container(ids[i]).flow.mode for i in first], dtype=object)
        streaming = np.asarray(ids, dtype=object)[modes[group] == "streaming"].tolist()
        if streaming:
            out[w.window_id] = streaming
    return out


def plan_phase(
    phase: Any,
    upstream: dict[str, PhasePlan],
    engine: str = DEFAULT_ENGINE,
    admf: bool = False,
    cluster: bool = False,
    encrypted: bool = False,
) -> PhasePlan:
    """The plan of one phase under the run's ``engine`` (``admf``: ``results.layout:
    admf``; ``cluster``: its blocks run on a Dask or Ray cluster; ``encrypted``: the run
    encrypts what it writes)."""
    settings = phase.settings
    plan = PhasePlan(
        phase.name,
        phase.sequence,
        phase.topology,
        tuple(phase.depends_on),
        sets=0,
        tracing=f"{', '.join(settings.event_tracing)} / {settings.retention_policy}",
    )
    flow = phase.data_flow
    if phase.topology != "backtest":
        plan.windows = [WindowPlan("full", 1)]
        plan.store, plan.memory_limit_mb = "memory", flow.memory_limit_mb
        plan.engine = "none"
        return plan
    n_sets, selected = _sets(phase, upstream)
    data = phase.params.data.model_dump(exclude_none=True) if phase.params.data else {}
    bars = bars_for(DataSpec.from_config(data))
    plan.sets, plan.top_k = n_sets, _top_k(phase.params)
    plan.windows = _windows(phase, bars, n_sets, selected)
    planner = Planner(phase, n_sets)
    planned = planner.flow
    plan.store, plan.memory_limit_mb = planned.mode, planned.memory_limit_mb
    plan.engine = phase_engine(engine, phase.sequence, strategy_type_of(phase.params), phase.name)
    if plan.engine == "block":
        for name, output in WINDOW_TABLES.items():
            if output in phase.output and name in block_tables(phase.sequence):
                store = window_table_store(planned.mode, name)
                fmt = None if store == "memory" else planned.file.format
                plan.tables[name] = {"store": store, "format": fmt}
        execution = planner.role("execution") is not None
        if writes_part_sets(
            cluster,
            phase.output,
            admf,
            lambda name: streams_table(name, planned, encrypted, execution),
        ):
            for table in plan.tables.values():
                table["parts"] = "workers"
    if "container_results" not in phase.output:
        plan.rows = "none"
    elif plan.engine == "block" and not items_wanted(phase.output, admf, (planned.mode,)):
        plan.rows, plan.store = "table", str(plan.tables["containers"]["store"])
        plan.items = _own_items(planner, plan.windows)
        if plan.items:
            plan.rows = "table+items"
    plan.format = None if plan.store == "memory" else planned.file.format
    return plan


def plan_run(resolved: Any) -> list[PhasePlan]:
    """The plan of every phase, in the order they run."""
    plans: dict[str, PhasePlan] = {}
    for name in phase_order(resolved.phases):
        phase = resolved.phase(name)
        admf = resolved.results_layout == "admf"
        cluster = resolved.executor.kind != "local"
        encrypted = resolved.encryption.enabled
        plans[name] = plan_phase(phase, plans, resolved.engine, admf, cluster, encrypted)
    return list(plans.values())
