"""The reference ``backtest`` topology: per execution window, a portfolio container per
parameter set runs a strategy over the window's bars; ``analysis`` ranks results.

Signals are computed on all bars up to the window's end (so indicators are warm at its
start, with no look-ahead) and positions are only taken inside the window, by the
backtest kernel of the backend in use (:mod:`phasekit.backtest.kernel`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from phasekit.backtest.bars import Bars
from phasekit.backtest.block import SetColumns
from phasekit.backtest.kernel import KernelRun, run_kernel
from phasekit.backtest.metrics import compute_metrics
from phasekit.backtest.portfolio import PortfolioSettings, SimResult, portfolio_updates
from phasekit.errors import ConfigError
from phasekit.tracing import TracerSettings
from phasekit.workflow.container import Container, ResultSink, Role
from phasekit.workflow.ranking import SummaryColumns
from phasekit.workflow.sequences import Span

TRADES_SCHEMA = pa.schema(
    [
        ("container_id", pa.string()),
        ("window_id", pa.string()),
        ("symbol", pa.string()),
        ("entry_time", pa.timestamp("ns", tz="UTC")),
        ("exit_time", pa.timestamp("ns", tz="UTC")),
        ("entry_price", pa.float64()),
        ("exit_price", pa.float64()),
        ("direction", pa.int8()),
        ("quantity", pa.float64()),
        ("pnl", pa.float64()),
        ("return", pa.float64()),
        ("bars_held", pa.int64()),
    ]
)


@dataclass(frozen=True)
class PortfolioJob:
    """Everything one portfolio container needs; picklable for worker processes."""

    container_id: str
    window_id: str
    span: Span
    strategy_type: str
    strategy_params: Mapping[str, Any]
    parameters: Mapping[str, Any]
    portfolio: PortfolioSettings
    tracer: TracerSettings
    symbol: str
    extra: Mapping[str, Any] = field(default_factory=dict)


def strategy_params(base: Mapping[str, Any], parameters: Mapping[str, Any]) -> dict[str, Any]:
    """The strategy's keyword arguments: ``base`` updated by ``strategy.*`` parameters."""
    out = dict(base)
    for path, value in parameters.items():
        head, _, rest = path.partition(".")
        if head == "strategy" and rest and "." not in rest:
            out[rest] = value
        elif "." not in path:
            out[path] = value
    return out


def strategy_columns(
    base: Mapping[str, Any], sets: Sequence[Mapping[str, Any]], indices: Sequence[int]
) -> Sequence[Mapping[str, Any]]:
    """:func:`strategy_params` of the sets ``indices`` of ``sets``: as
    :class:`~phasekit.backtest.block.SetColumns` taken from the columns of a parameter
    space's sets or of another phase's selection
    (:class:`~phasekit.workflow.params.ParameterSets`), a dict per set for other lists
    (a selection whose sets give different paths)."""
    columns = getattr(sets, "columns", None)
    if not isinstance(columns, Mapping):
        return tuple(strategy_params(base, sets[i]) for i in indices)
    rows = np.asarray(indices, dtype=np.intp)
    keys = tuple(strategy_params(base, dict.fromkeys(columns)))
    varying: dict[str, np.ndarray] = {}
    for path, column in columns.items():  # later paths win, as in strategy_params
        key = next(iter(strategy_params({}, {path: None})), None)
        if key is not None:
            varying[key] = column[rows]
    fixed = {k: base[k] for k in keys if k not in varying}
    return SetColumns(keys, fixed, varying, int(rows.shape[0]))


def trades_table(job: PortfolioJob, trades: Mapping[str, np.ndarray]) -> pa.Table:
    n = trades["pnl"].shape[0]
    return pa.table(
        {
            "container_id": pa.array([job.container_id] * n, pa.string()),
            "window_id": pa.array([job.window_id] * n, pa.string()),
            "symbol": pa.array([job.symbol] * n, pa.string()),
            "entry_time": pa.array(trades["entry_ts"], pa.timestamp("ns", tz="UTC")),
            "exit_time": pa.array(trades["exit_ts"], pa.timestamp("ns", tz="UTC")),
            "entry_price": trades["entry_price"],
            "exit_price": trades["exit_price"],
            "direction": pa.array(trades["direction"], pa.int8()),
            "quantity": trades["quantity"],
            "pnl": trades["pnl"],
            "return": trades["return"],
            "bars_held": pa.array(trades["bars_held"], pa.int64()),
        },
        schema=TRADES_SCHEMA,
    )


def kernel_job(bars: Bars, job: PortfolioJob, curves: bool = True) -> tuple[Bars, KernelRun]:
    """Signals over bars[:stop], positions inside [start, stop), by the backend's kernel
    (equity and position per bar only with ``curves``)."""
    try:
        run = run_kernel(
            bars,
            job.span.start,
            job.span.stop,
            job.strategy_type,
            job.strategy_params,
            job.portfolio,
            curves=curves,
        )
    except ConfigError as exc:
        raise ConfigError(f"container {job.container_id} {dict(job.parameters)}: {exc}") from exc
    return bars.slice(job.span.start, job.span.stop), run


def simulate_job(bars: Bars, job: PortfolioJob) -> tuple[Bars, SimResult]:
    """Signals over bars[:stop], positions inside [start, stop)."""
    window, run = kernel_job(bars, job)
    return window, run.sim_result()


def run_portfolio(bars: Bars, job: PortfolioJob, sink: ResultSink) -> None:
    """Create, run and destroy one portfolio container; ``sink`` receives its results."""
    container = Container(
        job.container_id,
        Role.PORTFOLIO,
        tracer_settings=job.tracer,
        on_destroy=sink,
        params=dict(job.parameters),
    )
    with container:
        container.run()
        # per-bar curves only when PORTFOLIO_UPDATE is traced; the metrics fold the
        # kernel's equity summary
        window, run = kernel_job(bars, job, curves=job.tracer.keeps_equity)
        container.bus.publish(run.events)
        if job.tracer.keeps_equity:
            container.bus.publish(portfolio_updates(window, SimResult(run.equity, run.position)))
        assert container.tracer is not None
        container.tracer.on_equity(window.ts, run.equity, run.position, run.summary)
        container.outputs["trades"] = trades_table(job, run.trades)
        curve = container.tracer.equity_curve()
        if curve is not None:
            container.outputs["equity_curve"] = curve
        container.outputs["window"] = {
            "window_id": job.window_id,
            "start": int(window.ts[0]),
            "end": int(window.ts[-1]),
            "bars": len(window),
        }


def reference_metrics(bars: Bars, job: PortfolioJob) -> dict[str, Any]:
    """The vectorised metrics of a job (for checks against the streaming tracer)."""
    window, result = simulate_job(bars, job)
    return compute_metrics(
        result.equity,
        job.portfolio.initial_capital,
        window.periods_per_year,
        result.trades["pnl"],
        result.position,
    )


# ---------------------------------------------------------------- objective and ranking


@dataclass(frozen=True)
class Objective:
    """``name`` is a metric (``sharpe_ratio`` ...) or ``module:function`` taking the
    metrics dict; ``direction`` is ``maximize`` or ``minimize``."""

    name: str = "sharpe_ratio"
    direction: str = "maximize"

    def __post_init__(self) -> None:
        if self.direction not in ("maximize", "minimize"):
            raise ConfigError(
                f"objective_function.direction: {self.direction!r}; use maximize or minimize"
            )

    def function(self) -> Callable[[Mapping[str, Any]], float]:
        if ":" in self.name:
            import importlib

            module, _, attr = self.name.partition(":")
            try:
                return getattr(importlib.import_module(module), attr)  # type: ignore[no-any-return]
            except (ImportError, AttributeError) as exc:
                raise ConfigError(
                    f"objective_function.name: cannot import {self.name!r}: {exc}"
                ) from exc
        name = self.name

        def metric(metrics: Mapping[str, Any]) -> float:
            if name not in metrics:
                raise ConfigError(
                    f"objective_function.name: {name!r} is not a metric; "
                    f"available: {', '.join(sorted(metrics))}"
                )
            value = metrics[name]
            return float("nan") if value is None else float(value)

        return metric


def _rank_columns(
    results: SummaryColumns, objective: Objective, keep_order: bool
) -> SummaryColumns | None:
    """:func:`rank` by the objective's column (None when the objective is not a column:
    a ``module:function``, or a name that is no metric)."""
    if ":" in objective.name:
        return None
    score = results.columns.get(objective.name)
    if score is None:
        return None
    sign = -1.0 if objective.direction == "maximize" else 1.0
    return results.ranked(score, sign, keep_order)


def best_shared_by(ranked: Sequence[Mapping[str, Any]]) -> int:
    """How many summaries of ``ranked`` (best first, scored by :func:`rank`) share the
    best objective score (all of them when none has a score): more than one means the
    best was picked among equals by container id."""
    if isinstance(ranked, SummaryColumns) and ranked.objective is not None:
        scores = ranked.objective if ranked.order is None else ranked.objective[ranked.order]
    else:
        scores = np.array(
            [np.nan if r.get("objective") is None else r["objective"] for r in ranked], float
        )
    if not scores.shape[0]:
        return 0
    if np.isnan(scores[0]):  # NaN ranks last: none has a score
        return int(scores.shape[0])
    return int(np.count_nonzero(scores == scores[0]))


def rank(
    results: Sequence[Mapping[str, Any]],
    objective: Objective,
    top_k: int | None = None,
    keep_order: bool = False,
) -> list[dict[str, Any]]:
    """Container results sorted best first by the objective (NaN last; ties by id),
    each given its ``objective`` score (None for NaN) in place; ``keep_order`` scores
    them without sorting (an order chosen elsewhere, such as in-sample, stands).
    :class:`~phasekit.workflow.ranking.SummaryColumns` are ranked by the objective's
    column (numpy) when the objective is a metric, and stay columns (without
    ``top_k``); their summaries are made as dicts and ranked as such otherwise."""
    if isinstance(results, SummaryColumns):
        ranked_columns = _rank_columns(results, objective, keep_order)
        if ranked_columns is not None:
            return ranked_columns[:top_k] if top_k else ranked_columns  # type: ignore[return-value]
        results = list(results)
    fn = objective.function()
    sign = -1.0 if objective.direction == "maximize" else 1.0
    scored = []
    for res in results:
        score = fn(res["metrics"])
        nan = bool(np.isnan(score))
        key = (nan, sign * score if not nan else 0.0, res["container_id"])
        entry = res if isinstance(res, dict) else dict(res)
        entry["objective"] = None if nan else float(score)  # scored in place: no copies
        scored.append((key, entry))
    if not keep_order:
        scored.sort(key=lambda item: item[0])
    ranked = [item[1] for item in scored]
    return ranked[:top_k] if top_k else ranked
