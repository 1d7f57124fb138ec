"""One level of settings as a flat, alias-free patch, and the merge of levels into settings.

A patch maps a canonical setting (``data_flow.mode``, ``data_flow.file.format``,
``event_tracing``...) to a :class:`Setting`: the value, the config path that set
it (its source), the value as written, and the rank of its level (higher wins).
Aliases are folded here; two spellings of one setting at one level must agree.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any, NamedTuple, Optional

from phasekit.config.admf import (
    STORAGE_MODES,
    TRACE_LEVELS,
    ContainerTrace,
    ExecutionBlock,
    ResultsBlock,
)
from phasekit.config.messages import format_path
from phasekit.config.model import Settings
from phasekit.config.provenance import RANK_LEVELS, Level, Provenance
from phasekit.config.resolved import (
    FileOptions,
    PersistenceOptions,
    ResolvedDataFlow,
    ResolvedSettings,
    StreamingOptions,
)
from phasekit.config.vocab import (
    COMPRESSIONS,
    PARTITIONED_FORMATS,
    RESULTS_STORAGE,
    STORAGE_STRATEGY_MODES,
    listing,
    show,
)
from phasekit.errors import ConfigError
from phasekit.registry import DEFAULT_RESULTS_LAYOUT


class Setting(NamedTuple):
    value: Any
    source: Provenance
    written: Any
    rank: int


Patch = dict[str, Setting]

#: Run-wide settings and where the configuration sets them.
RUN_WIDE: Mapping[str, str] = MappingProxyType(
    {
        "cleanup_policy": "the top-level storage_strategy",
        "stages_to_persist": "the top-level storage_strategy",
        "results_layout": "the top-level results block",
    }
)
#: The phase ``output`` kinds the results blocks switch (``output.<kind>``): per phase.
OUTPUT_SWITCHES: Mapping[str, str] = MappingProxyType(
    {
        "store_trades": "trades",
        "store_equity_curve": "equity_curves",
        "store_container_items": "container_items",
    }
)

#: Package defaults, the lowest level. ``data_flow.file.base_path`` defaults to the
#: results directory; compression and persistence.format default by file format.
PACKAGE_DEFAULTS: Mapping[str, Any] = MappingProxyType(
    {
        "data_flow.mode": "memory",
        "data_flow.memory_limit_mb": 1000,
        "data_flow.file.format": "arrow",
        "data_flow.file.partition_by": (),
        "data_flow.streaming.buffer_size": 1000,
        "data_flow.streaming.flush_interval": 60.0,
        "data_flow.persistence.save_all_phases": False,
        "data_flow.persistence.save_final_only": False,
        "data_flow.persistence.on_completion": False,
        "event_tracing": ("POSITION_OPEN", "POSITION_CLOSE", "FILL"),
        "retention_policy": "trade_complete",
        "sliding_window_size": 1000,
        "snapshot_interval": 1,
        "cleanup_policy": "keep_all",
        "stages_to_persist": (),
        "results_layout": DEFAULT_RESULTS_LAYOUT,
    }
)


class _Builder:
    def __init__(
        self,
        where: tuple[Any, ...],
        label: str,
        rank: int,
        run_wide: bool,
        pattern: Optional[str],
    ) -> None:
        self.where, self.label, self.rank, self.run_wide = where, label, rank, run_wide
        self.pattern = pattern
        self.patch: Patch = {}

    def put(self, key: str, value: Any, path: tuple[Any, ...], written: Any = None) -> None:
        written = value if written is None else written
        source = Provenance(
            RANK_LEVELS[self.rank],
            self.label + format_path((*self.where, *path)),
            self.pattern,
        )
        if key in RUN_WIDE and not self.run_wide:
            raise ConfigError(f"{source}: {key} is a run-wide setting; set it in {RUN_WIDE[key]}")
        if key.startswith("output.") and self.pattern is not None:
            raise ConfigError(
                f"{source}: which results a phase writes is set per phase, not per container; "
                "set it in the phase's results_override (or its output list)"
            )
        old = self.patch.get(key)
        if old is None:
            self.patch[key] = Setting(value, source, written, self.rank)
        elif old.value != value:
            mine = show(written) + (f" (= {key} {show(value)})" if written != value else "")
            theirs = show(old.written) + (
                f" (= {key} {show(old.value)})" if old.written != old.value else ""
            )
            raise ConfigError(
                f"{source}: {mine} conflicts with {old.source}: {theirs} at the same level; "
                "both set the same thing, keep one"
            )

    def fields(self, model: Any, path: tuple[Any, ...], mapping: Mapping[str, str]) -> None:
        if model is None:
            return
        for name, key in mapping.items():
            value = getattr(model, name)
            if name in model.model_fields_set and value is not None:
                self.put(key, tuple(value) if isinstance(value, list) else value, (*path, name))


def flatten(
    settings: Settings,
    where: tuple[Any, ...] = (),
    *,
    rank: int,
    label: str = "",
    run_wide: bool = False,
    pattern: Optional[str] = None,
) -> Patch:
    """The patch of one level. ``where`` is its config path (for sources and errors),
    ``label`` a prefix such as ``--set ``; ``run_wide`` allows cleanup_policy and
    stages_to_persist (only the top level and runtime globals may set them);
    ``pattern`` is the container pattern of a container level."""
    b = _Builder(where, label, rank, run_wide, pattern)
    flow = settings.data_flow
    if flow is not None:
        df = ("data_flow",)
        b.fields(flow, df, {"mode": "data_flow.mode", "default_mode": "data_flow.mode"})
        b.fields(
            flow,
            df,
            {
                "memory_limit_mb": "data_flow.memory_limit_mb",
                "default_memory_limit_mb": "data_flow.memory_limit_mb",
            },
        )
        b.fields(
            flow.memory_settings,
            (*df, "memory_settings"),
            {"max_size_mb": "data_flow.memory_limit_mb"},
        )
        files = flow.file_settings
        b.fields(
            files,
            (*df, "file_settings"),
            {
                "base_path": "data_flow.file.base_path",
                "format": "data_flow.file.format",
                "partition_by": "data_flow.file.partition_by",
            },
        )
        if files is not None and "compression" in files.model_fields_set:
            b.put(
                "data_flow.file.compression",
                files.compression,
                (*df, "file_settings", "compression"),
            )
        b.fields(
            flow.streaming_settings,
            (*df, "streaming_settings"),
            {
                "buffer_size": "data_flow.streaming.buffer_size",
                "flush_interval": "data_flow.streaming.flush_interval",
            },
        )
        keep = flow.persistence
        names = ("save_all_phases", "save_final_only", "on_completion", "format")
        b.fields(keep, (*df, "persistence"), {n: f"data_flow.persistence.{n}" for n in names})
        for kind, fmt in ((keep.formats or {}) if keep else {}).items():
            b.put(
                f"data_flow.persistence.formats.{kind}", fmt, (*df, "persistence", "formats", kind)
            )
    if settings.results_storage is not None:
        mode = RESULTS_STORAGE[settings.results_storage]
        b.put("data_flow.mode", mode, ("results_storage",), settings.results_storage)
    strategy = settings.storage_strategy
    if strategy is not None:
        if strategy.mode is not None:
            mode = STORAGE_STRATEGY_MODES[strategy.mode]
            b.put("data_flow.mode", mode, ("storage_strategy", "mode"), strategy.mode)
        b.fields(
            strategy,
            ("storage_strategy",),
            {
                "persist_intermediate_results": "data_flow.persistence.save_all_phases",
                "stages_to_persist": "stages_to_persist",
                "cleanup_policy": "cleanup_policy",
            },
        )
    b.fields(settings, (), TRACING)
    _results(b, settings.results, ("results",))
    _results(b, getattr(settings, "results_override", None), ("results_override",))
    _execution(b, settings.execution)
    presets = _Builder(where, label, rank, run_wide, pattern)
    _trace_level(presets, settings.trace_level, ("trace_level",))
    if settings.execution is not None:
        _trace_level(presets, settings.execution.trace_level, ("execution", "trace_level"))
    # a key written next to a preset wins over the preset's value
    return {**presets.patch, **b.patch}


TRACING = {
    "event_tracing": "event_tracing",
    "retention_policy": "retention_policy",
    "sliding_window_size": "sliding_window_size",
}


def _results(b: _Builder, block: Optional[ResultsBlock], path: tuple[Any, ...]) -> None:
    """The source project's ``results:`` block (or ``results_override``)."""
    if block is None:
        return
    b.fields(
        block,
        path,
        {
            "retention_policy": "retention_policy",
            "max_events": "sliding_window_size",
            "sliding_window_size": "sliding_window_size",
            "layout": "results_layout",
        },
    )
    if block.results_storage is not None:
        mode = RESULTS_STORAGE[block.results_storage]
        b.put("data_flow.mode", mode, (*path, "results_storage"), block.results_storage)
    coll = block.collection
    if coll is not None:
        b.fields(coll, (*path, "collection"), {"snapshot_interval": "snapshot_interval"})
        for name, kind in OUTPUT_SWITCHES.items():
            value = getattr(coll, name)
            if value is not None:
                b.put(f"output.{kind}", value, (*path, "collection", name))
    storage = block.storage
    if storage is not None:
        where = (*path, "storage")
        b.fields(
            storage,
            where,
            {"format": "data_flow.file.format", "partition_by": "data_flow.file.partition_by"},
        )
        if storage.compress is False:
            b.put("data_flow.file.compression", None, (*where, "compress"), False)
    memory = block.memory
    if memory is not None:
        where = (*path, "memory")
        b.fields(memory, where, {"global_limit_mb": "data_flow.memory_limit_mb"})
        if memory.storage_mode is not None:
            mode = STORAGE_MODES[memory.storage_mode]
            b.put("data_flow.mode", mode, (*where, "storage_mode"), memory.storage_mode)


def _execution(b: _Builder, block: Optional[ExecutionBlock]) -> None:
    """The ``execution:`` block: note 002's tracing keys, the tracing switch and
    ``trace_settings``."""
    if block is None:
        return
    path = ("execution",)
    b.fields(block, path, TRACING)
    if block.enable_event_tracing is False:
        b.put("event_tracing", (), (*path, "enable_event_tracing"), False)
    ts = block.trace_settings
    if ts is not None and ts.container_settings is not None:
        if not b.run_wide or b.label or b.pattern is not None:
            where = b.label + format_path((*b.where, *path, "trace_settings", "container_settings"))
            raise ConfigError(
                f"{where}: container_settings selects containers of every phase; set it in "
                "the top-level execution.trace_settings (or write containers.<pattern> there)"
            )
    if ts is not None:
        b.fields(
            ts,
            (*path, "trace_settings"),
            {
                "max_events": "sliding_window_size",
                "retention_policy": "retention_policy",
                "events_to_trace": "event_tracing",
            },
        )


def trace_patterns(
    entries: Mapping[str, ContainerTrace], where: tuple[Any, ...], rank: int
) -> dict[str, Patch]:
    """The patch of each pattern of ``execution.trace_settings.container_settings``:
    ``enabled: false`` traces nothing, ``max_events`` is ``sliding_window_size``,
    ``retention_policy`` and ``trace_level`` as anywhere."""
    out: dict[str, Patch] = {}
    for pattern, entry in entries.items():
        b = _Builder((*where, pattern), "", rank, False, pattern)
        b.fields(
            entry, (), {"max_events": "sliding_window_size", "retention_policy": "retention_policy"}
        )
        if entry.enabled is False:
            b.put("event_tracing", (), ("enabled",), False)
        presets = _Builder((*where, pattern), "", rank, False, pattern)
        _trace_level(presets, entry.trace_level, ("trace_level",))
        out[pattern] = {**presets.patch, **b.patch}
    return out


def _trace_level(b: _Builder, level: Optional[str], path: tuple[Any, ...]) -> None:
    """A ``trace_level`` preset, as the settings it stands for."""
    if level is None:
        return
    for key, value in TRACE_LEVELS[level].items():
        b.put(key, value, path, level)


def defaults_patch(results_dir: str, results_dir_level: Level = Level.PACKAGE_DEFAULT) -> Patch:
    """The package defaults; ``data_flow.file.base_path`` is the results directory, at the
    level that set it."""
    default = Provenance(Level.PACKAGE_DEFAULT, "default")
    patch = {key: Setting(v, default, v, 0) for key, v in PACKAGE_DEFAULTS.items()}
    where = Provenance(results_dir_level, "results_dir")
    patch["data_flow.file.base_path"] = Setting(results_dir, where, results_dir, 0)
    return patch


def merge(patches: Iterable[Patch]) -> Patch:
    """Later patches win, setting by setting."""
    out: Patch = {}
    for patch in patches:
        out.update(patch)
    return out


def _format_default(fmt: Setting) -> Provenance:
    return Provenance(Level.PACKAGE_DEFAULT, f"default for format {fmt.value}")


def _by_format(merged: Patch, key: str, allowed: tuple[Any, ...], default: Any) -> Setting:
    """A format-dependent setting: an inherited value the format does not support falls
    back to ``default``; one set at the format's level or above is an error."""
    fmt = merged["data_flow.file.format"]
    current = merged.get(key)
    fallback = Setting(default, _format_default(fmt), default, fmt.rank)
    if current is None or current.value in allowed:
        return current or fallback
    if current.rank < fmt.rank:
        return fallback
    raise ConfigError(
        f"{current.source}: {show(current.written)} is not available with format "
        f"{fmt.value!r} (set by {fmt.source}); allowed with {fmt.value}: {listing(allowed)}"
    )


def build_settings(merged: Patch, allow_pickle: bool) -> ResolvedSettings:
    """Resolved settings from a merged patch (package defaults included), with the checks
    that span levels: compression and partition_by against the format, pickle only with
    allow_pickle, save_all_phases against save_final_only."""
    fmt = merged["data_flow.file.format"]
    compression = _by_format(
        merged, "data_flow.file.compression", COMPRESSIONS[fmt.value], COMPRESSIONS[fmt.value][0]
    )
    partition = merged["data_flow.file.partition_by"]
    if partition.value and fmt.value not in PARTITIONED_FORMATS:
        if partition.rank >= fmt.rank:
            raise ConfigError(
                f"{partition.source}: partition_by needs format "
                f"{' or '.join(PARTITIONED_FORMATS)}, but the format is {fmt.value!r} "
                f"(set by {fmt.source})"
            )
        partition = Setting((), _format_default(fmt), (), fmt.rank)
    persist_format = merged.get("data_flow.persistence.format") or fmt
    formats = {
        key.rsplit(".", 1)[1]: s
        for key, s in merged.items()
        if key.startswith("data_flow.persistence.formats.")
    }
    if not allow_pickle:
        for setting in (fmt, persist_format, *formats.values()):
            if setting.value == "pickle":
                raise ConfigError(
                    f"{setting.source}: format 'pickle' needs allow_pickle: true at the top "
                    "level (loading a pickle can run arbitrary code)"
                )
    both = [merged[f"data_flow.persistence.{k}"] for k in ("save_all_phases", "save_final_only")]
    if both[0].value and both[1].value:
        raise ConfigError(
            f"{both[1].source}: true contradicts {both[0].source}: true; set only one of them"
        )
    v = {key: s.value for key, s in merged.items()}
    sources = {key: s.source for key, s in merged.items() if key in v}
    sources["data_flow.file.compression"] = compression.source
    sources["data_flow.file.partition_by"] = partition.source
    sources["data_flow.persistence.format"] = persist_format.source
    flow = ResolvedDataFlow(
        mode=v["data_flow.mode"],
        memory_limit_mb=float(v["data_flow.memory_limit_mb"]),
        file=FileOptions(
            base_path=v["data_flow.file.base_path"],
            format=fmt.value,
            compression=compression.value,
            partition_by=tuple(partition.value),
        ),
        streaming=StreamingOptions(
            buffer_size=v["data_flow.streaming.buffer_size"],
            flush_interval=float(v["data_flow.streaming.flush_interval"]),
        ),
        persistence=PersistenceOptions(
            save_all_phases=v["data_flow.persistence.save_all_phases"],
            save_final_only=v["data_flow.persistence.save_final_only"],
            on_completion=v["data_flow.persistence.on_completion"],
            format=persist_format.value,
            formats=MappingProxyType({k: s.value for k, s in sorted(formats.items())}),
        ),
    )
    for key in RUN_WIDE:
        sources.pop(key, None)
    return ResolvedSettings(
        data_flow=flow,
        event_tracing=tuple(v["event_tracing"]),
        retention_policy=v["retention_policy"],
        sliding_window_size=v["sliding_window_size"],
        snapshot_interval=v["snapshot_interval"],
        sources=MappingProxyType(dict(sorted(sources.items()))),
    )
