"""Precedence: the levels of a configuration merged, once, into :class:`ResolvedConfig`.

Levels, lowest first (each may be absent)::

     0  package defaults
     1  workflow_defaults.<phase>.config      (supplied by the workflow layer)
     2  workflow_defaults.<phase>
     3  workflow_defaults.<phase>.containers.<pattern>      (containers only)
     4  user global: top-level data_flow, results_storage, storage_strategy, event_tracing...
     5  phases[i].config
     6  phases[i] (its own data_flow and settings)
     7  phase_overrides.<phase>
     8  containers.<pattern>                                (containers only)
     9  runtime arguments for every phase (``--set data_flow.mode=file``)
    10  runtime arguments for one phase   (``--set phase_overrides.<phase>.<key>=...``)
    11  runtime arguments for containers  (``--set containers.<pattern>.<key>=...``)

At each container level only the most specific matching pattern applies
(:mod:`phasekit.config.patterns`). Run parameters (parameter_space, data, strategy...)
follow the same order; mappings (data, strategy, portfolio, walk_forward, monte_carlo)
merge key by key, everything else is replaced.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Optional, Union

from pydantic import BaseModel

from phasekit.config.layers import (
    Patch,
    build_settings,
    defaults_patch,
    flatten,
    merge,
    trace_patterns,
)
from phasekit.config.load import Source, load_config, validate
from phasekit.config.model import (
    RUN_PARAM_FIELDS,
    ContainerSettings,
    PhaseDefaults,
    PhaseParams,
    RunParams,
    WorkflowConfig,
    cycle_message,
    find_cycle,
    unknown_phase_message,
)
from phasekit.config.names import name_problem, pattern_problem
from phasekit.config.patterns import best_match
from phasekit.config.provenance import Level, Provenance
from phasekit.config.resolved import (
    CatalogTarget,
    EncryptionTarget,
    ExecutorTarget,
    ResolvedConfig,
    ResolvedContainer,
    ResolvedPhase,
    ResolvedSettings,
)
from phasekit.config.runtime import RuntimeArgs, patch_model, raw_of, sort_runtime
from phasekit.config.vocab import OUTPUT_DEFAULTS, OUTPUT_KINDS
from phasekit.errors import ConfigError
from phasekit.registry import DEFAULT_DATA_SPLIT, DEFAULT_ENGINE

DEFAULT_RESULTS_DIR = "./results"
_MERGED_PARAMS = ("data", "strategy", "portfolio", "walk_forward", "monte_carlo")

WorkflowDefaults = Mapping[str, Union[Mapping[str, Any], PhaseDefaults]]


@dataclass(frozen=True)
class _Slot:
    """A container level: one patch per pattern."""

    where: str
    patches: Mapping[str, Patch]


Layer = Union[Patch, _Slot]


def resolve(
    config: Source,
    workflow_defaults: Optional[WorkflowDefaults] = None,
    runtime: Optional[Mapping[str, Any]] = None,
    phase_aliases: Optional[Mapping[str, str]] = None,
    phase_positions: Optional[Sequence[int]] = None,
) -> ResolvedConfig:
    """Resolve a configuration into frozen, alias-free settings per phase and container.

    ``workflow_defaults`` maps each phase of a workflow to its defaults in config
    vocabulary (sequence, topology, depends_on, output, settings such as
    results_storage, run parameters such as data_split, and ``containers``). Phases
    are those of ``phases:`` and of ``workflow_defaults``; when ``workflow_defaults`` is
    None, phases named only in ``phase_overrides`` are taken as phases too.
    ``runtime`` maps dotted paths to values (see :mod:`phasekit.config.runtime`).
    ``phase_aliases`` maps other names of the workflow's phases (the source project's
    ``training``, ``testing``) to them, for ``phase_overrides`` keys.
    ``phase_positions`` gives each entry of ``phases:`` its index in the file, for the
    paths in provenance, when entries were set aside before (``phasekit config show``).
    """
    config = load_config(config)
    defaults = _check_defaults(workflow_defaults or {})
    candidates = [*(p.name for p in config.phases or []), *defaults]
    overridden = [*(config.phase_overrides or {}), *(phase_aliases or {})]
    rt = sort_runtime(runtime or {}, [*candidates, *overridden], [])
    if rt.model:
        config = validate(WorkflowConfig, patch_model(config, rt.model), origin="--set")
    aliases = dict(phase_aliases or {})
    names = _phase_names(config, defaults, workflow_defaults is not None, aliases)
    return _Resolver(config, defaults, names, rt, aliases, phase_positions).build()


def _check_defaults(raw: WorkflowDefaults) -> dict[str, PhaseDefaults]:
    out = {}
    for name, body in raw.items():
        problem = name_problem(name, "phase name")
        if problem is not None:
            raise ConfigError(f"workflow_defaults: {problem}")
        if isinstance(body, BaseModel):
            body = raw_of(body)
        out[name] = validate(
            PhaseDefaults, body, origin="workflow defaults", prefix=("workflow_defaults", name)
        )
    return out


def _phase_names(
    config: WorkflowConfig,
    defaults: Mapping[str, PhaseDefaults],
    strict: bool,
    aliases: Mapping[str, str],
) -> list[str]:
    names = list(defaults)
    names += [p.name for p in config.phases or [] if p.name not in defaults]
    for key in config.phase_overrides or {}:
        if key not in names and aliases.get(key) not in names:
            if strict or config.phases:
                raise ConfigError(f"phase_overrides.{key}: " + unknown_phase_message(key, names))
            names.append(key)
    return names


class _Resolver:
    def __init__(
        self,
        config: WorkflowConfig,
        defaults: dict[str, PhaseDefaults],
        names: list[str],
        rt: RuntimeArgs,
        aliases: Mapping[str, str],
        positions: Optional[Sequence[int]] = None,
    ) -> None:
        self.config, self.defaults, self.names = config, defaults, names
        self.overrides = _overrides(config, names, aliases)
        phases = config.phases or []
        at = list(positions) if positions is not None else list(range(len(phases)))
        self.user = {p.name: (at[i], p) for i, p in enumerate(phases)}
        self.results_dir = config.results_dir or DEFAULT_RESULTS_DIR
        chosen = "results_dir" in config.model_fields_set and config.results_dir is not None
        level = Level.USER_GLOBAL if chosen else Level.PACKAGE_DEFAULT
        self.package = defaults_patch(self.results_dir, level)
        self.allow_pickle = bool(config.allow_pickle)
        self.executor_at_runtime = any(parts[0] == "executor" for _, parts, _ in rt.model)
        self.everywhere = validate(PhaseParams, rt.everywhere, origin="--set")
        self.rt_phases = {}
        self.rt_keys: dict[str, str] = {}
        for key, raw in rt.phases.items():
            name = key if key in names else aliases.get(key, key)
            if name not in names:
                raise ConfigError(
                    f"--set phase_overrides.{key}: " + unknown_phase_message(key, names)
                )
            self.rt_keys[name] = key
            self.rt_phases[name] = validate(
                PhaseParams, raw, origin="--set", prefix=("phase_overrides", key)
            )
        self.rt_containers = {}
        for pattern, raw in rt.containers.items():
            problem = pattern_problem(pattern)
            if problem is not None:
                raise ConfigError(f"--set containers: {problem}")
            self.rt_containers[pattern] = validate(
                ContainerSettings, raw, origin="--set", prefix=("containers", pattern)
            )
        self.global_patch = flatten(config, rank=4, run_wide=True)
        self.rt_patch = flatten(self.everywhere, rank=9, label="--set ", run_wide=True)

    # --- settings ---------------------------------------------------------------------

    def levels(self, name: Optional[str]) -> list[Layer]:
        """The levels of phase ``name``, or the run-wide levels when ``name`` is None."""
        if name is None:
            return self._run_wide_levels()
        wf = self.defaults.get(name)
        levels: list[Layer] = [self.package]
        if wf is not None:
            where = ("workflow_defaults", name)
            if wf.config is not None:
                levels.append(flatten(wf.config, (*where, "config"), rank=1))
            levels.append(flatten(wf, where, rank=2))
            if wf.containers:
                levels.append(self._slot(wf.containers, (*where, "containers"), 3, ""))
        levels.append(self.global_patch)
        if name in self.user:
            i, phase = self.user[name]
            if phase.config is not None:
                levels.append(flatten(phase.config, ("phases", i, "config"), rank=5))
            levels.append(flatten(phase, ("phases", i), rank=6))
        if name in self.overrides:
            key, override = self.overrides[name]
            levels.append(flatten(override, ("phase_overrides", key), rank=7))
        levels.extend(self._user_slots())
        levels.append(self.rt_patch)
        if name in self.rt_phases:
            where = ("phase_overrides", self.rt_keys[name])
            levels.append(flatten(self.rt_phases[name], where, rank=10, label="--set "))
        if self.rt_containers:
            levels.append(self._slot(self.rt_containers, ("containers",), 11, "--set "))
        return levels

    def _run_wide_levels(self) -> list[Layer]:
        levels: list[Layer] = [self.package, self.global_patch, *self._user_slots()]
        levels.append(self.rt_patch)
        if self.rt_containers:
            levels.append(self._slot(self.rt_containers, ("containers",), 11, "--set "))
        return levels

    def _user_slots(self) -> list[_Slot]:
        """The container levels of the file: the source project's
        ``execution.trace_settings.container_settings``, then ``containers`` (which wins)."""
        slots = []
        execution = self.config.execution
        traced = execution.trace_settings if execution is not None else None
        if traced is not None and traced.container_settings:
            where = ("execution", "trace_settings", "container_settings")
            patches = trace_patterns(traced.container_settings, where, 8)
            slots.append(_Slot(".".join(where), MappingProxyType(patches)))
        if self.config.containers:
            slots.append(self._slot(self.config.containers, ("containers",), 8, ""))
        return slots

    @staticmethod
    def _slot(
        patterns: Mapping[str, ContainerSettings], where: tuple[Any, ...], rank: int, label: str
    ) -> _Slot:
        patches = {
            pattern: flatten(body, (*where, pattern), rank=rank, label=label, pattern=pattern)
            for pattern, body in patterns.items()
        }
        return _Slot(label + ".".join(map(str, where)), MappingProxyType(patches))

    def container_resolver(
        self, phase: Optional[str], levels: list[Layer]
    ) -> Callable[[str], ResolvedContainer]:
        cache: dict[tuple[Optional[str], ...], ResolvedSettings] = {}

        def resolve_container(container_id: str) -> ResolvedContainer:
            problem = name_problem(container_id, "container id")
            if problem is not None:
                raise ConfigError(problem)
            chosen = tuple(
                best_match(container_id, level.patches, _where(level.where, phase))
                if isinstance(level, _Slot)
                else None
                for level in levels
            )
            if chosen not in cache:
                cache[chosen] = self._settings(levels, chosen)
            pattern = next((p for p in reversed(chosen) if p is not None), None)
            return ResolvedContainer(phase, container_id, pattern, cache[chosen])

        return resolve_container

    def _settings(self, levels: list[Layer], chosen: tuple[Optional[str], ...]) -> ResolvedSettings:
        patches: list[Patch] = []
        for level, pattern in zip(levels, chosen):
            if not isinstance(level, _Slot):
                patches.append(level)
            elif pattern is not None:
                patches.append(level.patches[pattern])
        return build_settings(merge(patches), self.allow_pickle)

    def pattern_settings(self, levels: list[Layer]) -> dict[str, ResolvedSettings]:
        """Each pattern's settings, with the same pattern's entry at every container level."""
        patterns = dict.fromkeys(p for lv in levels if isinstance(lv, _Slot) for p in lv.patches)
        out = {}
        for pattern in patterns:
            chosen = tuple(
                pattern if isinstance(lv, _Slot) and pattern in lv.patches else None
                for lv in levels
            )
            out[pattern] = self._settings(levels, chosen)
        return out

    # --- run parameters ---------------------------------------------------------------

    def param_levels(self, name: str) -> list[PhaseParams]:
        wf, user = self.defaults.get(name), self.user.get(name)
        phase = user[1] if user else None
        override = self.overrides[name][1] if name in self.overrides else None
        levels = [
            wf.config if wf else None,
            wf,
            self.config,
            phase.config if phase else None,
            phase,
            override,
            self.everywhere,
            self.rt_phases.get(name),
        ]
        return [level for level in levels if level is not None]

    def params(self, name: str) -> RunParams:
        values: dict[str, Any] = {}
        for level in self.param_levels(name):
            for field in RUN_PARAM_FIELDS:
                value = getattr(level, field)
                if field not in level.model_fields_set or value is None:
                    continue
                current = values.get(field)
                if current is not None and field in _MERGED_PARAMS and _same_kind(current, value):
                    merged = {**raw_of(current), **raw_of(value)}
                    value = validate(
                        type(value),
                        merged,
                        origin=f"phase {name!r} (merged levels)",
                        prefix=(field,),
                    )
                values[field] = value
        return RunParams.model_validate(values)

    # --- phases -----------------------------------------------------------------------

    def structure(self, name: str, key: str) -> Any:
        """A structural field (sequence, topology...): the user's phase, else the workflow's."""
        if name in self.user:
            value = getattr(self.user[name][1], key)
            if value is not None:
                return value
        wf = self.defaults.get(name)
        return getattr(wf, key) if wf is not None else None

    def check_graph(self) -> None:
        graph = {}
        for name in self.names:
            deps = list(self.structure(name, "depends_on") or [])
            for j, dep in enumerate(deps):
                if dep not in self.names:
                    where = (
                        f"phases[{self.user[name][0]}]"
                        if name in self.user and self.user[name][1].depends_on
                        else f"workflow_defaults.{name}"
                    )
                    raise ConfigError(
                        f"{where}.depends_on[{j}]: " + unknown_phase_message(dep, self.names)
                    )
            graph[name] = deps
        cycle = find_cycle(graph)
        if cycle:
            raise ConfigError(f"phases: {cycle_message(cycle)}")

    def phase(self, name: str, base_stages: tuple[str, ...], finals: set[str]) -> ResolvedPhase:
        levels = self.levels(name)
        settings = self._settings(levels, tuple(None for _ in levels))
        sequence = self.structure(name, "sequence") or "single_pass"
        params = _sequence_params(sequence, self.params(name))
        output = dict(self.structure(name, "output") or OUTPUT_DEFAULTS)
        switched = merge([lv for lv in levels if not isinstance(lv, _Slot)])
        for kind in OUTPUT_KINDS:
            if f"output.{kind}" in switched:
                output[kind] = switched[f"output.{kind}"].value
        keep = settings.data_flow.persistence
        persist = (
            settings.data_flow.mode == "file"
            or (keep.save_all_phases and (not base_stages or name in base_stages))
            or (keep.save_final_only and name in finals)
        )
        resolved = ResolvedPhase(
            name=name,
            sequence=sequence,
            topology=self.structure(name, "topology") or "backtest",
            depends_on=tuple(self.structure(name, "depends_on") or ()),
            description=self.structure(name, "description"),
            output=tuple(k for k in OUTPUT_KINDS if output.get(k)),
            settings=settings,
            params=params,
            persist=persist,
            pattern_settings=MappingProxyType(self.pattern_settings(levels)),
            _containers=self.container_resolver(name, levels),
        )
        return resolved

    def build(self) -> ResolvedConfig:
        self.check_graph()
        base_merged = merge([self.package, self.global_patch, self.rt_patch])
        base = build_settings(base_merged, self.allow_pickle)
        base_levels = self.levels(None)
        stages = tuple(base_merged["stages_to_persist"].value)
        for i, stage in enumerate(stages):
            if self.names and stage not in self.names:
                source = base_merged["stages_to_persist"].source
                raise ConfigError(
                    f"{source}[{i}]: "
                    + unknown_phase_message(stage, self.names).replace("phase", "stage", 1)
                )
        needed = {d for n in self.names for d in self.structure(n, "depends_on") or []}
        finals = {n for n in self.names if n not in needed}
        phases = {name: self.phase(name, stages, finals) for name in self.names}
        base_patterns = self.pattern_settings(base_levels)
        patterns = tuple(
            dict.fromkeys(
                [*base_patterns, *(p for ph in phases.values() for p in ph.pattern_settings)]
            )
        )
        return ResolvedConfig(
            config=self.config,
            workflow=self.config.workflow,
            run_name=self.config.run_name,
            results_dir=self.results_dir,
            catalog=_catalog(self.config.catalog, self.results_dir),
            allow_pickle=self.allow_pickle,
            encryption=_encryption(self.config),
            workers=self.config.workers,
            executor=_executor(self.config, self.executor_at_runtime),
            engine=self.config.engine or DEFAULT_ENGINE,
            cleanup_policy=base_merged["cleanup_policy"].value,
            stages_to_persist=stages,
            results_layout=base_merged["results_layout"].value,
            base=base,
            base_patterns=MappingProxyType(base_patterns),
            phases=MappingProxyType(phases),
            patterns=patterns,
            _base_containers=self.container_resolver(None, base_levels),
        )


def _overrides(
    config: WorkflowConfig, names: list[str], aliases: Mapping[str, str]
) -> dict[str, tuple[str, PhaseParams]]:
    """Each phase's ``phase_overrides`` entry and the key it was written under (a phase's
    own name, or another name of it from ``aliases``); two entries for one phase are an
    error."""
    out: dict[str, tuple[str, PhaseParams]] = {}
    for key, body in (config.phase_overrides or {}).items():
        name = key if key in names else aliases.get(key, key)
        if name in out:
            raise ConfigError(
                f"phase_overrides.{key}: phase {name!r} is also overridden as "
                f"phase_overrides.{out[name][0]}; {key!r} is another name of it, keep one"
            )
        out[name] = (key, body)
    return out


def _where(slot: str, phase: Optional[str]) -> str:
    return slot if phase is None else f"{slot} (phase {phase!r})"


def _same_kind(current: Any, new: Any) -> bool:
    """Strategies of different types are replaced, not merged."""
    old_type, new_type = getattr(current, "type", None), getattr(new, "type", None)
    return old_type is None or new_type is None or old_type == new_type


def _sequence_params(sequence: str, params: RunParams) -> RunParams:
    """Fill the train/test split default (``workflow.sequences.DEFAULT_DATA_SPLIT``).
    Walk-forward lengths default by the data (known only when it runs), so the workflow
    layer fills them."""
    if sequence == "train_test" and params.data_split is None:
        return params.model_copy(update={"data_split": DEFAULT_DATA_SPLIT})
    return params


def _encryption(config: WorkflowConfig) -> EncryptionTarget:
    """Encryption is off unless the configuration turns it on."""
    block = config.encryption
    if block is None or not block.enabled:
        chosen = block is not None
        level = Level.USER_GLOBAL if chosen else Level.PACKAGE_DEFAULT
        return EncryptionTarget(
            False, None, Provenance(level, "encryption" if chosen else "default")
        )
    return EncryptionTarget(True, block.key, Provenance(Level.USER_GLOBAL, "encryption"))


def _executor(config: WorkflowConfig, at_runtime: bool) -> ExecutorTarget:
    """The executor: ``local`` unless the configuration or a runtime argument names one."""
    value = config.executor
    if value is None:
        return ExecutorTarget("local", None, Provenance(Level.PACKAGE_DEFAULT, "default"))
    where = (
        Provenance(Level.RUNTIME, "--set executor")
        if at_runtime
        else Provenance(Level.USER_GLOBAL, "executor")
    )
    if isinstance(value, str):
        return ExecutorTarget(value, None, where)
    ((kind, address),) = value.items()
    return ExecutorTarget(kind, address, where)


def _catalog(spec: Optional[str], results_dir: str) -> CatalogTarget:
    if spec is None:
        return CatalogTarget("sqlite", os.path.join(results_dir, "catalog.sqlite"))
    if spec.startswith("postgresql://"):
        return CatalogTarget("postgresql", spec)
    if spec.startswith("sqlite:///"):
        return CatalogTarget("sqlite", spec[len("sqlite:///") :])
    return CatalogTarget("sqlite", spec)
