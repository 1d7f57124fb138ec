"""The ``analysis`` topology: runs no backtest; ranks the container results of the
phases it depends on (their windows' ``aggregate_results``) and selects the best."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from phasekit.workflow.phase import PhaseOutcome
from phasekit.workflow.results import PhaseResults
from phasekit.workflow.sequences import Span, Window
from phasekit.workflow.topology import Objective, rank
from phasekit.workflow.windowagg import aggregate, public

WINDOW = Window("full", "full", Span(0, 0))


def run(
    outcome: PhaseOutcome,
    out: PhaseResults,
    aggregates: Iterable[tuple[str, Mapping[str, Any]]],
    objective: Objective,
    top_k: int,
) -> None:
    """Rank the rankings of ``aggregates`` (``(source, aggregate)`` pairs, the source
    ``<phase>/<window>``) together and select the best ``top_k``."""
    entries = [{**r, "source": source} for source, agg in aggregates for r in agg["ranking"]]
    ranked = rank(entries, objective)
    out.write_json(None, "aggregate_results", aggregate(WINDOW.window_id, ranked, objective))
    out.write_json(None, "window_complete", {"window_id": WINDOW.window_id})
    outcome.selected = [r["parameters"] for r in ranked[:top_k]]
    outcome.best = public(ranked[0]) if ranked else None
    outcome.files["selected_parameters"] = out.write_json(
        None, "selected_parameters", {"phase": outcome.name, "sets": outcome.selected}
    )
    outcome.windows, outcome.containers = ["full"], 1
    outcome.report("ranked", "best of the ranked results of its inputs", outcome.best)
    outcome.summary = {
        "phase": outcome.name,
        "topology": "analysis",
        "ranked": len(ranked),
        "best": outcome.best,
        "selected_parameters": outcome.selected,
    }
