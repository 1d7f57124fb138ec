"""What a report shows, read from the catalog: the run's row and, per phase, its
summary, its windows' aggregates and the equity curves it kept in files.

Everything is found through the catalog's rows (``list_items``) and loaded through the
workflow's reader (:class:`phasekit.workflow.LazyRef`), which verifies each file's size
and checksum and keeps paths under the results folder; nothing is looked up by guessing
a path. An item that cannot be loaded (an in-memory item of a finished run, a damaged
file) is left out and counted in :attr:`RunData.unreadable`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Optional, Union

import pyarrow as pa

from phasekit.catalog import Catalog, ItemRow, ProcessRow, default_location, open_catalog
from phasekit.errors import PhasekitError, UnknownKey
from phasekit.workflow import LazyRef

log = logging.getLogger(__name__)

CatalogSource = Union[Catalog, str, "os.PathLike[str]"]
"""An open catalog, or where one is: a results folder, a catalog file or a URL."""

LIST_RUNS = "phasekit runs"
"""The command that lists the runs of a catalog (named in the error for a bad run id)."""


@dataclass
class PhaseData:
    """One phase of a run as the report needs it."""

    name: str
    summary: dict[str, Any] = field(default_factory=dict)
    aggregates: dict[str, dict[str, Any]] = field(default_factory=dict)
    """window id (``full`` for a phase-level one) -> its ``aggregate_results``"""
    equity: dict[tuple[Optional[str], str], pa.Table] = field(default_factory=dict)
    """(window id, entity) -> an equity table (``ts``, ``equity``) kept in a file"""

    @property
    def sequence(self) -> str:
        return str(self.summary.get("sequence") or "")

    @property
    def objective(self) -> tuple[str, str]:
        """The objective's metric and direction (from the phase's aggregates)."""
        for agg in self.aggregates.values():
            obj = agg.get("objective") or {}
            if obj.get("name"):
                return str(obj["name"]), str(obj.get("direction") or "maximize")
        return "sharpe_ratio", "maximize"


@dataclass
class RunData:
    """A run's row and its phases in the order they stored their first item."""

    run: ProcessRow
    catalog_url: str
    phases: dict[str, PhaseData]
    unreadable: int = 0


def _is_equity(item: ItemRow) -> bool:
    kind = (item.metadata or {}).get("output_type")
    return kind == "equity_curves" or item.entity_name == "oos_equity"


def _wanted(item: ItemRow) -> bool:
    return item.entity_name in ("phase_summary", "aggregate_results") or _is_equity(item)


def _load(catalog: Catalog, item: ItemRow) -> Any:
    ref = LazyRef(
        item.entity_name,
        item.data_reference,
        item.window_id,
        item.format,
        item.size_bytes,
        catalog,
        item,
    )
    return ref.load()


def resolve(catalog: Catalog, run_id: str) -> ProcessRow:
    """The run ``run_id`` (or ``latest``); UnknownKey naming it and how to list runs."""
    try:
        return catalog.resolve_run(run_id)
    except UnknownKey:
        raise UnknownKey(
            f"report: run {run_id!r} is not in catalog {catalog.url}; "
            f"list the runs with `{LIST_RUNS}` (add --results-dir or --catalog as here)"
        ) from None


def read_run(catalog: Catalog, run_id: str) -> RunData:
    """Everything the report shows of run ``run_id`` (see the module docstring)."""
    run = resolve(catalog, run_id)
    phases: dict[str, PhaseData] = {}
    unreadable = 0
    for item in catalog.list_items(run.process_id, states=("present",)):
        phase = phases.setdefault(item.stage_name, PhaseData(item.stage_name))
        if not _wanted(item):
            continue
        try:
            value = _load(catalog, item)
        except (PhasekitError, OSError, ValueError, pa.ArrowException) as exc:
            log.info("report: %s is left out: %s", item.label, exc)
            unreadable += 1
            continue
        _place(phase, item, value)
    return RunData(run, catalog.url, phases, unreadable)


def _place(phase: PhaseData, item: ItemRow, value: Any) -> None:
    if item.entity_name == "phase_summary" and isinstance(value, Mapping):
        phase.summary = dict(value)
    elif item.entity_name == "aggregate_results" and isinstance(value, Mapping):
        phase.aggregates[item.window_id or "full"] = dict(value)
    elif isinstance(value, pa.Table) and {"ts", "equity"} <= set(value.column_names):
        phase.equity[(item.window_id, item.entity_name)] = value


def open_source(source: CatalogSource) -> tuple[Catalog, bool]:
    """The catalog of ``source`` and whether the caller opened it (and closes it)."""
    if isinstance(source, Catalog):
        return source, False
    text = os.fspath(source)
    return open_catalog(text or default_location(), create=False), True


__all__ = ["LIST_RUNS", "CatalogSource", "PhaseData", "RunData", "open_source", "read_run"]
