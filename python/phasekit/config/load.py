"""Loading a configuration from a YAML file, YAML text or a mapping into the models."""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Optional, TypeVar, Union

from pydantic import BaseModel, ValidationError

from phasekit.config.admf import foreign_section
from phasekit.config.limits import MAX_CONFIG_BYTES, MAX_PROBLEMS, MAX_UNKNOWN_SHOWN, clip
from phasekit.config.messages import combine, format_path, model_at, problems
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


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def read_config_file(path: Path) -> str:
    """The text of a configuration file: a regular file of at most MAX_CONFIG_BYTES of
    UTF-8. A FIFO, device or folder is refused without opening it for a blocking read."""
    name = clip(repr(str(path)))
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise ConfigError(f"config file {name} does not exist") from None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"config file {name} cannot be read: {clip(str(exc))}") from None
    if not stat.S_ISREG(st.st_mode):
        raise ConfigError(f"config file {name} is {_kind(st.st_mode)}; give a regular file")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise ConfigError(f"config file {name} cannot be read: {exc.strerror or exc}") from None
    try:
        st = os.fstat(fd)  # what was opened, should the path have changed meanwhile
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError(f"config file {name} is {_kind(st.st_mode)}; give a regular file")
        if st.st_size > MAX_CONFIG_BYTES:
            raise ConfigError(
                f"config file {name} holds {st.st_size:,} bytes; a configuration may hold "
                f"at most {MAX_CONFIG_BYTES:,}"
            )
        data = os.read(fd, MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"config file {name} cannot be read: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(
            f"config file {name} holds more than {MAX_CONFIG_BYTES:,} bytes; a configuration "
            "may hold at most that many"
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ConfigError(
            f"config file {name} line {line}: not UTF-8 text ({exc.reason})"
        ) from None


def _is_file_name(source: Union[str, os.PathLike[str]]) -> bool:
    if isinstance(source, os.PathLike):
        return True
    if "\n" in source or len(source) > 4096:
        return False
    return source.endswith(_SUFFIXES) or os.path.lexists(source)


def _read(source: Union[str, os.PathLike[str]]) -> tuple[Any, Lines, str]:
    """``(data, lines, origin)`` of a file path or YAML text."""
    if not _is_file_name(source):
        text = str(source)
        if "\n" not in text and ":" not in text and "{" not in text:
            raise ConfigError(f"config file {clip(repr(text))} does not exist")
        data, lines = parse_yaml(text, "config")
        return data, lines, ""
    path = Path(source)
    text = read_config_file(path)
    data, lines = parse_yaml(text, clip(str(path)))
    return data, lines, clip(str(path))


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
    _many_unknown(model, data, origin, prefix)
    try:
        return model.model_validate(dict(data))
    except ValidationError as exc:
        raise ConfigError(_message(exc, model, prefix, lines, origin)) from None


def _message(
    exc: ValidationError,
    model: type[BaseModel],
    prefix: tuple[Any, ...],
    lines: Optional[Lines],
    origin: str,
) -> str:
    """The error text: every problem, or with more than MAX_PROBLEMS the first ones (and
    one line when all are unknown keys), so that no input makes the message huge."""
    count = exc.error_count()
    if count <= MAX_PROBLEMS:
        return combine(problems(exc, model, prefix, lines), origin)
    errors = exc.errors()
    if all(e["type"] == "extra_forbidden" for e in errors):
        where = f"{origin}: " if origin else ""
        shown = ", ".join(
            clip(format_path((*prefix, *e["loc"])), 60) for e in errors[:MAX_UNKNOWN_SHOWN]
        )
        return f"{where}{count:,} unknown keys, the first {MAX_UNKNOWN_SHOWN}: {shown}"
    found = problems(exc, model, prefix, lines, limit=MAX_PROBLEMS)
    return combine([*found, f"... and {count - MAX_PROBLEMS:,} more problems"], origin)


def _many_unknown(model: type[BaseModel], data: Mapping[Any, Any], origin: str, at: Any) -> None:
    """One line for a mapping, at any depth, with more unknown keys than MAX_PROBLEMS (say
    200,000): the first MAX_UNKNOWN_SHOWN of them, found before validating the rest."""
    known = model.model_fields
    if model.model_config.get("extra") == "forbid" and len(data) > MAX_PROBLEMS:
        unknown = [key for key in data if key not in known]
        if len(unknown) > MAX_PROBLEMS:
            where = f"{origin}: " if origin else ""
            level = format_path(tuple(at)) if at else "the top level"
            shown = ", ".join(clip(repr(k), 40) for k in unknown[:MAX_UNKNOWN_SHOWN])
            raise ConfigError(
                f"{where}{len(unknown):,} unknown keys at {clip(level, 80)}, the first "
                f"{MAX_UNKNOWN_SHOWN}: {shown} (allowed keys: {', '.join(sorted(known))})"
            )
    for key, value in data.items():
        if key not in known:
            continue
        sub = model_at(model, (key,))
        if sub is not None and isinstance(value, Mapping):
            _many_unknown(sub, value, origin, (*at, key))
            continue
        if isinstance(value, Mapping):
            items: Any = value.items()
        elif isinstance(value, list):
            items = enumerate(value)
        else:
            continue
        for index, item in items:
            sub = model_at(model, (key, index))
            if sub is not None and isinstance(item, Mapping):
                _many_unknown(sub, item, origin, (*at, key, index))


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
    _refuse_foreign(data, lines, origin)
    return validate(WorkflowConfig, data, origin=origin, lines=lines)


def _refuse_foreign(data: Any, lines: Lines, origin: str) -> None:
    """One line for a file of the design notes' source project with a section phasekit
    does not support (:data:`phasekit.config.admf.FOREIGN_SECTIONS`)."""
    if not isinstance(data, Mapping):
        return
    found = foreign_section(data)
    if found is None:
        return
    key, instead = found
    line = lines.get(tuple(key.split(".")))
    where = f"{origin or 'config'}" + (f" line {line}" if line else "")
    raise ConfigError(
        f"{where}: section {key!r} (the design notes' source project's) is not supported "
        f"by phasekit: {instead}"
    )


def load_section(section: str, data: Any) -> BaseModel:
    """Validate one section on its own (e.g. a seed's ``data_flow`` or ``storage_strategy``
    dict); ``section`` is one of :data:`SECTIONS`. Paths in errors start at the section."""
    if section not in SECTIONS:
        raise ConfigError(
            f"unknown configuration section {section!r}; sections: {', '.join(SECTIONS)}"
        )
    prefix = (section,) if section in ("data_flow", "storage_strategy") else ()
    return validate(SECTIONS[section], data, prefix=prefix)
