"""YAML text to Python data, with the line of every key and an error on duplicate keys."""

from __future__ import annotations

from typing import Any

import yaml

from phasekit.errors import ConfigError

Lines = dict[tuple[Any, ...], int]


def parse_yaml(text: str, origin: str) -> tuple[Any, Lines]:
    """``(data, lines)``: the document and the 1-based line of each key/item path.

    A YAML syntax error or a key repeated in one mapping raises ConfigError naming
    ``origin`` and the line (PyYAML would silently keep the last duplicate).
    """
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return {}, {}
        lines: Lines = {}
        _walk(node, (), lines, origin)
        return loader.construct_document(node), lines
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = exc.problem or exc.context or "cannot be parsed"
        raise ConfigError(f"{origin}{where}: not valid YAML: {problem}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{origin}: not valid YAML: {exc}") from None
    finally:
        loader.dispose()


def _walk(node: yaml.Node, path: tuple[Any, ...], lines: Lines, origin: str) -> None:
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        seen: dict[Any, int] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                continue
            key = key_node.value
            line = key_node.start_mark.line + 1
            if key in seen and key != "<<":
                raise ConfigError(
                    f"{origin} line {line}: duplicate key {key!r} (first set at line "
                    f"{seen[key]}); a key may appear once in a mapping"
                )
            seen[key] = line
            _walk(value_node, (*path, key), lines, origin)
            lines[(*path, key)] = line
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _walk(item, (*path, index), lines, origin)
