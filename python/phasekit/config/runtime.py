"""Runtime arguments (``--set path=value``): parsing, and sorting them by scope.

A runtime path whose first key is a setting or run parameter (``data_flow.mode``,
``results_storage``, ``event_tracing``, ``strategy.fast``, ``data_split``...) applies to
every phase and container above all configured levels; ``phase_overrides.<phase>.<key>``
(or ``phases.<phase>.<key>``) to one phase; ``containers.<pattern>.<key>`` to the
containers that pattern selects. Any other path (``results_dir``, ``workers``,
``phases[0].sequence``...) replaces that value in the configuration before validation.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml
from pydantic import BaseModel

from phasekit.config.messages import format_path
from phasekit.config.model import PhaseParams, WorkflowConfig
from phasekit.config.params import Objective
from phasekit.config.vocab import unknown_key_message
from phasekit.errors import ConfigError

_TOKEN = re.compile(r"\[(\d+)\]|\[\"([^\"]*)\"\]|\['([^']*)'\]|([^.\[\]]+)")
_SCOPED = ("phase_overrides", "phases", "containers")


def parse_set_args(items: Iterable[str]) -> dict[str, Any]:
    """``["data_flow.mode=file", "workers=4"]`` -> ``{"data_flow.mode": "file", "workers": 4}``.

    Values are read as YAML (``4`` is an integer, ``[FILL, POSITION_OPEN]`` a list,
    ``true`` a boolean); text that is not valid YAML stays a string.
    """
    out: dict[str, Any] = {}
    for item in items:
        path, sep, text = item.partition("=")
        if not sep or not path.strip():
            raise ConfigError(f"--set {item!r}: expected path=value, e.g. data_flow.mode=file")
        try:
            value = yaml.safe_load(text) if text.strip() else ""
        except yaml.YAMLError:
            value = text
        out[path.strip()] = value
    return out


def split_path(path: str) -> list[Any]:
    """``phases[1].data_flow.mode`` -> ``['phases', 1, 'data_flow', 'mode']``;
    ``parameter_space["strategy.fast"]`` keeps the quoted key whole."""
    parts: list[Any] = []
    pos = 0
    for match in _TOKEN.finditer(path):
        gap = path[pos : match.start()]
        if gap not in ("", "."):
            break
        index, dq, sq, plain = match.groups()
        parts.append(int(index) if index is not None else dq if dq is not None else sq or plain)
        pos = match.end()
    if pos != len(path) or not parts:
        raise ConfigError(
            f"--set {path!r}: not a valid path such as data_flow.mode or phases[0].name"
        )
    return parts


def _scoped_name(path: str, prefix: str, known: Iterable[str]) -> tuple[str, list[Any]]:
    """Split ``<prefix>.<name>.<rest>`` where ``name`` may contain dots (longest known first)."""
    rest = path[len(prefix) + 1 :]
    for name in sorted(known, key=len, reverse=True):
        if rest.startswith(name + "."):
            return name, split_path(rest[len(name) + 1 :])
    parts = split_path(rest)
    if len(parts) < 2 or not isinstance(parts[0], str):
        raise ConfigError(f"--set {path!r}: expected {prefix}.<name>.<key>")
    return parts[0], parts[1:]


def set_in(data: dict[str, Any], parts: list[Any], value: Any, path: str) -> None:
    """Set ``value`` at ``parts`` inside nested dicts/lists, creating mappings as needed."""
    node: Any = data
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if isinstance(part, int):
            if not isinstance(node, list) or not -len(node) <= part < len(node):
                size = len(node) if isinstance(node, list) else 0
                where = format_path(tuple(parts[:i]))
                raise ConfigError(f"--set {path!r}: {where} has no item {part} ({size} items)")
            if last:
                node[part] = value
            else:
                node = node[part]
            continue
        if not isinstance(node, dict):
            where = format_path(tuple(parts[:i]))
            raise ConfigError(f"--set {path!r}: {where} is not a mapping")
        if last:
            node[part] = value
        else:
            child = node.get(part)
            if not isinstance(child, (dict, list)):
                child = node[part] = {}
            node = child


def raw_of(value: Any) -> Any:
    """A model as the nested dicts that validate back into it (only the keys set)."""
    if isinstance(value, BaseModel) and not isinstance(value, Objective):
        return {name: raw_of(getattr(value, name)) for name in value.model_fields_set}
    if isinstance(value, list):
        return [raw_of(v) for v in value]
    if isinstance(value, dict):
        return {k: raw_of(v) for k, v in value.items()}
    return value


@dataclass
class RuntimeArgs:
    """Runtime arguments sorted by scope (raw dicts, validated by the resolver)."""

    everywhere: dict[str, Any] = field(default_factory=dict)
    phases: dict[str, dict[str, Any]] = field(default_factory=dict)
    containers: dict[str, dict[str, Any]] = field(default_factory=dict)
    model: list[tuple[str, list[Any], Any]] = field(default_factory=list)


def sort_runtime(
    runtime: Mapping[str, Any], phase_names: Iterable[str], patterns: Iterable[str]
) -> RuntimeArgs:
    out = RuntimeArgs()
    phase_names, patterns = list(phase_names), list(patterns)
    params = tuple(PhaseParams.model_fields)
    top = tuple(WorkflowConfig.model_fields)
    for path, value in runtime.items():
        if not isinstance(path, str):
            raise ConfigError(f"runtime argument {path!r}: a path must be a string")
        parts = split_path(path)
        head = parts[0]
        if head in params:
            set_in(out.everywhere, parts, value, path)
        elif head in ("phase_overrides", "phases") and len(parts) > 1 and isinstance(parts[1], str):
            name, rest = _scoped_name(path, head, phase_names)
            set_in(out.phases.setdefault(name, {}), rest, value, path)
        elif head == "containers":
            pattern, rest = _scoped_name(path, head, patterns)
            set_in(out.containers.setdefault(pattern, {}), rest, value, path)
        elif head in top:
            out.model.append((path, parts, value))
        else:
            raise ConfigError(f"--set {path!r}: " + unknown_key_message(head, top))
    return out


def patch_model(config: WorkflowConfig, model_args: list[tuple[str, list[Any], Any]]) -> Any:
    """The configuration's raw form with the structural runtime arguments applied."""
    raw = raw_of(config)
    for path, parts, value in model_args:
        set_in(raw, parts, value, path)
    return raw
