"""One self-contained HTML page from a run's sections: Plotly's JavaScript bundle is
inlined, the figures are JSON in the page, and nothing is fetched from anywhere (no
``src`` or ``href`` to another address, no Plotly links, MathJax off)."""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from typing import Any

from phasekit._optional import require
from phasekit.report.data import RunData
from phasekit.report.sections import Section

FEATURE = "phasekit report"

PLOT_CONFIG = {
    "displaylogo": False,
    "showLink": False,
    "showSendToCloud": False,
    "responsive": True,
    "typesetMath": False,
}
"""Plotly options: no links to plotly's site, no MathJax."""

STYLE = """
body { font-family: system-ui, sans-serif; margin: 0 auto; max-width: 1200px;
       padding: 1em 2em; color: #222; background: #fff; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; }
table { border-collapse: collapse; margin: .5em 0 1em; }
td, th { border: 1px solid #ddd; padding: .25em .6em; text-align: left; }
th { background: #f4f4f4; } .note { color: #666; font-style: italic; }
.chart { min-height: 420px; margin-bottom: 1em; }
"""


def plotly_js() -> str:
    """Plotly's JavaScript bundle, from the installed ``plotly`` package."""
    plotly = require("plotly", feature=FEATURE)
    offline = __import__(f"{plotly.__name__}.offline", fromlist=["get_plotlyjs"])
    return str(offline.get_plotlyjs())


def script_json(value: Any) -> str:
    """JSON safe inside a ``<script>`` element (no ``<``, ``>`` or ``&`` left as such)."""
    text = json.dumps(value, allow_nan=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _summary_table(data: RunData) -> str:
    run = data.run
    rows = [
        ("run", run.process_id),
        ("name", run.run_name or ""),
        ("workflow", run.workflow),
        ("status", run.status),
        ("backend", run.backend or ""),
        ("started", str(run.started_at)),
        ("finished", str(run.finished_at or "")),
        ("catalog", data.catalog_url),
    ]
    body = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in rows)
    return f"<table>{body}</table>"


def _phase_table(data: RunData) -> str:
    head = ("phase", "sequence", "data flow", "windows", "containers", "seconds", "best")
    rows = []
    for name, phase in data.phases.items():
        s = phase.summary
        best = s.get("best") or {}
        metric, _ = phase.objective
        value = (best.get("metrics") or {}).get(metric)
        cells = (
            name,
            s.get("sequence", ""),
            s.get("data_flow", ""),
            len(s.get("windows") or []),
            s.get("containers", ""),
            s.get("seconds", ""),
            f"{metric} {value:.4g}" if isinstance(value, (int, float)) else "",
        )
        rows.append("".join(f"<td>{html.escape(str(c))}</td>" for c in cells))
    header = "".join(f"<th>{h}</th>" for h in head)
    body = "".join(f"<tr>{r}</tr>" for r in rows)
    return f"<table><tr>{header}</tr>{body}</table>"


def _section_html(section: Section, first_id: int) -> tuple[str, list[str]]:
    parts = [f'<section id="{section.key}"><h2>{html.escape(section.title)}</h2>']
    scripts = []
    if section.note:
        parts.append(f'<p class="note">{html.escape(section.note)}</p>')
    for i, fig in enumerate(section.figures, start=first_id):
        div = f"chart-{i}"
        parts.append(f'<div class="chart" id="{div}" data-traces="{len(fig["data"])}"></div>')
        scripts.append(
            f'Plotly.newPlot("{div}",{script_json(fig["data"])},'
            f"{script_json(fig['layout'])},{script_json(PLOT_CONFIG)});"
        )
    parts.append("</section>")
    return "".join(parts), scripts


def page(data: RunData, sections: Sequence[Section]) -> str:
    """The report page of ``data`` with ``sections``."""
    body, scripts, next_id = [], [], 0
    for section in sections:
        text, more = _section_html(section, next_id)
        body.append(text)
        scripts.extend(more)
        next_id += len(section.figures)
    unreadable = (
        f'<p class="note">{data.unreadable} stored item(s) could not be read and are left out '
        "(in-memory items of a finished run, or damaged files).</p>"
        if data.unreadable
        else ""
    )
    title = html.escape(f"phasekit report: {data.run.process_id}")
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
        "script-src 'unsafe-inline' 'unsafe-eval'; style-src 'unsafe-inline'; "
        'img-src data: blob:; font-src data:">'
        f"<title>{title}</title><style>{STYLE}</style>"
        f"<script>{plotly_js()}</script></head><body>"
        f"<h1>{title}</h1>{_summary_table(data)}<h2>Phases</h2>{_phase_table(data)}{unreadable}"
        f"{''.join(body)}<script>{''.join(scripts)}</script></body></html>\n"
    )


__all__ = ["FEATURE", "page", "plotly_js", "script_json"]
