"""``single_pass``: every parameter set over all bars, in one window."""

from __future__ import annotations

from phasekit.workflow.phase import PhaseContext
from phasekit.workflow.sequences import windows_for


def run(ctx: PhaseContext) -> None:
    inputs = ctx.inputs
    window = windows_for("single_pass", len(inputs.bars), {})[0]
    ctx.observer.phase_started(ctx.name, 1, len(inputs.sets))
    ranked = ctx.search_window(window, window.span, range(len(inputs.sets)), None)
    ctx.outcome.windows, ctx.outcome.containers = ["full"], len(inputs.sets)
    ctx.select(ranked, inputs.top_k)
    ctx.outcome.report("in", "best over all bars (in sample)", ctx.outcome.best)
