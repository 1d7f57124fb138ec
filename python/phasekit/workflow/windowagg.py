"""A window's aggregate (design note 002's ``aggregate_results.json``): the ranking of
its containers and averages of their metrics."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Optional

from phasekit.backtest.metrics import average_metrics
from phasekit.workflow.topology import Objective


def public(summary: Optional[Mapping[str, Any]]) -> Optional[dict[str, Any]]:
    """A summary without its private (``_``-prefixed) fields, as written to files (the
    summary itself when it has none)."""
    if summary is None:
        return None
    if isinstance(summary, dict) and not any(k.startswith("_") for k in summary):
        return summary
    return {k: v for k, v in summary.items() if not k.startswith("_")}


def aggregate(window_id: str, ranked: list[dict[str, Any]], objective: Objective) -> dict[str, Any]:
    """The aggregate of one window whose container summaries are ``ranked`` best first."""
    best = ranked[0]["metrics"] if ranked else {}
    return {
        "window_id": window_id,
        "containers": len(ranked),
        "objective": {"name": objective.name, "direction": objective.direction},
        "aggregate_metrics": {
            **average_metrics([r["metrics"] for r in ranked]),
            "best_sharpe_ratio": best.get("sharpe_ratio"),
            "best_total_return": best.get("total_return"),
        },
        "best": public(ranked[0]) if ranked else None,
        "ranking": [public(r) for r in ranked],
    }
