"""Loading a configuration from a YAML file, YAML text or a mapping into the models."""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple, Optional, TypeVar, Union

from pydantic import BaseModel, ValidationError

from phasekit.config.admf import Unsupported, foreign_section, unsupported_sections, without
from phasekit.config.fields import is_unsupported
from phasekit.config.limits import MAX_CONFIG_BYTES, MAX_PROBLEMS, MAX_UNKNOWN_SHOWN, clip
from phasekit.config.messages import combine, describe, format_path, model_at, problems
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


#: How many rounds of setting keys aside :func:`load_config_shown` makes (a key inside a
#: section only shows once the section around it validates).
_SHOWN_ROUNDS = 8

_NOT_SUPPORTED = "not supported by phasekit: "


class ShownLoad(NamedTuple):
    """What :func:`load_config_shown` returns: the configuration without what phasekit
    does not support, that (in the file's paths) and the index in the file of each
    phase left (for the paths of provenance)."""

    config: WorkflowConfig
    unsupported: tuple[Unsupported, ...]
    phase_positions: Optional[tuple[int, ...]]


def load_config_shown(source: Source) -> ShownLoad:
    """Load a configuration for ``phasekit config show``: what phasekit does not support is
    set aside and returned, each with what phasekit offers instead, and the rest is
    validated as :func:`load_config` validates it.

    Set aside: the design notes' source project's sections
    (:func:`phasekit.config.admf.unsupported_sections`), the keys and values its
    vocabulary maps to nothing (refused by their validators) and, in a file that has one
    of those (a file of the source project's), any other key or value phasekit does not
    accept. In any other file every problem is still a ConfigError, as in ``run``.
    """
    if isinstance(source, WorkflowConfig):
        return ShownLoad(source, (), None)
    lines: Optional[Lines] = None
    if isinstance(source, Mapping):
        data: Any = source
        origin = ""
    elif isinstance(source, (str, os.PathLike)):
        data, lines, origin = _read(source)
    else:
        raise ConfigError(
            f"a configuration is a path, YAML text or a mapping, got {type_name(source)}"
        )
    if not isinstance(data, Mapping):
        return ShownLoad(validate(WorkflowConfig, data, origin=origin, lines=lines), (), None)
    found = [_at_line(item, lines) for item in unsupported_sections(data)]
    kept = _kept_phases(data, found)
    data = without(data, found)
    for _ in range(_SHOWN_ROUNDS):
        _many_unknown(WorkflowConfig, data, origin, ())
        try:
            config = WorkflowConfig.model_validate(data)
            return ShownLoad(config, tuple(found), tuple(kept) if config.phases else None)
        except ValidationError as exc:
            keys = _set_aside(exc, data, source_project=bool(found))
            if keys is None:
                raise ConfigError(_message(exc, WorkflowConfig, (), lines, origin)) from None
            data = without(data, keys)
            found.extend(_at_line(_in_file(item, kept), lines) for item in keys)
    raise ConfigError(f"{origin or 'config'}: too many unsupported keys nested in each other")


def _at_line(item: Unsupported, lines: Optional[Lines]) -> Unsupported:
    line = lines.get(item.path) if lines else None
    return Unsupported(item.path, item.reason, line)


def _kept_phases(data: Mapping[str, Any], found: list[Unsupported]) -> list[int]:
    """The index in the file of each phase left once ``found`` is set aside."""
    phases = data.get("phases")
    if not isinstance(phases, list):
        return []
    gone = {f.path[1] for f in found if len(f.path) == 2 and f.path[0] == "phases"}
    return [i for i in range(len(phases)) if i not in gone]


def _in_file(item: Unsupported, kept: list[int]) -> Unsupported:
    """``item`` with its path in the file (a phase's index before phases were set aside)."""
    path = item.path
    if len(path) > 1 and path[0] == "phases" and isinstance(path[1], int) and path[1] < len(kept):
        path = ("phases", kept[path[1]], *path[2:])
    return Unsupported(path, item.reason, item.line)


def _present(data: Any, path: tuple[Any, ...]) -> bool:
    for part in path:
        if isinstance(data, Mapping) and part in data:
            data = data[part]
        elif isinstance(data, list) and isinstance(part, int) and 0 <= part < len(data):
            data = data[part]
        else:
            return False
    return bool(path)


def _set_aside(
    exc: ValidationError, data: Any, *, source_project: bool
) -> Optional[list[Unsupported]]:
    """The keys of ``exc``'s problems to set aside, or None when one of them cannot be:
    a problem of the unsupported vocabulary always can; any other only in a file of the
    source project's, and only where a key holds it (a missing key cannot be set aside)."""
    errors = exc.errors()
    marked = [is_unsupported(e) for e in errors]
    if not all(marked) and not (source_project or any(marked)):
        return None
    out = []
    for error in errors:
        loc = tuple(p for p in error["loc"] if p != "[key]")
        if not _present(data, loc):
            return None
        _parts, text, _line = describe(error, WorkflowConfig)
        out.append(Unsupported(loc, text.removeprefix(_NOT_SUPPORTED)))
    return out


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
