"""A ``topology: stream`` phase: runs its DAG (``dag:``) to completion and stores what
each sink returned as a catalogued item of the phase:

* an Arrow table (``sink_<id>.arrow``) when the sink returned a table, record batches, or
  a list of dict rows Arrow can type (``collect`` of dicts);
* JSON otherwise (``sink_<id>.json``: ``{"sink": id, "result": ...}``): lists, numbers,
  the description ``ipc_sink`` returns. Dataclasses and named tuples become mappings;
  an object with no JSON form is stored as its ``str()`` and a warning names the sink.

``phase_summary.json`` lists each sink's item (``sinks``: uri, format, rows or items).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Optional

import pyarrow as pa

from phasekit.errors import ConfigError
from phasekit.workflow.phase import Observer, PhaseOutcome
from phasekit.workflow.results import PhaseResults, jsonable

if TYPE_CHECKING:
    from phasekit.config.resolved import ResolvedPhase
    from phasekit.stream import Dag

log = logging.getLogger(__name__)

SINK_PREFIX = "sink_"
"""Entity names of the sinks' items: ``sink_<node id>``."""


def build_dag(phase: ResolvedPhase, bindings: Optional[Mapping[str, Any]] = None) -> Dag:
    """The phase's DAG from its ``dag:`` description (``bindings``: extra node types)."""
    from phasekit.stream import Dag

    if not phase.params.dag:
        raise ConfigError(f"phases.{phase.name}: topology 'stream' needs a `dag:` description")
    return Dag.from_spec(phase.params.dag, bindings=bindings)


def run(
    phase: ResolvedPhase,
    dag: Dag,
    out: PhaseResults,
    observer: Observer,
    extra: Optional[Callable[[], Mapping[str, Any]]] = None,
) -> PhaseOutcome:
    """Run ``dag`` for ``phase``; store each sink's result and the phase summary (with
    the entries ``extra()`` returns after the run)."""
    outcome = PhaseOutcome(phase.name, phase.sequence)
    observer.phase_started(phase.name, 1, len(dag.nodes))
    result = dag.run()
    observer.containers_done(phase.name, len(dag.nodes))
    outcome.windows, outcome.containers = ["full"], len(dag.nodes)
    sinks = {sink: store_sink(out, sink, value) for sink, value in result.results.items()}
    outcome.files.update({f"{SINK_PREFIX}{s}": info["uri"] for s, info in sinks.items()})
    for sink, info in sinks.items():
        size = {k: info[k] for k in ("rows", "items") if k in info}
        outcome.report(
            "sink", f"the results of sink {sink}", {"parameters": {"sink": sink, **size}}
        )
    outcome.summary = {
        "phase": phase.name,
        "topology": "stream",
        "dag": result.dag,
        "elapsed": result.elapsed,
        "stopped": result.stopped,
        "nodes": result.nodes,
        "queues": result.queues,
        "sinks": sinks,
        **(extra() if extra else {}),
    }
    outcome.files["phase_summary"] = out.write_json(None, "phase_summary", outcome.summary)
    return outcome


def store_sink(out: PhaseResults, sink: str, value: Any) -> dict[str, Any]:
    """Store one sink's result; returns its uri, format and size (rows or items)."""
    name = f"{SINK_PREFIX}{sink}"
    table = as_table(value)
    if table is not None:
        uri = out.write_table(None, name, table)
        return {"uri": uri, "format": "arrow", "rows": table.num_rows}
    plain = plain_value(value, sink)
    uri = out.write_json(None, name, {"sink": sink, "result": plain})
    size = len(plain) if isinstance(plain, (list, dict)) else 1
    return {"uri": uri, "format": "json", "items": size}


def as_table(value: Any) -> Optional[pa.Table]:
    """``value`` as an Arrow table, when it is one (a table, batches, dict rows)."""
    if isinstance(value, pa.Table):
        return value
    if isinstance(value, pa.RecordBatch):
        return pa.Table.from_batches([value])
    if not isinstance(value, list) or not value:
        return None
    if all(isinstance(v, pa.RecordBatch) for v in value):
        return pa.Table.from_batches(value)
    if all(isinstance(v, pa.Table) for v in value):
        return pa.concat_tables(value)
    if all(isinstance(v, Mapping) for v in value):
        try:
            return pa.Table.from_pylist([dict(v) for v in value])
        except (pa.ArrowException, TypeError, ValueError):
            return None  # mixed or nested values Arrow cannot type: kept as JSON
    return None


def plain_value(value: Any, sink: str) -> Any:
    """``value`` as JSON values (see the module docstring)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return jsonable(value)
    if isinstance(value, Mapping):
        return {str(k): plain_value(v, sink) for k, v in value.items()}
    if isinstance(value, tuple) and hasattr(value, "_asdict"):
        return plain_value(value._asdict(), sink)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return plain_value(
            {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}, sink
        )
    if isinstance(value, (list, tuple)):
        return [plain_value(v, sink) for v in value]
    if isinstance(value, (pa.Table, pa.RecordBatch)):
        return plain_value(value.to_pylist(), sink)
    if hasattr(value, "item") and not isinstance(value, (bytes, bytearray)):
        try:
            return jsonable(value.item())
        except (TypeError, ValueError):
            pass
    log.warning(
        "stream sink %r returned a %s, which has no JSON form; stored as its str()",
        sink,
        type(value).__name__,
    )
    return str(value)
