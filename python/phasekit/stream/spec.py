"""Building a Dag from a description (a dict, or YAML): what a ``topology: stream`` phase runs.

    name: bars
    capacity: 1024            # default edge capacity (optional)
    batch_size: 256           # optional
    nodes:
      - id: ticks
        type: mypkg.feeds:tick_feed      # module:callable, or a built-in type name
        args: {symbols: [AAPL, MSFT]}    # with args, type(**args) builds the node
      - id: dedupe
        type: dedupe
        args: {key: id, last_n: 10000}
        inputs: [ticks]
      - id: bars
        type: ohlc_resample
        args: {interval: 1m, by: symbol}
        inputs: [dedupe]
      - id: out
        type: mypkg.sinks:BarWriter
        inputs: [bars]
    edges:                               # optional, same as inputs
      - {from: bars, to: out, port: out, capacity: 64}

``nodes`` may also be a mapping ``id -> node``. ``inputs`` entries are ``"node"`` or
``"node:port"``. ``kind`` (source, transform, sink) is inferred from the edges when
left out: no input means source, no output means sink. Other node keys are passed to
``add_source``/``add_node``/``add_sink``: parallelism, key, seed, on_error, capacity,
timestamp, outputs, chunk. Arguments named fn, predicate, aggregate, cost, init,
key, timestamp (and the values of a router's routes) may be ``"module:callable"``
strings; ``key``/``timestamp`` without a colon are field names.
"""

from __future__ import annotations

import importlib
import os
import re
from collections.abc import Mapping
from typing import Any, Callable, Optional

from phasekit.errors import ConfigError, InvalidArgument, StreamError
from phasekit.stream import connectors, operators

_REF = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")
CALLABLE_ARGS = ("fn", "predicate", "aggregate", "cost", "init", "key", "timestamp")
DAG_KEYS = ("name", "capacity", "batch_size", "nodes", "edges")
NODE_KEYS = (
    "id", "type", "kind", "args", "inputs", "parallelism", "key", "seed", "on_error",
    "capacity", "timestamp", "outputs", "chunk",
)  # fmt: skip
EDGE_KEYS = ("from", "to", "port", "capacity")
OPTION_KEYS = {
    "source": ("parallelism", "on_error", "timestamp", "outputs", "chunk"),
    "transform": ("parallelism", "key", "seed", "on_error", "capacity", "outputs", "timestamp"),
    "sink": ("parallelism", "key", "seed", "on_error", "capacity", "timestamp"),
}


def _range_source(start: int = 0, stop: int = 0, step: int = 1) -> range:
    return range(start, stop, step)


def _list_source(items: list[Any]) -> list[Any]:
    return list(items)


def _discard(item: Any) -> None:
    return None


BUILTINS: dict[str, Callable[..., Any]] = {
    "map": operators.map,
    "filter": operators.filter,
    "flat_map": operators.flat_map,
    "batch": operators.batch,
    "dedupe": operators.dedupe,
    "throttle": operators.throttle,
    "router": operators.router,
    "stateful_map": operators.stateful_map,
    "tumbling": operators.tumbling,
    "sliding": operators.sliding,
    "session": operators.session,
    "ohlc_resample": operators.ohlc_resample,
    "collect": connectors.collect,
    "ipc_sink": connectors.ipc_sink,
    "range": _range_source,
    "list": _list_source,
}
"""Built-in node types by name: called with the node's ``args`` to build the node."""
NO_ARG_BUILTINS: dict[str, Any] = {"discard": _discard, "print": print}
"""Built-in nodes used as they are (no ``args``)."""


def resolve(ref: str, where: str) -> Any:
    """The object named by ``"package.module:attr.path"``."""
    if not isinstance(ref, str) or not _REF.match(ref):
        raise ConfigError(f"{where}: {ref!r} is not a 'module:callable' reference")
    module_name, attr_path = ref.split(":", 1)
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(
            f"{where}: cannot import module {module_name!r} of {ref!r}: {exc}"
        ) from exc
    for part in attr_path.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ConfigError(
                f"{where}: module {module_name!r} has no attribute {attr_path!r} ({ref!r})"
            ) from None
    return obj


def _resolve_args(args: Mapping[str, Any], where: str) -> dict[str, Any]:
    out = dict(args)
    for name in CALLABLE_ARGS:
        value = out.get(name)
        if isinstance(value, str) and ":" in value:
            out[name] = resolve(value, f"{where}.args.{name}")
    routes = out.get("routes")
    if isinstance(routes, Mapping):
        out["routes"] = {
            port: resolve(v, f"{where}.args.routes.{port}") if isinstance(v, str) else v
            for port, v in routes.items()
        }
    return out


def _check_keys(value: Any, allowed: tuple[str, ...], where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__}")
    unknown = [k for k in value if k not in allowed]
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r}; allowed: {', '.join(allowed)}")
    return value


def _node_list(spec: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
    nodes = spec.get("nodes")
    items: list[tuple[str, Mapping[str, Any]]] = []
    if isinstance(nodes, Mapping):
        for node_id, node in nodes.items():
            where = f"nodes.{node_id}"
            node = dict(_check_keys(node, NODE_KEYS, where))
            if "id" in node and node["id"] != node_id:
                raise ConfigError(f"{where}: id {node['id']!r} differs from its key {node_id!r}")
            node["id"] = node_id
            items.append((where, node))
        return items
    if isinstance(nodes, list):
        for i, node in enumerate(nodes):
            where = f"nodes[{i}]"
            _check_keys(node, NODE_KEYS, where)
            if not isinstance(node.get("id"), str):
                raise ConfigError(f"{where}: 'id' (a string) is required")
            items.append((f"{where} ({node['id']!r})", node))
        return items
    raise ConfigError("stream spec: 'nodes' (a list or a mapping of id -> node) is required")


def _edges(
    spec: Mapping[str, Any], nodes: list[tuple[str, Mapping[str, Any]]]
) -> list[dict[str, Any]]:
    edges: list[dict[str, Any]] = []
    for where, node in nodes:
        inputs = node.get("inputs", [])
        if isinstance(inputs, str):
            inputs = [inputs]
        if not isinstance(inputs, list):
            raise ConfigError(f"{where}.inputs: expected a list of 'node' or 'node:port'")
        for ref in inputs:
            if not isinstance(ref, str):
                raise ConfigError(f"{where}.inputs: expected 'node' or 'node:port', got {ref!r}")
            src, _, port = ref.partition(":")
            edges.append({"from": src, "to": node["id"], "port": port or "out", "where": where})
    raw = spec.get("edges", [])
    if not isinstance(raw, list):
        raise ConfigError("edges: expected a list of {from, to, port, capacity}")
    for i, edge in enumerate(raw):
        where = f"edges[{i}]"
        _check_keys(edge, EDGE_KEYS, where)
        if not isinstance(edge.get("from"), str) or not isinstance(edge.get("to"), str):
            raise ConfigError(f"{where}: 'from' and 'to' (node ids) are required")
        edges.append({"port": "out", **edge, "where": where})
    return edges


def _infer_kind(node: Mapping[str, Any], edges: list[dict[str, Any]], where: str) -> str:
    kind = node.get("kind")
    if kind is not None:
        if kind not in ("source", "transform", "sink"):
            raise ConfigError(f"{where}.kind: {kind!r} is not one of source, transform, sink")
        return str(kind)
    has_in = any(e["to"] == node["id"] for e in edges)
    has_out = any(e["from"] == node["id"] for e in edges)
    if not has_in:
        return "source"
    return "transform" if has_out else "sink"


def _build_node(
    node: Mapping[str, Any], where: str, bindings: Optional[Mapping[str, Any]] = None
) -> Any:
    type_ = node.get("type")
    if bindings and isinstance(type_, str) and type_ in bindings:
        if node.get("args"):
            raise ConfigError(f"{where}: {type_!r} takes no args")
        return bindings[type_]
    if not isinstance(type_, str):
        raise ConfigError(
            f"{where}.type: required; a built-in name ({', '.join(sorted(BUILTINS))}, "
            f"{', '.join(sorted(NO_ARG_BUILTINS))}) or 'module:callable'"
        )
    args = node.get("args")
    if args is not None and not isinstance(args, Mapping):
        raise ConfigError(f"{where}.args: expected a mapping of keyword arguments")
    if type_ in NO_ARG_BUILTINS:
        if args:
            raise ConfigError(f"{where}: built-in {type_!r} takes no args")
        return NO_ARG_BUILTINS[type_]
    if type_ in BUILTINS:
        factory: Any = BUILTINS[type_]
        args = args or {}
    elif ":" in type_:
        factory = resolve(type_, f"{where}.type")
        if args is None:
            return factory
    else:
        raise ConfigError(
            f"{where}.type: unknown type {type_!r}; use a built-in name "
            f"({', '.join(sorted(BUILTINS))}, {', '.join(sorted(NO_ARG_BUILTINS))}) "
            "or 'module:callable'"
        )
    try:
        return factory(**_resolve_args(args, where))
    except (InvalidArgument, TypeError) as exc:
        raise ConfigError(
            f"{where}: cannot build {type_!r} from args {dict(args)!r}: {exc}"
        ) from exc


def build_dag(
    spec: Mapping[str, Any], cls: Any, bindings: Optional[Mapping[str, Any]] = None
) -> Any:
    """A Dag (of class ``cls``) from a description; ConfigError names the bad path.
    ``bindings``: node types the caller provides (name -> the node, used as it is)."""
    _check_keys(spec, DAG_KEYS, "stream spec")
    nodes = _node_list(spec)
    edges = _edges(spec, nodes)
    try:
        dag = cls(
            str(spec.get("name", "dag")),
            capacity=spec.get("capacity"),
            batch_size=spec.get("batch_size"),
        )
    except InvalidArgument as exc:
        raise ConfigError(f"stream spec: {exc}") from exc
    for where, node in nodes:
        kind = _infer_kind(node, edges, where)
        impl = _build_node(node, where, bindings)
        options = {k: node[k] for k in OPTION_KEYS[kind] if k in node}
        for name in ("key", "timestamp"):
            if isinstance(options.get(name), str) and ":" in options[name]:
                options[name] = resolve(options[name], f"{where}.{name}")
        bad = [k for k in NODE_KEYS[5:] if k in node and k not in OPTION_KEYS[kind]]
        if bad:
            raise ConfigError(f"{where}: {bad[0]!r} does not apply to a {kind}")
        add = {"source": dag.add_source, "transform": dag.add_node, "sink": dag.add_sink}[kind]
        try:
            add(node["id"], impl, **options)
        except (InvalidArgument, StreamError) as exc:
            raise ConfigError(f"{where}: {exc}") from exc
    for edge in edges:
        try:
            dag.connect(edge["from"], edge["to"], port=edge["port"], capacity=edge.get("capacity"))
        except (InvalidArgument, StreamError) as exc:
            raise ConfigError(f"{edge['where']}: {exc}") from exc
    dag.validate()
    return dag


def load_yaml(source: Any) -> Mapping[str, Any]:
    """A spec from YAML text or a path to a YAML file."""
    import yaml

    text = source
    if isinstance(source, os.PathLike) or (
        isinstance(source, str) and "\n" not in source and os.path.isfile(source)
    ):
        with open(source, encoding="utf-8") as fh:
            text = fh.read()
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"stream spec: invalid YAML: {exc}") from exc
    if not isinstance(data, Mapping):
        raise ConfigError("stream spec: the YAML document must be a mapping")
    return data
