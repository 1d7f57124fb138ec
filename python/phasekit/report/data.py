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
    """Everything the report shows of run ``run_id`` (see the module docstring): its
    phases' summaries and aggregates, then only the equity items of their best sets (a
    run's thousands of container rows are never listed)."""
    run = resolve(catalog, run_id)
    reader = _Reader(catalog, run.process_id)
    items = [i for entity in SUMMARIES for i in reader.items(entity)]
    phases: dict[str, PhaseData] = {}
    for item in sorted(items, key=lambda i: i.id):
        phase = phases.setdefault(item.stage_name, PhaseData(item.stage_name))
        value = reader.load(item)
        if not isinstance(value, Mapping):
            continue
        if item.entity_name == "phase_summary":
            phase.summary = dict(value)
        else:
            phase.aggregates[item.window_id or "full"] = dict(value)
    for phase in phases.values():
        tables: dict[Optional[str], Optional[pa.Table]] = {}
        for window, entity in equity_wanted(phase):
            for item in reader.items(entity, phase.name):
                if item.window_id != window:
                    continue
                table = reader.load(item)
                if isinstance(table, pa.Table) and {"ts", "equity"} <= set(table.column_names):
                    phase.equity[(window, entity)] = table
            if (window, entity) not in phase.equity and entity != "oos_equity":
                if window not in tables:
                    tables[window] = _window_equity(reader, phase.name, window)
                curve = _curve_of(tables[window], entity.removesuffix("_equity"))
                if curve is not None:
                    phase.equity[(window, entity)] = curve
    return RunData(run, catalog.url, phases, reader.unreadable)


def _window_equity(reader: _Reader, phase: str, window: Optional[str]) -> Optional[pa.Table]:
    """A block window's ``equity`` table (``container_id``, ``ts``, ``equity``), if any."""
    for item in reader.items("equity", phase):
        if item.window_id == window:
            table = reader.load(item)
            if isinstance(table, pa.Table) and {"container_id", "ts", "equity"} <= set(
                table.column_names
            ):
                return table
    return None


def _curve_of(table: Optional[pa.Table], container_id: str) -> Optional[pa.Table]:
    """One container's curve (``ts``, ``equity``) from a window's ``equity`` table."""
    if table is None:
        return None
    import pyarrow.compute as pc

    mine = table.filter(pc.equal(table.column("container_id"), container_id))
    return mine.select(["ts", "equity"]) if mine.num_rows else None


SUMMARIES = ("phase_summary", "aggregate_results")
"""The entities read for every phase."""


def equity_wanted(phase: PhaseData) -> list[tuple[Optional[str], str]]:
    """(window id, entity) of the equity curves the report draws: each window's first
    ranked container, each walk-forward window's test container, the stitched curve."""
    wanted: list[tuple[Optional[str], str]] = [(None, "oos_equity")]
    for window, agg in phase.aggregates.items():
        wid = None if window == "full" else window
        ranking = agg.get("ranking") or []
        for row in (ranking[0] if ranking else None, agg.get("test")):
            if isinstance(row, Mapping) and row.get("container_id"):
                wanted.append((wid, f"{row['container_id']}_equity"))
    return wanted


class _Reader:
    """Lists a run's present items and loads them, counting those it cannot load."""

    def __init__(self, catalog: Catalog, run_id: str) -> None:
        self.catalog, self.run_id = catalog, run_id
        self.unreadable = 0

    def items(self, entity: str, stage: Optional[str] = None) -> list[ItemRow]:
        return self.catalog.list_items(self.run_id, stage=stage, entity=entity, states=("present",))

    def load(self, item: ItemRow) -> Any:
        try:
            return _load(self.catalog, item)
        except (PhasekitError, OSError, ValueError, pa.ArrowException) as exc:
            log.info("report: %s is left out: %s", item.label, exc)
            self.unreadable += 1
            return None


def open_source(source: CatalogSource) -> tuple[Catalog, bool]:
    """The catalog of ``source`` and whether the caller opened it (and closes it)."""
    if isinstance(source, Catalog):
        return source, False
    text = os.fspath(source)
    return open_catalog(text or default_location(), create=False), True


__all__ = ["LIST_RUNS", "CatalogSource", "PhaseData", "RunData", "open_source", "read_run"]
