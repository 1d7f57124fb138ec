"""The sequencer: runs a resolved configuration's phases in dependency order; per phase
its sequence's execution windows; per window the containers of its topology.

Sequences (see :mod:`phasekit.workflow.sequences`):

* ``single_pass``: every parameter set over all bars.
* ``train_test``: every set on the train part (window ``train``), then the ``top_k`` best
  of train on the test part (window ``test``).
* ``walk_forward``: per window, every set on its train part, then the best on its test
  part; the test equity curves are stitched into one out-of-sample curve.
* ``monte_carlo``: the best input set (or the strategy's own parameters) is run once;
  each simulation bootstraps its bar returns (``method: returns``) or its trades
  (``method: trades``), seeded per simulation; a window per batch.

A phase that depends on others runs the ``selected_parameters`` of the first of them
that selected any (found through the catalog), whatever ``parameter_space`` it
inherits; a phase without dependencies searches its ``parameter_space``, or runs the
strategy's own parameters when it has none.
The ``analysis`` topology runs no backtest: it ranks its inputs' container results.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Optional, Protocol

import numpy as np
import pyarrow as pa

from phasekit.backtest.bars import Bars
from phasekit.backtest.metrics import compute_metrics
from phasekit.backtest.portfolio import PortfolioSettings
from phasekit.errors import ConfigError, WorkflowError
from phasekit.tracing import TracerSettings
from phasekit.workflow.executor import DataSpec, Executor, Outcome, bars_for
from phasekit.workflow.params import ParameterSpace
from phasekit.workflow.results import PhaseResults, jsonable, read_json
from phasekit.workflow.sequences import Span, Window, windows_for
from phasekit.workflow.topology import (
    Objective,
    PortfolioJob,
    rank,
    simulate_job,
    strategy_params,
)

log = logging.getLogger(__name__)

DEFAULT_TOP_K = 10
HYBRID_CONTAINER_MB = 10


class Observer(Protocol):
    def phase_started(self, phase: str, windows: int, containers: int) -> None: ...
    def containers_done(self, phase: str, count: int) -> None: ...
    def window_done(self, phase: str, window_id: str, resumed: bool) -> None: ...
    def phase_done(self, phase: str, outcome: PhaseOutcome) -> None: ...


class _Quiet:
    def phase_started(self, phase: str, windows: int, containers: int) -> None:
        log.info("phase %s: %d window(s), %d container(s)", phase, windows, containers)

    def containers_done(self, phase: str, count: int) -> None:
        pass

    def window_done(self, phase: str, window_id: str, resumed: bool) -> None:
        log.info("phase %s: window %s %s", phase, window_id, "resumed" if resumed else "done")

    def phase_done(self, phase: str, outcome: PhaseOutcome) -> None:
        log.info("phase %s done: %d containers", phase, outcome.containers)


@dataclass
class PhaseOutcome:
    name: str
    sequence: str
    windows: list[str] = field(default_factory=list)
    containers: int = 0
    best: Optional[dict[str, Any]] = None
    best_out_of_sample: Optional[dict[str, Any]] = None
    selected: list[dict[str, Any]] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


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


@dataclass(frozen=True)
class PhaseInputs:
    """What a phase runs: its bars, parameter sets and per-container settings."""

    spec: DataSpec
    bars: Bars
    sets: list[dict[str, Any]]
    strategy_type: str
    strategy_base: dict[str, Any]
    portfolio: PortfolioSettings
    objective: Objective
    top_k: int


class Sequencer:
    """Runs the phases of one run; see the module docstring."""

    def __init__(
        self,
        resolved: Any,
        run_id: str,
        run_dir: Path,
        catalog: Any,
        executor: Executor,
        observer: Optional[Observer] = None,
        resume: bool = False,
    ) -> None:
        self.resolved = resolved
        self.run_id = run_id
        self.run_dir = run_dir
        self.catalog = catalog
        self.executor = executor
        self.observer: Observer = observer or _Quiet()
        self.resume = resume
        self.outcomes: dict[str, PhaseOutcome] = {}

    # ------------------------------------------------------------------ inputs

    def _selected_from(self, deps: Sequence[str]) -> list[dict[str, Any]]:
        for dep in deps:
            items = self.catalog.list_items(self.run_id, stage=dep, entity="selected_parameters")
            if items:
                item = self.catalog.verify_item(items[-1])
                from phasekit.catalog import uri_to_path

                return list(read_json(Path(uri_to_path(item.data_reference)))["sets"])
        return []

    def inputs(self, name: str) -> PhaseInputs:
        phase = self.resolved.phase(name)
        params = phase.params
        data = params.data.model_dump(exclude_none=True) if params.data else {}
        spec = DataSpec.from_config(data)
        bars = bars_for(spec)
        strategy = params.strategy
        strategy_type = (strategy.type if strategy and strategy.type else None) or "sma_crossover"
        base = dict(strategy.model_extra or {}) if strategy else {}
        selected = self._selected_from(phase.depends_on) if phase.depends_on else []
        if selected:
            sets = selected
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
        obj = params.objective_function
        objective = Objective(obj.name, obj.direction) if obj else Objective()
        return PhaseInputs(
            spec,
            bars,
            sets,
            strategy_type,
            base,
            portfolio,
            objective,
            params.top_k or DEFAULT_TOP_K,
        )

    def _tracer(
        self, name: str, container_id: str, bars: Bars, inputs: PhaseInputs
    ) -> TracerSettings:
        settings = self.resolved.phase(name).container(container_id).settings
        policy = settings.retention_policy
        return TracerSettings(
            event_tracing=tuple(settings.event_tracing),
            retention_policy=policy,
            sliding_window_size=settings.sliding_window_size,
            max_events=settings.sliding_window_size if policy == "sliding_window" else 10_000,
            initial_capital=inputs.portfolio.initial_capital,
            periods_per_year=bars.periods_per_year,
        )

    def _jobs(
        self,
        name: str,
        inputs: PhaseInputs,
        window: Window,
        span: Span,
        indices: Sequence[int],
        prefix: str = "portfolio",
    ) -> list[PortfolioJob]:
        jobs = []
        for i in indices:
            cid = f"{prefix}_{i:05d}"
            params = inputs.sets[i]
            jobs.append(
                PortfolioJob(
                    container_id=cid,
                    window_id=window.window_id,
                    span=span,
                    strategy_type=inputs.strategy_type,
                    strategy_params=strategy_params(inputs.strategy_base, params),
                    parameters=params,
                    portfolio=inputs.portfolio,
                    tracer=self._tracer(name, cid, inputs.bars, inputs),
                    symbol=inputs.bars.symbol,
                )
            )
        return jobs

    # ------------------------------------------------------------------ windows

    def _completed(self, name: str, window_id: Optional[str]) -> Optional[dict[str, Any]]:
        """The aggregate of a window finished by an earlier attempt of this run."""
        if not self.resume:
            return None
        items = self.catalog.list_items(self.run_id, stage=name, entity="window_complete")
        for item in items:
            if item.window_id == window_id:
                agg = self.catalog.list_items(self.run_id, stage=name, entity="aggregate_results")
                for a in agg:
                    if a.window_id == window_id:
                        from phasekit.catalog import uri_to_path

                        self.catalog.verify_item(a)
                        return dict(read_json(Path(uri_to_path(a.data_reference))))
        return None

    def _run_containers(
        self,
        name: str,
        out: PhaseResults,
        inputs: PhaseInputs,
        jobs: list[PortfolioJob],
        folder: Optional[str],
        keep_equity: bool = False,
    ) -> list[dict[str, Any]]:
        """Run and store the containers; their summaries hold the equity curve (under
        ``_equity``) only with ``keep_equity``, so a window holds no curves once stored."""
        summaries: list[dict[str, Any]] = []
        for outcome in self.executor.map(
            inputs.spec, jobs, lambda n: self.observer.containers_done(name, n)
        ):
            summaries.append(self._destroyed(out, outcome, folder, keep_equity))
        return summaries

    def _destroyed(
        self, out: PhaseResults, outcome: Outcome, folder: Optional[str], keep_equity: bool
    ) -> dict[str, Any]:
        job = outcome.job
        mode = self._container_mode(out, job.container_id)
        uris = out.put_container(folder, job.container_id, outcome.results, outcome.equity, mode)
        out.add_trades(folder, outcome.trades)
        summary = {
            "container_id": job.container_id,
            "parameters": dict(job.parameters),
            "metrics": outcome.results["metrics"],
            "uris": uris,
        }
        if keep_equity and outcome.equity is not None:
            summary["_equity"] = outcome.equity
        return summary

    def _close_window(
        self,
        name: str,
        out: PhaseResults,
        folder: Optional[str],
        window: Window,
        ranked: list[dict[str, Any]],
        objective: Objective,
        extra: Optional[dict[str, Any]] = None,
    ) -> dict[str, Any]:
        out.finish_window(folder)
        agg = aggregate(window, ranked, objective)
        if extra:
            agg.update(extra)
        out.write_json(folder, "aggregate_results", agg)
        out.write_json(folder, "window_complete", {"window_id": window.window_id})
        self.observer.window_done(name, window.window_id, False)
        return agg

    def _search_window(
        self,
        name: str,
        out: PhaseResults,
        inputs: PhaseInputs,
        window: Window,
        span: Span,
        indices: Sequence[int],
        folder: Optional[str],
        prefix: str = "portfolio",
    ) -> list[dict[str, Any]]:
        """Run the sets ``indices`` over ``span``; returns the ranked summaries."""
        done = self._completed(name, folder)
        if done is not None:
            self.observer.containers_done(name, len(indices))
            self.observer.window_done(name, window.window_id, True)
            return list(done["ranking"])
        jobs = self._jobs(name, inputs, window, span, indices, prefix)
        summaries = self._run_containers(name, out, inputs, jobs, folder)
        ranked = rank(summaries, inputs.objective)
        self._close_window(name, out, folder, window, ranked, inputs.objective)
        return ranked

    # ------------------------------------------------------------------ phases

    def run(self) -> dict[str, PhaseOutcome]:
        for name in phase_order(self.resolved.phases):
            self.outcomes[name] = self.run_phase(name)
        return self.outcomes

    def run_phase(self, name: str) -> PhaseOutcome:
        phase = self.resolved.phase(name)
        started = time.perf_counter()
        if phase.topology == "analysis":
            return self._analysis(name)
        if phase.topology == "stream":
            return self._stream(name)
        inputs = self.inputs(name)
        flow = phase.data_flow
        out = PhaseResults(
            self.run_dir,
            self.run_id,
            name,
            self._mode(name, inputs),
            flow.memory_limit_bytes,
            self.catalog,
            buffer_size=flow.streaming.buffer_size,
            flush_interval=flow.streaming.flush_interval,
        )
        outcome = PhaseOutcome(name, phase.sequence)
        try:
            runner = {
                "single_pass": self._single_pass,
                "train_test": self._train_test,
                "walk_forward": self._walk_forward,
                "monte_carlo": self._monte_carlo,
            }[phase.sequence]
            runner(name, out, inputs, outcome)
            outcome.seconds = time.perf_counter() - started
            outcome.summary.update(
                {
                    "phase": name,
                    "sequence": phase.sequence,
                    "topology": phase.topology,
                    "data_flow": out.mode,
                    "containers": outcome.containers,
                    "windows": outcome.windows,
                    "best": _public(outcome.best),
                    "selected_parameters": outcome.selected,
                    "seconds": round(outcome.seconds, 3),
                    "store_stats": out.stats(),
                }
            )
            outcome.files["phase_summary"] = out.write_json(None, "phase_summary", outcome.summary)
        finally:
            out.close()
        self.observer.phase_done(name, outcome)
        return outcome

    def _mode(self, name: str, inputs: PhaseInputs) -> str:
        """The phase's container data-flow mode; with a parameter space and nothing set by
        anyone, portfolios default to hybrid with small budgets (seed 001)."""
        settings = self.resolved.phase(name).settings
        source = settings.sources.get("data_flow.mode", "")
        if len(inputs.sets) > 1 and source.startswith("package"):
            return "hybrid"
        return str(settings.data_flow.mode)

    def _container_mode(self, out: PhaseResults, container_id: str) -> str:
        """A container's data-flow mode: its ``containers:`` pattern's when one sets the
        mode, else the phase's (``out.mode``)."""
        settings = self.resolved.phase(out.phase).container(container_id).settings
        if settings.sources.get("data_flow.mode", "").startswith("containers."):
            return str(settings.data_flow.mode)
        return out.mode

    def _select(
        self,
        name: str,
        out: PhaseResults,
        ranked: list[dict[str, Any]],
        top_k: int,
        outcome: PhaseOutcome,
    ) -> None:
        chosen = [r["parameters"] for r in ranked[:top_k]]
        outcome.selected = chosen
        outcome.best = _public(ranked[0]) if ranked else None
        outcome.files["selected_parameters"] = out.write_json(
            None, "selected_parameters", {"phase": name, "sets": chosen}
        )

    def _single_pass(
        self, name: str, out: PhaseResults, inputs: PhaseInputs, outcome: PhaseOutcome
    ) -> None:
        window = windows_for("single_pass", len(inputs.bars), {})[0]
        self.observer.phase_started(name, 1, len(inputs.sets))
        ranked = self._search_window(
            name, out, inputs, window, window.span, range(len(inputs.sets)), None
        )
        outcome.windows, outcome.containers = ["full"], len(inputs.sets)
        self._select(name, out, ranked, inputs.top_k, outcome)

    def _train_test(
        self, name: str, out: PhaseResults, inputs: PhaseInputs, outcome: PhaseOutcome
    ) -> None:
        split = self.resolved.phase(name).params.data_split
        train, test = windows_for(
            "train_test",
            len(inputs.bars),
            {"data_split": split if split is not None else 0.8},
            inputs.bars.index_of,
        )
        k = min(inputs.top_k, len(inputs.sets))
        self.observer.phase_started(name, 2, len(inputs.sets) + k)
        ranked = self._search_window(
            name, out, inputs, train, train.span, range(len(inputs.sets)), "train"
        )
        best_idx = [int(r["container_id"].rsplit("_", 1)[1]) for r in ranked[:k]]
        tested = self._search_window(name, out, inputs, test, test.span, best_idx, "test")
        outcome.windows = ["train", "test"]
        outcome.containers = len(inputs.sets) + len(best_idx)
        self._select(name, out, ranked, inputs.top_k, outcome)
        outcome.best_out_of_sample = _public(tested[0]) if tested else None
        outcome.summary["best_out_of_sample"] = outcome.best_out_of_sample
        outcome.summary["test_ranking"] = [_public(r) for r in tested]

    def _walk_forward(
        self, name: str, out: PhaseResults, inputs: PhaseInputs, outcome: PhaseOutcome
    ) -> None:
        wf = self.resolved.phase(name).params.walk_forward
        settings = wf.model_dump(exclude_none=True) if wf else {}
        n = len(inputs.bars)
        settings.setdefault("train", max(2, n // 2))
        settings.setdefault("test", max(1, n // 10))
        windows = windows_for("walk_forward", n, {"walk_forward": settings})
        self.observer.phase_started(name, len(windows), len(windows) * (len(inputs.sets) + 1))
        curves: list[pa.Table] = []
        per_window = []
        for window in windows:
            res = self._wf_window(name, out, inputs, window)
            per_window.append(
                {"window_id": window.window_id, "best": _public(res["best"]), "test": res["test"]}
            )
            if res.get("equity") is not None:
                curves.append(res["equity"])
        outcome.windows = [w.window_id for w in windows]
        outcome.containers = len(windows) * (len(inputs.sets) + 1)
        stitched = stitch(curves, inputs.portfolio.initial_capital)
        if stitched.num_rows:
            outcome.files["oos_equity"] = out._write_table(
                out.phase_dir / "oos_equity.arrow", stitched, "oos_equity", None
            )
            eq = stitched.column("equity").to_numpy()
            outcome.summary["out_of_sample"] = compute_metrics(
                eq, inputs.portfolio.initial_capital, inputs.bars.periods_per_year, np.empty(0)
            )
        outcome.summary["windows_detail"] = per_window
        bests = [w["best"] for w in per_window if w["best"]]
        outcome.best = per_window[-1]["best"] if per_window else None
        outcome.selected = [b["parameters"] for b in bests[-1:]]
        outcome.files["selected_parameters"] = out.write_json(
            None, "selected_parameters", {"phase": name, "sets": outcome.selected}
        )

    def _wf_window(
        self, name: str, out: PhaseResults, inputs: PhaseInputs, window: Window
    ) -> dict[str, Any]:
        assert window.train is not None and window.test is not None
        folder = window.window_id
        done = self._completed(name, folder)
        if done is not None:
            self.observer.containers_done(name, len(inputs.sets) + 1)
            self.observer.window_done(name, window.window_id, True)
            eq = None
            if done.get("oos_equity"):
                import pyarrow.feather as feather

                from phasekit.catalog import uri_to_path

                eq = feather.read_table(uri_to_path(done["oos_equity"]))
            return {"best": done["best"], "test": done.get("test"), "equity": eq}
        train_jobs = self._jobs(
            name, inputs, window, window.train, range(len(inputs.sets)), "train"
        )
        ranked = rank(self._run_containers(name, out, inputs, train_jobs, folder), inputs.objective)
        best = ranked[0]
        idx = int(best["container_id"].rsplit("_", 1)[1])
        test_job = self._jobs(name, inputs, window, window.test, [idx], "test")[0]
        tracer = test_job.tracer
        if not tracer.keeps_equity:
            tracer = replace(tracer, event_tracing=(*tracer.event_tracing, "PORTFOLIO_UPDATE"))
        test_job = replace(test_job, tracer=tracer)
        tested = self._run_containers(name, out, inputs, [test_job], folder, keep_equity=True)[0]
        equity = tested.pop("_equity", None)
        extra: dict[str, Any] = {"best": _public(best), "test": _public(tested)}
        if equity is not None:
            extra["oos_equity"] = out._write_table(
                out._dir(folder) / "oos_equity.arrow", equity, "oos_equity", folder
            )
        self._close_window(name, out, folder, window, ranked, inputs.objective, extra)
        return {"best": best, "test": _public(tested), "equity": equity}

    def _monte_carlo(
        self, name: str, out: PhaseResults, inputs: PhaseInputs, outcome: PhaseOutcome
    ) -> None:
        mc = self.resolved.phase(name).params.monte_carlo
        settings = mc.model_dump(exclude_none=True) if mc else {}
        n_sims = int(settings.get("n") or 100)
        windows = windows_for(
            "monte_carlo",
            len(inputs.bars),
            {"monte_carlo": {"n": n_sims, "batch": settings.get("batch", 25)}},
        )
        self.observer.phase_started(name, len(windows), n_sims)
        base_window = Window("base", "full", Span(0, len(inputs.bars)))
        job = self._jobs(name, inputs, base_window, base_window.span, [0], "base")[0]
        bars, result = simulate_job(inputs.bars, job)
        eq = np.concatenate(([inputs.portfolio.initial_capital], result.equity))
        rets = eq[1:] / eq[:-1] - 1.0
        pnl = result.trades["pnl"]
        method, seed = settings.get("method", "returns"), int(settings.get("seed", 0))
        all_metrics = []
        for window in windows:
            done = self._completed(name, window.window_id)
            if done is not None:
                all_metrics.extend(r["metrics"] for r in done["ranking"])
                self.observer.containers_done(name, len(window.simulations))
                self.observer.window_done(name, window.window_id, True)
                continue
            summaries = []
            for sim in window.simulations:
                metrics = bootstrap(
                    rets,
                    pnl,
                    method,
                    seed,
                    sim,
                    inputs.portfolio.initial_capital,
                    bars.periods_per_year,
                )
                cid = f"simulation_{sim:05d}"
                results = {
                    "container_id": cid,
                    "role": "portfolio",
                    "simulation": sim,
                    "metrics": metrics,
                }
                uris = out.put_container(window.window_id, cid, results, None)
                summaries.append(
                    {
                        "container_id": cid,
                        "parameters": dict(inputs.sets[0]),
                        "metrics": metrics,
                        "uris": uris,
                    }
                )
                all_metrics.append(metrics)
            self.observer.containers_done(name, len(summaries))
            self._close_window(
                name,
                out,
                window.window_id,
                window,
                rank(summaries, inputs.objective),
                inputs.objective,
            )
        outcome.windows = [w.window_id for w in windows]
        outcome.containers = n_sims
        outcome.summary["distribution"] = distribution(all_metrics)
        outcome.summary["method"] = method
        outcome.selected = [dict(inputs.sets[0])]

    def _stream(self, name: str) -> PhaseOutcome:
        """A ``topology: stream`` phase: run its DAG (``dag:``) to completion."""
        from phasekit.stream import Dag

        phase = self.resolved.phase(name)
        if not phase.params.dag:
            raise ConfigError(f"phases.{name}: topology 'stream' needs a `dag:` description")
        dag = Dag.from_spec(phase.params.dag)
        outcome = PhaseOutcome(name, phase.sequence)
        out = PhaseResults(self.run_dir, self.run_id, name, "memory", 0, self.catalog)
        started = time.perf_counter()
        try:
            self.observer.phase_started(name, 1, len(dag.nodes))
            result = dag.run()
            self.observer.containers_done(name, len(dag.nodes))
            outcome.windows, outcome.containers = ["full"], len(dag.nodes)
            outcome.seconds = time.perf_counter() - started
            outcome.summary = {"phase": name, "topology": "stream", **_stream_summary(result)}
            outcome.files["phase_summary"] = out.write_json(None, "phase_summary", outcome.summary)
        finally:
            out.close()
        self.observer.phase_done(name, outcome)
        return outcome

    def _analysis(self, name: str) -> PhaseOutcome:
        phase = self.resolved.phase(name)
        outcome = PhaseOutcome(name, phase.sequence)
        out = PhaseResults(self.run_dir, self.run_id, name, "memory", 0, self.catalog)
        try:
            self.observer.phase_started(name, 1, 1)
            ranked: list[dict[str, Any]] = []
            for dep in phase.depends_on:
                for item in self.catalog.list_items(
                    self.run_id, stage=dep, entity="aggregate_results"
                ):
                    from phasekit.catalog import uri_to_path

                    self.catalog.verify_item(item)
                    agg = read_json(Path(uri_to_path(item.data_reference)))
                    ranked.extend(
                        {**r, "source": f"{dep}/{item.window_id or 'full'}"} for r in agg["ranking"]
                    )
            obj = phase.params.objective_function
            objective = Objective(obj.name, obj.direction) if obj else Objective()
            ranked = rank(ranked, objective)
            top_k = phase.params.top_k or DEFAULT_TOP_K
            window = Window("full", "full", Span(0, 0))
            self._close_window(name, out, None, window, ranked, objective)
            self._select(name, out, ranked, top_k, outcome)
            outcome.windows, outcome.containers = ["full"], 1
            outcome.summary = {
                "phase": name,
                "topology": "analysis",
                "ranked": len(ranked),
                "best": _public(outcome.best),
                "selected_parameters": outcome.selected,
            }
            outcome.files["phase_summary"] = out.write_json(None, "phase_summary", outcome.summary)
        finally:
            out.close()
        self.observer.phase_done(name, outcome)
        return outcome


def _stream_summary(result: Any) -> dict[str, Any]:
    return {
        "dag": result.dag,
        "elapsed": result.elapsed,
        "stopped": result.stopped,
        "nodes": result.nodes,
        "queues": result.queues,
        "results": {k: repr(v)[:200] for k, v in result.results.items()},
    }


def _public(summary: Optional[Mapping[str, Any]]) -> Optional[dict[str, Any]]:
    if summary is None:
        return None
    return {k: v for k, v in summary.items() if not k.startswith("_")}


def aggregate(window: Window, ranked: list[dict[str, Any]], objective: Objective) -> dict[str, Any]:
    """A window's aggregate: the ranking and averages of the metrics (seed 002)."""
    metrics = [r["metrics"] for r in ranked]
    averages = {}
    for key in ("sharpe_ratio", "total_return", "max_drawdown", "win_rate"):
        vals = [m[key] for m in metrics if m.get(key) is not None]
        averages[f"avg_{key}"] = float(np.mean(vals)) if vals else None
    best = ranked[0]["metrics"] if ranked else {}
    return {
        "window_id": window.window_id,
        "containers": len(ranked),
        "objective": {"name": objective.name, "direction": objective.direction},
        "aggregate_metrics": {
            **averages,
            "best_sharpe_ratio": best.get("sharpe_ratio"),
            "best_total_return": best.get("total_return"),
        },
        "best": _public(ranked[0]) if ranked else None,
        "ranking": [_public(r) for r in ranked],
    }


def stitch(curves: Sequence[pa.Table], initial: float) -> pa.Table:
    """Chain test-window equity curves into one: each continues from the last value."""
    ts_parts, eq_parts, level = [], [], float(initial)
    for curve in curves:
        if curve.num_rows == 0:
            continue
        eq = curve.column("equity").to_numpy()
        scaled = eq / initial * level
        ts_parts.append(curve.column("ts").to_numpy())
        eq_parts.append(scaled)
        level = float(scaled[-1])
    if not ts_parts:
        return pa.table(
            {"ts": pa.array([], pa.timestamp("ns", tz="UTC")), "equity": pa.array([], pa.float64())}
        )
    return pa.table(
        {
            "ts": pa.array(np.concatenate(ts_parts), pa.timestamp("ns", tz="UTC")),
            "equity": np.concatenate(eq_parts),
        }
    )


def bootstrap(
    rets: np.ndarray, pnl: np.ndarray, method: str, seed: int, sim: int, initial: float, ppy: float
) -> dict[str, Any]:
    """Metrics of one bootstrap simulation (seeded by ``(seed, sim)``)."""
    rng = np.random.default_rng([seed, sim])
    if method == "trades":
        if pnl.shape[0] == 0:
            return compute_metrics(np.array([initial]), initial, ppy, pnl)
        sample = rng.choice(pnl, size=pnl.shape[0], replace=True)
        equity = initial + np.cumsum(sample)
        return compute_metrics(equity, initial, ppy * pnl.shape[0] / max(1, rets.shape[0]), sample)
    sample = rng.choice(rets, size=rets.shape[0], replace=True)
    equity = initial * np.cumprod(1.0 + sample)
    return compute_metrics(equity, initial, ppy, pnl)


def distribution(metrics: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Percentiles (5, 25, 50, 75, 95), mean and std of each metric over simulations."""
    out: dict[str, Any] = {}
    for key in ("total_return", "sharpe_ratio", "max_drawdown", "final_equity"):
        vals = np.array([m[key] for m in metrics if m.get(key) is not None], dtype=float)
        if vals.size == 0:
            continue
        pct = np.percentile(vals, [5, 25, 50, 75, 95])
        out[key] = {
            "mean": float(vals.mean()),
            "std": float(vals.std(ddof=1)) if vals.size > 1 else 0.0,
            **{f"p{p}": float(v) for p, v in zip((5, 25, 50, 75, 95), pct)},
        }
    return jsonable(out)
