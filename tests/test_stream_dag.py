"""Dag building and validation; Dag.from_spec / from_yaml."""

from __future__ import annotations

import pytest

from _stream_support import stream_backend  # noqa: F401
from phasekit.errors import ConfigError, InvalidArgument, StreamError
from phasekit.stream import Dag
from phasekit.stream import operators as ops


def _dag() -> Dag:
    dag = Dag("v")
    dag.add_source("src", range(3))
    dag.add_node("a", lambda x: x)
    dag.add_node("b", lambda x: x)
    dag.add_sink("sink", print)
    return dag


def test_duplicate_ids_and_bad_ids_are_rejected() -> None:
    dag = _dag()
    with pytest.raises(StreamError, match="duplicate node id 'a'"):
        dag.add_node("a", lambda x: x)
    with pytest.raises(InvalidArgument, match="node id"):
        dag.add_node("has space", lambda x: x)
    with pytest.raises(InvalidArgument, match="parallelism"):
        dag.add_node("c", lambda x: x, parallelism=0)
    with pytest.raises(InvalidArgument, match="on_error"):
        dag.add_node("c", lambda x: x, on_error="ignore")


def test_connect_checks_nodes_directions_and_ports() -> None:
    dag = _dag()
    with pytest.raises(StreamError, match="unknown node 'nope'"):
        dag.connect("src", "nope")
    with pytest.raises(StreamError, match="'src' is a source and takes no input"):
        dag.connect("a", "src")
    with pytest.raises(StreamError, match="'sink' is a sink and has no output"):
        dag.connect("sink", "a")
    with pytest.raises(StreamError, match="has no port 'late'"):
        dag.connect("a", "b", port="late")
    dag.connect("src", "a")
    with pytest.raises(StreamError, match="already connected"):
        dag.connect("src", "a")


def test_validate_reports_every_problem_with_node_names() -> None:
    dag = _dag()
    dag.add_source("lonely", range(1))
    dag.connect("src", "a")
    with pytest.raises(StreamError) as info:
        dag.validate()
    text = str(info.value)
    assert "transform 'a': its output is not connected" in text
    assert "transform 'b' has no input" in text
    assert "sink 'sink' has no input" in text
    assert "source 'lonely' has no consumer" in text


def test_cycles_are_found_and_named() -> None:
    dag = _dag()
    dag.add_node("c", lambda x: x)
    dag.chain("src", "a", "b", "c", "sink")
    dag.connect("c", "a")
    with pytest.raises(StreamError, match="cycle: a -> b -> c -> a"):
        dag.validate()


def test_empty_graph_and_graph_without_source() -> None:
    with pytest.raises(StreamError, match="no nodes"):
        Dag("e").validate()
    dag = Dag("e")
    dag.add_sink("s", print)
    with pytest.raises(StreamError, match="no source"):
        dag.validate()


def test_dead_letter_needs_the_errors_port_connected() -> None:
    dag = Dag("d")
    dag.add_source("src", range(3))
    dag.add_node("n", lambda x: x, on_error="dead_letter")
    dag.add_sink("s", print)
    dag.chain("src", "n", "s")
    with pytest.raises(StreamError, match="port 'errors' must be connected"):
        dag.validate()


def test_parallel_source_needs_a_factory() -> None:
    with pytest.raises(InvalidArgument, match="parallelism 2 needs a callable"):
        Dag("p").add_source("src", [1, 2], parallelism=2)


SPEC = {
    "name": "spec",
    "capacity": 8,
    "nodes": [
        {"id": "nums", "type": "_stream_support:numbers", "args": {"n": 10}},
        {"id": "dbl", "type": "map", "args": {"fn": "_stream_support:double"}, "inputs": ["nums"]},
        {
            "id": "route",
            "type": "router",
            "args": {"key": "_stream_support:double", "ports": {0: "zero"}, "default": "rest"},
            "inputs": ["dbl"],
        },
        {"id": "zero", "type": "collect", "inputs": ["route:zero"]},
        {"id": "total", "type": "_stream_support:Total", "inputs": ["route:rest"], "capacity": 2},
    ],
}


@pytest.mark.usefixtures("stream_backend")
def test_from_spec_builds_and_runs() -> None:
    dag = Dag.from_spec(SPEC)
    assert dag.nodes["nums"].kind == "source" and dag.nodes["total"].kind == "sink"
    result = dag.run()
    assert result.results["zero"] == [0]
    assert result.results["total"] == sum(2 * i for i in range(1, 10))
    assert result.queues["total"][0]["capacity"] == 2


@pytest.mark.usefixtures("stream_backend")
def test_from_yaml_with_mapping_nodes_and_edges(tmp_path: object) -> None:
    text = """
name: yamldag
nodes:
  src: {type: range, args: {stop: 100}}
  even: {type: filter, args: {fn: "_stream_support:double"}}
  dd: {type: dedupe, args: {last_n: 3}}
  out: {type: collect}
edges:
  - {from: src, to: even}
  - {from: even, to: dd, capacity: 4}
  - {from: dd, to: out}
"""
    result = Dag.from_yaml(text).run()
    assert result.results["out"] == list(range(1, 100))


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"nodes": []}, "no nodes"),
        ({"nodes": "x"}, "'nodes'"),
        ({"nodes": [{"id": "a", "type": "range", "bogus": 1}]}, r"nodes\[0\]: unknown key 'bogus'"),
        ({"nodes": [{"type": "range"}]}, r"nodes\[0\]: 'id'"),
        ({"nodes": [{"id": "a", "type": "nosuch"}]}, "unknown type 'nosuch'"),
        ({"nodes": [{"id": "a", "type": "nosuch_module_x:f"}]}, "cannot import module"),
        ({"nodes": [{"id": "a", "type": "math:nosuch"}]}, "has no attribute"),
        (
            {"nodes": [{"id": "a", "type": "dedupe", "args": {"last_n": 0}}]},
            "cannot build 'dedupe'",
        ),
        (
            {"nodes": [{"id": "a", "type": "range", "args": {"stop": 2}, "key": "k"}]},
            "'key' does not apply to a source",
        ),
        (
            {
                "nodes": [{"id": "a", "type": "range", "args": {"stop": 2}}],
                "edges": [{"from": "a", "to": "b"}],
            },
            r"edges\[0\].*unknown node 'b'",
        ),
        (
            {"nodes": [{"id": "a", "type": "range", "args": {"stop": 2}}], "extra": 1},
            "unknown key 'extra'",
        ),
    ],
)
def test_bad_specs_raise_config_or_stream_errors_naming_the_place(spec: dict, message: str) -> None:
    with pytest.raises((ConfigError, StreamError), match=message):
        Dag.from_spec(spec)


def test_from_yaml_rejects_invalid_yaml() -> None:
    with pytest.raises(ConfigError, match="invalid YAML"):
        Dag.from_yaml("nodes: [unclosed")


def test_operator_objects_declare_their_ports() -> None:
    dag = Dag("ports")
    dag.add_node("w", ops.tumbling(10, timestamp="t"))
    dag.add_node("r", ops.router({"x": bool}))
    assert dag.nodes["w"].ports == {"out", "late"}
    assert dag.nodes["r"].ports == {"x"} and dag.nodes["r"].required_ports == {"x"}
