"""Configuration: one validated model, resolved once into alias-free settings.

Public API::

    load_config(source) -> WorkflowConfig        # YAML path or text, mapping
    resolve(config, workflow_defaults=None, runtime=None) -> ResolvedConfig
    ResolvedConfig.phase(name) -> ResolvedPhase
    ResolvedConfig.container(phase, container_id) -> ResolvedContainer
    parse_set_args(["path=value", ...]) -> runtime dict
    load_section(section, data)                  # a seed's data_flow / storage_strategy dict

Aliases (folded by :mod:`phasekit.config.layers`; later layers never see them):

* ``results_storage: disk`` is ``data_flow.mode: file``; ``results_storage: memory`` is
  ``data_flow.mode: memory``.
* ``storage_strategy.mode``: ``persist`` is ``data_flow.mode: file``, ``memory`` and
  ``hybrid`` are the same modes.
* ``data_flow.default_mode`` is ``data_flow.mode``.
* ``data_flow.memory_limit_mb``, ``data_flow.default_memory_limit_mb`` and
  ``data_flow.memory_settings.max_size_mb`` are one setting (``memory_limit_mb``).
* ``storage_strategy.persist_intermediate_results`` is
  ``data_flow.persistence.save_all_phases``.
* ``file_settings.compression: none`` (or null) means uncompressed; ``catalog:
  postgres://`` is ``postgresql://``; ``workers: auto`` means one per core.

Two spellings of one setting at the same level must agree, else ConfigError.

Precedence, lowest first: package defaults -> workflow defaults of the phase ->
user global (top-level keys) -> ``phases[i].config``, ``phases[i]`` and
``phase_overrides.<phase>`` -> ``containers.<pattern>`` (most specific pattern) ->
runtime arguments. See :mod:`phasekit.config.resolve` for the full list.

Errors are :class:`phasekit.errors.ConfigError` naming the path, the value, what is
allowed and a did-you-mean where one is close.
"""

from __future__ import annotations

from phasekit.config.layers import PACKAGE_DEFAULTS
from phasekit.config.load import SECTIONS, load_config, load_section
from phasekit.config.model import (
    ContainerSettings,
    DataFlowConfig,
    PhaseConfig,
    PhaseDefaults,
    PhaseParams,
    RunParams,
    StorageStrategy,
    WorkflowConfig,
)
from phasekit.config.names import name_problem
from phasekit.config.params import (
    DataConfig,
    MonteCarlo,
    Objective,
    PortfolioConfig,
    StrategyConfig,
    WalkForward,
    check_parameter_space,
)
from phasekit.config.patterns import best_match, specificity
from phasekit.config.provenance import Level, Provenance
from phasekit.config.resolve import resolve
from phasekit.config.resolved import (
    CatalogTarget,
    FileOptions,
    PersistenceOptions,
    ResolvedConfig,
    ResolvedContainer,
    ResolvedDataFlow,
    ResolvedPhase,
    ResolvedSettings,
    StreamingOptions,
)
from phasekit.config.runtime import parse_set_args

__all__ = [
    "PACKAGE_DEFAULTS",
    "SECTIONS",
    "CatalogTarget",
    "ContainerSettings",
    "DataConfig",
    "DataFlowConfig",
    "FileOptions",
    "Level",
    "MonteCarlo",
    "Objective",
    "PersistenceOptions",
    "PhaseConfig",
    "PhaseDefaults",
    "PhaseParams",
    "PortfolioConfig",
    "Provenance",
    "ResolvedConfig",
    "ResolvedContainer",
    "ResolvedDataFlow",
    "ResolvedPhase",
    "ResolvedSettings",
    "RunParams",
    "StorageStrategy",
    "StrategyConfig",
    "StreamingOptions",
    "WalkForward",
    "WorkflowConfig",
    "best_match",
    "check_parameter_space",
    "load_config",
    "load_section",
    "name_problem",
    "parse_set_args",
    "resolve",
    "specificity",
]
