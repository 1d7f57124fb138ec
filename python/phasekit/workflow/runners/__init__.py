"""One module per sequence, behind one interface: ``run(ctx)`` runs the phase of
``ctx`` (a :class:`~phasekit.workflow.phase.PhaseContext`) window by window and fills
``ctx.outcome`` (windows, containers, best, selected sets, summary entries)."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from phasekit.workflow.phase import PhaseContext
from phasekit.workflow.runners import monte_carlo, single_pass, train_test, walk_forward

SequenceRunner = Callable[[PhaseContext], None]

RUNNERS: Mapping[str, SequenceRunner] = {
    "single_pass": single_pass.run,
    "train_test": train_test.run,
    "walk_forward": walk_forward.run,
    "monte_carlo": monte_carlo.run,
}

__all__ = ["RUNNERS", "SequenceRunner"]
