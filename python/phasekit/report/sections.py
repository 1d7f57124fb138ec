"""The sections of a run's report, each built from :class:`~phasekit.report.data.RunData`
as Plotly figures (plain ``{"data": [...], "layout": {...}}`` mappings).

A section whose data the run does not have holds no figure and a one-line note saying
why (:attr:`Section.note`); it never holds an empty chart.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Optional

import pyarrow as pa

from phasekit.report.data import PhaseData, RunData

Figure = dict[str, Any]
"""A Plotly figure: ``data`` (the traces) and ``layout``."""

MAX_POINTS = 5000
"""The most points an equity trace keeps (evenly thinned beyond, the last kept)."""
MC_METRICS = ("total_return", "max_drawdown")
"""The metrics whose Monte Carlo distributions are drawn besides the objective."""


@dataclass
class Section:
    """A titled part of the report: its figures, or a note when it has none."""

    key: str
    title: str
    figures: list[Figure] = field(default_factory=list)
    note: Optional[str] = None


def _layout(title: str, x: str, y: str, **extra: Any) -> dict[str, Any]:
    return {
        "title": {"text": title},
        "xaxis": {"title": {"text": x}},
        "yaxis": {"title": {"text": y}},
        "margin": {"l": 70, "r": 30, "t": 60, "b": 60},
        "height": 420,
        "legend": {"orientation": "h", "y": -0.2},
        **extra,
    }


def _num(value: Any) -> Optional[float]:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _params(parameters: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in parameters.items()) or "default parameters"


# ------------------------------------------------------------------ equity


def _thin(table: pa.Table) -> tuple[list[str], list[Optional[float]]]:
    n = table.num_rows
    step = max(1, math.ceil(n / MAX_POINTS))
    idx = list(range(0, n, step))
    if idx and idx[-1] != n - 1:
        idx.append(n - 1)
    ts = table.column("ts").to_pylist()
    eq = table.column("equity").to_pylist()
    return [_iso(ts[i]) for i in idx], [_num(eq[i]) for i in idx]


def _iso(value: Any) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def _curve(name: str, table: pa.Table, dash: str = "solid") -> dict[str, Any]:
    x, y = _thin(table)
    return {
        "type": "scatter",
        "mode": "lines",
        "name": name,
        "x": x,
        "y": y,
        "line": {"dash": dash},
    }


def _best_container(agg: Mapping[str, Any]) -> Optional[Mapping[str, Any]]:
    ranking = agg.get("ranking") or []
    return ranking[0] if ranking else None


def _equity_traces(phase: PhaseData) -> list[dict[str, Any]]:
    """The phase's best sets' curves: each window's first ranked container (in sample,
    or out of sample on a ``test`` window, kept in the in-sample order), each
    walk-forward window's test part and the stitched out-of-sample curve."""
    traces = []
    for window, agg in phase.aggregates.items():
        best = _best_container(agg)
        if best is not None:
            table = phase.equity.get((_wid(window), f"{best['container_id']}_equity"))
            if table is not None:
                sample = "out of sample" if window == "test" else "in sample"
                label = f"{window}: best, {sample} ({_params(best.get('parameters', {}))})"
                traces.append(_curve(label, table, "dash" if sample == "in sample" else "solid"))
        test = agg.get("test")
        if isinstance(test, Mapping):
            table = phase.equity.get((_wid(window), f"{test['container_id']}_equity"))
            if table is not None:
                label = f"{window}: train best on test, out of sample"
                traces.append(_curve(label, table))
    stitched = phase.equity.get((None, "oos_equity"))
    if stitched is not None:
        traces.append(_curve("out of sample, windows stitched", stitched))
    return traces


def _wid(window: str) -> Optional[str]:
    return None if window == "full" else window


def equity_section(data: RunData) -> Section:
    section = Section("equity", "Equity curves of the best sets")
    for phase in data.phases.values():
        traces = _equity_traces(phase)
        if traces:
            section.figures.append(
                {"data": traces, "layout": _layout(f"{phase.name}: equity", "time", "equity")}
            )
    if not section.figures:
        section.note = (
            "The run kept no equity curve of a best set in a file: trace PORTFOLIO_UPDATE "
            "(event_tracing) with a file or persisted data flow to keep them."
        )
    return section


# ------------------------------------------------------------------ heatmap


def _in_sample(phase: PhaseData) -> Optional[Mapping[str, Any]]:
    """The aggregate of the phase's in-sample search: the window with most containers
    that is not a test window."""
    candidates = [a for w, a in phase.aggregates.items() if w != "test" and a.get("ranking")]
    if phase.sequence == "monte_carlo" or not candidates:
        return None
    return max(candidates, key=lambda a: len(a["ranking"]))


def _varying(ranking: Sequence[Mapping[str, Any]]) -> list[str]:
    values: dict[str, set[str]] = {}
    for row in ranking:
        for k, v in (row.get("parameters") or {}).items():
            values.setdefault(k, set()).add(repr(v))
    return [k for k, seen in values.items() if len(seen) > 1]


def _axis(values: Iterable[Any]) -> list[Any]:
    unique = {repr(v): v for v in values}
    try:
        return sorted(unique.values())
    except TypeError:
        return sorted(unique.values(), key=repr)


def _heatmap(phase: PhaseData, agg: Mapping[str, Any], names: list[str]) -> Figure:
    a, b = names
    metric, _ = phase.objective
    ranking = agg["ranking"]
    xs = _axis(r["parameters"][a] for r in ranking)
    ys = _axis(r["parameters"][b] for r in ranking)
    z: list[list[Optional[float]]] = [[None] * len(xs) for _ in ys]
    xi = {repr(v): i for i, v in enumerate(xs)}
    yi = {repr(v): i for i, v in enumerate(ys)}
    for r in ranking:
        p = r["parameters"]
        z[yi[repr(p[b])]][xi[repr(p[a])]] = _num((r.get("metrics") or {}).get(metric))
    trace = {
        "type": "heatmap",
        "x": [str(v) for v in xs],
        "y": [str(v) for v in ys],
        "z": z,
        "colorscale": "Viridis",
        "colorbar": {"title": {"text": metric}},
        "hoverongaps": False,
    }
    title = f"{phase.name} ({agg.get('window_id', 'full')}): {metric} by {a} and {b}"
    layout = _layout(title, a, b)
    layout["xaxis"]["type"] = layout["yaxis"]["type"] = "category"
    return {"data": [trace], "layout": layout}


def heatmap_section(data: RunData) -> Section:
    section = Section("heatmap", "Parameter heatmap")
    for phase in data.phases.values():
        agg = _in_sample(phase)
        if agg is None:
            continue
        names = _varying(agg["ranking"])
        if len(names) == 2:
            section.figures.append(_heatmap(phase, agg, names))
    if not section.figures:
        section.note = "No phase searched a grid of exactly two varying parameters."
    return section


# ------------------------------------------------------------------ in vs out of sample


def _pairs(phase: PhaseData) -> list[tuple[float, float, str]]:
    """(in-sample, out-of-sample) objective values of the same parameter set."""
    metric, _ = phase.objective
    pairs = []
    train, test = phase.aggregates.get("train"), phase.aggregates.get("test")
    if train and test:
        by_id = {r["container_id"]: r for r in train.get("ranking") or []}
        for r in test.get("ranking") or []:
            ins = by_id.get(r["container_id"])
            if ins is None:
                continue
            x = _num(ins["metrics"].get(metric))
            y = _num(r["metrics"].get(metric))
            if x is not None and y is not None:
                pairs.append((x, y, _params(r.get("parameters", {}))))
    for window, agg in phase.aggregates.items():
        best, test_row = agg.get("best"), agg.get("test")
        if isinstance(best, Mapping) and isinstance(test_row, Mapping):
            x = _num((best.get("metrics") or {}).get(metric))
            y = _num((test_row.get("metrics") or {}).get(metric))
            if x is not None and y is not None:
                pairs.append((x, y, f"{window}: {_params(best.get('parameters', {}))}"))
    return pairs


def scatter_section(data: RunData) -> Section:
    section = Section("scatter", "In sample against out of sample")
    for phase in data.phases.values():
        pairs = _pairs(phase)
        if not pairs:
            continue
        metric, _ = phase.objective
        xs, ys, labels = zip(*pairs)
        lo, hi = min(*xs, *ys), max(*xs, *ys)
        traces = [
            {
                "type": "scatter",
                "mode": "markers",
                "name": "parameter sets",
                "x": list(xs),
                "y": list(ys),
                "text": list(labels),
                "marker": {"size": 10},
            },
            {
                "type": "scatter",
                "mode": "lines",
                "name": "out of sample = in sample",
                "x": [lo, hi],
                "y": [lo, hi],
                "line": {"dash": "dot", "color": "grey"},
            },
        ]
        title = f"{phase.name}: {metric} in sample against out of sample"
        layout = _layout(title, f"{metric}, in sample", f"{metric}, out of sample")
        section.figures.append({"data": traces, "layout": layout})
    if not section.figures:
        section.note = (
            "No phase ran the same parameter sets in and out of sample "
            "(train_test or walk_forward sequences do)."
        )
    return section


# ------------------------------------------------------------------ walk-forward


def _metric_of(rows: Sequence[Mapping[str, Any]], part: str, metric: str) -> list[Any]:
    """``metric`` of each row's ``part`` (``best``: in sample, ``test``: out of sample)."""
    return [_num(((w.get(part) or {}).get("metrics") or {}).get(metric)) for w in rows]


def walk_forward_section(data: RunData) -> Section:
    section = Section("walk_forward", "Walk-forward windows")
    for phase in data.phases.values():
        detail = phase.summary.get("windows_detail")
        if phase.sequence != "walk_forward" or not detail:
            continue
        metric, _ = phase.objective
        ids = [str(w.get("window_id")) for w in detail]
        params = [_params((w.get("best") or {}).get("parameters", {})) for w in detail]
        traces = [
            {
                "type": "bar",
                "name": name,
                "x": ids,
                "y": _metric_of(detail, part, metric),
                "hovertext": params,
            }
            for name, part in (("train (in sample)", "best"), ("test (out of sample)", "test"))
        ]
        title = f"{phase.name}: {metric} of each window's best set"
        layout = _layout(title, "window", metric, barmode="group")
        section.figures.append({"data": traces, "layout": layout})
    if not section.figures:
        section.note = "The run has no walk_forward phase."
    return section


# ------------------------------------------------------------------ Monte Carlo


def _simulations(phase: PhaseData) -> list[Mapping[str, Any]]:
    return [
        r.get("metrics") or {}
        for agg in phase.aggregates.values()
        for r in agg.get("ranking") or []
    ]


def monte_carlo_section(data: RunData) -> Section:
    section = Section("monte_carlo", "Monte Carlo distributions")
    for phase in data.phases.values():
        if phase.sequence != "monte_carlo":
            continue
        sims = _simulations(phase)
        metric, _ = phase.objective
        dist = phase.summary.get("distribution") or {}
        for name in dict.fromkeys((metric, *MC_METRICS)):
            values = [v for v in (_num(s.get(name)) for s in sims) if v is not None]
            if not values:
                continue
            shapes = [
                {
                    "type": "line",
                    "xref": "x",
                    "yref": "paper",
                    "x0": q,
                    "x1": q,
                    "y0": 0,
                    "y1": 1,
                    "line": {"dash": "dash", "color": "firebrick"},
                }
                for q in (_num((dist.get(name) or {}).get(p)) for p in ("p5", "p50", "p95"))
                if q is not None
            ]
            trace = {"type": "histogram", "name": name, "x": values, "nbinsx": 40}
            title = f"{phase.name}: {name} over {len(values)} simulations (p5, p50, p95 dashed)"
            layout = _layout(title, name, "simulations", shapes=shapes, showlegend=False)
            section.figures.append({"data": [trace], "layout": layout})
    if not section.figures:
        section.note = "The run has no monte_carlo phase."
    return section


# ------------------------------------------------------------------ memory timeline


def _mib(value: Any) -> Optional[float]:
    n = _num(value)
    return None if n is None else n / 2**20


def memory_section(data: RunData) -> Section:
    section = Section("memory", "Memory and spills over the run")
    samples = [
        (name, s)
        for name, phase in data.phases.items()
        for s in phase.summary.get("memory_timeline") or []
        if _num(s.get("t")) is not None
    ]
    if not samples:
        section.note = "The run recorded no memory timeline (its phases' phase_summary.json)."
        return section
    samples.sort(key=lambda p: p[1]["t"])
    x = [datetime.fromtimestamp(s["t"], UTC).isoformat() for _, s in samples]
    text = [f"{name} / {s.get('window') or '-'}" for name, s in samples]

    def line(label: str, key: str, axis: str = "y", dash: str = "solid") -> dict[str, Any]:
        return {
            "type": "scatter",
            "mode": "lines+markers",
            "name": label,
            "x": x,
            "y": [_mib(s.get(key)) for _, s in samples],
            "text": text,
            "yaxis": axis,
            "line": {"dash": dash, "shape": "hv"},
        }

    traces = [
        line("in memory (stores)", "bytes_in_memory"),
        line("spilled (total)", "spilled_bytes"),
    ]
    if any(s.get("budget_bytes") is not None for _, s in samples):
        traces.append(line("budget", "budget_bytes", dash="dot"))
    if any(s.get("reloaded_bytes") for _, s in samples):
        traces.append(line("reloaded (total)", "reloaded_bytes", dash="dash"))
    if any(s.get("rss_bytes") is not None for _, s in samples):
        traces.append(line("process resident memory", "rss_bytes", axis="y2", dash="dashdot"))
    layout = _layout("stores' memory, spills and the process's resident memory", "time", "MiB")
    layout["yaxis2"] = {"title": {"text": "resident MiB"}, "overlaying": "y", "side": "right"}
    section.figures.append({"data": traces, "layout": layout})
    return section


SECTIONS: tuple[Callable[[RunData], Section], ...] = (
    equity_section,
    heatmap_section,
    scatter_section,
    walk_forward_section,
    monte_carlo_section,
    memory_section,
)
"""The sections of a report, in the order they appear."""


def build_sections(data: RunData) -> list[Section]:
    return [make(data) for make in SECTIONS]


__all__ = ["SECTIONS", "Figure", "Section", "build_sections"]
