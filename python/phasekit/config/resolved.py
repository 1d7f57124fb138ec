"""The resolved, alias-free settings every later layer reads (frozen dataclasses)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Optional

from phasekit.config.model import RunParams, WorkflowConfig
from phasekit.config.provenance import Level, Provenance
from phasekit.config.vocab import suggest
from phasekit.errors import ConfigError

MB = 1024 * 1024


@dataclass(frozen=True)
class FileOptions:
    """Where and how file mode writes: ``<base_path>/<run>/<phase>/...``."""

    base_path: str
    format: str
    compression: Optional[str]
    partition_by: tuple[str, ...]


@dataclass(frozen=True)
class StreamingOptions:
    buffer_size: int
    flush_interval: float


@dataclass(frozen=True)
class PersistenceOptions:
    """What is written to files besides what file mode writes anyway."""

    save_all_phases: bool
    save_final_only: bool
    on_completion: bool
    format: str
    formats: Mapping[str, str]

    def format_for(self, output_type: str) -> str:
        """The file format of one output type (``metrics``, ``signals``...)."""
        return self.formats.get(output_type, self.format)


@dataclass(frozen=True)
class ResolvedDataFlow:
    mode: str
    memory_limit_mb: float
    file: FileOptions
    streaming: StreamingOptions
    persistence: PersistenceOptions

    @property
    def memory_limit_bytes(self) -> int:
        return int(self.memory_limit_mb * MB)


@dataclass(frozen=True)
class ResolvedSettings:
    """The settings of one phase or container; ``sources`` holds, for every setting
    (``data_flow.file.format``...), the :class:`Provenance` of its value: its level and
    the config path that set it."""

    data_flow: ResolvedDataFlow
    event_tracing: tuple[str, ...]
    retention_policy: str
    sliding_window_size: int
    snapshot_interval: int
    """Every how many equity points one is stored (1: every point)."""
    sources: Mapping[str, Provenance] = field(compare=False)

    def provenance(self, key: str) -> Provenance:
        """Where setting ``key`` (``data_flow.mode``...) came from (ConfigError naming the
        known settings when ``key`` is not one)."""
        try:
            return self.sources[key]
        except KeyError:
            near = suggest(key, list(self.sources))
            hint = f"; did you mean {near!r}?" if near else ""
            raise ConfigError(
                f"unknown setting {key!r}{hint} (settings: {', '.join(self.sources)})"
            ) from None

    def level_of(self, key: str) -> Level:
        """The precedence level that set ``key``."""
        return self.provenance(key).level

    def chosen_by_user(self, key: str) -> bool:
        """True when the configuration or a runtime argument set ``key`` (not a package
        or workflow default)."""
        return self.provenance(key).chosen_by_user

    def pattern_of(self, key: str) -> Optional[str]:
        """The container pattern whose entry set ``key``, None when no pattern did."""
        return self.provenance(key).pattern

    def to_dict(self) -> dict[str, Any]:
        flow = self.data_flow
        return {
            "data_flow": {
                "mode": flow.mode,
                "memory_limit_mb": flow.memory_limit_mb,
                "file": {
                    "base_path": flow.file.base_path,
                    "format": flow.file.format,
                    "compression": flow.file.compression,
                    "partition_by": list(flow.file.partition_by),
                },
                "streaming": {
                    "buffer_size": flow.streaming.buffer_size,
                    "flush_interval": flow.streaming.flush_interval,
                },
                "persistence": {
                    "save_all_phases": flow.persistence.save_all_phases,
                    "save_final_only": flow.persistence.save_final_only,
                    "on_completion": flow.persistence.on_completion,
                    "format": flow.persistence.format,
                    "formats": dict(flow.persistence.formats),
                },
            },
            "event_tracing": list(self.event_tracing),
            "retention_policy": self.retention_policy,
            "sliding_window_size": self.sliding_window_size,
            "snapshot_interval": self.snapshot_interval,
            "sources": {key: p.to_dict() for key, p in self.sources.items()},
        }


@dataclass(frozen=True)
class ResolvedContainer:
    """One container's settings; ``pattern`` is the user pattern that applied, if any."""

    phase: Optional[str]
    container_id: str
    pattern: Optional[str]
    settings: ResolvedSettings

    @property
    def data_flow(self) -> ResolvedDataFlow:
        return self.settings.data_flow


@dataclass(frozen=True)
class ResolvedPhase:
    """One phase: its structure, its settings, its effective run parameters.

    ``pattern_settings`` holds the settings of each container pattern (as a container
    named by the pattern itself would get them); :meth:`container` resolves a real id.

    ``persist`` is True when the phase's results must be written to files: in file
    mode; with ``persistence.save_all_phases`` (alias
    ``storage_strategy.persist_intermediate_results``) when ``stages_to_persist`` is
    empty or names the phase; with ``save_final_only`` when no phase depends on it.
    """

    name: str
    sequence: str
    topology: str
    depends_on: tuple[str, ...]
    description: Optional[str]
    output: tuple[str, ...]
    settings: ResolvedSettings
    params: RunParams
    persist: bool
    pattern_settings: Mapping[str, ResolvedSettings]
    _containers: Callable[[str], ResolvedContainer] = field(repr=False, compare=False)

    @property
    def data_flow(self) -> ResolvedDataFlow:
        return self.settings.data_flow

    def container(self, container_id: str) -> ResolvedContainer:
        """The settings of container ``container_id`` of this phase (pattern matching on
        the id; equally specific matching patterns raise ConfigError)."""
        return self._containers(container_id)


@dataclass(frozen=True)
class CatalogTarget:
    """``backend`` is ``sqlite`` (``location`` a file path) or ``postgresql`` (a URL)."""

    backend: str
    location: str

    def display(self) -> str:
        """The location with any password masked."""
        if self.backend != "postgresql" or "@" not in self.location:
            return self.location
        scheme, rest = self.location.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        if ":" in creds:
            creds = creds.split(":", 1)[0] + ":***"
        return f"{scheme}://{creds}@{host}"


@dataclass(frozen=True)
class ExecutorTarget:
    """``executor``: ``kind`` is ``local`` (worker processes here) or ``dask`` (the workers
    of the scheduler at ``address``); ``provenance`` says who chose it."""

    kind: str
    address: Optional[str]
    provenance: Provenance

    def display(self) -> str:
        """``local`` or ``dask tcp://host:8786``."""
        return self.kind if self.address is None else f"{self.kind} {self.address}"

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "address": self.address, "source": self.provenance.to_dict()}


@dataclass(frozen=True)
class EncryptionTarget:
    """``encryption``: on with a master key source (``env:NAME`` / ``file:PATH``) or off;
    ``provenance`` says who chose it."""

    enabled: bool
    key: Optional[str]
    provenance: Provenance

    def to_dict(self) -> dict[str, Any]:
        return {"enabled": self.enabled, "key": self.key, "source": self.provenance.to_dict()}


@dataclass(frozen=True)
class ResolvedConfig:
    """The whole resolved configuration; built by :func:`phasekit.config.resolve`.

    ``base`` holds the run-wide settings (package defaults, top-level keys, runtime
    arguments for every phase) and ``base_patterns`` each container pattern on top of
    them: what a phase gets when nothing phase-specific is set.
    """

    config: WorkflowConfig
    workflow: Optional[str]
    run_name: Optional[str]
    results_dir: str
    catalog: CatalogTarget
    allow_pickle: bool
    encryption: EncryptionTarget
    workers: Optional[int]
    executor: ExecutorTarget
    engine: str
    """``engine`` (:data:`phasekit.registry.ENGINES`)."""
    cleanup_policy: str
    stages_to_persist: tuple[str, ...]
    results_layout: str
    base: ResolvedSettings
    base_patterns: Mapping[str, ResolvedSettings]
    phases: Mapping[str, ResolvedPhase]
    patterns: tuple[str, ...]
    _base_containers: Callable[[str], ResolvedContainer] = field(repr=False, compare=False)

    @property
    def phase_names(self) -> tuple[str, ...]:
        return tuple(self.phases)

    def phase(self, name: str) -> ResolvedPhase:
        """The resolved phase ``name`` (ConfigError with a did-you-mean if unknown)."""
        try:
            return self.phases[name]
        except KeyError:
            names = list(self.phases)
            near = suggest(name, names)
            hint = f"; did you mean {near!r}?" if near else ""
            listed = ", ".join(names) if names else "none"
            raise ConfigError(f"unknown phase {name!r}{hint} (phases: {listed})") from None

    def container(self, phase: Optional[str], container_id: str) -> ResolvedContainer:
        """The settings of container ``container_id`` in phase ``phase`` (``None``: outside
        any phase, from the run-wide levels only)."""
        if phase is None:
            return self._base_containers(container_id)
        return self.phase(phase).container(container_id)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable view (what ``config show --json`` prints and a catalog
        records with a run)."""
        return {
            "workflow": self.workflow,
            "run_name": self.run_name,
            "description": self.config.description,
            "results_dir": self.results_dir,
            "catalog": {"backend": self.catalog.backend, "location": self.catalog.display()},
            "allow_pickle": self.allow_pickle,
            "encryption": self.encryption.to_dict(),
            "workers": self.workers,
            "executor": self.executor.to_dict(),
            "engine": self.engine,
            "cleanup_policy": self.cleanup_policy,
            "stages_to_persist": list(self.stages_to_persist),
            "results_layout": self.results_layout,
            "base": self.base.to_dict(),
            "patterns": list(self.patterns),
            "base_containers": {p: st.to_dict() for p, st in self.base_patterns.items()},
            "phases": {
                name: {
                    "sequence": phase.sequence,
                    "topology": phase.topology,
                    "depends_on": list(phase.depends_on),
                    "description": phase.description,
                    "output": list(phase.output),
                    "persist": phase.persist,
                    "settings": phase.settings.to_dict(),
                    "params": phase.params.model_dump(mode="json", exclude_none=True),
                    "containers": {
                        pattern: settings.to_dict()
                        for pattern, settings in phase.pattern_settings.items()
                    },
                }
                for name, phase in self.phases.items()
            },
        }
