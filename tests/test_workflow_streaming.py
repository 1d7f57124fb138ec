"""Streaming between phases and the items of ``topology: stream`` phases."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow.feather as feather
import pytest

from phasekit.catalog import uri_to_path
from phasekit.errors import ConfigError
from phasekit.stream import Dag
from phasekit.workflow import run
from phasekit.workflow.results import read_json


def stream_config(tmp_path: Path, nodes: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "run_name": "sinks",
        "results_dir": str(tmp_path),
        "phases": [{"name": "numbers", "topology": "stream", "dag": {"name": "d", "nodes": nodes}}],
    }


def square(x: int) -> dict[str, int]:
    return {"x": x, "sq": x * x}


def test_stream_sinks_are_catalogued_items(tmp_path: Path, backend_name: str) -> None:
    nodes = [
        {"id": "src", "type": "range", "args": {"stop": 500}},
        {"id": "rows", "type": "map", "args": {"fn": f"{__name__}:square"}, "inputs": ["src"]},
        {"id": "table", "type": "collect", "inputs": ["rows"]},
        {"id": "plain", "type": "collect", "inputs": ["src"]},
    ]
    res = run(stream_config(tmp_path, nodes), workers=1)
    try:
        items = {ref.entity: ref for ref in res.outputs("numbers")}
        assert {"sink_table", "sink_plain", "phase_summary"} <= set(items)
        table = feather.read_table(uri_to_path(items["sink_table"].uri))
        assert table.num_rows == 500
        assert sorted(table.column("sq").to_pylist()) == [x * x for x in range(500)]
        plain = read_json(Path(uri_to_path(items["sink_plain"].uri)))
        assert sorted(plain["result"]) == list(range(500))
        summary = res.phases["numbers"].summary
        assert summary["sinks"]["table"] == {
            "uri": items["sink_table"].uri,
            "format": "arrow",
            "rows": 500,
        }
        assert summary["sinks"]["plain"]["items"] == 500
        assert "results" not in summary  # no truncated repr any more
    finally:
        res.close()


def test_dag_bindings_name_extra_node_types() -> None:
    seen: list[int] = []
    spec = {
        "nodes": [{"id": "a", "type": "mine"}, {"id": "b", "type": "list_sink", "inputs": ["a"]}]
    }
    dag = Dag.from_spec(spec, bindings={"mine": [1, 2, 3], "list_sink": seen.append})
    dag.run(timeout=30)
    assert seen == [1, 2, 3]
    with pytest.raises(ConfigError, match="unknown type 'mine'"):
        Dag.from_spec(spec)
    bad = {
        "nodes": [
            {"id": "a", "type": "mine", "args": {"x": 1}},
            {"id": "b", "type": "discard", "inputs": ["a"]},
        ]
    }
    with pytest.raises(ConfigError, match="'mine' takes no args"):
        Dag.from_spec(bad, bindings={"mine": [1]})
