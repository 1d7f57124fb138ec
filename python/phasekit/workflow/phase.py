"""One phase being run: its inputs, its results writer, and the steps every sequence
shares (make the jobs of a window, run and destroy its containers, rank, close the
window, select the sets the next phase runs)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Optional, Protocol, overload

import numpy as np
import pyarrow as pa

from phasekit import failpoints
from phasekit.backtest.bars import Bars
from phasekit.backtest.portfolio import PortfolioSettings
from phasekit.errors import WorkflowError
from phasekit.registry import DEFAULT_ENGINE
from phasekit.tracing import TracerSettings
from phasekit.workflow.blocks import (
    BOOTSTRAP_SEQUENCES,
    CURVE_ROW_BYTES,
    NO_BATCH,
    BlockJob,
    BlockOutcome,
    Ran,
    block_refusal,
    block_sizes,
    executor_slots,
    in_flight_bytes,
    phase_engine,
    read_stream,
    stream_bytes,
)
from phasekit.workflow.blocktables import BlockRows, ItemRecord, keep_curves, metric_names
from phasekit.workflow.blockwrite import WrittenBlock
from phasekit.workflow.executor import DataSpec, Outcome
from phasekit.workflow.executors import BatchExecutor
from phasekit.workflow.plans import pattern_groups
from phasekit.workflow.ranking import SummaryColumns
from phasekit.workflow.results import PhaseResults, jsonable
from phasekit.workflow.sequences import Span, Window
from phasekit.workflow.topology import (
    Objective,
    PortfolioJob,
    best_shared_by,
    rank,
    strategy_columns,
    strategy_params,
)
from phasekit.workflow.windowagg import aggregate, public

if TYPE_CHECKING:
    from phasekit.config.resolved import ResolvedPhase

log = logging.getLogger(__name__)

Summary = dict[str, Any]
"""A destroyed container's summary: ``container_id``, ``parameters``, ``metrics``,
``uris`` (and ``objective`` once ranked)."""


class Observer(Protocol):
    def phase_started(self, phase: str, windows: int, containers: int) -> None: ...
    def containers_done(self, phase: str, count: int) -> None: ...
    def window_done(self, phase: str, window_id: str, resumed: bool) -> None: ...
    def phase_done(self, phase: str, outcome: PhaseOutcome) -> None: ...


class QuietObserver:
    """Logs phase and window progress (the default without a progress display)."""

    def phase_started(self, phase: str, windows: int, containers: int) -> None:
        log.info("phase %s: %d window(s), %d container(s)", phase, windows, containers)

    def containers_done(self, phase: str, count: int) -> None:
        pass

    def window_done(self, phase: str, window_id: str, resumed: bool) -> None:
        log.info("phase %s: window %s %s", phase, window_id, "resumed" if resumed else "done")

    def phase_done(self, phase: str, outcome: PhaseOutcome) -> None:
        log.info("phase %s done: %d containers", phase, outcome.containers)


@dataclass(frozen=True)
class ReportRow:
    """One line of a phase's summary table: which sample (``in``, ``out``, ``p50``...),
    what it means, the parameter set and its metrics."""

    sample: str
    meaning: str
    parameters: Mapping[str, Any]
    metrics: Mapping[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {
            "sample": self.sample,
            "meaning": self.meaning,
            "parameters": dict(self.parameters),
            "metrics": dict(self.metrics),
        }


@dataclass
class PhaseOutcome:
    """What a phase produced: its windows, container count, best and selected sets,
    the files it wrote, its summary (``phase_summary.json``) and the rows it reports
    (``rows``: in-sample best, out-of-sample of the in-sample selection, percentiles)."""

    name: str
    sequence: str
    windows: list[str] = field(default_factory=list)
    containers: int = 0
    best: Optional[Summary] = None
    best_out_of_sample: Optional[Summary] = None
    selected: list[dict[str, Any]] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    rows: list[ReportRow] = field(default_factory=list)

    def report(self, sample: str, meaning: str, summary: Optional[Mapping[str, Any]]) -> None:
        """Add a row from a container summary (nothing when there is none)."""
        if summary is not None:
            self.rows.append(
                ReportRow(
                    sample,
                    meaning,
                    summary.get("parameters", {}),
                    summary.get("metrics", {}),
                )
            )


@dataclass(frozen=True)
class PhaseInputs:
    """What a phase runs: its bars, parameter sets and per-container settings."""

    spec: DataSpec
    bars: Bars
    sets: list[dict[str, Any]]
    """The parameter sets; when ``selected``, those another phase chose, best first."""
    strategy_type: str
    strategy_base: dict[str, Any]
    portfolio: PortfolioSettings
    objective: Objective
    top_k: int
    selected: bool = False


CompletedLookup = Callable[[Optional[str]], Optional[dict[str, Any]]]
"""The aggregate of a window an earlier attempt of the run completed (None if not)."""


def set_ids(prefix: str, indices: Sequence[int]) -> list[str]:
    """The container ids of parameter sets ``indices`` (``<prefix>_00042``)."""
    numbers = np.strings.zfill(np.asarray(indices, dtype=np.int64).astype(str), 5)
    return list(np.strings.add(f"{prefix}_", numbers).tolist())


class JobList(Sequence[PortfolioJob]):
    """Jobs built on access from their parameter-set indices (what the executor slices);
    the window, span and container id prefix they share (what blocks are cut from
    without a job per container)."""

    def __init__(
        self,
        make: Callable[[int], PortfolioJob],
        indices: Sequence[int],
        window: Optional[Window] = None,
        span: Optional[Span] = None,
        prefix: str = "portfolio",
    ) -> None:
        self._make = make
        self._indices = indices
        self.window, self.span, self.prefix = window, span, prefix

    @property
    def indices(self) -> Sequence[int]:
        return self._indices

    def __len__(self) -> int:
        return len(self._indices)

    @overload
    def __getitem__(self, i: int) -> PortfolioJob: ...

    @overload
    def __getitem__(self, i: slice) -> list[PortfolioJob]: ...

    def __getitem__(self, i: int | slice) -> PortfolioJob | list[PortfolioJob]:
        if isinstance(i, slice):
            return [self._make(j) for j in self._indices[i]]
        return self._make(self._indices[i])


class PhaseContext:
    """A phase of a run while it runs; the sequence runners drive it."""

    def __init__(
        self,
        phase: ResolvedPhase,
        inputs: PhaseInputs,
        out: PhaseResults,
        executor: BatchExecutor,
        observer: Observer,
        completed: CompletedLookup,
        engine: str = DEFAULT_ENGINE,
    ) -> None:
        self.name = phase.name
        self.engine = engine
        self.phase = phase
        self.inputs = inputs
        self.out = out
        self.executor = executor
        self.observer = observer
        self.completed = completed
        self.outcome = PhaseOutcome(phase.name, phase.sequence)
        self.prefixes: set[str] = set()
        self._tracers: dict[TracerSettings, TracerSettings] = {}
        self._next_block: dict[Optional[str], int] = {}
        """Per window folder: the index of its next block (a walk-forward window runs
        its train sets, then its test set: their blocks are numbered on)."""

    # ------------------------------------------------------------------ jobs

    def tracer(self, container_id: str) -> TracerSettings:
        settings = self.phase.container(container_id).settings
        policy = settings.retention_policy
        tracer = TracerSettings(
            event_tracing=tuple(settings.event_tracing),
            retention_policy=policy,
            sliding_window_size=settings.sliding_window_size,
            max_events=settings.sliding_window_size if policy == "sliding_window" else 10_000,
            initial_capital=self.inputs.portfolio.initial_capital,
            periods_per_year=self.inputs.bars.periods_per_year,
        )
        # containers of one pattern share one (frozen) settings object
        return self._tracers.setdefault(tracer, tracer)

    def tracers(self, container_ids: Sequence[str]) -> list[TracerSettings]:
        """:meth:`tracer` of each container, resolved once per group of containers the
        same container patterns match (:func:`~phasekit.workflow.plans.pattern_groups`)."""
        first, group = pattern_groups(self.phase, container_ids)
        tracers = [self.tracer(container_ids[i]) for i in first]
        return list(map(tracers.__getitem__, group.tolist()))

    def jobs(
        self, window: Window, span: Span, indices: Sequence[int], prefix: str = "portfolio"
    ) -> JobList:
        """One portfolio job per parameter set ``indices`` over ``span``, each built when
        it is taken (a window of 10,000 containers never holds 10,000 jobs at once)."""
        inputs = self.inputs
        self.prefixes.add(prefix)

        def job(i: int) -> PortfolioJob:
            cid = f"{prefix}_{i:05d}"
            params = inputs.sets[i]
            return PortfolioJob(
                container_id=cid,
                window_id=window.window_id,
                span=span,
                strategy_type=inputs.strategy_type,
                strategy_params=strategy_params(inputs.strategy_base, params),
                parameters=params,
                portfolio=inputs.portfolio,
                tracer=self.tracer(cid),
                symbol=inputs.bars.symbol,
            )

        return JobList(job, indices, window, span, prefix)

    # ------------------------------------------------------------------ containers

    def run_containers(
        self, jobs: Sequence[PortfolioJob], folder: Optional[str], keep_equity: bool = False
    ) -> Sequence[Summary]:
        """Run and store the containers; their summaries hold the equity curve (under
        ``_equity``) and the trades' pnl (``_pnl``) only with ``keep_equity``, so a window
        holds no curves once stored."""
        if self.uses_blocks():
            return self.run_blocks(jobs, folder, keep_equity)
        summaries: list[Summary] = []
        name = self.name
        for outcome in self.executor.map(
            self.inputs.spec, jobs, lambda n: self.observer.containers_done(name, n)
        ):
            summaries.append(self._destroyed(outcome, folder, keep_equity))
        return summaries

    def _destroyed(self, outcome: Outcome, folder: Optional[str], keep_equity: bool) -> Summary:
        job = outcome.job
        # a window holds one small summary per container until it is ranked: the
        # parameter set is shared with the phase's list, the metrics (plain JSON) with
        # the stored items' metadata
        metrics = jsonable(outcome.results["metrics"])
        self.out.put_container(
            folder,
            job.container_id,
            outcome.results,
            outcome.equity,
            metrics,
            trades=outcome.trades,
        )
        self.out.add_trades(folder, outcome.trades)
        summary: Summary = {
            "container_id": job.container_id,
            "parameters": self.inputs.sets[id_index(job.container_id)],
            "metrics": metrics,
        }
        if keep_equity:
            if outcome.equity is not None:
                summary["_equity"] = outcome.equity
            summary["_pnl"] = outcome.trades.column("pnl").to_numpy()
        return summary

    # ------------------------------------------------------------------ blocks

    def block_refusal(self) -> Optional[str]:
        """Why this phase's windows cannot run as blocks (None when they can)."""
        return block_refusal(self.inputs.strategy_type)

    def uses_blocks(self) -> bool:
        """The phase runs its windows as blocks (:func:`~phasekit.workflow.blocks.phase_engine`:
        ``engine: block``, refused where the phase is not eligible, or ``auto`` and the
        phase is eligible)."""
        kind = self.inputs.strategy_type
        return phase_engine(self.engine, self.phase.sequence, kind, self.name) == "block"

    def blocks(self, jobs: Sequence[PortfolioJob], start: int = 0) -> Iterator[BlockJob]:
        """The blocks of a window's jobs (in their order, cut in blocks of
        :func:`~phasekit.workflow.blocks.block_sizes`, numbered from ``start``), built as
        they are taken."""
        size = self._block_size(jobs, self._set_bytes(jobs))
        if isinstance(jobs, JobList) and jobs.window is not None and jobs.span is not None:
            yield from self._set_blocks(jobs, size, start)
            return
        for k, lo in enumerate(range(0, len(jobs), size)):
            part = list(jobs[lo : lo + size])
            first = part[0]
            if any(j.span != first.span or j.window_id != first.window_id for j in part):
                raise WorkflowError("a block's containers must share one window and span")
            yield BlockJob(
                window_id=first.window_id,
                span=first.span,
                strategy_type=first.strategy_type,
                param_sets=tuple(j.strategy_params for j in part),
                portfolio=first.portfolio,
                container_ids=tuple(j.container_id for j in part),
                tracers=tuple(j.tracer for j in part),
                symbol=first.symbol,
                index=start + k,
                parameters=tuple(j.parameters for j in part),
            )

    def _block_size(self, jobs: Sequence[PortfolioJob], set_bytes: int) -> int:
        """The sets a block of ``jobs`` (of ``set_bytes`` each, :meth:`_set_bytes`) holds
        (:func:`~phasekit.workflow.blocks.block_sizes`)."""
        slots = executor_slots(self.executor)
        return block_sizes(len(jobs), slots, set_bytes, self.out.budget_bytes)

    def _reserve_in_flight(self, folder: Optional[str], jobs: Sequence[PortfolioJob]) -> None:
        """Hold back from the window's store the bytes its blocks hold in flight
        (:func:`~phasekit.workflow.blocks.in_flight_bytes`): the phase's memory budget
        bounds both."""
        set_bytes = self._set_bytes(jobs)
        if set_bytes and self.out.budget_bytes is not None:
            slots = executor_slots(self.executor)
            held = in_flight_bytes(self._block_size(jobs, set_bytes), slots, set_bytes)
            self.out.reserve(folder, held)

    def _set_bytes(self, jobs: Sequence[PortfolioJob]) -> int:
        """Result bytes of one of ``jobs``' sets, estimated: its equity curve's rows when
        any of their containers keeps one (0 when none does)."""
        if self.phase.sequence in BOOTSTRAP_SEQUENCES:
            return 0  # simulations keep no curves
        if isinstance(jobs, JobList):
            ids: Sequence[str] = set_ids(jobs.prefix, jobs.indices)
        else:
            ids = [job.container_id for job in jobs]
        if not any(tracer.keeps_equity for tracer in self.tracers(ids)):
            return 0
        return len(jobs[0].span) * CURVE_ROW_BYTES

    def _set_blocks(self, jobs: JobList, size: int, start: int) -> Iterator[BlockJob]:
        """:meth:`blocks` of parameter sets taken straight from a :class:`JobList`'s
        indices (no job per container; tracers resolved per group of containers)."""
        inputs = self.inputs
        assert jobs.window is not None and jobs.span is not None
        for k, lo in enumerate(range(0, len(jobs), size)):
            indices = jobs.indices[lo : lo + size]
            ids = tuple(set_ids(jobs.prefix, indices))
            parameters = tuple(map(inputs.sets.__getitem__, indices))
            yield BlockJob(
                window_id=jobs.window.window_id,
                span=jobs.span,
                strategy_type=inputs.strategy_type,
                param_sets=strategy_columns(inputs.strategy_base, inputs.sets, indices),
                portfolio=inputs.portfolio,
                container_ids=ids,
                tracers=tuple(self.tracers(ids)),
                symbol=inputs.bars.symbol,
                index=start + k,
                parameters=parameters,
            )

    def run_blocks(
        self, jobs: Sequence[PortfolioJob], folder: Optional[str], keep_equity: bool = False
    ) -> Sequence[Summary]:
        """Run a window's containers as blocks; their rows go to the window's tables
        (and each container's own items when asked); returns their summaries as columns
        (:class:`~phasekit.workflow.ranking.SummaryColumns`), or (with ``_equity`` and
        ``_pnl``, under ``keep_equity``, as :meth:`run_containers`) as dicts."""
        if not jobs:
            return []
        span = jobs[0].span
        bars = self.inputs.bars
        window = {
            "window_id": jobs[0].window_id,
            "start": int(bars.ts[span.start]),
            "end": int(bars.ts[span.stop - 1]),
            "bars": len(span),
        }
        ts = bars.ts[span.start : span.stop]
        parts: list[tuple[Sequence[str], Sequence[Mapping[str, Any]], pa.Table]] = []
        summaries: list[Summary] = []
        blocks = list(self.blocks(jobs, self._next_block.get(folder, 0)))
        self._next_block[folder] = blocks[-1].index + 1
        self._reserve_in_flight(folder, jobs)
        if not keep_equity:  # a worker may write the blocks' parts (their rows stay there)
            blocks = [self.out.blocks.sink_for(folder, block) for block in blocks]
        done = self.out.parts.done(folder, blocks, written=not keep_equity)
        for outcome in self._outcomes(blocks, done):
            reused = outcome.job.index in done
            job = outcome.job
            if isinstance(outcome, WrittenBlock):
                self.out.blocks.put_written(folder, outcome, reused)
                failpoints.reach("blocks.after_block")
                parts.append((job.container_ids, job.parameters, outcome.metrics_table()))
                self.observer.containers_done(self.name, len(job))
                continue
            if not reused:
                self.out.parts.save(folder, outcome)
            results, trades, curves = outcome.tables()
            rows = BlockRows(job, job.parameters, results, trades, curves, window, ts)
            self.out.blocks.put(folder, rows, reused)
            failpoints.reach("blocks.after_block")
            parts.append(
                (
                    job.container_ids,
                    job.parameters,
                    results.select(metric_names(results.schema.names)),
                )
            )
            if keep_equity:  # a summary per container, each with its curve and pnl
                block = SummaryColumns.concat(parts[-1:])[:]
                keep_curves(block, rows)
                summaries.extend(block)
            self.observer.containers_done(self.name, len(job))
        return summaries if keep_equity else SummaryColumns.concat(parts)

    def run_local_block(
        self,
        folder: Optional[str],
        job: BlockJob,
        compute: Callable[[BlockJob], pa.Table],
        window: Mapping[str, Any],
        record: Optional[ItemRecord] = None,
    ) -> SummaryColumns:
        """Run a block this process computes (``compute`` gives its results table: a Monte
        Carlo window's simulations, which make no trades and keep no curves) through the
        path of :meth:`run_blocks`: read back when an earlier attempt completed it, kept
        until its window completes, its rows stored by
        :meth:`~phasekit.workflow.blocktables.BlockTables.put` (``record``: each
        container's own results mapping, when its items are written). Returns the
        containers' summaries as columns."""
        job = replace(job, index=self._next_block.get(folder, 0))  # numbered on in its window
        self._next_block[folder] = job.index + 1
        done = self.out.parts.done(folder, [job], written=False)
        found = done.get(job.index)
        if isinstance(found, BlockOutcome):
            results = read_stream(found.results)
        else:
            results = compute(job)
            outcome = BlockOutcome(job, stream_bytes(results), NO_BATCH, NO_BATCH)
            self.out.parts.save(folder, outcome)
        no_bars = np.zeros(0, dtype="datetime64[ns]")
        rows = BlockRows(job, job.parameters, results, None, None, window, no_bars, record)
        self.out.blocks.put(folder, rows, isinstance(found, BlockOutcome))
        failpoints.reach("blocks.after_block")
        self.observer.containers_done(self.name, len(job))
        metrics = results.select(metric_names(results.schema.names))
        return SummaryColumns.concat([(job.container_ids, job.parameters, metrics)])

    def _outcomes(self, blocks: list[BlockJob], done: Mapping[int, Ran]) -> Iterator[Ran]:
        """The blocks' outcomes in order: those ``done`` read back, the others run."""
        todo = [b for b in blocks if b.index not in done]
        ran = self.executor.map_blocks(self.inputs.spec, todo)
        for block in blocks:
            found = done.get(block.index)
            yield found if found is not None else next(ran)

    # ------------------------------------------------------------------ windows

    def close_window(
        self,
        folder: Optional[str],
        window: Window,
        ranked: Sequence[Summary],
        objective: Objective,
        extra: Optional[Mapping[str, Any]] = None,
    ) -> dict[str, Any]:
        """Finish the window's stores and files and write its aggregate and completion
        marker (the marker is what a resumed run skips the window by)."""
        self.out.finish_window(folder)
        agg = aggregate(window.window_id, ranked, objective)
        if extra:
            agg.update(extra)
        self.out.write_json(folder, "aggregate_results", agg, clean=True)
        self.out.write_json(folder, "window_complete", {"window_id": window.window_id})
        self.out.parts.drop(folder)
        self.observer.window_done(self.name, window.window_id, False)
        return agg

    def search_window(
        self,
        window: Window,
        span: Span,
        indices: Sequence[int],
        folder: Optional[str],
        prefix: str = "portfolio",
        keep_order: bool = False,
    ) -> Sequence[Summary]:
        """Run the sets ``indices`` over ``span``; returns the summaries ranked by the
        objective on this window, or in the order of ``indices`` with ``keep_order`` (an
        out-of-sample window keeps the in-sample ranking). A window completed before a
        resume is read back instead."""
        done = self.completed(folder)
        if done is not None:
            self.observer.containers_done(self.name, len(indices))
            self.observer.window_done(self.name, window.window_id, True)
            return list(done["ranking"])
        jobs = self.jobs(window, span, indices, prefix)
        objective = self.inputs.objective
        ranked = rank(self.run_containers(jobs, folder), objective, keep_order=keep_order)
        extra: dict[str, Any] = {
            "ranked_by": "in-sample order" if keep_order else "this window's objective"
        }
        if not keep_order:
            extra["best_shared_by"] = self._ties(window, ranked, objective)
        self.close_window(folder, window, ranked, objective, extra)
        return ranked

    def _ties(self, window: Window, ranked: Sequence[Summary], objective: Objective) -> int:
        """How many sets share the window's best score; a warning when more than one do
        (the best is then the first of equals by container id, not better than them)."""
        shared = best_shared_by(ranked)
        if shared > 1:
            score = ranked[0].get("objective")
            log.warning(
                "phase %s, window %s: %d of %d parameter sets share the best %s (%s); "
                "the best is the first of them by container id, not better than the others",
                self.name,
                window.window_id,
                shared,
                len(ranked),
                objective.name,
                "none has a value" if score is None else f"{score:.6g}",
            )
        return shared

    def select(self, ranked: Sequence[Summary], top_k: int) -> None:
        """The best ``top_k`` sets become the phase's ``selected_parameters``."""
        chosen = [r["parameters"] for r in ranked[:top_k]]
        self.outcome.selected = chosen
        self.outcome.best = public(ranked[0]) if ranked else None
        self.write_selected()

    def write_selected(self) -> None:
        self.outcome.files["selected_parameters"] = self.out.write_json(
            None, "selected_parameters", {"phase": self.name, "sets": self.outcome.selected}
        )


def id_index(container_id: str) -> int:
    """The parameter set index of a container id (``train_00042`` -> 42)."""
    return int(container_id.rsplit("_", 1)[1])


def set_index(summary: Mapping[str, Any]) -> int:
    """The parameter set index of a summary's container."""
    return id_index(str(summary["container_id"]))
