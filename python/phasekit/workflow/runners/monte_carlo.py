"""``monte_carlo``: the best input set (or the strategy's own parameters) is run once;
each simulation bootstraps its bar returns (``method: returns``) or its trades
(``method: trades``), seeded per simulation; a window per batch.

As blocks (:func:`~phasekit.workflow.blocks.phase_engine`), a window's simulations are
one block: :func:`~phasekit.backtest.metrics.bootstrap_block` computes their metrics at
once and their rows go to the window's ``containers`` table (``simulation_NNNNN``, the
simulation's number, the set's parameters, ``bars``, every metric) through
:meth:`~phasekit.workflow.phase.PhaseContext.run_local_block`; ``engine: container``
stores each simulation as a container of its own. The phase's distribution is computed
from the simulations' metric columns."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from phasekit.backtest.metrics import (
    bootstrap_block,
    bootstrap_metrics,
    column_distribution,
    metric_columns_of,
)
from phasekit.errors import ConfigError
from phasekit.registry import (
    DEFAULT_BATCH,
    DEFAULT_MONTE_CARLO_METHOD,
    DEFAULT_SEED,
    DEFAULT_SIMULATIONS,
)
from phasekit.workflow.blocks import BlockJob
from phasekit.workflow.phase import PhaseContext, Summary, set_index
from phasekit.workflow.ranking import SummaryColumns
from phasekit.workflow.results import jsonable
from phasekit.workflow.sequences import Span, Window, windows_for
from phasekit.workflow.topology import rank, simulate_job, strategy_params

REPORTED = (5, 50, 95)
"""The percentiles a Monte Carlo phase reports in its summary rows."""
PREFIX = "simulation"
"""The prefix of a simulation's container id (``simulation_00042``)."""
ROW_COLUMNS = ("container_id", "window_id", "simulation", "bars")
"""The columns of a simulation's row besides the set's parameters and the metrics."""


@dataclass(frozen=True)
class Bootstrap:
    """What every simulation draws from: the base run's bar returns and trades' pnl."""

    rets: np.ndarray
    pnl: np.ndarray
    method: str
    seed: int
    initial: float
    periods_per_year: float

    def metrics(self, sim: int) -> dict[str, Any]:
        """One simulation's metrics."""
        return bootstrap_metrics(
            self.rets, self.pnl, self.method, self.seed, sim, self.initial, self.periods_per_year
        )

    def block(self, sims: Sequence[int]) -> pa.Table:
        """The metrics of the simulations ``sims``, a row each."""
        return bootstrap_block(
            self.rets, self.pnl, self.method, self.seed, sims, self.initial, self.periods_per_year
        )


def container_id(sim: int) -> str:
    return f"{PREFIX}_{sim:05d}"


def simulation_record(row: Mapping[str, Any], metrics: Mapping[str, Any]) -> dict[str, Any]:
    """A simulation's own results (what its items hold) from its row and metrics."""
    return {
        "container_id": row["container_id"],
        "role": "portfolio",
        "simulation": row["simulation"],
        "metrics": metrics,
    }


def simulation_rows(
    window_id: str,
    sims: Sequence[int],
    parameters: Mapping[str, Any],
    n_bars: int,
    metrics: pa.Table,
) -> pa.Table:
    """A window's simulations as rows: :data:`ROW_COLUMNS`, the set's (strategy)
    ``parameters`` after ``simulation``, then a column per metric."""
    named = set(ROW_COLUMNS) | set(metrics.schema.names)
    clash = sorted(set(parameters) & named)
    if clash:
        raise ConfigError(
            f"strategy parameter {clash[0]!r} has the name of a result column; Monte Carlo "
            f"results hold {', '.join([*ROW_COLUMNS, *metrics.schema.names])} besides "
            "the parameters"
        )
    n = len(sims)
    cols: dict[str, pa.Array] = {
        "container_id": pa.array([container_id(s) for s in sims], pa.string()),
        "window_id": pa.array([window_id] * n, pa.string()),
        "simulation": pa.array(np.asarray(sims, dtype=np.int64)),
    }
    for name, value in parameters.items():
        cols[name] = _repeat(value, n)
    cols["bars"] = pa.array(np.full(n, n_bars, dtype=np.int64))
    for name in metrics.schema.names:
        cols[name] = metrics.column(name)
    return pa.table(cols)


def _repeat(value: Any, n: int) -> pa.Array:
    """A parameter's value as a column of ``n`` rows (as text when Arrow has no type
    for it)."""
    try:
        return pa.array([value] * n)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return pa.array([str(value)] * n, pa.string())


def run(ctx: PhaseContext) -> None:
    inputs, outcome = ctx.inputs, ctx.outcome
    mc = ctx.phase.params.monte_carlo
    settings = mc.model_dump(exclude_none=True) if mc else {}
    n_sims = int(settings.get("n") or DEFAULT_SIMULATIONS)
    windows = windows_for(
        "monte_carlo",
        len(inputs.bars),
        {"monte_carlo": {"n": n_sims, "batch": settings.get("batch", DEFAULT_BATCH)}},
    )
    ctx.observer.phase_started(ctx.name, len(windows), n_sims)
    base_window = Window("base", "full", Span(0, len(inputs.bars)))
    job = ctx.jobs(base_window, base_window.span, [0], "base")[0]
    bars, result = simulate_job(inputs.bars, job)
    initial = inputs.portfolio.initial_capital
    eq = np.concatenate(([initial], result.equity))
    method = settings.get("method", DEFAULT_MONTE_CARLO_METHOD)
    boot = Bootstrap(
        eq[1:] / eq[:-1] - 1.0,
        result.trades["pnl"],
        method,
        int(settings.get("seed", DEFAULT_SEED)),
        initial,
        bars.periods_per_year,
    )
    ctx.prefixes.add(PREFIX)
    columns: list[dict[str, np.ndarray]] = []
    blocks = ctx.uses_blocks()
    for window in windows:
        done = ctx.completed(window.window_id)
        if done is not None:
            # in the simulations' order, as the window computed them
            ranking = sorted(done["ranking"], key=set_index)
            columns.append(metric_columns_of([r["metrics"] for r in ranking], _names(ranking)))
            ctx.observer.containers_done(ctx.name, len(window.simulations))
            ctx.observer.window_done(ctx.name, window.window_id, True)
            continue
        summaries: Sequence[Summary]
        if blocks:
            block = _block_window(ctx, window, boot)
            summaries, metrics = block, block.columns
        else:
            summaries = _container_window(ctx, window, boot)
            metrics = metric_columns_of([s["metrics"] for s in summaries], _names(summaries))
        columns.append(metrics)
        ranked = rank(summaries, inputs.objective)
        ctx.close_window(window.window_id, window, ranked, inputs.objective)
    outcome.windows = [w.window_id for w in windows]
    outcome.containers = n_sims
    objective = [inputs.objective.name] if ":" not in inputs.objective.name else []
    names = dict.fromkeys(k for c in columns for k in c)
    merged = {k: np.concatenate([c.get(k, _missing(c)) for c in columns]) for k in names}
    dist = column_distribution(merged, objective)
    outcome.summary["distribution"] = jsonable(dist)
    outcome.summary["method"] = method
    outcome.selected = [dict(inputs.sets[0])]
    for p in REPORTED:
        row = {"parameters": inputs.sets[0], "metrics": {k: v[f"p{p}"] for k, v in dist.items()}}
        outcome.report(f"p{p}", f"{p}th percentile of each metric over {n_sims} simulations", row)


def _names(summaries: Sequence[Summary]) -> list[str]:
    """The metric names of summaries, in the order they first appear."""
    return list(dict.fromkeys(k for s in summaries for k in s["metrics"]))


def _missing(columns: Mapping[str, np.ndarray]) -> np.ndarray:
    """A column of NaN as long as the window's columns."""
    n = len(next(iter(columns.values()))) if columns else 0
    return np.full(n, np.nan)


def _block_window(ctx: PhaseContext, window: Window, boot: Bootstrap) -> SummaryColumns:
    """The window's simulations as one block."""
    inputs = ctx.inputs
    sims = window.simulations
    params = strategy_params(inputs.strategy_base, inputs.sets[0])
    bars = inputs.bars
    n_bars = len(bars)
    job = BlockJob(
        window_id=window.window_id,
        span=Span(0, n_bars),
        strategy_type=inputs.strategy_type,
        param_sets=(params,) * len(sims),
        portfolio=inputs.portfolio,
        container_ids=tuple(container_id(s) for s in sims),
        tracers=(),  # simulations trace nothing
        symbol=bars.symbol,
        parameters=(inputs.sets[0],) * len(sims),
    )
    where = {
        "window_id": window.window_id,
        "start": int(bars.ts[0]) if n_bars else None,
        "end": int(bars.ts[-1]) if n_bars else None,
        "bars": n_bars,
    }

    def compute(_job: BlockJob) -> pa.Table:
        return simulation_rows(window.window_id, sims, params, n_bars, boot.block(sims))

    return ctx.run_local_block(window.window_id, job, compute, where, simulation_record)


def _container_window(ctx: PhaseContext, window: Window, boot: Bootstrap) -> list[Summary]:
    """The window's simulations one container at a time."""
    summaries: list[Summary] = []
    parameters = ctx.inputs.sets[0]
    for sim in window.simulations:
        metrics = boot.metrics(sim)
        cid = container_id(sim)
        results = simulation_record({"container_id": cid, "simulation": sim}, metrics)
        ctx.out.put_container(window.window_id, cid, results, None)
        summaries.append({"container_id": cid, "parameters": dict(parameters), "metrics": metrics})
    ctx.observer.containers_done(ctx.name, len(summaries))
    return summaries
