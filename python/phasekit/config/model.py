"""The configuration models, in the vocabulary users write (aliases included).

These models only validate; :mod:`phasekit.config.resolve` turns them into the
normalised, alias-free settings the rest of phasekit reads. A ``null`` value means
"not set" everywhere except ``file_settings.compression`` (where it means none).
"""

from __future__ import annotations

from typing import Annotated, Any, Optional, Union

from pydantic import BeforeValidator, PlainValidator, model_validator

from phasekit.config.admf import ExecutionBlock, MetricsBlock, ResultsBlock, TraceLevel
from phasekit.config.fields import (
    Bool,
    MegaBytes,
    Model,
    PathText,
    Pattern,
    PositiveInt,
    Seconds,
    Text,
    check_event_kind,
    check_path,
    check_text,
    choice,
    choice_or_import,
    expected,
    fail,
    name_check,
    string_list,
)
from phasekit.config.limits import MAX_WORKERS
from phasekit.config.params import (
    DataConfig,
    DataSplit,
    MonteCarlo,
    Objective,
    PortfolioConfig,
    StrategyConfig,
    WalkForward,
    check_parameter_space,
    parse_objective,
)
from phasekit.config.vocab import (
    CLEANUP_POLICIES,
    COMPRESSIONS,
    ENGINES,
    EXECUTOR_ADDRESSES,
    EXECUTORS,
    FORMATS,
    MODE_HINTS,
    MODES,
    OUTPUT_DEFAULTS,
    OUTPUT_KINDS,
    RESULTS_STORAGE,
    RETENTION_POLICIES,
    SEQUENCES,
    STORAGE_STRATEGY_MODES,
    TOPOLOGIES,
    choice_message,
    show,
    suggest,
)
from phasekit.crypt.master import KEY_SOURCES
from phasekit.stores.formats import UNCOMPRESSED

Mode = Annotated[str, PlainValidator(choice(MODES, MODE_HINTS))]
Format = Annotated[str, PlainValidator(choice(FORMATS))]
PhaseName = Annotated[str, PlainValidator(name_check("phase name"))]
OutputType = Annotated[str, PlainValidator(name_check("output type"))]

_ALL_COMPRESSIONS = tuple(dict.fromkeys(c for cs in COMPRESSIONS.values() for c in cs if c))


def _compression(value: Any) -> Optional[str]:
    if value is None or value in UNCOMPRESSED:
        return None
    if not isinstance(value, str) or value not in _ALL_COMPRESSIONS:
        fail(choice_message(value, ("none", *_ALL_COMPRESSIONS)))
    return value


Compression = Annotated[Optional[str], PlainValidator(_compression)]


class FileSettings(Model):
    base_path: Optional[PathText] = None
    format: Optional[Format] = None
    compression: Compression = None
    partition_by: Optional[Annotated[list[str], PlainValidator(string_list(check_text))]] = None


class MemorySettings(Model):
    max_size_mb: Optional[MegaBytes] = None


class StreamingSettings(Model):
    buffer_size: Optional[PositiveInt] = None
    flush_interval: Optional[Seconds] = None


class Persistence(Model):
    save_all_phases: Optional[Bool] = None
    save_final_only: Optional[Bool] = None
    on_completion: Optional[Bool] = None
    format: Optional[Format] = None
    formats: Optional[dict[OutputType, Format]] = None


class DataFlowConfig(Model):
    """``data_flow`` at the top level, in a phase, an override or a container pattern."""

    mode: Optional[Mode] = None
    default_mode: Optional[Mode] = None
    memory_limit_mb: Optional[MegaBytes] = None
    default_memory_limit_mb: Optional[MegaBytes] = None
    file_settings: Optional[FileSettings] = None
    memory_settings: Optional[MemorySettings] = None
    streaming_settings: Optional[StreamingSettings] = None
    persistence: Optional[Persistence] = None


class StorageStrategy(Model):
    """The ``storage_strategy`` block (``mode: persist`` is ``data_flow.mode: file``)."""

    mode: Optional[Annotated[str, PlainValidator(choice(tuple(STORAGE_STRATEGY_MODES)))]] = None
    persist_intermediate_results: Optional[Bool] = None
    stages_to_persist: Optional[
        Annotated[list[str], PlainValidator(string_list(name_check("stage name"), False))]
    ] = None
    cleanup_policy: Optional[Annotated[str, PlainValidator(choice(CLEANUP_POLICIES))]] = None


EventList = Annotated[list[str], PlainValidator(string_list(check_event_kind, False))]


class Settings(Model):
    """Where results go and what is traced; valid at every level of precedence."""

    data_flow: Optional[DataFlowConfig] = None
    results_storage: Optional[Annotated[str, PlainValidator(choice(tuple(RESULTS_STORAGE)))]] = None
    storage_strategy: Optional[StorageStrategy] = None
    event_tracing: Optional[EventList] = None
    retention_policy: Optional[Annotated[str, PlainValidator(choice(RETENTION_POLICIES))]] = None
    sliding_window_size: Optional[PositiveInt] = None
    # the design notes' source project's spellings (phasekit.config.admf)
    results: Optional[ResultsBlock] = None
    execution: Optional[ExecutionBlock] = None
    trace_level: Optional[TraceLevel] = None


SETTINGS_FIELDS = tuple(Settings.model_fields)


class ContainerSettings(Settings):
    """The body of ``containers.<pattern>``."""

    metrics: Optional[MetricsBlock] = None


def _dag_spec(value: Any) -> dict[str, Any]:
    """A ``topology: stream`` phase's DAG: a mapping with ``nodes`` (checked fully when
    the phase runs, by :meth:`phasekit.stream.Dag.from_spec`)."""
    if not isinstance(value, dict) or "nodes" not in value:
        expected("a DAG description: a mapping with `nodes` (see docs/streaming.md)", value)
    return value


class RunParams(Model):
    """What a phase runs on and searches; merged field by field across levels."""

    parameter_space: Optional[Annotated[dict[str, Any], PlainValidator(check_parameter_space)]] = (
        None
    )
    objective_function: Optional[Annotated[Objective, BeforeValidator(parse_objective)]] = None
    data: Optional[DataConfig] = None
    strategy: Optional[StrategyConfig] = None
    portfolio: Optional[PortfolioConfig] = None
    data_split: Optional[DataSplit] = None
    walk_forward: Optional[WalkForward] = None
    monte_carlo: Optional[MonteCarlo] = None
    top_k: Optional[PositiveInt] = None
    dag: Optional[Annotated[dict[str, Any], PlainValidator(_dag_spec)]] = None


RUN_PARAM_FIELDS = tuple(RunParams.model_fields)


class PhaseParams(Settings, RunParams):
    """A phase's ``config``, a ``phase_overrides.<phase>`` entry, a runtime patch."""


def _output(value: Any) -> dict[str, bool]:
    """Which results a phase collects: a list of kinds (exactly those) or a mapping
    kind -> bool (kinds it does not name keep their default, :data:`OUTPUT_DEFAULTS`)."""
    if isinstance(value, list):
        for i, kind in enumerate(value):
            if kind not in OUTPUT_KINDS:
                fail(choice_message(kind, OUTPUT_KINDS), (i,))
        value = {kind: kind in value for kind in OUTPUT_KINDS}
    if not isinstance(value, dict):
        expected(f"a list or a mapping of output kinds ({', '.join(OUTPUT_KINDS)})", value)
    out = dict(OUTPUT_DEFAULTS)
    for key, flag in value.items():
        if key not in OUTPUT_KINDS:
            fail(choice_message(key, OUTPUT_KINDS), (key,))
        if not isinstance(flag, bool):
            fail(f"expected true or false, got {show(flag)}", (key,))
        out[key] = flag
    return out


Output = Annotated[dict[str, bool], PlainValidator(_output)]
Topology = Annotated[str, PlainValidator(choice_or_import(TOPOLOGIES, "topology"))]


class PhaseBody(PhaseParams):
    """Fields of a phase besides its name."""

    sequence: Optional[Annotated[str, PlainValidator(choice(SEQUENCES))]] = None
    topology: Optional[Topology] = None
    depends_on: Optional[
        Annotated[list[str], PlainValidator(string_list(name_check("phase name")))]
    ] = None
    description: Optional[Text] = None
    output: Optional[Output] = None
    config: Optional[PhaseParams] = None
    results_override: Optional[ResultsBlock] = None


class PhaseConfig(PhaseBody):
    """One entry of ``phases:``."""

    name: PhaseName


class PhaseDefaults(PhaseBody):
    """What a workflow supplies for one of its phases (the resolver's ``workflow_defaults``)."""

    containers: Optional[dict[Pattern, ContainerSettings]] = None


def _workers(value: Any) -> Optional[int]:
    if value == "auto":
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        expected("a number of worker processes or 'auto'", value)
    if value < 1:
        fail(f"must be >= 1 or 'auto', got {value}")
    if value > MAX_WORKERS:
        fail(f"must be <= {MAX_WORKERS} or 'auto', got {value}")
    return value


def _executor(value: Any) -> Union[str, dict[str, str]]:
    """``local``, ``{dask: ADDRESS}`` (a scheduler address such as ``tcp://host:8786``) or
    ``{ray: ADDRESS}`` (a Ray cluster's GCS address ``host:port``)."""
    engines = " or ".join(f"{{{k}: ADDRESS}}" for k in EXECUTOR_ADDRESSES)
    if isinstance(value, dict):
        if len(value) != 1:
            expected(f"local or a mapping of one engine to its address ({engines})", value)
        ((kind, address),) = value.items()
    else:
        kind, address = value, None
    if not isinstance(kind, str):
        expected(f"local or {engines}", value)
    if kind not in EXECUTORS:
        near = suggest(kind, list(EXECUTORS))
        hint = f"; did you mean {near!r}?" if near else ""
        fail(f"{show(kind)} is not an executor; allowed: local, {engines}{hint}")
    if kind == "local":
        if address is not None:
            fail("local takes no address: write executor: local")
        return "local"
    example = EXECUTOR_ADDRESSES[kind]
    if address is None:
        fail(f"{kind} needs the cluster's address, e.g. executor: {{{kind}: {example}}}")
    text = check_text(address)
    if not text.strip() or any(c.isspace() for c in text):
        fail(f"{kind}: {show(text)} is not a cluster address (e.g. {example})", (kind,))
    if kind == "ray":
        try:
            split_host_port(text)
        except ValueError as exc:
            fail(f"ray: {exc}", (kind,))
    return {kind: text}


def split_host_port(address: str) -> tuple[str, int]:
    """A Ray GCS address ``host:port`` (``[v6]:port`` too) -> (host, port); ValueError
    naming what is wrong otherwise (a ``ray://`` Ray Client address, a missing port)."""
    if "://" in address:
        raise ValueError(
            f"{show(address)} is a URL; give the cluster's GCS address host:port (e.g. "
            "127.0.0.1:6379, what `ray start --head` prints): phasekit joins the cluster "
            "as a driver, not through Ray Client (ray://)"
        )
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(
            f"{show(address)} is not a GCS address host:port (e.g. 127.0.0.1:6379, what "
            "`ray start --head` prints)"
        )
    return host.removeprefix("[").removesuffix("]"), int(port)


_SCHEMES = ("sqlite:///", "postgresql://", "postgres://")


def _catalog(value: Any) -> str:
    """A SQLite file path, ``sqlite:///path`` or a ``postgresql://`` URL."""
    text = check_path(value)
    if "://" in text and not text.startswith(_SCHEMES):
        scheme = text.split("://", 1)[0]
        near = suggest(scheme, ("sqlite", "postgresql"))
        hint = f"; did you mean {near!r}?" if near else ""
        fail(
            f"{show(text)} has the unsupported scheme {scheme!r}; use a file path, "
            f"sqlite:///path or postgresql://user@host/db{hint}"
        )
    if text.startswith("postgres://"):
        text = "postgresql://" + text[len("postgres://") :]
    if text == "sqlite:///":
        fail("sqlite:/// needs a file path after it, e.g. sqlite:///results/catalog.sqlite")
    return text


def _key_spec(value: Any) -> str:
    """``env:NAME`` or ``file:PATH`` (the sources :mod:`phasekit.crypt.master` knows)."""
    text = check_text(value)
    source, _, name = text.partition(":")
    if source not in KEY_SOURCES or not name.strip():
        allowed = ", ".join(f"{s}:..." for s in KEY_SOURCES)
        fail(f"{show(text)} is not a key source; allowed: {allowed} (env:NAME or file:PATH)")
    return text


class EncryptionConfig(Model):
    """``encryption``: files, spill segments and stream parts encrypted at rest."""

    enabled: Optional[Bool] = None
    key: Optional[Annotated[str, PlainValidator(_key_spec)]] = None

    @model_validator(mode="after")
    def _key_needed(self) -> EncryptionConfig:
        if self.enabled and self.key is None:
            fail("enabled: true needs a key (key: env:NAME or key: file:PATH)", ("key",))
        if not self.enabled and self.key is not None:
            fail(
                "a key is given but enabled is not true; set enabled: true (or remove key)",
                ("enabled",),
            )
        return self


class WorkflowConfig(PhaseParams):
    """A whole configuration file."""

    workflow: Optional[Annotated[str, PlainValidator(name_check("workflow name"))]] = None
    run_name: Optional[Annotated[str, PlainValidator(name_check("run name"))]] = None
    description: Optional[Text] = None
    phases: Optional[list[PhaseConfig]] = None
    phase_overrides: Optional[dict[PhaseName, PhaseParams]] = None
    containers: Optional[dict[Pattern, ContainerSettings]] = None
    results_dir: Optional[PathText] = None
    catalog: Optional[Annotated[str, PlainValidator(_catalog)]] = None
    allow_pickle: Optional[Bool] = None
    encryption: Optional[EncryptionConfig] = None
    workers: Optional[Annotated[Union[int, None], PlainValidator(_workers)]] = None
    executor: Optional[Annotated[Union[str, dict[str, str]], PlainValidator(_executor)]] = None
    engine: Optional[Annotated[str, PlainValidator(choice(ENGINES))]] = None

    @model_validator(mode="after")
    def _phase_graph(self) -> WorkflowConfig:
        phases = self.phases or []
        names = [p.name for p in phases]
        for i, phase in enumerate(phases):
            if phase.name in names[:i]:
                fail(f"phase name {phase.name!r} is used twice", ("phases", i, "name"))
            for j, dep in enumerate(phase.depends_on or []):
                where = ("phases", i, "depends_on", j)
                if dep == phase.name:
                    fail(f"phase {dep!r} depends on itself", where)
                if dep not in names:
                    fail(unknown_phase_message(dep, names), where)
        cycle = find_cycle({p.name: list(p.depends_on or []) for p in phases})
        if cycle:
            fail(cycle_message(cycle), ("phases",))
        if phases:
            for key in self.phase_overrides or {}:
                if key not in names:
                    fail(unknown_phase_message(key, names), ("phase_overrides", key))
        return self


def unknown_phase_message(name: str, names: list[str]) -> str:
    text = f"unknown phase {name!r}"
    near = suggest(name, names)
    if near is not None:
        text += f"; did you mean {near!r}?"
    return text + f" (phases: {', '.join(names) if names else 'none'})"


def cycle_message(cycle: list[str]) -> str:
    return f"dependency cycle {' -> '.join(cycle)}; remove one of these depends_on entries"


def find_cycle(graph: dict[str, list[str]]) -> Optional[list[str]]:
    """A dependency cycle as a list of names (first repeated at the end), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> Optional[list[str]]:
        state[node] = 1
        stack.append(node)
        for dep in graph.get(node, []):
            if state.get(dep) == 1:
                return [*stack[stack.index(dep) :], dep]
            if dep in graph and dep not in state:
                found = visit(dep)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in graph:
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None
