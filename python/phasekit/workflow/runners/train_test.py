"""``train_test``: every set on the train part (window ``train``), ranked by the
objective there; then the ``top_k`` best of train on the test part (window ``test``),
kept in their in-sample order, so the out-of-sample figures are those of the sets
train selected (never a selection on test data).

A phase whose sets were selected by the phase it depends on (the ``validation`` of
``train_test_optimization``) runs the first ``top_k`` of them on the test part only,
once.
"""

from __future__ import annotations

from collections.abc import Sequence

from phasekit.registry import DEFAULT_DATA_SPLIT
from phasekit.workflow.phase import PhaseContext, Summary, set_index
from phasekit.workflow.sequences import Window, windows_for
from phasekit.workflow.topology import rank
from phasekit.workflow.windowagg import public

IN = "best of the train window (in sample)"
OUT = "the train window's best on the test window (out of sample)"
VALIDATED = "the selected best set on the test window (out of sample)"


def run(ctx: PhaseContext) -> None:
    inputs, outcome = ctx.inputs, ctx.outcome
    split = ctx.phase.params.data_split
    train, test = windows_for(
        "train_test",
        len(inputs.bars),
        {"data_split": split if split is not None else DEFAULT_DATA_SPLIT},
        inputs.bars.index_of,
    )
    if inputs.selected:
        _validate(ctx, test)
        return
    k = min(inputs.top_k, len(inputs.sets))
    ctx.observer.phase_started(ctx.name, 2, len(inputs.sets) + k)
    ranked = ctx.search_window(train, train.span, range(len(inputs.sets)), "train")
    best_idx = [set_index(r) for r in ranked[:k]]
    tested = ctx.search_window(test, test.span, best_idx, "test", keep_order=True)
    outcome.windows = ["train", "test"]
    outcome.containers = len(inputs.sets) + len(best_idx)
    ctx.select(ranked, inputs.top_k)
    _report_test(ctx, tested)
    outcome.report("in", IN, outcome.best)
    outcome.report("out", OUT, outcome.best_out_of_sample)


def _validate(ctx: PhaseContext, test: Window) -> None:
    """Run the phase's ``top_k`` first selected sets (best first) on the test window,
    keeping their order."""
    inputs, outcome = ctx.inputs, ctx.outcome
    n = min(inputs.top_k, len(inputs.sets))
    ctx.observer.phase_started(ctx.name, 1, n)
    tested = ctx.search_window(test, test.span, range(n), "test", keep_order=True)
    outcome.windows, outcome.containers = ["test"], n
    outcome.selected = [dict(s) for s in inputs.sets[:n]]
    ctx.write_selected()
    _report_test(ctx, tested)
    outcome.report("out", VALIDATED, outcome.best_out_of_sample)


def _report_test(ctx: PhaseContext, tested: Sequence[Summary]) -> None:
    """The out-of-sample figures: the in-sample order's first set on test; the best on
    test only under its own label."""
    outcome = ctx.outcome
    outcome.best_out_of_sample = public(tested[0]) if tested else None
    outcome.summary["best_out_of_sample"] = outcome.best_out_of_sample
    outcome.summary["test_ranking"] = [public(r) for r in tested]
    if tested:
        hindsight = rank(tested, ctx.inputs.objective)[0]
        outcome.summary["best_on_test_in_hindsight"] = {
            "note": "chosen on test data: not an out-of-sample figure",
            **(public(hindsight) or {}),
        }
