"""``train_test``: every set on the train part (window ``train``), then the ``top_k``
best of train on the test part (window ``test``)."""

from __future__ import annotations

from phasekit.registry import DEFAULT_DATA_SPLIT
from phasekit.workflow.phase import PhaseContext, set_index
from phasekit.workflow.sequences import windows_for
from phasekit.workflow.windowagg import public


def run(ctx: PhaseContext) -> None:
    inputs, outcome = ctx.inputs, ctx.outcome
    split = ctx.phase.params.data_split
    train, test = windows_for(
        "train_test",
        len(inputs.bars),
        {"data_split": split if split is not None else DEFAULT_DATA_SPLIT},
        inputs.bars.index_of,
    )
    k = min(inputs.top_k, len(inputs.sets))
    ctx.observer.phase_started(ctx.name, 2, len(inputs.sets) + k)
    ranked = ctx.search_window(train, train.span, range(len(inputs.sets)), "train")
    best_idx = [set_index(r) for r in ranked[:k]]
    tested = ctx.search_window(test, test.span, best_idx, "test")
    outcome.windows = ["train", "test"]
    outcome.containers = len(inputs.sets) + len(best_idx)
    ctx.select(ranked, inputs.top_k)
    outcome.best_out_of_sample = public(tested[0]) if tested else None
    outcome.summary["best_out_of_sample"] = outcome.best_out_of_sample
    outcome.summary["test_ranking"] = [public(r) for r in tested]
