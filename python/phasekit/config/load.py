"""Loading a configuration from a YAML file, YAML text or a mapping into the models."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Optional, TypeVar, Union

from pydantic import BaseModel, ValidationError

from phasekit.config.messages import combine, problems
from phasekit.config.model import (
    ContainerSettings,
    DataFlowConfig,
    PhaseConfig,
    PhaseDefaults,
    PhaseParams,
    StorageStrategy,
    WorkflowConfig,
)
from phasekit.config.vocab import show, type_name
from phasekit.config.yamlsource import Lines, parse_yaml
from phasekit.errors import ConfigError

Source = Union[str, "os.PathLike[str]", Mapping[str, Any], WorkflowConfig]
M = TypeVar("M", bound=BaseModel)

_SUFFIXES = (".yaml", ".yml", ".json")

#: Sections that :func:`load_section` validates on their own.
SECTIONS: dict[str, type[BaseModel]] = {
    "data_flow": DataFlowConfig,
    "storage_strategy": StorageStrategy,
    "phase": PhaseConfig,
    "phase_config": PhaseParams,
    "phase_defaults": PhaseDefaults,
    "container": ContainerSettings,
}


def _read(source: Union[str, os.PathLike[str]]) -> tuple[Any, Lines, str]:
    """``(data, lines, origin)`` of a file path or YAML text."""
    is_file = isinstance(source, os.PathLike) or (
        "\n" not in source and (source.endswith(_SUFFIXES) or os.path.isfile(source))
    )
    if not is_file:
        text = str(source)
        if "\n" not in text and ":" not in text and "{" not in text:
            raise ConfigError(f"config file {text!r} does not exist")
        data, lines = parse_yaml(text, "config")
        return data, lines, ""
    path = Path(source)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file {str(path)!r} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {str(path)!r} cannot be read: {exc}") from None
    data, lines = parse_yaml(text, str(path))
    return data, lines, str(path)


def validate(
    model: type[M],
    data: Any,
    *,
    origin: str = "",
    lines: Optional[Lines] = None,
    prefix: tuple[Any, ...] = (),
) -> M:
    """Validate ``data`` as ``model``; any problem becomes one ConfigError listing them all.

    ``prefix`` is prepended to every path (e.g. ``("phase_overrides", "search")``) and
    ``origin`` names the file or the source of the data in the message.
    """
    if not isinstance(data, Mapping):
        where = f"{origin}: " if origin else ""
        at = f"{'.'.join(map(str, prefix))}: " if prefix else ""
        raise ConfigError(
            f"{where}{at}expected a mapping of configuration keys, got {show(data)} "
            f"({type_name(data)})"
        )
    try:
        return model.model_validate(dict(data))
    except ValidationError as exc:
        raise ConfigError(combine(problems(exc, model, prefix, lines), origin)) from None


def load_config(source: Source) -> WorkflowConfig:
    """Load and validate a whole configuration.

    ``source`` is a path (``str`` ending in .yaml/.yml/.json or naming an existing file,
    or any ``os.PathLike``), YAML text, a mapping, or an already loaded WorkflowConfig.
    Every problem is reported at once in one :class:`~phasekit.errors.ConfigError`.
    """
    if isinstance(source, WorkflowConfig):
        return source
    if isinstance(source, Mapping):
        return validate(WorkflowConfig, source)
    if not isinstance(source, (str, os.PathLike)):
        raise ConfigError(
            f"a configuration is a path, YAML text or a mapping, got {type_name(source)}"
        )
    data, lines, origin = _read(source)
    return validate(WorkflowConfig, data, origin=origin, lines=lines)


def load_section(section: str, data: Any) -> BaseModel:
    """Validate one section on its own (e.g. a seed's ``data_flow`` or ``storage_strategy``
    dict); ``section`` is one of :data:`SECTIONS`. Paths in errors start at the section."""
    if section not in SECTIONS:
        raise ConfigError(
            f"unknown configuration section {section!r}; sections: {', '.join(SECTIONS)}"
        )
    prefix = (section,) if section in ("data_flow", "storage_strategy") else ()
    return validate(SECTIONS[section], data, prefix=prefix)
