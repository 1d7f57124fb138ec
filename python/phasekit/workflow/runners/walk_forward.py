"""``walk_forward``: per window, every set on its train part, then the best on its test
part; the test equity curves are stitched into one out-of-sample curve."""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Optional

import numpy as np
import pyarrow as pa

from phasekit.backtest.metrics import (
    annualised_return,
    combine_trade_stats,
    compute_metrics,
    stitch_equity,
    trade_stats,
)
from phasekit.workflow.phase import PhaseContext, Summary, set_index
from phasekit.workflow.sequences import Window, default_lengths, windows_for
from phasekit.workflow.topology import rank
from phasekit.workflow.windowagg import public

EQUITY_SCHEMA = pa.schema([("ts", pa.timestamp("ns", tz="UTC")), ("equity", pa.float64())])


def run(ctx: PhaseContext) -> None:
    inputs, outcome = ctx.inputs, ctx.outcome
    wf = ctx.phase.params.walk_forward
    settings = {
        **default_lengths(len(inputs.bars)),
        **(wf.model_dump(exclude_none=True) if wf else {}),
    }
    windows = windows_for("walk_forward", len(inputs.bars), {"walk_forward": settings})
    ctx.observer.phase_started(ctx.name, len(windows), len(windows) * (len(inputs.sets) + 1))
    curves: list[pa.Table] = []
    per_window = []
    for window in windows:
        res = _window(ctx, window)
        per_window.append(
            {
                "window_id": window.window_id,
                "best": public(res["best"]),
                "test": res["test"],
                "test_trades": res["test_trades"],
            }
        )
        if res.get("equity") is not None:
            curves.append(res["equity"])
    outcome.windows = [w.window_id for w in windows]
    outcome.containers = len(windows) * (len(inputs.sets) + 1)
    stitched = stitch(curves, inputs.portfolio.initial_capital)
    if stitched.num_rows:
        outcome.files["oos_equity"] = ctx.out.write_table(None, "oos_equity", stitched)
        oos = out_of_sample(ctx, stitched, windows, per_window)
        outcome.summary["out_of_sample"] = oos
        outcome.summary["walk_forward_efficiency"] = oos.pop("_efficiency")
    outcome.summary["windows_detail"] = per_window
    bests = [w["best"] for w in per_window if w["best"]]
    outcome.best = per_window[-1]["best"] if per_window else None
    outcome.selected = [b["parameters"] for b in bests[-1:]]
    ctx.write_selected()
    outcome.report("in", "the last window's best on its train part (in sample)", outcome.best)
    if "out_of_sample" in outcome.summary:
        stitched_row = {
            "parameters": {"windows": len(windows)},
            "metrics": outcome.summary["out_of_sample"],
        }
        outcome.report("out", "each window's train best on its test part, stitched", stitched_row)


def out_of_sample(
    ctx: PhaseContext, stitched: pa.Table, windows: list[Window], per_window: list[dict[str, Any]]
) -> dict[str, Any]:
    """The stitched out-of-sample metrics: equity metrics of the stitched curve, the
    trades of every test part together, and (under ``_efficiency``) the walk-forward
    efficiency: annualised out-of-sample return / the mean annualised in-sample return of
    the sets each window selected."""
    inputs = ctx.inputs
    initial, ppy = inputs.portfolio.initial_capital, inputs.bars.periods_per_year
    eq = stitched.column("equity").to_numpy()
    metrics = compute_metrics(eq, initial, ppy, np.empty(0))
    metrics.update(combine_trade_stats([w["test_trades"] for w in per_window]))
    oos = annualised_return(metrics["total_return"], int(eq.shape[0]), ppy)
    in_sample = [
        annualised_return(w["best"]["metrics"]["total_return"], len(win.train or win.span), ppy)
        for w, win in zip(per_window, windows)
        if w["best"]
    ]
    mean_is = float(np.mean(in_sample)) if in_sample else 0.0
    metrics["_efficiency"] = oos / mean_is if mean_is != 0 else None
    return metrics


def stitch(curves: list[pa.Table], initial: float) -> pa.Table:
    """The test-window equity tables chained into one (``ts``, ``equity``) table."""
    ts, eq = stitch_equity(
        [(c.column("ts").to_numpy(), c.column("equity").to_numpy()) for c in curves], initial
    )
    return pa.table(
        {"ts": pa.array(ts, pa.timestamp("ns", tz="UTC")), "equity": pa.array(eq, pa.float64())},
        schema=EQUITY_SCHEMA,
    )


def _window(ctx: PhaseContext, window: Window) -> dict[str, Any]:
    assert window.train is not None and window.test is not None
    inputs = ctx.inputs
    folder = window.window_id
    done = ctx.completed(folder)
    if done is not None:
        ctx.observer.containers_done(ctx.name, len(inputs.sets) + 1)
        ctx.observer.window_done(ctx.name, window.window_id, True)
        eq: Optional[pa.Table] = None
        if done.get("oos_equity"):
            eq = ctx.out.read_table(done["oos_equity"])
        return {
            "best": done["best"],
            "test": done.get("test"),
            "equity": eq,
            "test_trades": done["test_trades"],
        }
    train_jobs = ctx.jobs(window, window.train, range(len(inputs.sets)), "train")
    ranked = rank(ctx.run_containers(train_jobs, folder), inputs.objective)
    best = ranked[0]
    test_job = ctx.jobs(window, window.test, [set_index(best)], "test")[0]
    tracer = test_job.tracer
    if not tracer.keeps_equity:
        tracer = replace(tracer, event_tracing=(*tracer.event_tracing, "PORTFOLIO_UPDATE"))
    test_job = replace(test_job, tracer=tracer)
    tested: Summary = ctx.run_containers([test_job], folder, keep_equity=True)[0]
    equity = tested.pop("_equity", None)
    stats = trade_stats(tested.pop("_pnl"))
    extra: dict[str, Any] = {"best": public(best), "test": public(tested), "test_trades": stats}
    if equity is not None:
        extra["oos_equity"] = ctx.out.write_table(folder, "oos_equity", equity)
    ctx.close_window(folder, window, ranked, inputs.objective, extra)
    return {"best": best, "test": public(tested), "equity": equity, "test_trades": stats}
