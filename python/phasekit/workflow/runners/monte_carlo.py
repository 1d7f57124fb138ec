"""``monte_carlo``: the best input set (or the strategy's own parameters) is run once;
each simulation bootstraps its bar returns (``method: returns``) or its trades
(``method: trades``), seeded per simulation; a window per batch."""

from __future__ import annotations

from typing import Any

import numpy as np

from phasekit.backtest.metrics import bootstrap_metrics, metric_distribution
from phasekit.registry import (
    DEFAULT_BATCH,
    DEFAULT_MONTE_CARLO_METHOD,
    DEFAULT_SEED,
    DEFAULT_SIMULATIONS,
)
from phasekit.workflow.phase import PhaseContext, Summary
from phasekit.workflow.results import jsonable
from phasekit.workflow.sequences import Span, Window, windows_for
from phasekit.workflow.topology import rank, simulate_job

REPORTED = (5, 50, 95)
"""The percentiles a Monte Carlo phase reports in its summary rows."""


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
    rets = eq[1:] / eq[:-1] - 1.0
    pnl = result.trades["pnl"]
    method = settings.get("method", DEFAULT_MONTE_CARLO_METHOD)
    seed = int(settings.get("seed", DEFAULT_SEED))
    all_metrics: list[dict[str, Any]] = []
    ctx.prefixes.add("simulation")
    for window in windows:
        done = ctx.completed(window.window_id)
        if done is not None:
            all_metrics.extend(r["metrics"] for r in done["ranking"])
            ctx.observer.containers_done(ctx.name, len(window.simulations))
            ctx.observer.window_done(ctx.name, window.window_id, True)
            continue
        summaries: list[Summary] = []
        for sim in window.simulations:
            metrics = bootstrap_metrics(
                rets, pnl, method, seed, sim, initial, bars.periods_per_year
            )
            cid = f"simulation_{sim:05d}"
            results = {
                "container_id": cid,
                "role": "portfolio",
                "simulation": sim,
                "metrics": metrics,
            }
            ctx.out.put_container(window.window_id, cid, results, None)
            summaries.append(
                {
                    "container_id": cid,
                    "parameters": dict(inputs.sets[0]),
                    "metrics": metrics,
                }
            )
            all_metrics.append(metrics)
        ctx.observer.containers_done(ctx.name, len(summaries))
        ranked = rank(summaries, inputs.objective)
        ctx.close_window(window.window_id, window, ranked, inputs.objective)
    outcome.windows = [w.window_id for w in windows]
    outcome.containers = n_sims
    objective = [inputs.objective.name] if ":" not in inputs.objective.name else []
    dist = metric_distribution(all_metrics, objective)
    outcome.summary["distribution"] = jsonable(dist)
    outcome.summary["method"] = method
    outcome.selected = [dict(inputs.sets[0])]
    for p in REPORTED:
        row = {"parameters": inputs.sets[0], "metrics": {k: v[f"p{p}"] for k, v in dist.items()}}
        outcome.report(f"p{p}", f"{p}th percentile of each metric over {n_sims} simulations", row)
