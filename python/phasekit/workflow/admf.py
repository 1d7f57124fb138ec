"""The JSON records of ``results.layout: admf``: the files and keys of the design notes'
source project (its sequencer's ``_save_results_to_disk`` and its tracer's
``get_results``), built from a phasekit container's results.

Per phase, in ``<results_dir>/<run name>/<phase>/``::

    containers/<container_id>_results.json   {metrics, summary[, trades][, equity_curve]}
    aggregate_results.json                    {aggregate_metrics, total_trades,
                                               containers_tracked}
    all_trades.json                           [trade, ...]  (only when there are trades)
    phase_summary.json                        {phase, timestamp, containers,
                                               metrics_summary, config}

The writing itself (atomic files, checksums, catalog rows) is
:class:`phasekit.workflow.results.PhaseResults`'.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pyarrow as pa

#: The metrics the source project averages over a phase's portfolios.
AVERAGED = ("sharpe_ratio", "total_return", "max_drawdown", "win_rate")
#: A trade's keys in the source project's files.
TRADE_KEYS = (
    "symbol",
    "direction",
    "entry_price",
    "exit_price",
    "quantity",
    "entry_time",
    "exit_time",
    "pnl",
)
#: ``phase_summary.json``'s ``config.results_storage`` per phasekit data-flow mode.
STORAGE_NAMES = {"file": "disk", "memory": "memory"}


def _iso(value: Any) -> Optional[str]:
    return value.isoformat() if value is not None else None


def trade_records(trades: Optional[pa.Table]) -> list[dict[str, Any]]:
    """A container's trades with the source project's keys (``direction`` long/short,
    times as ISO text)."""
    if trades is None or not trades.num_rows:
        return []
    rows = trades.select(list(TRADE_KEYS)).to_pylist()
    for row in rows:
        row["direction"] = "long" if row["direction"] >= 0 else "short"
        row["entry_time"] = _iso(row["entry_time"])
        row["exit_time"] = _iso(row["exit_time"])
    return rows


def _finite(value: Any) -> Optional[float]:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def container_metrics(
    metrics: Mapping[str, Any], pnl: np.ndarray, initial_capital: float
) -> dict[str, Any]:
    """The source project's metric names from phasekit's metrics and the trades' pnl:
    ``max_drawdown`` positive (peak-to-trough fraction), trade counts and sums from the
    trades; phasekit's other metrics are kept under their own names."""
    wins, losses = pnl[pnl > 0], pnl[pnl < 0]
    gross_loss = float(-losses.sum())
    out = {k: v for k, v in metrics.items() if k not in ("max_drawdown", "trade_count")}
    drawdown = _finite(metrics.get("max_drawdown"))
    out.update(
        {
            "max_drawdown": abs(drawdown) if drawdown is not None else 0.0,
            "total_trades": int(pnl.size),
            "winning_trades": int(wins.size),
            "losing_trades": int(losses.size),
            "total_pnl": float(pnl.sum()),
            "gross_profit": float(wins.sum()),
            "gross_loss": gross_loss,
            "profit_factor": float(wins.sum()) / gross_loss if gross_loss > 0 else None,
            "current_value": _finite(metrics.get("final_equity", initial_capital)),
        }
    )
    return out


def equity_points(curve: pa.Table, initial_capital: float) -> list[dict[str, Any]]:
    """The equity curve as the source project's points: timestamp, value, drawdown (from
    the running peak, positive) and total return."""
    ts = curve.column("ts").to_pylist()
    value = curve.column("equity").to_numpy()
    peak = np.maximum.accumulate(np.maximum(value, initial_capital))
    drawdown = (peak - value) / peak
    total = value / initial_capital - 1.0
    return [
        {"timestamp": _iso(t), "value": float(v), "drawdown": float(d), "total_return": float(r)}
        for t, v, d, r in zip(ts, value, drawdown, total)
    ]


def container_record(
    results: Mapping[str, Any],
    trades: Optional[pa.Table],
    equity: Optional[pa.Table],
    initial_capital: float,
) -> dict[str, Any]:
    """``<container_id>_results.json``: ``metrics``, ``summary``, then ``trades`` and
    ``equity_curve`` when there are any (the source project leaves an empty list out)."""
    pnl = trades.column("pnl").to_numpy() if trades is not None else np.empty(0)
    metrics = container_metrics(results.get("metrics", {}), pnl, initial_capital)
    events = results.get("events")
    if isinstance(events, Mapping) and "retained" in events:
        metrics["events_retained"] = int(events["retained"])
    record: dict[str, Any] = {
        "metrics": metrics,
        "summary": {
            "initial_capital": initial_capital,
            "final_value": metrics["current_value"],
            "total_return": metrics.get("total_return"),
            "sharpe_ratio": metrics.get("sharpe_ratio"),
            "max_drawdown": metrics["max_drawdown"],
            "total_trades": metrics["total_trades"],
            "win_rate": metrics.get("win_rate"),
        },
    }
    rows = trade_records(trades)
    if rows:
        record["trades"] = rows
    if equity is not None and equity.num_rows:
        record["equity_curve"] = equity_points(equity, initial_capital)
    return record


@dataclass
class PhaseAggregate:
    """The source project's ``aggregate_metrics`` of a phase, gathered container by
    container (the best Sharpe ratio's metrics, averages of :data:`AVERAGED`)."""

    containers: list[str] = field(default_factory=list)
    trades: int = 0
    best_sharpe: float = -math.inf
    best: Optional[dict[str, Any]] = None
    sums: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)

    def add(self, name: str, record: Mapping[str, Any]) -> None:
        self.containers.append(name)
        self.trades += len(record.get("trades", ()))
        metrics = record["metrics"]
        sharpe = _finite(metrics.get("sharpe_ratio"))
        if sharpe is not None and sharpe > self.best_sharpe:
            self.best_sharpe, self.best = sharpe, dict(metrics)
        for key in AVERAGED:
            value = _finite(metrics.get(key))
            if value is not None:
                self.sums[key] = self.sums.get(key, 0.0) + value
                self.counts[key] = self.counts.get(key, 0) + 1

    def metrics(self) -> dict[str, Any]:
        if not self.containers:
            return {}
        out: dict[str, Any] = {
            "best_sharpe_ratio": self.best_sharpe if self.best is not None else None,
            "best_portfolio_metrics": self.best,
            "portfolio_count": len(self.containers),
        }
        for key in AVERAGED:
            if self.counts.get(key):
                out[f"avg_{key}"] = self.sums[key] / self.counts[key]
        return out

    def aggregate_results(self) -> dict[str, Any]:
        """``aggregate_results.json``."""
        return {
            "aggregate_metrics": self.metrics(),
            "total_trades": self.trades,
            "containers_tracked": len(self.containers),
        }

    def phase_summary(self, phase: str, mode: str, event_tracing: bool) -> dict[str, Any]:
        """``phase_summary.json``; ``config`` holds the phase's results storage in the
        source project's words and whether events were traced."""
        return {
            "phase": phase,
            "timestamp": datetime.now(UTC).isoformat(),
            "containers": list(self.containers),
            "metrics_summary": self.metrics(),
            "config": {
                "results_storage": STORAGE_NAMES.get(mode, mode),
                "event_tracing": event_tracing,
            },
        }


def file_name(container_id: str, window_id: Optional[str]) -> str:
    """A container's name in the phase's one ``containers`` folder: its id, with the
    window in front when the id does not carry it (walk-forward and Monte Carlo windows
    reuse container ids)."""
    if window_id in (None, "full") or container_id.startswith(f"{window_id}_"):
        return container_id
    return f"{window_id}_{container_id}"


def admf_folder(resolved: Any, phase: Optional[str] = None) -> Path:
    """The run's folder under ``results.layout: admf`` (a phase's with ``phase``):
    ``<results_dir>/<run name>[/<phase>]``, the run name being ``run_name``, else the
    workflow's name, as the source project names it."""
    from phasekit.workflow.builtin import CUSTOM_WORKFLOW

    name = resolved.run_name or resolved.workflow or CUSTOM_WORKFLOW
    folder = Path(resolved.results_dir) / name
    return folder / phase if phase else folder


def check_admf_target(resolved: Any, resume: bool) -> None:
    """Refuse what the layout cannot do: resume (the windows an earlier attempt completed
    would be missing from its files) and writing over an earlier run's phase folders
    (their catalog rows would no longer match)."""
    from phasekit.errors import ConfigError

    if resolved.results_layout != "admf":
        return
    if resume:
        raise ConfigError(
            "results.layout: admf writes a phase's files once, from every container of "
            "the run; a resumed run cannot, run the configuration again instead"
        )
    for phase in resolved.phase_names:
        folder = admf_folder(resolved, phase)
        if folder.exists():
            raise ConfigError(
                f"results.layout: admf: {folder} exists from an earlier run; remove it or "
                "give this run another run_name"
            )


@dataclass
class AdmfFiles:
    """What ``results.layout: admf`` gathers over a phase: its folder, the portfolios'
    initial capital, the running aggregate and the trades for ``all_trades.json``."""

    folder: Path
    initial_capital: float
    aggregate: PhaseAggregate = field(default_factory=PhaseAggregate)
    trades: list[pa.Table] = field(default_factory=list)
