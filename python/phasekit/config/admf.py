"""The configuration vocabulary of the design notes' source project (ADMF-PC), as models.

Each block here is read by :func:`phasekit.config.layers.flatten` into phasekit's own
settings (docs/migration.md, "Configuration vocabulary"): the ``results:`` block (and a
phase's ``results_override``), the ``execution:`` block with ``trace_settings``,
``trace_level`` presets and a container's ``metrics:``. A key phasekit has no
counterpart for is refused by its validator with a message saying what to write
instead; nothing is accepted and ignored.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Annotated, Any, NoReturn, Optional, Union

from pydantic import PlainValidator

from phasekit.config.fields import (
    Bool,
    MegaBytes,
    Model,
    Pattern,
    PositiveInt,
    check_event_kind,
    check_text,
    choice,
    fail,
    is_import_spec,
    string_list,
    unsupported,
)
from phasekit.config.vocab import (
    FORMATS,
    RETENTION_POLICIES,
    TOPOLOGIES,
    choice_message,
    show,
)
from phasekit.registry import RESULTS_LAYOUTS


def refused(instead: str) -> Callable[[Any], NoReturn]:
    """A key phasekit does not support: its validator always fails with ``instead``."""

    def check(value: Any) -> NoReturn:
        unsupported(f"not supported by phasekit: {instead}")

    return check


def true_only(what: str) -> Callable[[Any], bool]:
    """A switch whose only phasekit behaviour is on: ``true`` is accepted, ``false`` is
    refused with ``what`` (the behaviour that cannot be switched off)."""

    def check(value: Any) -> bool:
        if value is not True:
            unsupported(f"{show(value)} is not supported: {what}; write true or remove the key")
        return True

    return check


# ----------------------------------------------------------------------------- results

#: ``results.memory.storage_mode`` -> ``data_flow.mode``.
STORAGE_MODES: Mapping[str, str] = MappingProxyType(
    {"auto": "hybrid", "memory": "memory", "disk": "file"}
)

STREAMING_ONLY = "phasekit always computes metrics while events stream"
NO_TRACE_FILES = (
    "phasekit writes no event trace files; a run's results and catalog hold what it "
    "keeps (docs/catalog.md); remove the key"
)


class ResultsCollection(Model):
    """``results.collection``."""

    streaming_metrics: Optional[Annotated[bool, PlainValidator(true_only(STREAMING_ONLY))]] = None
    store_trades: Optional[Bool] = None
    store_equity_curve: Optional[Bool] = None
    store_container_items: Optional[Bool] = None
    snapshot_interval: Optional[PositiveInt] = None
    max_equity_points: Optional[
        Annotated[Any, PlainValidator(refused("phasekit keeps every equity point; remove the key"))]
    ] = None
    trade_summary_only: Optional[
        Annotated[
            Any,
            PlainValidator(
                refused(
                    "trades are one row each in all_trades; write store_trades: false to keep none"
                )
            ),
        ]
    ] = None
    store_order_book: Optional[
        Annotated[Any, PlainValidator(refused("phasekit keeps no order book; remove the key"))]
    ] = None
    store_signals: Optional[
        Annotated[Any, PlainValidator(refused("phasekit stores no signals; remove the key"))]
    ] = None


def _storage_format(value: Any) -> str:
    if not isinstance(value, str) or value not in FORMATS:
        fail(choice_message(value, FORMATS))
    return value


def _compress(value: Any) -> bool:
    """``compress: false`` is compression none; ``true`` names no codec."""
    if value is not False:
        unsupported(
            f"{show(value)} is not supported: name the codec instead, in "
            "data_flow.file_settings.compression (arrow: lz4, zstd; parquet: snappy, zstd, "
            "gzip, lz4, brotli), or write compress: false for none"
        )
    return False


class ResultsStorage(Model):
    """``results.storage``."""

    format: Optional[Annotated[str, PlainValidator(_storage_format)]] = None
    compress: Optional[Annotated[bool, PlainValidator(_compress)]] = None
    partition_by: Optional[Annotated[list[str], PlainValidator(string_list(check_text))]] = None
    location: Optional[
        Annotated[
            Any,
            PlainValidator(
                refused(
                    "results go to <results_dir>/<run>/<phase>/ (with results.layout: admf, "
                    "<results_dir>/<run name>/<phase>/); write results_dir instead"
                )
            ),
        ]
    ] = None


class ResultsMemory(Model):
    """``results.memory``."""

    global_limit_mb: Optional[MegaBytes] = None
    storage_mode: Optional[Annotated[str, PlainValidator(choice(tuple(STORAGE_MODES)))]] = None
    memory_threshold_mb: Optional[
        Annotated[
            Any,
            PlainValidator(
                refused(
                    "phasekit's hybrid mode spills by one budget; write memory.global_limit_mb "
                    "(data_flow.memory_limit_mb) instead"
                )
            ),
        ]
    ] = None


class ResultsBlock(Model):
    """The ``results:`` block (a phase's ``results_override``, a container's ``results``)."""

    layout: Optional[Annotated[str, PlainValidator(choice(RESULTS_LAYOUTS))]] = None
    retention_policy: Optional[Annotated[str, PlainValidator(choice(RETENTION_POLICIES))]] = None
    max_events: Optional[PositiveInt] = None
    sliding_window_size: Optional[PositiveInt] = None
    results_storage: Optional[Annotated[str, PlainValidator(choice(("memory", "disk")))]] = None
    streaming_metrics: Optional[Annotated[bool, PlainValidator(true_only(STREAMING_ONLY))]] = None
    collection: Optional[ResultsCollection] = None
    storage: Optional[ResultsStorage] = None
    memory: Optional[ResultsMemory] = None
    output_dir: Optional[
        Annotated[Any, PlainValidator(refused("write results_dir (a run-wide folder) instead"))]
    ] = None
    results_dir: Optional[
        Annotated[Any, PlainValidator(refused("write results_dir at the top level instead"))]
    ] = None
    save_trades: Optional[
        Annotated[Any, PlainValidator(refused("write results.collection.store_trades instead"))]
    ] = None
    save_equity_curve: Optional[
        Annotated[
            Any, PlainValidator(refused("write results.collection.store_equity_curve instead"))
        ]
    ] = None
    save_metrics: Optional[
        Annotated[
            Any,
            PlainValidator(
                refused(
                    "every container's metrics are always written (output container_results); remove the key"
                )
            ),
        ]
    ] = None


# ------------------------------------------------------------------------------ tracing


#: ``trace_level`` presets: what each sets, from the source project's presets for its
#: portfolio containers (``none``, ``minimal``, ``normal``, ``debug``) and the event
#: kinds of its per-container levels (``metrics``, ``trades``, ``equity``, ``full``).
TRACE_LEVELS: Mapping[str, Mapping[str, Any]] = MappingProxyType(
    {
        "none": {"event_tracing": ()},
        "minimal": {
            "retention_policy": "trade_complete",
            "output.trades": False,
            "output.equity_curves": False,
        },
        "normal": {
            "retention_policy": "trade_complete",
            "output.trades": True,
            "output.equity_curves": True,
            "snapshot_interval": 100,
        },
        "debug": {
            "retention_policy": "sliding_window",
            "sliding_window_size": 50_000,
            "output.trades": True,
            "output.equity_curves": True,
            "snapshot_interval": 10,
        },
        "metrics": {"event_tracing": ("PORTFOLIO_UPDATE", "POSITION_CLOSE")},
        "trades": {
            "event_tracing": ("PORTFOLIO_UPDATE", "POSITION_OPEN", "POSITION_CLOSE", "FILL")
        },
        "equity": {
            "event_tracing": (
                "PORTFOLIO_UPDATE",
                "POSITION_OPEN",
                "POSITION_CLOSE",
                "FILL",
                "ORDER",
            )
        },
        "full": {"retention_policy": "keep_all"},
    }
)


def _trace_level(value: Any) -> str:
    if not isinstance(value, str) or value.lower() not in TRACE_LEVELS:
        fail(choice_message(value, TRACE_LEVELS))
    return value.lower()


TraceLevel = Annotated[str, PlainValidator(_trace_level)]


EventList = Annotated[list[str], PlainValidator(string_list(check_event_kind, False))]
RetentionPolicy = Annotated[str, PlainValidator(choice(RETENTION_POLICIES))]


class ContainerTrace(Model):
    """One pattern of ``execution.trace_settings.container_settings``."""

    enabled: Optional[Bool] = None
    max_events: Optional[PositiveInt] = None
    retention_policy: Optional[RetentionPolicy] = None
    trace_level: Optional[TraceLevel] = None
    save_to_disk: Optional[Annotated[Any, PlainValidator(refused(NO_TRACE_FILES))]] = None


class TraceSettings(Model):
    """``execution.trace_settings``."""

    max_events: Optional[PositiveInt] = None
    retention_policy: Optional[Annotated[str, PlainValidator(choice(RETENTION_POLICIES))]] = None
    events_to_trace: Optional[EventList] = None
    trace_dir: Optional[Annotated[Any, PlainValidator(refused(NO_TRACE_FILES))]] = None
    storage_backend: Optional[Annotated[Any, PlainValidator(refused(NO_TRACE_FILES))]] = None
    persist_to_disk: Optional[Annotated[Any, PlainValidator(refused(NO_TRACE_FILES))]] = None
    batch_size: Optional[Annotated[Any, PlainValidator(refused(NO_TRACE_FILES))]] = None
    auto_flush_on_cleanup: Optional[Annotated[Any, PlainValidator(refused(NO_TRACE_FILES))]] = None
    use_sparse_storage: Optional[Annotated[Any, PlainValidator(refused(NO_TRACE_FILES))]] = None
    storage: Optional[Annotated[Any, PlainValidator(refused(NO_TRACE_FILES))]] = None
    enable_console_output: Optional[
        Annotated[Any, PlainValidator(refused("phasekit logs through `logging`; remove the key"))]
    ] = None
    console_filter: Optional[
        Annotated[Any, PlainValidator(refused("phasekit logs through `logging`; remove the key"))]
    ] = None
    trace_specific: Optional[
        Annotated[
            Any,
            PlainValidator(
                refused(
                    "write containers: {<pattern>: {event_tracing: [...]}} for the containers to trace"
                )
            ),
        ]
    ] = None
    container_settings: Optional[dict[Pattern, ContainerTrace]] = None


class ExecutionBlock(Model):
    """The ``execution:`` block: design note 002's tracing keys, its switch and presets."""

    event_tracing: Optional[EventList] = None
    retention_policy: Optional[RetentionPolicy] = None
    sliding_window_size: Optional[PositiveInt] = None
    enable_event_tracing: Optional[Bool] = None
    trace_level: Optional[TraceLevel] = None
    trace_settings: Optional[TraceSettings] = None


class MetricsBlock(Model):
    """A container's ``metrics:`` block."""

    enabled: Optional[
        Annotated[bool, PlainValidator(true_only("portfolio containers always compute metrics"))]
    ] = None
    annualization_factor: Optional[
        Annotated[
            Any,
            PlainValidator(
                refused(
                    "Sharpe and Sortino are annualised with the phase's data.periods_per_year; "
                    "write that instead"
                )
            ),
        ]
    ] = None


#: Top-level sections of the source project's configurations that are not about results
#: or tracing, and what phasekit has instead; a file with one is refused in one line.
FOREIGN_SECTIONS: Mapping[str, str] = MappingProxyType(
    {
        "strategies": "one strategy type per phase: write strategy: {type: ...} and "
        "parameter_space:",
        "classifiers": "phasekit has no regime classifiers",
        "risk": "phasekit's sizing is portfolio: {fraction, whole_units}",
        "risk_profiles": "phasekit's sizing is portfolio: {fraction, whole_units}",
        "features": "strategies compute their own indicators",
        "feature_config": "strategies compute their own indicators",
        "feature_configs": "strategies compute their own indicators",
        "symbols": "write data: {symbols: [...]}",
        "timeframes": "write data: {frequency: ...}",
        "timeframe": "write data: {frequency: ...}",
        "data_source": "write data: {source: synthetic | file, path: ...}",
        "data_dir": "write data: {source: file, path: ...}",
        "start_date": "write data: {start: ...}",
        "end_date": "write data: {end: ...}",
        "max_bars": "write data: {n_bars: ...}",
        "signal_filters": "phasekit has no signal filters",
        "signal_persistence": "phasekit stores no signals",
        "optimization": "write parameter_space: and objective_function:",
        "backtest": "write phases: [{name, sequence, topology: backtest}]",
        "mode": "write phases: [{name, sequence, topology: backtest}]",
        "topology": "phasekit's topologies are backtest, analysis and stream, set per "
        "phase: write phases: [{name, topology}]",
        "initial_capital": "write portfolio: {initial_capital: ...}",
        "dataset": "write data_split: or walk_forward:",
        "split_ratio": "write data_split:",
        "metadata": "write description: or run_name:",
        "name": "write run_name:",
        "parameter_grid": "write parameter_space:",
        "strategy_template": "write strategy: {type: ...} and parameter_space:",
    }
)


#: Renamed keys: named only when a file has no section of :data:`FOREIGN_SECTIONS` that
#: phasekit lacks outright.
RENAMED = (
    "symbols",
    "timeframes",
    "timeframe",
    "data_source",
    "data_dir",
    "start_date",
    "end_date",
    "max_bars",
    "initial_capital",
    "split_ratio",
    "metadata",
    "name",
)
#: Keys of phasekit's ``data`` the source project writes otherwise.
FOREIGN_DATA = {
    "start_date": "write data: {start: ...}",
    "end_date": "write data: {end: ...}",
    "sources": "write data: {symbols: [...]}",
}


#: phasekit sections the source project writes in another shape: the type it uses
#: there and what to write instead.
FOREIGN_SHAPES: Mapping[str, tuple[type, str]] = MappingProxyType(
    {
        "workflow": (dict, "write workflow: <name> and phases: [...] at the top level"),
        "phases": (dict, "write phases: as a list of {name: ..., ...}"),
        "strategy": (list, "one strategy per phase: write strategy: {type: ..., <param>: ...}"),
        "data": (str, "write data: {symbols: [...], source: synthetic | file, path: ...}"),
    }
)


@dataclass(frozen=True)
class Unsupported:
    """A section of a configuration phasekit does not support: where (``path``, as
    ``phases[0]`` or ``results.storage.location``) and what phasekit offers instead."""

    path: tuple[Union[str, int], ...]
    reason: str
    line: Optional[int] = None

    @property
    def where(self) -> str:
        from phasekit.config.messages import format_path

        return format_path(self.path)

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.where, "reason": self.reason, "line": self.line}


def _foreign_topology(phase: Any) -> Optional[str]:
    """A phase entry's topology when it names one phasekit does not have."""
    if not isinstance(phase, Mapping):
        return None
    topology = phase.get("topology")
    if not isinstance(topology, str) or topology in TOPOLOGIES or is_import_spec(topology):
        return None
    return topology


def foreign_phases(data: Mapping[str, Any]) -> list[Unsupported]:
    """The ``phases`` entries whose topology is the source project's (``signal_generation``,
    ``signal_replay``, ...), not one of phasekit's."""
    phases = data.get("phases")
    if not isinstance(phases, list):
        return []
    found = []
    for index, phase in enumerate(phases):
        topology = _foreign_topology(phase)
        if topology is not None:
            name = phase.get("name")
            label = f" ({name})" if isinstance(name, str) else ""
            found.append(
                Unsupported(
                    ("phases", index),
                    f"phase{label}: topology {topology!r} is not one of phasekit's "
                    f"({', '.join(TOPOLOGIES)}); the phase is not shown, nor named in "
                    "others' depends_on",
                )
            )
    overrides = data.get("phase_overrides")
    if found and isinstance(overrides, Mapping):
        dropped = {phases[int(f.path[1])].get("name") for f in found}
        found += [
            Unsupported(("phase_overrides", key), f"the phase {key!r} is set aside (its topology)")
            for key in overrides
            if key in dropped
        ]
    return found


def unsupported_sections(data: Mapping[str, Any]) -> list[Unsupported]:
    """Every section of the source project's that phasekit has no counterpart for, in the
    order of :func:`foreign_section`'s preference, then phases with the source project's
    topologies (:func:`foreign_phases`)."""
    return [*_sections(data), *foreign_phases(data)]


def _sections(data: Mapping[str, Any]) -> list[Unsupported]:
    """The source project's sections: lacked outright, then renamed keys, then keys of
    ``data``."""
    outright: list[Unsupported] = []
    renamed: list[Unsupported] = []
    for key, value in data.items():
        if not isinstance(key, str):
            continue
        if key in FOREIGN_SECTIONS:
            found = Unsupported((key,), FOREIGN_SECTIONS[key])
            (renamed if key in RENAMED else outright).append(found)
        elif key in FOREIGN_SHAPES and isinstance(value, FOREIGN_SHAPES[key][0]):
            outright.append(Unsupported((key,), FOREIGN_SHAPES[key][1]))
    section = data.get("data")
    inside: list[Unsupported] = []
    if isinstance(section, Mapping) and not isinstance(section, str):
        inside = [
            Unsupported(("data", key), instead)
            for key, instead in FOREIGN_DATA.items()
            if key in section
        ]
    return [*outright, *renamed, *inside]


def foreign_section(data: Mapping[str, Any]) -> Optional[tuple[str, str]]:
    """The first section of the source project's that phasekit has no counterpart for
    (one it lacks outright before a renamed key), and what to write instead (None when
    there is none)."""
    for found in _sections(data):
        return ".".join(map(str, found.path)), found.reason
    return None


def without(data: Mapping[str, Any], found: list[Unsupported]) -> dict[str, Any]:
    """A copy of ``data`` without the sections of ``found``; phases removed for their
    topology are also removed from the other phases' ``depends_on``."""
    out: Any = copy.deepcopy(dict(data))
    dropped_phases: set[str] = set()
    # indices of a list are removed from the last, so earlier ones stay valid
    for item in sorted(found, key=lambda f: [str(p).zfill(12) for p in f.path], reverse=True):
        parent = out
        for part in item.path[:-1]:
            parent = parent[part]
        last = item.path[-1]
        if item.path[:1] == ("phases",) and len(item.path) == 2:
            name = parent[last].get("name") if isinstance(parent[last], Mapping) else None
            if isinstance(name, str):
                dropped_phases.add(name)
        del parent[last]
    if dropped_phases and isinstance(out.get("phases"), list):
        for phase in out["phases"]:
            deps = phase.get("depends_on") if isinstance(phase, dict) else None
            if isinstance(deps, list):
                phase["depends_on"] = [d for d in deps if d not in dropped_phases]
            elif isinstance(deps, str) and deps in dropped_phases:
                phase["depends_on"] = []
    return out


__all__ = [
    "FOREIGN_SECTIONS",
    "STORAGE_MODES",
    "TRACE_LEVELS",
    "ContainerTrace",
    "ExecutionBlock",
    "MetricsBlock",
    "ResultsBlock",
    "ResultsCollection",
    "ResultsMemory",
    "ResultsStorage",
    "TraceLevel",
    "TraceSettings",
    "Unsupported",
    "foreign_section",
    "refused",
    "unsupported_sections",
    "without",
]
