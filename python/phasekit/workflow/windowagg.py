"""A window's aggregate (design note 002's ``aggregate_results.json``): the ranking of
its containers and averages of their metrics."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Optional

from phasekit.backtest.metrics import average_metrics
from phasekit.workflow.ranking import SummaryColumns
from phasekit.workflow.topology import Objective


def public(summary: Optional[Mapping[str, Any]]) -> Optional[dict[str, Any]]:
    """A summary without its private (``_``-prefixed) fields, as written to files (the
    summary itself when it has none)."""
    if summary is None:
        return None
    if isinstance(summary, dict) and not any(k.startswith("_") for k in summary):
        return summary
    return {k: v for k, v in summary.items() if not k.startswith("_")}


def aggregate(
    window_id: str, ranked: Sequence[dict[str, Any]], objective: Objective
) -> dict[str, Any]:
    """The aggregate of one window whose container summaries are ``ranked`` best first.
    Summaries as columns (:class:`~phasekit.workflow.ranking.SummaryColumns`) are
    averaged by column and their ranking is written from the columns
    (:class:`~phasekit.workflow.ranking.RankingRows`: the same JSON)."""
    best = public(ranked[0]) if len(ranked) else None
    if isinstance(ranked, SummaryColumns):
        averages = ranked.average()
        ranking: Any = ranked.ranking()
    else:
        averages = average_metrics([r["metrics"] for r in ranked])
        ranking = [public(r) for r in ranked]
    metrics = best["metrics"] if best else {}
    return {
        "window_id": window_id,
        "containers": len(ranked),
        "objective": {"name": objective.name, "direction": objective.direction},
        "aggregate_metrics": {
            **averages,
            "best_sharpe_ratio": metrics.get("sharpe_ratio"),
            "best_total_return": metrics.get("total_return"),
        },
        "best": best,
        "ranking": ranking,
    }
