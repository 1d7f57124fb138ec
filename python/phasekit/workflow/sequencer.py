"""The sequencer: runs a resolved configuration's phases in dependency order; per phase
its sequence (one module each in :mod:`phasekit.workflow.runners`) over execution
windows; per window the containers of its topology.

A phase that depends on others runs the ``selected_parameters`` of the first of them
that selected any (found through the catalog), whatever ``parameter_space`` it
inherits; a phase without dependencies searches its ``parameter_space``, or runs the
strategy's own parameters when it has none. The ``analysis`` topology runs no
backtest: it ranks its inputs' container results. The ``stream`` topology runs the
phase's DAG. A phase that consumes a streaming producer runs alongside it
(:mod:`phasekit.workflow.concurrent`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import pyarrow as pa

from phasekit.backtest.portfolio import PortfolioSettings
from phasekit.backtest.strategies import indicator_columns
from phasekit.errors import ConfigError, WorkflowError
from phasekit.objstore import CACHE_DIR
from phasekit.workflow import analysis, concurrent, streamphase
from phasekit.workflow.admf import admf_folder
from phasekit.workflow.blocks import strategy_type_of
from phasekit.workflow.executor import DataSpec, bars_for
from phasekit.workflow.executors import BatchExecutor
from phasekit.workflow.params import ParameterSets, ParameterSpace
from phasekit.workflow.phase import (
    Observer,
    PhaseContext,
    PhaseInputs,
    PhaseOutcome,
    QuietObserver,
)
from phasekit.workflow.plans import Planner
from phasekit.workflow.results import PhaseResults, StreamTap, read_json, run_encryption
from phasekit.workflow.runners import RUNNERS
from phasekit.workflow.timeline import TimelineObserver
from phasekit.workflow.topology import Objective, strategy_columns
from phasekit.workflow.windowagg import public

if TYPE_CHECKING:
    from phasekit.config.resolved import ResolvedConfig, ResolvedPhase

log = logging.getLogger(__name__)

DEFAULT_TOP_K = 10

__all__ = ["DEFAULT_TOP_K", "Observer", "PhaseInputs", "PhaseOutcome", "Sequencer", "phase_order"]


def phase_order(phases: Mapping[str, Any]) -> list[str]:
    """Phases in dependency order (config order among ready phases)."""
    done: list[str] = []
    remaining = list(phases)
    while remaining:
        ready = [p for p in remaining if all(d in done for d in phases[p].depends_on)]
        if not ready:
            raise ConfigError(f"phases: dependency cycle among {', '.join(remaining)}")
        done.append(ready[0])
        remaining.remove(ready[0])
    return done


def objective_of(phase: ResolvedPhase) -> Objective:
    obj = phase.params.objective_function
    return Objective(obj.name, obj.direction) if obj else Objective()


class Sequencer:
    """Runs the phases of one run; see the module docstring."""

    def __init__(
        self,
        resolved: ResolvedConfig,
        run_id: str,
        run_dir: Path,
        catalog: Any,
        executor: BatchExecutor,
        observer: Optional[Observer] = None,
        resume: bool = False,
    ) -> None:
        self.resolved = resolved
        self.run_id = run_id
        self.run_dir = run_dir
        self.catalog = catalog
        self.executor = executor
        self.observer: Observer = observer or QuietObserver()
        self.resume = resume
        self.outcomes: dict[str, PhaseOutcome] = {}
        self.taps: dict[str, StreamTap] = {}
        self.encryption = run_encryption(resolved.encryption)

    # ------------------------------------------------------------------ catalog reads

    def _read(self, item: Any) -> Any:
        item = self.catalog.verify_item(item)
        path = self.catalog.item_local(item, self.run_dir / CACHE_DIR)
        return read_json(Path(path), self.encryption)

    def _items(self, stage: str, entity: str) -> Iterator[Any]:
        yield from self.catalog.list_items(self.run_id, stage=stage, entity=entity)

    def _selected_from(self, deps: Sequence[str]) -> list[dict[str, Any]]:
        for dep in deps:
            items = list(self._items(dep, "selected_parameters"))
            if items:
                return list(self._read(items[-1])["sets"])
        return []

    def _completed(self, name: str, window_id: Optional[str]) -> Optional[dict[str, Any]]:
        """The aggregate of a window finished by an earlier attempt of this run."""
        if not self.resume:
            return None
        if not any(i.window_id == window_id for i in self._items(name, "window_complete")):
            return None
        for agg in self._items(name, "aggregate_results"):
            if agg.window_id == window_id:
                return dict(self._read(agg))
        return None

    # ------------------------------------------------------------------ inputs

    def inputs(self, name: str) -> PhaseInputs:
        phase = self.resolved.phase(name)
        params = phase.params
        data = params.data.model_dump(exclude_none=True) if params.data else {}
        spec = DataSpec.from_config(data)
        strategy = params.strategy
        strategy_type = strategy_type_of(params)
        base = dict(strategy.model_extra or {}) if strategy else {}
        selected = self._selected_from(phase.depends_on) if phase.depends_on else []
        if selected:
            sets = ParameterSets.of_sets(selected)
        elif params.parameter_space:
            sets = ParameterSpace.from_config(params.parameter_space).sets()
        elif phase.depends_on:
            raise WorkflowError(
                f"phase {name!r}: its dependencies {list(phase.depends_on)} selected no "
                "parameter sets and it has no parameter_space"
            )
        else:
            sets = [{}]
        portfolio = PortfolioSettings(
            **(params.portfolio.model_dump(exclude_none=True) if params.portfolio else {})
        )
        return PhaseInputs(
            spec,
            bars_for(spec),
            sets,
            strategy_type,
            base,
            portfolio,
            objective_of(phase),
            params.top_k or DEFAULT_TOP_K,
            selected=bool(selected),
        )

    # ------------------------------------------------------------------ phases

    def run(self) -> dict[str, PhaseOutcome]:
        """Every phase in dependency order; a phase that consumes a streaming producer
        runs alongside it (:mod:`phasekit.workflow.concurrent`)."""
        concurrent.run_phases(self, phase_order(self.resolved.phases))
        return self.outcomes

    def _results(self, phase: ResolvedPhase, planner: Optional[Planner] = None) -> PhaseResults:
        flow = planner.flow if planner else replace(phase.data_flow, mode="memory")
        return PhaseResults(
            self.run_dir,
            self.run_id,
            phase.name,
            flow,
            self.catalog,
            plan=planner.container if planner else None,
            plans=planner.containers if planner else None,
            role_plan=planner.role if planner else None,
            outputs=phase.output,
            allow_pickle=self.resolved.allow_pickle,
            base_path=phase.data_flow.file.base_path,
            tap=self.taps.get(phase.name),
            encryption=self.encryption,
        )

    def run_phase(self, name: str) -> PhaseOutcome:
        phase = self.resolved.phase(name)
        started = time.perf_counter()
        if phase.topology == "analysis":
            outcome = self._analysis(phase)
        elif phase.topology == "stream":
            outcome = self._stream(phase)
        else:
            outcome = self._backtest(phase)
        outcome.seconds = time.perf_counter() - started
        self.observer.phase_done(name, outcome)
        return outcome

    def _workers_write(self) -> bool:
        """The executor's workers may write the window tables' parts themselves
        (:mod:`phasekit.workflow.blockwrite`): a cluster executor."""
        from phasekit.workflow.executors.remote import RemoteExecutor

        return isinstance(self.executor, RemoteExecutor)

    def _backtest(self, phase: ResolvedPhase) -> PhaseOutcome:
        inputs = self.inputs(phase.name)
        planner = Planner(phase, len(inputs.sets))
        out = self._results(phase, planner)
        if self.resolved.results_layout == "admf":
            folder = admf_folder(self.resolved, phase.name)
            out.use_admf(folder, inputs.portfolio.initial_capital)
        self._store_roles(out, inputs)
        out.worker_parts = self._workers_write()
        observer = TimelineObserver(self.observer, out.stats)
        ctx = PhaseContext(
            phase,
            inputs,
            out,
            self.executor,
            observer,
            lambda window_id: self._completed(phase.name, window_id),
            self.resolved.engine,
        )
        started = time.perf_counter()
        try:
            RUNNERS[phase.sequence](ctx)
            outcome = ctx.outcome
            outcome.summary.update(
                {
                    "phase": phase.name,
                    "sequence": phase.sequence,
                    "topology": phase.topology,
                    "data_flow": out.mode,
                    "containers": outcome.containers,
                    "windows": outcome.windows,
                    "best": public(outcome.best),
                    "selected_parameters": outcome.selected,
                    "report": [r.to_dict() for r in outcome.rows],
                    "seconds": round(time.perf_counter() - started, 3),
                    "store_stats": out.stats(),
                    "memory_timeline": observer.finish(),
                    "unmatched_patterns": planner.unmatched,
                }
            )
            for pattern in planner.unmatched:
                log.warning(
                    "phase %s: containers pattern %r selects no container (containers: "
                    "data, features, execution and %s)",
                    phase.name,
                    pattern,
                    ", ".join(f"{p}_*" for p in sorted(ctx.prefixes)),
                )
            outcome.files["phase_summary"] = out.write_json(None, "phase_summary", outcome.summary)
            outcome.files.update(out.finish_admf(bool(phase.settings.event_tracing)))
        finally:
            out.close()
        return outcome

    def _store_roles(self, out: PhaseResults, inputs: PhaseInputs) -> None:
        """The data container's bars and the features container's indicators, stored
        when a pattern selects them."""
        bars = inputs.bars
        out.put_role("data", "bars", bars.to_arrow())
        if out.has_role("features"):
            every = range(len(inputs.sets))
            sets = strategy_columns(inputs.strategy_base, inputs.sets, every)
            columns = indicator_columns(inputs.strategy_type, sets, bars.close)
            out.put_role("features", "indicators", pa.table({"ts": bars.ts, **columns}))

    def _analysis(
        self, phase: ResolvedPhase, streamed: Optional[Mapping[str, Any]] = None
    ) -> PhaseOutcome:
        outcome = PhaseOutcome(phase.name, phase.sequence)
        out = self._results(phase)
        try:
            self.observer.phase_started(phase.name, 1, 1)
            aggregates = [
                (f"{dep}/{item.window_id or 'full'}", self._read(item))
                for dep in phase.depends_on
                for item in self._items(dep, "aggregate_results")
            ]
            top_k = phase.params.top_k or DEFAULT_TOP_K
            analysis.run(outcome, out, aggregates, objective_of(phase), top_k)
            self.observer.window_done(phase.name, "full", False)
            outcome.summary.update(streamed or {})
            outcome.files["phase_summary"] = out.write_json(None, "phase_summary", outcome.summary)
        finally:
            out.close()
        return outcome

    def _stream(self, phase: ResolvedPhase) -> PhaseOutcome:
        """A ``topology: stream`` phase: run its DAG, store each sink's result."""
        dag = streamphase.build_dag(phase, concurrent.persisted_input(self, phase))
        out = self._results(phase)
        try:
            return streamphase.run(phase, dag, out, self.observer)
        finally:
            out.close()
