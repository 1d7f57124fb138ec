"""Pydantic validation errors translated into ConfigError text: path, value, what is allowed."""

from __future__ import annotations

import re
import types
from typing import Annotated, Any, Optional, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError

from phasekit.config.fields import ERROR_TYPE
from phasekit.config.limits import clip
from phasekit.config.vocab import show, type_name, unknown_key_message
from phasekit.config.yamlsource import Lines

_UNIONS = (Union, getattr(types, "UnionType", Union))  # X | Y exists from Python 3.10
_PLAIN_KEY = re.compile(r"^[A-Za-z0-9_*?\[\]!-]+$")


def format_path(parts: tuple[Any, ...]) -> str:
    """``('phases', 1, 'data_flow', 'mode')`` -> ``phases[1].data_flow.mode``."""
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _PLAIN_KEY.match(str(part)):
            out += ("." if out else "") + clip(str(part), 60)
        else:
            out += f"[{clip(repr(str(part)), 60)}]"
    return out


def _strip(tp: Any) -> Any:
    while True:
        origin = get_origin(tp)
        if origin is Annotated:
            tp = get_args(tp)[0]
        elif origin in _UNIONS:
            args = [a for a in get_args(tp) if a is not type(None)]
            if len(args) != 1:
                return tp
            tp = args[0]
        else:
            return tp


def model_at(root: type[BaseModel], parts: tuple[Any, ...]) -> Optional[type[BaseModel]]:
    """The model class found at ``parts`` below ``root`` (None if not a model)."""
    tp: Any = root
    for part in parts:
        tp = _strip(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            if part not in tp.model_fields:
                return None
            tp = tp.model_fields[part].annotation
        elif get_origin(tp) is list:
            tp = get_args(tp)[0]
        elif get_origin(tp) is dict:
            tp = get_args(tp)[1]
        else:
            return None
    tp = _strip(tp)
    return tp if isinstance(tp, type) and issubclass(tp, BaseModel) else None


def _belongs_under(model: type[BaseModel], key: str, depth: int = 2) -> Optional[str]:
    """The dotted path of a sub-model of ``model`` (up to ``depth`` levels) that has ``key``."""
    level: list[tuple[str, type[BaseModel]]] = [("", model)]
    for _ in range(depth):
        below = []
        for path, current in level:
            for name in current.model_fields:
                sub = model_at(current, (name,))
                if sub is None or sub is current:
                    continue
                where = f"{path}.{name}" if path else name
                if key in sub.model_fields:
                    return where
                below.append((where, sub))
        level = below
    return None


def _unknown_key(root: type[BaseModel], parts: tuple[Any, ...]) -> str:
    key = parts[-1]
    model = model_at(root, parts[:-1])
    if model is None:
        return f"unknown key {show(key)}"
    home = _belongs_under(model, str(key))
    if home is not None and len(parts) > 1:
        home = f"{format_path(parts[:-1])}.{home}"
    return unknown_key_message(key, tuple(model.model_fields), home)


def _describe(error: Any, root: type[BaseModel]) -> tuple[tuple[Any, ...], str]:
    parts = tuple(p for p in error["loc"] if p != "[key]")
    kind = error["type"]
    value = error.get("input")
    if kind == ERROR_TYPE:
        ctx = error["ctx"]
        return (*parts, *ctx.get("sub", ())), str(ctx["message"])
    if kind == "extra_forbidden":
        return parts, _unknown_key(root, parts)
    if kind == "missing":
        return parts, "required key is missing"
    if kind in ("model_type", "dict_type", "model_attributes_type"):
        return parts, f"expected a mapping, got {show(value)} ({type_name(value)})"
    if kind == "list_type":
        return parts, f"expected a list, got {show(value)} ({type_name(value)})"
    return parts, f"{error['msg']}, got {show(value)}"


def _line(lines: Lines, parts: tuple[Any, ...]) -> Optional[int]:
    for cut in range(len(parts), -1, -1):
        if parts[:cut] in lines:
            return lines[parts[:cut]]
    return None


def describe(
    error: Any, root: type[BaseModel], lines: Optional[Lines] = None
) -> tuple[tuple[Any, ...], str, Optional[int]]:
    """One pydantic error as ``(path, message, line)`` (line None when unknown)."""
    parts, text = _describe(error, root)
    return parts, text, _line(lines, parts) if lines else None


def problems(
    exc: ValidationError,
    root: type[BaseModel],
    prefix: tuple[Any, ...] = (),
    lines: Optional[Lines] = None,
    limit: Optional[int] = None,
) -> list[str]:
    """One line per problem: ``path: message`` (with `` (line N)`` when lines are known);
    only the first ``limit`` problems are described when it is given."""
    out = []
    for error in exc.errors()[:limit]:
        parts, text = _describe(error, root)
        path = format_path((*prefix, *parts))
        line = _line(lines, parts) if lines else None
        suffix = f" (line {line})" if line else ""
        out.append(f"{path}: {text}{suffix}" if path else f"{text}{suffix}")
    return list(dict.fromkeys(out))


def combine(lines: list[str], origin: Optional[str] = None) -> str:
    """One message for one or more problems, naming the source when there is one."""
    head = f"{origin}: " if origin else ""
    if len(lines) == 1:
        return head + lines[0]
    where = f" in {origin}" if origin else ""
    return f"{len(lines)} problems{where}:\n" + "\n".join(f"  - {line}" for line in lines)
