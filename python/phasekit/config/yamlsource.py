"""YAML text to Python data, with the line of every key and an error on duplicate keys.

The text is bounded before it is built (see :mod:`phasekit.config.limits`): its size, a
NUL byte or a character UTF-8 cannot hold, the nesting depth, the number of aliases,
aliases that refer to themselves, and the number of values once every alias is
expanded (a "billion laughs" document). Each is refused with one line naming the
origin and the line.
"""

from __future__ import annotations

from typing import Any, Optional

import yaml

from phasekit.config.limits import MAX_ALIASES, MAX_CONFIG_BYTES, MAX_DEPTH, MAX_NODES, clip
from phasekit.errors import ConfigError

Lines = dict[tuple[Any, ...], int]

_Loader: type[Any] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_OPEN = (yaml.MappingStartEvent, yaml.SequenceStartEvent)
_CLOSE = (yaml.MappingEndEvent, yaml.SequenceEndEvent)
_NODE = (yaml.ScalarEvent, yaml.AliasEvent, *_OPEN)


def _line_of(text: str, index: int) -> int:
    return text.count("\n", 0, index) + 1


def check_text(text: str, origin: str) -> None:
    """Refuse text over the size limit, with a NUL byte or a lone surrogate."""
    if len(text) > MAX_CONFIG_BYTES:
        raise ConfigError(
            f"{origin}: {len(text):,} characters; a configuration may hold at most "
            f"{MAX_CONFIG_BYTES:,} bytes"
        )
    nul = text.find("\x00")
    if nul >= 0:
        raise ConfigError(f"{origin} line {_line_of(text, nul)}: contains a NUL byte")
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise ConfigError(
            f"{origin} line {_line_of(text, exc.start)}: contains {exc.object[exc.start]!r}, "
            "a character UTF-8 cannot hold (a lone surrogate)"
        ) from None
    if size > MAX_CONFIG_BYTES:
        raise ConfigError(
            f"{origin}: {size:,} bytes; a configuration may hold at most {MAX_CONFIG_BYTES:,}"
        )


def _where(origin: str, mark: Any) -> str:
    return f"{origin} line {mark.line + 1}" if mark is not None else origin


def _check_events(text: str, origin: str) -> int:
    """Depth, alias and value counts of the document as written (before building it);
    returns the number of aliases."""
    depth = aliases = nodes = 0
    for event in yaml.parse(text, Loader=_Loader):
        if isinstance(event, _NODE):
            nodes += 1
            if nodes > MAX_NODES:
                raise ConfigError(
                    f"{_where(origin, event.start_mark)}: more than {MAX_NODES:,} values; "
                    "a configuration may hold at most that many"
                )
        if isinstance(event, _OPEN):
            depth += 1
            if depth > MAX_DEPTH:
                raise ConfigError(
                    f"{_where(origin, event.start_mark)}: nested more than {MAX_DEPTH} levels "
                    "deep; a configuration may nest at most that deep"
                )
        elif isinstance(event, _CLOSE):
            depth -= 1
        elif isinstance(event, yaml.AliasEvent):
            aliases += 1
            if aliases > MAX_ALIASES:
                raise ConfigError(
                    f"{_where(origin, event.start_mark)}: more than {MAX_ALIASES:,} aliases; "
                    "a configuration may use at most that many"
                )
    return aliases


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _check_graph(root: yaml.Node, origin: str) -> None:
    """Refuse an alias that contains itself and a document whose aliases expand it past
    :data:`MAX_NODES` values or :data:`MAX_DEPTH` levels (memoised, so linear)."""
    size: dict[int, int] = {}
    depth: dict[int, int] = {}
    active: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        kids = _children(node)
        if done:
            active.discard(key)
            size[key] = 1 + sum(size[id(k)] for k in kids)
            depth[key] = 1 + max((depth[id(k)] for k in kids), default=0)
            if size[key] > MAX_NODES:
                raise ConfigError(
                    f"{_where(origin, node.start_mark)}: its aliases expand to more than "
                    f"{MAX_NODES:,} values; a configuration may hold at most that many"
                )
            if depth[key] > MAX_DEPTH + 1:
                raise ConfigError(
                    f"{_where(origin, node.start_mark)}: its aliases nest it more than "
                    f"{MAX_DEPTH} levels deep; a configuration may nest at most that deep"
                )
            continue
        if key in size:
            continue
        if key in active:
            raise ConfigError(
                f"{_where(origin, node.start_mark)}: an alias refers to a value that contains "
                "it (a recursive anchor); aliases must not contain themselves"
            )
        active.add(key)
        stack.append((node, True))
        stack.extend((kid, False) for kid in kids if id(kid) not in size)


def parse_yaml(text: str, origin: str) -> tuple[Any, Lines]:
    """``(data, lines)``: the document and the 1-based line of each key/item path.

    A YAML syntax error, a key repeated in one mapping (PyYAML would silently keep the
    last one) or a document over the limits raises ConfigError naming ``origin`` and
    the line.
    """
    check_text(text, origin)
    loader: Optional[Any] = None
    try:
        aliases = _check_events(text, origin)
        loader = _Loader(text)
        node = loader.get_single_node()
        if node is None:
            return {}, {}
        if aliases:  # without aliases the document is the tree the events described
            _check_graph(node, origin)
        lines: Lines = {}
        _walk(node, (), lines, origin)
        return loader.construct_document(node), lines
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = exc.problem or exc.context or "cannot be parsed"
        raise ConfigError(f"{origin}{where}: not valid YAML: {clip(problem)}") from None
    except yaml.YAMLError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "cannot be parsed"
        raise ConfigError(f"{origin}: not valid YAML: {clip(first)}") from None
    except ConfigError:
        raise
    except (ValueError, OverflowError) as exc:  # a value YAML reads but Python cannot hold
        raise ConfigError(f"{origin}: not valid YAML: {clip(str(exc))}") from None
    finally:
        if loader is not None:
            loader.dispose()


def _check_scalar(node: yaml.Node, origin: str) -> None:
    """A scalar written with an escape such as "\\ud800" (a lone surrogate) is text no
    file name, catalog row or UTF-8 file can hold."""
    if isinstance(node, yaml.ScalarNode) and isinstance(node.value, str):
        try:
            node.value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ConfigError(
                f"{origin} line {node.start_mark.line + 1}: holds "
                f"{exc.object[exc.start]!r}, a character UTF-8 cannot hold (a lone surrogate)"
            ) from None


def _walk(node: yaml.Node, path: tuple[Any, ...], lines: Lines, origin: str) -> None:
    lines[path] = node.start_mark.line + 1
    _check_scalar(node, origin)
    if isinstance(node, yaml.MappingNode):
        seen: dict[Any, int] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                continue
            _check_scalar(key_node, origin)
            key = key_node.value
            line = key_node.start_mark.line + 1
            if key in seen and key != "<<":
                raise ConfigError(
                    f"{origin} line {line}: duplicate key {clip(repr(key))} (first set at "
                    f"line {seen[key]}); a key may appear once in a mapping"
                )
            seen[key] = line
            _walk(value_node, (*path, key), lines, origin)
            lines[(*path, key)] = line
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _walk(item, (*path, index), lines, origin)
